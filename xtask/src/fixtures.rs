//! What the demo and the benchmark take from `tests/fixtures/`, plus a throwaway certificate.
//!
//! The fixtures (TLS server, clients, the C benchmark loop) belong to the end-to-end tests and
//! are written there; the xtask only finds them by name, so a missing one can be reported (or
//! skipped) with its path instead of failing deep inside a command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util;

/// `tests/fixtures/<name>` when it exists.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = util::root().join("tests").join("fixtures").join(name);
    path.is_file().then_some(path)
}

/// `tests/fixtures/<name>`, or an error naming the missing file.
pub fn require(name: &str) -> Result<PathBuf> {
    find(name).with_context(|| {
        format!(
            "tests/fixtures/{name} is missing (it is part of the end-to-end tests); \
             check out a tree that has it"
        )
    })
}

/// A self-signed certificate and its key for `localhost`.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `cert.pem` and `key.pem` (RSA 2048, valid one day) into `dir` with openssl.
pub fn self_signed_cert(dir: &Path) -> Result<Cert> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    util::output(
        util::command("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "1"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .context("generating a self-signed certificate (is openssl installed? `cargo xtask setup --test-deps`)")?;
    Ok(Cert { cert, key })
}
