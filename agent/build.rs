//! Builds the eBPF object (`agent-ebpf`) with the nightly toolchain and bpf-linker, so that a
//! plain `cargo build -p tokenmeter-agent` produces an agent with its programs embedded.
//! Run `cargo xtask setup` once on a fresh machine to install what this needs.

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["metadata", "--format-version=1", "--no-deps"])
        .output()
        .context("running `cargo metadata`")?;
    let metadata: String = String::from_utf8(metadata.stdout)?;
    // The eBPF crate sits next to this one; its manifest directory is what aya-build watches.
    let root_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("agent-ebpf");
    if !metadata.contains("tokenmeter-ebpf") {
        return Err(anyhow!("tokenmeter-ebpf is not in the workspace"));
    }
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "tokenmeter-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs failed; run `cargo xtask setup` to install the nightly rust-src and bpf-linker they need")
}
