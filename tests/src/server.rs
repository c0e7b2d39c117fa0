//! The TLS server under observation: `fixtures/tls_server.py` (Python ssl, libssl.so.3).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::fixtures::{self, Certs};
use crate::wait::{self, poll_until};

/// How long the server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished connection may take to appear in the server's log.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of the server's log: what one connection carried, as the server saw it.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerConnection {
    pub peer_port: u16,
    /// Every plaintext byte the server read (the client's request, as the client wrote it).
    pub received_len: u64,
    pub received_sha256: String,
    /// Every byte the server wrote (the whole response).
    pub sent_len: u64,
    pub sent_sha256: String,
    pub server_pid: u32,
    /// The request target, e.g. `/size/1024?nonce=..`; `None` if the request never completed.
    pub path: Option<String>,
    pub status: Option<u16>,
    pub body_len: u64,
    /// sha256 of the response body alone (what the clients print).
    pub body_sha256: Option<String>,
    pub error: Option<String>,
}

/// A running `tls_server.py`; killed on drop.
pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The child's pid. The log's `server_pid` (the interpreter's own `os.getpid()`) is the
    /// authority on which process runs SSL_read_ex/SSL_write_ex; both agree unless the
    /// interpreter is a wrapper that forks.
    pub pid: u32,
    // Kept alive with the server: it reads the certificate only at start, but a test may
    // want to give the same files to a verifying client.
    pub certs: Certs,
}

impl Server {
    /// Starts the server on 127.0.0.1, port 0, and waits until it wrote its port file.
    pub fn start() -> Server {
        let certs = Certs::generate();
        let dir = fixtures::tempdir("server");
        let port_file = dir.path().join("port");
        let stdout = File::create(dir.path().join("stdout")).expect("server stdout file");
        let stderr = File::create(dir.path().join("stderr")).expect("server stderr file");
        let mut child = Command::new(fixtures::python())
            .arg(fixtures::fixture("tls_server.py"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("log.jsonl"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("cannot start tls_server.py");
        let pid = child.id();
        let port = wait::port_file(
            &mut child,
            &port_file,
            &dir.path().join("stderr"),
            "tls_server.py",
            START_TIMEOUT,
        );
        Server {
            child,
            dir,
            port,
            pid,
            certs,
        }
    }

    /// `https://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Every connection logged so far.
    pub fn connections(&self) -> Vec<ServerConnection> {
        let text = wait::read_if_exists(&self.log_path()).unwrap_or_default();
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad server log line {line:?}: {e}"))
            })
            .collect()
    }

    /// Waits until the connection for request target `path` is logged, and checks it succeeded.
    pub fn connection_for(&self, path: &str) -> ServerConnection {
        let found = poll_until(LOG_TIMEOUT, || {
            self.connections()
                .into_iter()
                .find(|c| c.path.as_deref() == Some(path))
        });
        let conn = found.unwrap_or_else(|| {
            panic!(
                "the server logged no connection for {path} within {LOG_TIMEOUT:?}; log: {:#?}\nstderr: {}",
                self.connections(),
                read(&self.dir, "stderr")
            )
        });
        assert!(
            conn.error.is_none() && conn.status == Some(200),
            "the server's side of {path} failed: {conn:#?}"
        );
        conn
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log.jsonl")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(dir: &tempfile::TempDir, name: &str) -> String {
    wait::read_if_exists(&dir.path().join(name)).unwrap_or_default()
}
