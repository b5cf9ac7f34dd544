-- Compute is paid per month, in advance: the end (unix seconds) of the period an
-- instance's compute is paid for; NULL: nothing paid (billing off, or never charged).
ALTER TABLE instances ADD COLUMN paid_until INTEGER;
