//! `setup --test-deps`: the Debian packages the end-to-end tests, the demo and the benchmark use.
//!
//! The tests drive real TLS peers (curl, Python's ssl, Node's static OpenSSL, BoringSSL, a C loop
//! built against libssl), and a fresh CI machine has none of them. Each package is checked with
//! `dpkg -s` first, so `apt-get update` runs only when something is actually missing.

use anyhow::{bail, Context, Result};

use crate::util::{self, Steps};

/// What the fixtures need: TLS clients and servers, headers and a compiler for the C loop,
/// BoringSSL as a second TLS library, util-linux (unshare, setpriv) and binutils (nm), whose
/// tools the end-to-end tests call.
const PACKAGES: &[&str] = &[
    "curl",
    "openssl",
    "libssl-dev",
    "gcc",
    "python3",
    "android-libboringssl-dev",
    "util-linux",
    "binutils",
    "python3-venv",
    "postgresql",
];

/// Installed when no `npm` is on PATH (Debian's nodejs does not include it).
const NPM_PACKAGE: &str = "npm";

/// Installed when no `node` is on PATH (any Node.js will do: a static OpenSSL is probed in the executable, a shared one in libssl).
const NODE_PACKAGE: &str = "nodejs";

pub fn install_test_packages(steps: &mut Steps) -> Result<()> {
    let step = steps.start("test packages (apt)");
    if !util::succeeds(util::command("dpkg").arg("--version")) {
        bail!(
            "dpkg not found: --test-deps installs Debian packages; on another system install \
             the equivalents of {} and nodejs by hand",
            PACKAGES.join(", ")
        );
    }
    let node_on_path = util::succeeds(util::command("node").arg("--version"));
    let mut wanted: Vec<&str> = PACKAGES.to_vec();
    if !node_on_path {
        wanted.push(NODE_PACKAGE);
    }
    if !util::succeeds(util::command("npm").arg("--version")) {
        wanted.push(NPM_PACKAGE);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if !missing.is_empty() {
        if !util::is_root() {
            bail!(
                "missing Debian packages {}: installing them needs root (run as root, or \
                 `sudo apt-get install {}`)",
                missing.join(", "),
                missing.join(" ")
            );
        }
        step.note(&format!("installing {}", missing.join(" ")));
        apt_get(&["update"])?;
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(&missing);
        apt_get(&args)?;
        if let Some(still) = missing.iter().find(|p| !is_installed(p)) {
            bail!("apt-get install succeeded but {still} is still not installed");
        }
    }
    for line in versions(&wanted)?.lines() {
        step.note(line);
    }
    if node_on_path {
        let node = util::output(util::command("node").arg("--version"))?;
        step.note(&format!("node {} (already on PATH)", node.trim()));
    }
    if missing.is_empty() {
        step.ok("all already installed");
    } else {
        step.ok(format!("installed {}", missing.join(", ")));
    }
    Ok(())
}

/// `dpkg -s` reports the package as installed (not merely known or left as config files).
fn is_installed(package: &str) -> bool {
    util::output(util::command("dpkg").args(["-s", package])).is_ok_and(|out| {
        out.lines()
            .any(|l| l.trim() == "Status: install ok installed")
    })
}

fn apt_get(args: &[&str]) -> Result<()> {
    let mut cmd = util::command("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    util::run(&mut cmd).with_context(|| {
        format!(
            "`{}` failed: check the apt sources and network, then run `cargo xtask setup \
             --test-deps` again",
            util::display(&cmd)
        )
    })
}

/// One `package version` line per package.
fn versions(packages: &[&str]) -> Result<String> {
    util::output(
        util::command("dpkg-query")
            .args(["-W", "-f=${Package} ${Version}\\n"])
            .args(packages),
    )
}
