-- Usage and cost (docs/usage.md).
--
-- A job's length, resolution and list price are fixed when it is enqueued (the API checks the
-- request against the model's catalogue entry and prices it there); NULL cost: the model has no
-- known prices. When a job ends, the same statement as its final transition writes its usage
-- row: what the provider will have charged as far as it is known.

ALTER TABLE generation_jobs ADD COLUMN video_seconds INTEGER;
ALTER TABLE generation_jobs ADD COLUMN resolution TEXT;
ALTER TABLE generation_jobs ADD COLUMN estimated_cost_micros INTEGER;

-- One row per ended job. `cost_basis` says what `cost_micros` is:
--   list_price    the job succeeded: its list price (NULL when the model has none: unknown);
--   not_accepted  the provider never accepted it (no provider job, no submit in doubt): 0;
--   unknown       it failed or was cancelled after the provider may have started it.
CREATE TABLE job_usage (
    job_id              TEXT PRIMARY KEY NOT NULL,
    project_id          TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    outcome             TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'cancelled')),
    video_seconds       INTEGER,
    resolution          TEXT,
    cost_micros         INTEGER,
    cost_basis          TEXT NOT NULL CHECK (cost_basis IN ('list_price', 'not_accepted', 'unknown')),
    -- The provider's own figure where it reports one (Replicate's predict_time, fal's
    -- inference_time), in milliseconds.
    provider_compute_ms INTEGER,
    ended_at            TEXT NOT NULL
);
CREATE INDEX job_usage_project_ended ON job_usage (project_id, ended_at);
CREATE INDEX job_usage_user_ended ON job_usage (project_id, user_id, ended_at);
