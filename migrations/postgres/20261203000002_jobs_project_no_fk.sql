-- A job's project_id always comes from the authenticated token that enqueued it, and a
-- token's project is checked by api_tokens' own foreign key when the token is created;
-- projects are never deleted. The foreign key on generation_jobs added nothing but cost on
-- the hottest insert: its check looks the project up and takes a KEY SHARE lock on the
-- project's row for every job, and with every producer of a project inserting at once,
-- those locks on one row become MultiXacts.
ALTER TABLE generation_jobs DROP CONSTRAINT generation_jobs_project_id_fkey;
