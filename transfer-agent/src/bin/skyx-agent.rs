//! `skyx-agent`: the transfer agent daemon on its own (the same as `skyx agent`); see
//! `skyx_agent::daemon`.

use std::process::ExitCode;

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
