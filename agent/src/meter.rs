//! The metering sink: streams -> http -> llm -> tokens -> attribution -> export, for
//! `tokenmeter-agent run`.
//!
//! HTTP and LLM decoding run on the pipeline's thread, in step with capture. Counting tokens
//! can be slow (a Hugging Face tokenizer takes half a second to load the first time), so
//! token counting, record building and export run on a worker thread behind a bounded queue.
//! When the queue is full the pipeline waits (usage is never dropped) and the wait is counted:
//! the kernel's ring buffer absorbs the delay, and says so if it overflows.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{sync_channel, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lru::LruCache;
use tracing::{debug, info, warn};

use crate::{
    attribution::{
        gpu::{GpuConfig, GpuSampler},
        Attributor, CgroupPaths, GpuReporter, GpuUsageRecord, Identity, IdentityExtractor,
        Workload,
    },
    capture::sockets::SocketPair,
    export::RecordSink,
    http::{Body, Exchange, HttpStage},
    llm::{self, LlmCall},
    pipeline::{clock_ns, StreamSink},
    record::{ConnMeta, RecordFactory},
    streams::{ConnId, StreamEvent},
    telemetry::AgentMetrics,
    tokens::{self, TokenCounter},
};

/// Calls waiting for their tokens to be counted.
const QUEUE: usize = 1024;

/// What the record worker is handed.
enum Work {
    /// An LLM call, to count, attribute and export.
    Call(Box<Pending>),
    /// A pod's GPU use over a report interval, to export.
    Gpu(Box<GpuUsageRecord>),
}

/// One LLM call on its way to a record.
struct Pending {
    exchange: Exchange,
    call: LlmCall,
    meta: ConnMeta,
    addresses: Option<SocketPair>,
    identity: Identity,
}

pub struct Meter {
    http: HttpStage,
    metrics: Arc<AgentMetrics>,
    identity: IdentityExtractor,
    conns: HashMap<ConnId, (ConnMeta, u8)>,
    /// Socket addresses by (pid, `SSL*`), from `SSL_set_fd`. An LRU: no close event tells
    /// when an `SSL*` is reused, a later `SSL_set_fd` replaces the entry.
    addresses: LruCache<(u32, u64), SocketPair>,
    /// Pod and container by process, read from /proc/PID/cgroup once, dropped at exit.
    workloads: LruCache<u32, Workload>,
    /// For processes gone before their /proc/PID/cgroup was read: the path of the cgroup id
    /// the kernel reported.
    cgroup_paths: CgroupPaths,
    unknown_layout_logged: bool,
    exchanges: Vec<Exchange>,
    queue: Option<SyncSender<Work>>,
    worker: Option<JoinHandle<()>>,
    /// The GPU sampler's thread and its stop flag, when started.
    gpu: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Most records exported between two flushes of the exporter.
const FLUSH_EVERY: usize = 256;

impl Meter {
    pub fn new(
        http: HttpStage,
        counter: TokenCounter,
        identity: IdentityExtractor,
        attributor: Attributor,
        export: Box<dyn RecordSink + Send>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        if identity.ephemeral_key {
            warn!(
                "no identity.fingerprint_key_file configured: API-key fingerprints use a key made \
                 at start and change when the agent restarts"
            );
        }
        let records = RecordFactory {
            boot_id: crate::record::boot_id(),
            wall_offset_ns: wall_offset_ns(),
        };
        let (queue, pending) = sync_channel::<Work>(QUEUE);
        let worker_metrics = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("tokenmeter-records".into())
            .spawn(move || {
                let mut worker = RecordWorker {
                    counter,
                    records,
                    attributor,
                    export,
                    metrics: worker_metrics,
                    tokenizer_errors_logged: 0,
                };
                // Records that arrive together are made durable together (one sync).
                while let Ok(work) = pending.recv() {
                    worker.work(work);
                    for work in pending.try_iter().take(FLUSH_EVERY) {
                        worker.work(work);
                    }
                    worker.export.flush();
                }
            })
            .expect("spawning the record worker");
        Self {
            http,
            metrics,
            identity,
            conns: HashMap::new(),
            addresses: LruCache::new(NonZeroUsize::new(16384).expect("non-zero")),
            workloads: LruCache::new(NonZeroUsize::new(4096).expect("non-zero")),
            cgroup_paths: CgroupPaths::new(),
            unknown_layout_logged: false,
            exchanges: Vec::new(),
            queue: Some(queue),
            worker: Some(worker),
            gpu: None,
        }
    }

    /// Starts sampling the node's GPUs with NVML on a thread of its own; its per-pod records
    /// go out with the usage records. Without NVML it says why once and stops.
    pub fn start_gpu(&mut self, config: GpuConfig, mut reporter: GpuReporter) {
        let Some(queue) = self.queue.clone() else {
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let metrics = self.metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("tokenmeter-gpu".into())
            .spawn(move || {
                let mut sampler = match GpuSampler::open(&config) {
                    Ok(sampler) => sampler,
                    Err(error) => {
                        info!("{error}");
                        return;
                    }
                };
                let devices: Vec<String> = sampler
                    .devices()
                    .map(|d| format!("{} ({})", d.name, d.uuid))
                    .collect();
                info!(?devices, "sampling GPUs with NVML");
                let pod_of = &mut |pid: u32| Workload::of_process(pid)?.pod_uid;
                let (sample_every, report_every) =
                    (config.sample_interval(), config.report_interval());
                let mut next_report = Instant::now() + report_every;
                sampler.sample(wall_us(), pod_of);
                loop {
                    let woke = Instant::now();
                    while woke.elapsed() < sample_every && !stopping.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50).min(sample_every));
                    }
                    let stop = stopping.load(Ordering::Relaxed);
                    sampler.sample(wall_us(), pod_of);
                    metrics
                        .gpu_devices
                        .store(sampler.devices().len() as u64, Ordering::Relaxed);
                    if stop || Instant::now() >= next_report {
                        next_report = Instant::now() + report_every;
                        for record in reporter.report(&mut sampler, wall_us() * 1000) {
                            metrics.gpu_records.fetch_add(1, Ordering::Relaxed);
                            if queue.send(Work::Gpu(Box::new(record))).is_err() {
                                return;
                            }
                        }
                    }
                    if stop {
                        return;
                    }
                }
            });
        match spawned {
            Ok(thread) => self.gpu = Some((stop, thread)),
            Err(error) => warn!(%error, "cannot start the GPU sampler: no GPU data"),
        }
    }

    fn meter(&mut self, mut exchange: Exchange) {
        self.metrics.exchanges.fetch_add(1, Ordering::Relaxed);
        let Some(call) = llm::decode(&exchange) else {
            self.metrics
                .exchanges_not_llm
                .fetch_add(1, Ordering::Relaxed);
            debug!(
                method = %exchange.request.method,
                status = exchange.response.as_ref().map(|r| r.status),
                error = exchange.error.as_ref().map(ToString::to_string),
                "exchange is not an LLM call"
            );
            return;
        };
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
        // The bodies were read into `call`; free them before the call waits in the queue.
        exchange.request.body = Body::default();
        if let Some(response) = exchange.response.as_mut() {
            response.body = Body::default();
        }
        let pending = Pending {
            exchange,
            call,
            meta,
            addresses,
            identity,
        };
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Work::Call(Box::new(pending))) {
            Ok(()) => {}
            Err(TrySendError::Full(work)) => {
                self.metrics
                    .record_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                let _ = queue.send(work);
            }
            Err(TrySendError::Disconnected(_)) => {
                warn!("the record worker stopped: usage records are no longer written");
            }
        }
    }

    fn publish_http(&self) {
        let http = self.http.stats;
        for (slot, value) in self.metrics.http_connections.iter().zip([
            http.connections_http1,
            http.connections_http2,
            http.connections_other,
        ]) {
            slot.store(value, Ordering::Relaxed);
        }
        if let Some(budget) = self.http.body_budget() {
            let metrics = &self.metrics;
            metrics
                .http_body_bytes_held
                .store(budget.held() as u64, Ordering::Relaxed);
            metrics
                .http_body_bytes_over_budget
                .store(budget.refused_bytes(), Ordering::Relaxed);
        }
    }
}

/// Counts tokens, builds records and exports them, on its own thread.
struct RecordWorker {
    counter: TokenCounter,
    records: RecordFactory,
    attributor: Attributor,
    export: Box<dyn RecordSink + Send>,
    metrics: Arc<AgentMetrics>,
    tokenizer_errors_logged: usize,
}

impl RecordWorker {
    fn work(&mut self, work: Work) {
        match work {
            Work::Call(pending) => self.record(*pending),
            Work::Gpu(record) => self.export.export_gpu(&record),
        }
    }

    fn record(&mut self, pending: Pending) {
        let Pending {
            exchange,
            call,
            meta,
            addresses,
            identity,
        } = pending;
        let counts = tokens::resolve(&call, &self.counter);
        for error in self
            .counter
            .load_errors()
            .into_iter()
            .skip(self.tokenizer_errors_logged)
        {
            warn!(%error, "tokenizer unavailable: counts for its models are estimated");
            self.tokenizer_errors_logged += 1;
        }
        let Some(mut record) = self
            .records
            .build(&exchange, &meta, addresses, &call, counts, identity)
        else {
            return;
        };
        self.attributor.attribute(&mut record);
        self.metrics.records.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = &record.error {
            self.metrics
                .records_with_errors
                .fetch_add(1, Ordering::Relaxed);
            debug!(id = %record.id, %error, "partial usage record");
        }
        self.export.export(&record);
    }
}

impl StreamSink for Meter {
    fn process_exited(&mut self, pid: u32) {
        self.workloads.pop(&pid);
    }

    fn connection_addresses(&mut self, pid: u32, conn: u64, addresses: SocketPair) {
        self.addresses.put((pid, conn), addresses);
    }

    fn report(&self) -> serde_json::Value {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let m = &self.metrics;
        serde_json::json!({
            "meter": {
                "exchanges": get(&m.exchanges),
                "exchanges_not_llm": get(&m.exchanges_not_llm),
                "records": get(&m.records),
                "records_with_errors": get(&m.records_with_errors),
                "record_queue_full": get(&m.record_queue_full),
            },
            "http": self.http.stats,
        })
    }

    fn finish(&mut self) {
        // The GPU thread reports its last interval and lets go of the queue first.
        if let Some((stop, thread)) = self.gpu.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        // Closing the queue lets the worker drain what is left and stop.
        self.queue = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }

    fn consume(&mut self, event: StreamEvent) {
        match &event {
            StreamEvent::Opened {
                id,
                comm,
                cgroup_id,
                ..
            } => {
                let paths = &mut self.cgroup_paths;
                let mut fresh = false;
                let workload = self
                    .workloads
                    .get_or_insert(id.conn.pid, || {
                        fresh = true;
                        Workload::of_process(id.conn.pid)
                            .or_else(|| Some(Workload::from_path(&paths.path_of(*cgroup_id)?)))
                            .unwrap_or_default()
                    })
                    .clone();
                if fresh && workload.pod_uid.is_none() && !self.unknown_layout_logged {
                    if let Some(path) = workload
                        .cgroup
                        .as_deref()
                        .filter(|p| p.contains("kubepods"))
                    {
                        warn!(
                            cgroup = path,
                            "a cgroup under kubepods names no pod uid this agent can read (an unknown \
                             layout): its records carry the cgroup path only (said once)"
                        );
                        self.unknown_layout_logged = true;
                    }
                }
                let entry = self.conns.entry(id.conn).or_insert_with(|| {
                    let meta = ConnMeta {
                        comm: comm.clone(),
                        cgroup_id: *cgroup_id,
                        workload,
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
        self.publish_http();
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

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Wall-clock time in µs (NVML's sample timestamps are on it).
fn wall_us() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_REALTIME) / 1000).unwrap_or_default()
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
fn wall_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}
