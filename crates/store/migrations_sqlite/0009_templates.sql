-- Custom templates, per workspace, each a list of immutable versions.
CREATE TABLE templates (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX templates_workspace_name ON templates (workspace_id, name);

-- A version's spec (berth_core::TemplateSpec as JSON, sealed like instances' env: it
-- may carry secrets in its env).
CREATE TABLE template_versions (
    template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (template_id, version)
);

-- The copy of the template version an instance runs; NULL: the system template.
ALTER TABLE instances ADD COLUMN template_spec TEXT;
