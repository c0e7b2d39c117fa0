//! tokenmeter-collector: receives the agents' OTLP usage, stores it once, prices it and bills
//! it per enterprise, team and user.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use chrono::Datelike;
use clap::{Parser, Subcommand, ValueEnum};
use tokenmeter_collector::{
    accounts::Accounts,
    bill::{self, render},
    config::CollectorConfig,
    rate::{self, PriceBook},
    receive::now_ns,
    server, store,
};
use tracing::error;

#[derive(Parser)]
#[command(name = "tokenmeter-collector", version, about, long_about = None)]
/// The rating collector: OTLP in, usage stored once, priced and billed per enterprise, team
/// and user.
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP usage (gRPC and HTTP) and store it; serve /metrics and /healthz.
    Serve {
        /// The collector's config file (TOML).
        #[arg(long, env = "TOKENMETER_COLLECTOR_CONFIG")]
        config: PathBuf,
        /// Write the bound addresses as JSON to this file once listening (for scripts).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Print the bill of a period (a draft until finalised).
    Bill {
        #[arg(long, env = "TOKENMETER_COLLECTOR_CONFIG")]
        config: PathBuf,
        /// The period, `YYYY-MM` (UTC months); default: the current one.
        #[arg(long)]
        period: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Finalise the period first: later calls of it go to the next period's bill as
        /// adjustments.
        #[arg(long)]
        finalize: bool,
    },
    /// Send a period to the configured exporters (Lago, OpenMeter, webhook, files). The period
    /// is finalised first once its grace days are over; an open period is only exported with
    /// --draft.
    Export {
        #[arg(long, env = "TOKENMETER_COLLECTOR_CONFIG")]
        config: PathBuf,
        /// `YYYY-MM`; default: the previous month.
        #[arg(long)]
        period: Option<String>,
        /// Export even if the period is still open (its bill may change).
        #[arg(long)]
        draft: bool,
    },
    /// Decide the account and price of every call of a draft period again, after a price
    /// book or accounts correction.
    Rerate {
        #[arg(long, env = "TOKENMETER_COLLECTOR_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        period: String,
    },
    /// Print the enterprises, teams and users of an accounts file.
    Accounts {
        /// The accounts file (TOML).
        file: PathBuf,
    },
    /// Price book tools.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
}

#[derive(Subcommand)]
enum PricesCommand {
    /// Check a price book; errors name the line and the field.
    Validate { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, ready_file } => {
            let config = CollectorConfig::load(&config)?;
            let prepared = server::prepare(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let served = runtime.block_on(server::serve(
                config,
                &prepared,
                ready_file.as_deref(),
                shutdown_signal(),
            ));
            // The runtime goes first: the store may own a runtime of its own (PostgreSQL).
            drop(runtime);
            drop(prepared);
            served
        }
        Command::Bill {
            config,
            period,
            format,
            finalize,
        } => {
            let config = CollectorConfig::load(&config)?;
            let period = period.unwrap_or_else(|| store::period_of(now_ns()));
            check_period(&period)?;
            let book = PriceBook::load(&config.price_book)?;
            let accounts = load_accounts(&config)?;
            let mut store = store::open(&config.database)?;
            if finalize {
                store.finalize(&period, now_ns())?;
            }
            let rows = store.usage(&period, config.side_policy)?;
            let bill = bill::compute(
                &period,
                store.is_finalized(&period)?,
                &rows,
                &book,
                &accounts,
            );
            let text = match format {
                Format::Table => render::table(&bill),
                Format::Json => render::json(&bill),
                Format::Csv => render::csv(&bill),
            };
            print!("{text}");
            Ok(())
        }
        Command::Export {
            config,
            period,
            draft,
        } => {
            let config = CollectorConfig::load(&config)?;
            let period = match period {
                Some(p) => p,
                None => previous_period(),
            };
            check_period(&period)?;
            if config.exporters.is_empty() {
                anyhow::bail!("no [[exporters]] in the config: nothing to export to");
            }
            let book = PriceBook::load(&config.price_book)?;
            let accounts = load_accounts(&config)?;
            let mut store = store::open(&config.database)?;
            let grace_over = period_end(&period)?
                + i64::from(config.grace_days) * 86_400_000_000_000
                <= now_ns();
            if grace_over && !store.is_finalized(&period)? {
                store.finalize(&period, now_ns())?;
                println!(
                    "finalised {period} (its {} grace days are over)",
                    config.grace_days
                );
            }
            let finalized = store.is_finalized(&period)?;
            if !finalized && !draft {
                anyhow::bail!(
                    "{period} is still open (late calls may land in it for {} days after its end): \
                     export it then, or now with --draft",
                    config.grace_days
                );
            }
            let rows = store.usage(&period, config.side_policy)?;
            let bill = bill::compute(&period, finalized, &rows, &book, &accounts);
            let mut failed = 0;
            for exporter in &config.exporters {
                match tokenmeter_collector::export::export(exporter, &bill, &rows) {
                    Ok(done) => println!("exported {done}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} of {} exporters failed; run export again (the engines deduplicate)",
                    config.exporters.len()
                );
            }
            Ok(())
        }
        Command::Rerate { config, period } => {
            let config = CollectorConfig::load(&config)?;
            check_period(&period)?;
            let book = PriceBook::load(&config.price_book)?;
            let accounts = load_accounts(&config)?;
            let mut store = store::open(&config.database)?;
            if store.is_finalized(&period)? {
                anyhow::bail!(
                    "{period} is finalised: its bill is locked (corrections go to the next period)"
                );
            }
            let changed = store.rerate(&period, &|event| {
                let account = accounts.resolve(&event.attributes);
                let price = rate::resolve(
                    &book,
                    &account.org,
                    &account.team,
                    &event.model,
                    event.time_ns,
                )
                .map(|e| e.id.clone());
                (account, price)
            })?;
            println!("rerated {changed} calls of {period}");
            Ok(())
        }
        Command::Accounts { file } => {
            let accounts = Accounts::load(&file)?;
            for (org, name) in &accounts.orgs {
                println!("{org} ({name})");
                for (team, _) in accounts.teams.iter().filter(|(_, o)| *o == org) {
                    println!("  {team}");
                    for (user, _) in accounts.users.iter().filter(|(_, t)| *t == team) {
                        println!("    {user}");
                    }
                }
            }
            println!("{} mapping rules", accounts.rules.len());
            Ok(())
        }
        Command::Prices {
            command: PricesCommand::Validate { file },
        } => {
            let book = PriceBook::load(&file)?;
            println!(
                "{}: valid, {} entries, currency {}",
                file.display(),
                book.entries.len(),
                book.currency
            );
            Ok(())
        }
    }
}

fn load_accounts(config: &CollectorConfig) -> anyhow::Result<Accounts> {
    Ok(match &config.accounts {
        Some(path) => Accounts::load(path)?,
        None => Accounts::default(),
    })
}

/// The month before the current one.
fn previous_period() -> String {
    let now = chrono::Utc::now().date_naive();
    let first = now.with_day(1).expect("day 1");
    store::period_of(
        first
            .pred_opt()
            .expect("a day before")
            .and_hms_opt(12, 0, 0)
            .expect("noon")
            .and_utc()
            .timestamp_nanos_opt()
            .expect("in range"),
    )
}

/// The first instant after a period, in ns.
fn period_end(period: &str) -> anyhow::Result<i64> {
    let (_, end, _) = tokenmeter_collector::quota::window(
        tokenmeter_collector::quota::Window::Month,
        chrono::NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")?
            .and_hms_opt(12, 0, 0)
            .expect("noon")
            .and_utc()
            .timestamp_nanos_opt()
            .expect("in range"),
    );
    Ok(end)
}

fn check_period(period: &str) -> anyhow::Result<()> {
    chrono::NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .map(|_| ())
        .with_context(|| format!("--period {period:?}: use YYYY-MM"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
