//! Export: where usage records go. `stdout` writes JSON lines (for `run --export stdout` and
//! for piping into other tools); the OTLP exporter with its disk spool comes with its own
//! change.

mod stdout;

pub use stdout::StdoutExport;

use crate::record::UsageRecord;

/// A destination for usage records.
pub trait RecordSink {
    fn export(&mut self, record: &UsageRecord);
}
