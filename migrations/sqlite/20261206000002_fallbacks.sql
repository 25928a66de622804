-- Explicit failover (docs/failover.md). A job's request carries its remaining fallbacks; when
-- it moves on, its provider, model, request and estimate become the next entry's and the
-- provider it left is appended here (a JSON list of {provider, model, reason, message, at}).
-- NULL: it never moved.
ALTER TABLE generation_jobs ADD COLUMN route TEXT;

-- `"provider": "auto"` with `"routing": "fastest"` (docs/routing.md) reads the recent succeeded
-- jobs' times at their providers, newest first.
CREATE INDEX generation_jobs_succeeded_recent ON generation_jobs (finished_at)
    WHERE status = 'succeeded';
