//! Kubernetes-shaped cgroup v2 directories made by a test, with processes moved into them, to
//! check that the agent attributes traffic to the pod and container the kubelet would have
//! named. Removed (processes moved back to the root first) on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::wait::poll_until;

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, on hybrid hosts, `/sys/fs/cgroup/unified`).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
    })
}

/// A pod's container cgroup under the systemd driver's layout.
pub struct PodCgroup {
    root: PathBuf,
    /// Directories created, outermost first.
    created: Vec<PathBuf>,
    pub pod_uid: String,
    pub container_id: String,
}

impl PodCgroup {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
    pub fn create(pod_uid: &str, container_id: &str) -> PodCgroup {
        let uid_ = pod_uid.replace('-', "_");
        let parts = [
            "kubepods.slice".to_string(),
            "kubepods-burstable.slice".to_string(),
            format!("kubepods-burstable-pod{uid_}.slice"),
            format!("cri-containerd-{container_id}.scope"),
        ];
        Self::at(&parts, pod_uid, container_id)
    }

    /// Any layout (an unknown one too): `parts` are the directories below the cgroup2 root,
    /// outermost first; `pod_uid` and `container_id` are what the test expects to be read.
    pub fn at(parts: &[String], pod_uid: &str, container_id: &str) -> PodCgroup {
        let root = cgroup2_root().expect("cgroup v2 is mounted");
        let mut dir = root.clone();
        let mut created = Vec::new();
        for part in parts {
            dir.push(part.as_str());
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        PodCgroup {
            root,
            created,
            pod_uid: pod_uid.to_string(),
            container_id: container_id.to_string(),
        }
    }

    fn leaf(&self) -> &Path {
        self.created
            .last()
            .expect("the container cgroup was created")
    }

    /// `program` run inside the container's cgroup from its first instruction: a shell moves
    /// itself in, then execs it (add the program's arguments to the returned command).
    pub fn command(&self, program: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$TOKENMETER_CGROUP_PROCS\" && exec \"$@\"")
            .arg("in-pod")
            .arg(program)
            .env("TOKENMETER_CGROUP_PROCS", self.leaf().join("cgroup.procs"));
        cmd
    }

    /// Moves a process (all its threads) into the container's cgroup.
    pub fn adopt(&self, pid: u32) {
        std::fs::write(self.leaf().join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.leaf().display()));
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Move whatever is left back to the root, then remove the directories innermost first.
        if let Ok(procs) = std::fs::read_to_string(self.leaf().join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        for dir in self.created.iter().rev() {
            let _ = poll_until(Duration::from_secs(5), || std::fs::remove_dir(dir).ok());
        }
    }
}
