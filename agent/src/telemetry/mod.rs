//! The agent's own health: Prometheus metrics of every stage (what was captured, dropped,
//! decoded and metered) and the `/healthz` and `/readyz` probes, on a listener of their own.

mod metrics;
mod server;

pub use metrics::AgentMetrics;
pub use server::serve;
