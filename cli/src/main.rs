//! `skyx`: the command-line front of the intercloud data plane and planner.
//!
//! Exit codes: 0 success; 1 the operation failed; 2 bad input (flags, files, URLs, regions);
//! 3 no plan satisfies the request (infeasible objective or constraints).

mod catalog_args;
mod cmd_bench;
mod cmd_catalog;
mod cmd_cp;
mod cmd_plan;
mod cmd_run;
mod cmd_sky;
mod cmd_store;
mod cmd_sync;
mod error;
mod provider_args;
mod transfer;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "skyx",
    version,
    about = "Move data between clouds cheaper and faster than a direct copy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; also RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy objects between stores (s3://, gs://, az://, local paths) over the planned overlay.
    Cp(Box<cmd_cp::CpArgs>),
    /// Make a destination prefix hold what a source prefix holds (copy only what differs).
    Sync(Box<cmd_sync::SyncArgs>),
    /// Plan a transfer: relays, VMs per region, connections per hop, predicted time and cost.
    Plan(Box<cmd_plan::PlanArgs>),
    /// Make a bucket (container).
    Mb(cmd_store::MbArgs),
    /// List objects under a URL.
    Ls(cmd_store::LsArgs),
    /// Inspect the catalog: regions, egress prices, measured throughput, VM prices, sources.
    Catalog(cmd_catalog::CatalogCmd),
    /// Plan (and run) a staged pipeline: stages placed jointly with the transfers between them.
    Run(Box<cmd_run::RunArgs>),
    /// Measure egress paths between regions with real agents.
    Bench(cmd_bench::BenchCmd),
    /// The emulated multi-region sky: network namespaces, shaped links, a store per region.
    Sky(cmd_sky::SkyCmd),
    /// Run a transfer agent (what the gateway launches on every VM; same as `skyx-agent`).
    #[command(hide = true)]
    Agent(Box<skyx_agent::daemon::DaemonArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent(args) = cli.command {
        // The daemon sets up its own logging and runtime.
        return skyx_agent::daemon::main(*args);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Cp(args) => cmd_cp::run(args),
        Command::Sync(args) => cmd_sync::run(args),
        Command::Plan(args) => cmd_plan::run(args),
        Command::Catalog(cmd) => cmd_catalog::run(cmd),
        Command::Sky(cmd) => cmd_sky::run(cmd),
        Command::Bench(cmd) => cmd_bench::run(cmd),
        Command::Run(args) => cmd_run::run(args),
        Command::Mb(args) => cmd_store::mb(args),
        Command::Ls(args) => cmd_store::ls(args),
        Command::Agent(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skyx: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(error::exit_code(&err))
        }
    }
}
