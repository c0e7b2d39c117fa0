//! `cargo xtask`: the project's build orchestration, in Rust so it needs nothing but cargo.
//!
//! Building tokenmeter takes more than `cargo build`: the eBPF programs need a nightly toolchain
//! and a bpf-linker built against that nightly's LLVM, and the end-to-end tests, the demo and the
//! benchmark need root, TLS peers and a running agent. These commands do each of those the same
//! way on a laptop, a fresh machine and CI (`.ci/run`). See docs/development.md.

mod agent;
mod bench;
mod collector;
mod debian;
mod demo;
mod fixtures;
mod npm;
mod postgres;
mod process;
mod python;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test, demo and benchmark tokenmeter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain the eBPF build needs (nightly rust-src, bpf-linker on the nightly's
    /// LLVM). Safe to run again: it only changes what is missing or stale.
    Setup {
        /// Also install the Debian packages the tests, the demo and the benchmark use (root).
        #[arg(long)]
        test_deps: bool,
    },
    /// Build the agent, its eBPF object included (run `setup` once first).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests, then the end-to-end tests (root). Runs `setup --test-deps`.
    Test,
    /// Run the release agent against real TLS clients and print what it captured (root).
    Demo,
    /// Measure the agent's overhead on a TLS loop and its sustained event rate (root);
    /// writes target/bench/results.md.
    Bench {
        /// Calls per run; the event-rate run makes ten times as many.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
        iterations: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup { test_deps } => setup::run(test_deps),
        Command::Build { release } => agent::build(release),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Bench { iterations } => bench::run(iterations),
    };
    util::break_line();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The message chain is what a person acts on; a backtrace of the xtask is noise.
            eprintln!("\nerror: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
