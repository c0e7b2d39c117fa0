//! The OpenTelemetry GenAI metrics of the metered calls, and the cumulative counters.
//!
//! - `gen_ai.client.token.usage` (histogram, `{token}`): one measurement per token type a
//!   call has (`input`, `output`, and Envoy AI Gateway's `cached_input`,
//!   `cache_creation_input`, `reasoning`); nothing when a count is unknown.
//! - `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`,
//!   `gen_ai.server.time_per_output_token` for server-side records and
//!   `gen_ai.client.operation.duration` for client-side ones (seconds).
//! - `tokenmeter.tokens` and `tokenmeter.requests`: cumulative sums per pod, API key, model,
//!   token type and count source, from [`super::totals`], checkpointed across restarts.
//!
//! Histograms are observability, not billing data: they restart empty with the agent.
//! Billing reads the log records or the cumulative sums.

use std::sync::{Arc, Mutex};

use opentelemetry::{
    metrics::{Histogram, Meter, MeterProvider as _, ObservableCounter},
    InstrumentationScope, KeyValue,
};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use serde_json::Value as Json;

use super::{
    attributes::{model, text, SCHEMA_URL},
    totals::{key_values, Totals},
};

/// Token histogram buckets (the semantic conventions' advice).
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// (token type, JSON pointer) of the token histogram.
const TOKEN_TYPES: [(&str, &str); 5] = [
    ("input", "/tokens/input"),
    ("output", "/tokens/output"),
    ("cached_input", "/tokens/cached_input"),
    ("cache_creation_input", "/tokens/cache_creation_input"),
    ("reasoning", "/tokens/reasoning_output"),
];

pub struct GenAiMetrics {
    token_usage: Histogram<u64>,
    server_duration: Histogram<f64>,
    client_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    // Kept so their callbacks stay registered.
    _tokens: ObservableCounter<u64>,
    _requests: ObservableCounter<u64>,
}

impl GenAiMetrics {
    pub fn new(provider: &SdkMeterProvider, totals: Arc<Mutex<Totals>>) -> Self {
        let meter = provider.meter_with_scope(
            InstrumentationScope::builder("tokenmeter-agent")
                .with_version(env!("CARGO_PKG_VERSION"))
                .with_schema_url(SCHEMA_URL)
                .build(),
        );
        let seconds =
            |meter: &Meter, name: &'static str, description: &'static str, buckets: &[f64]| {
                meter
                    .f64_histogram(name)
                    .with_unit("s")
                    .with_description(description)
                    .with_boundaries(buckets.to_vec())
                    .build()
            };
        let token_totals = totals.clone();
        Self {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of tokens used per call, by token type.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            server_duration: seconds(
                &meter,
                "gen_ai.server.request.duration",
                "Time from the request's first byte to the response's last, server side.",
                &DURATION_BUCKETS,
            ),
            client_duration: seconds(
                &meter,
                "gen_ai.client.operation.duration",
                "Time from the request's first byte to the response's last, client side.",
                &DURATION_BUCKETS,
            ),
            time_to_first_token: seconds(
                &meter,
                "gen_ai.server.time_to_first_token",
                "Time from the request to the first output token of a stream.",
                &TTFT_BUCKETS,
            ),
            time_per_output_token: seconds(
                &meter,
                "gen_ai.server.time_per_output_token",
                "Time per output token after the first, of a stream.",
                &TPOT_BUCKETS,
            ),
            _tokens: meter
                .u64_observable_counter("tokenmeter.tokens")
                .with_unit("{token}")
                .with_description(
                    "Tokens metered since the agent's spool was created, per pod, API key, \
                     model, token type and count source.",
                )
                .with_callback(move |observer| {
                    let totals = token_totals.lock().unwrap_or_else(|p| p.into_inner());
                    for (series, value) in &totals.tokens {
                        observer.observe(*value, &key_values(series));
                    }
                })
                .build(),
            _requests: meter
                .u64_observable_counter("tokenmeter.requests")
                .with_unit("{request}")
                .with_description("LLM calls metered, per pod, API key and model.")
                .with_callback(move |observer| {
                    let totals = totals.lock().unwrap_or_else(|p| p.into_inner());
                    for (series, value) in &totals.requests {
                        observer.observe(*value, &key_values(series));
                    }
                })
                .build(),
        }
    }

    /// Records the histograms of one usage record (its spooled JSON).
    pub fn record(&self, record: &Json) {
        let mut common: Vec<KeyValue> = Vec::with_capacity(8);
        for (name, pointer) in [
            ("gen_ai.operation.name", "/operation"),
            ("gen_ai.provider.name", "/provider"),
            ("gen_ai.request.model", "/request_model"),
            ("tokenmeter.side", "/side"),
        ] {
            if let Some(value) = text(record, pointer) {
                common.push(KeyValue::new(name, value.to_string()));
            }
        }
        if let Some(model) = model(record) {
            common.push(KeyValue::new("gen_ai.response.model", model.to_string()));
        }
        if let Some((host, port)) = text(record, "/server_address").and_then(|a| a.rsplit_once(':'))
        {
            common.push(KeyValue::new(
                "server.address",
                host.trim_matches(['[', ']']).to_string(),
            ));
            if let Ok(port) = port.parse::<i64>() {
                common.push(KeyValue::new("server.port", port));
            }
        }
        for (kind, pointer) in TOKEN_TYPES {
            if let Some(count) = record.pointer(pointer).and_then(Json::as_u64) {
                let mut attributes = common.clone();
                attributes.push(KeyValue::new("gen_ai.token.type", kind));
                self.token_usage.record(count, &attributes);
            }
        }
        if let Some(error) = text(record, "/error") {
            common.push(KeyValue::new("error.type", error.to_string()));
        }
        let seconds = |pointer: &str| {
            record
                .pointer(pointer)
                .and_then(Json::as_u64)
                .map(|ns| ns as f64 / 1e9)
        };
        let server = text(record, "/side") == Some("server");
        if let Some(duration) = seconds("/duration_ns") {
            let histogram = if server {
                &self.server_duration
            } else {
                &self.client_duration
            };
            histogram.record(duration, &common);
        }
        if !server {
            return;
        }
        if let Some(first) = seconds("/time_to_first_token_ns") {
            self.time_to_first_token.record(first, &common);
            let output = record.pointer("/tokens/output").and_then(Json::as_u64);
            if let (Some(last), Some(output)) = (seconds("/time_to_last_token_ns"), output) {
                if output > 1 {
                    self.time_per_output_token
                        .record((last - first) / (output - 1) as f64, &common);
                }
            }
        }
    }
}
