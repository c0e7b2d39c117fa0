//! Streams: turns the capture stage's chunks into ordered byte streams, one per connection
//! and direction.
//!
//! A connection is a `(pid, SSL*)` pair; the kernel numbers every byte of it per direction,
//! so reassembly is a matter of putting chunks at their position, holding the few that arrive
//! early, and declaring a gap where bytes can never come (a call cut at the capture limit, a
//! page the kernel could not read, a chunk dropped because the ring buffer was full). Memory
//! is bounded three ways: out-of-order bytes per stream, connections tracked (least recently
//! active finished first) and idle time. Downstream stages (HTTP, LLM) consume the
//! [`StreamEvent`]s incrementally and never see bytes out of order.

pub mod digest;
mod reassembler;

#[cfg(test)]
pub use reassembler::GapCause;
pub use reassembler::{CloseReason, ConnId, Reassembler, StreamEvent, StreamId, StreamLimits};
