//! JSON lines on standard output, flushed per batch: for `run --export stdout` and for piping
//! usage records into other tools.

use std::io::Write;

use super::shipper::{DeliveryError, Destination};

#[derive(Default)]
pub struct StdoutExport;

impl Destination for StdoutExport {
    fn deliver(&mut self, records: &[Vec<u8>]) -> Result<(), DeliveryError> {
        let mut stdout = std::io::stdout().lock();
        for line in records {
            // A closed stdout (the reader went away) must not stop metering: the records
            // count as delivered, there is no one to deliver them to.
            if stdout
                .write_all(line)
                .and_then(|_| stdout.write_all(b"\n"))
                .is_err()
            {
                return Ok(());
            }
        }
        let _ = stdout.flush();
        Ok(())
    }
}
