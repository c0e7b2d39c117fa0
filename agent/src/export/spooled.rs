//! An exporter behind the disk spool: every record is written to the spool and synced before
//! it is handed to the destination, and acknowledged only after. A record the agent produced
//! is therefore delivered even if the agent dies right after, on its next start, with the
//! same id. If the spool cannot be written (a full or read-only disk) the records go straight
//! to the destination and the problem is logged once: metering goes on.

use tracing::{error, warn};

use super::{
    spool::{Spool, SpoolConfig, SpoolError},
    RecordSink,
};
use crate::record::UsageRecord;

/// A destination that takes records as JSON lines.
pub trait LineSink {
    fn write_line(&mut self, line: &[u8]);
}

pub struct SpooledExport<S: LineSink> {
    spool: Option<Spool>,
    destination: S,
    /// Records the spool dropped (it was full) since start.
    pub dropped: u64,
    failed: bool,
}

/// Records handed to the destination per acknowledgement.
const BATCH: usize = 256;

impl<S: LineSink> SpooledExport<S> {
    /// Opens the spool and first delivers what a previous run left in it.
    pub fn open(config: SpoolConfig, destination: S) -> Result<Self, SpoolError> {
        let mut export = Self {
            spool: Some(Spool::open(config)?),
            destination,
            dropped: 0,
            failed: false,
        };
        export.deliver();
        Ok(export)
    }

    /// Hands everything not yet delivered to the destination.
    fn deliver(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        loop {
            let batch = match spool.read_batch(BATCH) {
                Ok(batch) if batch.records.is_empty() => return,
                Ok(batch) => batch,
                Err(e) => return self.fail(e),
            };
            for record in &batch.records {
                self.destination.write_line(record);
            }
            if let Err(e) = spool.ack(batch.end) {
                return self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: SpoolError) {
        if !self.failed {
            error!(%e, "the spool failed: usage records are exported without it from now on");
            self.failed = true;
        }
        self.spool = None;
    }

    pub fn into_destination(self) -> S {
        self.destination
    }
}

impl<S: LineSink> RecordSink for SpooledExport<S> {
    fn export(&mut self, record: &UsageRecord) {
        let line = serde_json::to_vec(record).expect("records serialise");
        let Some(spool) = self.spool.as_mut() else {
            self.destination.write_line(&line);
            return;
        };
        match spool
            .append(&line)
            .and_then(|dropped| spool.flush().map(|()| dropped))
        {
            Ok(0) => {}
            Ok(dropped) => {
                self.dropped += dropped;
                warn!(
                    dropped,
                    total = self.dropped,
                    "the spool is full: the oldest undelivered usage records were dropped"
                );
            }
            Err(e) => {
                self.fail(e);
                self.destination.write_line(&line);
                return;
            }
        }
        self.deliver();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Vec<String>);

    impl LineSink for Lines {
        fn write_line(&mut self, line: &[u8]) {
            self.0.push(String::from_utf8(line.to_vec()).unwrap());
        }
    }

    fn config(dir: &std::path::Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 4096,
        }
    }

    #[test]
    fn a_backlog_left_by_a_crash_is_delivered_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A run that spooled two records and died before delivering them.
            let mut spool = Spool::open(config(dir.path())).unwrap();
            spool.append(br#"{"id":"a"}"#).unwrap();
            spool.append(br#"{"id":"b"}"#).unwrap();
            spool.flush().unwrap();
        }
        let export = SpooledExport::open(config(dir.path()), Lines::default()).unwrap();
        assert_eq!(
            export.into_destination().0,
            vec![r#"{"id":"a"}"#, r#"{"id":"b"}"#]
        );
        // Delivered and acknowledged: a third start sends nothing again.
        let again = SpooledExport::open(config(dir.path()), Lines::default()).unwrap();
        assert!(again.into_destination().0.is_empty());
    }
}
