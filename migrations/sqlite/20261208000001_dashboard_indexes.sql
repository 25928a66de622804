-- The same indexes as migrations/postgres but the status one, and generation_jobs_live stays.
-- SQLite uses a partial index only for a query that repeats its WHERE terms, so PostgreSQL's
-- (status, id) WHERE status <> 'succeeded' would serve no `status = ?`; and a full one would be
-- chosen where it is wrong: the planner keeps no statistics here (the embedded store never runs
-- ANALYZE) and prefers an index by its shape, so it would take it over generation_jobs_unenqueued
-- for the sweeper and over the user's index for a user and status filter. The embedded shape's
-- table is small enough for a status filter to walk the primary key.

-- A user's jobs newest first, whatever the project: the dashboard's user filter names no
-- project. The producer API's listing (project and user) reads the same index and checks the
-- project on each row.
DROP INDEX generation_jobs_user_newest;
CREATE INDEX generation_jobs_user_newest ON generation_jobs (user_id, id DESC);

-- Failed and cancelled jobs by error code newest first; only jobs that carry a code are in it.
CREATE INDEX generation_jobs_error_newest ON generation_jobs (error_code, id DESC)
    WHERE error_code IS NOT NULL;

-- Ended jobs by status, then the time they ended: the overview's failures of the last hour read
-- only the failed ones, routing's recent succeeded jobs only the succeeded ones, and the jobs
-- ended per minute one range per final status.
DROP INDEX generation_jobs_finished;
CREATE INDEX generation_jobs_finished ON generation_jobs (status, finished_at)
    WHERE finished_at IS NOT NULL;
