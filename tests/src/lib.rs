//! End-to-end harness for tokenmeter: the real agent binary, real eBPF, real TLS peers.
//!
//! The tests in `tests/` start a TLS server ([`server::Server`], `fixtures/tls_server.py`),
//! run the agent ([`agent::Agent`]), drive clients against the server ([`clients`]) and compare
//! what the agent captured ([`agent::CapturedStream`]) with what the peers say they sent and
//! received ([`expect`]). Nothing waits with a fixed sleep: readiness is a file that appears,
//! polled with a deadline ([`wait`]).
//!
//! Every test needs root (uprobes, bpf). [`e2e_prelude`] skips with a printed reason when not
//! root, except under CI (`CI=true`), where it fails: these tests must never skip silently there.

pub mod agent;
pub mod cgroups;
pub mod clients;
pub mod expect;
pub mod fixtures;
pub mod go;
pub mod held;
pub mod kube;
pub mod llm;
pub mod otlp;
pub mod procmem;
pub mod server;
pub mod wait;

use std::sync::{Mutex, MutexGuard};

/// Serialises the end-to-end tests of one test binary (two agents at once would see each
/// other's events); CI also runs them with `--test-threads=1`.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the per-binary test lock for the duration of one test.
pub struct E2eGuard {
    _lock: MutexGuard<'static, ()>,
}

/// Whether the environment says it is a CI run (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// Call first in every test: `let Some(_guard) = e2e_prelude("name") else { return };`.
///
/// Returns `None` (after printing why) when the test cannot run because this is not root;
/// panics instead when running in CI.
pub fn e2e_prelude(test: &str) -> Option<E2eGuard> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        let why = format!("{test}: needs root for uprobes and bpf(2) (euid is {euid})");
        if in_ci() {
            panic!("{why}; CI=true, so this end-to-end test must run, not skip");
        }
        eprintln!("SKIPPED {why}");
        return None;
    }
    let lock = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Some(E2eGuard { _lock: lock })
}

/// A nonce unique to this test process and call, for request paths (`?nonce=`).
pub fn nonce(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{nanos:x}-{n}", std::process::id())
}
