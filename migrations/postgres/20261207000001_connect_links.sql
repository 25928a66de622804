-- "Connect your key" (docs/connect.md). A project lists the URLs its users may be sent back to
-- after connecting a key; a link lets one user connect one provider's key once, within its
-- expiry. Only the SHA-256 of a link's secret is stored.
CREATE TABLE project_return_urls (
    project_id UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    PRIMARY KEY (project_id, url)
);

CREATE TABLE connect_links (
    id               UUID PRIMARY KEY NOT NULL,
    token_sha256     BYTEA NOT NULL UNIQUE,
    project_id       UUID NOT NULL,
    user_id          UUID NOT NULL,
    provider         TEXT NOT NULL,
    return_url       TEXT NOT NULL,
    created_by_token UUID,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    used_at          TIMESTAMPTZ
);
CREATE INDEX connect_links_expiry ON connect_links (expires_at);
