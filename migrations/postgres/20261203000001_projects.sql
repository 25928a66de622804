-- Projects: one producer app or environment each (docs/security-model.md, "Projects and scoped
-- tokens"). Users, their keys, their jobs and the tokens acting for them belong to one project;
-- the same user_id in two projects is two users. Everything stored before projects existed moves
-- into the project `default`, whose id is fixed (the nil UUID) because values sealed before
-- projects (`v1:`) name no project and open only there.
CREATE TABLE projects (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);
INSERT INTO projects (id, name, created_at)
    VALUES ('00000000-0000-0000-0000-000000000000', 'default', now());

-- Tokens: their project, what they may do (space-separated scopes; existing tokens keep what they
-- could do, everything but `admin`), and when they stop working.
ALTER TABLE api_tokens
    ADD COLUMN project_id UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
        REFERENCES projects (id);
ALTER TABLE api_tokens ALTER COLUMN project_id DROP DEFAULT;
ALTER TABLE api_tokens
    ADD COLUMN scopes TEXT NOT NULL DEFAULT 'credentials:read credentials:write jobs:read jobs:write';
ALTER TABLE api_tokens ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;

-- Keys: one per (project, user, provider). The id gets the default the seed's table had, and the
-- project defaults to `default`, so rows imported from the seed's system, which has neither, need
-- no changes (byok itself always names the project).
ALTER TABLE user_provider_configs
    ADD COLUMN project_id UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
        REFERENCES projects (id);
ALTER TABLE user_provider_configs ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE user_provider_configs DROP CONSTRAINT user_provider_configs_user_id_provider_name_key;
ALTER TABLE user_provider_configs
    ADD CONSTRAINT user_provider_configs_project_user_provider_key
        UNIQUE (project_id, user_id, provider_name);

-- Jobs: the project they were enqueued in. Idempotency keys stay scoped to the token that sent
-- them, and a token belongs to one project.
ALTER TABLE generation_jobs
    ADD COLUMN project_id UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
        REFERENCES projects (id);
ALTER TABLE generation_jobs ALTER COLUMN project_id DROP DEFAULT;
DROP INDEX generation_jobs_user_newest;
DROP INDEX generation_jobs_user_status_newest;
CREATE INDEX generation_jobs_user_newest ON generation_jobs (project_id, user_id, id DESC);
CREATE INDEX generation_jobs_user_status_newest
    ON generation_jobs (project_id, user_id, status, id DESC);
