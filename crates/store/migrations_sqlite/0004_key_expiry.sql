-- Keys that stop working at a time (unix seconds); NULL: never.
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
