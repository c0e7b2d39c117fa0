//! GPU usage records: each pod's GPU use over a report interval, as a record of its own that
//! travels with the usage records (the spool, the shipper, OTLP as `tokenmeter.gpu_usage`) so
//! the collector can price GPU time. The sampler integrates every `sample_interval`; every
//! `report_interval` the reporter takes each pod's growth since the last report. An interval's
//! id is derived from the node's boot, the pod and the interval's start, so a retry is the
//! same record; after a restart the sampler starts from zero and the intervals are new.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    gpu::{GpuSampler, PodGpuUsage, HOST_POD},
    kubernetes::PodAttributes,
    Attributor, Tenant, Workload,
};

/// Tokens of the server-side records per pod uid, since the last report: the numerator of
/// tokens per GPU-second. The attribution stage adds, the reporter takes. Counted only while a
/// reporter exists: without one nothing would ever take them.
#[derive(Clone, Default)]
pub(super) struct PodTokens {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    counting: Arc<AtomicBool>,
}

impl PodTokens {
    pub fn add(&self, pod_uid: &str, tokens: u64) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(pod_uid.to_string()).or_default() += tokens;
    }

    pub fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_counting(&self, on: bool) {
        self.counting.store(on, Ordering::Relaxed);
        if !on {
            self.take();
        }
    }
}

/// One pod's GPU use over one report interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuUsageRecord {
    /// Always `gpu_usage`: tells these apart from usage records in the spool.
    pub kind: &'static str,
    pub id: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub workload: Workload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodAttributes>,
    #[serde(skip_serializing_if = "Tenant::is_empty")]
    pub tenant: Tenant,
    pub gpu: GpuFigures,
}

/// The interval's figures (see `attribution::gpu` for how each is integrated).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuFigures {
    /// The product name of the pod's GPUs (the first one's, by uuid), e.g.
    /// `NVIDIA H100 80GB HBM3`: what GPU time is priced by.
    pub name: String,
    pub devices: Vec<String>,
    /// GPU time held, µs (summed over GPUs).
    pub time_us: u64,
    /// µs of full SM use.
    pub sm_util_us: u64,
    pub memory_byte_seconds: u64,
    pub energy_microjoules: u64,
    pub mig: bool,
    pub sm_unavailable: bool,
    /// Tokens of the pod's server-side records in the interval.
    pub tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_gpu_second: Option<f64>,
}

/// Turns the sampler's cumulative figures into per-interval records.
pub struct GpuReporter {
    boot_id: String,
    /// Describes the pods (metadata, tenant) and counts their tokens.
    attributor: Attributor,
    reported: BTreeMap<String, PodGpuUsage>,
    interval_start_ns: u64,
}

/// Without a reporter (the GPU thread ended: no NVML), the served tokens are no longer counted.
impl Drop for GpuReporter {
    fn drop(&mut self) {
        self.attributor.pod_tokens().set_counting(false);
    }
}

impl GpuReporter {
    pub fn new(attributor: Attributor, now_ns: u64) -> Self {
        attributor.pod_tokens().set_counting(true);
        Self {
            boot_id: crate::record::boot_id(),
            attributor,
            reported: BTreeMap::new(),
            interval_start_ns: now_ns,
        }
    }

    /// The records of the interval that ends now: one per pod whose figures grew. Pods the
    /// directory no longer knows are forgotten by the sampler once reported.
    pub fn report(&mut self, sampler: &mut GpuSampler, now_ns: u64) -> Vec<GpuUsageRecord> {
        let start = self.interval_start_ns;
        self.interval_start_ns = now_ns;
        let names: BTreeMap<String, String> = sampler
            .devices()
            .map(|d| (d.uuid.clone(), d.name.clone()))
            .collect();
        let mut tokens = self.attributor.take_pod_tokens();
        let mut records = Vec::new();
        let mut gone = Vec::new();
        for (uid, total) in sampler.pods() {
            let before = self.reported.get(uid).cloned().unwrap_or_default();
            let delta = PodGpuUsage {
                gpu_time_us: total.gpu_time_us - before.gpu_time_us,
                sm_percent_us: total.sm_percent_us - before.sm_percent_us,
                memory_byte_us: total.memory_byte_us - before.memory_byte_us,
                energy_nj: total.energy_nj - before.energy_nj,
                devices: total.devices.clone(),
                mig: total.mig,
                sm_unavailable: total.sm_unavailable,
            };
            let (pod, tenant) = if uid == HOST_POD {
                (None, Tenant::default())
            } else {
                self.attributor.describe_pod(uid)
            };
            if uid != HOST_POD && pod.is_none() && delta.gpu_time_us == 0 {
                gone.push(uid.clone());
            }
            if delta.gpu_time_us == 0 && delta.memory_byte_us == 0 {
                continue;
            }
            let pod_tokens = tokens.remove(uid).unwrap_or_default();
            let devices: Vec<String> = delta.devices.iter().cloned().collect();
            let name = devices
                .iter()
                .find_map(|uuid| names.get(uuid).cloned())
                .unwrap_or_default();
            records.push(GpuUsageRecord {
                kind: "gpu_usage",
                id: self.id(uid, start),
                start_time_unix_nano: start,
                end_time_unix_nano: now_ns,
                node_name: self.attributor.node().cloned(),
                workload: Workload {
                    pod_uid: (uid != HOST_POD).then(|| uid.clone()),
                    ..Default::default()
                },
                pod,
                tenant,
                gpu: GpuFigures {
                    name,
                    devices,
                    time_us: delta.gpu_time_us,
                    sm_util_us: delta.sm_util_us(),
                    memory_byte_seconds: u64::try_from(delta.memory_byte_us / 1_000_000)
                        .unwrap_or(u64::MAX),
                    energy_microjoules: u64::try_from(delta.energy_nj / 1_000).unwrap_or(u64::MAX),
                    mig: delta.mig,
                    sm_unavailable: delta.sm_unavailable,
                    tokens: pod_tokens,
                    tokens_per_gpu_second: delta.tokens_per_gpu_second(pod_tokens),
                },
            });
        }
        self.reported = sampler.pods().clone();
        for uid in gone {
            sampler.forget_pod(&uid);
            self.reported.remove(&uid);
        }
        records
    }

    fn id(&self, pod: &str, start_ns: u64) -> String {
        let mut hash = Sha256::new();
        hash.update(b"gpu_usage");
        hash.update(self.boot_id.as_bytes());
        hash.update(pod.as_bytes());
        hash.update(start_ns.to_le_bytes());
        hex::encode(&hash.finalize()[..16])
    }
}
