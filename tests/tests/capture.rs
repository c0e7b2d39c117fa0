//! End-to-end capture tests: the real agent against real TLS peers. Root only; run with
//! `cargo test -p tokenmeter-tests --test capture -- --test-threads=1`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokenmeter_tests::agent::{self, Agent, AgentOptions, Direction};
use tokenmeter_tests::clients::{self, Holder};
use tokenmeter_tests::held::HeldClient;
use tokenmeter_tests::server::Server;
use tokenmeter_tests::{e2e_prelude, expect, fixtures, nonce, procmem};

/// The system OpenSSL that Python and curl load.
const SYSTEM_LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
/// How long a failing agent may take to explain itself and exit.
const FAIL_FAST: Duration = Duration::from_secs(60);

#[test]
fn server_started_before_agent_client_and_server_streams_match() {
    let Some(_guard) = e2e_prelude("server_started_before_agent_client_and_server_streams_match")
    else {
        return;
    };
    let server = Server::start();
    let agent = Agent::start(AgentOptions {
        stats: true,
        ..Default::default()
    });

    let big_path = format!("/size/204800?nonce={}", nonce("curl-big"));
    let clients = [
        clients::curl(&server, &format!("/size/1024?nonce={}", nonce("curl"))),
        clients::python(
            &server,
            &format!("/size/2048?nonce={}", nonce("python")),
            300,
        ),
        clients::node(&server, &format!("/size/4096?nonce={}", nonce("node"))),
        clients::curl(&server, &big_path),
    ];
    let conns: Vec<_> = clients
        .iter()
        .map(|c| server.connection_for(&c.path))
        .collect();
    for (client, conn) in clients.iter().zip(&conns) {
        client.assert_agrees_with(conn);
    }
    let logged = server.connections();
    assert_eq!(
        logged.len(),
        clients.len(),
        "the server logged other connections: {logged:#?}"
    );

    let run = agent.stop();
    run.assert_clean_exit();
    for (client, conn) in clients.iter().zip(&conns) {
        expect::both_sides(&run, client.pid, conn);
    }

    // 200 KiB go out in one SSL_write_ex (the server's sendall): under the 512 KiB per-call
    // capture limit, so the stream must be whole on both sides.
    let big = &conns[3];
    assert!(
        big.sent_len > 204_800,
        "the big response is {} bytes",
        big.sent_len
    );
    for pid in [big.server_pid, clients[3].pid] {
        let direction = if pid == big.server_pid {
            Direction::Write
        } else {
            Direction::Read
        };
        let stream = expect::stream(
            &run,
            pid,
            direction,
            big.sent_len,
            &big.sent_sha256,
            "200 KiB response",
        );
        assert!(
            !stream.truncated && stream.bytes == big.sent_len,
            "200 KiB response cut: {stream:?}"
        );
    }

    let stats = run.stats.as_ref().expect("stats requested");
    assert!(
        stats.events > 0,
        "the stats file counts no events: {stats:?}"
    );
}

#[test]
fn process_started_after_agent_is_captured() {
    let Some(_guard) = e2e_prelude("process_started_after_agent_is_captured") else {
        return;
    };
    let agent = Agent::start(AgentOptions::default());
    let server = Server::start();
    let client = clients::python(&server, &format!("/size/3000?nonce={}", nonce("late")), 0);
    let conn = server.connection_for(&client.path);
    client.assert_agrees_with(&conn);

    let run = agent.stop();
    run.assert_clean_exit();
    expect::both_sides(&run, client.pid, &conn);
}

#[test]
fn private_libssl_in_own_mount_namespace_is_captured() {
    let Some(_guard) = e2e_prelude("private_libssl_in_own_mount_namespace_is_captured") else {
        return;
    };
    let system =
        std::fs::metadata(SYSTEM_LIBSSL).unwrap_or_else(|e| panic!("{SYSTEM_LIBSSL}: {e}"));
    let dir = fixtures::tempdir("private-libssl");
    let copy = dir.path().join("libssl.so.3");
    std::fs::copy(SYSTEM_LIBSSL, &copy).expect("copy libssl.so.3");
    let private = std::fs::metadata(&copy).expect("stat the copy");
    assert_ne!(
        (private.dev(), private.ino()),
        (system.dev(), system.ino()),
        "the copy must be another inode than the system library"
    );

    let server = Server::start();
    let agent = Agent::start(AgentOptions::default());
    let path = format!("/size/2500?nonce={}", nonce("private-ns"));
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
        .arg("sh")
        .arg(&copy)
        .arg(SYSTEM_LIBSSL)
        .args(clients::python_client_args(&server.url(&path), 0))
        .arg("--hold");
    // The copy is a file the agent has never seen: it must find it through the loader hook or
    // a rescan, open it through /proc/PID/root, and probe it before the client's first call.
    let held = HeldClient::start(&mut cmd, "python client in its own mount namespace");
    held.wait_probed("libssl.so.3", &procmem::SSL_FUNCTIONS);
    let client = held.release(&path);
    assert_eq!(
        client.libssl_inode,
        Some(private.ino()),
        "the client did not map the private copy of libssl.so.3 (bind mount ineffective?)"
    );
    let conn = server.connection_for(&path);
    client.assert_agrees_with(&conn);

    let run = agent.stop();
    run.assert_clean_exit();
    expect::client_side(&run, client.pid, &conn);
}

#[test]
fn boringssl_client_is_captured() {
    let Some(_guard) = e2e_prelude("boringssl_client_is_captured") else {
        return;
    };
    let build = fixtures::tempdir("boringssl");
    let bin = fixtures::build_boringssl_client(build.path());
    let server = Server::start();
    let agent = Agent::start(AgentOptions::default());
    // Started after the agent, with BoringSSL's libssl.so.0 that nothing mapped before: the
    // agent must discover the new library and probe it before the client's first call.
    let path = format!("/size/3000?nonce={}", nonce("boring"));
    let held = HeldClient::start(
        &mut clients::boringssl_held_command(&bin, &server, &path),
        "boringssl_client",
    );
    held.wait_probed("libssl.so.0", &["SSL_write", "SSL_read"]);
    let client = held.release(&path).into_raw_response();
    let conn = server.connection_for(&client.path);
    client.assert_agrees_with(&conn);

    let run = agent.stop();
    run.assert_clean_exit();
    expect::client_side(&run, client.pid, &conn);
}

#[test]
fn process_outside_selector_gets_no_probe_and_no_record() {
    let Some(_guard) = e2e_prelude("process_outside_selector_gets_no_probe_and_no_record") else {
        return;
    };
    let server = Server::start();
    // Both map libssl.so.3 before the agent starts: the holder stays `python3` (outside the
    // selector), the held client renames itself `tm-selected` (inside it).
    let outside = Holder::start("import ssl");
    let selected_path = format!("/size/1500?nonce={}", nonce("selected"));
    let mut args = clients::python_client_args(&server.url(&selected_path), 0);
    args.extend(["--hold".into(), "--comm".into(), "tm-selected".into()]);
    let selected = HeldClient::start(Command::new(&args[0]).args(&args[1..]), "selected client");
    let agent = Agent::start(AgentOptions {
        config: Some("[selector]\ncomm = [\"^tm-selected$\"]\n".to_string()),
        ..Default::default()
    });
    // The selected process gets its probes (per process: the kernel patches only its code).
    selected.wait_probed("libssl.so.3", &procmem::SSL_FUNCTIONS);

    let inside = selected.release(&selected_path);
    let curl = clients::curl(&server, &format!("/size/1400?nonce={}", nonce("curl")));
    let python = clients::python(
        &server,
        &format!("/size/1600?nonce={}", nonce("unselected")),
        0,
    );
    let inside_conn = server.connection_for(&inside.path);
    let curl_conn = server.connection_for(&curl.path);
    let python_conn = server.connection_for(&python.path);
    inside.assert_agrees_with(&inside_conn);

    // No breakpoint in the code of processes outside the selector.
    for (pid, what) in [
        (outside.pid, "python3 holder"),
        (python_conn.server_pid, "tls_server.py"),
    ] {
        let code = procmem::function_code(pid, "libssl.so.3", &procmem::SSL_FUNCTIONS);
        let patched: Vec<_> = code.iter().filter(|f| f.is_patched()).collect();
        assert!(
            patched.is_empty(),
            "{what} (pid {pid}) is outside the selector but has probes: {patched:#?}"
        );
    }

    let run = agent.stop();
    run.assert_clean_exit();
    expect::client_side(&run, inside.pid, &inside_conn);
    expect::nothing_for(&run, curl.pid, "curl");
    expect::nothing_for(&run, python.pid, "the python client");
    expect::nothing_for(&run, curl_conn.server_pid, "the python server");
    expect::nothing_for(&run, outside.pid, "the python3 holder");
}

/// A copy of the agent binary that an unprivileged user can run wherever the workspace lives.
fn agent_copy_for_anyone(dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("tokenmeter-agent");
    std::fs::copy(agent::agent_bin(), &copy).expect("copy the agent binary");
    fixtures::set_mode(&copy, 0o755);
    copy
}

#[test]
fn without_privileges_agent_explains_and_exits_nonzero() {
    let Some(_guard) = e2e_prelude("without_privileges_agent_explains_and_exits_nonzero") else {
        return;
    };
    let dir = fixtures::tempdir("unprivileged");
    let bin = agent_copy_for_anyone(dir.path());
    let setpriv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let finished = agent::run_to_exit(&setpriv, &bin, &["capture", "--json"], FAIL_FAST);
    assert!(
        !finished.status.success(),
        "the agent succeeded without privileges: {finished:?}"
    );
    assert!(
        finished.stderr.to_lowercase().contains("capabilit"),
        "the agent's error does not name the missing capabilities:\n{}",
        finished.stderr
    );
}

#[test]
fn kernel_without_uprobes_agent_explains_and_exits_nonzero() {
    let Some(_guard) = e2e_prelude("kernel_without_uprobes_agent_explains_and_exits_nonzero")
    else {
        return;
    };
    let sysfs = fixtures::tempdir("empty-sysfs");
    let sysfs_root = sysfs.path().to_str().expect("utf-8 temp path");
    let finished = agent::run_to_exit(
        &[],
        &agent::agent_bin(),
        &["--sysfs-root", sysfs_root, "capture", "--json"],
        FAIL_FAST,
    );
    assert!(
        !finished.status.success(),
        "the agent ran on a kernel without uprobes: {finished:?}"
    );
    assert!(
        finished.stderr.to_lowercase().contains("uprobe"),
        "the agent's error does not mention uprobes:\n{}",
        finished.stderr
    );
}

#[test]
fn library_without_ssl_symbols_is_skipped_with_one_log_line() {
    let Some(_guard) = e2e_prelude("library_without_ssl_symbols_is_skipped_with_one_log_line")
    else {
        return;
    };
    let dir = fixtures::tempdir("fake-libssl");
    let lib = fixtures::build_fake_libssl(dir.path(), "libssl_fake.so.1");
    let lib_literal =
        serde_json::to_string(lib.to_str().expect("utf-8 temp path")).expect("quote path");
    let holder = Holder::start(&format!("import ctypes\nctypes.CDLL({lib_literal})"));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", holder.pid)).expect("holder maps");
    assert!(
        maps.contains("libssl_fake.so.1"),
        "the holder did not map {}",
        lib.display()
    );

    let run = Agent::start(AgentOptions::default()).stop();
    run.assert_clean_exit();
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("libssl_fake.so.1"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one log line about libssl_fake.so.1; stderr:\n{}",
        run.stderr
    );
    assert!(
        lines[0].to_lowercase().contains("skip"),
        "the line does not say skip: {}",
        lines[0]
    );
    drop(holder);
}
