-- One row per metered call, keyed by the agent's record id (the deduplication key).
-- The same shape as the SQLite schema (migrations/sqlite/0001_usage.sql).
CREATE TABLE usage (
    id TEXT PRIMARY KEY,
    time_ns BIGINT NOT NULL,
    start_ns BIGINT NOT NULL,
    period TEXT NOT NULL,
    billed_period TEXT NOT NULL,
    adjustment INTEGER NOT NULL DEFAULT 0,
    side TEXT NOT NULL CHECK (side IN ('client', 'server')),
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    model TEXT NOT NULL,
    org TEXT NOT NULL,
    team TEXT NOT NULL,
    "user" TEXT NOT NULL,
    price_id TEXT,
    input BIGINT NOT NULL,
    cached_input BIGINT NOT NULL,
    cache_creation_input BIGINT NOT NULL,
    output BIGINT NOT NULL,
    reasoning BIGINT NOT NULL,
    pair_key TEXT NOT NULL,
    attributes TEXT NOT NULL,
    received_ns BIGINT NOT NULL
);
CREATE INDEX usage_billed ON usage (billed_period, org, team, "user");
CREATE INDEX usage_pair ON usage (pair_key, side, start_ns);

CREATE TABLE periods (
    period TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('draft', 'finalized')),
    finalized_ns BIGINT
);
