//! Two collector processes on one PostgreSQL database, each receiving the whole stream at the
//! same time (as agents retrying against a Service that balances them), bill exactly what one
//! collector on SQLite bills for the stream received once.

mod support;

use std::path::Path;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
};
use prost::Message;
use serde_json::Value;
use support::{curl, Collector, TOKEN};
use tokenmeter_collector::usage::{int_attribute, string_attribute};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const MODELS: [&str; 3] = [
    "gpt-4o",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen3-8B",
];

/// Batch `b` of the stream: 100 calls in March 2026, client and server sides mixed.
fn batch(b: u64) -> Vec<u8> {
    let log_records = (b * 100..b * 100 + 100)
        .map(|i| LogRecord {
            time_unix_nano: 1_772_323_200_000_000_000 + i * 7_000_000_000,
            event_name: "tokenmeter.usage".into(),
            attributes: vec![
                string_attribute("tokenmeter.record.id", &format!("replica-{i:06}")),
                string_attribute(
                    "tokenmeter.side",
                    if i % 4 == 0 { "client" } else { "server" },
                ),
                string_attribute("gen_ai.response.model", MODELS[(i % 3) as usize]),
                string_attribute("tokenmeter.request.user", USERS[(i % 3) as usize]),
                int_attribute("gen_ai.usage.input_tokens", 300 + (i % 700) as i64),
                int_attribute("gen_ai.usage.output_tokens", 40 + (i % 90) as i64),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn post(collector: &Collector, file: &Path) {
    let (code, body) = curl(&[
        "-X",
        "POST",
        &format!("{}/v1/logs", collector.url("http")),
        "-H",
        "content-type: application/x-protobuf",
        "-H",
        &format!("authorization: Bearer {TOKEN}"),
        "--data-binary",
        &format!("@{}", file.display()),
    ]);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn two_replicas_on_postgres_bill_the_same_as_one() {
    let Some(url) = support::postgres_database("replicas") else {
        return;
    };
    let batches = 30u64;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..batches)
        .map(|b| {
            let path = dir.path().join(format!("batch-{b}.pb"));
            std::fs::write(&path, batch(b)).unwrap();
            path
        })
        .collect();

    let replicas = [Collector::start(Some(&url)), Collector::start(Some(&url))];
    std::thread::scope(|scope| {
        for (r, replica) in replicas.iter().enumerate() {
            let files = &files;
            scope.spawn(move || {
                // Each replica gets every batch, in a different order.
                let mut order: Vec<&std::path::PathBuf> = files.iter().collect();
                if r == 1 {
                    order.reverse();
                }
                for file in order {
                    post(replica, file);
                }
            });
        }
    });
    let single = Collector::start(None);
    for file in &files {
        post(&single, file);
    }

    let inserted: u64 = replicas
        .iter()
        .map(|r| r.metric("tokenmeter_collector_records_inserted_total"))
        .sum();
    let duplicates: u64 = replicas
        .iter()
        .map(|r| r.metric("tokenmeter_collector_records_duplicate_total"))
        .sum();
    assert_eq!(
        inserted,
        batches * 100,
        "every call stored once across replicas"
    );
    assert_eq!(duplicates, batches * 100, "and refused once as a duplicate");
    let shared: Value = replicas[0].bill("2026-03");
    assert_eq!(shared, replicas[1].bill("2026-03"));
    assert_eq!(shared, single.bill("2026-03"));
    let requests: u64 = shared["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["requests"].as_u64().unwrap())
        .sum();
    assert!(requests > 0 && requests <= batches * 100, "{requests}");
}
