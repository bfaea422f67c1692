//! `skyx`: the command-line front of the intercloud data plane and planner.
//!
//! Exit codes: 0 success; 1 the operation failed; 2 bad input (flags, files, URLs, regions);
//! 3 no plan satisfies the request (infeasible objective or constraints).

mod catalog_args;
mod cmd_catalog;
mod cmd_plan;
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
    /// Plan a transfer: relays, VMs per region, connections per hop, predicted time and cost.
    Plan(Box<cmd_plan::PlanArgs>),
    /// Inspect the catalog: regions, egress prices, measured throughput, VM prices, sources.
    Catalog(cmd_catalog::CatalogCmd),
}

/// Exit code for a failure, chosen from what failed.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<skyx_planner::PlanError>() {
            return match e {
                skyx_planner::PlanError::Infeasible { .. }
                | skyx_planner::PlanError::Disconnected { .. }
                | skyx_planner::PlanError::EndpointRefused { .. } => 3,
                skyx_planner::PlanError::InvalidRequest(_) => 2,
                _ => 1,
            };
        }
        if cause.downcast_ref::<skyx_catalog::CatalogError>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return 2;
        }
    }
    2
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Plan(args) => cmd_plan::run(args),
        Command::Catalog(cmd) => cmd_catalog::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skyx: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}
