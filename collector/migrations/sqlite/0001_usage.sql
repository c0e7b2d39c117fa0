-- One row per metered call, keyed by the agent's record id (the deduplication key).
CREATE TABLE usage (
    id TEXT PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    -- The call's own period (UTC month, YYYY-MM), and the period it is billed in: the same,
    -- unless the call arrived after its period was finalised (an adjustment).
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
    -- The price-book entry in effect at the call's time; NULL: no price matched.
    price_id TEXT,
    -- Disjoint billable quantities.
    input INTEGER NOT NULL,
    cached_input INTEGER NOT NULL,
    cache_creation_input INTEGER NOT NULL,
    output INTEGER NOT NULL,
    reasoning INTEGER NOT NULL,
    -- model|input|output as reported: the same on both ends of one call.
    pair_key TEXT NOT NULL,
    attributes TEXT NOT NULL,
    received_ns INTEGER NOT NULL
);
CREATE INDEX usage_billed ON usage (billed_period, org, team, "user");
CREATE INDEX usage_pair ON usage (pair_key, side, start_ns);

CREATE TABLE periods (
    period TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('draft', 'finalized')),
    finalized_ns INTEGER
);
