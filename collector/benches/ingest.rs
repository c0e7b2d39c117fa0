//! Ingest rate into SQLite and the time to bill a month, as measured figures for
//! docs/benchmarks.md (one thread; the machine is shared, so compare within a run):
//!
//! - the full path (`Ingestor::ingest_logs`: OTLP log records -> decode -> account -> price
//!   entry -> one transaction) at batch sizes 100, 1,000 and 10,000;
//! - the store alone (`Store::ingest` of rated calls);
//! - `Store::usage` + `bill::compute` over 1,000,000 stored calls;
//! - the store alone on PostgreSQL, when `TOKENMETER_BENCH_POSTGRES_URL` names a database.
//!
//! Run: `cargo bench -p tokenmeter-collector --bench ingest`.

use std::time::Instant;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
};
use tokenmeter_collector::{
    accounts::{Account, Accounts},
    bill,
    rate::PriceBook,
    receive::Ingestor,
    store::{self, RatedEvent, SidePolicy},
    usage::{int_attribute, string_attribute, Side, Tokens, UsageEvent},
};

const BOOK: &str = include_str!("../examples/prices.toml");
const ACCOUNTS: &str = include_str!("../examples/accounts.toml");
const MODELS: [&str; 4] = [
    "gpt-4o",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen3-8B",
    "claude-sonnet-4",
];
const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// 2026-03-01T00:00Z.
const MARCH: u64 = 1_772_323_200_000_000_000;

fn log(i: u64) -> LogRecord {
    LogRecord {
        time_unix_nano: MARCH + i * 2_000_000_000,
        event_name: "tokenmeter.usage".into(),
        attributes: vec![
            string_attribute("tokenmeter.record.id", &format!("{i:016x}")),
            string_attribute("tokenmeter.side", "server"),
            string_attribute("gen_ai.response.model", MODELS[(i % 4) as usize]),
            string_attribute("tokenmeter.request.user", USERS[(i % 3) as usize]),
            string_attribute("k8s.pod.uid", "0b7e2f8a-5d1c-4c53-9f61-3f1f8c1a2b3c"),
            int_attribute("gen_ai.usage.input_tokens", 500 + (i % 1000) as i64),
            int_attribute("gen_ai.usage.output_tokens", 50 + (i % 300) as i64),
        ],
        ..Default::default()
    }
}

fn request(range: std::ops::Range<u64>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: range.map(log).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn full_path(batch: u64, n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("usage.db").display());
    let ingestor = Ingestor::new(
        store::open(&url).expect("store"),
        PriceBook::parse(BOOK).expect("book"),
        Accounts::parse(ACCOUNTS).expect("accounts"),
    );
    let requests: Vec<_> = (0..n)
        .step_by(batch as usize)
        .map(|s| request(s..(s + batch).min(n)))
        .collect();
    let started = Instant::now();
    for r in &requests {
        ingestor.ingest_logs(r).expect("ingest");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn rated(i: u64) -> RatedEvent {
    RatedEvent {
        event: UsageEvent {
            id: format!("{i:016x}"),
            time_ns: (MARCH + i * 2_000_000_000) as i64,
            start_ns: None,
            side: Side::Server,
            provider: "openai".into(),
            operation: "chat".into(),
            model: MODELS[(i % 4) as usize].into(),
            tokens: Tokens {
                input: 500 + i % 1000,
                output: 50 + i % 300,
                ..Default::default()
            },
            gpu_time_us: 0,
            attributes: Default::default(),
        },
        account: Account {
            org: ["acme", "globex", "initech"][(i % 3) as usize].into(),
            team: format!("t{}", i % 10),
            user: format!("u{}", i % 100),
        },
        price_id: Some("global:gpt-4o*@2026-01-01".into()),
    }
}

fn main() {
    for batch in [100, 1_000, 10_000] {
        let rate = full_path(batch, 200_000);
        println!("full ingest path, batches of {batch:>6}: {rate:>9.0} records/s");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("usage.db").display());
    let mut store = store::open(&url).expect("store");
    let n = 1_000_000u64;
    let started = Instant::now();
    for start in (0..n).step_by(10_000) {
        let batch: Vec<_> = (start..start + 10_000).map(rated).collect();
        store.ingest(&batch, 0).expect("ingest");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("store only, batches of 10000:       {rate:>9.0} records/s ({n} calls)");
    if let Ok(url) = std::env::var("TOKENMETER_BENCH_POSTGRES_URL") {
        let mut pg = store::open(&url).expect("PostgreSQL");
        let n = 200_000u64;
        let started = Instant::now();
        for start in (0..n).step_by(10_000) {
            let batch: Vec<_> = (start..start + 10_000).map(rated).collect();
            pg.ingest(&batch, 0).expect("ingest");
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "PostgreSQL store, batches of 10000:  {rate:>9.0} records/s ({n} calls, loopback)"
        );
    }
    let book = PriceBook::parse(BOOK).expect("book");
    let accounts = Accounts::default();
    let started = Instant::now();
    let rows = store
        .usage("2026-03", SidePolicy::PreferServer)
        .expect("usage");
    let query = started.elapsed();
    let bill = bill::compute("2026-03", false, &rows, &book, &accounts);
    let total = started.elapsed();
    println!(
        "bill of {n} calls: {:.2} s ({:.2} s aggregating in SQLite, {} rows, {} enterprises)",
        total.as_secs_f64(),
        query.as_secs_f64(),
        rows.len(),
        bill.orgs.len()
    );
}
