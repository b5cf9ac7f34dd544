-- The instance's container was made for the warm pool: its environment is the pool's,
-- and its agent takes the record's by a claim call after every start. Cleared when the
-- container is made again from the record.
ALTER TABLE instances ADD COLUMN pooled INTEGER NOT NULL DEFAULT 0;
