-- Live jobs by status, for metrics scraped every few seconds: a count proportional to the jobs
-- not yet final, however many finished jobs the table holds.
CREATE INDEX generation_jobs_live ON generation_jobs (status)
    WHERE status IN ('queued', 'throttled', 'running');
