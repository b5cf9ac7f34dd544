-- Edge v2. Extra ports the instance's programs serve, each under an opaque handle
-- (JSON list of {"port","handle"}).
ALTER TABLE instances ADD COLUMN exposed TEXT NOT NULL DEFAULT '[]';
-- 1 when the reconciler stopped a cold_start instance for idleness: only those are
-- woken by a request; one a user stopped stays stopped.
ALTER TABLE instances ADD COLUMN idle_stopped INTEGER NOT NULL DEFAULT 0;
-- POST /v1/instances/{id}/hold: not idle-stopped before this (unix seconds).
ALTER TABLE instances ADD COLUMN hold_until INTEGER;
-- Requests served through the edge (written in batches with last_request_at).
ALTER TABLE instances ADD COLUMN requests_total INTEGER NOT NULL DEFAULT 0;

-- Share links: signed, expiring URLs for browsers. The token is derived from the id
-- (HMAC with the installation's secret), so only the id and its bounds are kept.
CREATE TABLE shares (
    id           TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    port         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    created_by   TEXT NOT NULL
);
CREATE INDEX shares_by_instance ON shares (instance_id, created_at);
