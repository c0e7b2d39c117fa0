//! The embedded store: one SQLite file in WAL mode, migrations applied at open
//! (`PRAGMA user_version` records how far), each ingest one transaction of
//! `INSERT ... ON CONFLICT(id) DO NOTHING`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{period_of, IngestOutcome, RatedEvent, SidePolicy, Store, StoreError, UsageRow};
use crate::{accounts::Account, usage::UsageEvent};

const MIGRATIONS: [&str; 1] = [include_str!("../../migrations/sqlite/0001_usage.sql")];

/// How far apart the two ends of one call may start.
const PAIR_WINDOW_NS: i64 = 5_000_000_000;

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

    fn finalized(conn: &Connection, period: &str) -> Result<bool, rusqlite::Error> {
        Ok(conn
            .query_row(
                "SELECT status FROM periods WHERE period = ?1",
                [period],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .is_some_and(|s| s == "finalized"))
    }
}

impl Store for SqliteStore {
    fn ingest(&mut self, events: &[RatedEvent], now_ns: i64) -> Result<IngestOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcome = IngestOutcome::default();
        {
            let mut finalized = std::collections::HashMap::new();
            let mut insert = tx.prepare_cached(
                "INSERT INTO usage (id, time_ns, start_ns, period, billed_period, adjustment, side,
                    provider, operation, model, org, team, user, price_id,
                    input, cached_input, cache_creation_input, output, reasoning,
                    pair_key, attributes, received_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                    ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
                 ON CONFLICT (id) DO NOTHING",
            )?;
            let current = period_of(now_ns);
            for rated in events {
                let e = &rated.event;
                let period = period_of(e.time_ns);
                let late = match finalized.get(&period) {
                    Some(f) => *f,
                    None => {
                        let f = Self::finalized(&tx, &period)?;
                        finalized.insert(period.clone(), f);
                        f
                    }
                };
                // A late call is billed in the current period, as a visible adjustment.
                let billed = if late {
                    current.clone()
                } else {
                    period.clone()
                };
                let q = e.tokens.billable();
                let changed = insert.execute(params![
                    e.id,
                    e.time_ns,
                    e.start_ns.unwrap_or(e.time_ns),
                    period,
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
                    q[0].1 as i64,
                    q[1].1 as i64,
                    q[2].1 as i64,
                    q[3].1 as i64,
                    q[4].1 as i64,
                    format!("{}|{}|{}", e.model, e.tokens.input, e.tokens.output),
                    serde_json::to_string(&e.attributes).expect("attributes serialise"),
                    now_ns,
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

    fn usage(&self, period: &str, policy: SidePolicy) -> Result<Vec<UsageRow>, StoreError> {
        let side_filter = match policy {
            SidePolicy::Server => "u.side = 'server'".to_string(),
            SidePolicy::Client => "u.side = 'client'".to_string(),
            SidePolicy::PreferServer => format!(
                "(u.side = 'server' OR NOT EXISTS (
                    SELECT 1 FROM usage s
                    WHERE s.pair_key = u.pair_key AND s.side = 'server'
                      AND s.start_ns BETWEEN u.start_ns - {PAIR_WINDOW_NS}
                                         AND u.start_ns + {PAIR_WINDOW_NS}))"
            ),
        };
        let sql = format!(
            "SELECT org, team, user, price_id, model, count(*),
                sum(input), sum(cached_input), sum(cache_creation_input), sum(output),
                sum(reasoning), sum(adjustment)
             FROM usage u
             WHERE u.billed_period = ?1 AND {side_filter}
             GROUP BY org, team, user, price_id, model
             ORDER BY org, team, user, model, price_id"
        );
        let mut statement = self.conn.prepare(&sql)?;
        let rows = statement.query_map(params![period], |r| {
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
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn is_finalized(&self, period: &str) -> Result<bool, StoreError> {
        Ok(Self::finalized(&self.conn, period)?)
    }

    fn finalize(&mut self, period: &str, now_ns: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO periods (period, status, finalized_ns) VALUES (?1, 'finalized', ?2)
             ON CONFLICT (period) DO UPDATE SET status = 'finalized', finalized_ns = ?2",
            params![period, now_ns],
        )?;
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
            let mut select = tx.prepare(
                "SELECT id, time_ns, start_ns, side, provider, operation, model, attributes
                 FROM usage WHERE billed_period = ?1",
            )?;
            let mut update = tx.prepare(
                "UPDATE usage SET org = ?2, team = ?3, user = ?4, price_id = ?5 WHERE id = ?1",
            )?;
            let rows = select.query_map([period], |r| {
                let side: String = r.get(3)?;
                let attributes: String = r.get(7)?;
                Ok(UsageEvent {
                    id: r.get(0)?,
                    time_ns: r.get(1)?,
                    start_ns: r.get(2)?,
                    side: if side == "client" {
                        crate::usage::Side::Client
                    } else {
                        crate::usage::Side::Server
                    },
                    provider: r.get(4)?,
                    operation: r.get(5)?,
                    model: r.get(6)?,
                    tokens: Default::default(),
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                })
            })?;
            for event in rows {
                let event = event?;
                let (account, price_id) = decide(&event);
                changed += update.execute(params![
                    event.id,
                    account.org,
                    account.team,
                    account.user,
                    price_id
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    fn count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM usage", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
