//! The HTTP stage: routes each connection's stream events to the decoder its first bytes call
//! for, in the right direction.

use std::collections::HashMap;

use serde::Deserialize;

use super::{
    BodyBudget, BodyLimits, ConnectionDecoder, Exchange, Flow, H1Decoder, H2Decoder, Role, METHODS,
};
use crate::{
    capture::record::Direction,
    streams::{ConnId, StreamEvent},
};

/// `[http]` in the agent's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Bytes kept per request or response body (after content decoding); longer bodies are
    /// cut and the exchange says so. LLM requests with long contexts need a few MiB.
    pub max_body_bytes: usize,
    /// Bytes the bodies of all connections may hold at once: the agent's memory for bodies
    /// in flight. Past it, bodies are cut (their records say so, a metric counts the bytes)
    /// until calls finish. The default fits the chart's 512 MiB memory limit.
    pub max_held_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_held_body_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Bytes looked at to tell HTTP/1, HTTP/2 and other protocols apart.
const SNIFF_BYTES: usize = 24;
/// Bytes held while only one end of a connection has spoken.
const MAX_SNIFF_BUFFER: usize = 64 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection turned out to be.
enum Protocol {
    /// Not decided yet: the first bytes of each direction, with their timestamps.
    Sniffing(Vec<(Direction, u64, Vec<u8>)>),
    /// HTTP/1.x.
    Http(Role, Box<dyn ConnectionDecoder + Send>),
    /// HTTP/2 (prior knowledge or negotiated by ALPN: both start with the preface).
    Http2(Role, Box<dyn ConnectionDecoder + Send>),
    /// Not HTTP: ignored.
    Other,
}

struct Conn {
    protocol: Protocol,
    start_pos: [u64; 2],
    open: [bool; 2],
}

/// Counts of what the stage saw, for the agent's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpStats {
    pub connections_http1: u64,
    pub connections_http2: u64,
    pub connections_other: u64,
}

/// Turns stream events into exchanges.
pub struct HttpStage {
    limits: BodyLimits,
    conns: HashMap<ConnId, Conn>,
    pub stats: HttpStats,
}

impl HttpStage {
    pub fn new(config: &HttpConfig) -> Self {
        Self {
            limits: BodyLimits {
                max_bytes: config.max_body_bytes,
                budget: Some(BodyBudget::new(config.max_held_body_bytes)),
            },
            conns: HashMap::new(),
            stats: HttpStats::default(),
        }
    }

    /// The cap over the bodies of all connections, with what they hold now.
    pub fn body_budget(&self) -> Option<&BodyBudget> {
        self.limits.budget.as_ref()
    }

    pub fn consume(&mut self, event: StreamEvent, out: &mut Vec<Exchange>) {
        match event {
            StreamEvent::Opened { id, start_pos, .. } => {
                let conn = self.conns.entry(id.conn).or_insert_with(|| Conn {
                    protocol: Protocol::Sniffing(Vec::new()),
                    start_pos: [0, 0],
                    open: [false, false],
                });
                conn.start_pos[id.direction.index()] = start_pos;
                conn.open[id.direction.index()] = true;
            }
            StreamEvent::Data {
                id,
                timestamp_ns,
                bytes,
            } => {
                let limits = &self.limits;
                let Some(conn) = self.conns.get_mut(&id.conn) else {
                    return;
                };
                match &mut conn.protocol {
                    Protocol::Http(role, decoder) | Protocol::Http2(role, decoder) => {
                        decoder.push(flow(*role, id.direction), timestamp_ns, &bytes, out)
                    }
                    Protocol::Other => {}
                    Protocol::Sniffing(seen) => {
                        seen.push((id.direction, timestamp_ns, bytes));
                        if let Some(decided) = sniff(seen, id.conn, conn.start_pos, limits) {
                            let Protocol::Sniffing(seen) =
                                std::mem::replace(&mut conn.protocol, decided)
                            else {
                                unreachable!("matched above")
                            };
                            match &mut conn.protocol {
                                Protocol::Http(role, decoder) | Protocol::Http2(role, decoder) => {
                                    for (direction, ts, bytes) in seen {
                                        decoder.push(flow(*role, direction), ts, &bytes, out);
                                    }
                                }
                                _ => {}
                            }
                            match conn.protocol {
                                Protocol::Http(..) => self.stats.connections_http1 += 1,
                                Protocol::Http2(..) => self.stats.connections_http2 += 1,
                                _ => self.stats.connections_other += 1,
                            }
                        }
                    }
                }
            }
            StreamEvent::Gap { id, len, .. } => {
                if let Some(Conn {
                    protocol: Protocol::Http(role, decoder) | Protocol::Http2(role, decoder),
                    ..
                }) = self.conns.get_mut(&id.conn)
                {
                    decoder.gap(flow(*role, id.direction), len, out);
                } else if let Some(conn) = self.conns.get_mut(&id.conn) {
                    // A gap before the protocol is known: this connection cannot be followed.
                    conn.protocol = Protocol::Other;
                }
            }
            StreamEvent::Closed { id, .. } => {
                let Some(conn) = self.conns.get_mut(&id.conn) else {
                    return;
                };
                conn.open[id.direction.index()] = false;
                if conn.open.iter().any(|&open| open) {
                    return;
                }
                let conn = self.conns.remove(&id.conn).expect("looked up above");
                match conn.protocol {
                    Protocol::Http(_, mut decoder) | Protocol::Http2(_, mut decoder) => {
                        decoder.finish(out)
                    }
                    Protocol::Sniffing(seen) if !seen.is_empty() => {
                        self.stats.connections_other += 1
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Which HTTP flow a direction of the probed process is.
fn flow(role: Role, direction: Direction) -> Flow {
    match (role, direction) {
        (Role::Client, Direction::Write) | (Role::Server, Direction::Read) => Flow::ToServer,
        (Role::Client, Direction::Read) | (Role::Server, Direction::Write) => Flow::ToClient,
    }
}

/// Decides the protocol from the first bytes seen, or `None` to wait for more.
fn sniff(
    seen: &[(Direction, u64, Vec<u8>)],
    conn: ConnId,
    start_pos: [u64; 2],
    limits: &BodyLimits,
) -> Option<Protocol> {
    let mut prefixes: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (direction, _, bytes) in seen {
        let prefix = &mut prefixes[direction.index()];
        let room = SNIFF_BYTES.saturating_sub(prefix.len());
        prefix.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }
    let mut undecided = false;
    for direction in [Direction::Write, Direction::Read] {
        let prefix = &prefixes[direction.index()];
        if prefix.is_empty() {
            continue;
        }
        let is_request = H2_PREFACE.starts_with(prefix) && prefix.len() >= 4
            || METHODS.iter().any(|m| prefix.starts_with(m));
        let is_response = prefix.starts_with(b"HTTP/1.");
        let role = match (direction, is_request, is_response) {
            (Direction::Write, true, _) | (Direction::Read, _, true) => Role::Client,
            (Direction::Read, true, _) | (Direction::Write, _, true) => Role::Server,
            _ => {
                let could_be = METHODS.iter().any(|m| m.starts_with(prefix))
                    || b"HTTP/1.".starts_with(prefix)
                    || H2_PREFACE.starts_with(prefix);
                undecided |= could_be && prefix.len() < SNIFF_BYTES;
                continue;
            }
        };
        let (request_pos, response_pos) = match role {
            Role::Client => (start_pos[0], start_pos[1]),
            Role::Server => (start_pos[1], start_pos[0]),
        };
        if prefix.starts_with(b"PRI ") {
            let decoder = H2Decoder::new(conn, role, limits.clone())
                .with_start_pos(request_pos, response_pos);
            return Some(Protocol::Http2(role, Box::new(decoder)));
        }
        let decoder = H1Decoder::new(conn, role, limits.clone(), request_pos, response_pos);
        return Some(Protocol::Http(role, Box::new(decoder)));
    }
    // Not HTTP only once both ends spoke and neither looks like it: an HTTP/2 server sends
    // its SETTINGS before it has read the client's preface, so one binary direction alone
    // proves nothing. A connection where only one end ever speaks is given up after a while.
    let spoke = prefixes.iter().filter(|p| p.len() >= 8).count();
    let buffered: usize = seen.iter().map(|(_, _, b)| b.len()).sum();
    (!undecided && (spoke == 2 || buffered > MAX_SNIFF_BUFFER)).then_some(Protocol::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use crate::streams::StreamId;

    const CONN: ConnId = ConnId {
        pid: 1,
        conn: 2,
        seq: 0,
    };

    /// A stream of `CONN` opened and given `bytes`.
    fn events(direction: Direction, bytes: &[u8]) -> Vec<StreamEvent> {
        on(CONN.conn, direction, bytes, true)
    }

    #[test]
    fn an_http2_server_that_speaks_first_is_still_recognised() {
        let mut stage = HttpStage::new(&HttpConfig::default());
        let mut out = Vec::new();
        // The server's SETTINGS frame, written before it read the client's preface.
        for event in events(
            Direction::Write,
            b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64",
        ) {
            stage.consume(event, &mut out);
        }
        assert!(matches!(stage.conns[&CONN].protocol, Protocol::Sniffing(_)));
        for event in events(Direction::Read, H2_PREFACE) {
            stage.consume(event, &mut out);
        }
        assert!(matches!(
            stage.conns[&CONN].protocol,
            Protocol::Http2(Role::Server, _)
        ));
        assert_eq!(stage.stats.connections_http2, 1);
    }

    #[test]
    fn two_ends_that_are_not_http_are_given_up() {
        let mut stage = HttpStage::new(&HttpConfig::default());
        let mut out = Vec::new();
        for event in events(Direction::Write, b"\x16\x03\x01 not http at all")
            .into_iter()
            .chain(events(Direction::Read, b"SSH-2.0-OpenSSH_9.2"))
        {
            stage.consume(event, &mut out);
        }
        assert!(matches!(stage.conns[&CONN].protocol, Protocol::Other));
        assert_eq!(stage.stats.connections_other, 1);
    }

    #[test]
    fn a_client_request_decides_http1_and_roles() {
        let mut stage = HttpStage::new(&HttpConfig::default());
        let mut out = Vec::new();
        for event in events(Direction::Write, b"POST /v1/chat/completions HTTP/1.1\r\n") {
            stage.consume(event, &mut out);
        }
        assert!(matches!(
            stage.conns[&CONN].protocol,
            Protocol::Http(Role::Client, _)
        ));
    }

    /// `bytes` on connection `conn` (otherwise `CONN`), after its `Opened` when `opened`.
    fn on(conn: u64, direction: Direction, bytes: &[u8], opened: bool) -> Vec<StreamEvent> {
        let id = StreamId {
            conn: ConnId { conn, ..CONN },
            direction,
        };
        let open = StreamEvent::Opened {
            id,
            comm: "t".into(),
            cgroup_id: 1,
            timestamp_ns: 0,
            start_pos: 0,
        };
        let data = StreamEvent::Data {
            id,
            timestamp_ns: 1,
            bytes: bytes.to_vec(),
        };
        if opened {
            vec![open, data]
        } else {
            vec![data]
        }
    }

    #[test]
    fn bodies_of_all_connections_share_one_budget() {
        let mut stage = HttpStage::new(&HttpConfig {
            max_body_bytes: 4096,
            max_held_body_bytes: 10_000,
        });
        let budget = stage.body_budget().unwrap().clone();
        let mut request =
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3000\r\n\r\n".to_vec();
        request.extend_from_slice(&[b'x'; 3000]);
        let mut out = Vec::new();
        // Four clients send 3,000-byte bodies; 10,000 bytes fit.
        for conn in 1..=4 {
            for event in on(conn, Direction::Write, &request, true) {
                stage.consume(event, &mut out);
            }
        }
        assert_eq!((budget.held(), budget.refused_bytes()), (10_000, 2_000));
        for conn in 1..=4 {
            for event in on(
                conn,
                Direction::Read,
                b"HTTP/1.1 204 No Content\r\n\r\n",
                true,
            ) {
                stage.consume(event, &mut out);
            }
        }
        assert_eq!(out.len(), 4);
        for exchange in &out[..3] {
            assert_eq!(exchange.request.body.bytes.len(), 3000);
            assert_eq!(exchange.error, None);
        }
        let cut = &out[3];
        assert_eq!(cut.request.body.bytes.len(), 1000);
        assert_eq!(cut.request.body.wire_len, 3000);
        assert!(cut.request.body.over_budget);
        assert!(
            matches!(cut.error, Some(HttpError::BodyBudget { limit: 10_000, .. })),
            "{:?}",
            cut.error
        );

        // Metered and dropped: the budget is back, and the next body is kept whole.
        out.clear();
        assert_eq!(budget.held(), 0);
        for event in on(4, Direction::Write, &request, false) {
            stage.consume(event, &mut out);
        }
        assert_eq!(budget.held(), 3000);
    }
}
