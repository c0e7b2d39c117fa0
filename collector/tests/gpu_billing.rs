//! GPU time on the bill: the agent's per-pod GPU usage records (`tokenmeter.gpu_usage`, OTLP
//! over HTTP) are stored once, not counted as requests, priced per GPU-second by the GPU's
//! product name, and rolled up to the pod's team and enterprise.

mod support;

use support::{Collector, MARCH_10_NS};

fn post_gpu(collector: &Collector, id: &str, gpu: &str, time_us: u64, team: &str) {
    let string =
        |key: &str, value: &str| serde_json::json!({"key": key, "value": {"stringValue": value}});
    let int = |key: &str, value: u64| serde_json::json!({"key": key, "value": {"intValue": value.to_string()}});
    let body = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
    "timeUnixNano": MARCH_10_NS.to_string(),
    "eventName": "tokenmeter.gpu_usage",
    "attributes": [
        string("tokenmeter.record.id", id),
        string("k8s.pod.uid", "0b5c1a2e-3f4d-4e6a-8b9c-0d1e2f3a4b5c"),
        string("tokenmeter.team", team),
        string("tokenmeter.gpu.name", gpu),
        int("tokenmeter.gpu.time_us", time_us),
        int("tokenmeter.gpu.tokens", 12_000),
    ]}]}]}]});
    support::post_logs(collector, &body);
}

#[test]
fn gpu_seconds_are_priced_per_gpu_model_and_rolled_up() {
    let collector = Collector::start(None);
    // Two minutes of an H100 for the search team (acme), one resent; half a minute of an
    // A100 no price names.
    post_gpu(
        &collector,
        "gpu-1",
        "NVIDIA H100 80GB HBM3",
        60_000_000,
        "search",
    );
    post_gpu(
        &collector,
        "gpu-2",
        "NVIDIA H100 80GB HBM3",
        60_000_000,
        "search",
    );
    post_gpu(
        &collector,
        "gpu-2",
        "NVIDIA H100 80GB HBM3",
        60_000_000,
        "search",
    );
    post_gpu(
        &collector,
        "gpu-3",
        "NVIDIA A100-SXM4-40GB",
        30_000_000,
        "search",
    );
    support::post_usage(
        &collector,
        "call-1",
        MARCH_10_NS,
        &[("tokenmeter.team", "search")],
        1_000_000,
        Some(0),
    );
    assert_eq!(
        collector.metric("tokenmeter_collector_gpu_records_total"),
        4
    );
    assert_eq!(
        collector.metric("tokenmeter_collector_records_duplicate_total"),
        1
    );

    let bill = collector.bill("2026-03");
    let acme = bill["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == "acme")
        .expect("acme is billed");
    let line = |model: &str| {
        acme["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["model"] == model && l["item"] == "gpu_time")
            .unwrap_or_else(|| panic!("no gpu_time line for {model}: {acme:#}"))
            .clone()
    };
    let h100 = line("NVIDIA H100 80GB HBM3");
    assert_eq!(h100["quantity"], 120_000_000, "µs, the resend counted once");
    // 120 GPU-seconds at 0.0011 = 0.132, rounded once per line to 0.13.
    assert_eq!(h100["amount"], "0.13");
    let a100 = line("NVIDIA A100-SXM4-40GB");
    assert_eq!(
        (a100["price_id"].clone(), a100["amount"].clone()),
        (serde_json::Value::Null, "0".into())
    );
    // GPU intervals are not requests; the one call is; tokens are the call's only.
    assert_eq!(acme["requests"], 1);
    assert_eq!(acme["tokens"], 1_000_000);
    assert_eq!(acme["gpu_time_us"], 150_000_000);
    let search = acme["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["account"] == "search")
        .unwrap();
    // 1M gpt-4o input tokens at 2.50 + the H100 line.
    assert_eq!(search["amount"], "2.63");

    let table = std::process::Command::new(env!("CARGO_BIN_EXE_tokenmeter-collector"))
        .args(["bill", "--period", "2026-03", "--config"])
        .arg(collector.dir.path().join("collector.toml"))
        .output()
        .expect("bill table");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("gpu_time (s)") && table.contains("120.000000"),
        "{table}"
    );
}

#[test]
fn gpu_time_is_billed_whichever_end_of_calls_the_policy_bills() {
    // Metering callers of external APIs bills client-side records only; GPU time held on the
    // node is no end of a call and stays on the bill.
    let collector = Collector::start_with(None, "side_policy = \"client\"", "");
    post_gpu(
        &collector,
        "gpu-1",
        "NVIDIA H100 80GB HBM3",
        60_000_000,
        "search",
    );
    let bill = collector.bill("2026-03");
    let acme = bill["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == "acme")
        .unwrap_or_else(|| panic!("acme is billed: {bill:#}"));
    assert_eq!(acme["gpu_time_us"], 60_000_000, "{acme:#}");
}
