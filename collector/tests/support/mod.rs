//! What the collector's integration tests share: the databases a story runs on.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fresh, empty PostgreSQL database on the test server (`TOKENMETER_TEST_POSTGRES_URL`, set
/// by `cargo xtask test`), or `None` with a message when there is none (an error under
/// CI=true: there must be one).
pub fn postgres_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("TOKENMETER_TEST_POSTGRES_URL") else {
        let why = "no TOKENMETER_TEST_POSTGRES_URL (`cargo xtask test` starts a PostgreSQL)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {why}"
        );
        eprintln!("SKIPPED the PostgreSQL part of {test}: {why}");
        return None;
    };
    let name = format!(
        "tm_{}_{}",
        test.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect::<String>(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
    .to_lowercase();
    let mut client =
        postgres::Client::connect(&admin, postgres::NoTls).expect("connect to the test PostgreSQL");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    let base = admin.rsplit_once('/').expect("URL with a database").0;
    Some(format!("{base}/{name}"))
}

pub const TOKEN: &str = "agent-token-for-tests";

pub fn python(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("TOKENMETER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python")
        });
    if path.exists() {
        return Some(path);
    }
    let why = "no Python test environment (target/pyenv): run `cargo xtask setup --test-deps`";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    None
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `tokenmeter-collector serve` on free ports; killed on drop.
pub struct Collector {
    child: Child,
    pub dir: tempfile::TempDir,
    addresses: Value,
}

impl Collector {
    /// `database`: a URL, or `None` for SQLite in the collector's directory.
    pub fn start(database: Option<&str>) -> Collector {
        Self::start_with(database, "", "")
    }

    /// With more configuration: `extra` goes after the top-level keys (more keys first, then
    /// sections), `api` into the `[api]` section.
    pub fn start_with(database: Option<&str>, extra: &str, api: &str) -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tokens"), format!("# agents\n{TOKEN}\n")).unwrap();
        let config = format!(
            "database = {:?}\nprice_book = {:?}\naccounts = {:?}\n{extra}\n\
             [receiver]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ntoken_file = \"tokens\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n{api}",
            database.unwrap_or("sqlite:usage.db"),
            examples().join("prices.toml").display().to_string(),
            examples().join("accounts.toml").display().to_string(),
        );
        std::fs::write(dir.path().join("collector.toml"), config).unwrap();
        let ready = dir.path().join("ready.json");
        let child = Command::new(env!("CARGO_BIN_EXE_tokenmeter-collector"))
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("collector.toml"))
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("start the collector");
        let mut child = child;
        let stderr = dir.path().join("stderr");
        let addresses = wait_for("the collector", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the collector exited ({status}): {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            serde_json::from_slice(&std::fs::read(&ready).ok()?).ok()
        });
        Collector {
            child,
            dir,
            addresses,
        }
    }

    pub fn url(&self, which: &str) -> String {
        format!("http://{}", self.addresses[which].as_str().unwrap())
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = curl(&[&format!("{}/metrics", self.url("api"))]).1;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    }

    pub fn bill(&self, period: &str) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_tokenmeter-collector"))
            .args(["bill", "--format", "json", "--period", period, "--config"])
            .arg(self.dir.path().join("collector.toml"))
            .output()
            .expect("run bill");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("bill JSON")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let stderr =
                std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
            eprintln!("collector stderr:\n{stderr}");
        }
    }
}

/// curl: (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// One request a capture server got.
#[derive(Clone, Debug)]
pub struct Captured {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub type Requests = std::sync::Arc<std::sync::Mutex<Vec<Captured>>>;

/// An HTTP server that records every request and answers 204, or 500 on paths under
/// `/fail`: a stand-in for webhooks and billing engines that speaks plain HTTP/1.1.
pub fn capture_server() -> (u16, Requests) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Requests = Default::default();
    let requests = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).unwrap_or(0) == 0 {
                continue;
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.trim_end().split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let fail = path.starts_with("/fail");
            requests.lock().unwrap().push(Captured {
                path,
                headers,
                body,
            });
            let answer: &[u8] = if fail {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
            } else {
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer);
        }
    });
    (port, got)
}

/// The JSON bodies of the captured requests, read when called.
pub fn bodies(requests: &Requests) -> impl Fn() -> Vec<Value> + '_ {
    move || {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }
}

/// 2026-03-10T00:00Z, in ns: a day in a period long finalisable.
pub const MARCH_10_NS: u128 = 1_773_100_800_000_000_000;

/// Now, in ns.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Posts one gpt-4o usage record ending at `time_ns` as OTLP/JSON and asserts it was
/// accepted. `attributes` are string attributes besides the id and the model; `output` is
/// left out when `None`.
pub fn post_usage(
    collector: &Collector,
    id: &str,
    time_ns: u128,
    attributes: &[(&str, &str)],
    input: u64,
    output: Option<u64>,
) {
    let string =
        |key: &str, value: &str| serde_json::json!({"key": key, "value": {"stringValue": value}});
    let int = |key: &str, value: u64| serde_json::json!({"key": key, "value": {"intValue": value.to_string()}});
    let mut all = vec![
        string("tokenmeter.record.id", id),
        string("gen_ai.response.model", "gpt-4o"),
    ];
    all.extend(attributes.iter().map(|(k, v)| string(k, v)));
    all.push(int("gen_ai.usage.input_tokens", input));
    all.extend(output.map(|o| int("gen_ai.usage.output_tokens", o)));
    let body = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": time_ns.to_string(), "eventName": "tokenmeter.usage", "attributes": all}]}]}]});
    post_logs(collector, &body);
}

/// Posts an OTLP/HTTP JSON logs request with the agents' token; it must be accepted.
pub fn post_logs(collector: &Collector, body: &Value) {
    let (code, reply) = curl(&[
        "-X",
        "POST",
        &format!("{}/v1/logs", collector.url("http")),
        "-H",
        "content-type: application/json",
        "-H",
        &format!("authorization: Bearer {TOKEN}"),
        "--data-binary",
        &body.to_string(),
    ]);
    assert_eq!(code, 200, "{reply}");
}
