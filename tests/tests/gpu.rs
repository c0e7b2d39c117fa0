//! GPU time per pod through the agent binary: the real NVML code path (nvml-wrapper) on the
//! scripted libnvidia-ml of `tests/fake-nvml` (there is no GPU here; the fake speaks the C ABI
//! and is scripted by a file, as another process cannot call its script functions), a
//! vLLM-shaped server in a kubepods cgroup holding a GPU and serving real TLS calls, and a
//! process outside any pod holding another share. The agent's GPU usage records must give
//! the server's pod its GPU time, SM and memory use, its tenant, and the tokens it served per
//! GPU-second, and the host process its own.

#[path = "../../agent/tests/gpu/fake.rs"]
mod fake;

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{json, Value};
use tokenmeter_tests::agent::{Agent, AgentOptions};
use tokenmeter_tests::cgroups::PodCgroup;
use tokenmeter_tests::kube::{self, FakeKubeApi};
use tokenmeter_tests::llm::{self, LlmServer};
use tokenmeter_tests::wait::poll_until;
use tokenmeter_tests::{e2e_prelude, fixtures};

const NODE: &str = "gpu-node";
const POD_UID: &str = "9a7b6c5d-4e3f-4a1b-8c2d-3e4f5a6b7c8d";
const CONTAINER: &str = "9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c";
const GPU_UUID: &str = "GPU-6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";
const GIB: u64 = 1 << 30;
const WAIT: Duration = Duration::from_secs(30);

/// Kills the held process on drop.
struct Held(Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sum(records: &[&Value], field: &str) -> u64 {
    records
        .iter()
        .map(|r| r["gpu"][field].as_u64().expect(field))
        .sum()
}

#[test]
fn gpu_time_and_tokens_per_gpu_second_reach_the_records_of_the_serving_pod() {
    let test = "gpu_time_and_tokens_per_gpu_second_reach_the_records_of_the_serving_pod";
    let Some(_guard) = e2e_prelude(test) else {
        return;
    };
    let Some(python) = llm::require_python(test) else {
        return;
    };
    let library = fake::build(false);
    let api = FakeKubeApi::start(&python);
    api.apply(&kube::pod(
        POD_UID,
        "vllm-7c9d8b-qwert",
        "inference",
        NODE,
        CONTAINER,
        json!({"tokenmeter.io/team": "platform"}),
    ));
    let server = LlmServer::start(&python, "uvicorn");
    let pod = PodCgroup::create(POD_UID, CONTAINER);
    pod.adopt(server.pid());
    let host = Held(
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("start sleep"),
    );

    // The server holds 1 GiB at 50 % SM, the host process 2 GiB at 20 %, on one GPU at 300 W.
    let dir = fixtures::tempdir("gpu");
    let script = dir.path().join("nvml.script");
    std::fs::write(
        &script,
        format!(
            "device {GPU_UUID} 0 300000 {GPU_NAME}\n\
             process 0 {} {GIB} 50\n\
             process 0 {} {} 20\n",
            server.pid(),
            host.0.id(),
            2 * GIB
        ),
    )
    .expect("write the NVML script");
    let config = format!(
        "[kubernetes]\nmode = \"on\"\nkubeconfig = {:?}\nnode_name = \"{NODE}\"\n\n\
         [gpu]\nlibrary_path = {:?}\nsample_interval_ms = 100\nreport_interval_secs = 1\n",
        api.kubeconfig(),
        library
    );
    let agent = Agent::start(AgentOptions {
        meter: true,
        metrics: true,
        config: Some(config),
        env: vec![("FAKE_NVML_SCRIPT".into(), script.display().to_string())],
        ..Default::default()
    });
    poll_until(WAIT, || {
        (agent.metric("tokenmeter_attribution_pods_known") == 1).then_some(())
    })
    .expect("the agent knows the pod");
    poll_until(WAIT, || {
        (agent.metric("tokenmeter_gpu_devices") == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the agent samples the fake GPU; {}", agent.stderr()));

    for _ in 0..2 {
        llm::openai_client(&python, &server, &["--max-tokens", "5"]);
    }
    // Both calls metered on both sides, then two more reports, so that the served tokens
    // were counted before a report took them.
    poll_until(WAIT, || {
        (agent.metric("tokenmeter_usage_records_total") >= 4).then_some(())
    })
    .expect("the calls are metered");
    let reported = agent.metric("tokenmeter_gpu_usage_records_total");
    poll_until(WAIT, || {
        (agent.metric("tokenmeter_gpu_usage_records_total") >= reported + 4).then_some(())
    })
    .expect("GPU usage is reported every second");
    let run = agent.stop();
    run.assert_clean_exit();

    let lines: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let gpu: Vec<&Value> = lines.iter().filter(|r| r["kind"] == "gpu_usage").collect();
    let served: u64 = lines
        .iter()
        .filter(|r| r["side"] == "server")
        .map(|r| r["tokens"]["input"].as_u64().unwrap() + r["tokens"]["output"].as_u64().unwrap())
        .sum();
    assert!(served > 0, "{lines:#?}");
    let mut ids: Vec<&str> = gpu.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), gpu.len(), "every GPU record has its own id");

    let (of_pod, of_host): (Vec<&Value>, Vec<&Value>) = gpu
        .iter()
        .partition(|r| r["workload"]["pod_uid"] == POD_UID);
    assert!(of_pod.len() >= 2 && of_host.len() >= 2, "{gpu:#?}");
    for record in &of_pod {
        assert_eq!(record["node_name"], NODE);
        assert_eq!(record["pod"]["name"], "vllm-7c9d8b-qwert", "{record:#}");
        assert_eq!(record["pod"]["namespace"], "inference");
        // The pod's own tenant: its team label (client-side rules).
        assert_eq!(record["tenant"]["team"], "platform", "{record:#}");
        assert_eq!(record["gpu"]["name"], GPU_NAME);
        assert_eq!(record["gpu"]["devices"], json!([GPU_UUID]));
        assert_eq!(record["gpu"]["mig"], false);
    }
    for record in &of_host {
        assert!(record["workload"]["pod_uid"].is_null(), "{record:#}");
        assert!(record.get("pod").is_none(), "{record:#}");
    }

    // Time held is the records' spans; SM time is the scripted share of it, less the last
    // sample interval (a sample is integrated in the interval after the one it was taken in);
    // memory is the bytes held over that time.
    for (records, percent, bytes) in [(&of_pod, 50, GIB), (&of_host, 20, 2 * GIB)] {
        let time_us = sum(records, "time_us");
        let spans: u64 = records
            .iter()
            .map(|r| {
                (r["end_time_unix_nano"].as_u64().unwrap()
                    - r["start_time_unix_nano"].as_u64().unwrap())
                    / 1000
            })
            .sum();
        assert!(time_us > 2_000_000, "{records:#?}");
        assert!(
            time_us <= spans && time_us + 200_000 >= spans,
            "held {time_us} us in records spanning {spans} us"
        );
        let sm = sum(records, "sm_util_us");
        let share = sm as f64 / time_us as f64;
        let expected = percent as f64 / 100.0;
        assert!(
            share <= expected * 1.01 && share >= expected * 0.8,
            "SM share {share:.3}, scripted {expected}"
        );
        let byte_seconds = sum(records, "memory_byte_seconds") as f64;
        let expected = bytes as f64 * time_us as f64 / 1e6;
        assert!(
            (byte_seconds - expected).abs() <= expected * 0.01,
            "{byte_seconds} byte-seconds, {expected} expected"
        );
        assert!(sum(records, "energy_microjoules") > 0);
    }

    // The served tokens, all of them, on the pod's records, with tokens per GPU-second.
    assert_eq!(sum(&of_pod, "tokens"), served, "{of_pod:#?}");
    assert_eq!(sum(&of_host, "tokens"), 0);
    let with_tokens = of_pod
        .iter()
        .find(|r| r["gpu"]["tokens"].as_u64() > Some(0))
        .expect("a record with tokens");
    let rate = with_tokens["gpu"]["tokens_per_gpu_second"]
        .as_f64()
        .expect("tokens per GPU-second");
    let expected = with_tokens["gpu"]["tokens"].as_f64().unwrap()
        / (with_tokens["gpu"]["time_us"].as_f64().unwrap() / 1e6);
    assert!((rate - expected).abs() < 1e-6 * expected, "{with_tokens:#}");
}
