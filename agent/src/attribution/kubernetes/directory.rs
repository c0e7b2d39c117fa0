//! The pods of this node by uid, shared between the watch (which writes) and the record
//! worker (which reads once per record). A deleted pod stays for a grace period: the records of
//! its last calls are built after the API said it was gone.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use super::Pod;

/// A cheap, cloneable handle.
#[derive(Clone, Default)]
pub struct PodDirectory {
    inner: Arc<RwLock<Pods>>,
}

#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Entry>,
    grace: Duration,
}

struct Entry {
    pod: Arc<Pod>,
    deleted_at: Option<Instant>,
}

impl PodDirectory {
    pub fn new(deleted_pod_grace: Duration) -> Self {
        let directory = Self::default();
        directory.write().grace = deleted_pod_grace;
        directory
    }

    /// The pod with this uid, if the API described it (deleted pods within their grace too).
    pub fn get(&self, uid: &str) -> Option<Arc<Pod>> {
        let pods = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let entry = pods.by_uid.get(uid)?;
        let expired = entry
            .deleted_at
            .is_some_and(|at| at.elapsed() >= pods.grace);
        (!expired).then(|| entry.pod.clone())
    }

    /// Pods known, deleted ones in their grace period included.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A pod was added or changed.
    pub fn apply(&self, pod: Pod) {
        let mut pods = self.write();
        pods.expire(Instant::now());
        pods.by_uid.insert(
            pod.uid.clone(),
            Entry {
                pod: Arc::new(pod),
                deleted_at: None,
            },
        );
    }

    /// A pod was deleted: it is forgotten after the grace period.
    pub fn delete(&self, uid: &str) {
        let now = Instant::now();
        let mut pods = self.write();
        pods.expire(now);
        if let Some(entry) = pods.by_uid.get_mut(uid) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    /// A full list replaces what was known: pods missing from it were deleted while the
    /// watch was down.
    pub fn replace(&self, listed: Vec<Pod>) {
        let now = Instant::now();
        let mut pods = self.write();
        let listed: HashMap<String, Pod> = listed.into_iter().map(|p| (p.uid.clone(), p)).collect();
        for (uid, entry) in pods.by_uid.iter_mut() {
            if !listed.contains_key(uid) {
                entry.deleted_at.get_or_insert(now);
            }
        }
        for (uid, pod) in listed {
            pods.by_uid.insert(
                uid,
                Entry {
                    pod: Arc::new(pod),
                    deleted_at: None,
                },
            );
        }
        pods.expire(now);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Pods> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pods {
    fn expire(&mut self, now: Instant) {
        let grace = self.grace;
        self.by_uid.retain(|_, entry| {
            entry
                .deleted_at
                .is_none_or(|at| now.duration_since(at) < grace)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str) -> Pod {
        Pod {
            uid: uid.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn deleted_pods_stay_for_their_grace_period() {
        let directory = PodDirectory::new(Duration::from_millis(50));
        directory.apply(pod("a", "first"));
        directory.apply(pod("a", "renamed"));
        assert_eq!(directory.get("a").unwrap().name, "renamed");
        directory.delete("a");
        assert!(
            directory.get("a").is_some(),
            "still there right after deletion"
        );
        std::thread::sleep(Duration::from_millis(60));
        directory.apply(pod("b", "other"));
        assert!(
            directory.get("a").is_none(),
            "forgotten after the grace period"
        );
        assert_eq!(directory.len(), 1);
    }

    #[test]
    fn a_relist_marks_missing_pods_deleted() {
        let directory = PodDirectory::new(Duration::ZERO);
        directory.apply(pod("a", "gone"));
        directory.replace(vec![pod("b", "new")]);
        assert!(directory.get("a").is_none());
        assert_eq!(directory.get("b").unwrap().name, "new");
    }
}
