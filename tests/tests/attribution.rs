//! Attribution end to end: pods described by a fake Kubernetes API server (real list and
//! watch JSON, through kube-rs), processes moved into kubepods-like cgroups, real TLS calls
//! from the `openai` SDK to a vLLM-shaped server, and the agent's tenant rules. The records
//! must name each side's pod and the tenant the rules give, follow the API's changes, and
//! keep working when the API fails.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokenmeter_agent::attribution::kubernetes::{self, KubernetesConfig, KubernetesMode};
use tokenmeter_agent::telemetry::AgentMetrics;
use tokenmeter_tests::agent::{agent_bin, Agent, AgentOptions};
use tokenmeter_tests::cgroups::PodCgroup;
use tokenmeter_tests::kube::{self, FakeKubeApi};
use tokenmeter_tests::llm::{self, LlmServer};
use tokenmeter_tests::wait::poll_until;
use tokenmeter_tests::{e2e_prelude, fixtures};

const NODE: &str = "node-a";
const SERVER_UID: &str = "0b5c1a2e-3f4d-4e6a-8b9c-0d1e2f3a4b5c";
const SERVER_CONTAINER: &str = "5e7e75e7e75e7e75e7e75e7e75e7e75e7e75e7e75e7e75e7e75e7e75e7e75e7e";
const CLIENT_UID: &str = "c11e0700-1a2b-4c3d-9e8f-abcdefabcdef";
const CLIENT_CONTAINER: &str = "c11e07c11e07c11e07c11e07c11e07c11e07c11e07c11e07c11e07c11e07c11e";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn the_pod_directory_follows_lists_watches_and_their_failures() {
    // No eBPF here: the agent's watch against the fake API server, through kube-rs.
    let Some(python) =
        llm::require_python("the_pod_directory_follows_lists_watches_and_their_failures")
    else {
        return;
    };
    let api = FakeKubeApi::start(&python);
    let labels = json!({"tokenmeter.io/team": "search"});
    api.apply(&kube::pod(
        "uid-a",
        "search-agent-5d8f7c-x1",
        "search",
        NODE,
        CLIENT_CONTAINER,
        labels,
    ));
    api.apply(&kube::pod(
        "uid-b",
        "other-5d8f7c-x2",
        "search",
        "node-b",
        SERVER_CONTAINER,
        json!({}),
    ));
    let metrics = Arc::new(AgentMetrics::default());
    let config = KubernetesConfig {
        mode: KubernetesMode::On,
        kubeconfig: Some(api.kubeconfig()),
        node_name: Some(NODE.into()),
        deleted_pod_grace_secs: 1,
        ..Default::default()
    };
    let pods = kubernetes::start(&config, metrics.clone());

    let a = poll_until(WAIT, || pods.get("uid-a")).expect("the listed pod is known");
    assert_eq!(
        (a.name.as_str(), a.namespace.as_str()),
        ("search-agent-5d8f7c-x1", "search")
    );
    assert_eq!(
        a.workload,
        Some(("deployment".into(), "search-agent".into()))
    );
    assert_eq!(
        a.containers.get(CLIENT_CONTAINER).map(String::as_str),
        Some("main")
    );
    assert!(
        pods.get("uid-b").is_none(),
        "a pod of another node is not watched"
    );
    let first = &api.requests()[0];
    assert!(
        first.contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{first}"
    );

    // MODIFIED: a label changes.
    let labels = json!({"tokenmeter.io/team": "ads"});
    api.apply(&kube::pod(
        "uid-a",
        "search-agent-5d8f7c-x1",
        "search",
        NODE,
        CLIENT_CONTAINER,
        labels,
    ));
    let team = |pods: &kubernetes::PodDirectory| {
        pods.get("uid-a")?.labels.get("tokenmeter.io/team").cloned()
    };
    poll_until(WAIT, || (team(&pods)? == "ads").then_some(())).expect("the change is seen");

    // ADDED by watch: a bare pod, without labels, owner or containers.
    api.apply(
        &json!({"metadata": {"name": "debug", "namespace": "default", "uid": "uid-bare"},
                      "spec": {"nodeName": NODE, "containers": []}}),
    );
    let bare = poll_until(WAIT, || pods.get("uid-bare")).expect("the bare pod is known");
    assert_eq!((bare.workload.clone(), bare.labels.len()), (None, 0));

    // The API server drops every watch: the agent watches again and misses nothing.
    api.wait_watches(1);
    api.drop_watches();
    api.apply(&kube::pod(
        "uid-c",
        "late-5d8f7c-x3",
        "search",
        NODE,
        SERVER_CONTAINER,
        json!({}),
    ));
    poll_until(WAIT, || pods.get("uid-c")).expect("a pod added after the drop is known");

    // The API fails for a while: the errors are counted, then the watch recovers.
    api.fail_next(3);
    api.drop_watches();
    api.apply(&kube::pod(
        "uid-d",
        "after-5d8f7c-x4",
        "search",
        NODE,
        SERVER_CONTAINER,
        json!({}),
    ));
    poll_until(WAIT, || pods.get("uid-d")).expect("the watch recovers from errors");
    assert!(
        metrics
            .kubernetes_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // DELETED: forgotten once the grace period (1 s here) is over.
    api.delete("uid-a");
    poll_until(WAIT, || pods.get("uid-a").is_none().then_some(())).expect("deleted pods go");
    assert!(pods.get("uid-c").is_some());
}

fn fingerprint(config: &std::path::Path, api_key: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(agent_bin())
        .args(["--config"])
        .arg(config)
        .arg("fingerprint")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tokenmeter-agent fingerprint");
    writeln!(child.stdin.take().expect("stdin"), "{api_key}").expect("write key");
    let output = child.wait_with_output().expect("fingerprint output");
    assert!(output.status.success(), "fingerprint failed");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[test]
fn records_carry_the_pods_and_tenants_the_api_and_the_rules_name() {
    let test = "records_carry_the_pods_and_tenants_the_api_and_the_rules_name";
    let Some(_guard) = e2e_prelude(test) else {
        return;
    };
    let Some(python) = llm::require_python(test) else {
        return;
    };
    let api = FakeKubeApi::start(&python);
    let server = LlmServer::start(&python, "uvicorn");
    let server_pod = PodCgroup::create(SERVER_UID, SERVER_CONTAINER);
    server_pod.adopt(server.pid());
    let client_pod = PodCgroup::create(CLIENT_UID, CLIENT_CONTAINER);
    let vllm = kube::pod(
        SERVER_UID,
        "vllm-5d8f7c-abcde",
        "inference",
        NODE,
        SERVER_CONTAINER,
        json!({"app.kubernetes.io/name": "vllm", "tokenmeter.io/team": "platform"}),
    );
    let mut agent_pod = kube::pod(
        CLIENT_UID,
        "search-agent-5d8f7c-fghij",
        "search",
        NODE,
        CLIENT_CONTAINER,
        json!({"app.kubernetes.io/name": "search-agent", "tokenmeter.io/team": "search"}),
    );
    agent_pod["metadata"]["annotations"] = json!({"tokenmeter.io/org": "acme"});
    api.apply(&vllm);
    api.apply(&agent_pod);

    let dir = fixtures::tempdir("attribution");
    let key_file = dir.path().join("fingerprint.key");
    std::fs::write(&key_file, "a-cluster-wide-fingerprint-secret").expect("key file");
    let identity = format!("[identity]\nfingerprint_key_file = {:?}\n", key_file);
    let identity_only = dir.path().join("identity.toml");
    std::fs::write(&identity_only, &identity).expect("config");
    let alice = fingerprint(&identity_only, "sk-alice");
    assert!(alice.starts_with("hmac-sha256:"), "{alice}");
    let config = format!(
        "{identity}\n[kubernetes]\nmode = \"on\"\nkubeconfig = {:?}\nnode_name = \"{NODE}\"\n\n\
         [[tenants.api_keys]]\nfingerprint = \"{alice}\"\nuser = \"alice\"\nteam = \"search\"\norg = \"acme\"\n",
        api.kubeconfig()
    );
    let agent = Agent::start(AgentOptions {
        meter: true,
        metrics: true,
        config: Some(config),
        ..Default::default()
    });
    let pods_known = |n: u64| {
        poll_until(WAIT, || {
            (agent.metric("tokenmeter_attribution_pods_known") == n).then_some(())
        })
        .unwrap_or_else(|| panic!("the agent never knew {n} pods"))
    };
    pods_known(2);

    // 1. The AI agent's pod calls with alice's key.
    let first = llm::run_openai_client(
        client_pod.command(&python),
        &server,
        &["--api-key", "sk-alice", "--max-tokens", "3"],
    );
    // 2. The pod's team label changes; a third pod arrives after it, so once the agent knows
    //    three pods it has seen the change too (one watch stream is ordered).
    agent_pod["metadata"]["labels"]["tokenmeter.io/team"] = "ads".into();
    api.apply(&agent_pod);
    api.apply(&kube::pod(
        "d00dfeed-0000-4000-8000-000000000003",
        "batch-5d8f7c-zzzzz",
        "batch",
        NODE,
        SERVER_CONTAINER,
        json!({}),
    ));
    pods_known(3);
    let second = llm::run_openai_client(
        client_pod.command(&python),
        &server,
        &["--api-key", "sk-bob", "--max-tokens", "3"],
    );
    // 3. A host process (no pod) with an unknown key.
    let host = llm::openai_client(
        &python,
        &server,
        &["--api-key", "sk-nobody", "--max-tokens", "3"],
    );
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    let of = |pid: u32| -> &Value {
        let mine: Vec<&Value> = records.iter().filter(|r| r["pid"] == pid).collect();
        assert_eq!(mine.len(), 1, "one record for pid {pid}: {records:#?}");
        mine[0]
    };
    let server_side: Vec<&Value> = records.iter().filter(|r| r["side"] == "server").collect();
    assert_eq!(server_side.len(), 3, "{records:#?}");

    let client = of(first.pid);
    assert_eq!(client["node_name"], NODE);
    assert_eq!(client["workload"]["pod_uid"], CLIENT_UID);
    let pod = &client["pod"];
    assert_eq!(pod["name"], "search-agent-5d8f7c-fghij", "{client:#}");
    assert_eq!(pod["namespace"], "search");
    assert_eq!(pod["container"], "main");
    assert_eq!(
        (pod["workload_kind"].as_str(), pod["workload_name"].as_str()),
        (Some("deployment"), Some("search-agent"))
    );
    assert_eq!(
        pod["labels"],
        json!({"app.kubernetes.io/name": "search-agent"}),
        "only the configured labels"
    );
    // Client side: team from the pod's label, org from its annotation, user from the key.
    assert_eq!(
        client["tenant"],
        json!({"user": "alice", "team": "search", "org": "acme"})
    );

    // Server side of the same call: the vLLM pod, but the tenant of the caller's key, not of
    // the serving pod (whose team label is "platform").
    let served = server_side[0];
    assert_eq!(served["pod"]["name"], "vllm-5d8f7c-abcde");
    assert_eq!(served["pod"]["namespace"], "inference");
    assert_eq!(
        served["tenant"],
        json!({"user": "alice", "team": "search", "org": "acme"})
    );

    // The label change reached the next call; bob's key is unknown, so no user.
    let later = of(second.pid);
    assert_eq!(later["tenant"], json!({"team": "ads", "org": "acme"}));
    assert!(
        server_side[1].get("tenant").is_none(),
        "{:#}",
        server_side[1]
    );

    // The host process has no pod and no tenant; the server side still has its pod.
    let outside = of(host.pid);
    assert!(
        outside.get("pod").is_none() && outside.get("tenant").is_none(),
        "{outside:#}"
    );
    assert_eq!(server_side[2]["pod"]["name"], "vllm-5d8f7c-abcde");
    assert!(api
        .requests()
        .iter()
        .all(|r| r.contains("spec.nodeName%3Dnode-a")));
}
