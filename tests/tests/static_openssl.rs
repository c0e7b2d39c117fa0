//! Executables that link OpenSSL statically: with their symbol table they are metered like a
//! shared libssl (the probes go on the executable itself); stripped, they cannot be, and the
//! agent says so in one line naming the file instead of staying silent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokenmeter_tests::agent::{Agent, AgentOptions};
use tokenmeter_tests::fixtures::{self, Certs};
use tokenmeter_tests::{e2e_prelude, wait};

/// `fixtures/tls_loop.c` linked statically against Debian's libssl.a and libcrypto.a.
fn build_static(out_dir: &Path) -> PathBuf {
    let out = out_dir.join("tls_static");
    let mut gcc = Command::new("gcc");
    gcc.args(["-O2", "-static", "-w"])
        .arg(fixtures::fixture("tls_loop.c"))
        .args(["-lssl", "-lcrypto", "-lpthread", "-o"])
        .arg(&out);
    wait::run(&mut gcc, Duration::from_secs(180)).assert_success("gcc -static tls_loop.c");
    out
}

fn run_loop(binary: &Path, certs: &Certs) -> u32 {
    let mut child = Command::new(binary)
        .arg("--cert")
        .arg(&certs.cert)
        .arg("--key")
        .arg(&certs.key)
        .args(["--size", "64", "--iterations", "20000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the static TLS loop");
    let pid = child.id();
    let status = wait::wait_child(&mut child, Duration::from_secs(120)).expect("the loop finished");
    assert!(status.success(), "{} failed", binary.display());
    pid
}

#[test]
fn a_static_openssl_is_metered_with_symbols_and_named_when_stripped() {
    let Some(_guard) =
        e2e_prelude("a_static_openssl_is_metered_with_symbols_and_named_when_stripped")
    else {
        return;
    };
    let dir = fixtures::tempdir("static-openssl");
    let with_symbols = build_static(dir.path());
    let stripped = dir.path().join("tls_stripped");
    std::fs::copy(&with_symbols, &stripped).unwrap();
    wait::run(
        Command::new("strip").arg(&stripped),
        Duration::from_secs(60),
    )
    .assert_success("strip");
    let certs = Certs::generate();

    let agent = Agent::start(AgentOptions::default());
    let metered = run_loop(&with_symbols, &certs);
    let unmetered = run_loop(&stripped, &certs);
    let run = agent.stop();
    run.assert_clean_exit();
    assert!(
        !run.streams_of(metered).is_empty(),
        "the static build with symbols was not captured:\n{}",
        run.stderr
    );
    assert!(run.streams_of(unmetered).is_empty());
    let named: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("statically with its symbols stripped"))
        .collect();
    assert_eq!(
        named.len(),
        1,
        "one line for the stripped file:\n{}",
        run.stderr
    );
    assert!(
        named[0].contains("tls_stripped") && named[0].contains("OpenSSL"),
        "{}",
        named[0]
    );
}
