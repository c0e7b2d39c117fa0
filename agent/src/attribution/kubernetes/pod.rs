//! What the agent keeps of a pod: the few fields records and tenant rules use, taken from the
//! API's Pod object once per change rather than per record.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod as ApiPod;
use serde::Serialize;

/// A pod of this node, as the API server described it last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: Option<String>,
    pub service_account: Option<String>,
    /// The workload that owns the pod: (`deployment`, `checkout`), (`statefulset`, `vllm`), ...
    pub workload: Option<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Container name by container id (the 64 hex digits of `containerd://<id>`).
    pub containers: BTreeMap<String, String>,
}

/// The pod's fields a usage record carries (`k8s.*` attributes); labels and annotations only
/// those the configuration lists, so an export does not grow with every label of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodAttributes {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `deployment`, `statefulset`, `daemonset`, `replicaset`, `job`, `cronjob`, or the owner's
    /// kind in lower case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Pod {
    /// From the API object; `None` without a uid (never the case for a stored pod).
    pub fn from_api(pod: &ApiPod) -> Option<Pod> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let statuses = pod.status.as_ref().into_iter().flat_map(|status| {
            let regular = status.container_statuses.iter().flatten();
            let init = status.init_container_statuses.iter().flatten();
            regular.chain(init)
        });
        let containers = statuses
            .filter_map(|c| {
                let id = c.container_id.as_deref()?;
                let id = id.rsplit_once("://").map_or(id, |(_, id)| id);
                Some((id.to_string(), c.name.clone()))
            })
            .collect();
        let workload = meta
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.controller == Some(true))
            .map(|owner| workload_of(&owner.kind, &owner.name, &labels));
        Some(Pod {
            uid,
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            service_account: spec.and_then(|s| s.service_account_name.clone()),
            workload,
            labels,
            annotations: meta.annotations.clone().unwrap_or_default(),
            containers,
        })
    }

    /// The record's view of this pod, for the container with this id.
    pub fn attributes(
        &self,
        container_id: Option<&str>,
        labels: &[String],
        annotations: &[String],
    ) -> PodAttributes {
        let pick = |from: &BTreeMap<String, String>, keys: &[String]| {
            keys.iter()
                .filter_map(|k| Some((k.clone(), from.get(k)?.clone())))
                .collect()
        };
        PodAttributes {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            container: container_id.and_then(|id| self.containers.get(id).cloned()),
            service_account: self.service_account.clone(),
            workload_kind: self.workload.as_ref().map(|(kind, _)| kind.clone()),
            workload_name: self.workload.as_ref().map(|(_, name)| name.clone()),
            labels: pick(&self.labels, labels),
            annotations: pick(&self.annotations, annotations),
        }
    }
}

/// The workload behind a controller owner. A ReplicaSet made by a Deployment is named
/// `<deployment>-<pod-template-hash>` and the pod carries that hash as a label, so the
/// Deployment's name is exact, not guessed; a Job made by a CronJob is `<cronjob>-<number>`.
fn workload_of(kind: &str, name: &str, labels: &BTreeMap<String, String>) -> (String, String) {
    if kind == "ReplicaSet" {
        if let Some(hash) = labels.get("pod-template-hash") {
            if let Some(deployment) = name.strip_suffix(&format!("-{hash}")) {
                return ("deployment".into(), deployment.into());
            }
        }
    }
    if kind == "Job" {
        if let Some((cronjob, n)) = name.rsplit_once('-') {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.len() >= 8 {
                return ("cronjob".into(), cronjob.into());
            }
        }
    }
    (kind.to_ascii_lowercase(), name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_pod(json: serde_json::Value) -> ApiPod {
        serde_json::from_value(json).expect("a Pod")
    }

    #[test]
    fn reads_the_fields_records_use_from_a_pod_object() {
        let pod = api_pod(serde_json::json!({
            "metadata": {
                "name": "search-agent-7c9f-abcde", "namespace": "search", "uid": "u-1",
                "labels": {"team": "search", "pod-template-hash": "7c9f"},
                "annotations": {"tokenmeter.io/org": "acme"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "search-agent-7c9f", "uid": "rs", "controller": true}]
            },
            "spec": {"nodeName": "node-a", "serviceAccountName": "agent", "containers": []},
            "status": {"containerStatuses": [{"name": "main", "containerID": "containerd://abc",
                "image": "x", "imageID": "", "ready": true, "restartCount": 0}]}
        }));
        let pod = Pod::from_api(&pod).unwrap();
        assert_eq!(
            pod.workload,
            Some(("deployment".into(), "search-agent".into()))
        );
        assert_eq!(pod.node.as_deref(), Some("node-a"));
        let attributes = pod.attributes(Some("abc"), &["team".into(), "missing".into()], &[]);
        assert_eq!(attributes.container.as_deref(), Some("main"));
        assert_eq!(attributes.labels.len(), 1);
        assert_eq!(attributes.service_account.as_deref(), Some("agent"));
    }

    #[test]
    fn a_bare_pod_has_no_workload_labels_or_containers() {
        let pod = Pod::from_api(&api_pod(serde_json::json!({
            "metadata": {"name": "debug", "namespace": "default", "uid": "u-2"}
        })))
        .unwrap();
        assert_eq!((pod.workload, pod.labels.len()), (None, 0));
        assert!(Pod::from_api(&api_pod(serde_json::json!({"metadata": {"name": "x"}}))).is_none());
    }

    #[test]
    fn owners_name_their_workload() {
        let none = BTreeMap::new();
        let cases = [
            ("StatefulSet", "vllm", ("statefulset", "vllm")),
            ("Job", "report-29012345", ("cronjob", "report")),
            ("Job", "migrate-1", ("job", "migrate-1")),
            ("ReplicaSet", "orphan-abc", ("replicaset", "orphan-abc")),
        ];
        for (kind, name, (want_kind, want_name)) in cases {
            assert_eq!(
                workload_of(kind, name, &none),
                (want_kind.to_string(), want_name.to_string())
            );
        }
    }
}
