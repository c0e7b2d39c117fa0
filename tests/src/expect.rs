//! Assertions that compare the agent's streams with what the peers logged or printed.

use crate::agent::{AgentRun, CapturedStream, Direction};
use crate::server::ServerConnection;

/// Finds the stream of `pid` in `direction` whose sha256 is `sha256`, and checks it is whole:
/// `bytes == len`, not truncated, no gaps. Panics with the candidates otherwise.
pub fn stream<'a>(
    run: &'a AgentRun,
    pid: u32,
    direction: Direction,
    len: u64,
    sha256: &str,
    what: &str,
) -> &'a CapturedStream {
    let found = run
        .streams
        .iter()
        .find(|s| s.pid == pid && s.direction == direction && s.sha256 == sha256);
    let Some(found) = found else {
        panic!(
            "{what}: no captured {direction:?} stream of pid {pid} with {len} bytes, sha256 {sha256}.\n\
             streams of pid {pid}: {:#?}\nall streams: {}\nagent stderr:\n{}",
            run.streams_of(pid),
            summary(&run.streams),
            run.stderr
        );
    };
    assert_eq!(
        found.bytes, len,
        "{what}: stream {found:?} has the right sha256 but bytes != {len}"
    );
    assert!(
        !found.truncated,
        "{what}: stream is marked truncated: {found:?}"
    );
    assert_eq!(found.gaps, 0, "{what}: stream has gaps: {found:?}");
    found
}

/// The server's streams of `conn`: it read what it logged as received and wrote what it sent.
pub fn server_side(run: &AgentRun, conn: &ServerConnection) {
    let what = format!("server side of {:?}", conn.path);
    stream(
        run,
        conn.server_pid,
        Direction::Read,
        conn.received_len,
        &conn.received_sha256,
        &what,
    );
    stream(
        run,
        conn.server_pid,
        Direction::Write,
        conn.sent_len,
        &conn.sent_sha256,
        &what,
    );
}

/// The client's streams of `conn`: it wrote what the server received and read what it sent.
pub fn client_side(run: &AgentRun, client_pid: u32, conn: &ServerConnection) {
    let what = format!("client side (pid {client_pid}) of {:?}", conn.path);
    stream(
        run,
        client_pid,
        Direction::Write,
        conn.received_len,
        &conn.received_sha256,
        &what,
    );
    stream(
        run,
        client_pid,
        Direction::Read,
        conn.sent_len,
        &conn.sent_sha256,
        &what,
    );
}

/// Both sides of `conn`.
pub fn both_sides(run: &AgentRun, client_pid: u32, conn: &ServerConnection) {
    server_side(run, conn);
    client_side(run, client_pid, conn);
}

/// No stream at all was captured for `pid`.
pub fn nothing_for(run: &AgentRun, pid: u32, what: &str) {
    let streams = run.streams_of(pid);
    assert!(
        streams.is_empty(),
        "{what} (pid {pid}) is outside the selector yet was captured: {streams:#?}"
    );
}

/// One line per stream, for failure messages.
pub fn summary(streams: &[CapturedStream]) -> String {
    let mut out = String::new();
    for s in streams {
        out.push_str(&format!(
            "\n  pid {} {:?} {:?} conn {} bytes {} sha256 {} truncated {} gaps {} close {}",
            s.pid,
            s.comm,
            s.direction,
            s.conn,
            s.bytes,
            s.sha256,
            s.truncated,
            s.gaps,
            s.close_reason
        ));
    }
    out
}

/// A usage record carries the server's reported counts, whole: input and output as the
/// server logged them, reported (not estimated), no error.
pub fn reported_usage(record: &serde_json::Value, input: u64, output: u64) {
    assert_eq!(record["tokens"]["input"], input, "{record:#}");
    assert_eq!(record["tokens"]["output"], output, "{record:#}");
    assert_eq!(record["tokens"]["input_source"], "reported", "{record:#}");
    assert!(record["error"].is_null(), "{record:#}");
}
