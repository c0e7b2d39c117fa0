//! The Helm chart, rendered with several value sets through Helm's own SDK
//! (`tests/fixtures/chart_check.py`): it lints clean, every manifest validates strictly for
//! Kubernetes 1.28 to 1.33, the agent is not privileged by default and has the capabilities
//! it needs with read-only mounts where it can, the config files the ConfigMaps carry are
//! accepted by the real agent and collector parsers, and bad values are refused with a
//! message that names them. Needs no root.

use serde_json::Value;
use tokenmeter_tests::{fixtures, llm, wait};

const KUBE_VERSIONS: [&str; 6] = ["1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"];

fn report() -> Option<Value> {
    let python = llm::require_python("the_chart_renders_validates_and_is_least_privilege")?;
    let finished = wait::run(
        std::process::Command::new(python)
            .arg(fixtures::fixture("chart_check.py"))
            .arg("--chart")
            .arg(fixtures::workspace_root().join("charts/tokenmeter"))
            .arg("--kube-versions")
            .args(KUBE_VERSIONS),
        std::time::Duration::from_secs(300),
    );
    finished.assert_success("chart_check.py");
    Some(serde_json::from_str(&finished.stdout).expect("the report is JSON"))
}

fn documents<'a>(set: &'a Value, kind: &str) -> Vec<&'a Value> {
    set["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[test]
fn the_chart_renders_validates_and_is_least_privilege() {
    let Some(report) = report() else {
        return;
    };
    assert_eq!(
        report["lint"]["errors"],
        serde_json::json!([]),
        "{:#}",
        report["lint"]
    );
    let warnings: Vec<_> = report["lint"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_u64() >= Some(2))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");

    for (name, set) in report["sets"].as_object().unwrap() {
        assert_eq!(set["invalid"], serde_json::json!([]), "{name}");
        for document in set["documents"].as_array().unwrap() {
            let labels = &document["metadata"]["labels"];
            for label in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/managed-by",
            ] {
                assert!(
                    labels.get(label).is_some(),
                    "{name}: {} lacks {label}",
                    document["kind"]
                );
            }
        }
        // The config files the chart writes are what the binaries accept.
        for (file, text) in set["configs"].as_object().unwrap() {
            let text = text.as_str().unwrap();
            let parsed = match file.rsplit('/').next().unwrap() {
                "agent.toml" => tokenmeter_agent::config::AgentConfig::parse(text)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                "prices.toml" => tokenmeter_collector::rate::PriceBook::parse(text)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                "accounts.toml" => tokenmeter_collector::accounts::Accounts::parse(text)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                "collector.toml" => {
                    toml::from_str::<tokenmeter_collector::config::CollectorConfig>(text)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                "quotas.toml" | "config.yaml" => Ok(()),
                other => panic!("{name}: unexpected config file {other}"),
            };
            assert!(parsed.is_ok(), "{name}: {file}: {parsed:?}\n{text}");
        }
    }

    // The agent's posture by default: not privileged, the listed capabilities only,
    // read-only root and mounts except the spool.
    let defaults = &report["sets"]["defaults"];
    let daemonset = documents(defaults, "DaemonSet")[0];
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for needed in [
        "BPF",
        "PERFMON",
        "SYS_RESOURCE",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
    ] {
        assert!(added.contains(&needed), "{needed} missing from {added:?}");
    }
    assert!(!added.contains(&"SYS_ADMIN"), "SYS_ADMIN is not needed");
    for mount in container["volumeMounts"].as_array().unwrap() {
        let writable = mount["readOnly"] != true;
        assert_eq!(
            writable,
            mount["name"] == "spool",
            "only the spool is writable: {mount}"
        );
    }
    let env = container["env"].as_array().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    // NVML through the NVIDIA container toolkit: the management library only, no device.
    assert!(env
        .iter()
        .any(|e| e["name"] == "NVIDIA_DRIVER_CAPABILITIES" && e["value"] == "utility"));
    let gpu_nodes = documents(&report["sets"]["postgres-replicas-monitoring"], "DaemonSet")[0];
    assert_eq!(
        gpu_nodes["spec"]["template"]["spec"]["runtimeClassName"],
        "nvidia"
    );
    let no_gpu = documents(&report["sets"]["agent-only"], "DaemonSet")[0];
    let no_gpu_env = no_gpu["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(!no_gpu_env.contains("NVIDIA_"), "{no_gpu_env}");
    let privileged = documents(&report["sets"]["privileged-opt-in"], "DaemonSet")[0];
    assert_eq!(
        privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    let collector = documents(defaults, "Deployment")[0];
    assert_eq!(
        collector["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(
        documents(defaults, "PersistentVolumeClaim").len(),
        1,
        "SQLite gets a volume"
    );
    let scaled = &report["sets"]["postgres-replicas-monitoring"];
    assert_eq!(
        documents(scaled, "PersistentVolumeClaim").len(),
        0,
        "PostgreSQL needs no volume"
    );
    assert_eq!(documents(scaled, "ServiceMonitor").len(), 1);

    // Bad values are refused, each with a message naming what is wrong.
    let bad = &report["bad"];
    let said = |case: &str, words: &[&str]| {
        let message = bad[case]
            .as_str()
            .unwrap_or_else(|| panic!("{case} was accepted"));
        for word in words {
            assert!(message.contains(word), "{case}: {message}");
        }
    };
    said("negative spool size", &["/agent/spool/maxBytes", "minimum"]);
    said("unknown exporter", &["/agent/export", "otlp"]);
    said("unknown key", &["spoool"]);
    said("sqlite with replicas", &["postgres"]);
    said("unknown gpu mode", &["/agent/gpu/enabled", "auto"]);
    said(
        "relative plaintext cgroup",
        &["/agent/plaintext/cgroupPrefix"],
    );
}
