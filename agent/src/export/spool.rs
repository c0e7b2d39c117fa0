//! The disk spool: usage records are written here before they are exported and leave only
//! once the exporter says they were delivered, so a dead receiver or a restarted agent loses
//! nothing. Delivery is at least once: after a crash the records since the last
//! acknowledgement are sent again, with the same ids, and the receiving side deduplicates.
//!
//! Layout: segment files `<seq>.jsonl` (one record a line, appended, synced on `flush`) and a
//! `cursor` file with the first byte not yet acknowledged (`<seq> <offset>`), replaced
//! atomically. A torn last line (a crash mid-write) is cut off at open. The spool is bounded:
//! past `max_bytes` the oldest segment is dropped, and the caller is told how many records
//! went, so the loss is counted and logged, never silent.
//!
//! A reader that derives state from the records (the cumulative token counters) can pin the
//! spool with `keep_from`: acknowledged segments at or after that cursor stay on disk, so it
//! can replay them after a crash.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

/// Where and how big.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Most bytes kept on disk; the oldest records are dropped beyond it.
    pub max_bytes: u64,
    /// Size at which a new segment is started.
    pub segment_bytes: u64,
}

/// A position in the spool: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// Records read from the spool, and the cursor just after them (to acknowledge).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub records: Vec<Vec<u8>>,
    pub end: Cursor,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory or a file could not be used (missing permission, full disk, ...).
    #[error("spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A record must be one line.
    #[error("a spooled record cannot contain a newline")]
    Newline,
}

struct Segment {
    seq: u64,
    len: u64,
    lines: u64,
}

pub struct Spool {
    config: SpoolConfig,
    segments: VecDeque<Segment>,
    writer: File,
    acked: Cursor,
    read: Cursor,
    /// Segments at or after this one are kept even once acknowledged (see `keep_from`).
    keep: Cursor,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Spool {
    /// Opens (or creates) the spool, resuming from the last acknowledged record.
    pub fn open(config: SpoolConfig) -> Result<Self, SpoolError> {
        fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let mut seqs: Vec<u64> = fs::read_dir(&config.dir)
            .map_err(io(&config.dir))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut segments = VecDeque::new();
        for (i, seq) in seqs.iter().enumerate() {
            let path = segment_path(&config.dir, *seq);
            let last = i + 1 == seqs.len();
            let (len, lines) = scan(&path, last)?;
            segments.push_back(Segment {
                seq: *seq,
                len,
                lines,
            });
        }
        if segments.is_empty() {
            segments.push_back(Segment {
                seq: 1,
                len: 0,
                lines: 0,
            });
        }
        let current = segments.back().expect("one segment").seq;
        let writer = append_to(&segment_path(&config.dir, current))?;
        let first = segments.front().expect("one segment").seq;
        let acked = read_cursor(&config.dir)
            .filter(|c| c.segment >= first)
            .unwrap_or(Cursor {
                segment: first,
                offset: 0,
            });
        Ok(Self {
            config,
            segments,
            writer,
            acked,
            read: acked,
            keep: Cursor {
                segment: u64::MAX,
                offset: 0,
            },
        })
    }

    /// Appends one record (one line). Returns how many old records were dropped to stay
    /// within `max_bytes` (0 normally).
    pub fn append(&mut self, record: &[u8]) -> Result<u64, SpoolError> {
        if record.contains(&b'\n') {
            return Err(SpoolError::Newline);
        }
        if self.current().len >= self.config.segment_bytes {
            self.rotate()?;
        }
        let path = segment_path(&self.config.dir, self.current().seq);
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io(&path))?;
        let current = self.segments.back_mut().expect("one segment");
        current.len += line.len() as u64;
        current.lines += 1;
        self.enforce_limit()
    }

    /// Makes every appended record durable.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        let path = segment_path(&self.config.dir, self.current().seq);
        self.writer.sync_data().map_err(io(&path))
    }

    /// Up to `max` records after the last read (or, after a restart, the last acknowledged).
    pub fn read_batch(&mut self, max: usize) -> Result<Batch, SpoolError> {
        let batch = self.read_from(self.read, max)?;
        self.read = batch.end;
        Ok(batch)
    }

    /// Up to `max` records from `from` on, without moving the read position. A cursor in a
    /// segment that is gone starts at the next one still on disk.
    pub fn read_from(&self, from: Cursor, max: usize) -> Result<Batch, SpoolError> {
        let mut batch = Batch {
            records: Vec::new(),
            end: from,
        };
        while batch.records.len() < max {
            let Some(segment) = self.segments.iter().find(|s| s.seq >= batch.end.segment) else {
                break;
            };
            if segment.seq > batch.end.segment {
                batch.end = Cursor {
                    segment: segment.seq,
                    offset: 0,
                };
            }
            if batch.end.offset >= segment.len {
                match self.segments.iter().find(|s| s.seq > batch.end.segment) {
                    Some(next) => {
                        batch.end = Cursor {
                            segment: next.seq,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let path = segment_path(&self.config.dir, segment.seq);
            let mut file = File::open(&path).map_err(io(&path))?;
            file.seek(SeekFrom::Start(batch.end.offset))
                .map_err(io(&path))?;
            let mut reader = BufReader::new(file.take(segment.len - batch.end.offset));
            let mut line = Vec::new();
            while batch.records.len() < max {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                batch.end.offset += n as u64;
                line.pop();
                batch.records.push(line.clone());
            }
        }
        Ok(batch)
    }

    /// The position just after the last appended record.
    pub fn end(&self) -> Cursor {
        let current = self.current();
        Cursor {
            segment: current.seq,
            offset: current.len,
        }
    }

    /// Keeps the segments from `cursor` on until the next call, acknowledged or not (only the
    /// size limit removes them then).
    pub fn keep_from(&mut self, cursor: Cursor) -> Result<(), SpoolError> {
        self.keep = cursor;
        self.remove_done()
    }

    /// The receiver has everything before `end`: remember it durably and free what is done.
    pub fn ack(&mut self, end: Cursor) -> Result<(), SpoolError> {
        if end <= self.acked {
            return Ok(());
        }
        self.acked = end;
        write_cursor(&self.config.dir, end)?;
        self.remove_done()
    }

    /// Deletes the segments before both the acknowledgement and the `keep_from` cursor.
    fn remove_done(&mut self) -> Result<(), SpoolError> {
        let before = self.acked.segment.min(self.keep.segment);
        while self.segments.len() > 1 && self.segments[0].seq < before {
            let old = self.segments.pop_front().expect("checked");
            let path = segment_path(&self.config.dir, old.seq);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Starts reading again from the last acknowledgement (after a failed delivery).
    pub fn rewind(&mut self) {
        self.read = self.acked;
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn current(&self) -> &Segment {
        self.segments.back().expect("one segment")
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        let seq = self.current().seq + 1;
        self.writer = append_to(&segment_path(&self.config.dir, seq))?;
        self.segments.push_back(Segment {
            seq,
            len: 0,
            lines: 0,
        });
        Ok(())
    }

    /// Drops whole oldest segments while over the limit (never the one being written).
    fn enforce_limit(&mut self) -> Result<u64, SpoolError> {
        let mut dropped = 0;
        while self.bytes() > self.config.max_bytes && self.segments.len() > 1 {
            let old = self.segments.pop_front().expect("checked");
            let unacked = if self.acked.segment > old.seq {
                0
            } else {
                old.lines
            };
            dropped += unacked;
            let path = segment_path(&self.config.dir, old.seq);
            fs::remove_file(&path).map_err(io(&path))?;
            let first = Cursor {
                segment: self.segments[0].seq,
                offset: 0,
            };
            self.acked = self.acked.max(first);
            self.read = self.read.max(first);
        }
        Ok(dropped)
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:012}.jsonl"))
}

fn append_to(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

/// Length and line count of a segment; the last segment's torn tail is cut off.
fn scan(path: &Path, last: bool) -> Result<(u64, u64), SpoolError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if last && complete < bytes.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(complete as u64).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    let lines = bytes[..complete].iter().filter(|&&b| b == b'\n').count();
    Ok((complete as u64, lines as u64))
}

fn read_cursor(dir: &Path) -> Option<Cursor> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let (segment, offset) = text.trim().split_once(' ')?;
    Some(Cursor {
        segment: segment.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

/// Replaces the cursor file atomically and durably.
fn write_cursor(dir: &Path, cursor: Cursor) -> Result<(), SpoolError> {
    let tmp = dir.join("cursor.tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    write!(file, "{} {}", cursor.segment, cursor.offset).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, dir.join("cursor")).map_err(io(dir))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
