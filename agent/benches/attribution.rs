//! Attribution cost per record, as ratios within one run (the machine is shared and noisy):
//!
//! - cached: the record's pod is in the directory (200 pods) and the process's cgroup was read
//!   before: one directory lookup, the pod's attributes and the tenant rules;
//! - uncached: a process seen for the first time: /proc/PID/cgroup read and parsed, then the
//!   same;
//! - cgroup id: the path of a cgroup id not cached (a walk of the cgroup2 mount).
//!
//! Run: `cargo bench -p tokenmeter-agent --bench attribution`.

#[path = "support/record.rs"]
mod support;

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenmeter_agent::{
    attribution::{
        kubernetes::{KubernetesConfig, Pod, PodDirectory},
        Attributor, CgroupPaths, TenantConfig, TenantResolver, Workload,
    },
    telemetry::AgentMetrics,
};

fn directory() -> PodDirectory {
    let pods = PodDirectory::new(Duration::from_secs(300));
    for i in 0..200 {
        pods.apply(Pod {
            uid: format!("pod-{i}"),
            name: format!("search-agent-{i}"),
            namespace: "search".into(),
            workload: Some(("deployment".into(), "search-agent".into())),
            labels: BTreeMap::from([
                ("app.kubernetes.io/name".into(), "search-agent".into()),
                ("tokenmeter.io/team".into(), format!("team-{}", i % 10)),
            ]),
            annotations: BTreeMap::from([("tokenmeter.io/org".into(), "acme".into())]),
            ..Default::default()
        });
    }
    pods
}

fn bench(c: &mut Criterion) {
    let attributor = Attributor::new(
        &KubernetesConfig::default(),
        directory(),
        TenantResolver::new(TenantConfig::default()).expect("default rules"),
        Arc::new(AgentMetrics::default()),
    );
    let template = support::record(3);
    let pid = std::process::id();
    let mut group = c.benchmark_group("attribution");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cached", |b| {
        b.iter(|| {
            let mut record = template.clone();
            attributor.attribute(&mut record);
            record
        })
    });
    group.bench_function("uncached", |b| {
        b.iter(|| {
            let mut record = template.clone();
            let read = Workload::of_process(pid).unwrap_or_default();
            record.workload.cgroup = read.cgroup;
            attributor.attribute(&mut record);
            record
        })
    });
    // A cgroup tree shaped like a node's: 50 pods of 2 containers under kubepods.
    let root = tempfile::tempdir().expect("tempdir");
    let mut leaf = None;
    for pod in 0..50 {
        for container in 0..2 {
            let dir = root.path().join(format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod:032}.slice/cri-containerd-{container:064}.scope"
            ));
            std::fs::create_dir_all(&dir).expect("mkdir");
            leaf = Some(dir);
        }
    }
    let id = std::fs::metadata(leaf.expect("made")).expect("stat").ino();
    group.bench_function("cgroup_id_uncached", |b| {
        b.iter(|| CgroupPaths::with_root(Some(root.path().to_path_buf())).path_of(id))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
