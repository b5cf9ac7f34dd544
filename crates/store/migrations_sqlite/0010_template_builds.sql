-- Templates built from a Dockerfile. A version is `ready` (an image, or a finished
-- build), `building` or `failed`; `build` names the version whose build made its image
-- (a version changed by PATCH keeps the image, and the status, of the one before).
ALTER TABLE template_versions ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE template_versions ADD COLUMN build INTEGER;

-- One row per build: the Dockerfile, the log once the build has ended, and why it failed.
CREATE TABLE template_builds (
    template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    image       TEXT NOT NULL,
    dockerfile  TEXT NOT NULL,
    log         TEXT NOT NULL DEFAULT '[]',
    error       TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (template_id, version)
);
