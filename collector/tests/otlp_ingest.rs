//! The collector over real OTLP from clients nobody here wrote: the official OpenTelemetry
//! Python SDK (gRPC and HTTP/protobuf exporters), and the same SDK through `rotel`, a real
//! OpenTelemetry collector. Resent batches change nothing; bad requests get the OTLP status
//! codes; the bill matches an independent computation.
//!
//! Needs the Python test environment (`cargo xtask setup --test-deps`); without it the tests
//! say so and skip, except under CI=true where they fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{curl, python, wait_for, Collector, TOKEN};

/// 2026-03-10 + i minutes, in ns.
fn time(i: u64) -> u64 {
    1_773_100_800_000_000_000 + i * 60_000_000_000
}

/// Synthetic calls: alice (acme/search) and carol (globex/research) on two models.
fn records(prefix: &str, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "id": format!("{prefix}-{i:04}"),
                "time_ns": time(i),
                "side": "server",
                "model": if i % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" },
                "input": 1000 + i * 7,
                "output": 100 + i * 3,
                "user": if i % 3 == 0 { "carol" } else { "alice" },
            })
        })
        .collect()
}

fn send(python: &Path, endpoint: &str, protocol: &str, records: &[Value], dir: &Path) {
    send_with(python, endpoint, protocol, records, dir, &[]);
}

/// Sends `records` with the official SDK; `extra` are more options of the sender.
fn send_with(
    python: &Path,
    endpoint: &str,
    protocol: &str,
    records: &[Value],
    dir: &Path,
    extra: &[&str],
) {
    let file = dir.join(format!("records-{protocol}.json"));
    std::fs::write(&file, serde_json::to_vec(records).unwrap()).unwrap();
    let status = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otel_sdk_usage.py"))
        .args([
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--token",
            TOKEN,
        ])
        .arg("--records")
        .arg(&file)
        .args(extra)
        .status()
        .expect("run the OTel SDK sender");
    assert!(status.success(), "the OTel SDK sender failed");
}

/// Per org: (requests, input tokens, output tokens, total), computed from the records and
/// the example price book's gpt-4o* prices (250 and 1000 cents per million tokens) in integer
/// arithmetic, independently of the collector's code: one rounding (half up, to the cent) per
/// model and token type, and the book's 1.00 minimum charge.
fn expected(records: &[Value]) -> Vec<(String, u64, u64, u64, String)> {
    type Sums = (u64, u64, u64);
    let mut per_model: std::collections::BTreeMap<(String, String), Sums> = Default::default();
    for r in records {
        let org = if r["user"] == "carol" {
            "globex"
        } else {
            "acme"
        };
        let model = r["model"].as_str().unwrap().to_string();
        let e = per_model.entry((org.to_string(), model)).or_default();
        e.0 += 1;
        e.1 += r["input"].as_u64().unwrap();
        e.2 += r["output"].as_u64().unwrap();
    }
    let cents =
        |tokens: u64, cents_per_million: u64| (tokens * cents_per_million + 500_000) / 1_000_000;
    let mut per_org: std::collections::BTreeMap<String, (u64, u64, u64, u64)> = Default::default();
    for ((org, _), (n, input, output)) in per_model {
        let e = per_org.entry(org).or_default();
        e.0 += n;
        e.1 += input;
        e.2 += output;
        e.3 += cents(input, 250) + cents(output, 1000);
    }
    per_org
        .into_iter()
        .map(|(org, (n, input, output, cents))| {
            let total = cents.max(100);
            (
                org,
                n,
                input,
                output,
                format!("{}.{:02}", total / 100, total % 100),
            )
        })
        .collect()
}

fn check_bill(bill: &Value, records: &[Value]) {
    let orgs = bill["orgs"].as_array().unwrap();
    let got: Vec<(String, u64, u64, u64, String)> = orgs
        .iter()
        .map(|o| {
            let sum = |item: &str| -> u64 {
                o["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|l| l["item"] == item)
                    .map(|l| l["quantity"].as_u64().unwrap())
                    .sum()
            };
            (
                o["org"].as_str().unwrap().to_string(),
                o["requests"].as_u64().unwrap(),
                sum("input"),
                sum("output"),
                o["total"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected(records), "{bill:#}");
}

#[test]
fn the_official_sdk_over_grpc_and_http_is_ingested_once() {
    let Some(python) = python("the_official_sdk_over_grpc_and_http_is_ingested_once") else {
        return;
    };
    let collector = Collector::start(None);
    let calls = records("sdk", 60);
    send(
        &python,
        &collector.url("grpc"),
        "grpc",
        &calls,
        collector.dir.path(),
    );
    assert_eq!(
        collector.metric("tokenmeter_collector_records_inserted_total"),
        60
    );
    let before = collector.bill("2026-03");
    check_bill(&before, &calls);
    // The same batch again, over HTTP this time: nothing changes.
    send(
        &python,
        &collector.url("http"),
        "http",
        &calls,
        collector.dir.path(),
    );
    assert_eq!(
        collector.metric("tokenmeter_collector_records_duplicate_total"),
        60
    );
    assert_eq!(collector.bill("2026-03"), before);
}

#[test]
fn the_sdk_through_rotel_is_ingested() {
    let Some(python) = python("the_sdk_through_rotel_is_ingested") else {
        return;
    };
    let collector = Collector::start(None);
    let rotel = rotel_binary(&python);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = collector.dir.path();
    let mut rotel = Command::new(rotel)
        .arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .args([
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            &collector.url("grpc"),
        ])
        .args(["--otlp-exporter-protocol", "grpc"])
        .args([
            "--otlp-exporter-custom-headers",
            &format!("authorization=Bearer {TOKEN}"),
        ])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .arg("--log-file")
        .arg(dir.join("rotel.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rotel");
    wait_for("rotel", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let calls = records("rotel", 30);
    send(
        &python,
        &format!("http://127.0.0.1:{port}"),
        "grpc",
        &calls,
        dir,
    );
    let arrived = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        collector.metric("tokenmeter_collector_records_inserted_total") == 30
    });
    if !arrived {
        let _ = rotel.kill();
        panic!(
            "the records did not arrive through rotel (auth failures: {}); rotel log:\n{}",
            collector.metric("tokenmeter_collector_auth_failures_total"),
            std::fs::read_to_string(dir.join("rotel.log")).unwrap_or_default()
        );
    }
    let _ = rotel.kill();
    let _ = rotel.wait();
    assert_eq!(
        collector.metric("tokenmeter_collector_auth_failures_total"),
        0
    );
    check_bill(&collector.bill("2026-03"), &calls);
}

fn rotel_binary(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("locate rotel");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn bad_requests_get_otlp_status_codes_and_store_nothing() {
    let collector = Collector::start(None);
    let logs = format!("{}/v1/logs", collector.url("http"));
    let auth = format!("authorization: Bearer {TOKEN}");
    let json_body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": time(1).to_string(), "eventName": "tokenmeter.usage", "attributes": [
            {"key": "tokenmeter.record.id", "value": {"stringValue": "json-1"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "400000"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "10"}}]},
        {"timeUnixNano": time(2).to_string(), "eventName": "tokenmeter.usage", "attributes": [
            {"key": "tokenmeter.record.id", "value": {"stringValue": "json-2"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "-5"}}]}
    ]}]}]})
    .to_string();
    let post = |headers: &[&str], body: &str| {
        let mut args = vec!["-X", "POST", logs.as_str(), "--data-binary", body];
        for h in headers {
            args.extend(["-H", h]);
        }
        curl(&args)
    };
    let (code, _) = post(&["content-type: application/json"], &json_body);
    assert_eq!(code, 401, "no token");
    let (code, body) = post(
        &[&auth, "content-type: application/x-protobuf"],
        "\u{7}garbage",
    );
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(&[&auth, "content-type: text/plain"], "hello");
    assert_eq!(code, 415);
    // OTLP JSON: one good record, one with a negative count, rejected by partial success.
    let (code, body) = post(&[&auth, "content-type: application/json"], &json_body);
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("JSON reply");
    // int64 in OTLP JSON: a string or a number, both are valid readings.
    let rejected = &reply["partialSuccess"]["rejectedLogRecords"];
    assert!(*rejected == json!(1) || *rejected == json!("1"), "{body}");
    assert!(reply["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("gen_ai.usage.output_tokens"));
    assert_eq!(
        collector.metric("tokenmeter_collector_records_inserted_total"),
        1
    );
    assert_eq!(
        collector.metric("tokenmeter_collector_auth_failures_total"),
        1
    );
    let bill = collector.bill("2026-03");
    // 400,000 input at 2.50/M = 1.00, 10 output at 10/M = 0.0001 -> 0.00.
    assert_eq!(bill["orgs"][0]["org"], "unassigned");
    assert_eq!(bill["orgs"][0]["total"], "1.00");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl.
fn certificates(dir: &Path) {
    let script = r#"
set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -subj /CN=$who -keyout $who.key -out $who.csr 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem 2>/dev/null
"#;
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .status()
        .expect("openssl");
    assert!(status.success(), "making test certificates failed");
}

#[test]
fn mutual_tls_admits_agents_with_a_certificate_only() {
    let Some(python) = python("mutual_tls_admits_agents_with_a_certificate_only") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let collector = Collector::start_with(
        None,
        "",
        &format!(
            "\n[receiver.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
            file("server.pem"),
            file("server.key"),
            file("ca.pem")
        ),
    );
    let grpc = collector.url("grpc").replace("http://", "https://");
    let calls = records("tls", 12);
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    send_with(
        &python,
        &grpc,
        "grpc",
        &calls,
        collector.dir.path(),
        &["--ca", &ca, "--client-cert", &cert, "--client-key", &key],
    );
    assert_eq!(
        collector.metric("tokenmeter_collector_records_inserted_total"),
        12
    );
    check_bill(&collector.bill("2026-03"), &calls);
    // Over HTTPS: with the client certificate the request is served; without one there is no
    // connection at all.
    let https = format!(
        "{}/v1/logs",
        collector.url("http").replace("http://", "https://")
    );
    let base = [
        "-X",
        "POST",
        https.as_str(),
        "--cacert",
        ca.as_str(),
        "-H",
        "content-type: application/json",
        "--data-binary",
        "{}",
    ];
    let (code, _) = curl(&[&base[..], &["--cert", &cert, "--key", &key]].concat());
    assert_eq!(code, 401, "a TLS client still needs its bearer token");
    let (code, _) = curl(&base);
    assert_eq!(code, 0, "no client certificate, no connection");
}
