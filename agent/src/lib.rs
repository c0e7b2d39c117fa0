//! tokenmeter-agent as a library: the pipeline's stages, for the binary, the benchmarks and
//! the tests. The stages in data-flow order:
//! capture -> streams -> http -> llm -> tokens -> attribution -> export.

pub mod attribution;
pub mod capture;
pub mod config;
pub mod export;
pub mod http;
mod internal_events;
pub mod llm;
pub mod meter;
pub mod pipeline;
pub mod record;
pub mod streams;
pub mod telemetry;
pub mod tokens;
