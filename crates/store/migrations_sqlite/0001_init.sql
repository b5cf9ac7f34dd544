CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    instance_limit INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    admin        INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE instances (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id),
    name             TEXT,
    template         TEXT NOT NULL,
    template_version INTEGER NOT NULL,
    size             INTEGER NOT NULL,
    user_tag         TEXT,
    region           TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    env              TEXT NOT NULL,
    budget_cap_usd   REAL,
    topup_micros     INTEGER NOT NULL DEFAULT 0,
    lifecycle_mode   TEXT NOT NULL,
    idle_timeout     INTEGER,
    status           TEXT NOT NULL,
    status_reason    TEXT,
    restart_count    INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    deleted_at       INTEGER
);
CREATE INDEX instances_by_workspace ON instances (workspace_id, seq);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT
);
CREATE INDEX events_by_instance ON events (instance_id, seq);
