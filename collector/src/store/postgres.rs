//! PostgreSQL, for several collector replicas behind one Service: the same schema and
//! queries as SQLite ([`super::sql`]), migrations under an advisory lock so replicas starting
//! together apply them once, and batches inserted in id order so two replicas storing
//! overlapping batches never deadlock; `ON CONFLICT (id) DO NOTHING` makes the second one a
//! no-op, so a call is stored once whichever replica gets it first.

use postgres::{Client, NoTls};

use super::{period_of, sql, IngestOutcome, RatedEvent, SidePolicy, Store, StoreError, UsageRow};
use crate::{accounts::Account, usage::UsageEvent};

const MIGRATIONS: [&str; 3] = [
    include_str!("../../migrations/postgres/0001_usage.sql"),
    include_str!("../../migrations/postgres/0002_alerts.sql"),
    include_str!("../../migrations/postgres/0003_gpu_time.sql"),
];

/// Any constant both replicas agree on.
const MIGRATION_LOCK: i64 = 0x746f6b656e6d6574;

pub struct PostgresStore {
    client: Client,
    url: String,
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl PostgresStore {
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let error = |source| StoreError::Postgres {
            url: redact(url),
            source,
        };
        let mut client = Client::connect(url, NoTls).map_err(error)?;
        migrate(&mut client).map_err(error)?;
        Ok(PostgresStore {
            client,
            url: url.to_string(),
        })
    }

    /// The connection, opened again if the server closed it (a restart, a failover, an
    /// idle timeout): the request that found it broken failed (and is retried by its sender),
    /// the next one reconnects.
    fn connected(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_closed() {
            tracing::warn!(url = %redact(&self.url), "the database connection was closed; reconnecting");
            self.client =
                Client::connect(&self.url, NoTls).map_err(|source| StoreError::Postgres {
                    url: redact(&self.url),
                    source,
                })?;
        }
        Ok(&mut self.client)
    }
}

impl PostgresStore {
    /// Usage rows of one of the `sql::usage*` queries.
    fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = self.connected()?.query(sql, params)?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |i: usize| r.get::<_, i64>(i) as u64;
                UsageRow {
                    account: Account {
                        org: r.get(0),
                        team: r.get(1),
                        user: r.get(2),
                    },
                    price_id: r.get(3),
                    model: r.get(4),
                    requests: n(5),
                    quantities: [n(6), n(7), n(8), n(9), n(10)],
                    adjustments: n(11),
                    gpu_time_us: n(12),
                }
            })
            .collect())
    }
}

/// A batch as one array per column.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    time_ns: Vec<i64>,
    start_ns: Vec<i64>,
    period: Vec<String>,
    billed: Vec<String>,
    adjustment: Vec<i32>,
    side: Vec<String>,
    provider: Vec<String>,
    operation: Vec<String>,
    model: Vec<String>,
    org: Vec<String>,
    team: Vec<String>,
    user: Vec<String>,
    price_id: Vec<Option<String>>,
    q: [Vec<i64>; 5],
    pair_key: Vec<String>,
    attributes: Vec<String>,
    received_ns: Vec<i64>,
    gpu_time: Vec<i64>,
}

impl Columns {
    fn push(&mut self, rated: &RatedEvent, row: sql::Row, billed: String, late: bool, now_ns: i64) {
        let e = &rated.event;
        self.id.push(e.id.clone());
        self.time_ns.push(e.time_ns);
        self.start_ns.push(row.start_ns);
        self.period.push(row.period);
        self.billed.push(billed);
        self.adjustment.push(i32::from(late));
        self.side.push(e.side.as_str().to_string());
        self.provider.push(e.provider.clone());
        self.operation.push(e.operation.clone());
        self.model.push(e.model.clone());
        self.org.push(rated.account.org.clone());
        self.team.push(rated.account.team.clone());
        self.user.push(rated.account.user.clone());
        self.price_id.push(rated.price_id.clone());
        for (column, quantity) in self.q.iter_mut().zip(row.quantities) {
            column.push(quantity);
        }
        self.pair_key.push(row.pair_key);
        self.attributes.push(row.attributes);
        self.received_ns.push(now_ns);
        self.gpu_time.push(row.gpu_time);
    }
}

fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")?;
    let done: i64 = tx
        .query_one("SELECT count(*) FROM schema_migrations", &[])?
        .get(0);
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(migration)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()
}

impl Store for PostgresStore {
    fn ingest(&mut self, events: &[RatedEvent], now_ns: i64) -> Result<IngestOutcome, StoreError> {
        let mut order: Vec<&RatedEvent> = events.iter().collect();
        order.sort_by(|a, b| a.event.id.cmp(&b.event.id));
        let mut tx = self.connected()?.transaction()?;
        let current = period_of(now_ns);
        let mut finalized = std::collections::HashMap::new();
        let mut columns = Columns::default();
        for rated in order {
            let row = sql::Row::of(rated);
            let late = match finalized.get(&row.period) {
                Some(f) => *f,
                None => {
                    let f = tx.query_opt(sql::FINALIZED, &[&row.period])?.is_some();
                    finalized.insert(row.period.clone(), f);
                    f
                }
            };
            let billed = if late {
                current.clone()
            } else {
                row.period.clone()
            };
            columns.push(rated, row, billed, late, now_ns);
        }
        // One statement for the whole batch: a row per call, unnested from one array per
        // column, instead of a round trip per call.
        let c = &columns;
        let inserted = tx.query(
            sql::INSERT_UNNEST,
            &[
                &c.id,
                &c.time_ns,
                &c.start_ns,
                &c.period,
                &c.billed,
                &c.adjustment,
                &c.side,
                &c.provider,
                &c.operation,
                &c.model,
                &c.org,
                &c.team,
                &c.user,
                &c.price_id,
                &c.q[0],
                &c.q[1],
                &c.q[2],
                &c.q[3],
                &c.q[4],
                &c.pair_key,
                &c.attributes,
                &c.received_ns,
                &c.gpu_time,
            ],
        )?;
        tx.commit()?;
        let adjustments = inserted.iter().filter(|r| r.get::<_, i32>(0) == 1).count() as u64;
        Ok(IngestOutcome {
            inserted: inserted.len() as u64,
            duplicates: (c.id.len() - inserted.len()) as u64,
            adjustments,
        })
    }

    fn usage(&mut self, period: &str, policy: SidePolicy) -> Result<Vec<UsageRow>, StoreError> {
        self.rows(&sql::usage(policy), &[&period])
    }

    fn usage_window(
        &mut self,
        start_ns: i64,
        end_ns: i64,
        policy: SidePolicy,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.rows(&sql::usage_window(policy), &[&start_ns, &end_ns])
    }

    fn record_alert(&mut self, key: &str, now_ns: i64) -> Result<bool, StoreError> {
        Ok(self
            .connected()?
            .execute(sql::RECORD_ALERT, &[&key, &now_ns])?
            == 1)
    }

    fn is_finalized(&mut self, period: &str) -> Result<bool, StoreError> {
        Ok(self
            .connected()?
            .query_opt(sql::FINALIZED, &[&period])?
            .is_some())
    }

    fn finalize(&mut self, period: &str, now_ns: i64) -> Result<(), StoreError> {
        self.connected()?
            .execute(sql::FINALIZE, &[&period, &now_ns])?;
        Ok(())
    }

    fn rerate(
        &mut self,
        period: &str,
        decide: &dyn Fn(&UsageEvent) -> (Account, Option<String>),
    ) -> Result<u64, StoreError> {
        let mut tx = self.connected()?.transaction()?;
        let rows = tx.query(sql::RERATE_SELECT, &[&period])?;
        let update = tx.prepare(sql::RERATE_UPDATE)?;
        let mut changed = 0;
        for row in rows {
            let event = sql::event_of(
                row.get(0),
                row.get(1),
                row.get(2),
                row.get::<_, String>(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get::<_, String>(7),
            );
            let (account, price_id) = decide(&event);
            changed += tx.execute(
                &update,
                &[
                    &account.org,
                    &account.team,
                    &account.user,
                    &price_id,
                    &event.id,
                ],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    fn count(&mut self) -> Result<u64, StoreError> {
        let count: i64 = self
            .client
            .query_one("SELECT count(*) FROM usage", &[])?
            .get(0);
        Ok(count as u64)
    }
}
