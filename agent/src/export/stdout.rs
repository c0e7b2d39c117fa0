//! JSON lines on standard output, flushed per record.

use std::io::Write;

use super::{LineSink, RecordSink};
use crate::record::UsageRecord;

#[derive(Default)]
pub struct StdoutExport;

impl RecordSink for StdoutExport {
    fn export(&mut self, record: &UsageRecord) {
        let line = serde_json::to_vec(record).expect("records serialise");
        self.write_line(&line);
    }
}

impl LineSink for StdoutExport {
    fn write_line(&mut self, line: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (the reader went away) must not stop metering.
        let _ = stdout
            .write_all(line)
            .and_then(|_| stdout.write_all(b"\n"))
            .and_then(|_| stdout.flush());
    }
}
