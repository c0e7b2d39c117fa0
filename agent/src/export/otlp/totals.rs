//! Cumulative token and request counters per pod, API key, model, token type and count source,
//! exported as OTLP cumulative sums (resending one is harmless, so they converge on the true
//! totals whatever the network does).
//!
//! They survive restarts: a checkpoint in the spool directory holds the totals and the spool
//! position they include, and the spool keeps the segments after that position (`keep_from`).
//! At start the records after the checkpoint are replayed from the spool, so a crash between
//! two checkpoints loses no count and counts nothing twice.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::attributes::{is_gpu_usage, model, text};
use crate::export::spool::{Cursor, Spool, SpoolError};

/// The attributes of one counter series, sorted by name.
pub type Series = Vec<(String, String)>;

/// (token type, JSON pointer of the count, JSON pointer of its source).
const TOKEN_TYPES: [(&str, &str, &str); 5] = [
    ("input", "/tokens/input", "/tokens/input_source"),
    ("output", "/tokens/output", "/tokens/output_source"),
    (
        "cached_input",
        "/tokens/cached_input",
        "/tokens/input_source",
    ),
    (
        "cache_creation_input",
        "/tokens/cache_creation_input",
        "/tokens/input_source",
    ),
    (
        "reasoning",
        "/tokens/reasoning_output",
        "/tokens/output_source",
    ),
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// `tokenmeter.tokens` per series.
    pub tokens: BTreeMap<Series, u64>,
    /// `tokenmeter.requests` per series.
    pub requests: BTreeMap<Series, u64>,
}

impl Totals {
    /// Adds one usage record (its spooled JSON).
    pub fn add(&mut self, record: &Json) {
        if is_gpu_usage(record) {
            return;
        }
        let base = series_of(record);
        *self.requests.entry(base.clone()).or_default() += 1;
        for (kind, count, source) in TOKEN_TYPES {
            let Some(count) = record.pointer(count).and_then(Json::as_u64) else {
                continue;
            };
            let mut series = base.clone();
            series.push(("gen_ai.token.type".into(), kind.into()));
            if let Some(source) = text(record, source) {
                series.push(("tokenmeter.count.source".into(), source.into()));
            }
            series.sort();
            *self.tokens.entry(series).or_default() += count;
        }
    }

    /// Adds the records of the spool from `from` on; returns the cursor after the last.
    pub fn replay(&mut self, spool: &Spool, from: Cursor) -> Result<(u64, Cursor), SpoolError> {
        let mut cursor = from;
        let mut replayed = 0;
        loop {
            let batch = spool.read_from(cursor, 1024)?;
            if batch.records.is_empty() {
                return Ok((replayed, batch.end));
            }
            for line in &batch.records {
                if let Ok(record) = serde_json::from_slice::<Json>(line) {
                    self.add(&record);
                    replayed += 1;
                }
            }
            cursor = batch.end;
        }
    }
}

/// The series of a record, without token type and source.
fn series_of(record: &Json) -> Series {
    let mut series: Series = [
        ("tokenmeter.side", text(record, "/side")),
        ("gen_ai.provider.name", text(record, "/provider")),
        ("gen_ai.operation.name", text(record, "/operation")),
        ("gen_ai.response.model", model(record)),
        ("k8s.pod.uid", text(record, "/workload/pod_uid")),
        (
            "tokenmeter.api_key.fingerprint",
            text(record, "/identity/api_key_fingerprint"),
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
    .collect();
    series.sort();
    series
}

/// Attributes of a series, for the meter.
pub fn key_values(series: &Series) -> Vec<KeyValue> {
    series
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

/// What is written to disk.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    /// The spool position the totals include every record before.
    segment: u64,
    offset: u64,
    tokens: Vec<(Series, u64)>,
    requests: Vec<(Series, u64)>,
}

/// The checkpoint file in a spool directory.
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(spool_dir: &Path) -> Self {
        Self {
            path: spool_dir.join("totals.json"),
        }
    }

    /// The saved totals and their position; `None` if there is no readable checkpoint.
    pub fn load(&self) -> Option<(Totals, Cursor)> {
        let bytes = fs::read(&self.path).ok()?;
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes).ok()?;
        Some((
            Totals {
                tokens: checkpoint.tokens.into_iter().collect(),
                requests: checkpoint.requests.into_iter().collect(),
            },
            Cursor {
                segment: checkpoint.segment,
                offset: checkpoint.offset,
            },
        ))
    }

    /// Replaces the checkpoint atomically and durably.
    pub fn save(&self, totals: &Totals, cursor: Cursor) -> std::io::Result<()> {
        let checkpoint = Checkpoint {
            segment: cursor.segment,
            offset: cursor.offset,
            tokens: totals.tokens.clone().into_iter().collect(),
            requests: totals.requests.clone().into_iter().collect(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(&checkpoint)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::spool::SpoolConfig;

    fn record(pod: &str, input: u64, output: u64) -> Json {
        serde_json::json!({
            "side": "server", "provider": "openai", "operation": "chat",
            "request_model": "m", "response_model": "m",
            "workload": {"pod_uid": pod},
            "identity": {},
            "tokens": {"input": input, "output": output, "cached_input": null,
                       "input_source": "reported", "output_source": "computed"},
        })
    }

    fn value(totals: &Totals, pod: &str, kind: &str) -> u64 {
        totals
            .tokens
            .iter()
            .filter(|(series, _)| {
                series.contains(&("k8s.pod.uid".into(), pod.into()))
                    && series.contains(&("gen_ai.token.type".into(), kind.into()))
            })
            .map(|(_, v)| v)
            .sum()
    }

    #[test]
    fn totals_add_per_pod_type_and_source() {
        let mut totals = Totals::default();
        totals.add(&record("a", 10, 3));
        totals.add(&record("a", 5, 2));
        totals.add(&record("b", 1, 1));
        assert_eq!(value(&totals, "a", "input"), 15);
        assert_eq!(value(&totals, "a", "output"), 5);
        assert_eq!(value(&totals, "b", "input"), 1);
        assert_eq!(
            value(&totals, "a", "cached_input"),
            0,
            "absent counts add nothing"
        );
        let output_series = totals
            .tokens
            .keys()
            .find(|s| s.contains(&("gen_ai.token.type".into(), "output".into())))
            .unwrap();
        assert!(output_series.contains(&("tokenmeter.count.source".into(), "computed".into())));
        assert_eq!(totals.requests.values().sum::<u64>(), 3);
    }

    #[test]
    fn a_checkpoint_plus_the_spool_after_it_gives_the_exact_totals() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 256,
        })
        .unwrap();
        let checkpoints = CheckpointFile::new(dir.path());
        let mut live = Totals::default();
        for i in 0..30u64 {
            let r = record("a", i, 1);
            spool.append(&serde_json::to_vec(&r).unwrap()).unwrap();
            live.add(&r);
            if i == 9 {
                spool.flush().unwrap();
                checkpoints.save(&live, spool.end()).unwrap();
                spool.keep_from(spool.end()).unwrap();
            }
        }
        spool.flush().unwrap();
        // Everything was delivered: the spool still keeps what the checkpoint lacks.
        let batch = spool.read_batch(100).unwrap();
        spool.ack(batch.end).unwrap();
        // A crash here; the next start rebuilds the totals.
        let (mut restored, cursor) = checkpoints.load().unwrap();
        let (replayed, _) = restored.replay(&spool, cursor).unwrap();
        assert_eq!(replayed, 20);
        assert_eq!(restored, live);
    }
}
