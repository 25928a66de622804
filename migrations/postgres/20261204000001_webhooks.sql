-- Webhooks and batches (docs/webhooks.md).
--
-- Events are written to an outbox (webhook_events, one row per event, and webhook_deliveries, one
-- row per recipient) by the same statement as the job transition that causes them, so there is
-- never an event without its change nor a change without its event. Workers deliver them through
-- the queue; the rows are the truth about each delivery, the queue item only says "look at
-- delivery X".

-- A project's webhook endpoints. `events` is the subscribed types, space-separated with a space at
-- each end (' job.succeeded job.failed '), so `events LIKE '% job.failed %'` matches one type on
-- both databases. Secrets are sealed by the key ring, bound to (project, endpoint); during a
-- rotation the previous one keeps signing until `previous_expires_at`.
CREATE TABLE webhook_endpoints (
    id                     UUID PRIMARY KEY,
    project_id             UUID NOT NULL REFERENCES projects (id),
    url                    TEXT NOT NULL,
    description            TEXT NOT NULL DEFAULT '',
    events                 TEXT NOT NULL,
    sealed_secret          TEXT NOT NULL,
    previous_sealed_secret TEXT,
    previous_expires_at    TIMESTAMPTZ,
    -- Set when deliveries stop: `410 Gone`, 5 days of failures, or by the project.
    disabled_at            TIMESTAMPTZ,
    disabled_reason        TEXT,
    -- The first failure of the current run of failures; cleared by a success.
    failing_since          TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_endpoints_project ON webhook_endpoints (project_id, id);

-- Each project's secret for jobs' own `webhook_url`s (made and rotated on request).
CREATE TABLE webhook_project_secrets (
    project_id             UUID PRIMARY KEY REFERENCES projects (id),
    sealed_secret          TEXT NOT NULL,
    previous_sealed_secret TEXT,
    previous_expires_at    TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);

-- Batches: jobs enqueued as one unit. `remaining` counts the jobs not yet final; the transition
-- that ends a batch job decrements it under the row's lock, so exactly one transition sees it
-- reach zero, sets finished_at and writes `batch.completed`.
CREATE TABLE batches (
    id               UUID PRIMARY KEY,
    project_id       UUID NOT NULL REFERENCES projects (id),
    total            INTEGER NOT NULL CHECK (total > 0),
    remaining        INTEGER NOT NULL CHECK (remaining >= 0),
    metadata         JSONB NOT NULL DEFAULT '{}',
    created_by_token UUID,
    idempotency_key  TEXT,
    request_sha256   BYTEA,
    created_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX batches_idempotency ON batches (created_by_token, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_project_newest ON batches (project_id, id DESC);

ALTER TABLE generation_jobs ADD COLUMN batch_id UUID REFERENCES batches (id);
CREATE INDEX generation_jobs_batch ON generation_jobs (batch_id, id) WHERE batch_id IS NOT NULL;
-- When the job's last `job.progress` event was written: at most one per job per 5 s.
ALTER TABLE generation_jobs ADD COLUMN progress_event_at TIMESTAMPTZ;

-- The outbox. `data` is what the event is about as it was at that moment: for job events the
-- job's row (rendered as the API renders a job when delivered); for `credential.invalidated` the
-- payload's data itself; NULL for `batch.completed`, whose batch no longer changes once complete
-- and is rendered when delivered.
CREATE TABLE webhook_events (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  UUID NOT NULL,
    type        TEXT NOT NULL,
    subject_id  UUID,
    occurred_at TIMESTAMPTZ NOT NULL,
    data        JSONB
);
CREATE INDEX webhook_events_subject ON webhook_events (subject_id, occurred_at);

-- One event to one recipient: an endpoint, or a job's own webhook_url (endpoint_id NULL). The
-- same event id (the `webhook-id` header) on every attempt.
CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id         UUID NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id      UUID REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    url              TEXT,
    project_id       UUID NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- pending: when the next attempt is due (or, while one is out, when it is given up for lost).
    next_attempt_at  TIMESTAMPTZ,
    -- When the queue took the delivery's item; NULL: the sweeper pushes it.
    enqueued_at      TIMESTAMPTZ,
    last_status_code INTEGER,
    last_error       TEXT,
    -- At most 1 KiB of the receiver's last answer.
    last_response    TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    CHECK (endpoint_id IS NOT NULL OR url IS NOT NULL)
);
CREATE INDEX webhook_deliveries_endpoint_newest
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
