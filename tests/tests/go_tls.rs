//! Go's crypto/tls end to end (issue 8): a Go HTTPS server and a Go client (standard library,
//! HTTP/2 by ALPN as Go negotiates it) exchange OpenAI-style calls, streamed and not; the
//! agent reads the plaintext at `(*Conn).Write`/`Read` and their `RET` instructions. Every
//! call is metered once per side with the server's reported usage, and both programs finish
//! normally.

use std::time::Duration;

use serde_json::Value;
use tokenmeter_tests::agent::{Agent, AgentOptions};
use tokenmeter_tests::go::{self, GoServer};
use tokenmeter_tests::wait::poll_until;
use tokenmeter_tests::{e2e_prelude, expect, fixtures};

#[test]
fn go_tls_calls_are_metered_on_both_sides() {
    let test = "go_tls_calls_are_metered_on_both_sides";
    let Some(_guard) = e2e_prelude(test) else {
        return;
    };
    let Some(go) = go::require_go(test) else {
        return;
    };
    let dir = fixtures::tempdir("go-tls");
    let binary = go::build(&go, dir.path());
    let server = GoServer::start(&binary);
    let agent = Agent::start(AgentOptions {
        meter: true,
        ..Default::default()
    });
    let plain = go::client(&binary, &server, &["--max-tokens", "5"]);
    let streamed = go::client(&binary, &server, &["--stream", "--max-tokens", "7"]);
    // A stripped Go program (a second server, running until the agent has looked at it):
    // its crypto/tls cannot be found, and the agent says so.
    let stripped_binary = go::build_stripped(&go, dir.path());
    let stripped = GoServer::start(&stripped_binary);
    let said = poll_until(Duration::from_secs(20), || {
        agent.stderr().contains("stripped Go program").then_some(())
    });
    assert!(
        said.is_some(),
        "no line about the stripped Go program:\n{}",
        agent.stderr()
    );
    let stripped_pid = stripped.pid();
    drop(stripped);
    let run = agent.stop();
    run.assert_clean_exit();
    assert!(
        run.stderr.contains("crypto/tls.(*Conn).Write"),
        "the Go binary was probed: {}",
        run.stderr
    );
    let named: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("stripped Go program"))
        .collect();
    assert_eq!(
        named.len(),
        1,
        "one line for the stripped file:\n{}",
        run.stderr
    );
    assert!(named[0].contains("openai_go_stripped"), "{}", named[0]);
    let records = run.usage_records();
    assert!(records.iter().all(|r| r["pid"] != stripped_pid));
    let served = server.served();
    assert_eq!(served.len(), 2, "{served:#?}");
    for (call, served) in [(&plain, &served[0]), (&streamed, &served[1])] {
        assert_eq!(call.protocol, "HTTP/2.0", "Go negotiates HTTP/2");
        let usage = call.usage.as_ref().expect("the server reported usage");
        assert_eq!(usage["completion_tokens"], served.completion_tokens);
        let client_side: Vec<&Value> = records.iter().filter(|r| r["pid"] == call.pid).collect();
        assert_eq!(client_side.len(), 1, "client {}: {records:#?}", call.pid);
        let server_side: Vec<&Value> = records
            .iter()
            .filter(|r| r["pid"] == served.server_pid && r["stream"] == served.stream)
            .collect();
        assert_eq!(server_side.len(), 1, "{records:#?}");
        for record in [client_side[0], server_side[0]] {
            expect::reported_usage(record, served.prompt_tokens, served.completion_tokens);
            assert_eq!(record["http_version"], "2");
        }
    }
    assert_eq!(
        records.len(),
        4,
        "one record per side per call: {records:#?}"
    );
}
