-- Indexes for the operator dashboard's queries (docs/dashboard.md, "Performance"): its jobs list
-- filters every project's jobs by status, provider, project, user and error code, newest first,
-- 50 a page; its overview counts the jobs that ended in the last hour. Each filter that can be
-- rare gets an index that hands back its rows already in id order, so a page reads about 50 rows
-- however large the table is; the common values are left to the primary key, read backwards.
-- Indexes are replaced where one can do an old one's work, since every index costs each job's
-- insert and transitions.

-- A user's jobs newest first, whatever the project: the dashboard's user filter names no
-- project. The producer API's listing (project and user) reads the same index and checks the
-- project on each row: a user id is one project's user unless a producer reuses its ids across
-- projects, and then it reads those rows too.
DROP INDEX generation_jobs_user_newest;
CREATE INDEX generation_jobs_user_newest ON generation_jobs (user_id, id DESC);

-- Jobs that did not succeed, by status, newest first. Failed or cancelled jobs are a few per cent
-- of the table, live ones fewer, and with a provider or project beside them a backward walk of
-- the primary key reads most of the table before it finds 50; succeeded jobs are most of the
-- table, so that walk finds them at once and they stay out of the index. It does the old live
-- index's work (the metrics' count of live jobs reads the live statuses' entries only; the
-- planner sees that `status IN ('queued', 'throttled', 'running')` implies this predicate) and
-- costs that one's writes plus an entry when a job fails or is cancelled. The jobs search plans
-- each call with its values bound (JobRepo::search), as it must for a partial index to be used
-- for `status = $1`.
DROP INDEX generation_jobs_live;
CREATE INDEX generation_jobs_status_newest ON generation_jobs (status, id DESC)
    WHERE status <> 'succeeded';

-- Failed and cancelled jobs by error code newest first: some codes are a handful of rows in a
-- million. Only jobs that carry a code are in it, so it costs nothing until a job fails.
CREATE INDEX generation_jobs_error_newest ON generation_jobs (error_code, id DESC)
    WHERE error_code IS NOT NULL;

-- Ended jobs by status, then the time they ended: the overview's failures of the last hour read
-- only the failed ones, routing's recent succeeded jobs only the succeeded ones, and the jobs
-- ended per minute one range per final status. A job's status no longer changes once it has
-- ended, so the status costs no more writes than the time alone did.
DROP INDEX generation_jobs_finished;
CREATE INDEX generation_jobs_finished ON generation_jobs (status, finished_at)
    WHERE finished_at IS NOT NULL;
