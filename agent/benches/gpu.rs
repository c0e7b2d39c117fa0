//! The GPU sampler's cost: one `GpuSampler::sample()` at 8 GPUs and 200 compute processes (25
//! per GPU, 4 per pod, one process-utilisation sample each per interval, as the driver gives
//! about one per process per read), through nvml-wrapper and the fake libnvidia-ml of
//! tests/fake-nvml (a release build, in `target/fake-nvml`). Then the CPU per second of
//! sampling at the default 1 s interval: the thread CPU time of one `sample()` / 1 s.
//!
//! The fake answers from memory, so this is the agent's own cost (wrapper, allocation,
//! integration); a real driver adds its ioctls on top. Each PID -> pod lookup reads and parses
//! this process's /proc/self/cgroup, as the agent reads /proc/PID/cgroup, so a lookup costs
//! what it does in the agent; the sampler caches them per running process. Scripting the next interval's samples is
//! not timed. Run: `cargo bench -p tokenmeter-agent --bench gpu`.

#[path = "../tests/gpu/fake.rs"]
mod fake;

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tokenmeter_agent::attribution::{gpu::GpuSampler, Workload};

use fake::Fake;

const GPUS: u32 = 8;
const PROCESSES_PER_GPU: u32 = 25;
const INTERVAL_US: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000;

fn pid(gpu: u32, process: u32) -> u32 {
    10_000 + gpu * 100 + process
}

/// 8 GPUs of 25 processes, 4 per pod; pod uids are UUID-long strings.
fn script(fake: &Fake) -> HashMap<u32, String> {
    let mut pods = HashMap::new();
    for g in 0..GPUS {
        let uuid = format!("GPU-{g:08x}-0000-0000-0000-000000000000");
        let device = fake.add_device(&uuid, "NVIDIA H100 80GB HBM3", 0, 500_000);
        let processes: Vec<(u32, u64)> = (0..PROCESSES_PER_GPU)
            .map(|p| (pid(g, p), u64::from(p + 1) << 28))
            .collect();
        fake.set_processes(device, &processes);
        for p in 0..PROCESSES_PER_GPU {
            let pod = (g * PROCESSES_PER_GPU + p) / 4;
            pods.insert(pid(g, p), format!("{pod:08x}-1111-2222-3333-444444444444"));
        }
    }
    pods
}

/// One sample per process, at the end of the interval ending at `end`.
fn push_interval(fake: &Fake, end: u64) {
    let push = fake.sample_pusher();
    for g in 0..GPUS {
        for p in 0..PROCESSES_PER_GPU {
            // SAFETY: the fake's documented signature.
            let rc = unsafe { push(g as c_int, pid(g, p), end, 1 + p, 1, 0, 0) };
            debug_assert_eq!(rc, 0);
        }
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bench(c: &mut Criterion) {
    let fake = Fake::load(&fake::build(true));
    let pods = script(&fake);
    let mut sampler = GpuSampler::open(&fake.config()).expect("the fake opens");
    let lookups = Cell::new(0u64);
    let mut pod_of = |pid: u32| {
        lookups.set(lookups.get() + 1);
        Workload::of_process(std::process::id())?;
        pods.get(&pid).cloned()
    };
    let mut now = T0;
    sampler.sample(now, &mut pod_of);

    // What the cache saves: the first interval looks every process up, later ones none.
    now += INTERVAL_US;
    push_interval(&fake, now);
    let before = thread_cpu();
    sampler.sample(now, &mut pod_of);
    let first = thread_cpu() - before;
    let first_lookups = lookups.replace(0);

    // Thread CPU per sample over a fixed run, for the ratio.
    let rounds = 2_000;
    let mut cpu = Duration::ZERO;
    for _ in 0..rounds {
        now += INTERVAL_US;
        push_interval(&fake, now);
        let before = thread_cpu();
        sampler.sample(now, &mut pod_of);
        cpu += thread_cpu() - before;
    }
    let per_sample = cpu / rounds;
    assert_eq!(
        sampler.pods().len(),
        (GPUS * PROCESSES_PER_GPU / 4) as usize
    );
    println!(
        "gpu sampler, {GPUS} GPUs x {PROCESSES_PER_GPU} processes: {:.1} us CPU per sample(); \
         CPU per second at a 1 s interval: {:.4} % ({:.2e} CPU-s/s); \
         the first interval with {first_lookups} PID lookups: {:.1} us; \
         later: {} lookups in {rounds} samples",
        per_sample.as_secs_f64() * 1e6,
        per_sample.as_secs_f64() * 100.0,
        per_sample.as_secs_f64(),
        first.as_secs_f64() * 1e6,
        lookups.get(),
    );

    c.bench_function("gpu_sample/8_gpus_200_processes", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                now += INTERVAL_US;
                push_interval(&fake, now);
                let start = Instant::now();
                sampler.sample(now, &mut pod_of);
                timed += start.elapsed();
            }
            timed
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
