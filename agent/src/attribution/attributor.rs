//! The attribution stage of a record: the node, the pod's metadata and the tenant, added to a
//! record the worker built. One directory lookup and a few map lookups per record; the serving
//! pod's tokens are added up for its tokens per GPU-second.

use std::sync::{atomic::Ordering, Arc};

use super::{
    kubernetes::{KubernetesConfig, PodAttributes, PodDirectory},
    Identity, PodTokens, Tenant, TenantResolver,
};
use crate::http::Role;
use crate::{record::UsageRecord, telemetry::AgentMetrics};

/// Cheap to clone: the GPU reporter holds one to describe the pods it reports on.
#[derive(Clone)]
pub struct Attributor {
    pods: PodDirectory,
    tenants: TenantResolver,
    node: Option<String>,
    labels: Vec<String>,
    annotations: Vec<String>,
    tokens: PodTokens,
    metrics: Arc<AgentMetrics>,
}

impl Attributor {
    pub fn new(
        kubernetes: &KubernetesConfig,
        pods: PodDirectory,
        tenants: TenantResolver,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        Self {
            pods,
            tenants,
            node: kubernetes.node_name(),
            labels: kubernetes.pod_labels.clone(),
            annotations: kubernetes.pod_annotations.clone(),
            tokens: PodTokens::default(),
            metrics,
        }
    }

    /// This node's name.
    pub fn node(&self) -> Option<&String> {
        self.node.as_ref()
    }

    /// A pod's record attributes (when the API described it) and its own tenant, by the
    /// client-side rules (its labels and annotations): for records about the pod itself.
    pub fn describe_pod(&self, uid: &str) -> (Option<PodAttributes>, Tenant) {
        let pod = self.pods.get(uid);
        let attributes = pod
            .as_ref()
            .map(|p| p.attributes(None, &self.labels, &self.annotations));
        let tenant = self
            .tenants
            .resolve(Role::Client, pod.as_deref(), &Identity::default());
        (attributes, tenant)
    }

    /// The serving pods' tokens since the last call, by pod uid.
    pub fn take_pod_tokens(&self) -> std::collections::HashMap<String, u64> {
        self.tokens.take()
    }

    /// The serving pods' token counts, which the GPU reporter switches on while it runs.
    pub(super) fn pod_tokens(&self) -> &PodTokens {
        &self.tokens
    }

    /// Adds the node, the pod (when the API described it) and the tenant to a record.
    pub fn attribute(&self, record: &mut UsageRecord) {
        record.node_name.clone_from(&self.node);
        let pod = record
            .workload
            .pod_uid
            .as_deref()
            .and_then(|uid| self.pods.get(uid));
        if record.workload.pod_uid.is_some() && pod.is_none() {
            self.metrics
                .records_without_pod_metadata
                .fetch_add(1, Ordering::Relaxed);
        }
        record.pod = pod.as_ref().map(|pod| {
            pod.attributes(
                record.workload.container_id.as_deref(),
                &self.labels,
                &self.annotations,
            )
        });
        record.tenant = self
            .tenants
            .resolve(record.side, pod.as_deref(), &record.identity);
        // The serving pod's tokens, for its tokens per GPU-second.
        if let (Role::Server, Some(uid)) = (record.side, &record.workload.pod_uid) {
            let usage = &record.tokens.usage;
            let tokens = usage.input.unwrap_or(0) + usage.output.unwrap_or(0);
            self.tokens.add(uid, tokens);
        }
    }
}
