//! Plaintext HTTP at the socket syscalls (issue 8): a vLLM-shaped server on plain HTTP (as
//! behind a TLS-terminating ingress) and the `openai` SDK, metered on both sides from their
//! `sendto`/`recvfrom`, with the server's own usage as the reference; and with syscall capture
//! on, a TLS connection is metered once, from its plaintext, never from its ciphertext.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokenmeter_tests::agent::{Agent, AgentOptions};
use tokenmeter_tests::llm::{self, LlmServer};
use tokenmeter_tests::wait::poll_until;
use tokenmeter_tests::{e2e_prelude, expect, fixtures, E2eGuard};

const CONFIG: &str = "[plaintext]\nenabled = true\ncomm = [\"^python\"]\n";

/// The end-to-end guard and the Python environment, or why the test does not run.
fn prelude(test: &str) -> Option<(E2eGuard, PathBuf)> {
    let guard = e2e_prelude(test)?;
    Some((guard, llm::require_python(test)?))
}

/// The agent metering with plaintext capture of Python processes, its metrics served.
fn plaintext_agent() -> Agent {
    Agent::start(AgentOptions {
        meter: true,
        metrics: true,
        config: Some(CONFIG.into()),
        ..Default::default()
    })
}

#[test]
fn plaintext_http_is_metered_on_both_sides() {
    let test = "plaintext_http_is_metered_on_both_sides";
    let Some((_guard, python)) = prelude(test) else {
        return;
    };
    let server = LlmServer::start_plain(&python);
    let agent = plaintext_agent();
    assert!(agent.metric("tokenmeter_capture_plaintext_processes") >= 1);
    let plain = llm::openai_client(&python, &server, &["--max-tokens", "4"]);
    let streamed = llm::openai_client(
        &python,
        &server,
        &["--stream", "--include-usage", "--max-tokens", "6"],
    );
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    let served = server.served();
    assert_eq!(served.len(), 2, "{served:#?}");
    for (client, served) in [(&plain, &served[0]), (&streamed, &served[1])] {
        let client_side: Vec<&Value> = records.iter().filter(|r| r["pid"] == client.pid).collect();
        assert_eq!(client_side.len(), 1, "client {}: {records:#?}", client.pid);
        let server_side: Vec<&Value> = records
            .iter()
            .filter(|r| r["side"] == "server" && r["stream"] == served.stream)
            .collect();
        assert_eq!(server_side.len(), 1, "{records:#?}");
        for record in [client_side[0], server_side[0]] {
            expect::reported_usage(record, served.prompt_tokens, served.completion_tokens);
        }
        assert_eq!(server_side[0]["pid"], server.pid());
    }
}

#[test]
fn vectored_calls_are_captured_too() {
    let test = "vectored_calls_are_captured_too";
    let Some((_guard, python)) = prelude(test) else {
        return;
    };
    let server = LlmServer::start_plain(&python);
    let agent = plaintext_agent();
    // sendmsg/recvmsg, then writev/readv; the request's head and body in two iovecs. A
    // process is traced once the agent saw its exec: each client waits until the agent counts
    // it among the traced processes (it starts in milliseconds, the openai SDK's take a second).
    let mut clients = Vec::new();
    let traced = |n: u64| {
        poll_until(Duration::from_secs(10), || {
            (agent.metric("tokenmeter_capture_plaintext_processes") == n).then_some(())
        })
        .is_some()
    };
    for mode in ["msg", "vec"] {
        // Only the server is traced (the previous client's exit has been seen).
        assert!(traced(1), "the server alone is traced");
        let mut child = Command::new(&python)
            .arg(fixtures::fixture("vectored_client.py"))
            .args(["--port", &server.port.to_string(), "--mode", mode, "--hold"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("vectored_client.py");
        assert!(
            traced(2),
            "the agent never traced the client: {} processes traced",
            agent.metric("tokenmeter_capture_plaintext_processes")
        );
        writeln!(child.stdin.take().expect("stdin"), "go").expect("release the client");
        let output = child.wait_with_output().expect("vectored_client.py");
        assert!(output.status.success(), "vectored_client.py failed");
        clients.push(serde_json::from_slice::<Value>(&output.stdout).expect("client JSON"));
    }
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    let served = server.served();
    assert_eq!(served.len(), 2);
    for (client, served) in clients.iter().zip(&served) {
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| r["pid"] == client["pid"])
            .collect();
        assert_eq!(mine.len(), 1, "client {}: {records:#?}", client["pid"]);
        let record = mine[0];
        assert_eq!(record["side"], "client");
        assert_eq!(
            record["tokens"]["input"], served.prompt_tokens,
            "{record:#}"
        );
        assert_eq!(
            record["tokens"]["output"], served.completion_tokens,
            "{record:#}"
        );
        assert!(record["error"].is_null(), "{record:#}");
    }
}

#[test]
fn a_tls_connection_is_counted_once_with_syscall_capture_on() {
    let test = "a_tls_connection_is_counted_once_with_syscall_capture_on";
    let Some((_guard, python)) = prelude(test) else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let agent = plaintext_agent();
    let client = llm::openai_client(&python, &server, &["--max-tokens", "4"]);
    let ignored_tls =
        agent.metric("tokenmeter_capture_plaintext_ignored_fds_total{reason=\"tls\"}");
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    // One call: one record per side, from the TLS plaintext; the ciphertext on both sockets
    // was recognised and skipped.
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records.iter().filter(|r| r["pid"] == client.pid).count(), 1);
    assert!(
        ignored_tls >= 2,
        "both ends' TLS sockets skipped: {ignored_tls}"
    );
    let served = &server.served()[0];
    for record in &records {
        assert_eq!(record["tokens"]["output"], served.completion_tokens);
    }
}
