-- CPU and memory of an instance in place of its size's (berth_core::Resources as
-- JSON); NULL: the size's.
ALTER TABLE instances ADD COLUMN resources TEXT;
