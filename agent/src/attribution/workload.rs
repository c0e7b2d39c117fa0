//! Which pod and container a process runs in, from its cgroup path.
//!
//! The kubelet names cgroups after the pod's uid and the runtime after the container's id, in
//! two layouts (the systemd and the cgroupfs drivers) and a few runtime spellings:
//!
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
//!   (also `crio-<id>.scope`, `docker-<id>.scope`; guaranteed pods have no QoS level)
//! - cgroupfs: `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`
//!
//! The path comes from /proc/PID/cgroup: the cgroup v2 line (`0::`) when there is one, else
//! the first v1 line that names a pod.

use serde::Serialize;

/// A process's place in Kubernetes, as far as its cgroup tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// `k8s.pod.uid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// `container.id` (64 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `containerd`, `cri-o` or `docker`, when the cgroup name says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<&'static str>,
    /// `guaranteed`, `burstable` or `besteffort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<&'static str>,
    /// The cgroup path itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl Workload {
    /// Reads /proc/PID/cgroup; `None` when the process is gone.
    pub fn of_process(pid: u32) -> Option<Workload> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Some(Self::from_proc_cgroup(&text))
    }

    /// From the text of /proc/PID/cgroup.
    pub fn from_proc_cgroup(text: &str) -> Workload {
        let paths = text.lines().filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (hierarchy, _controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some((hierarchy == "0", path))
        });
        let mut v1_with_pod = None;
        for (v2, path) in paths {
            if v2 {
                return Self::from_path(path);
            }
            if v1_with_pod.is_none() && path.contains("kubepods") {
                v1_with_pod = Some(path);
            }
        }
        v1_with_pod.map(Self::from_path).unwrap_or_default()
    }

    /// From a cgroup path.
    pub fn from_path(path: &str) -> Workload {
        let mut workload = Workload {
            cgroup: Some(path.to_string()),
            ..Default::default()
        };
        if !path.contains("kubepods") {
            return workload;
        }
        workload.qos_class = Some("guaranteed");
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            let name = segment
                .strip_suffix(".slice")
                .or_else(|| segment.strip_suffix(".scope"))
                .unwrap_or(segment);
            for qos in ["besteffort", "burstable"] {
                if name == qos || name == format!("kubepods-{qos}") {
                    workload.qos_class = Some(qos);
                }
            }
            if let Some(uid) = pod_uid(name) {
                workload.pod_uid = Some(uid);
            } else if let Some((runtime, id)) = container(name) {
                workload.container_runtime = runtime;
                workload.container_id = Some(id.to_string());
            }
        }
        workload
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>` (systemd).
fn pod_uid(name: &str) -> Option<String> {
    let uid = name.rsplit_once("pod").map(|(_, uid)| uid)?;
    let uid = uid.replace('_', "-");
    let valid = uid.len() == 36
        && uid.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    valid.then_some(uid)
}

/// A container scope: `cri-containerd-<id>`, `crio-<id>`, `docker-<id>`, or a bare id.
fn container(name: &str) -> Option<(Option<&'static str>, &str)> {
    let (runtime, id) = if let Some(id) = name.strip_prefix("cri-containerd-") {
        (Some("containerd"), id)
    } else if let Some(id) = name.strip_prefix("crio-") {
        (Some("cri-o"), id)
    } else if let Some(id) = name.strip_prefix("docker-") {
        (Some("docker"), id)
    } else {
        (None, name)
    };
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some((runtime, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "4f1c2d3e-5a6b-7c8d-9e0f-a1b2c3d4e5f6";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_every_driver_and_runtime_layout() {
        let uid_ = UID.replace('-', "_");
        let cases = [
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                Some("burstable"),
                Some("containerd"),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"),
                Some("besteffort"),
                Some("cri-o"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/docker-{ID}.scope"),
                Some("guaranteed"),
                Some("docker"),
            ),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), Some("besteffort"), None),
            (format!("/kubepods/pod{UID}/{ID}"), Some("guaranteed"), None),
        ];
        for (path, qos, runtime) in cases {
            let w = Workload::from_path(&path);
            assert_eq!(w.pod_uid.as_deref(), Some(UID), "{path}");
            assert_eq!(w.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(w.qos_class, qos, "{path}");
            assert_eq!(w.container_runtime, runtime, "{path}");
        }
    }

    #[test]
    fn a_pod_cgroup_without_container_and_other_cgroups() {
        let w = Workload::from_path(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!((w.pod_uid.as_deref(), w.container_id), (Some(UID), None));
        let host = Workload::from_path("/system.slice/sshd.service");
        assert_eq!((host.pod_uid, host.qos_class), (None, None));
        assert_eq!(host.cgroup.as_deref(), Some("/system.slice/sshd.service"));
        // A conmon scope is not a container; a malformed uid is not a pod.
        let odd = Workload::from_path(&format!("/kubepods/podnot-a-uid/crio-conmon-{ID}.scope"));
        assert_eq!((odd.pod_uid, odd.container_id), (None, None));
    }

    #[test]
    fn prefers_the_v2_line_else_a_v1_line_with_a_pod() {
        let v2 = format!("12:memory:/x\n0::/kubepods/pod{UID}/{ID}\n");
        assert_eq!(
            Workload::from_proc_cgroup(&v2).container_id.as_deref(),
            Some(ID)
        );
        let v1 =
            format!("3:cpu:/\n2:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/\n");
        assert_eq!(
            Workload::from_proc_cgroup(&v1).pod_uid.as_deref(),
            Some(UID)
        );
        assert_eq!(Workload::from_proc_cgroup("garbage"), Workload::default());
    }
}
