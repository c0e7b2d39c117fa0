//! Export costs, as ratios within one run (the machine is shared and noisy):
//!
//! - spool: append + sync per record (no batching) against append of a 256-record burst and
//!   one sync (the record worker's group commit), per record;
//! - OTLP: records/s from `RecordSink::export` until the receiver acknowledged them all, and
//!   the agent process's CPU per 1,000 records, through the memory backlog and the disk spool,
//!   to a real collector (`rotel` with its blackhole exporter, from `target/pyenv`, or
//!   `$TOKENMETER_ROTEL`). Skipped with a message when rotel is not there.
//!
//! Run: `cargo bench -p tokenmeter-agent --bench export`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{atomic::Ordering, Arc};
use std::time::{Duration, Instant};

#[path = "support/record.rs"]
mod support;

use support::record;
use tokenmeter_agent::{
    export::{
        self,
        spool::{Spool, SpoolConfig},
        ExportConfig, ExportKind,
    },
    record::UsageRecord,
    telemetry::AgentMetrics,
};

fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn spool_cost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let line = serde_json::to_vec(&record(1)).expect("json");
    let mut spool = Spool::open(SpoolConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 16 << 20,
    })
    .expect("spool");
    let n = 2000;
    let started = Instant::now();
    for _ in 0..n {
        spool.append(&line).expect("append");
        spool.flush().expect("sync");
    }
    let each = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n / 256 + 1 {
        for _ in 0..256 {
            spool.append(&line).expect("append");
        }
        spool.flush().expect("sync");
    }
    let grouped = started.elapsed() / ((n / 256 + 1) * 256);
    println!(
        "spool, {} B records: sync per record {:.1} us/record; 256-record group commit {:.2} us/record ({:.0}x)",
        line.len(),
        each.as_secs_f64() * 1e6,
        grouped.as_secs_f64() * 1e6,
        each.as_secs_f64() / grouped.as_secs_f64()
    );
}

fn rotel_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOKENMETER_ROTEL") {
        return Some(PathBuf::from(path));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/lib");
    std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

struct Rotel(Child);

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_rotel(binary: &Path) -> (Rotel, u16) {
    let (grpc, http) = (free_port(), free_port());
    let dir = std::env::temp_dir();
    let child = Command::new(binary)
        .arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--exporter", "blackhole"])
        .arg("--pid-file")
        .arg(dir.join(format!("tm-bench-rotel-{grpc}.pid")))
        .arg("--log-file")
        .arg(dir.join(format!("tm-bench-rotel-{grpc}.log")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rotel");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(Instant::now() < deadline, "rotel did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Rotel(child), grpc)
}

fn otlp_throughput(endpoint: &str, spool_dir: Option<&Path>, n: u64) -> (f64, Duration) {
    let mut config = ExportConfig {
        kind: ExportKind::Otlp,
        spool_dir: spool_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    config.otlp.endpoint = Some(endpoint.to_string());
    config.otlp.metrics_interval_ms = Some(60_000);
    let metrics = Arc::new(AgentMetrics::default());
    let mut sink = export::build(&config, metrics.clone()).expect("otlp exporter");
    let records: Vec<UsageRecord> = (0..n).map(record).collect();
    let (cpu, started) = (cpu_time(), Instant::now());
    for chunk in records.chunks(256) {
        for r in chunk {
            sink.export(r);
        }
        sink.flush();
    }
    while metrics.export_delivered.load(Ordering::Relaxed) < n {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "export stalled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (elapsed, cpu) = (started.elapsed(), cpu_time() - cpu);
    drop(sink);
    (n as f64 / elapsed.as_secs_f64(), cpu * 1000 / n as u32)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    spool_cost();
    let Some(rotel) = rotel_binary() else {
        println!(
            "otlp: skipped (no rotel: run `cargo xtask setup --test-deps` or set TOKENMETER_ROTEL)"
        );
        return;
    };
    let (_rotel, port) = start_rotel(&rotel);
    let endpoint = format!("http://127.0.0.1:{port}");
    let n = 50_000;
    // Warm-up: connection, allocations.
    otlp_throughput(&endpoint, None, 2_000);
    let (memory_rate, memory_cpu) = otlp_throughput(&endpoint, None, n);
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk_rate, disk_cpu) = otlp_throughput(&endpoint, Some(dir.path()), n);
    println!(
        "otlp/grpc to rotel, {n} records: memory backlog {memory_rate:.0} records/s, \
         {:.1} ms CPU per 1000; disk spool {disk_rate:.0} records/s, {:.1} ms CPU per 1000",
        memory_cpu.as_secs_f64() * 1e3,
        disk_cpu.as_secs_f64() * 1e3
    );
}
