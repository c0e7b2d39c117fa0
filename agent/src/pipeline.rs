//! The agent's main loop: capture -> streams -> a sink.
//!
//! One task owns the ring buffers, the reassembler and the attacher, so no state is shared.
//! The ring buffers are the only queues: when the agent falls behind they fill and the kernel
//! drops the newest records and counts them, which this loop reports. Full /proc scans run on
//! a blocking thread so a slow scan never delays draining.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    future::Future,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use regex::Regex;
use serde::Serialize;
use tokio::{io::unix::AsyncFd, task::JoinHandle};
use tracing::info;

use crate::{
    capture::{
        self,
        discovery::{ProcScanner, ProcessInfo},
        plaintext::Plaintext,
        record::{decode_control, decode_data, ControlRecord},
        selector::Selector,
        sockets::{self, SocketPair},
        Attacher, CaptureCounters, CaptureError,
    },
    config::AgentConfig,
    internal_events,
    streams::{CloseReason, ConnId, Reassembler, StreamEvent, StreamLimits},
    telemetry::AgentMetrics,
};

/// Where finished stream events go.
pub trait StreamSink {
    fn consume(&mut self, event: StreamEvent);

    /// A process exited (after its streams were finished): forget what was cached about it.
    fn process_exited(&mut self, _pid: u32) {}

    /// `SSL_set_fd` tied connection `conn` of process `pid` to a socket with these addresses.
    fn connection_addresses(&mut self, _pid: u32, _conn: u64, _addresses: SocketPair) {}

    /// Capture has stopped and every stream is closed: finish what is in flight.
    fn finish(&mut self) {}

    /// What the sink's own stages counted, for `--stats-file`.
    fn report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Options that are not part of the configuration file.
pub struct RunOptions {
    /// Normally /sys; tests point it elsewhere to simulate a kernel without features.
    pub sysfs_root: PathBuf,
    /// Written once the probes are attached to every process found at start.
    pub ready_file: Option<PathBuf>,
    /// The agent's own metrics, updated as the loop runs.
    pub metrics: Arc<AgentMetrics>,
    /// Where the metrics are served, for the ready file.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// What a run did, for `--stats-file` and the benchmark.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub counters: CaptureCounters,
    pub streams_closed: u64,
    pub undecodable_records: u64,
    pub max_rss_kib: u64,
    /// Anonymous resident memory at exit (the agent's own heap, without the ring buffers
    /// the kernel maps into it), in KiB.
    pub rss_anon_kib: u64,
    /// CPU time the agent used, user + system, in milliseconds.
    pub cpu_ms: u64,
}

/// Delays after an exec at which the new process is inspected again, besides at once: a
/// fallback for processes whose loader has no hook (static binaries load nothing later; musl
/// and glibc loaders do have one) or whose loader was new to the agent.
const EXEC_RESCAN_DELAYS: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(300),
    Duration::from_millis(900),
];
/// The loop's timer: data records do not wake the agent one by one (see the eBPF side's
/// `data_wakeup_flags`), so the data ring is drained on this period, and at once when a
/// quarter of it is full or a control record arrives.
const TICK: Duration = Duration::from_millis(20);
const COUNTER_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a close or an exit waits before it finishes streams. The two ring buffers are not
/// ordered with each other, and the data ring is read in reservation order: a record another
/// CPU is still writing holds back the records behind it, so the last data of a connection can
/// be readable only after its `SSL_free` is. Records are written in microseconds; this covers
/// that with a wide margin (a drain runs every tick).
const CLOSE_GRACE: Duration = Duration::from_millis(60);
/// Data records read from the ring before their events are passed on.
const DRAIN_BATCH: usize = 64;

/// A close or exit waiting for [`CLOSE_GRACE`].
enum PendingClose {
    Conn(ConnId, CloseReason),
    Process(u32),
}

struct Loop<'a> {
    attacher: Attacher,
    data: AsyncFd<RingBuf<MapData>>,
    control: AsyncFd<RingBuf<MapData>>,
    counters_map: aya::maps::PerCpuArray<MapData, u64>,
    reassembler: Reassembler,
    scanner: ProcScanner,
    selector: Selector,
    /// Syscall capture of plaintext HTTP, when enabled.
    plaintext: Option<Plaintext>,
    sink: &'a mut dyn StreamSink,
    events: Vec<StreamEvent>,
    rescans: BTreeMap<Instant, Vec<u32>>,
    closes: VecDeque<(Instant, PendingClose)>,
    streams_closed: u64,
    undecodable: u64,
    last_counters: CaptureCounters,
    metrics: Arc<AgentMetrics>,
}

enum Wake {
    Data,
    Control,
    Tick,
    Scanned(Vec<ProcessInfo>),
    Shutdown,
}

/// Runs until `shutdown` resolves, then finishes every open stream.
pub async fn run(
    config: &AgentConfig,
    options: RunOptions,
    sink: &mut dyn StreamSink,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, CaptureError> {
    let selector = Selector::new(&config.selector).expect("validated config");
    let capture = capture::start(
        &options.sysfs_root,
        selector.selects_all(),
        config.plaintext.enabled,
    )?;
    let plaintext = capture
        .plaintext
        .map(|maps| Plaintext::new(&config.plaintext, maps));
    let library_pattern = Regex::new(&config.discovery.library_pattern).expect("validated config");
    let io_error = |source: std::io::Error| CaptureError::Io(source);
    let mut state = Loop {
        attacher: capture.attacher,
        data: register(capture.data)?,
        control: register(capture.control)?,
        counters_map: capture.counters,
        reassembler: Reassembler::new(StreamLimits {
            max_connections: config.streams.max_connections,
            max_pending_bytes: config.streams.max_pending_bytes.get(),
            idle_timeout_ns: config.streams.idle_timeout().as_nanos() as u64,
            max_capture_per_call: tokenmeter_common::MAX_CAPTURE_PER_CALL as u64,
        }),
        scanner: ProcScanner::new("/proc", library_pattern),
        selector,
        plaintext,
        sink,
        events: Vec::new(),
        rescans: BTreeMap::new(),
        closes: VecDeque::new(),
        streams_closed: 0,
        undecodable: 0,
        last_counters: CaptureCounters::default(),
        metrics: options.metrics.clone(),
    };

    let processes = scan_all(&state.scanner);
    state.apply_full_scan(processes);
    info!(
        probed_files = state.attacher.probed_files(),
        all_processes = state.selector.selects_all(),
        "capture ready"
    );
    state.check_counters();
    state.metrics.ready.store(true, Ordering::Relaxed);
    if let Some(path) = &options.ready_file {
        write_ready_file(path, state.attacher.probed_files(), options.metrics_addr)
            .map_err(io_error)?;
    }

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_full_scan = Instant::now() + config.discovery.rescan_interval();
    let mut next_counter_check = Instant::now() + COUNTER_CHECK_EVERY;
    let mut scan_task: Option<JoinHandle<Vec<ProcessInfo>>> = None;
    tokio::pin!(shutdown);
    loop {
        let wake = tokio::select! {
            guard = state.data.readable() => { guard.map_err(io_error)?.clear_ready(); Wake::Data }
            guard = state.control.readable() => { guard.map_err(io_error)?.clear_ready(); Wake::Control }
            _ = tick.tick() => Wake::Tick,
            scanned = async { scan_task.as_mut().expect("guarded").await }, if scan_task.is_some() => {
                scan_task = None;
                Wake::Scanned(scanned.unwrap_or_default())
            }
            _ = &mut shutdown => Wake::Shutdown,
        };
        match wake {
            Wake::Data => state.drain_data(),
            // Data first: everything a thread wrote before its SSL_free or exit is then in.
            Wake::Control => {
                state.drain_data();
                state.drain_control();
            }
            Wake::Tick => {
                state.drain_data();
                let now = Instant::now();
                state.apply_due_closes(Some(now));
                state.run_due_rescans(now);
                state
                    .reassembler
                    .expire_idle(monotonic_ns(), &mut state.events);
                state.forward();
                if now >= next_full_scan && scan_task.is_none() {
                    let scanner = state.scanner.clone();
                    scan_task = Some(tokio::task::spawn_blocking(move || scan_all(&scanner)));
                    next_full_scan = now + config.discovery.rescan_interval();
                }
                if now >= next_counter_check {
                    state.check_counters();
                    next_counter_check = now + COUNTER_CHECK_EVERY;
                }
            }
            Wake::Scanned(processes) => state.apply_full_scan(processes),
            Wake::Shutdown => break,
        }
    }

    state.drain_data();
    state.drain_control();
    state.drain_data();
    state.apply_due_closes(None);
    state.reassembler.close_all(&mut state.events);
    state.forward();
    state.sink.finish();
    state.check_counters();
    let summary = RunSummary {
        counters: state.last_counters,
        streams_closed: state.streams_closed,
        undecodable_records: state.undecodable,
        max_rss_kib: status_kib("VmHWM:"),
        rss_anon_kib: status_kib("RssAnon:"),
        cpu_ms: cpu_ms(),
    };
    internal_events::capture_stopped(
        &summary.counters,
        summary.streams_closed,
        summary.max_rss_kib,
    );
    Ok(summary)
}

impl Loop<'_> {
    /// Reads the data ring in batches of [`DRAIN_BATCH`], forwarding after each: a producer
    /// that refills the ring as fast as it is read must not pile up events in memory.
    fn drain_data(&mut self) {
        loop {
            let mut batch = Vec::with_capacity(DRAIN_BATCH);
            {
                let ring = self.data.get_mut();
                while batch.len() < DRAIN_BATCH {
                    let Some(item) = ring.next() else { break };
                    batch.push(decode_data(&item));
                }
            }
            if batch.is_empty() {
                break;
            }
            for decoded in batch {
                match decoded {
                    Ok(record) => {
                        if self.plaintext.as_mut().is_none_or(|p| p.admit(&record)) {
                            self.reassembler.push(record, &mut self.events);
                        }
                    }
                    Err(error) => {
                        self.undecodable += 1;
                        self.metrics
                            .undecodable_records
                            .store(self.undecodable, Ordering::Relaxed);
                        internal_events::record_undecodable("data", &error, self.undecodable);
                    }
                }
            }
            self.forward();
        }
        if let Some(plaintext) = &self.plaintext {
            self.metrics.set_plaintext(&plaintext.stats);
        }
    }

    fn drain_control(&mut self) {
        let mut records = Vec::new();
        let ring = self.control.get_mut();
        while let Some(item) = ring.next() {
            match decode_control(&item) {
                Ok(record) => records.push(record),
                Err(error) => {
                    self.undecodable += 1;
                    internal_events::record_undecodable("control", &error, self.undecodable);
                }
            }
        }
        let mut inspect_now = HashSet::new();
        let now = Instant::now();
        for record in records {
            match record {
                ControlRecord::Exec { pid } => {
                    // The executable and its loader are mapped already; libraries come next.
                    inspect_now.insert(pid);
                    for delay in EXEC_RESCAN_DELAYS {
                        self.rescans.entry(now + delay).or_default().push(pid);
                    }
                }
                ControlRecord::LibrariesChanged { pid } => {
                    inspect_now.insert(pid);
                }
                ControlRecord::Exit { pid } => {
                    inspect_now.remove(&pid);
                    self.attacher.process_exited(pid);
                    if let Some(plaintext) = self.plaintext.as_mut() {
                        plaintext.exited(pid);
                    }
                    self.closes
                        .push_back((now + CLOSE_GRACE, PendingClose::Process(pid)));
                }
                ControlRecord::ConnShutdown { pid, conn } => {
                    self.close_later(now, pid, conn, CloseReason::Shutdown)
                }
                ControlRecord::ConnFd { pid, conn, fd } => {
                    if let Some(plaintext) = self.plaintext.as_mut() {
                        plaintext.tls_fd(pid, fd);
                    }
                    if let Some(addresses) = sockets::lookup(pid, fd) {
                        self.sink.connection_addresses(pid, conn, addresses);
                    }
                }
                ControlRecord::ConnFree { pid, conn } => {
                    if let Some(plaintext) = self.plaintext.as_mut() {
                        plaintext.closed(pid, conn);
                    }
                    self.close_later(now, pid, conn, CloseReason::Free)
                }
            }
        }
        for pid in inspect_now {
            if let Some(process) = self.scanner.inspect(pid) {
                self.consider(&process);
            }
        }
        self.forward();
    }

    fn close_later(&mut self, now: Instant, pid: u32, conn: u64, reason: CloseReason) {
        if let Some(id) = self.reassembler.current(pid, conn) {
            self.closes
                .push_back((now + CLOSE_GRACE, PendingClose::Conn(id, reason)));
        }
    }

    /// Applies the closes whose grace period ended (all of them when `now` is `None`).
    fn apply_due_closes(&mut self, now: Option<Instant>) {
        while let Some((due, _)) = self.closes.front() {
            if now.is_some_and(|now| *due > now) {
                break;
            }
            let (_, close) = self.closes.pop_front().expect("peeked");
            match close {
                PendingClose::Conn(id, reason) => {
                    self.reassembler.close_id(id, reason, &mut self.events)
                }
                PendingClose::Process(pid) => {
                    self.reassembler.process_exited(pid, &mut self.events);
                    self.forward();
                    self.sink.process_exited(pid);
                }
            }
        }
        self.forward();
    }

    fn run_due_rescans(&mut self, now: Instant) {
        let later = self.rescans.split_off(&now);
        let due = std::mem::replace(&mut self.rescans, later);
        let pids: HashSet<u32> = due.into_values().flatten().collect();
        for pid in pids {
            if let Some(process) = self.scanner.inspect(pid) {
                self.consider(&process);
            }
        }
    }

    fn apply_full_scan(&mut self, processes: Vec<ProcessInfo>) {
        let mut live = HashSet::new();
        for process in &processes {
            live.extend(process.candidates.iter().map(|c| c.key));
            self.consider(process);
        }
        self.attacher.retain_files(&live);
    }

    fn consider(&mut self, process: &ProcessInfo) {
        let selected = process.pid != std::process::id() && self.selector.matches(process);
        self.attacher.attach_process(process, selected);
        if let Some(plaintext) = self.plaintext.as_mut() {
            plaintext.consider(process);
        }
    }

    fn forward(&mut self) {
        for event in self.events.drain(..) {
            if matches!(event, StreamEvent::Closed { .. }) {
                self.streams_closed += 1;
                self.metrics
                    .streams_closed
                    .store(self.streams_closed, Ordering::Relaxed);
            }
            self.sink.consume(event);
        }
    }

    fn check_counters(&mut self) {
        let now = CaptureCounters::read(&self.counters_map);
        let (events, bytes, control) = now.drops_since(&self.last_counters);
        internal_events::capture_dropped(events, bytes, control);
        self.metrics.set_capture(&now);
        let (files, open) = (self.attacher.probed_files(), self.reassembler.connections());
        self.metrics
            .probed_files
            .store(files as u64, Ordering::Relaxed);
        self.metrics
            .open_connections
            .store(open as u64, Ordering::Relaxed);
        tracing::debug!(
            connections = self.reassembler.connections(),
            probed_files = self.attacher.probed_files(),
            events = now.events,
            "capture progress"
        );
        self.last_counters = now;
    }
}

/// Registers a ring buffer with the reactor, for readiness only.
fn register(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, CaptureError> {
    // SAFETY: the ring buffer owns its map fd, returns the same fd for its whole life, and the
    // AsyncFd owns the ring buffer, so the fd stays open while registered.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| CaptureError::Io(std::io::Error::other(e.to_string())))
}

fn scan_all(scanner: &ProcScanner) -> Vec<ProcessInfo> {
    scanner
        .pids()
        .into_iter()
        .filter_map(|pid| scanner.inspect(pid))
        .collect()
}

fn write_ready_file(
    path: &std::path::Path,
    probed_files: usize,
    metrics: Option<std::net::SocketAddr>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::json!({
        "pid": std::process::id(),
        "probed_files": probed_files,
        "metrics": metrics.map(|a| a.to_string()),
    });
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(tmp, path)
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, which stamps the records.
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// A clock's current time in ns.
pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CPU time of this process (user + system), in milliseconds.
fn cpu_ms() -> u64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// A memory figure of this process from /proc/self/status (`VmHWM:`, `RssAnon:`), in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
