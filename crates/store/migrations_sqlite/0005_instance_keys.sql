-- Keys scoped to one instance (its edge URLs and GET /v1/instances/{id}); NULL: the whole workspace.
ALTER TABLE api_keys ADD COLUMN instance_id TEXT;
