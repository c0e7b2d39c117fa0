//! Export: where usage records go. `stdout` writes JSON lines (for `run --export stdout` and
//! for piping into other tools), behind the disk spool when `--spool-dir` is given so that no
//! record is lost to a crash. The OTLP exporter comes with its own change.

pub mod spool;
mod spooled;
mod stdout;

pub use spooled::{LineSink, SpooledExport};
pub use stdout::StdoutExport;

use crate::record::UsageRecord;

/// A destination for usage records.
pub trait RecordSink {
    fn export(&mut self, record: &UsageRecord);
}
