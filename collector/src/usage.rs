//! The usage event: one metered LLM call as the collector stores it, decoded from the agent's
//! OTLP log record (`event_name = tokenmeter.usage`, attribute names from the agent's
//! `export/otlp/attributes.rs`).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, AnyValue, KeyValue},
    logs::v1::LogRecord,
};
use serde::{Deserialize, Serialize};

/// The agent's log records of usage.
pub const EVENT_NAME: &str = "tokenmeter.usage";
/// The agent's per-pod GPU usage records: the GPU time a pod held over an interval, priced per
/// GPU-second by the entry matching the GPU's product name (`tokenmeter.gpu.name`).
pub const GPU_EVENT_NAME: &str = "tokenmeter.gpu_usage";
/// The bill item and price-book field of GPU time.
pub const GPU_TIME: &str = "gpu_time";
/// The `operation` of a GPU usage row: not a call, so no request is counted for it.
pub const GPU_OPERATION: &str = "gpu";

/// Token quantities as the agent reports them: `input` includes the cached and
/// cache-creation tokens, `output` includes the reasoning tokens (OpenTelemetry's GenAI usage
/// attributes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub cached_input: u64,
    pub cache_creation_input: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// The disjoint quantities a call is billed for, so no token is priced twice or not at all.
pub const TOKEN_TYPES: [&str; 5] = [
    "input",
    "cached_input",
    "cache_creation_input",
    "output",
    "reasoning",
];

impl Tokens {
    /// (type, quantity) of the disjoint billable quantities: uncached input, cached input,
    /// cache creation, output without reasoning, reasoning.
    pub fn billable(&self) -> [(&'static str, u64); 5] {
        let cached = self.cached_input.min(self.input);
        let creation = self.cache_creation_input.min(self.input - cached);
        let reasoning = self.reasoning.min(self.output);
        [
            ("input", self.input - cached - creation),
            ("cached_input", cached),
            ("cache_creation_input", creation),
            ("output", self.output - reasoning),
            ("reasoning", reasoning),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// One metered call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The agent's stable record id: the deduplication key.
    pub id: String,
    /// End of the call (the log record's timestamp), ns since the epoch.
    pub time_ns: i64,
    pub start_ns: Option<i64>,
    pub side: Side,
    pub provider: String,
    pub operation: String,
    /// The model that answered, else the one asked for; empty when unknown.
    pub model: String,
    pub tokens: Tokens,
    /// GPU time held over the interval, µs (GPU usage records only; 0 for calls).
    pub gpu_time_us: u64,
    /// Every string-valued attribute of the record and its resource, for account rules
    /// (`tokenmeter.user`, `k8s.namespace.name`, `tokenmeter.api_key.fingerprint`, ...).
    pub attributes: BTreeMap<String, String>,
}

/// Why a log record is not a usage event.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record has no tokenmeter.record.id")]
    MissingId,
    #[error("the record has no timestamp")]
    MissingTime,
    #[error("tokenmeter.side is {0:?}, not client or server")]
    BadSide(String),
    #[error("{0} is not a non-negative integer")]
    BadCount(&'static str),
}

impl UsageEvent {
    /// Decodes one log record; `resource` is its resource's attributes. `Ok(None)` for log
    /// records that are not usage.
    pub fn from_log(
        record: &LogRecord,
        resource: &[KeyValue],
    ) -> Result<Option<UsageEvent>, DecodeError> {
        let is_gpu = record.event_name == GPU_EVENT_NAME;
        let is_usage = is_gpu
            || record.event_name == EVENT_NAME
            || record
                .attributes
                .iter()
                .any(|kv| kv.key == "tokenmeter.record.id");
        if !is_usage {
            return Ok(None);
        }
        let mut attributes = BTreeMap::new();
        let mut numbers = BTreeMap::new();
        for kv in resource.iter().chain(&record.attributes) {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => {
                    attributes.insert(kv.key.clone(), s.clone());
                }
                Some(Value::IntValue(i)) => {
                    numbers.insert(kv.key.as_str(), *i);
                }
                _ => {}
            }
        }
        let count = |name: &'static str| -> Result<u64, DecodeError> {
            match numbers.get(name) {
                None => Ok(0),
                Some(i) => u64::try_from(*i).map_err(|_| DecodeError::BadCount(name)),
            }
        };
        let id = attributes
            .get("tokenmeter.record.id")
            .filter(|id| !id.is_empty())
            .cloned()
            .ok_or(DecodeError::MissingId)?;
        let time = if record.time_unix_nano != 0 {
            record.time_unix_nano
        } else {
            record.observed_time_unix_nano
        };
        if time == 0 {
            return Err(DecodeError::MissingTime);
        }
        let side = match attributes.get("tokenmeter.side").map(String::as_str) {
            Some("client") => Side::Client,
            Some("server") | None => Side::Server,
            Some(other) => return Err(DecodeError::BadSide(other.to_string())),
        };
        let text = |name: &str| attributes.get(name).cloned().unwrap_or_default();
        if is_gpu {
            let gpu_time_us = count("tokenmeter.gpu.time_us")?;
            return Ok(Some(UsageEvent {
                time_ns: i64::try_from(time).unwrap_or(i64::MAX),
                start_ns: numbers
                    .get("tokenmeter.start_time_unix_nano")
                    .copied()
                    .filter(|n| *n > 0),
                side: Side::Server,
                provider: "nvidia".into(),
                operation: GPU_OPERATION.into(),
                model: text("tokenmeter.gpu.name"),
                tokens: Tokens::default(),
                gpu_time_us,
                id,
                attributes,
            }));
        }
        let model = attributes
            .get("gen_ai.response.model")
            .or_else(|| attributes.get("gen_ai.request.model"))
            .cloned()
            .unwrap_or_default();
        Ok(Some(UsageEvent {
            time_ns: i64::try_from(time).unwrap_or(i64::MAX),
            start_ns: numbers
                .get("tokenmeter.start_time_unix_nano")
                .copied()
                .filter(|n| *n > 0),
            side,
            provider: text("gen_ai.provider.name"),
            operation: text("gen_ai.operation.name"),
            model,
            tokens: Tokens {
                input: count("gen_ai.usage.input_tokens")?,
                cached_input: count("gen_ai.usage.cache_read.input_tokens")?,
                cache_creation_input: count("gen_ai.usage.cache_creation.input_tokens")?,
                output: count("gen_ai.usage.output_tokens")?,
                reasoning: count("gen_ai.usage.reasoning.output_tokens")?,
            },
            gpu_time_us: 0,
            id,
            attributes,
        }))
    }
}

/// A string attribute, for building test records and requests.
pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(attributes: Vec<KeyValue>) -> LogRecord {
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            event_name: EVENT_NAME.into(),
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_the_agents_attributes() {
        let record = log(vec![
            string_attribute("tokenmeter.record.id", "abc"),
            string_attribute("tokenmeter.side", "client"),
            string_attribute("gen_ai.request.model", "gpt-4o"),
            int_attribute("gen_ai.usage.input_tokens", 100),
            int_attribute("gen_ai.usage.cache_read.input_tokens", 40),
            int_attribute("gen_ai.usage.output_tokens", 30),
            int_attribute("gen_ai.usage.reasoning.output_tokens", 10),
        ]);
        let resource = [string_attribute("k8s.node.name", "node-1")];
        let event = UsageEvent::from_log(&record, &resource).unwrap().unwrap();
        assert_eq!(event.id, "abc");
        assert_eq!(event.side, Side::Client);
        assert_eq!(event.model, "gpt-4o");
        assert_eq!(event.attributes["k8s.node.name"], "node-1");
        assert_eq!(
            event.tokens.billable(),
            [
                ("input", 60),
                ("cached_input", 40),
                ("cache_creation_input", 0),
                ("output", 20),
                ("reasoning", 10)
            ]
        );
    }

    #[test]
    fn bad_records_are_named_and_other_logs_ignored() {
        assert_eq!(UsageEvent::from_log(&LogRecord::default(), &[]), Ok(None));
        // A pod's GPU interval: GPU time priced by the GPU's name, no tokens, not a call.
        let gpu = LogRecord {
            event_name: GPU_EVENT_NAME.into(),
            ..log(vec![
                string_attribute("tokenmeter.record.id", "gpu-1"),
                string_attribute("tokenmeter.gpu.name", "NVIDIA H100 80GB HBM3"),
                int_attribute("tokenmeter.gpu.time_us", 60_000_000),
                string_attribute("tokenmeter.team", "ml"),
            ])
        };
        let event = UsageEvent::from_log(&gpu, &[]).unwrap().unwrap();
        assert_eq!(event.gpu_time_us, 60_000_000);
        assert_eq!(event.operation, GPU_OPERATION);
        assert_eq!(event.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(event.tokens, Tokens::default());
        let no_id = log(vec![string_attribute("tokenmeter.record.id", "")]);
        assert_eq!(
            UsageEvent::from_log(&no_id, &[]),
            Err(DecodeError::MissingId)
        );
        let negative = log(vec![
            string_attribute("tokenmeter.record.id", "x"),
            int_attribute("gen_ai.usage.output_tokens", -3),
        ]);
        assert_eq!(
            UsageEvent::from_log(&negative, &[]),
            Err(DecodeError::BadCount("gen_ai.usage.output_tokens"))
        );
    }
}
