//! The usage record: one per LLM request seen, the agent's product. It carries no prompt or
//! completion text and no API key, only counts, models, identity fingerprints and timings.
//!
//! Its `id` is derived from what the kernel reported about the request (boot, process, `SSL*`,
//! stream position, first byte's time), so the same request always gets the same id and an
//! exporter may send it twice without it being counted twice.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    attribution::{kubernetes::PodAttributes, Identity, Tenant, Workload},
    capture::sockets::SocketPair,
    http::{Exchange, HttpError, HttpVersion, Role},
    llm::{Api, LlmCall},
    tokens::TokenCounts,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// Stable id: the same request always has the same one.
    pub id: String,
    /// Wall-clock time of the request's first byte and of the response's last byte.
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// Which end of the connection the agent saw this on: a request between two metered
    /// pods is seen twice, once per side, and billing counts one side.
    pub side: Role,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The process's pod and container (`k8s.pod.uid`, `container.id`) and cgroup.
    pub workload: Workload,
    /// The node the agent runs on (`k8s.node.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod's metadata from the Kubernetes API, when the agent has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodAttributes>,
    /// Who the call is billed to, by the operator's tenant rules.
    #[serde(skip_serializing_if = "Tenant::is_empty")]
    pub tenant: Tenant,
    /// The connection's client and server socket addresses (`ip:port`), when the TLS library
    /// was given a socket (`SSL_set_fd`): with the start time they pair the client-side and
    /// server-side records of one call, even across nodes.
    pub client_address: Option<String>,
    pub server_address: Option<String>,
    pub api: Api,
    pub operation: &'static str,
    pub provider: &'static str,
    pub http_version: HttpVersion,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub stream: bool,
    /// HTTP status of the response, when there was one.
    pub status: Option<u16>,
    pub finish_reasons: Vec<String>,
    pub tokens: TokenCounts,
    pub identity: Identity,
    /// From the request's first byte to the first output event of a stream.
    pub time_to_first_token_ns: Option<u64>,
    /// From the request's first byte to the last output event of a stream.
    pub time_to_last_token_ns: Option<u64>,
    /// From the request's first byte to the response's last.
    pub duration_ns: Option<u64>,
    /// Why the record is partial (HTTP or body decoding problems, a server error).
    pub error: Option<String>,
}

/// Where a connection's records come from.
#[derive(Clone, Debug, Default)]
pub struct ConnMeta {
    pub comm: String,
    pub cgroup_id: u64,
    /// The pod and container of the process, from its cgroup.
    pub workload: Workload,
}

/// What makes records of this agent run: their ids and their clock.
pub struct RecordFactory {
    /// This boot's id (/proc/sys/kernel/random/boot_id): capture positions restart at boot.
    pub boot_id: String,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC: turns the capture's timestamps into wall time.
    pub wall_offset_ns: i128,
}

impl RecordFactory {
    /// Builds the record of an LLM call (`None` if the call's API is unknown).
    pub fn build(
        &self,
        exchange: &Exchange,
        meta: &ConnMeta,
        addresses: Option<SocketPair>,
        call: &LlmCall,
        tokens: TokenCounts,
        identity: Identity,
    ) -> Option<UsageRecord> {
        let api = call.api?;
        let mut record = build(self, exchange, meta, call, api, tokens, identity);
        if let Some(pair) = addresses {
            let (client, server) = match exchange.role {
                Role::Client => (pair.local, pair.remote),
                Role::Server => (pair.remote, pair.local),
            };
            record.client_address = Some(client.to_string());
            record.server_address = Some(server.to_string());
        }
        Some(record)
    }
}

fn build(
    factory: &RecordFactory,
    exchange: &Exchange,
    meta: &ConnMeta,
    call: &LlmCall,
    api: Api,
    tokens: TokenCounts,
    identity: Identity,
) -> UsageRecord {
    let (boot_id, wall_offset_ns) = (&factory.boot_id, factory.wall_offset_ns);
    let request = &exchange.request;
    let response = exchange.response.as_ref();
    let end_ns = response.map_or(request.end_ns, |r| r.end_ns);
    let wall = |ns: u64| (ns as i128 + wall_offset_ns).max(0) as u64;
    // A streaming client may close right after the API's end-of-stream event, before the
    // chunked body's terminator: nothing of the call is missing then.
    let finished_stream = call.stream_complete
        && matches!(
            exchange.error,
            Some(HttpError::Incomplete { what: "response" })
        );
    let error = exchange
        .error
        .as_ref()
        .filter(|_| !finished_stream)
        .map(ToString::to_string)
        .or_else(|| call.error.clone())
        .or_else(|| call.decode_error.clone());
    UsageRecord {
        id: record_id(boot_id, exchange),
        start_time_unix_nano: wall(request.start_ns),
        end_time_unix_nano: wall(end_ns),
        side: exchange.role,
        pid: exchange.conn.pid,
        comm: meta.comm.clone(),
        cgroup_id: meta.cgroup_id,
        workload: meta.workload.clone(),
        node_name: None,
        pod: None,
        tenant: Tenant::default(),
        client_address: None,
        server_address: None,
        api,
        operation: api.operation(),
        provider: api.provider(),
        http_version: request.version,
        request_model: call.request_model.clone(),
        response_model: call.response_model.clone(),
        stream: call.stream,
        status: response.map(|r| r.status),
        finish_reasons: call.finish_reasons.clone(),
        tokens,
        identity,
        time_to_first_token_ns: call
            .first_token_ns
            .map(|t| t.saturating_sub(request.start_ns)),
        time_to_last_token_ns: call
            .last_token_ns
            .map(|t| t.saturating_sub(request.start_ns)),
        duration_ns: response.map(|r| r.end_ns.saturating_sub(request.start_ns)),
        error,
    }
}

/// sha256 over the kernel's facts about the request, first 16 bytes in hex.
/// This boot's id (empty where the kernel does not say): part of every record id, since
/// capture positions and clocks restart at boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn record_id(boot_id: &str, exchange: &Exchange) -> String {
    let mut hash = Sha256::new();
    hash.update(boot_id.as_bytes());
    hash.update(exchange.conn.pid.to_le_bytes());
    hash.update(exchange.conn.conn.to_le_bytes());
    hash.update(exchange.request.stream_pos.to_le_bytes());
    hash.update(exchange.request.start_ns.to_le_bytes());
    hex::encode(&hash.finalize()[..16])
}
