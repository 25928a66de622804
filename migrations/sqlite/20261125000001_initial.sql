-- The same schema as migrations/postgres, in SQLite's types: UUIDs are hyphenated lowercase TEXT,
-- timestamps RFC 3339 TEXT in UTC (they sort as text), JSON is TEXT, booleans are 0/1.

CREATE TABLE user_provider_configs (
    id                    TEXT PRIMARY KEY NOT NULL,
    user_id               TEXT NOT NULL,
    provider_name         TEXT NOT NULL,
    encrypted_credentials TEXT NOT NULL,
    is_valid              INTEGER NOT NULL DEFAULT 1 CHECK (is_valid IN (0, 1)),
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    credential_hint       TEXT,
    validated_at          TEXT,
    last_error            TEXT,
    UNIQUE (user_id, provider_name)
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    token_sha256 BLOB NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

CREATE TABLE generation_jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'throttled', 'running', 'succeeded', 'failed', 'cancelled')),
    progress          REAL CHECK (progress IS NULL OR (progress >= 0 AND progress <= 1)),
    attempts          INTEGER NOT NULL DEFAULT 0,
    provider_job_id   TEXT,
    request           TEXT NOT NULL,
    result            TEXT,
    error_code        TEXT,
    error_message     TEXT,
    error_retryable   INTEGER,
    metadata          TEXT NOT NULL DEFAULT '{}',
    created_by_token  TEXT,
    idempotency_key   TEXT,
    request_sha256    BLOB,
    run_at            TEXT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT
);

CREATE INDEX generation_jobs_user_newest ON generation_jobs (user_id, id DESC);
CREATE UNIQUE INDEX generation_jobs_idempotency ON generation_jobs (created_by_token, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX generation_jobs_due ON generation_jobs (run_at)
    WHERE status IN ('queued', 'throttled', 'running');

CREATE TABLE generation_job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT NOT NULL REFERENCES generation_jobs (id) ON DELETE CASCADE,
    at       TEXT NOT NULL,
    status   TEXT NOT NULL,
    message  TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX generation_job_events_job ON generation_job_events (job_id, id);
