//! tokenmeter-collector: the rating collector. Agents' OTLP usage flows through named stages:
//! `receive` (OTLP gRPC/HTTP, authentication) -> dedupe and `store` (idempotent on the record
//! id, SQLite by default) -> `rate` (price book, the price in effect at the call's time) ->
//! `bill` (per period and enterprise, tiers on the enterprise's total, team and user shares)
//! -> `export` (Lago, OpenMeter, a signed webhook, files).
//! `accounts` maps a call's attributes to enterprise, team and user; `quota` keeps budgets
//! and answers gateways' admission checks (HTTP and Envoy `ext_authz`).

pub mod accounts;
pub mod api;
pub mod bill;
pub mod config;
pub mod export;
pub mod quota;
pub mod rate;
pub mod receive;
pub mod server;
pub mod store;
pub mod usage;
