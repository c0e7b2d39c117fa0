//! The SQL both backends run, and the row a call becomes. Placeholders are `$1`..`$n`, in
//! order of first use: PostgreSQL's syntax, which SQLite reads as parameters numbered by
//! first appearance, so one text serves both. `"user"` is quoted: a reserved word in
//! PostgreSQL.

use super::{period_of, RatedEvent, SidePolicy};
use crate::usage::{Side, UsageEvent, GPU_OPERATION};

/// How far apart the two ends of one call may start.
pub const PAIR_WINDOW_NS: i64 = 5_000_000_000;

pub const INSERT: &str = "INSERT INTO usage (id, time_ns, start_ns, period, billed_period,
        adjustment, side, provider, operation, model, org, team, \"user\", price_id,
        input, cached_input, cache_creation_input, output, reasoning,
        pair_key, attributes, received_ns, gpu_time)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
        $15, $16, $17, $18, $19, $20, $21, $22, $23)
    ON CONFLICT (id) DO NOTHING";

/// [`INSERT`] for a whole batch on PostgreSQL: one array per column. Returns the
/// `adjustment` flag of each row inserted (duplicates return nothing).
pub const INSERT_UNNEST: &str = "INSERT INTO usage (id, time_ns, start_ns, period, billed_period,
        adjustment, side, provider, operation, model, org, team, \"user\", price_id,
        input, cached_input, cache_creation_input, output, reasoning,
        pair_key, attributes, received_ns, gpu_time)
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
        $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
        $13::text[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
        $19::bigint[], $20::text[], $21::text[], $22::bigint[], $23::bigint[])
    ON CONFLICT (id) DO NOTHING
    RETURNING adjustment";

/// One row when `$1` is finalised.
pub const FINALIZED: &str = "SELECT 1 FROM periods WHERE period = $1 AND status = 'finalized'";

pub const FINALIZE: &str = "INSERT INTO periods (period, status, finalized_ns)
    VALUES ($1, 'finalized', $2)
    ON CONFLICT (period) DO UPDATE SET status = 'finalized', finalized_ns = excluded.finalized_ns";

/// Inserts alert `$1` once: one row changed the first time, none after.
pub const RECORD_ALERT: &str =
    "INSERT INTO alerts (key, sent_ns) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";

pub const RERATE_SELECT: &str = "SELECT id, time_ns, start_ns, side, provider, operation,
    model, attributes FROM usage WHERE billed_period = $1";

pub const RERATE_UPDATE: &str =
    "UPDATE usage SET org = $1, team = $2, \"user\" = $3, price_id = $4 WHERE id = $5";

/// The billable usage of period `$1` per account, price entry and model.
pub fn usage(policy: SidePolicy) -> String {
    usage_where(policy, "u.billed_period = $1")
}

/// The billable usage of calls that ended in [`$1`, `$2`) ns, per account, price entry and
/// model (quota windows).
pub fn usage_window(policy: SidePolicy) -> String {
    usage_where(policy, "u.time_ns >= $1 AND u.time_ns < $2")
}

fn usage_where(policy: SidePolicy, filter: &str) -> String {
    let side = match policy {
        SidePolicy::Server => "u.side = 'server'".to_string(),
        SidePolicy::Client => "u.side = 'client'".to_string(),
        // A client-side call is billed only when no server-side record of it exists.
        SidePolicy::PreferServer => format!(
            "(u.side = 'server' OR NOT EXISTS (
                SELECT 1 FROM usage s
                WHERE s.pair_key = u.pair_key AND s.side = 'server'
                  AND s.start_ns BETWEEN u.start_ns - {PAIR_WINDOW_NS}
                                     AND u.start_ns + {PAIR_WINDOW_NS}))"
        ),
    };
    // GPU rows are no end of a call: billed whichever end of calls the policy bills.
    format!(
        "SELECT org, team, \"user\", price_id, model,
            CAST(sum(CASE WHEN operation = '{GPU_OPERATION}' THEN 0 ELSE 1 END) AS BIGINT),
            CAST(sum(input) AS BIGINT), CAST(sum(cached_input) AS BIGINT),
            CAST(sum(cache_creation_input) AS BIGINT), CAST(sum(output) AS BIGINT),
            CAST(sum(reasoning) AS BIGINT), CAST(sum(adjustment) AS BIGINT),
            CAST(sum(gpu_time) AS BIGINT)
         FROM usage u
         WHERE {filter} AND (u.operation = '{GPU_OPERATION}' OR {side})
         GROUP BY org, team, \"user\", price_id, model
         ORDER BY org, team, \"user\", model, price_id"
    )
}

/// The derived columns of a call.
pub struct Row {
    pub period: String,
    pub start_ns: i64,
    /// Disjoint quantities, `usage::TOKEN_TYPES` order.
    pub quantities: [i64; 5],
    /// GPU time held, µs (GPU rows only).
    pub gpu_time: i64,
    pub pair_key: String,
    pub attributes: String,
}

impl Row {
    pub fn of(rated: &RatedEvent) -> Row {
        let e = &rated.event;
        let billable = e.tokens.billable();
        Row {
            period: period_of(e.time_ns),
            start_ns: e.start_ns.unwrap_or(e.time_ns),
            quantities: billable.map(|(_, q)| i64::try_from(q).unwrap_or(i64::MAX)),
            gpu_time: i64::try_from(e.gpu_time_us).unwrap_or(i64::MAX),
            // A GPU interval is not a call: it never pairs with another record.
            pair_key: if e.operation == GPU_OPERATION {
                format!("gpu|{}", e.id)
            } else {
                format!("{}|{}|{}", e.model, e.tokens.input, e.tokens.output)
            },
            attributes: serde_json::to_string(&e.attributes).expect("attributes serialise"),
        }
    }
}

/// A stored call, as `rerate` needs it (its counts are not needed to decide account and
/// price).
#[allow(clippy::too_many_arguments)]
pub fn event_of(
    id: String,
    time_ns: i64,
    start_ns: i64,
    side: String,
    provider: String,
    operation: String,
    model: String,
    attributes: String,
) -> UsageEvent {
    UsageEvent {
        id,
        time_ns,
        start_ns: Some(start_ns),
        side: if side == "client" {
            Side::Client
        } else {
            Side::Server
        },
        provider,
        operation,
        model,
        tokens: Default::default(),
        gpu_time_us: 0,
        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
    }
}
