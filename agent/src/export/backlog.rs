//! The backlog between the record worker and the shipper: records wait here until the
//! destination acknowledged them. On disk (the spool) when a directory is configured and
//! usable; in memory otherwise, bounded the same way and lost on restart. A spool that fails
//! while the agent runs (a full or read-only disk) is replaced by the memory queue, loudly,
//! so metering goes on; what was already on disk is delivered by the next start.

use std::collections::VecDeque;

use tracing::error;

use super::spool::{Batch, Cursor, Spool, SpoolConfig, SpoolError};

/// Records not yet acknowledged, in memory. Cursors count records: `offset` is the index of a
/// record since the queue was made.
pub struct MemoryQueue {
    records: VecDeque<Vec<u8>>,
    /// Index of `records[0]`.
    first: u64,
    /// Index of the next record to read.
    read: u64,
    bytes: u64,
    max_bytes: u64,
}

impl MemoryQueue {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            records: VecDeque::new(),
            first: 0,
            read: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends a record; returns how many of the oldest were dropped to stay in bounds.
    fn append(&mut self, record: &[u8]) -> u64 {
        self.bytes += record.len() as u64;
        self.records.push_back(record.to_vec());
        let mut dropped = 0;
        while self.bytes > self.max_bytes && self.records.len() > 1 {
            let old = self.records.pop_front().expect("checked");
            self.bytes -= old.len() as u64;
            self.first += 1;
            dropped += 1;
        }
        self.read = self.read.max(self.first);
        dropped
    }

    fn read_batch(&mut self, max: usize) -> Batch {
        let start = (self.read - self.first) as usize;
        let records: Vec<Vec<u8>> = self.records.iter().skip(start).take(max).cloned().collect();
        self.read += records.len() as u64;
        Batch {
            records,
            end: Self::cursor(self.read),
        }
    }

    fn ack(&mut self, end: Cursor) {
        while self.first < end.offset {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.len() as u64;
            self.first += 1;
        }
    }

    fn cursor(index: u64) -> Cursor {
        Cursor {
            segment: 0,
            offset: index,
        }
    }
}

/// Where undelivered records wait.
pub enum Backlog {
    Disk(Spool),
    Memory(MemoryQueue),
}

impl Backlog {
    /// The disk spool if a directory is configured and usable, else a memory queue of the
    /// same size (with a loud log line when the directory was not usable).
    pub fn open(spool: Option<SpoolConfig>, max_bytes: u64) -> Self {
        let Some(spool) = spool else {
            return Self::Memory(MemoryQueue::new(max_bytes));
        };
        match Spool::open(spool.clone()) {
            Ok(spool) => Self::Disk(spool),
            Err(e) => {
                error!(
                    %e,
                    "the spool cannot be used: usage records are kept in memory until \
                     delivered and are lost if the agent stops first; fix the directory ({}) \
                     and restart",
                    spool.dir.display()
                );
                Self::Memory(MemoryQueue::new(max_bytes))
            }
        }
    }

    /// Appends a record; returns how many old records were dropped (the backlog was full).
    pub fn append(&mut self, record: &[u8]) -> Result<u64, SpoolError> {
        match self {
            Self::Disk(spool) => spool.append(record),
            Self::Memory(queue) => Ok(queue.append(record)),
        }
    }

    /// Makes appended records durable (a no-op in memory).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        match self {
            Self::Disk(spool) => spool.flush(),
            Self::Memory(_) => Ok(()),
        }
    }

    pub fn read_batch(&mut self, max: usize) -> Result<Batch, SpoolError> {
        match self {
            Self::Disk(spool) => spool.read_batch(max),
            Self::Memory(queue) => Ok(queue.read_batch(max)),
        }
    }

    pub fn ack(&mut self, end: Cursor) -> Result<(), SpoolError> {
        match self {
            Self::Disk(spool) => spool.ack(end),
            Self::Memory(queue) => {
                queue.ack(end);
                Ok(())
            }
        }
    }

    /// Reads again from the last acknowledgement (after a failed delivery).
    pub fn rewind(&mut self) {
        match self {
            Self::Disk(spool) => spool.rewind(),
            Self::Memory(queue) => queue.read = queue.first,
        }
    }

    /// Bytes waiting (on disk: including acknowledged records kept for replay).
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Disk(spool) => spool.bytes(),
            Self::Memory(queue) => queue.bytes,
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, Self::Disk(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_queue_delivers_in_order_and_rewinds_after_a_failure() {
        let mut backlog = Backlog::Memory(MemoryQueue::new(1 << 20));
        for i in 0..5u8 {
            backlog.append(&[b'a' + i]).unwrap();
        }
        let first = backlog.read_batch(3).unwrap();
        assert_eq!(
            first.records,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        backlog.rewind();
        let again = backlog.read_batch(3).unwrap();
        assert_eq!(again, first, "a failed batch is read again, the same");
        backlog.ack(again.end).unwrap();
        let rest = backlog.read_batch(10).unwrap();
        assert_eq!(rest.records, vec![b"d".to_vec(), b"e".to_vec()]);
        backlog.ack(rest.end).unwrap();
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn a_full_memory_queue_drops_the_oldest_and_counts_them() {
        let mut backlog = Backlog::Memory(MemoryQueue::new(10));
        assert_eq!(backlog.append(b"12345").unwrap(), 0);
        assert_eq!(backlog.append(b"67890").unwrap(), 0);
        assert_eq!(backlog.append(b"abc").unwrap(), 1);
        let batch = backlog.read_batch(10).unwrap();
        assert_eq!(batch.records, vec![b"67890".to_vec(), b"abc".to_vec()]);
    }
}
