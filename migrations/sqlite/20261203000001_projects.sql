-- The same change as migrations/postgres, in SQLite's types. SQLite cannot change a column's
-- default or a table's constraints in place, so user_provider_configs is rebuilt; ALTER TABLE ADD
-- COLUMN cannot add a foreign key with a non-NULL default, so the new project_id columns of
-- api_tokens and generation_jobs are checked by the code that writes them instead.
CREATE TABLE projects (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
INSERT INTO projects (id, name, created_at)
    VALUES ('00000000-0000-0000-0000-000000000000', 'default', strftime('%Y-%m-%dT%H:%M:%f', 'now') || '+00:00');

ALTER TABLE api_tokens
    ADD COLUMN project_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
ALTER TABLE api_tokens
    ADD COLUMN scopes TEXT NOT NULL DEFAULT 'credentials:read credentials:write jobs:read jobs:write';
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;

CREATE TABLE user_provider_configs_new (
    -- A random (version 4) UUID when none is given, as gen_random_uuid() in PostgreSQL.
    id                    TEXT PRIMARY KEY NOT NULL DEFAULT (
        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
        substr(lower(hex(randomblob(2))), 2) || '-' ||
        substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' ||
        lower(hex(randomblob(6)))
    ),
    -- As in PostgreSQL: rows imported from the seed's system land in `default`.
    project_id            TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
                              REFERENCES projects (id),
    user_id               TEXT NOT NULL,
    provider_name         TEXT NOT NULL,
    encrypted_credentials TEXT NOT NULL,
    is_valid              INTEGER NOT NULL DEFAULT 1 CHECK (is_valid IN (0, 1)),
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    credential_hint       TEXT,
    validated_at          TEXT,
    last_error            TEXT,
    UNIQUE (project_id, user_id, provider_name)
);
INSERT INTO user_provider_configs_new
    (id, project_id, user_id, provider_name, encrypted_credentials, is_valid, created_at,
     updated_at, credential_hint, validated_at, last_error)
SELECT id, '00000000-0000-0000-0000-000000000000', user_id, provider_name, encrypted_credentials,
       is_valid, created_at, updated_at, credential_hint, validated_at, last_error
FROM user_provider_configs;
DROP TABLE user_provider_configs;
ALTER TABLE user_provider_configs_new RENAME TO user_provider_configs;

ALTER TABLE generation_jobs
    ADD COLUMN project_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
DROP INDEX generation_jobs_user_newest;
DROP INDEX generation_jobs_user_status_newest;
CREATE INDEX generation_jobs_user_newest ON generation_jobs (project_id, user_id, id DESC);
CREATE INDEX generation_jobs_user_status_newest
    ON generation_jobs (project_id, user_id, status, id DESC);
