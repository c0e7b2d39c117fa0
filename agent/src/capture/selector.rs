//! The selector: which processes are metered. Processes outside it get no probe at all when
//! the selector restricts anything (probes are then attached per selected process).

use regex::Regex;

use super::discovery::ProcessInfo;
use crate::config::SelectorConfig;

/// Compiled form of [`SelectorConfig`].
#[derive(Clone, Debug, Default)]
pub struct Selector {
    names: Vec<Regex>,
    exes: Vec<Regex>,
    cgroup_prefixes: Vec<String>,
}

impl Selector {
    /// Compiles a validated configuration.
    pub fn new(config: &SelectorConfig) -> Result<Self, regex::Error> {
        Ok(Self {
            names: config
                .comm
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            exes: config
                .exe
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            cgroup_prefixes: config.cgroup_prefix.clone(),
        })
    }

    /// True when every process is metered.
    pub fn selects_all(&self) -> bool {
        self.names.is_empty() && self.exes.is_empty() && self.cgroup_prefixes.is_empty()
    }

    /// Whether `process` is metered.
    pub fn matches(&self, process: &ProcessInfo) -> bool {
        let by_identity = (self.names.is_empty() && self.exes.is_empty())
            || self.names.iter().any(|r| r.is_match(&process.comm))
            || process
                .exe
                .as_ref()
                .and_then(|p| p.to_str())
                .is_some_and(|exe| self.exes.iter().any(|r| r.is_match(exe)));
        let by_cgroup = self.cgroup_prefixes.is_empty()
            || process.cgroup.as_deref().is_some_and(|cgroup| {
                self.cgroup_prefixes
                    .iter()
                    .any(|prefix| under(cgroup, prefix))
            });
        by_identity && by_cgroup
    }
}

/// `cgroup` is `prefix` or below it (path components, not string prefixes: `/a/b` is not
/// under `/a/bc`).
fn under(cgroup: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    cgroup == prefix
        || prefix.is_empty()
        || cgroup
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(comm: &str, exe: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: comm.into(),
            exe: Some(exe.into()),
            cgroup: Some(cgroup.into()),
            candidates: vec![],
        }
    }

    fn selector(comm: &[&str], exe: &[&str], cgroup: &[&str]) -> Selector {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Selector::new(&SelectorConfig {
            comm: strings(comm),
            exe: strings(exe),
            cgroup_prefix: strings(cgroup),
        })
        .unwrap()
    }

    #[test]
    fn empty_selector_takes_everything() {
        let s = selector(&[], &[], &[]);
        assert!(s.selects_all());
        assert!(s.matches(&process("bash", "/bin/bash", "/")));
    }

    #[test]
    fn comm_or_exe_patterns_select() {
        let s = selector(&["^curl$"], &["/node$"], &[]);
        assert!(!s.selects_all());
        assert!(s.matches(&process("curl", "/usr/bin/curl", "/")));
        assert!(s.matches(&process("MainThread", "/usr/bin/node", "/")));
        assert!(!s.matches(&process("python3", "/usr/bin/python3.11", "/")));
    }

    #[test]
    fn cgroup_prefixes_follow_path_components() {
        let s = selector(&[], &[], &["/kubepods.slice/pod-a"]);
        assert!(s.matches(&process("x", "/x", "/kubepods.slice/pod-a")));
        assert!(s.matches(&process("x", "/x", "/kubepods.slice/pod-a/ctr")));
        assert!(!s.matches(&process("x", "/x", "/kubepods.slice/pod-ab")));
    }

    #[test]
    fn identity_and_cgroup_must_both_match() {
        let s = selector(&["^python"], &[], &["/kubepods"]);
        assert!(s.matches(&process("python3", "/p", "/kubepods/a")));
        assert!(!s.matches(&process("python3", "/p", "/system.slice")));
        assert!(!s.matches(&process("curl", "/c", "/kubepods/a")));
    }
}
