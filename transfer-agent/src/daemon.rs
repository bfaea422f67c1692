//! The agent daemon's entry point, shared by the `skyx-agent` binary and `skyx agent`. Prints one JSON line (`{"control":ADDR,"pid":N}`) on
//! stdout once its control API listens, then serves the job the gateway installs until told to
//! shut down, until its lease runs out (no authenticated request for `--idle-timeout`), or, with
//! `--exit-on-stdin-eof`, until its parent closes its stdin (a local gateway that dies takes its
//! agents with it).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::agent::CrashHook;
use crate::control::{Activity, Control, serve};
use crate::{Agent, AgentConfig};
use base64::Engine as _;
use skyx_agent_api::wire::{GATEWAY_CERT_ENV, Ready, TOKEN_ENV};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

/// The daemon's command line.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// A name for logs and the gateway (e.g. aws:us-east-1/relay-0).
    #[arg(long, default_value = "agent")]
    pub name: String,
    /// Where the control API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// The address data listeners bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub data_bind: IpAddr,
    /// The address peers are told to connect to (a VM's public address); default --data-bind.
    #[arg(long)]
    pub advertise: Option<IpAddr>,
    /// Read the launch token from this file instead of the SKYX_AGENT_TOKEN variable.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// Read the gateway's control certificate (DER) from this file instead of the
    /// SKYX_AGENT_GATEWAY_CERT variable (base64 DER).
    #[arg(long)]
    pub gateway_cert_file: Option<std::path::PathBuf>,
    /// Exit when stdin reaches end of file (set by the local provider).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
    /// Exit after this many seconds without an authenticated control request (0: never). The
    /// gateway polls every agent about once a second, so this only fires when it is gone.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,
    /// Log level or tracing filter; also RUST_LOG.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// Runs the daemon until it is told to stop; logs go to stderr.
pub fn main(args: DaemonArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skyx-agent: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Not a plain drop: that waits for blocking threads, and the one reading stdin (for
    // --exit-on-stdin-eof) waits for the gateway, so an agent asked to shut down would linger
    // until its gateway closed the pipe.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skyx-agent: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: DaemonArgs) -> Result<()> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV)
            .with_context(|| format!("the job token must be in {TOKEN_ENV} or --token-file"))?,
    };
    if token.len() < 16 {
        bail!("the launch token is too short (at least 16 characters)");
    }
    let gateway_cert = match &args.gateway_cert_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the gateway certificate {}", path.display()))?,
        None => {
            let b64 = std::env::var(GATEWAY_CERT_ENV).with_context(|| {
                format!(
                    "the gateway's certificate must be in {GATEWAY_CERT_ENV} or --gateway-cert-file"
                )
            })?;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .with_context(|| format!("{GATEWAY_CERT_ENV} is not base64"))?
        }
    };
    let (identity, tls) = crate::control::identity_for(&gateway_cert)
        .context("the gateway's certificate is unusable")?;
    let corrupt_every = match std::env::var("SKYX_FAULT_CORRUPT_EVERY") {
        Ok(v) => Some(
            v.parse::<u64>()
                .context("SKYX_FAULT_CORRUPT_EVERY must be a number")?,
        ),
        Err(_) => None,
    };
    if corrupt_every.is_some() {
        tracing::warn!("fault injection on: corrupting every {corrupt_every:?}th frame sent");
    }
    // SKYX_FAULT_ABORT_AFTER_CHUNKS=NAME=N[,NAME=N]: the named agents die after N chunks.
    let abort_after_chunks = match std::env::var("SKYX_FAULT_ABORT_AFTER_CHUNKS") {
        Ok(v) => v
            .split(',')
            .filter_map(|kv| kv.rsplit_once('='))
            .find(|(name, _)| *name == args.name)
            .map(|(_, n)| n.parse::<u64>())
            .transpose()
            .context("SKYX_FAULT_ABORT_AFTER_CHUNKS must be NAME=N[,NAME=N]")?,
        Err(_) => None,
    };
    if let Some(n) = abort_after_chunks {
        tracing::warn!("fault injection on: this agent aborts after {n} chunks");
    }
    let agent = Arc::new(Agent::new(AgentConfig {
        crash_after_chunks: abort_after_chunks.map(|after| CrashHook {
            after,
            crash: Arc::new(|| std::process::abort()),
        }),
        name: args.name.clone(),
        data_bind: args.data_bind,
        advertise: args.advertise,
        store: skyx_store::StoreConfig::from_env(),
        corrupt_every,
    }));
    // Many connections per hop and many files at a local destination: no low soft limit.
    let nofile = crate::accept::raise_nofile_limit();
    tracing::debug!(?nofile, "open files limit");
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding the control API to {}", args.control))?;
    let control_addr = listener.local_addr()?;
    let shutdown = Arc::new(Notify::new());
    let activity = Arc::new(Activity::default());
    let control = Control {
        agent: agent.clone(),
        token: token.into(),
        identity,
        activity: activity.clone(),
        shutdown: shutdown.clone(),
        stage: Arc::new(crate::stage::StageSlot::new(std::env::temp_dir().join(
            format!(
                "skyx-agent-{}-{}",
                std::process::id(),
                agent.name().replace(['/', ':', '#'], "_")
            ),
        ))),
    };
    let server = tokio::spawn(serve(listener, tls, control));
    println!(
        "{}",
        serde_json::to_string(&Ready {
            control: control_addr,
            pid: std::process::id(),
        })?
    );
    tracing::info!(name = %args.name, %control_addr, "agent ready");

    let stdin_closed = async {
        if args.exit_on_stdin_eof {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while !matches!(stdin.read(&mut buf).await, Ok(0) | Err(_)) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let idle = async {
        if args.idle_timeout == 0 {
            std::future::pending::<()>().await;
        }
        let limit = Duration::from_secs(args.idle_timeout);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if activity.idle() > limit {
                break;
            }
        }
    };
    let why = tokio::select! {
        _ = shutdown.notified() => "the gateway asked",
        _ = stdin_closed => "stdin closed (the gateway is gone)",
        _ = idle => "no control request within the idle timeout (the gateway is gone)",
        _ = tokio::signal::ctrl_c() => "interrupted",
    };
    tracing::info!(name = %args.name, why, "agent shutting down");
    agent.close();
    server.abort();
    // Give the answer to a shutdown request a moment to leave.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}
