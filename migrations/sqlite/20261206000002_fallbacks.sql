-- Explicit failover (docs/failover.md). A job's request carries its remaining fallbacks; when
-- it moves on, its provider, model, request and estimate become the next entry's and the
-- provider it left is appended here (a JSON list of {provider, model, reason, message, at}).
-- NULL: it never moved.
ALTER TABLE generation_jobs ADD COLUMN route TEXT;

-- Jobs by the time they ended: `"provider": "auto"` with `"routing": "fastest"` (docs/routing.md)
-- reads the recent succeeded jobs' times, and the operator dashboard counts the last hour's ends.
CREATE INDEX generation_jobs_finished ON generation_jobs (finished_at)
    WHERE finished_at IS NOT NULL;
