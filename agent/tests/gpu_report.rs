//! From NVML samples to the records the collector receives: the per-pod GPU usage records of
//! each report interval, through the real sampler on the scripted `libnvidia-ml.so`, with the
//! pod's tenant from its labels and its tokens per GPU-second.

#[path = "gpu/fake.rs"]
mod fake;
#[path = "../benches/support/record.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fake::Fake;
use std::sync::Arc;

use tokenmeter_agent::attribution::{
    gpu::GpuSampler,
    kubernetes::{KubernetesConfig, Pod, PodDirectory},
    Attributor, GpuReporter, TenantConfig, TenantResolver,
};
use tokenmeter_agent::telemetry::AgentMetrics;

const T0_US: u64 = 1_700_000_000_000_000;
const GIB: u64 = 1 << 30;

fn pod_of(pid: u32) -> Option<String> {
    (pid / 1000 == 1).then(|| "pod-a".to_string())
}

#[test]
fn each_interval_becomes_one_record_per_pod_with_its_tenant_and_tokens() {
    let fake = Fake::take();
    let gpu = fake.add_device("GPU-77", "NVIDIA H100 80GB HBM3", 0, 300_000);
    fake.set_processes(gpu, &[(1001, 4 * GIB), (4242, GIB)]);
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    let pods = PodDirectory::new(Duration::from_secs(60));
    pods.apply(Pod {
        uid: "pod-a".into(),
        name: "vllm-0".into(),
        namespace: "inference".into(),
        labels: BTreeMap::from([("tokenmeter.io/team".into(), "ml".into())]),
        ..Default::default()
    });
    let kubernetes = KubernetesConfig {
        node_name: Some("node-a".into()),
        ..Default::default()
    };
    let attributor = Attributor::new(
        &kubernetes,
        pods.clone(),
        TenantResolver::new(TenantConfig::default()).unwrap(),
        Arc::new(AgentMetrics::default()),
    );
    let mut reporter = GpuReporter::new(attributor.clone(), T0_US * 1000);
    sampler.sample(T0_US, &mut pod_of);
    fake.push_sample(gpu, 1001, T0_US + 1_000_000, 50);
    fake.push_sample(gpu, 4242, T0_US + 1_000_000, 50);
    sampler.sample(T0_US + 2_000_000, &mut pod_of);
    // A call the pod served: 100 input and 20 output tokens.
    let mut served = support::record(0);
    served.workload.pod_uid = Some("pod-a".into());
    attributor.attribute(&mut served);

    let first = reporter.report(&mut sampler, (T0_US + 2_000_000) * 1000);
    assert_eq!(first.len(), 2, "pod-a and the host: {first:#?}");
    let a = first
        .iter()
        .find(|r| r.workload.pod_uid.as_deref() == Some("pod-a"))
        .unwrap();
    assert_eq!(a.kind, "gpu_usage");
    assert_eq!(a.gpu.name, "NVIDIA H100 80GB HBM3");
    assert_eq!(a.gpu.time_us, 2_000_000);
    assert_eq!(a.gpu.memory_byte_seconds, 8 * GIB);
    // Half the SMs for the 1 s the driver's first sample covers.
    assert_eq!(a.gpu.sm_util_us, 500_000);
    // 300 W for 2 s, half of the SM use is pod-a's: 300 J = 3e8 µJ.
    assert_eq!(a.gpu.energy_microjoules, 300_000_000);
    assert_eq!(a.gpu.tokens, 120);
    assert_eq!(a.gpu.tokens_per_gpu_second, Some(60.0));
    assert_eq!(a.tenant.team.as_deref(), Some("ml"));
    assert_eq!(a.pod.as_ref().unwrap().namespace, "inference");
    assert_eq!(a.node_name.as_deref(), Some("node-a"));
    let host = first.iter().find(|r| r.workload.pod_uid.is_none()).unwrap();
    assert!(host.pod.is_none() && host.tenant.is_empty());

    // Nothing sampled since: nothing to report.
    assert!(reporter
        .report(&mut sampler, (T0_US + 2_500_000) * 1000)
        .is_empty());
    // The next interval is a record of its own: its growth only, a new id.
    sampler.sample(T0_US + 3_000_000, &mut pod_of);
    let second = reporter.report(&mut sampler, (T0_US + 3_000_000) * 1000);
    let a2 = second
        .iter()
        .find(|r| r.workload.pod_uid.as_deref() == Some("pod-a"))
        .unwrap();
    assert_eq!((a2.gpu.time_us, a2.gpu.tokens), (1_000_000, 0));
    assert_eq!(a2.start_time_unix_nano, (T0_US + 2_500_000) * 1000);
    assert_ne!(a2.id, a.id);

    // The spooled form carries the kind the OTLP exporter routes on.
    let json = serde_json::to_value(a).unwrap();
    assert_eq!(json["kind"], "gpu_usage");
    assert_eq!(json["gpu"]["time_us"], 2_000_000);
}

#[test]
fn served_tokens_are_counted_only_while_a_reporter_runs() {
    let attributor = Attributor::new(
        &KubernetesConfig::default(),
        PodDirectory::new(Duration::from_secs(60)),
        TenantResolver::new(TenantConfig::default()).unwrap(),
        Arc::new(AgentMetrics::default()),
    );
    let served = || {
        let mut record = support::record(0);
        record.workload.pod_uid = Some("pod-a".into());
        attributor.attribute(&mut record);
    };
    // No GPU reporter (GPUs off, or NVML did not open): nothing would take them.
    served();
    assert!(attributor.take_pod_tokens().is_empty());
    let reporter = GpuReporter::new(attributor.clone(), T0_US * 1000);
    served();
    assert_eq!(attributor.take_pod_tokens().get("pod-a"), Some(&120));
    drop(reporter);
    served();
    assert!(attributor.take_pod_tokens().is_empty());
}
