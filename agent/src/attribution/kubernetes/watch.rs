//! The watch of this node's pods (`spec.nodeName=<node>`), on a thread and runtime of its
//! own so the capture loop never waits on the API server. kube-runtime's watcher lists, then
//! watches, re-lists when the watch is dropped or expires, and backs off on errors; this loop
//! turns its events into the directory and says once when the API fails and once when it
//! recovers.

use std::sync::{atomic::Ordering, Arc};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod as ApiPod;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        watcher::{self, Event},
        WatchStreamExt,
    },
    Api, Client, Config,
};
use tracing::{debug, info, warn};

use super::{KubernetesConfig, Pod, PodDirectory};
use crate::telemetry::AgentMetrics;

/// Runs until the process ends.
pub(super) fn spawn(
    config: KubernetesConfig,
    node: Option<String>,
    directory: PodDirectory,
    metrics: Arc<AgentMetrics>,
) {
    let spawned = std::thread::Builder::new()
        .name("tokenmeter-pods".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    warn!(%error, "cannot start the pod watch: records carry no pod metadata");
                    return;
                }
            };
            runtime.block_on(watch(config, node, directory, metrics));
        });
    if let Err(error) = spawned {
        warn!(%error, "cannot start the pod watch: records carry no pod metadata");
    }
}

async fn watch(
    config: KubernetesConfig,
    node: Option<String>,
    directory: PodDirectory,
    metrics: Arc<AgentMetrics>,
) {
    let client = match client(&config).await {
        Ok(client) => client,
        Err(error) => {
            warn!(
                error = format!("{error:#}"),
                "cannot configure the Kubernetes client: records carry the pod uid and container \
                 id of their cgroup only"
            );
            return;
        }
    };
    let mut selector = watcher::Config::default();
    if let Some(node) = &node {
        selector = selector.fields(&format!("spec.nodeName={node}"));
    }
    let mut events = watcher::watcher(Api::<ApiPod>::all(client), selector)
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<Pod>> = None;
    let mut failing = false;
    let mut synced_once = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                metrics.kubernetes_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    warn!(
                        %error,
                        "the watch of pods failed; retrying with backoff (records keep the pod \
                         uid and container id, and the last known metadata, meanwhile)"
                    );
                    failing = true;
                } else {
                    debug!(%error, "the watch of pods failed again");
                }
                continue;
            }
        };
        if failing {
            info!("the watch of pods works again");
            failing = false;
        }
        match event {
            Event::Init => listing = Some(Vec::new()),
            Event::InitApply(pod) => {
                if let (Some(listing), Some(pod)) = (listing.as_mut(), Pod::from_api(&pod)) {
                    listing.push(pod);
                }
            }
            Event::InitDone => {
                let pods = listing.take().unwrap_or_default();
                let count = pods.len();
                directory.replace(pods);
                if !synced_once {
                    info!(
                        pods = count,
                        node = node.as_deref().unwrap_or("(all)"),
                        "pod metadata synced"
                    );
                    synced_once = true;
                }
            }
            Event::Apply(pod) => {
                if let Some(pod) = Pod::from_api(&pod) {
                    directory.apply(pod);
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    directory.delete(uid);
                }
            }
        }
        metrics
            .pods_known
            .store(directory.len() as u64, Ordering::Relaxed);
    }
}

async fn client(config: &KubernetesConfig) -> anyhow::Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubernetes.kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
