-- A leaner job on PostgreSQL (docs/decisions.md, "Statements per job").
--
-- A job's history rows are written only by the statement that changes the job itself (a CTE
-- over the updated row) or inserts it, so the foreign key from the history to the job cannot
-- catch anything; its check ran once per history row (three per finished job), as a statement
-- of its own taking a KEY SHARE lock on the row being updated. Jobs are never deleted; a
-- retention task that one day does must delete their history in the same transaction.
ALTER TABLE generation_job_events DROP CONSTRAINT IF EXISTS generation_job_events_job_id_fkey;

-- Room in every page for the job's next version: an update that changes no indexed column
-- (the submit claim, progress) can then stay on its page as a heap-only tuple, with no index
-- entry written. Applies to pages written from now on.
ALTER TABLE generation_jobs SET (fillfactor = 80);
