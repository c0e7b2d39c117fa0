//! End to end: usage leaves the agent over OTLP through a real OpenTelemetry collector
//! (rotel) to a receiver on the official protos, and nothing is lost or counted twice when
//! the collector goes away for a minute, the agent is SIGKILLed, or the spool disk is
//! read-only or full.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokenmeter_tests::agent::{metric_in, Agent, AgentOptions};
use tokenmeter_tests::llm::{self, LlmServer, ServedRequest};
use tokenmeter_tests::otlp::{self, OtlpReceiver, Rotel};
use tokenmeter_tests::{e2e_prelude, fixtures, nonce, wait};

/// The agent exporting over OTLP to `endpoint`, spooling in `spool`.
fn otlp_agent(endpoint: &str, protocol: &str, spool: &Path) -> Agent {
    Agent::start(AgentOptions {
        meter: true,
        metrics: true,
        run_args: vec![
            "--export".into(),
            "otlp".into(),
            "--spool-dir".into(),
            spool.display().to_string(),
        ],
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
            ("TOKENMETER_CHECKPOINT_INTERVAL".into(), "200".into()),
        ],
        ..Default::default()
    })
}

/// `openai_client.py --repeat` in the background: a steady load.
fn load(python: &Path, server: &LlmServer, calls: u32, interval: &str, out: &Path) -> Child {
    Command::new(python)
        .arg(fixtures::fixture("openai_client.py"))
        .args([
            "--base-url",
            &server.base_url(),
            "--stream",
            "--include-usage",
        ])
        .args(["--repeat", &calls.to_string(), "--interval", interval])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).expect("client stdout"))
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start openai_client.py")
}

fn side<'a>(records: &'a BTreeMap<String, Value>, side: &str) -> Vec<&'a Value> {
    records
        .values()
        .filter(|r| r["attributes"]["tokenmeter.side"] == side)
        .collect()
}

fn tokens(record: &Value, attribute: &str) -> u64 {
    otlp::int(&record["attributes"][attribute])
        .unwrap_or_else(|| panic!("{attribute} in {record:#}"))
}

/// (input, output) pairs, sorted: what the server reported, against what was exported.
fn served_usage(served: &[ServedRequest]) -> Vec<(u64, u64)> {
    let mut usage: Vec<_> = served
        .iter()
        .map(|s| (s.prompt_tokens, s.completion_tokens))
        .collect();
    usage.sort();
    usage
}

fn exported_usage(records: &[&Value]) -> Vec<(u64, u64)> {
    let mut usage: Vec<_> = records
        .iter()
        .map(|r| {
            (
                tokens(r, "gen_ai.usage.input_tokens"),
                tokens(r, "gen_ai.usage.output_tokens"),
            )
        })
        .collect();
    usage.sort();
    usage
}

/// The cumulative `tokenmeter.tokens` of one side and token type, summed over series.
fn counter_total(receiver: &OtlpReceiver, side: &str, kind: &str) -> u64 {
    otlp::latest_sums(&receiver.metric_requests(), "tokenmeter.tokens")
        .iter()
        .filter(|(series, _)| {
            series.contains(&("tokenmeter.side".into(), side.into()))
                && series.contains(&("gen_ai.token.type".into(), kind.into()))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Waits until the receiver holds `n` distinct server-side usage records.
fn wait_for_server_records(
    receiver: &OtlpReceiver,
    n: usize,
    within: Duration,
) -> BTreeMap<String, Value> {
    wait_for_records(receiver, n, 0, within)
}

/// Waits until the receiver holds `servers` and `clients` distinct records of each side.
fn wait_for_records(
    receiver: &OtlpReceiver,
    servers: usize,
    clients: usize,
    within: Duration,
) -> BTreeMap<String, Value> {
    let n = servers;
    wait::poll_until(within, || {
        let records = otlp::usage_by_id(&receiver.logs());
        (side(&records, "server").len() >= servers && side(&records, "client").len() >= clients)
            .then_some(records)
    })
    .unwrap_or_else(|| {
        let records = otlp::usage_by_id(&receiver.logs());
        panic!(
            "the receiver has {} server-side records, expected {n}",
            side(&records, "server").len()
        )
    })
}

/// Waits until the cumulative counter (server side, input) reaches `total`.
fn wait_for_counter(receiver: &OtlpReceiver, total: u64) -> u64 {
    wait::poll_until(Duration::from_secs(30), || {
        let got = counter_total(receiver, "server", "input");
        (got == total).then_some(got)
    })
    .unwrap_or_else(|| counter_total(receiver, "server", "input"))
}

#[test]
fn usage_reaches_a_real_collector_as_logs_and_metrics() {
    let Some(_guard) = e2e_prelude("usage_reaches_a_real_collector_as_logs_and_metrics") else {
        return;
    };
    let Some(python) = llm::require_python("usage_reaches_a_real_collector") else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let receiver = OtlpReceiver::start(&python);
    let rotel = Rotel::start(&python, receiver.port);
    let spool = fixtures::tempdir("spool");
    let agent = otlp_agent(&rotel.grpc_endpoint(), "grpc", spool.path());
    let canary = nonce("canary-prompt");
    let prompt = format!("Say hello to the meter {canary}");
    llm::openai_client(
        &python,
        &server,
        &["--stream", "--include-usage", "--prompt", &prompt],
    );
    llm::openai_client(
        &python,
        &server,
        &["--max-tokens", "5", "--prompt", &prompt],
    );
    llm::openai_client(
        &python,
        &server,
        &["--stream", "--include-usage", "--max-tokens", "3"],
    );
    let served = server.served();
    assert_eq!(served.len(), 3);
    wait_for_server_records(&receiver, 3, Duration::from_secs(60));
    let run = agent.stop();
    run.assert_clean_exit();
    let records = wait_for_records(&receiver, 3, 3, Duration::from_secs(30));

    let servers = side(&records, "server");
    let clients = side(&records, "client");
    assert_eq!(servers.len(), 3, "{records:#?}");
    assert_eq!(clients.len(), 3, "{records:#?}");
    assert_eq!(exported_usage(&servers), served_usage(&served));
    assert_eq!(exported_usage(&clients), served_usage(&served));
    for record in records.values() {
        let attributes = &record["attributes"];
        assert_eq!(record["event_name"], "tokenmeter.usage");
        assert_eq!(record["resource"]["service.name"], "tokenmeter-agent");
        assert_eq!(
            record["schema_url"],
            "https://opentelemetry.io/schemas/1.37.0"
        );
        assert_eq!(
            record["time_unix_nano"], record["observed_time_unix_nano"],
            "one time on every retry: the call's end"
        );
        assert_eq!(attributes["gen_ai.operation.name"], "chat");
        assert_eq!(attributes["gen_ai.provider.name"], "openai");
        assert_eq!(attributes["gen_ai.request.model"], served[0].model.as_str());
        assert_eq!(
            attributes["tokenmeter.usage.input_tokens.source"],
            "reported"
        );
        assert!(attributes["tokenmeter.api_key.fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"));
    }

    // Metrics: the GenAI names, and values equal to the records.
    let metrics = receiver.metric_requests();
    let names = otlp::metric_names(&metrics);
    for name in [
        "gen_ai.client.token.usage",
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.client.operation.duration",
        "tokenmeter.tokens",
        "tokenmeter.requests",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let input: u64 = served.iter().map(|s| s.prompt_tokens).sum();
    let output: u64 = served.iter().map(|s| s.completion_tokens).sum();
    assert_eq!(counter_total(&receiver, "server", "input"), input);
    assert_eq!(counter_total(&receiver, "server", "output"), output);
    assert_eq!(counter_total(&receiver, "client", "output"), output);
    // Cumulative histograms: the latest point of each series holds its total (a collector may
    // split one export into several requests, so every request is read).
    let histogram_input: f64 =
        otlp::latest_points(&metrics, "gen_ai.client.token.usage", "histogram")
            .into_iter()
            .filter(|(series, _)| series.contains(&("gen_ai.token.type".into(), "input".into())))
            .map(|(_, p)| p["sum"].as_f64().unwrap())
            .sum();
    assert_eq!(
        histogram_input,
        (2 * input) as f64,
        "both sides, cumulative"
    );

    // Privacy: no prompt text and no API key in anything exported or logged.
    let raw = receiver.raw();
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!raw.is_empty());
    assert!(!contains(&raw, &canary), "the prompt's canary was exported");
    assert!(!contains(&raw, "Say hello to the meter"));
    assert!(!contains(&raw, "sk-test-not-a-real-key"));
    assert!(!run.stderr.contains(&canary) && !run.stdout.contains(&canary));
}

#[test]
fn a_collector_outage_of_a_minute_loses_nothing() {
    let Some(_guard) = e2e_prelude("a_collector_outage_of_a_minute_loses_nothing") else {
        return;
    };
    let Some(python) = llm::require_python("a_collector_outage_of_a_minute_loses_nothing") else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let receiver = OtlpReceiver::start(&python);
    let mut rotel = Rotel::start(&python, receiver.port);
    let spool = fixtures::tempdir("spool");
    // HTTP/protobuf this time, so both transports meet a real collector.
    let agent = otlp_agent(&rotel.http_endpoint(), "http/protobuf", spool.path());
    let out = spool.path().join("client.jsonl");
    let mut client = load(&python, &server, 48, "1.5", &out);
    wait_for_server_records(&receiver, 3, Duration::from_secs(60));

    rotel.pause();
    let during = server.served().len();
    std::thread::sleep(Duration::from_secs(60));
    let after_outage = server.served().len();
    // The agent's health shows the outage: failed deliveries, a lag, records waiting on disk.
    let (_, health) = agent.get("/metrics");
    assert!(
        metric_in(&health, "tokenmeter_export_failures_total") > 0,
        "{health}"
    );
    assert!(
        metric_in(&health, "tokenmeter_export_lag_seconds") >= 10,
        "{health}"
    );
    assert!(
        metric_in(&health, "tokenmeter_export_spool_bytes") > 0,
        "{health}"
    );
    assert_eq!(
        metric_in(&health, "tokenmeter_export_spool_on_disk"),
        1,
        "{health}"
    );
    assert!(
        after_outage > during + 20,
        "the load went on during the outage"
    );
    rotel.resume();

    let finished = wait::wait_child(&mut client, Duration::from_secs(120));
    assert!(
        finished.is_some_and(|s| s.success()),
        "the client load failed"
    );
    let served = server.served();
    wait_for_server_records(&receiver, served.len(), Duration::from_secs(90));
    // Recovered: no lag, and everything delivered was counted.
    let (_, health) = agent.get("/metrics");
    assert_eq!(
        metric_in(&health, "tokenmeter_export_lag_seconds"),
        0,
        "{health}"
    );
    assert!(
        metric_in(&health, "tokenmeter_export_records_delivered_total")
            >= 2 * served.len() as u64 - 2
    );
    assert_eq!(
        metric_in(&health, "tokenmeter_export_records_dropped_total"),
        0
    );
    let run = agent.stop();
    run.assert_clean_exit();
    let records = wait_for_records(
        &receiver,
        served.len(),
        served.len(),
        Duration::from_secs(30),
    );
    assert!(
        run.stderr.contains("delivering usage records failed"),
        "the outage was logged: {}",
        run.stderr
    );
    assert!(run.stderr.contains("usage records are delivered again"));

    // Every call exactly once per side after deduplication, with the server's usage.
    let servers = side(&records, "server");
    assert_eq!(servers.len(), served.len());
    assert_eq!(side(&records, "client").len(), served.len());
    assert_eq!(exported_usage(&servers), served_usage(&served));
    // The cumulative counter converged to the true total.
    let input: u64 = served.iter().map(|s| s.prompt_tokens).sum();
    assert_eq!(wait_for_counter(&receiver, input), input);
}

/// Record ids in the spool's segment files (what the agent made durable).
fn spooled_ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).expect("spool dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
                if let Ok(record) = serde_json::from_str::<Value>(line) {
                    if let Some(id) = record["id"].as_str() {
                        ids.push(id.to_string());
                    }
                }
            }
        }
    }
    ids
}

#[test]
fn a_sigkilled_agent_resumes_from_its_spool() {
    let Some(_guard) = e2e_prelude("a_sigkilled_agent_resumes_from_its_spool") else {
        return;
    };
    let Some(python) = llm::require_python("a_sigkilled_agent_resumes_from_its_spool") else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let receiver = OtlpReceiver::start(&python);
    let mut rotel = Rotel::start(&python, receiver.port);
    let spool = fixtures::tempdir("spool");
    let first = otlp_agent(&rotel.grpc_endpoint(), "grpc", spool.path());
    let out = spool.path().join("client.out");
    let mut client = load(&python, &server, 40, "0.25", &out);
    wait_for_server_records(&receiver, 4, Duration::from_secs(60));
    // With the collector away the spool holds undelivered records at the kill.
    rotel.pause();
    wait::poll_until(Duration::from_secs(30), || {
        (spooled_ids(spool.path()).len() >= 6).then_some(())
    })
    .expect("records spooled while the collector is away");
    let durable = spooled_ids(spool.path());
    first.kill();
    rotel.resume();

    let second = otlp_agent(&rotel.grpc_endpoint(), "grpc", spool.path());
    let finished = wait::wait_child(&mut client, Duration::from_secs(120));
    assert!(
        finished.is_some_and(|s| s.success()),
        "the client load failed"
    );
    // Let the second agent meter the last calls, then stop it.
    std::thread::sleep(Duration::from_secs(2));
    let run = second.stop();
    run.assert_clean_exit();
    let records = otlp::usage_by_id(&receiver.logs());
    for id in &durable {
        assert!(records.contains_key(id), "spooled record {id} was lost");
    }
    // The counters converge on the records that exist, each counted once.
    let servers = side(&records, "server");
    let input: u64 = servers
        .iter()
        .map(|r| tokens(r, "gen_ai.usage.input_tokens"))
        .sum();
    assert_eq!(
        wait_for_counter(&receiver, input),
        input,
        "{} records",
        servers.len()
    );
    assert!(servers.len() < 2 * server.served().len());
}

/// A tmpfs mounted for the test; unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tokenmeter-test"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs -o {options} failed");
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_or_full_spool_is_named_and_metering_goes_on() {
    let Some(_guard) = e2e_prelude("a_read_only_or_full_spool_is_named_and_metering_goes_on")
    else {
        return;
    };
    let Some(python) = llm::require_python("a_read_only_or_full_spool") else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let receiver = OtlpReceiver::start(&python);
    let rotel = Rotel::start(&python, receiver.port);
    let base = fixtures::tempdir("spools");

    let read_only = base.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let _ro = Mount::tmpfs(&read_only, "ro,size=1m");
    let agent = otlp_agent(&rotel.grpc_endpoint(), "grpc", &read_only);
    llm::openai_client(&python, &server, &["--max-tokens", "4"]);
    wait_for_server_records(&receiver, 1, Duration::from_secs(60));
    let run = agent.stop();
    run.assert_clean_exit();
    assert!(
        run.stderr.contains("the spool cannot be used") && run.stderr.contains("Read-only"),
        "{}",
        run.stderr
    );

    let full = base.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let _full = Mount::tmpfs(&full, "size=256k");
    let agent = otlp_agent(&rotel.grpc_endpoint(), "grpc", &full);
    // Fill the disk after the agent opened its spool.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(full.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
    }
    llm::openai_client(&python, &server, &["--max-tokens", "4"]);
    llm::openai_client(&python, &server, &["--max-tokens", "6"]);
    wait_for_server_records(&receiver, 3, Duration::from_secs(60));
    let run = agent.stop();
    run.assert_clean_exit();
    assert!(run.stderr.contains("the spool failed"), "{}", run.stderr);
    assert!(run.stderr.contains("No space left"), "{}", run.stderr);
    let records = otlp::usage_by_id(&receiver.logs());
    assert_eq!(
        exported_usage(&side(&records, "server")),
        served_usage(&server.served())
    );
}
