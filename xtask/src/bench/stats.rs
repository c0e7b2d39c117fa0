//! The agent's `--stats-file`: the capture counters and peak memory it writes at exit.
//!
//! The benchmark reads only what it reports (events, drops, RSS) and looks the counters up by
//! name, flat or one object deep, so a new counter or a regrouping in the agent does not break it.

use std::path::Path;

use anyhow::{Context, Result};

/// The agent's `--stats-file`, written when it exits.
#[derive(Debug, Default, Clone)]
pub struct AgentStats {
    pub events: u64,
    dropped_events: u64,
    dropped_bytes: u64,
    dropped_control: u64,
    pub max_rss_kib: u64,
    /// The agent's anonymous resident memory at exit (its heap, not the mapped ring buffers).
    pub rss_anon_kib: u64,
    /// The agent's own CPU time (user + system) over its whole run, in ms.
    pub cpu_ms: u64,
}

impl AgentStats {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("the agent exited without writing {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON: {text:?}", path.display()))?;
        let get = |key: &str| -> Result<u64> {
            counter(&json, key).with_context(|| format!("{} has no {key:?}", path.display()))
        };
        Ok(Self {
            events: get("events")?,
            dropped_events: get("dropped_events")?,
            dropped_bytes: get("dropped_bytes")?,
            dropped_control: get("dropped_control")?,
            max_rss_kib: get("max_rss_kib")?,
            cpu_ms: get("cpu_ms")?,
            rss_anon_kib: get("rss_anon_kib")?,
        })
    }

    /// "none", or the non-zero drop counters.
    pub fn drops(&self) -> String {
        let counters = [
            ("dropped_events", self.dropped_events),
            ("dropped_bytes", self.dropped_bytes),
            ("dropped_control", self.dropped_control),
        ];
        let nonzero: Vec<String> = counters
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if nonzero.is_empty() {
            "none".to_string()
        } else {
            nonzero.join(", ")
        }
    }
}

/// A counter at the top level of the stats object or inside one nested object
/// (`{"counters": {...}, "max_rss_kib": ...}` and a flat object both work).
fn counter(json: &serde_json::Value, key: &str) -> Option<u64> {
    let object = json.as_object()?;
    object.get(key).and_then(|v| v.as_u64()).or_else(|| {
        object
            .values()
            .find_map(|v| v.as_object()?.get(key)?.as_u64())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_found_flat_or_nested() {
        let flat: serde_json::Value =
            serde_json::from_str(r#"{"events": 7, "max_rss_kib": 9}"#).unwrap();
        let nested: serde_json::Value =
            serde_json::from_str(r#"{"counters": {"events": 7}, "max_rss_kib": 9}"#).unwrap();
        assert_eq!(counter(&flat, "events"), Some(7));
        assert_eq!(counter(&nested, "events"), Some(7));
        assert_eq!(counter(&nested, "max_rss_kib"), Some(9));
        assert_eq!(counter(&nested, "bytes"), None);
    }
}
