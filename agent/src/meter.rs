//! The metering sink: streams -> http -> llm -> tokens -> attribution -> export, for
//! `tokenmeter-agent run`. Synchronous and bounded by the stages' own limits.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{atomic::Ordering, Arc},
};

use lru::LruCache;

use tracing::{debug, warn};

use crate::{
    attribution::IdentityExtractor,
    capture::sockets::SocketPair,
    export::RecordSink,
    http::{Exchange, HttpStage},
    llm,
    pipeline::StreamSink,
    record::{ConnMeta, RecordFactory},
    streams::{ConnId, StreamEvent},
    telemetry::AgentMetrics,
    tokens::{self, TokenCounter},
};

/// What the metering stages did, for the final log line and the stats file.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MeterStats {
    pub exchanges: u64,
    pub records: u64,
    pub exchanges_not_llm: u64,
    pub records_with_errors: u64,
    #[serde(skip)]
    tokenizer_errors_logged: usize,
}

pub struct Meter {
    http: HttpStage,
    metrics: Arc<AgentMetrics>,
    counter: TokenCounter,
    identity: IdentityExtractor,
    export: Box<dyn RecordSink>,
    conns: HashMap<ConnId, (ConnMeta, u8)>,
    /// Socket addresses by (pid, `SSL*`), from `SSL_set_fd`. An LRU: no close event tells
    /// when an `SSL*` is reused, a later `SSL_set_fd` replaces the entry.
    addresses: LruCache<(u32, u64), SocketPair>,
    exchanges: Vec<Exchange>,
    records: RecordFactory,
    pub stats: MeterStats,
}

impl Meter {
    pub fn new(
        http: HttpStage,
        counter: TokenCounter,
        identity: IdentityExtractor,
        export: Box<dyn RecordSink>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        if identity.ephemeral_key {
            warn!(
                "no identity.fingerprint_key_file configured: API-key fingerprints use a key made \
                 at start and change when the agent restarts"
            );
        }
        Self {
            http,
            metrics,
            counter,
            identity,
            export,
            conns: HashMap::new(),
            addresses: LruCache::new(NonZeroUsize::new(16384).expect("non-zero")),
            exchanges: Vec::new(),
            records: RecordFactory {
                boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                wall_offset_ns: wall_offset_ns(),
            },
            stats: MeterStats::default(),
        }
    }

    fn meter(&mut self, exchange: Exchange) {
        self.stats.exchanges += 1;
        let Some(call) = llm::decode(&exchange) else {
            self.stats.exchanges_not_llm += 1;
            debug!(
                method = %exchange.request.method,
                status = exchange.response.as_ref().map(|r| r.status),
                error = exchange.error.as_ref().map(ToString::to_string),
                "exchange is not an LLM call"
            );
            return;
        };
        let counts = tokens::resolve(&call, &self.counter);
        for error in self
            .counter
            .load_errors()
            .into_iter()
            .skip(self.stats.tokenizer_errors_logged)
        {
            warn!(%error, "tokenizer unavailable: counts for its models are estimated");
            self.stats.tokenizer_errors_logged += 1;
        }
        let identity = self
            .identity
            .extract(&exchange.request.headers, call.user.as_deref());
        let meta = self
            .conns
            .get(&exchange.conn)
            .map(|(meta, _)| meta.clone())
            .unwrap_or_default();
        let addresses = self
            .addresses
            .get(&(exchange.conn.pid, exchange.conn.conn))
            .copied();
        let Some(record) = self
            .records
            .build(&exchange, &meta, addresses, &call, counts, identity)
        else {
            return;
        };
        self.stats.records += 1;
        if let Some(error) = &record.error {
            self.stats.records_with_errors += 1;
            debug!(id = %record.id, %error, "partial usage record");
        }
        self.export.export(&record);
    }
}

impl StreamSink for Meter {
    fn connection_addresses(&mut self, pid: u32, conn: u64, addresses: SocketPair) {
        self.addresses.put((pid, conn), addresses);
    }

    fn report(&self) -> serde_json::Value {
        serde_json::json!({ "meter": self.stats, "http": self.http.stats })
    }

    fn consume(&mut self, event: StreamEvent) {
        match &event {
            StreamEvent::Opened {
                id,
                comm,
                cgroup_id,
                ..
            } => {
                let entry = self.conns.entry(id.conn).or_insert_with(|| {
                    let meta = ConnMeta {
                        comm: comm.clone(),
                        cgroup_id: *cgroup_id,
                    };
                    (meta, 0)
                });
                entry.1 += 1;
            }
            StreamEvent::Data { .. } | StreamEvent::Gap { .. } | StreamEvent::Closed { .. } => {}
        }
        let closed = match &event {
            StreamEvent::Closed { id, .. } => Some(id.conn),
            _ => None,
        };
        self.http.consume(event, &mut self.exchanges);
        for exchange in std::mem::take(&mut self.exchanges) {
            self.meter(exchange);
        }
        self.publish();
        if let Some(conn) = closed {
            if let Some(entry) = self.conns.get_mut(&conn) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    self.conns.remove(&conn);
                }
            }
        }
    }
}

impl Meter {
    /// Copies the stages' counts to the shared metrics.
    fn publish(&self) {
        let m = &self.metrics;
        let s = self.stats;
        m.exchanges.store(s.exchanges, Ordering::Relaxed);
        m.exchanges_not_llm
            .store(s.exchanges_not_llm, Ordering::Relaxed);
        m.records.store(s.records, Ordering::Relaxed);
        m.records_with_errors
            .store(s.records_with_errors, Ordering::Relaxed);
        let http = self.http.stats;
        for (slot, value) in m.http_connections.iter().zip([
            http.connections_http1,
            http.connections_http2,
            http.connections_other,
        ]) {
            slot.store(value, Ordering::Relaxed);
        }
    }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
fn wall_offset_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec it is given.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}
