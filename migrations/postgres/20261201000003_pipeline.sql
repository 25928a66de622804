-- The pipeline's bookkeeping on generation_jobs (byok-worker, DESIGN §6).
--
-- The queue is its own structure (Redis Streams, or queue_items in the embedded shape), so the
-- columns once reserved for a queue on this table go.
DROP INDEX generation_jobs_due;
ALTER TABLE generation_jobs DROP COLUMN run_at;
ALTER TABLE generation_jobs DROP COLUMN lease_owner;
ALTER TABLE generation_jobs DROP COLUMN lease_expires_at;

-- When the queue accepted the job's work item. NULL: not yet (the API died between insert and
-- push, or the queue refused): the sweeper pushes such rows.
ALTER TABLE generation_jobs ADD COLUMN enqueued_at TIMESTAMPTZ;
-- A submit left for the provider and its answer is not recorded yet. Set before the request
-- leaves, cleared by a definite rejection; with no provider_job_id beside it, the outcome of that
-- submit is unknown and it is never sent again.
ALTER TABLE generation_jobs ADD COLUMN submit_started_at TIMESTAMPTZ;
-- When the provider was told to cancel the remote job.
ALTER TABLE generation_jobs ADD COLUMN cancel_sent_at TIMESTAMPTZ;

UPDATE generation_jobs SET enqueued_at = created_at;

CREATE INDEX generation_jobs_unenqueued ON generation_jobs (created_at)
    WHERE enqueued_at IS NULL AND status = 'queued';
-- A user's jobs with one status, newest first.
CREATE INDEX generation_jobs_user_status_newest ON generation_jobs (user_id, status, id DESC);
