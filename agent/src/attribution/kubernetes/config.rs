//! `[kubernetes]` in the agent's configuration: whether and how pod metadata is watched, and
//! which of a pod's labels and annotations its records carry.

use std::path::PathBuf;

use serde::Deserialize;

/// When the Kubernetes API is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// When running in a cluster (`KUBERNETES_SERVICE_HOST`), or with a kubeconfig given
    /// (`kubeconfig` or `KUBECONFIG`).
    #[default]
    Auto,
    /// Always; a failure to reach the API is logged and retried.
    On,
    /// Never: records carry the pod uid and container id of the cgroup only.
    Off,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub mode: KubernetesMode,
    /// A kubeconfig file; without it the in-cluster service account (or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, to watch only its pods (`spec.nodeName`). Default: `NODE_NAME` (the
    /// chart sets it from the downward API).
    pub node_name: Option<String>,
    /// Pod labels copied into records as `k8s.pod.label.<key>`.
    pub pod_labels: Vec<String>,
    /// Pod annotations copied into records as `k8s.pod.annotation.<key>`.
    pub pod_annotations: Vec<String>,
    /// How long a deleted pod stays known, for the records of its last calls.
    pub deleted_pod_grace_secs: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            mode: KubernetesMode::Auto,
            kubeconfig: None,
            node_name: None,
            pod_labels: vec![
                "app.kubernetes.io/name".into(),
                "app.kubernetes.io/instance".into(),
            ],
            pod_annotations: Vec::new(),
            deleted_pod_grace_secs: 300,
        }
    }
}

impl KubernetesConfig {
    /// The node name: the configured one, else `NODE_NAME`.
    pub fn node_name(&self) -> Option<String> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|name| !name.is_empty())
    }

    /// Whether the API is to be used, and if not, why (for the one log line).
    pub fn api_wanted(&self) -> Result<(), &'static str> {
        match self.mode {
            KubernetesMode::Off => Err("kubernetes.mode is off"),
            KubernetesMode::On => Ok(()),
            KubernetesMode::Auto => {
                let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
                let kubeconfig =
                    self.kubeconfig.is_some() || std::env::var_os("KUBECONFIG").is_some();
                if in_cluster || kubeconfig {
                    Ok(())
                } else {
                    Err("not in a cluster and no kubeconfig given")
                }
            }
        }
    }
}
