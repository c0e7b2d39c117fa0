//! A usage record as the meter builds them, for the benchmarks.

use tokenmeter_agent::{
    attribution::{Identity, Workload},
    http::{HttpVersion, Role},
    llm::{Api, Usage},
    record::UsageRecord,
    tokens::{CountSource, TokenCounts},
};

/// Record `i`: a streamed chat completion of one of 8 pods, with one of 16 API keys.
pub fn record(i: u64) -> UsageRecord {
    UsageRecord {
        id: format!("{i:032x}"),
        start_time_unix_nano: 1_800_000_000_000_000_000 + i * 1_000_000,
        end_time_unix_nano: 1_800_000_000_000_000_000 + i * 1_000_000 + 500_000,
        side: Role::Server,
        pid: 4242,
        comm: "python3".into(),
        cgroup_id: 77,
        workload: Workload {
            pod_uid: Some(format!("pod-{}", i % 8)),
            ..Default::default()
        },
        node_name: Some("node-a".into()),
        pod: None,
        tenant: Default::default(),
        client_address: Some("10.0.0.1:51000".into()),
        server_address: Some("10.0.0.2:8443".into()),
        api: Api::OpenAiChatCompletions,
        operation: "chat",
        provider: "openai",
        http_version: HttpVersion::Http11,
        request_model: Some("meta-llama/Llama-3.1-8B-Instruct".into()),
        response_model: Some("meta-llama/Llama-3.1-8B-Instruct".into()),
        stream: true,
        status: Some(200),
        finish_reasons: vec!["stop".into()],
        tokens: TokenCounts {
            usage: Usage {
                input: Some(100 + i % 50),
                output: Some(20 + i % 7),
                ..Default::default()
            },
            input_source: Some(CountSource::Reported),
            output_source: Some(CountSource::Reported),
            tokenizer: None,
        },
        identity: Identity {
            api_key_fingerprint: Some(format!("hmac-sha256:{:032x}", i % 16)),
            ..Default::default()
        },
        time_to_first_token_ns: Some(20_000_000),
        time_to_last_token_ns: Some(400_000_000),
        duration_ns: Some(410_000_000),
        error: None,
    }
}
