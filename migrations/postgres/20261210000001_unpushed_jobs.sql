-- The enqueue mark in a table of its own (docs/decisions.md, "The enqueue mark").
--
-- A job's work item is pushed to the queue right after the job is stored; until the push is
-- confirmed the job's id waits here, and the sweeper pushes the ones that wait too long. The
-- mark used to be `generation_jobs.enqueued_at` set by an UPDATE: a full rewrite of the job row
-- and of every index entry, a third of PostgreSQL's time per enqueue. Now a job is stored with
-- `enqueued_at` already set (its acceptance time) and a narrow row here; the mark deletes it.
--
-- Jobs stored by the previous build and never marked keep `enqueued_at IS NULL`; the sweeper
-- still finds those through generation_jobs_unenqueued, which new jobs no longer enter, so
-- API processes of both builds can run side by side during an upgrade.
CREATE TABLE unpushed_jobs (
    job_id     UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);
