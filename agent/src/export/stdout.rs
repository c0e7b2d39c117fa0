//! JSON lines on standard output, flushed per record.

use std::io::Write;

use super::RecordSink;
use crate::record::UsageRecord;

#[derive(Default)]
pub struct StdoutExport;

impl RecordSink for StdoutExport {
    fn export(&mut self, record: &UsageRecord) {
        let line = serde_json::to_string(record).expect("records serialise");
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (the reader went away) must not stop metering.
        let _ = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
    }
}
