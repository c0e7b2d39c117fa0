//! Checks, before anything is loaded, that this kernel and these privileges can work, so the
//! agent can say what is missing instead of failing with a bare EPERM from the bpf syscall.

use std::path::{Path, PathBuf};

/// What the agent needs and did not find.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The process lacks capabilities needed to load programs and read other processes.
    #[error(
        "missing capabilities: {missing}. The agent loads eBPF programs and reads other \
         processes' memory maps: run it as root, or grant these capabilities (Kubernetes: \
         securityContext.capabilities.add)"
    )]
    Capabilities { missing: String },
    /// The kernel has no uprobe support (CONFIG_UPROBES / CONFIG_UPROBE_EVENTS).
    #[error(
        "this kernel has no uprobe support: {path} is missing. A kernel built with \
         CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y is needed"
    )]
    NoUprobes { path: PathBuf },
}

/// Capabilities the agent uses, with their numbers from linux/capability.h.
/// CAP_SYS_PTRACE is what /proc/PID/maps and /proc/PID/root of other users' processes need.
const NEEDED: [(&str, u32); 3] = [("CAP_BPF", 39), ("CAP_PERFMON", 38), ("CAP_SYS_PTRACE", 19)];
/// CAP_SYS_ADMIN covers BPF and PERFMON on kernels before 5.8 and still works after.
const CAP_SYS_ADMIN: u32 = 21;

/// Outcome of the checks that do not stop the agent.
#[derive(Debug, Default)]
pub struct PreflightReport {
    /// Missing optional kernel features, for one warning each.
    pub warnings: Vec<String>,
}

/// Runs every check. `sysfs` is normally `/sys`.
pub fn check(sysfs: &Path) -> Result<PreflightReport, PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    check_capabilities(&status)?;
    let uprobe_pmu = sysfs.join("bus/event_source/devices/uprobe");
    if !uprobe_pmu.exists() {
        return Err(PreflightError::NoUprobes { path: uprobe_pmu });
    }
    let mut report = PreflightReport::default();
    let btf = sysfs.join("kernel/btf/vmlinux");
    if !btf.exists() {
        // The programs use no CO-RE relocation, so they load without kernel BTF.
        report.warnings.push(format!(
            "{} is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF); the TLS probes \
             do not need it, but later Go TLS support will",
            btf.display()
        ));
    }
    Ok(report)
}

/// Checks CapEff from the text of /proc/self/status.
fn check_capabilities(status: &str) -> Result<(), PreflightError> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| effective & (1u64 << bit) != 0;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(name, bit)| {
            let covered_by_admin = matches!(*name, "CAP_BPF" | "CAP_PERFMON") && has(CAP_SYS_ADMIN);
            !has(*bit) && !covered_by_admin
        })
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Capabilities {
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_capabilities_pass() {
        assert!(check_capabilities("CapEff:\t000001ffffffffff\n").is_ok());
    }

    #[test]
    fn no_capabilities_name_every_missing_one() {
        let error = check_capabilities("CapEff:\t0000000000000000\n").unwrap_err();
        let text = error.to_string();
        for name in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let bits = [CAP_SYS_ADMIN, 19]
            .iter()
            .fold(0u64, |acc, bit| acc | 1 << bit);
        assert!(check_capabilities(&format!("CapEff:\t{bits:016x}\n")).is_ok());
    }

    #[test]
    fn a_sysfs_without_the_uprobe_pmu_is_refused() {
        if check_capabilities(&std::fs::read_to_string("/proc/self/status").unwrap()).is_err() {
            eprintln!("skipping: not privileged, the capability check comes first");
            return;
        }
        let empty = tempfile::tempdir().unwrap();
        let error = check(empty.path()).unwrap_err();
        assert!(matches!(error, PreflightError::NoUprobes { .. }));
        assert!(error.to_string().contains("uprobe"));
    }
}
