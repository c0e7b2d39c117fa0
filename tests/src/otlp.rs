//! The OTLP side of the export tests: a real OpenTelemetry collector (`rotel`, a Rust
//! collector from PyPI) in front of a receiver built on the official OTLP protos
//! (`fixtures/otlp_receiver.py`), as an operator's pipeline would be.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{fixtures, wait};

/// The final receiver: everything it got, on disk.
pub struct OtlpReceiver {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl OtlpReceiver {
    pub fn start(python: &Path) -> OtlpReceiver {
        let dir = fixtures::tempdir("otlp-receiver");
        let port_file = dir.path().join("port");
        let mut child = Command::new(python)
            .arg(fixtures::fixture("otlp_receiver.py"))
            .arg("--out")
            .arg(dir.path())
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("cannot start otlp_receiver.py");
        let port = wait::port_file(
            &mut child,
            &port_file,
            &dir.path().join("stderr"),
            "otlp_receiver.py",
            Duration::from_secs(60),
        );
        OtlpReceiver { child, dir, port }
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        wait::read_if_exists(&self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("receiver line is JSON"))
            .collect()
    }

    /// Every log record received (duplicates included), with `resource` and `attributes`.
    pub fn logs(&self) -> Vec<Value> {
        self.lines("logs.jsonl")
    }

    /// Every metrics export request received, in protobuf JSON.
    pub fn metric_requests(&self) -> Vec<Value> {
        self.lines("metrics.jsonl")
    }

    /// The bytes of every request received.
    pub fn raw(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("raw.bin")).unwrap_or_default()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rotel`: OTLP gRPC and HTTP in, OTLP gRPC out to `upstream`.
pub struct Rotel {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    upstream: u16,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Rotel {
    pub fn start(python: &Path, upstream: u16) -> Rotel {
        let binary = rotel_binary(python);
        let mut rotel = Rotel {
            child: None,
            dir: fixtures::tempdir("rotel"),
            binary,
            upstream,
            grpc_port: free_port(),
            http_port: free_port(),
        };
        rotel.resume();
        rotel
    }

    /// Starts rotel (again) on the same ports.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "rotel is running");
        let log = self.dir.path().join("rotel.log");
        let child = Command::new(&self.binary)
            .arg("start")
            .args([
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{}", self.grpc_port),
            ])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", self.http_port),
            ])
            .args(["--exporter", "otlp"])
            .args([
                "--otlp-exporter-endpoint",
                &format!("http://127.0.0.1:{}", self.upstream),
            ])
            .args(["--otlp-exporter-protocol", "grpc"])
            .args(["--batch-timeout", "100ms"])
            .arg("--pid-file")
            .arg(self.dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(File::create(self.dir.path().join("stdout")).expect("stdout file"))
            .stderr(File::create(self.dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let listening = wait::poll_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.grpc_port)).ok()?;
            std::net::TcpStream::connect(("127.0.0.1", self.http_port)).ok()
        });
        assert!(
            listening.is_some(),
            "rotel did not listen: {}",
            self.stderr()
        );
    }

    /// Stops rotel (SIGTERM: it forwards what it accepted, then exits).
    pub fn pause(&mut self) {
        let mut child = self.child.take().expect("rotel runs");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if wait::wait_child(&mut child, Duration::from_secs(20)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stderr(&self) -> String {
        wait::read_if_exists(&self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// rotel's agent binary inside its PyPI package.
fn rotel_binary(python: &Path) -> PathBuf {
    let finished = wait::run(
        Command::new(python).args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ]),
        Duration::from_secs(30),
    );
    finished.assert_success("locating rotel");
    PathBuf::from(finished.stdout.trim())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// The log records of usage, deduplicated by record id; panics if two copies of one id
/// differ (a retry must carry the same content and time).
pub fn usage_by_id(logs: &[Value]) -> std::collections::BTreeMap<String, Value> {
    let mut by_id = std::collections::BTreeMap::new();
    for log in logs
        .iter()
        .filter(|l| l["event_name"] == "tokenmeter.usage")
    {
        let id = log["attributes"]["tokenmeter.record.id"]
            .as_str()
            .expect("every usage record has an id")
            .to_string();
        if let Some(previous) = by_id.insert(id.clone(), log.clone()) {
            assert_eq!(previous, *log, "two copies of record {id} differ");
        }
    }
    by_id
}

/// An integer attribute (OTLP JSON carries int64 as a string).
pub fn int(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The latest value of each series of a cumulative sum, keyed by its sorted attributes.
pub fn latest_sums(
    requests: &[Value],
    metric: &str,
) -> std::collections::BTreeMap<Vec<(String, String)>, u64> {
    latest_points(requests, metric, "sum")
        .into_iter()
        .map(|(key, point)| (key, int(&point["as_int"]).unwrap_or(0)))
        .collect()
}

/// The latest data point of each series of `metric` (`kind`: `sum`, `histogram`), keyed by
/// its sorted attributes.
pub fn latest_points(
    requests: &[Value],
    metric: &str,
    kind: &str,
) -> std::collections::BTreeMap<Vec<(String, String)>, Value> {
    let mut latest = std::collections::BTreeMap::new();
    for point in data_points(requests, metric, kind) {
        let mut key: Vec<(String, String)> = point["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let value = kv["value"]
                    .as_object()
                    .and_then(|o| o.values().next())
                    .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                    .unwrap_or_default();
                (kv["key"].as_str().unwrap_or("").to_string(), value)
            })
            .collect();
        key.sort();
        latest.insert(key, point);
    }
    latest
}

/// Every data point of `metric` (`kind`: `sum`, `histogram`) across the requests, in order.
pub fn data_points(requests: &[Value], metric: &str, kind: &str) -> Vec<Value> {
    let mut points = Vec::new();
    for request in requests {
        for resource in request["resource_metrics"].as_array().into_iter().flatten() {
            for scope in resource["scope_metrics"].as_array().into_iter().flatten() {
                for m in scope["metrics"].as_array().into_iter().flatten() {
                    if m["name"] == metric {
                        points.extend(
                            m[kind]["data_points"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .cloned(),
                        );
                    }
                }
            }
        }
    }
    points
}

/// Metric names seen.
pub fn metric_names(requests: &[Value]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for request in requests {
        for resource in request["resource_metrics"].as_array().into_iter().flatten() {
            for scope in resource["scope_metrics"].as_array().into_iter().flatten() {
                for m in scope["metrics"].as_array().into_iter().flatten() {
                    if let Some(name) = m["name"].as_str() {
                        names.insert(name.to_string());
                    }
                }
            }
        }
    }
    names
}
