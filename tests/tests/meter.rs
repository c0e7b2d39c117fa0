//! End to end: the agent meters LLM calls between the official `openai` SDK and a vLLM-shaped
//! FastAPI server over TLS, on both sides of each connection, streamed and not, with and
//! without `include_usage`.

use serde_json::Value;
use tokenmeter_tests::agent::{Agent, AgentOptions};
use tokenmeter_tests::e2e_prelude;
use tokenmeter_tests::llm::{self, LlmServer};

fn tokens(record: &Value, field: &str) -> Option<u64> {
    record["tokens"][field].as_u64()
}

#[test]
fn openai_sdk_calls_are_metered_on_both_sides() {
    let Some(_guard) = e2e_prelude("openai_sdk_calls_are_metered_on_both_sides") else {
        return;
    };
    let Some(python) = llm::require_python("openai_sdk_calls_are_metered_on_both_sides") else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let tokenizers = llm::llama3_tokenizer_dir();
    let agent = Agent::start(AgentOptions {
        meter: true,
        stats: true,
        metrics: true,
        config: Some(format!(
            "[tokens]\ntokenizer_dir = {:?}\n",
            tokenizers.path().display().to_string()
        )),
        ..Default::default()
    });
    let streamed = llm::openai_client(
        &python,
        &server,
        &[
            "--stream",
            "--include-usage",
            "--user",
            "alice",
            "--max-tokens",
            "7",
        ],
    );
    let without_usage = llm::openai_client(&python, &server, &["--stream", "--max-tokens", "5"]);
    let plain = llm::openai_client(
        &python,
        &server,
        &["--max-tokens", "4", "--api-key", "sk-other-key"],
    );
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    let served = server.served();
    assert_eq!(served.len(), 3, "{served:#?}");

    for (client, log) in [
        (&streamed, &served[0]),
        (&without_usage, &served[1]),
        (&plain, &served[2]),
    ] {
        assert_eq!(client.text, log.text, "the client got what the server sent");
        let sides: Vec<&Value> = records
            .iter()
            .filter(|r| {
                let pid = r["pid"].as_u64().unwrap_or(0) as u32;
                pid == client.pid || pid == log.server_pid
            })
            .filter(|r| r["stream"].as_bool() == Some(log.stream))
            .filter(|r| tokens(r, "output").is_some())
            .collect();
        let client_side: Vec<_> = sides
            .iter()
            .filter(|r| r["side"] == "client" && r["pid"] == client.pid)
            .collect();
        assert_eq!(
            client_side.len(),
            1,
            "one client-side record for {log:?}: {records:#?}\n{}",
            run.stderr
        );
        let server_side: Vec<_> = sides
            .iter()
            .filter(|r| r["side"] == "server" && r["request_model"] == log.model.as_str())
            .filter(|r| r["pid"] == log.server_pid)
            .collect();
        assert!(
            !server_side.is_empty(),
            "a server-side record for {log:?}: {records:#?}"
        );
        let record = client_side[0];
        assert_eq!(record["api"], "open_ai_chat_completions");
        assert_eq!(record["operation"], "chat");
        assert_eq!(record["request_model"], log.model.as_str());
        assert_eq!(record["response_model"], log.model.as_str());
        assert_eq!(record["error"], Value::Null, "{record:#}");
        assert!(record["identity"]["api_key_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"));
        if log.include_usage || !log.stream {
            assert_eq!(
                tokens(record, "input"),
                Some(log.prompt_tokens),
                "{record:#}"
            );
            assert_eq!(
                tokens(record, "output"),
                Some(log.completion_tokens),
                "{record:#}"
            );
            assert_eq!(record["tokens"]["input_source"], "reported");
        } else {
            // No usage on the wire: computed with the model's tokenizer, exactly as the
            // reference library counts the same text and the same chat-templated prompt.
            let (output, prompt) = llm::llama3_reference(
                &log.text,
                &[
                    ("system", "You are terse."),
                    ("user", "Say hello to the meter"),
                ],
            );
            assert_eq!(record["tokens"]["output_source"], "computed", "{record:#}");
            assert_eq!(record["tokens"]["input_source"], "computed", "{record:#}");
            assert_eq!(record["tokens"]["tokenizer"], "hf:llama3", "{record:#}");
            assert_eq!(tokens(record, "output"), Some(output), "{record:#}");
            assert_eq!(tokens(record, "input"), Some(prompt), "{record:#}");
        }
        if log.stream {
            assert!(
                record["time_to_first_token_ns"].as_u64().unwrap() > 0,
                "{record:#}"
            );
        }
    }
    // The same record id on both sides would double count: ids differ per side.
    let streamed_ids: Vec<_> = records
        .iter()
        .filter(|r| r["identity"]["user"] == "alice")
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(streamed_ids.len(), 2, "alice's call seen on both sides");
    assert_ne!(streamed_ids[0], streamed_ids[1]);
    // Keys are fingerprinted, never exported.
    assert!(!run.stdout.contains("sk-test-not-a-real-key") && !run.stdout.contains("sk-other-key"));
    assert!(!run.stderr.contains("sk-test-not-a-real-key"));
    // And no prompt or completion text leaves the agent.
    assert!(!run.stdout.contains("Say hello to the meter") && !run.stdout.contains("w0 w1"));
}

#[test]
fn curl_over_http2_is_metered() {
    let Some(_guard) = e2e_prelude("curl_over_http2_is_metered") else {
        return;
    };
    let Some(python) = llm::require_python("curl_over_http2_is_metered") else {
        return;
    };
    // hypercorn offers h2 by ALPN, as a gateway in front of vLLM would.
    let server = LlmServer::start(&python, "hypercorn");
    let agent = Agent::start(AgentOptions {
        meter: true,
        ..Default::default()
    });
    let body = r#"{"model":"Qwen/Qwen3-8B","messages":[{"role":"user","content":"Count to five"}],"max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}"#;
    let finished = tokenmeter_tests::wait::run(
        std::process::Command::new("curl")
            .args([
                "-sSk",
                "--http2",
                "--max-time",
                "60",
                "-w",
                "\n%{http_version}\n",
            ])
            .args([
                "-H",
                "Content-Type: application/json",
                "-H",
                "Authorization: Bearer sk-h2-key",
            ])
            .args(["-d", body])
            .arg(format!("{}/chat/completions", server.base_url())),
        std::time::Duration::from_secs(90),
    );
    finished.assert_success("curl --http2");
    assert!(
        finished.stdout.trim_end().ends_with('2'),
        "curl did not speak HTTP/2: {}",
        finished.stdout
    );
    let run = agent.stop();
    run.assert_clean_exit();
    let served = server.served();
    assert_eq!(served.len(), 1);
    let records = run.usage_records();
    let client: Vec<&Value> = records
        .iter()
        .filter(|r| r["pid"] == finished.pid)
        .collect();
    assert_eq!(client.len(), 1, "{records:#?}\n{}", run.stderr);
    let record = client[0];
    assert_eq!(record["http_version"], "2");
    assert_eq!(record["side"], "client");
    assert_eq!(record["stream"], true);
    assert_eq!(tokens(record, "input"), Some(served[0].prompt_tokens));
    assert_eq!(tokens(record, "output"), Some(served[0].completion_tokens));
    assert_eq!(record["error"], Value::Null, "{record:#}");
    let server_side: Vec<&Value> = records
        .iter()
        .filter(|r| r["pid"] == served[0].server_pid)
        .collect();
    assert_eq!(
        server_side.len(),
        1,
        "the server side is metered too: {records:#?}"
    );
    assert_eq!(server_side[0]["http_version"], "2");
}

#[test]
fn records_carry_the_pod_and_container_of_a_kubepods_cgroup() {
    let Some(_guard) = e2e_prelude("records_carry_the_pod_and_container_of_a_kubepods_cgroup")
    else {
        return;
    };
    let Some(python) =
        llm::require_python("records_carry_the_pod_and_container_of_a_kubepods_cgroup")
    else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    let pod = tokenmeter_tests::cgroups::PodCgroup::create(
        "7d3e5f21-aa4b-4c1d-9e8f-0a1b2c3d4e5f",
        "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00",
    );
    // The inference server runs in a pod now; the client stays on the host.
    pod.adopt(server.pid());
    let agent = Agent::start(AgentOptions {
        meter: true,
        ..Default::default()
    });
    let client = llm::openai_client(&python, &server, &["--max-tokens", "3"]);
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    let server_side: Vec<&Value> = records.iter().filter(|r| r["side"] == "server").collect();
    assert_eq!(server_side.len(), 1, "{records:#?}");
    let workload = &server_side[0]["workload"];
    assert_eq!(workload["pod_uid"], pod.pod_uid.as_str(), "{workload:#}");
    assert_eq!(workload["container_id"], pod.container_id.as_str());
    assert_eq!(workload["qos_class"], "burstable");
    assert_eq!(workload["container_runtime"], "containerd");
    let client_side: Vec<&Value> = records.iter().filter(|r| r["pid"] == client.pid).collect();
    assert_eq!(client_side.len(), 1);
    assert_eq!(
        client_side[0]["workload"]["pod_uid"],
        Value::Null,
        "the client is not in a pod"
    );
}

#[test]
fn a_kubepods_cgroup_of_an_unknown_layout_is_said_once_and_keeps_its_path() {
    let test = "a_kubepods_cgroup_of_an_unknown_layout_is_said_once_and_keeps_its_path";
    let Some(_guard) = e2e_prelude(test) else {
        return;
    };
    let Some(python) = llm::require_python(test) else {
        return;
    };
    let server = LlmServer::start(&python, "uvicorn");
    // Under kubepods, but named by no runtime this agent knows: no pod uid to read.
    let parts = [
        "kubepods.slice".to_string(),
        "tokenmeter-e2e-odd.slice".to_string(),
        "worker-42".to_string(),
    ];
    let odd = tokenmeter_tests::cgroups::PodCgroup::at(&parts, "", "");
    odd.adopt(server.pid());
    let agent = Agent::start(AgentOptions {
        meter: true,
        ..Default::default()
    });
    for _ in 0..2 {
        llm::openai_client(&python, &server, &["--max-tokens", "3"]);
    }
    let run = agent.stop();
    run.assert_clean_exit();
    let records = run.usage_records();
    let server_side: Vec<&Value> = records.iter().filter(|r| r["side"] == "server").collect();
    assert_eq!(server_side.len(), 2, "{records:#?}");
    for record in server_side {
        let workload = &record["workload"];
        assert!(workload["pod_uid"].is_null(), "{workload:#}");
        let cgroup = workload["cgroup"].as_str().unwrap_or_default();
        assert!(
            cgroup.ends_with("kubepods.slice/tokenmeter-e2e-odd.slice/worker-42"),
            "{workload:#}"
        );
    }
    let said = run.stderr.matches("names no pod uid").count();
    assert_eq!(said, 1, "{}", run.stderr);
}
