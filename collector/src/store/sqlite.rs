//! The embedded store: one SQLite file in WAL mode, migrations applied at open
//! (`PRAGMA user_version` records how far), each ingest one transaction of
//! `INSERT ... ON CONFLICT(id) DO NOTHING` ([`super::sql`], shared with PostgreSQL).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{period_of, sql, IngestOutcome, RatedEvent, SidePolicy, Store, StoreError, UsageRow};
use crate::{accounts::Account, usage::UsageEvent};

const MIGRATIONS: [&str; 3] = [
    include_str!("../../migrations/sqlite/0001_usage.sql"),
    include_str!("../../migrations/sqlite/0002_alerts.sql"),
    include_str!("../../migrations/sqlite/0003_gpu_time.sql"),
];

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_error = |source| StoreError::Open {
            url: format!("sqlite:{}", path.display()),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        // Indexes of a month of calls do not fit the default 2 MiB cache: inserts then read
        // pages back from disk. 64 MiB keeps them hot.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_error)?;
        let mut store = SqliteStore { conn };
        store.migrate().map_err(open_error)?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), rusqlite::Error> {
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Usage rows of one of the `sql::usage*` queries.
    fn rows(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<UsageRow>, StoreError> {
        let mut statement = self.conn.prepare(sql)?;
        let rows = statement.query_map(params, |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
            Ok(UsageRow {
                account: Account {
                    org: r.get(0)?,
                    team: r.get(1)?,
                    user: r.get(2)?,
                },
                price_id: r.get(3)?,
                model: r.get(4)?,
                requests: n(5)?,
                quantities: [n(6)?, n(7)?, n(8)?, n(9)?, n(10)?],
                adjustments: n(11)?,
                gpu_time_us: n(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn finalized(conn: &Connection, period: &str) -> Result<bool, rusqlite::Error> {
        Ok(conn
            .query_row(sql::FINALIZED, [period], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

impl Store for SqliteStore {
    fn ingest(&mut self, events: &[RatedEvent], now_ns: i64) -> Result<IngestOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcome = IngestOutcome::default();
        {
            let mut finalized = std::collections::HashMap::new();
            let mut insert = tx.prepare_cached(sql::INSERT)?;
            let current = period_of(now_ns);
            for rated in events {
                let e = &rated.event;
                let row = sql::Row::of(rated);
                let late = match finalized.get(&row.period) {
                    Some(f) => *f,
                    None => {
                        let f = Self::finalized(&tx, &row.period)?;
                        finalized.insert(row.period.clone(), f);
                        f
                    }
                };
                // A late call is billed in the current period, as a visible adjustment.
                let billed = if late { &current } else { &row.period };
                let q = row.quantities;
                let changed = insert.execute(params![
                    e.id,
                    e.time_ns,
                    row.start_ns,
                    row.period,
                    billed,
                    late,
                    e.side.as_str(),
                    e.provider,
                    e.operation,
                    e.model,
                    rated.account.org,
                    rated.account.team,
                    rated.account.user,
                    rated.price_id,
                    q[0],
                    q[1],
                    q[2],
                    q[3],
                    q[4],
                    row.pair_key,
                    row.attributes,
                    now_ns,
                    row.gpu_time,
                ])?;
                if changed == 0 {
                    outcome.duplicates += 1;
                } else {
                    outcome.inserted += 1;
                    outcome.adjustments += u64::from(late);
                }
            }
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn usage(&mut self, period: &str, policy: SidePolicy) -> Result<Vec<UsageRow>, StoreError> {
        self.rows(&sql::usage(policy), params![period])
    }

    fn usage_window(
        &mut self,
        start_ns: i64,
        end_ns: i64,
        policy: SidePolicy,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.rows(&sql::usage_window(policy), params![start_ns, end_ns])
    }

    fn record_alert(&mut self, key: &str, now_ns: i64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(sql::RECORD_ALERT, params![key, now_ns])? == 1)
    }

    fn is_finalized(&mut self, period: &str) -> Result<bool, StoreError> {
        Ok(Self::finalized(&self.conn, period)?)
    }

    fn finalize(&mut self, period: &str, now_ns: i64) -> Result<(), StoreError> {
        self.conn.execute(sql::FINALIZE, params![period, now_ns])?;
        Ok(())
    }

    fn rerate(
        &mut self,
        period: &str,
        decide: &dyn Fn(&UsageEvent) -> (Account, Option<String>),
    ) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let mut changed = 0;
        {
            let mut select = tx.prepare(sql::RERATE_SELECT)?;
            let mut update = tx.prepare(sql::RERATE_UPDATE)?;
            // Read them all first: updating rows while a cursor walks an index over the same
            // columns can show a row twice.
            let events = select.query_map([period], |r| {
                Ok(sql::event_of(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?;
            let events: Vec<UsageEvent> = events.collect::<Result<_, _>>()?;
            for event in events {
                let (account, price_id) = decide(&event);
                changed += update.execute(params![
                    account.org,
                    account.team,
                    account.user,
                    price_id,
                    event.id
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    fn count(&mut self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM usage", [], |r| r.get::<_, i64>(0))? as u64)
    }
}
