-- Users' provider credentials, sealed (byok-crypto, DESIGN §9). The seed's columns are kept as
-- they were; credential_hint, validated_at and last_error are new.
CREATE TABLE user_provider_configs (
    id                    UUID PRIMARY KEY,
    user_id               UUID NOT NULL,
    provider_name         TEXT NOT NULL,
    -- v1:<key_id>:<nonce>:<ciphertext+tag>, bound by AAD to (user_id, provider_name, key_id);
    -- or the seed's legacy hex(iv):hex(tag):hex(data) until `byok keys rewrap` runs.
    encrypted_credentials TEXT NOT NULL,
    is_valid              BOOLEAN NOT NULL DEFAULT TRUE,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A short non-secret hint such as key_…9f2c, for people to recognise the key.
    credential_hint       TEXT,
    -- When the provider last confirmed the key; NULL if it never was checked.
    validated_at          TIMESTAMPTZ,
    -- The provider's reason the last check failed.
    last_error            TEXT,
    CONSTRAINT user_provider_configs_user_id_provider_name_key UNIQUE (user_id, provider_name)
);

-- Producer API tokens. Only the SHA-256 of the token is stored: the token itself is shown once.
CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    token_sha256 BYTEA NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- Generation jobs: the store holds the truth about a job; a queue entry only points at it.
CREATE TABLE generation_jobs (
    id                UUID PRIMARY KEY,            -- UUIDv7: time-ordered
    user_id           UUID NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'throttled', 'running', 'succeeded', 'failed', 'cancelled')),
    progress          DOUBLE PRECISION CHECK (progress IS NULL OR (progress >= 0 AND progress <= 1)),
    attempts          INTEGER NOT NULL DEFAULT 0,
    provider_job_id   TEXT,                        -- set the moment the provider accepts the submit
    request           JSONB NOT NULL,              -- the neutral request of DESIGN §5
    result            JSONB,
    error_code        TEXT,
    error_message     TEXT,
    error_retryable   BOOLEAN,
    metadata          JSONB NOT NULL DEFAULT '{}',
    -- Idempotency-Key scope: the producer token that enqueued the job, the key, and the SHA-256
    -- of the request body (same key + other body = conflict).
    created_by_token  UUID,
    idempotency_key   TEXT,
    request_sha256    BYTEA,
    -- When the job is next due; used by the embedded queue and by the sweeper that re-pushes
    -- rows left queued without a queue entry.
    run_at            TIMESTAMPTZ NOT NULL,
    -- The embedded queue's claim on the row.
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ
);

CREATE INDEX generation_jobs_user_newest ON generation_jobs (user_id, id DESC);
CREATE UNIQUE INDEX generation_jobs_idempotency ON generation_jobs (created_by_token, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX generation_jobs_due ON generation_jobs (run_at)
    WHERE status IN ('queued', 'throttled', 'running');

-- A job's history, for `byok job show`.
CREATE TABLE generation_job_events (
    id       BIGSERIAL PRIMARY KEY,
    job_id   UUID NOT NULL REFERENCES generation_jobs (id) ON DELETE CASCADE,
    at       TIMESTAMPTZ NOT NULL,
    status   TEXT NOT NULL,
    message  TEXT NOT NULL,
    detail   JSONB
);
CREATE INDEX generation_job_events_job ON generation_job_events (job_id, id);
