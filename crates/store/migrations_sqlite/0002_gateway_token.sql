-- Per-instance token the edge presents to the agent (BERTH_GATEWAY_TOKEN inside the
-- instance). Clients never see it: the edge swaps their workspace key for it.
ALTER TABLE instances ADD COLUMN gateway_token TEXT;
-- When the instance last served a request through the edge (cold_start idling).
ALTER TABLE instances ADD COLUMN last_request_at INTEGER;
