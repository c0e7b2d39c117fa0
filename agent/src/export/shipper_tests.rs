use std::sync::Mutex as StdMutex;

use super::*;
use crate::export::spool::SpoolConfig;

/// A destination that refuses the first `fail` deliveries and records the rest.
#[derive(Clone, Default)]
struct Receiver {
    fail: Arc<StdMutex<usize>>,
    got: Arc<StdMutex<Vec<String>>>,
    attempts: Arc<StdMutex<usize>>,
}

impl Destination for Receiver {
    fn deliver(&mut self, records: &[Vec<u8>]) -> Result<(), DeliveryError> {
        *self.attempts.lock().unwrap() += 1;
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(DeliveryError("receiver down".into()));
        }
        let mut got = self.got.lock().unwrap();
        got.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.clone()).unwrap()),
        );
        Ok(())
    }
}

fn fast() -> ShipperConfig {
    ShipperConfig {
        batch: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        drain_timeout: Duration::from_secs(2),
    }
}

fn spool(dir: &std::path::Path) -> Option<SpoolConfig> {
    Some(SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 256,
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"id\":\"r{i}\"}}")).collect()
}

#[test]
fn failed_deliveries_are_retried_until_everything_arrives_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    *receiver.fail.lock().unwrap() = 3;
    let metrics = Arc::new(AgentMetrics::default());
    let mut export = ShippedExport::start(
        Backlog::open(spool(dir.path()), 1 << 20),
        1 << 20,
        receiver.clone(),
        fast(),
        metrics.clone(),
    );
    for line in lines(10) {
        export.append(line.as_bytes());
    }
    export.flush();
    wait_for("10 records", || receiver.got.lock().unwrap().len() >= 10);
    export.stop();
    assert_eq!(
        *receiver.got.lock().unwrap(),
        lines(10),
        "once each, in order"
    );
    assert_eq!(metrics.export_failures.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.export_delivered.load(Ordering::Relaxed), 10);
}

#[test]
fn what_a_dead_receiver_did_not_take_is_delivered_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let dead = Receiver::default();
    *dead.fail.lock().unwrap() = usize::MAX;
    let mut export = ShippedExport::start(
        Backlog::open(spool(dir.path()), 1 << 20),
        1 << 20,
        dead.clone(),
        fast(),
        Arc::new(AgentMetrics::default()),
    );
    for line in lines(7) {
        export.append(line.as_bytes());
    }
    export.flush();
    wait_for("a failed attempt", || *dead.attempts.lock().unwrap() > 0);
    drop(export);
    assert!(dead.got.lock().unwrap().is_empty());

    let alive = Receiver::default();
    let export = ShippedExport::start(
        Backlog::open(spool(dir.path()), 1 << 20),
        1 << 20,
        alive.clone(),
        fast(),
        Arc::new(AgentMetrics::default()),
    );
    wait_for("the backlog", || alive.got.lock().unwrap().len() >= 7);
    drop(export);
    assert_eq!(*alive.got.lock().unwrap(), lines(7));
}

#[test]
fn a_spool_that_cannot_be_opened_falls_back_to_memory_and_still_delivers() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A regular file where the directory should be: the spool cannot be created.
    let receiver = Receiver::default();
    let metrics = Arc::new(AgentMetrics::default());
    let backlog = Backlog::open(spool(&file.path().join("spool")), 1 << 20);
    assert!(!backlog.is_disk());
    let mut export =
        ShippedExport::start(backlog, 1 << 20, receiver.clone(), fast(), metrics.clone());
    for line in lines(3) {
        export.append(line.as_bytes());
    }
    export.flush();
    wait_for("3 records", || receiver.got.lock().unwrap().len() >= 3);
    assert_eq!(metrics.spool_on_disk.load(Ordering::Relaxed), 0);
}

#[test]
fn backoff_grows_to_its_cap_with_jitter() {
    let mut backoff = Backoff::new(&ShipperConfig {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        ..fast()
    });
    let waits: Vec<Duration> = (0..8).map(|_| backoff.next()).collect();
    assert!(waits[0] >= Duration::from_millis(80) && waits[0] <= Duration::from_millis(120));
    assert!(waits[2] >= Duration::from_millis(320), "{waits:?}");
    assert!(
        waits.iter().all(|w| *w <= Duration::from_millis(1200)),
        "{waits:?}"
    );
    backoff.reset();
    assert!(backoff.next() <= Duration::from_millis(120));
}
