//! `cargo xtask setup`: everything a fresh machine needs before the agent builds.
//!
//! The agent's build.rs compiles the eBPF programs with the nightly toolchain (`-Z build-std=core`
//! needs its rust-src) and links them with bpf-linker. bpf-linker must load the very LLVM that
//! nightly rustc emits bitcode for; the system LLVM is too old. So bpf-linker is built against the
//! nightly's own `libLLVM.so.<ver>-rust-<release>`, found through a prefix directory of symlinks,
//! and rebuilt whenever a nightly update replaces that library (the binary then no longer runs).
//! Every step checks before it acts, so running setup again is cheap and changes nothing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{self, Steps};
use crate::{debian, npm, python};

/// `cargo xtask setup [--test-deps]`.
pub fn run(test_deps: bool) -> Result<()> {
    let mut steps = Steps::new("setup", if test_deps { 9 } else { 5 });
    nightly_toolchain(&mut steps)?;
    rust_src(&mut steps)?;
    let llvm = nightly_llvm(&mut steps)?;
    let relinked = llvm_prefix(&mut steps, &llvm)?;
    bpf_linker(&mut steps, &llvm, relinked)?;
    if test_deps {
        debian::install_test_packages(&mut steps)?;
        python::ensure_test_env(&mut steps)?;
        npm::ensure_reference_tokenizers(&mut steps)?;
    }
    Ok(())
}

fn rustup() -> std::process::Command {
    util::command("rustup")
}

fn nightly_rustc(args: &[&str]) -> Result<String> {
    util::output(rustup().args(["run", "nightly", "rustc"]).args(args))
}

fn nightly_toolchain(steps: &mut Steps) -> Result<()> {
    let step = steps.start("nightly toolchain");
    if let Ok(version) = nightly_rustc(&["--version"]) {
        step.ok(format!("already installed: {}", version.trim()));
        return Ok(());
    }
    util::run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .context("installing the nightly toolchain failed: check that static.rust-lang.org is reachable, then run `cargo xtask setup` again")?;
    let version = nightly_rustc(&["--version"])
        .context("nightly was installed but `rustup run nightly rustc --version` still fails")?;
    step.ok(format!("installed: {}", version.trim()));
    Ok(())
}

fn rust_src(steps: &mut Steps) -> Result<()> {
    let step = steps.start("nightly rust-src");
    let installed = util::output(rustup().args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        step.ok("already installed");
        return Ok(());
    }
    util::run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("adding rust-src to nightly failed: check that static.rust-lang.org is reachable, then run `cargo xtask setup` again")?;
    step.ok("installed");
    Ok(())
}

/// The nightly's shared LLVM library and its major version.
struct NightlyLlvm {
    /// `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`; its file name is also its soname.
    library: PathBuf,
    major: u32,
}

impl NightlyLlvm {
    fn file_name(&self) -> &str {
        self.library
            .file_name()
            .and_then(|n| n.to_str())
            .expect("found by a UTF-8 file name")
    }
}

fn nightly_llvm(steps: &mut Steps) -> Result<NightlyLlvm> {
    let step = steps.start("nightly libLLVM");
    let sysroot = PathBuf::from(nightly_rustc(&["--print", "sysroot"])?.trim());
    let lib = sysroot.join("lib");
    let library = find_libllvm(&lib)?;
    let name = library.file_name().unwrap_or_default().to_string_lossy();
    let major = match major_from_file_name(&name) {
        Some(major) => major,
        None => major_from_rustc(&nightly_rustc(&["-vV"])?).with_context(|| {
            format!("cannot tell the LLVM major version from {name} or `rustc +nightly -vV`")
        })?,
    };
    step.ok(format!("LLVM {major}: {}", library.display()));
    Ok(NightlyLlvm { library, major })
}

/// The `libLLVM.so.<ver>-rust-<release>` file in a toolchain's lib directory (the real shared
/// object; `libLLVM-<major>-rust-*.so` next to it is only a linker script).
fn find_libllvm(lib: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    match found.pop() {
        Some(path) => Ok(path),
        None => bail!(
            "no libLLVM.so.*-rust-* in {}: this nightly ships no shared LLVM, so bpf-linker cannot \
             be built against it; try another nightly (`rustup toolchain install nightly`)",
            lib.display()
        ),
    }
}

/// 22 from `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn major_from_file_name(name: &str) -> Option<u32> {
    let version = name.strip_prefix("libLLVM.so.")?;
    version.split(['.', '-']).next()?.parse().ok()
}

/// 22 from the `LLVM version: 22.1.4` line of `rustc -vV`.
fn major_from_rustc(verbose_version: &str) -> Option<u32> {
    let line = verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))?;
    line.trim().split('.').next()?.parse().ok()
}

/// `$CARGO_HOME`, by default `~/.cargo`.
fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// The directory bpf-linker's build is pointed at with `LLVM_PREFIX`.
fn prefix_dir() -> Result<PathBuf> {
    Ok(cargo_home()?.join("bpf-llvm"))
}

/// Makes `<prefix>/lib` hold exactly two symlinks to the nightly's libLLVM: `libLLVM.so` (what
/// llvm-sys links) and the versioned name (the soname the built binary loads through its
/// runpath). Returns whether anything had to change, in which case an existing bpf-linker was
/// built against another library and must be rebuilt.
fn llvm_prefix(steps: &mut Steps, llvm: &NightlyLlvm) -> Result<bool> {
    let step = steps.start("LLVM prefix for bpf-linker");
    let lib = prefix_dir()?.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let wanted = ["libLLVM.so", llvm.file_name()];
    let mut changed = Vec::new();
    // Links left by an older nightly would let a stale bpf-linker load a library that is gone.
    for entry in std::fs::read_dir(&lib)?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") && !wanted.contains(&name.as_str()) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing the stale {}", entry.path().display()))?;
            changed.push(format!("removed {name}"));
        }
    }
    for name in wanted {
        let link = lib.join(name);
        if std::fs::read_link(&link).is_ok_and(|target| target == llvm.library) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)
                .with_context(|| format!("removing the stale {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&llvm.library, &link)
            .with_context(|| format!("creating the symlink {}", link.display()))?;
        changed.push(format!("linked {name}"));
    }
    if changed.is_empty() {
        step.ok(format!(
            "{} already points at the nightly's libLLVM",
            lib.display()
        ));
    } else {
        step.ok(format!("{}: {}", lib.display(), changed.join(", ")));
    }
    Ok(!changed.is_empty())
}

/// The bpf-linker release whose `llvm-21`..`llvm-23` features this recipe was verified with.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn bpf_linker(steps: &mut Steps, llvm: &NightlyLlvm, relinked: bool) -> Result<()> {
    let step = steps.start("bpf-linker");
    let installed = cargo_home()?.join("bin").join("bpf-linker");
    let reason = match util::output(util::command("bpf-linker").arg("--version")) {
        Ok(version) if !relinked => {
            step.ok(format!(
                "already installed: {}, linked to {}",
                version.trim(),
                llvm.file_name()
            ));
            return Ok(());
        }
        Ok(_) => "the LLVM symlinks changed, so the installed binary is stale".to_string(),
        Err(_) if !installed.exists() => "not installed".to_string(),
        Err(_) => match util::output(util::command(&installed).arg("--version")) {
            Ok(_) => bail!(
                "{} runs, but not from PATH: add {} to PATH (rustc looks bpf-linker up there)",
                installed.display(),
                installed.parent().unwrap_or(&installed).display()
            ),
            Err(err) => format!(
                "the installed binary does not run ({err:#}); the nightly's libLLVM probably changed"
            ),
        },
    };
    step.note(&format!(
        "building bpf-linker ({reason}); this takes 1-8 minutes"
    ));
    let prefix = prefix_dir()?;
    let mut cmd = util::cargo();
    cmd.env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", llvm.major));
    if installed.exists() {
        cmd.arg("--force");
    }
    util::run(&mut cmd).with_context(|| {
        format!(
            "building bpf-linker failed: check that crates.io is reachable and that {} points \
             at the nightly's libLLVM; if bpf-linker {BPF_LINKER_VERSION} has no `llvm-{}` \
             feature, the nightly moved to an LLVM it does not support yet",
            prefix.join("lib").display(),
            llvm.major
        )
    })?;
    let version =
        util::output(util::command("bpf-linker").arg("--version")).with_context(|| {
            format!(
                "bpf-linker was built but does not run from PATH: is {} on PATH?",
                installed.parent().unwrap_or(&installed).display()
            )
        })?;
    step.ok(format!("built {}", version.trim()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_library_name() {
        assert_eq!(
            major_from_file_name("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some(22)
        );
        assert_eq!(
            major_from_file_name("libLLVM-22-rust-1.97.0-nightly.so"),
            None
        );
    }

    #[test]
    fn llvm_major_from_rustc_verbose_version() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(major_from_rustc(vv), Some(22));
        assert_eq!(major_from_rustc("rustc 1.0.0"), None);
    }
}
