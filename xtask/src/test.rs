//! `cargo xtask test`: every test the project has, in the order CI runs them.
//!
//! A plain `cargo test` covers the default members (common, agent, collector, xtask) and needs
//! neither root nor the eBPF toolchain beyond what the agent's build.rs uses; here the
//! collector's store tests also get a PostgreSQL server. The end-to-end tests
//! (`tokenmeter-tests`) load real eBPF programs against real TLS peers, so they need root and
//! the test packages, and run one at a time: two agents attached at once would each see the
//! other's traffic. The eBPF crate itself is never built for the host (it has no host target).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{setup, util};

pub fn run() -> Result<()> {
    setup::run(true)?;
    let mut steps = util::Steps::new("test", 4);
    // Keep going after a failure: one run should show everything that is broken.
    let mut results = Vec::new();

    // The collector's store tests run on PostgreSQL too when it is there (as root).
    let step = steps.start("PostgreSQL for the collector's tests");
    let postgres = match crate::postgres::Postgres::start(55432) {
        Ok(pg) => {
            step.ok(&pg.url);
            Some(pg)
        }
        Err(err) if util::is_root() => {
            step.failed(format!("{err:#}"));
            results.push(("PostgreSQL", Err(err)));
            None
        }
        Err(err) => {
            step.skipped(format!("{err:#}"));
            None
        }
    };
    let name = "unit tests (default members)";
    let mut unit = util::cargo();
    unit.arg("test");
    if let Some(pg) = &postgres {
        unit.env(crate::postgres::URL_VAR, &pg.url);
    }
    results.push((name, phase(&mut steps, name, &mut unit)));
    drop(postgres);

    // The end-to-end tests run target/debug/tokenmeter-agent and build it only when it is
    // missing; building it here makes them test the current code, not a stale binary.
    let name = "agent build for the end-to-end tests";
    let step = steps.start(name);
    let built = util::run(util::cargo().args(["build", "-p", "tokenmeter-agent"]));
    let name = "end-to-end tests (tokenmeter-tests, root)";
    match built {
        Ok(()) => {
            step.ok("target/debug/tokenmeter-agent");
            let mut cmd = util::cargo();
            cmd.args(["test", "-p", "tokenmeter-tests", "--", "--test-threads=1"]);
            results.push((name, phase(&mut steps, name, &mut cmd)));
        }
        Err(err) => {
            step.failed(format!("{err:#}"));
            steps.start(name).skipped("the agent did not build");
            results.push((name, Err(err.context("not run: the agent did not build"))));
        }
    }

    println!("\n== test summary ==");
    let mut failed = 0;
    for (name, result) in &results {
        match result {
            Ok(counts) if counts.succeeded => println!("  ok      {name}: {}", counts.summary()),
            Ok(counts) => {
                failed += 1;
                println!("  FAILED  {name}: {}", counts.summary());
            }
            Err(err) => {
                failed += 1;
                println!("  FAILED  {name}: {err:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} test phases failed", results.len());
    }
    Ok(())
}

/// One `cargo test` run as a step.
fn phase(steps: &mut util::Steps, name: &str, cmd: &mut Command) -> Result<Counts> {
    let step = steps.start(name);
    let result = run_counting(cmd);
    match &result {
        Ok(counts) if counts.succeeded => step.ok(counts.summary()),
        Ok(counts) => step.failed(counts.summary()),
        Err(err) => step.failed(format!("{err:#}")),
    }
    result
}

/// Totals of the `test result:` lines of one `cargo test` run.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Test binaries that reported a result.
    binaries: u64,
    /// Whether cargo exited successfully (a compile error reports no test results at all).
    succeeded: bool,
    elapsed: Duration,
}

impl Counts {
    fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} ignored in {} test binaries, {:.0} s",
            self.passed,
            self.failed,
            self.ignored,
            self.binaries,
            self.elapsed.as_secs_f64()
        )
    }

    /// Adds one `test result: ok. 12 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test ...` with its output on the terminal, counting results as they go by.
fn run_counting(cmd: &mut Command) -> Result<Counts> {
    util::break_line();
    println!("      $ {}", util::display(cmd));
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", util::display(cmd)))?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().context("stdout was not piped")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait()?;
    counts.succeeded = status.success();
    counts.elapsed = started.elapsed();
    if !status.success() && counts.binaries == 0 {
        bail!(
            "`{}` {} before any test ran (see the errors above)",
            util::display(cmd),
            util::describe(status)
        );
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_test_binaries() {
        let mut counts = Counts::default();
        counts.add_line("running 3 tests");
        counts.add_line(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        counts.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s",
        );
        assert_eq!(
            (
                counts.passed,
                counts.failed,
                counts.ignored,
                counts.binaries
            ),
            (15, 2, 1, 2)
        );
    }
}
