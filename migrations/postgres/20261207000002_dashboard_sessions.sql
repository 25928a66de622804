-- Operator dashboard sessions (docs/dashboard.md): made when an `admin` or `dashboard:read`
-- token signs in, kept in an HttpOnly cookie. Only the SHA-256 of the session's secret is stored;
-- a session ends with its token (revoked, expired, deleted) and after 12 hours.
CREATE TABLE dashboard_sessions (
    id_sha256  BYTEA PRIMARY KEY NOT NULL,
    token_id   UUID NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    read_only  BOOLEAN NOT NULL,
    csrf       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
