-- The enqueue mark in a table of its own, as in migrations/postgres (docs/decisions.md, "The
-- enqueue mark"): a job's id waits here from its insert until its push to the queue is
-- confirmed; jobs stored by the previous build and never marked keep `enqueued_at IS NULL` and
-- are still found through generation_jobs_unenqueued.
CREATE TABLE unpushed_jobs (
    job_id     TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);
