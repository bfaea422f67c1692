//! `skyx-agent`: the transfer agent daemon on its own (the same as `skyx agent`); see
//! `skyx_agent::daemon`.

use std::process::ExitCode;

/// mimalloc: a copy of many small objects allocates per request and per chunk, and glibc's
/// allocator spent about a seventh of the CLI's CPU on it (`perf`, 20,000 S3 copies).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "skyx-agent", version, about = "skyx transfer agent")]
struct Cli {
    #[command(flatten)]
    daemon: skyx_agent::daemon::DaemonArgs,
}

fn main() -> ExitCode {
    skyx_agent::daemon::main(Cli::parse().daemon)
}
