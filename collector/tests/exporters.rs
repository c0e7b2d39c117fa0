//! Exporting a finalised period: Lago's batch events API, OpenMeter's CloudEvents, a signed
//! webhook and files, against a local HTTP server that records what each engine would get.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use support::{capture_server, post_usage, Collector, MARCH_10_NS};

/// A call of `user` on 2026-03-10.
fn usage(collector: &Collector, id: &str, user: &str, input: u64, output: u64) {
    let attributes = [("tokenmeter.request.user", user)];
    post_usage(collector, id, MARCH_10_NS, &attributes, input, Some(output));
}

fn export(collector: &Collector, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tokenmeter-collector"))
        .arg("export")
        .arg("--config")
        .arg(collector.dir.path().join("collector.toml"))
        .args(args)
        .output()
        .expect("run export")
}

#[test]
fn a_finalised_period_reaches_lago_openmeter_a_signed_webhook_and_files() {
    let (port, requests) = capture_server();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (lago_key, om_token, secret) = (
        write("lago-key", "lago-api-key-1234\n"),
        write("om-token", "om-token-5678"),
        write("webhook-secret", "whsec-abcdef"),
    );
    let bills = dir.path().join("bills");
    let base = format!("http://127.0.0.1:{port}");
    let exporters = format!(
        "[[exporters]]\nkind = \"lago\"\nurl = \"{base}\"\napi_key_file = {lago_key:?}\n\
         [[exporters]]\nkind = \"openmeter\"\nurl = \"{base}\"\ntoken_file = {om_token:?}\n\
         [[exporters]]\nkind = \"webhook\"\nurl = \"{base}/hooks/bill\"\nsecret_file = {secret:?}\n\
         [[exporters]]\nkind = \"files\"\ndir = {:?}\n",
        bills.display().to_string()
    );
    let collector = Collector::start_with(None, &exporters, "");
    usage(&collector, "e-1", "alice", 1_000_000, 200_000);
    usage(&collector, "e-2", "bob", 400_000, 100_000);
    usage(&collector, "e-3", "carol", 250_000, 50_000);

    let out = export(&collector, &["--period", "2026-03"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("finalised 2026-03"), "{stdout}");

    let got = requests.lock().unwrap().clone();
    // Lago: usage events per account, model and token type, with the enterprise as subscription.
    let lago: Vec<_> = got
        .iter()
        .filter(|r| r.path == "/api/v1/events/batch")
        .collect();
    assert_eq!(lago.len(), 1);
    assert_eq!(
        lago[0].header("authorization"),
        Some("Bearer lago-api-key-1234")
    );
    let events = lago[0].json()["events"].as_array().unwrap().clone();
    let mut per_org: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        assert_eq!(e["code"], "llm_tokens");
        assert_eq!(e["timestamp"], 1_772_323_200, "the period's start");
        *per_org
            .entry(e["external_subscription_id"].as_str().unwrap().into())
            .or_default() += e["properties"]["tokens"].as_u64().unwrap();
    }
    // bob has no mapping rule in the example accounts: his usage is billed, to `unassigned`.
    assert_eq!(
        per_org,
        BTreeMap::from([
            ("acme".into(), 1_200_000),
            ("globex".into(), 300_000),
            ("unassigned".into(), 500_000)
        ])
    );
    // OpenMeter: the same usage as CloudEvents, with the same stable ids.
    let om: Vec<_> = got.iter().filter(|r| r.path == "/api/v1/events").collect();
    assert_eq!(
        om[0].header("content-type"),
        Some("application/cloudevents-batch+json")
    );
    assert_eq!(om[0].header("authorization"), Some("Bearer om-token-5678"));
    let cloud = om[0].json();
    let cloud = cloud.as_array().unwrap();
    assert!(cloud
        .iter()
        .all(|e| e["specversion"] == "1.0" && e["source"] == "tokenmeter"));
    let ids = |list: &[Value], key: &str| -> Vec<String> {
        let mut ids: Vec<String> = list
            .iter()
            .map(|e| e[key].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(cloud, "id"), ids(&events, "transaction_id"));
    // The webhook: the bill, signed over "<timestamp>.<body>", checked with openssl.
    let hook = got
        .iter()
        .find(|r| r.path == "/hooks/bill")
        .expect("the webhook");
    let timestamp = hook.header("x-tokenmeter-timestamp").unwrap();
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend(&hook.body);
    let digest = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", "whsec-abcdef", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&signed)?;
            child.wait_with_output()
        })
        .unwrap();
    let expected = String::from_utf8_lossy(&digest.stdout);
    let expected = expected.split_whitespace().next().unwrap();
    assert_eq!(
        hook.header("x-tokenmeter-signature"),
        Some(format!("sha256={expected}").as_str())
    );
    assert_eq!(hook.json()["status"], "finalized");
    // Files.
    let json: Value =
        serde_json::from_slice(&std::fs::read(bills.join("bill-2026-03.json")).unwrap()).unwrap();
    assert_eq!(json["orgs"].as_array().unwrap().len(), 3);
    assert!(std::fs::read_to_string(bills.join("bill-2026-03.csv"))
        .unwrap()
        .starts_with("period,org,"));

    // Exporting again sends the same ids: the engines deduplicate.
    let before = events.clone();
    assert!(export(&collector, &["--period", "2026-03"])
        .status
        .success());
    let again = requests
        .lock()
        .unwrap()
        .iter()
        .rfind(|r| r.path == "/api/v1/events/batch")
        .unwrap()
        .json();
    assert_eq!(
        ids(again["events"].as_array().unwrap(), "transaction_id"),
        ids(&before, "transaction_id")
    );
}

#[test]
fn an_open_period_or_a_failing_engine_is_named() {
    let (port, _requests) = capture_server();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "k").unwrap();
    let collector = Collector::start_with(
        None,
        &format!(
            "[[exporters]]\nkind = \"lago\"\nurl = \"http://127.0.0.1:{port}/fail\"\napi_key_file = {:?}\n",
            key.display().to_string()
        ),
        "",
    );
    usage(&collector, "f-1", "alice", 10, 10);
    // The current month is open: only --draft exports it.
    let current = chrono::Utc::now().format("%Y-%m").to_string();
    let out = export(&collector, &["--period", &current]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--draft"));
    let out = export(&collector, &["--period", "2026-03"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lago") && stderr.contains("500") && stderr.contains("nope"),
        "{stderr}"
    );
}
