//! The cgroup v2 path of an eBPF cgroup id. `bpf_get_current_cgroup_id` is the inode number
//! of the process's cgroup directory, so a short-lived process that exited before the agent
//! read its /proc/PID/cgroup can still be attributed: the directory outlives it while the pod
//! runs. Lookups walk the cgroup2 mount on a miss and are cached, misses too.

use std::{
    num::NonZeroUsize,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use lru::LruCache;

/// Directories visited at most per lookup: a node has a few thousand cgroups; this bounds the
/// cost of a walk on a pathological one.
const MAX_WALK: usize = 50_000;

pub struct CgroupPaths {
    root: Option<PathBuf>,
    cache: LruCache<u64, Option<String>>,
}

impl CgroupPaths {
    /// Over the host's cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
    /// hosts), if there is one.
    pub fn new() -> Self {
        Self::with_root(cgroup2_mount())
    }

    pub fn with_root(root: Option<PathBuf>) -> Self {
        Self {
            root,
            cache: LruCache::new(NonZeroUsize::new(4096).expect("non-zero")),
        }
    }

    /// The path (as /proc/PID/cgroup writes it, from the mount's root) of cgroup `id`.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        let root = self.root.as_ref()?;
        if let Some(found) = self.cache.get(&id) {
            return found.clone();
        }
        let found = find(root, id).map(|dir| {
            let relative = dir.strip_prefix(root).unwrap_or(&dir);
            format!("/{}", relative.display())
        });
        self.cache.put(id, found.clone());
        found
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        Self::new()
    }
}

/// Breadth first: pods sit a few levels down, under kubepods first.
fn find(root: &Path, id: u64) -> Option<PathBuf> {
    if std::fs::metadata(root).ok()?.ino() == id {
        return Some(root.to_path_buf());
    }
    let mut queue = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut visited = 0;
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs: Vec<PathBuf> = Vec::new();
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            visited += 1;
            if meta.ino() == id {
                return Some(entry.path());
            }
            subdirs.push(entry.path());
        }
        subdirs.sort_by_key(|p| !p.to_string_lossy().contains("kubepods"));
        queue.extend(subdirs);
        if visited > MAX_WALK {
            return None;
        }
    }
    None
}

/// Where cgroup v2 is mounted, from /proc/self/mounts.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, path, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_directory_by_its_inode_and_caches_misses() {
        let root = tempfile::tempdir().unwrap();
        let uid = "4f1c2d3e_5a6b_7c8d_9e0f_a1b2c3d4e5f6";
        let leaf = root
            .path()
            .join("kubepods.slice/kubepods-burstable.slice")
            .join(format!(
                "kubepods-burstable-pod{uid}.slice/cri-containerd-abc.scope"
            ));
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::create_dir_all(root.path().join("system.slice/sshd.service")).unwrap();
        let id = std::fs::metadata(&leaf).unwrap().ino();
        let mut paths = CgroupPaths::with_root(Some(root.path().to_path_buf()));
        let path = paths.path_of(id).expect("found");
        assert!(path.starts_with("/kubepods.slice/") && path.ends_with("cri-containerd-abc.scope"));
        assert_eq!(
            super::super::Workload::from_path(&path).pod_uid.as_deref(),
            Some(&*uid.replace('_', "-"))
        );
        assert_eq!(paths.path_of(1), None);
        assert!(paths.cache.contains(&1), "a miss is cached");
        assert_eq!(CgroupPaths::with_root(None).path_of(id), None);
    }
}
