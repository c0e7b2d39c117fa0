//! The usage record's OpenTelemetry names. Logs and metrics read the record in its spooled
//! form (the JSON of [`crate::record::UsageRecord`]) through this one table, so a record
//! replayed from the spool after a restart is exported exactly as it was the first time.
//! Names follow the OpenTelemetry semantic conventions (GenAI, k8s, network, process) of
//! [`SCHEMA_URL`]; what they have no name for is under `tokenmeter.`.

use opentelemetry::{Array, KeyValue, StringValue, Value};
use serde_json::Value as Json;

/// The semantic conventions version the names follow.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";

/// (JSON pointer in the record, attribute name).
const RECORD: &[(&str, &str)] = &[
    ("/id", "tokenmeter.record.id"),
    ("/side", "tokenmeter.side"),
    ("/api", "tokenmeter.api"),
    ("/operation", "gen_ai.operation.name"),
    ("/provider", "gen_ai.provider.name"),
    ("/request_model", "gen_ai.request.model"),
    ("/response_model", "gen_ai.response.model"),
    ("/stream", "tokenmeter.stream"),
    ("/finish_reasons", "gen_ai.response.finish_reasons"),
    ("/tokens/input", "gen_ai.usage.input_tokens"),
    ("/tokens/output", "gen_ai.usage.output_tokens"),
    (
        "/tokens/cached_input",
        "gen_ai.usage.cache_read.input_tokens",
    ),
    (
        "/tokens/cache_creation_input",
        "gen_ai.usage.cache_creation.input_tokens",
    ),
    (
        "/tokens/reasoning_output",
        "gen_ai.usage.reasoning.output_tokens",
    ),
    (
        "/tokens/input_source",
        "tokenmeter.usage.input_tokens.source",
    ),
    (
        "/tokens/output_source",
        "tokenmeter.usage.output_tokens.source",
    ),
    ("/tokens/tokenizer", "tokenmeter.usage.tokenizer"),
    (
        "/identity/api_key_fingerprint",
        "tokenmeter.api_key.fingerprint",
    ),
    ("/identity/user", "tokenmeter.request.user"),
    ("/status", "http.response.status_code"),
    ("/http_version", "network.protocol.version"),
    ("/start_time_unix_nano", "tokenmeter.start_time_unix_nano"),
    (
        "/time_to_first_token_ns",
        "tokenmeter.time_to_first_token_ns",
    ),
    ("/time_to_last_token_ns", "tokenmeter.time_to_last_token_ns"),
    ("/duration_ns", "tokenmeter.duration_ns"),
    ("/error", "error.type"),
    ("/pid", "process.pid"),
    ("/comm", "process.executable.name"),
    ("/workload/pod_uid", "k8s.pod.uid"),
    ("/workload/container_id", "container.id"),
    ("/workload/container_runtime", "container.runtime.name"),
    ("/workload/qos_class", "tokenmeter.k8s.pod.qos_class"),
    ("/node_name", "k8s.node.name"),
    ("/pod/name", "k8s.pod.name"),
    ("/pod/namespace", "k8s.namespace.name"),
    ("/pod/container", "k8s.container.name"),
    ("/pod/service_account", "tokenmeter.k8s.pod.service_account"),
    ("/tenant/user", "tokenmeter.user"),
    ("/tenant/team", "tokenmeter.team"),
    ("/tenant/org", "tokenmeter.org"),
    // GPU usage records (`kind = gpu_usage`).
    ("/gpu/name", "tokenmeter.gpu.name"),
    ("/gpu/devices", "tokenmeter.gpu.devices"),
    ("/gpu/time_us", "tokenmeter.gpu.time_us"),
    ("/gpu/sm_util_us", "tokenmeter.gpu.sm_util_us"),
    (
        "/gpu/memory_byte_seconds",
        "tokenmeter.gpu.memory_byte_seconds",
    ),
    (
        "/gpu/energy_microjoules",
        "tokenmeter.gpu.energy_microjoules",
    ),
    ("/gpu/mig", "tokenmeter.gpu.mig"),
    ("/gpu/sm_unavailable", "tokenmeter.gpu.sm_unavailable"),
    ("/gpu/tokens", "tokenmeter.gpu.tokens"),
    (
        "/gpu/tokens_per_gpu_second",
        "tokenmeter.gpu.tokens_per_gpu_second",
    ),
];

/// Whether a spooled line is a per-pod GPU usage record rather than a call's.
pub fn is_gpu_usage(record: &Json) -> bool {
    record.get("kind").and_then(Json::as_str) == Some("gpu_usage")
}

/// Every attribute of a usage record's log record.
pub fn record_attributes(record: &Json) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(RECORD.len() + 4);
    for (pointer, name) in RECORD {
        if let Some(value) = record.pointer(pointer).and_then(otel_value) {
            out.push(KeyValue::new(*name, value));
        }
    }
    for (field, prefix) in [("/client_address", "client"), ("/server_address", "server")] {
        if let Some((host, port)) = record
            .pointer(field)
            .and_then(Json::as_str)
            .and_then(split_host_port)
        {
            out.push(KeyValue::new(format!("{prefix}.address"), host));
            out.push(KeyValue::new(format!("{prefix}.port"), port));
        }
    }
    // `k8s.deployment.name`, `k8s.statefulset.name`, ...
    if let (Some(kind), Some(name)) = (
        text(record, "/pod/workload_kind"),
        text(record, "/pod/workload_name"),
    ) {
        out.push(KeyValue::new(format!("k8s.{kind}.name"), name.to_string()));
    }
    for (field, prefix) in [
        ("/pod/labels", "k8s.pod.label"),
        ("/pod/annotations", "k8s.pod.annotation"),
    ] {
        if let Some(Json::Object(map)) = record.pointer(field) {
            for (key, value) in map {
                if let Some(value) = value.as_str() {
                    out.push(KeyValue::new(format!("{prefix}.{key}"), value.to_string()));
                }
            }
        }
    }
    if let Some(Json::Object(headers)) = record.pointer("/identity/headers") {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                out.push(KeyValue::new(
                    format!("tokenmeter.header.{name}"),
                    value.to_string(),
                ));
            }
        }
    }
    out
}

/// A string field of the record (for metric attributes).
pub fn text<'a>(record: &'a Json, pointer: &str) -> Option<&'a str> {
    record.pointer(pointer).and_then(Json::as_str)
}

/// The model a call's tokens belong to: the one that answered, else the one asked for.
pub fn model(record: &Json) -> Option<&str> {
    text(record, "/response_model").or_else(|| text(record, "/request_model"))
}

fn otel_value(json: &Json) -> Option<Value> {
    Some(match json {
        Json::Null => return None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => match n.as_u64() {
                Some(u) => Value::I64(i64::try_from(u).unwrap_or(i64::MAX)),
                None => Value::F64(n.as_f64()?),
            },
        },
        Json::String(s) => Value::String(s.clone().into()),
        Json::Array(items) => Value::Array(Array::String(
            items
                .iter()
                .filter_map(Json::as_str)
                .map(|s| StringValue::from(s.to_string()))
                .collect(),
        )),
        Json::Object(_) => return None,
    })
}

/// `10.0.0.1:443` -> ("10.0.0.1", 443); `[::1]:443` -> ("::1", 443).
fn split_host_port(address: &str) -> Option<(String, i64)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_record_maps_to_semantic_convention_names() {
        let record = serde_json::json!({
            "id": "0123",
            "side": "server",
            "operation": "chat",
            "provider": "openai",
            "request_model": "llama",
            "response_model": null,
            "finish_reasons": ["stop"],
            "tokens": {"input": 12, "output": 7, "cached_input": null, "input_source": "reported"},
            "identity": {"api_key_fingerprint": "hmac-sha256:ab", "headers": {"x-team": "search"}},
            "server_address": "[::1]:8443",
            "workload": {"pod_uid": "uid-1"},
            "node_name": "node-a",
            "pod": {"name": "search-agent-1", "namespace": "search", "workload_kind": "deployment",
                    "workload_name": "search-agent", "labels": {"app.kubernetes.io/name": "agent"}},
            "tenant": {"team": "search", "org": "acme"},
        });
        let attributes = record_attributes(&record);
        assert_eq!(
            get(&attributes, "tokenmeter.record.id"),
            Some(&Value::from("0123"))
        );
        assert_eq!(
            get(&attributes, "gen_ai.usage.input_tokens"),
            Some(&Value::I64(12))
        );
        assert_eq!(get(&attributes, "gen_ai.response.model"), None);
        assert_eq!(
            get(&attributes, "gen_ai.usage.cache_read.input_tokens"),
            None
        );
        assert_eq!(
            get(&attributes, "server.address"),
            Some(&Value::from("::1"))
        );
        assert_eq!(get(&attributes, "server.port"), Some(&Value::I64(8443)));
        assert_eq!(get(&attributes, "k8s.pod.uid"), Some(&Value::from("uid-1")));
        assert_eq!(
            get(&attributes, "tokenmeter.header.x-team"),
            Some(&Value::from("search"))
        );
        assert_eq!(model(&record), Some("llama"));
        for (key, value) in [
            ("k8s.node.name", "node-a"),
            ("k8s.pod.name", "search-agent-1"),
            ("k8s.namespace.name", "search"),
            ("k8s.deployment.name", "search-agent"),
            ("k8s.pod.label.app.kubernetes.io/name", "agent"),
            ("tokenmeter.team", "search"),
            ("tokenmeter.org", "acme"),
        ] {
            assert_eq!(get(&attributes, key), Some(&Value::from(value)), "{key}");
        }
        assert_eq!(get(&attributes, "tokenmeter.user"), None);
    }
}
