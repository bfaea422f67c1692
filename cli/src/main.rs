//! `skyx`: the command-line front of the intercloud data plane and planner.
//!
//! Exit codes: 0 success; 1 the operation failed; 2 bad input (flags, files, URLs, regions);
//! 3 no plan satisfies the request (infeasible objective or constraints).

/// mimalloc: a copy of many small objects allocates per request and per chunk, and glibc's
/// allocator spent about a seventh of the CLI's CPU on it (`perf`, 20,000 S3 copies).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod cmd;
mod error;
mod files;
mod render;
mod units;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Cp(Box<cmd::cp::CpArgs>),
    /// Make a destination prefix hold what a source prefix holds (copy only what differs).
    Sync(Box<cmd::sync::SyncArgs>),
    /// Compare two trees: sizes, then the best common checksum (or the bytes, --download).
    Check(Box<cmd::check::CheckArgs>),
    /// Plan a transfer: relays, VMs per region, connections per hop, predicted time and cost.
    Plan(Box<cmd::plan::PlanArgs>),
    /// Make a bucket (container).
    Mb(cmd::store::MbArgs),
    /// List objects under a URL.
    Ls(cmd::store::LsArgs),
    /// Inspect the catalog: regions, egress prices, measured throughput, VM prices, sources.
    Catalog(cmd::catalog::CatalogCmd),
    /// Plan (and run) a staged pipeline: stages placed jointly with the transfers between them.
    Run(Box<cmd::run::RunArgs>),
    /// Measure egress paths between regions with real agents.
    Bench(Box<cmd::bench::BenchCmd>),
    /// The emulated multi-region sky: network namespaces, shaped links, a store per region.
    Sky(cmd::sky::SkyCmd),
    /// Find and remove what skyx jobs left in a cloud (agent VMs, their security groups).
    Sweep(Box<cmd::sweep::SweepArgs>),
    /// Run a transfer agent (what the gateway launches on every VM; same as `skyx-agent`).
    #[command(hide = true)]
    Agent(Box<skyx_agent::daemon::DaemonArgs>),
    /// Run one pipeline stage here (a Ray job's entrypoint; the stage from SKYX_STAGE_REQUEST).
    #[command(hide = true)]
    StageRun,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The order between --include and --exclude is only in the matches' positions.
    match (&mut cli.command, matches.subcommand()) {
        (Command::Cp(a), Some((_, sub))) => {
            a.transfer.select.filters = args::filters::in_order(sub)
        }
        (Command::Sync(a), Some((_, sub))) => {
            a.transfer.select.filters = args::filters::in_order(sub)
        }
        (Command::Check(a), Some((_, sub))) => a.select.filters = args::filters::in_order(sub),
        _ => {}
    }
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
        Command::Cp(args) if args.dst.len() > 1 => cmd::cp_broadcast::run(args),
        Command::Cp(args) => cmd::cp::run(args),
        Command::Sync(args) => cmd::sync::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Plan(args) if cmd::plan_broadcast::is_broadcast(args) => {
            cmd::plan_broadcast::run(args)
        }
        Command::Plan(args) => cmd::plan::run(args),
        Command::Catalog(c) => cmd::catalog::run(c),
        Command::Sky(c) => cmd::sky::run(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Run(args) => cmd::run::run(args),
        Command::Mb(args) => cmd::store::mb(args),
        Command::Ls(args) => cmd::store::ls(args),
        Command::StageRun => cmd::stage_run::run(),
        Command::Agent(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Errors quote URLs and keys, which may hold control characters.
            eprintln!("skyx: error: {}", render::terminal_safe(&err.to_string()));
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {}", render::terminal_safe(&cause.to_string()));
            }
            ExitCode::from(error::exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own checks of every subcommand (two flags with one id, a conflict naming a flag
    /// that does not exist) fail here rather than at a user's first run.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
