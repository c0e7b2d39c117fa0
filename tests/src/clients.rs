//! TLS clients run against the server (curl, Python, Node.js, BoringSSL) and long-lived
//! helper processes that keep a library mapped while a test looks at them.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::fixtures;
use crate::server::{Server, ServerConnection};
use crate::wait::{self, poll_until, Finished};

/// How long one client request may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What one client run reported about itself.
#[derive(Debug, Clone)]
pub struct ClientRun {
    /// The pid that called SSL_write/SSL_read (printed by the client, or the child's pid).
    pub pid: u32,
    /// The request target it asked for (the key of the server's log line).
    pub path: String,
    /// Length and sha256 of the response body, when the client reports the body.
    pub body: Option<(u64, String)>,
    /// Length and sha256 of the whole response, when the client reports raw bytes.
    pub response: Option<(u64, String)>,
    /// Inode of the libssl.so.3 the client mapped (Python client only).
    pub libssl_inode: Option<u64>,
}

impl ClientRun {
    /// Checks the client's own report against the server's log, so a fixture bug is told
    /// apart from an agent bug.
    pub fn assert_agrees_with(&self, conn: &ServerConnection) {
        if let Some((len, sha)) = &self.body {
            assert_eq!(
                (Some(*len), Some(sha)),
                (Some(conn.body_len), conn.body_sha256.as_ref()),
                "client {} and server disagree on the body of {}",
                self.pid,
                self.path
            );
        }
        if let Some((len, sha)) = &self.response {
            assert_eq!(
                (*len, sha),
                (conn.sent_len, &conn.sent_sha256),
                "client {} read a different response than the server sent for {}",
                self.pid,
                self.path
            );
        }
    }

    /// The BoringSSL client hashes the whole response, not the body.
    pub fn into_raw_response(mut self) -> ClientRun {
        self.response = self.body.take();
        self
    }

    pub(crate) fn from_json(finished: &Finished, path: &str, what: &str) -> ClientRun {
        finished.assert_success(what);
        let out = finished.json(what);
        let num = |key: &str| out.get(key).and_then(|v| v.as_u64());
        let len_sha = || Some((num("len")?, out.get("sha256")?.as_str()?.to_string()));
        ClientRun {
            pid: num("pid")
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or_else(|| panic!("{what}: no pid in {out}")),
            path: path.to_string(),
            body: len_sha(),
            response: None,
            libssl_inode: num("libssl_inode"),
        }
    }
}

/// `curl -sk --http1.1 URL` (pid = the child's pid; body hashed from its output file).
pub fn curl(server: &Server, path: &str) -> ClientRun {
    let dir = fixtures::tempdir("curl");
    let body_file = dir.path().join("body");
    let finished = wait::run(
        Command::new("curl")
            .args(["-sSk", "--http1.1", "--max-time", "60", "-o"])
            .arg(&body_file)
            .arg(server.url(path)),
        CLIENT_TIMEOUT,
    );
    finished.assert_success("curl");
    let body = std::fs::read(&body_file).expect("curl wrote no body file");
    ClientRun {
        pid: finished.pid,
        path: path.to_string(),
        body: Some((body.len() as u64, hex::encode(Sha256::digest(&body)))),
        response: None,
        libssl_inode: None,
    }
}

/// The command line of `fixtures/https_client.py` for `url` (a test may wrap it).
pub fn python_client_args(url: &str, body_size: usize) -> Vec<String> {
    vec![
        fixtures::python().display().to_string(),
        fixtures::fixture("https_client.py").display().to_string(),
        "--url".into(),
        url.into(),
        "--body-size".into(),
        body_size.to_string(),
    ]
}

/// Runs the Python client (POST with `body_size` bytes when non-zero).
pub fn python(server: &Server, path: &str, body_size: usize) -> ClientRun {
    let args = python_client_args(&server.url(path), body_size);
    run_python_command(Command::new(&args[0]).args(&args[1..]), path)
}

/// Runs an arbitrary command that ends in the Python client and parses its report.
pub fn run_python_command(cmd: &mut Command, path: &str) -> ClientRun {
    ClientRun::from_json(&wait::run(cmd, CLIENT_TIMEOUT), path, "https_client.py")
}

/// Runs `node fixtures/https_client.mjs URL`.
pub fn node(server: &Server, path: &str) -> ClientRun {
    let finished = wait::run(
        Command::new(fixtures::node())
            .arg(fixtures::fixture("https_client.mjs"))
            .arg(server.url(path)),
        CLIENT_TIMEOUT,
    );
    ClientRun::from_json(&finished, path, "https_client.mjs")
}

/// Runs a compiled `boringssl_client HOST PORT PATH` (pid = the child's pid).
pub fn boringssl(bin: &Path, server: &Server, path: &str) -> ClientRun {
    let finished = wait::run(
        Command::new(bin)
            .arg("127.0.0.1")
            .arg(server.port.to_string())
            .arg(path),
        CLIENT_TIMEOUT,
    );
    let run = ClientRun::from_json(&finished, path, "boringssl_client");
    assert_eq!(
        run.pid, finished.pid,
        "boringssl_client printed another pid than its own"
    );
    run.into_raw_response()
}

/// `boringssl_client HOST PORT PATH` in hold mode (`TM_HOLD=1`), for [`crate::held::HeldClient`].
pub fn boringssl_held_command(bin: &Path, server: &Server, path: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("TM_HOLD", "1")
        .arg("127.0.0.1")
        .arg(server.port.to_string())
        .arg(path);
    cmd
}

/// A Python process kept alive (stdin held open) after it ran `setup` and printed `ready`.
pub struct Holder {
    child: Child,
    dir: tempfile::TempDir,
    pub pid: u32,
}

impl Holder {
    /// Starts `python3 -c "<setup>; print('ready'); sys.stdin.read()"` and waits for `ready`.
    pub fn start(setup: &str) -> Holder {
        let dir = fixtures::tempdir("holder");
        let code = format!("import sys\n{setup}\nprint('ready', flush=True)\nsys.stdin.read()\n");
        let child = Command::new(fixtures::python())
            .arg("-c")
            .arg(&code)
            .stdin(Stdio::piped())
            .stdout(File::create(dir.path().join("stdout")).expect("holder stdout"))
            .stderr(File::create(dir.path().join("stderr")).expect("holder stderr"))
            .spawn()
            .expect("cannot start the holder process");
        let pid = child.id();
        let mut holder = Holder { child, dir, pid };
        let ready = poll_until(Duration::from_secs(30), || {
            if let Some(status) = holder.child.try_wait().expect("waitpid") {
                panic!("holder exited ({status}): {}", holder.output("stderr"));
            }
            holder.output("stdout").contains("ready").then_some(())
        });
        assert!(
            ready.is_some(),
            "holder never printed ready: {}",
            holder.output("stderr")
        );
        holder
    }

    fn output(&self, name: &str) -> String {
        wait::read_if_exists(&self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
