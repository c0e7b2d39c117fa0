//! Storage behind one interface. SQLite (one file, WAL) is the embedded default; the
//! interface is what a PostgreSQL backend implements for several replicas. Ingest is
//! idempotent on the record id: a duplicate is counted and ignored, and a batch is stored
//! whole or not at all.

mod postgres;
mod sql;
mod sqlite;

pub use self::postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::{accounts::Account, usage::UsageEvent};

/// A call ready to store: its account and price-book entry are decided.
#[derive(Clone, Debug, PartialEq)]
pub struct RatedEvent {
    pub event: UsageEvent,
    pub account: Account,
    pub price_id: Option<String>,
}

/// What one ingest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    /// Inserted into a later period because their own was finalised.
    pub adjustments: u64,
}

/// Aggregated billable usage of one account, price entry and model in a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub account: Account,
    pub price_id: Option<String>,
    pub model: String,
    pub requests: u64,
    /// Disjoint quantities in `usage::TOKEN_TYPES` order.
    pub quantities: [u64; 5],
    /// Calls that are adjustments (late for a finalised period).
    pub adjustments: u64,
    /// GPU time held, µs (from GPU usage records; priced by the entry's `gpu_time`).
    pub gpu_time_us: u64,
}

/// Which end of a call is billed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SidePolicy {
    /// Server-side records; a client-side record only when no server-side record of the
    /// same call exists (the server is not metered): each call once.
    #[default]
    PreferServer,
    /// Only server-side records.
    Server,
    /// Only client-side records (metering callers of external APIs).
    Client,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite file could not be opened or migrated.
    #[error("database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL server could not be reached or migrated (the password is not shown).
    #[error("database {url}: {source}")]
    Postgres {
        url: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Pg(#[from] ::postgres::Error),
}

/// What the collector needs from a database.
pub trait Store: Send {
    /// Stores new calls, ignoring ids already stored.
    fn ingest(&mut self, events: &[RatedEvent], now_ns: i64) -> Result<IngestOutcome, StoreError>;
    /// The billable usage of a period, per account, price entry and model.
    fn usage(&mut self, period: &str, policy: SidePolicy) -> Result<Vec<UsageRow>, StoreError>;
    /// The billable usage of calls that ended in [`start_ns`, `end_ns`) (quota windows).
    fn usage_window(
        &mut self,
        start_ns: i64,
        end_ns: i64,
        policy: SidePolicy,
    ) -> Result<Vec<UsageRow>, StoreError>;
    /// Records that an alert was sent; `false` when it already was (by any replica).
    fn record_alert(&mut self, key: &str, now_ns: i64) -> Result<bool, StoreError>;
    fn is_finalized(&mut self, period: &str) -> Result<bool, StoreError>;
    fn finalize(&mut self, period: &str, now_ns: i64) -> Result<(), StoreError>;
    /// Decides account and price entry again for every call billed in a draft period.
    fn rerate(
        &mut self,
        period: &str,
        decide: &dyn Fn(&UsageEvent) -> (Account, Option<String>),
    ) -> Result<u64, StoreError>;
    /// Calls stored, for the metrics.
    fn count(&mut self) -> Result<u64, StoreError>;
}

/// Opens the store a URL names: `sqlite:PATH` (or a bare path), or
/// `postgres://user:password@host:port/database` for several replicas.
pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PostgresStore::open(url)?));
    }
    let path = url.strip_prefix("sqlite:").unwrap_or(url);
    Ok(Box::new(SqliteStore::open(std::path::Path::new(path))?))
}

/// The UTC month of a time: `YYYY-MM`.
pub fn period_of(time_ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(time_ns)
        .format("%Y-%m")
        .to_string()
}
