//! The shipper: records are appended to the backlog by the record worker and delivered to a
//! destination by a thread of their own, so a slow or dead receiver never holds up metering.
//! A batch leaves the backlog only once the destination acknowledged it; a failed batch is
//! retried, the same records with the same ids, with exponential backoff and jitter, for as
//! long as it takes (billing data is not given up on; the backlog's size bound is what limits
//! an outage, and what it drops is counted). Delivery is therefore at least once.

use std::{
    sync::{atomic::Ordering, Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

use super::{
    backlog::{Backlog, MemoryQueue},
    spool::{Cursor, Spool},
    RecordSink,
};
use crate::{record::UsageRecord, telemetry::AgentMetrics};

/// Where the shipper delivers records (JSON lines of [`UsageRecord`]).
pub trait Destination: Send + 'static {
    /// Delivers a batch; `Ok` means the receiver has all of it.
    fn deliver(&mut self, records: &[Vec<u8>]) -> Result<(), DeliveryError>;
}

/// Why a batch was not delivered (it will be tried again).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// The shipper's tuning.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    /// Records per delivery.
    pub batch: usize,
    /// First wait after a failed delivery; doubled per failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a stopping agent keeps delivering what is left (a disk spool keeps the rest).
    pub drain_timeout: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            batch: 512,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

struct State {
    backlog: Backlog,
    /// Bumped when the backlog is replaced: an acknowledgement for the old one is void.
    generation: u64,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    metrics: Arc<AgentMetrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking holder cannot leave the backlog half-updated in a way that loses data
        // (every step is one call), so a poisoned lock is taken over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing half: a [`RecordSink`] that appends to the backlog; the shipper thread
/// delivers.
pub struct ShippedExport {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    drain_timeout: Duration,
    max_bytes: u64,
}

impl ShippedExport {
    /// Starts delivering the backlog, first what a previous run left in it.
    pub fn start(
        backlog: Backlog,
        max_bytes: u64,
        destination: impl Destination,
        config: ShipperConfig,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        metrics
            .spool_on_disk
            .store(u64::from(backlog.is_disk()), Ordering::Relaxed);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                backlog,
                generation: 0,
                stopping: false,
            }),
            wake: Condvar::new(),
            metrics,
        });
        let drain_timeout = config.drain_timeout;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("tokenmeter-export".into())
                .spawn(move || ship(&shared, destination, &config))
                .expect("spawning the export thread")
        };
        Self {
            shared,
            thread: Some(thread),
            drain_timeout,
            max_bytes,
        }
    }

    /// Appends one record (a JSON line); durable only after `flush`.
    pub fn append(&mut self, line: &[u8]) {
        let mut state = self.shared.lock();
        match state.backlog.append(line) {
            Ok(0) => {}
            Ok(dropped) => self.dropped(dropped, &state.backlog),
            Err(e) => {
                self.spool_failed(&mut state, &e.to_string());
                let _ = state.backlog.append(line);
            }
        }
    }

    /// Makes the appended records durable and wakes the shipper. Returns the spool's end
    /// after the flush (`None` without a disk spool).
    pub fn flush(&mut self) -> Option<Cursor> {
        let mut state = self.shared.lock();
        if let Err(e) = state.backlog.flush() {
            self.spool_failed(&mut state, &e.to_string());
        }
        self.shared
            .metrics
            .spool_bytes
            .store(state.backlog.bytes(), Ordering::Relaxed);
        self.shared.wake.notify_one();
        match &state.backlog {
            Backlog::Disk(spool) => Some(spool.end()),
            Backlog::Memory(_) => None,
        }
    }

    /// Runs `f` on the disk spool, if there is one (to replay or pin it).
    pub fn with_spool<T>(&mut self, f: impl FnOnce(&mut Spool) -> T) -> Option<T> {
        match &mut self.shared.lock().backlog {
            Backlog::Disk(spool) => Some(f(spool)),
            Backlog::Memory(_) => None,
        }
    }

    fn dropped(&self, dropped: u64, backlog: &Backlog) {
        let total = self
            .shared
            .metrics
            .spool_dropped
            .fetch_add(dropped, Ordering::Relaxed)
            + dropped;
        error!(
            dropped,
            total,
            bytes = backlog.bytes(),
            "the export backlog is full: the oldest undelivered usage records were dropped \
             (is the receiver down? raise the spool size to ride out longer outages)"
        );
    }

    /// Replaces a failed disk spool with a memory queue; metering goes on.
    fn spool_failed(&self, state: &mut State, reason: &str) {
        if !state.backlog.is_disk() {
            return;
        }
        error!(
            reason,
            "the spool failed: from now on usage records wait in memory and are lost if the \
             agent stops before delivering them; records already on disk are delivered at the \
             next start"
        );
        state.backlog = Backlog::Memory(MemoryQueue::new(self.max_bytes));
        state.generation += 1;
        self.shared
            .metrics
            .spool_on_disk
            .store(0, Ordering::Relaxed);
        self.shared
            .metrics
            .spool_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the shipper after it delivered what it can within the drain timeout.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.flush();
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + self.drain_timeout + Duration::from_secs(1);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            // Stuck in a delivery: a disk spool keeps the records for the next start.
            warn!(
                "the export thread did not finish in time; undelivered records stay in the spool"
            );
        }
    }
}

impl RecordSink for ShippedExport {
    fn export(&mut self, record: &UsageRecord) {
        let line = serde_json::to_vec(record).expect("records serialise");
        self.append(&line);
    }

    fn export_gpu(&mut self, record: &crate::attribution::GpuUsageRecord) {
        let line = serde_json::to_vec(record).expect("records serialise");
        self.append(&line);
    }

    fn flush(&mut self) {
        ShippedExport::flush(self);
    }
}

impl Drop for ShippedExport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shipper thread: read a batch, deliver it, acknowledge it; back off on failure.
fn ship(shared: &Shared, mut destination: impl Destination, config: &ShipperConfig) {
    let metrics = &shared.metrics;
    let mut backoff = Backoff::new(config);
    let mut failing_since: Option<Instant> = None;
    let mut last_warning = Instant::now();
    let mut drain_deadline = None;
    loop {
        let (batch, generation) = {
            let mut state = shared.lock();
            if state.stopping && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + config.drain_timeout);
            }
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let batch = match state.backlog.read_batch(config.batch) {
                Ok(batch) => batch,
                Err(e) => {
                    error!(%e, "reading the spool failed; retrying");
                    state.backlog.rewind();
                    Default::default()
                }
            };
            metrics
                .spool_bytes
                .store(state.backlog.bytes(), Ordering::Relaxed);
            if batch.records.is_empty() {
                metrics.export_lag_ms.store(0, Ordering::Relaxed);
                if state.stopping {
                    return;
                }
                let _ = shared.wake.wait_timeout(state, Duration::from_secs(1));
                continue;
            }
            (batch, state.generation)
        };
        let started = Instant::now();
        let result = destination.deliver(&batch.records);
        metrics
            .export_last_delivery_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let mut state = shared.lock();
        match result {
            Ok(()) => {
                if state.generation == generation {
                    if let Err(e) = state.backlog.ack(batch.end) {
                        error!(%e, "acknowledging in the spool failed: these records may be sent again");
                    }
                }
                metrics
                    .export_delivered
                    .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                if let Some(since) = failing_since.take() {
                    info!(
                        outage_s = since.elapsed().as_secs(),
                        "usage records are delivered again"
                    );
                }
                backoff.reset();
            }
            Err(e) => {
                state.backlog.rewind();
                metrics.export_failures.fetch_add(1, Ordering::Relaxed);
                let since = *failing_since.get_or_insert(started);
                metrics
                    .export_lag_ms
                    .store(since.elapsed().as_millis() as u64, Ordering::Relaxed);
                if backoff.attempts == 0 || last_warning.elapsed() > Duration::from_secs(30) {
                    warn!(
                        error = %e,
                        failing_s = since.elapsed().as_secs(),
                        waiting_bytes = state.backlog.bytes(),
                        "delivering usage records failed; they stay in the backlog and are retried"
                    );
                    last_warning = Instant::now();
                }
                if state.stopping {
                    if !state.backlog.is_disk() {
                        error!(
                            bytes = state.backlog.bytes(),
                            "stopping with undelivered usage records and no spool: they are lost"
                        );
                    }
                    return;
                }
                let wait = backoff.next();
                let _ = shared.wake.wait_timeout(state, wait);
            }
        }
    }
}

/// Exponential backoff with +-20% jitter.
struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
    seed: u64,
}

impl Backoff {
    fn new(config: &ShipperConfig) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Self {
            initial: config.initial_backoff,
            max: config.max_backoff,
            attempts: 0,
            seed,
        }
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }

    fn next(&mut self) -> Duration {
        let base = self
            .initial
            .saturating_mul(1 << self.attempts.min(16))
            .min(self.max);
        self.attempts += 1;
        // xorshift: jitter needs no cryptographic quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + 0.4 * (self.seed % 1000) as f64 / 1000.0;
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
#[path = "shipper_tests.rs"]
mod tests;
