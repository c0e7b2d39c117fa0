//! The benchmark's result: medians, ratios and the markdown table.
//!
//! Ratios are taken between medians of the same invocation, because on a shared machine the
//! absolute figures drift from one run to the next far more than the probes' cost.

use std::fmt::Write as _;

use super::{LoopResult, RateResult, ROUNDS};

/// All runs of one size.
pub struct SizeResult {
    pub size: u32,
    pub without: Vec<LoopResult>,
    pub with: Vec<LoopResult>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl SizeResult {
    pub fn wall(runs: &[LoopResult]) -> f64 {
        median(runs.iter().map(|r| r.wall_ns_per_call).collect()) / 1e3
    }

    pub fn cpu(runs: &[LoopResult]) -> f64 {
        median(runs.iter().map(|r| r.cpu_ns_per_call).collect()) / 1e3
    }

    pub fn wall_ratio(&self) -> f64 {
        Self::wall(&self.with) / Self::wall(&self.without)
    }

    pub fn cpu_ratio(&self) -> f64 {
        Self::cpu(&self.with) / Self::cpu(&self.without)
    }
}

/// The markdown written to target/bench/results.md and printed.
pub fn report(
    iterations: u64,
    sizes: &[SizeResult],
    rate: &RateResult,
    max_rss_kib: u64,
) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let _ = writeln!(md, "## tokenmeter-agent overhead\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench --iterations {iterations}`; Linux {}, {cpus} CPUs. tls_loop: one TLS \
         client and one server thread over loopback (OpenSSL). Per-call figures are medians of \
         {ROUNDS} alternating runs without and with the agent; ratios are with/without from this \
         one invocation. CPU is the TLS process's own user+sys time (probe time included), not \
         the agent's.\n",
        kernel.trim()
    );
    ratio_table(&mut md, sizes);
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| events/s sustained (64 B, {} calls) | drops | agent CPU per 1000 events | agent max RSS (incl. mapped ring buffers) | agent anonymous RSS at exit |",
        rate.iterations
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {:.0} | {} | {:.1} ms | {:.1} MiB | {:.1} MiB |",
        rate.events_per_second,
        rate.stats.drops(),
        rate.stats.cpu_ms as f64 * 1000.0 / rate.stats.events.max(1) as f64,
        max_rss_kib as f64 / 1024.0,
        rate.stats.rss_anon_kib as f64 / 1024.0
    );
    let _ = writeln!(md, "\nRaw runs (µs/call, wall / CPU):\n");
    let _ = writeln!(md, "| size (B) | round | without | with |");
    let _ = writeln!(md, "|---:|---:|---|---|");
    for s in sizes {
        for (i, (without, with)) in s.without.iter().zip(&s.with).enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} / {:.2} | {:.2} / {:.2} |",
                s.size,
                i + 1,
                without.wall_ns_per_call / 1e3,
                without.cpu_ns_per_call / 1e3,
                with.wall_ns_per_call / 1e3,
                with.cpu_ns_per_call / 1e3
            );
        }
    }
    md
}

/// Per size: wall and CPU time per call without and with the agent, and their ratios.
pub fn ratio_table(md: &mut String, sizes: &[SizeResult]) {
    let _ = writeln!(
        md,
        "| size (B) | wall µs/call without | wall µs/call with | wall ratio | CPU µs/call without | CPU µs/call with | CPU ratio |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
    for s in sizes {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2}x |",
            s.size,
            SizeResult::wall(&s.without),
            SizeResult::wall(&s.with),
            s.wall_ratio(),
            SizeResult::cpu(&s.without),
            SizeResult::cpu(&s.with),
            s.cpu_ratio()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_three_is_the_middle_one() {
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
    }
}
