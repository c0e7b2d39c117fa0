//! The scripted libnvidia-ml of tests/fake-nvml, for the GPU tests (tests/gpu.rs) and benchmark
//! (benches/gpu.rs): built into `target/fake-nvml` (its own target directory, so that the cargo
//! running the tests holds no lock on it), loaded with `dlopen` (the same handle nvml-wrapper
//! gets from the same path, so one state), and scripted through its `fake_nvml_*` functions,
//! whose signatures are in that crate's documentation.

// Each user takes what it needs.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tokenmeter_agent::attribution::gpu::GpuConfig;

/// Builds the fake (debug or release) and returns the library's path.
pub fn build(release: bool) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = workspace.join("target/fake-nvml");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "tokenmeter-fake-nvml",
            "--target-dir",
        ])
        .arg(&target);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo to build tests/fake-nvml");
    assert!(status.success(), "building tests/fake-nvml failed");
    let profile = if release { "release" } else { "debug" };
    target.join(profile).join("libfake_nvml.so")
}

/// The debug build, once per test process.
fn debug_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build(false))
}

/// The loaded fake. Its state is one per process: tests take it in turn through
/// [`Fake::take`].
pub struct Fake {
    lib: *mut c_void,
    path: PathBuf,
    _turn: Option<MutexGuard<'static, ()>>,
}

impl Fake {
    /// The debug build, reset, for this test alone until dropped.
    pub fn take() -> Fake {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fake = Fake::load(debug_library());
        fake._turn = Some(turn);
        fake
    }

    /// `library`, loaded and reset.
    pub fn load(library: &Path) -> Fake {
        let path = CString::new(library.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; the library has no initialisers beyond Rust's.
        let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!lib.is_null(), "dlopen {}", library.display());
        let fake = Fake {
            lib,
            path: library.to_owned(),
            _turn: None,
        };
        let reset: unsafe extern "C" fn() = fake.sym(c"fake_nvml_reset");
        // SAFETY: the documented signature.
        unsafe { reset() };
        fake
    }

    /// A config that loads this fake.
    pub fn config(&self) -> GpuConfig {
        GpuConfig {
            library_path: Some(self.path.clone()),
            ..Default::default()
        }
    }

    fn sym<T: Copy>(&self, name: &CStr) -> T {
        // SAFETY: a handle from dlopen and a NUL-terminated name.
        let sym = unsafe { libc::dlsym(self.lib, name.as_ptr()) };
        assert!(!sym.is_null(), "{name:?} missing from the fake");
        assert_eq!(size_of::<T>(), size_of::<*mut c_void>());
        // SAFETY: T is the symbol's function pointer type (the crate documentation's).
        unsafe { std::mem::transmute_copy(&sym) }
    }

    /// `mig`: 0 not MIG-capable, 1 MIG enabled, 2 MIG-capable but disabled.
    pub fn add_device(&self, uuid: &str, name: &str, mig: c_int, power_mw: c_uint) -> c_int {
        let f: unsafe extern "C" fn(*const c_char, *const c_char, c_int, c_uint) -> c_int =
            self.sym(c"fake_nvml_add_device");
        let (uuid, name) = (CString::new(uuid).unwrap(), CString::new(name).unwrap());
        // SAFETY: the documented signature, NUL-terminated strings.
        let index = unsafe { f(uuid.as_ptr(), name.as_ptr(), mig, power_mw) };
        assert!(index >= 0);
        index
    }

    pub fn set_utilization(&self, device: c_int, gpu: c_uint, memory: c_uint) {
        let f: unsafe extern "C" fn(c_int, c_uint, c_uint) -> c_int =
            self.sym(c"fake_nvml_set_utilization");
        // SAFETY: the documented signature.
        assert_eq!(unsafe { f(device, gpu, memory) }, 0);
    }

    /// (pid, used bytes) per running compute process.
    pub fn set_processes(&self, device: c_int, processes: &[(u32, u64)]) {
        let f: unsafe extern "C" fn(c_int, *const c_uint, *const c_ulonglong, c_uint) -> c_int =
            self.sym(c"fake_nvml_set_processes");
        let pids: Vec<c_uint> = processes.iter().map(|p| p.0).collect();
        let memory: Vec<c_ulonglong> = processes.iter().map(|p| p.1).collect();
        let n = processes.len() as c_uint;
        // SAFETY: the documented signature; both arrays hold n elements.
        assert_eq!(unsafe { f(device, pids.as_ptr(), memory.as_ptr(), n) }, 0);
    }

    /// A function that pushes one process-utilisation sample
    /// `(device, pid, timestamp_us, sm, mem, enc, dec)`, for loops.
    pub fn sample_pusher(
        &self,
    ) -> unsafe extern "C" fn(c_int, c_uint, c_ulonglong, c_uint, c_uint, c_uint, c_uint) -> c_int
    {
        self.sym(c"fake_nvml_push_sample")
    }

    pub fn push_sample(&self, device: c_int, pid: u32, timestamp_us: u64, sm: c_uint) {
        let push = self.sample_pusher();
        // SAFETY: the documented signature.
        assert_eq!(unsafe { push(device, pid, timestamp_us, sm, 0, 0, 0) }, 0);
    }

    /// `function` answers `code` on `device` (-1: everywhere) from now on; code 0 clears it.
    pub fn fail(&self, function: &str, device: c_int, code: c_uint) {
        let f: unsafe extern "C" fn(*const c_char, c_int, c_uint) -> c_int =
            self.sym(c"fake_nvml_fail");
        let function = CString::new(function).unwrap();
        // SAFETY: the documented signature.
        assert_eq!(unsafe { f(function.as_ptr(), device, code) }, 0);
    }

    pub fn lose_device(&self, device: c_int) {
        let f: unsafe extern "C" fn(c_int) -> c_int = self.sym(c"fake_nvml_lose_device");
        // SAFETY: the documented signature.
        assert_eq!(unsafe { f(device) }, 0);
    }

    /// Calls of `function` on `device` (-1: in all).
    pub fn calls(&self, function: &str, device: c_int) -> u64 {
        let f: unsafe extern "C" fn(*const c_char, c_int) -> c_ulonglong =
            self.sym(c"fake_nvml_calls");
        let function = CString::new(function).unwrap();
        // SAFETY: the documented signature.
        unsafe { f(function.as_ptr(), device) }
    }
}
