//! The GPU sampler's cost: one `GpuSampler::sample()` at 8 GPUs and 200 compute processes (25
//! per GPU, 4 per pod, one process-utilisation sample each per interval, as the driver gives
//! about one per process per read), through nvml-wrapper and the fake libnvidia-ml of
//! tests/fake-nvml (a release build, in `target/fake-nvml`). Then the CPU per second of
//! sampling at the default 1 s interval: the thread CPU time of one `sample()` / 1 s.
//!
//! The fake answers from memory, so this is the agent's own cost (wrapper, allocation,
//! integration); a real driver adds its ioctls on top. Scripting the next interval's samples is
//! not timed. Run: `cargo bench -p tokenmeter-agent --bench gpu`.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tokenmeter_agent::attribution::gpu::{GpuConfig, GpuSampler};

const GPUS: u32 = 8;
const PROCESSES_PER_GPU: u32 = 25;
const INTERVAL_US: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000;

fn build_fake() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = workspace.join("target/fake-nvml");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "tokenmeter-fake-nvml",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo to build tests/fake-nvml");
    assert!(status.success(), "building tests/fake-nvml failed");
    target.join("release/libfake_nvml.so")
}

/// The fake's script functions (see tests/fake-nvml's crate documentation).
struct Script {
    push_sample:
        unsafe extern "C" fn(c_int, c_uint, c_ulonglong, c_uint, c_uint, c_uint, c_uint) -> c_int,
}

fn sym<T: Copy>(lib: *mut c_void, name: &CStr) -> T {
    // SAFETY: a handle from dlopen and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(lib, name.as_ptr()) };
    assert!(!sym.is_null(), "{name:?} missing from the fake");
    assert_eq!(size_of::<T>(), size_of::<*mut c_void>());
    // SAFETY: T is the symbol's function pointer type.
    unsafe { std::mem::transmute_copy(&sym) }
}

/// 8 GPUs of 25 processes; pod uids are UUID-long strings.
fn script(library: &Path) -> (Script, HashMap<u32, String>) {
    let path = CString::new(library.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    assert!(!lib.is_null(), "dlopen {}", library.display());
    let reset: unsafe extern "C" fn() = sym(lib, c"fake_nvml_reset");
    let add: unsafe extern "C" fn(*const c_char, *const c_char, c_int, c_uint) -> c_int =
        sym(lib, c"fake_nvml_add_device");
    let set: unsafe extern "C" fn(c_int, *const c_uint, *const c_ulonglong, c_uint) -> c_int =
        sym(lib, c"fake_nvml_set_processes");
    let mut pods = HashMap::new();
    // SAFETY (all calls below): the documented signatures, NUL-terminated strings, arrays of
    // the given length.
    unsafe { reset() };
    for g in 0..GPUS {
        let uuid = CString::new(format!("GPU-{g:08x}-0000-0000-0000-000000000000")).unwrap();
        let device = unsafe { add(uuid.as_ptr(), c"NVIDIA H100 80GB HBM3".as_ptr(), 0, 500_000) };
        let pids: Vec<c_uint> = (0..PROCESSES_PER_GPU).map(|p| pid(g, p)).collect();
        let memory: Vec<c_ulonglong> = pids.iter().map(|p| u64::from(*p) << 20).collect();
        assert_eq!(
            unsafe { set(device, pids.as_ptr(), memory.as_ptr(), PROCESSES_PER_GPU) },
            0
        );
        for &p in &pids {
            pods.insert(p, format!("{:08x}-1111-2222-3333-444444444444", p / 4));
        }
    }
    let push_sample = sym(lib, c"fake_nvml_push_sample");
    (Script { push_sample }, pods)
}

fn pid(gpu: u32, process: u32) -> u32 {
    10_000 + gpu * 100 + process
}

impl Script {
    /// One sample per process in the interval ending at `end`.
    fn push_interval(&self, end: u64) {
        for g in 0..GPUS {
            for p in 0..PROCESSES_PER_GPU {
                // SAFETY: the documented signature.
                let rc = unsafe { (self.push_sample)(g as c_int, pid(g, p), end, 1 + p, 1, 0, 0) };
                debug_assert_eq!(rc, 0);
            }
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
    let library = build_fake();
    let (script, pods) = script(&library);
    let config = GpuConfig {
        library_path: Some(library),
        ..Default::default()
    };
    let mut sampler = GpuSampler::open(&config).expect("the fake opens");
    let mut pod_of = |pid: u32| pods.get(&pid).cloned();
    let mut now = T0;
    sampler.sample(now, &mut pod_of);

    // Thread CPU per sample over a fixed run, for the ratio.
    let rounds = 2_000;
    let mut cpu = Duration::ZERO;
    for _ in 0..rounds {
        now += INTERVAL_US;
        script.push_interval(now);
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
         CPU per second at a 1 s interval: {:.4} % ({:.2e} CPU-s/s)",
        per_sample.as_secs_f64() * 1e6,
        per_sample.as_secs_f64() * 100.0,
        per_sample.as_secs_f64(),
    );

    c.bench_function("gpu_sample/8_gpus_200_processes", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                now += INTERVAL_US;
                script.push_interval(now);
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
