-- "Connect your key" (docs/connect.md). A project lists the URLs its users may be sent back to
-- after connecting a key; a link lets one user connect one provider's key once, within its
-- expiry. Only the SHA-256 of a link's secret is stored.
CREATE TABLE project_return_urls (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    PRIMARY KEY (project_id, url)
);

CREATE TABLE connect_links (
    id               TEXT PRIMARY KEY NOT NULL,
    token_sha256     BLOB NOT NULL UNIQUE,
    project_id       TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    return_url       TEXT NOT NULL,
    created_by_token TEXT,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    used_at          TEXT
);
CREATE INDEX connect_links_expiry ON connect_links (expires_at);
