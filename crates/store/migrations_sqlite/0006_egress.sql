-- An instance's egress policy as JSON: "internet", "none" or {"allow": ["CIDR[:PORT]", ...]};
-- NULL: "internet" (the server's default policy).
ALTER TABLE instances ADD COLUMN egress TEXT;
