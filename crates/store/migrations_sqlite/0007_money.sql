-- Money is integer micro-dollars everywhere: the managed cap moves from REAL dollars to
-- INTEGER micros, each instance counts what its managed usage has cost, each workspace has
-- a wallet balance, and every movement of money is a row of the append-only ledger.
ALTER TABLE instances ADD COLUMN budget_cap_micros INTEGER;
UPDATE instances SET budget_cap_micros = CAST(ROUND(budget_cap_usd * 1000000) AS INTEGER)
    WHERE budget_cap_usd IS NOT NULL;
ALTER TABLE instances DROP COLUMN budget_cap_usd;
-- JSON list of model names the instance may use through the managed proxy; NULL: any priced model.
ALTER TABLE instances ADD COLUMN budget_models TEXT;
ALTER TABLE instances ADD COLUMN managed_used_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workspaces ADD COLUMN balance_micros INTEGER NOT NULL DEFAULT 0;

CREATE TABLE ledger (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id),
    -- The instance the entry is for (managed usage, compute); NULL for wallet top-ups.
    instance_id    TEXT,
    -- topup | managed_usage | tool_usage | compute | refund
    kind           TEXT NOT NULL,
    -- Signed: credits are positive, charges negative.
    amount_micros  INTEGER NOT NULL,
    -- The wallet's balance right after this entry.
    balance_micros INTEGER NOT NULL,
    description    TEXT NOT NULL,
    model          TEXT,
    input_tokens   INTEGER,
    output_tokens  INTEGER,
    created_at     INTEGER NOT NULL
);
CREATE INDEX ledger_by_workspace ON ledger (workspace_id, seq);
CREATE INDEX ledger_by_instance ON ledger (instance_id, created_at);
