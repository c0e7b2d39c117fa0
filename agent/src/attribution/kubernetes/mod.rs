//! Pod metadata from the Kubernetes API: a pod's name, namespace, owner workload, labels and
//! annotations, for the records of its processes and for the tenant rules. The cgroup gives
//! the pod's uid ([`super::Workload`]); this directory turns the uid into the rest. Without API
//! access the agent keeps working with uid and container id, and says so once.

mod config;
mod directory;
mod pod;
mod watch;

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

pub use config::{KubernetesConfig, KubernetesMode};
pub use directory::PodDirectory;
pub use pod::{Pod, PodAttributes};

use crate::telemetry::AgentMetrics;

/// Starts watching this node's pods, if the configuration and the environment allow; the
/// directory fills as the API answers (and stays empty without it).
pub fn start(config: &KubernetesConfig, metrics: Arc<AgentMetrics>) -> PodDirectory {
    let directory = PodDirectory::new(Duration::from_secs(config.deleted_pod_grace_secs));
    if let Err(why) = config.api_wanted() {
        info!(
            "no Kubernetes API ({why}): records carry the pod uid and container id of their \
             cgroup, without pod names, labels or tenants from pods"
        );
        return directory;
    }
    let node = config.node_name();
    if node.is_none() {
        warn!(
            "no node name (kubernetes.node_name or NODE_NAME): watching every pod of the cluster"
        );
    }
    watch::spawn(config.clone(), node, directory.clone(), metrics);
    directory
}
