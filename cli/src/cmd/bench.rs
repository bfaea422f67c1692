//! `skyx bench paths`: measure every ordered pair of regions with real agents and write the
//! grid the planner reads (`--throughput-grid`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skyx_gateway::{PathMeasurement, PathOptions, measure_paths};
use skyx_provision::LocalProvider;

use crate::args::catalog::CatalogArgs;
use crate::error::BadInput;

#[derive(Debug, Args)]
pub struct BenchCmd {
    #[command(subcommand)]
    pub action: BenchAction,
}

#[derive(Debug, Subcommand)]
pub enum BenchAction {
    /// Throughput (many connections, like iperf3 -P) and RTT of every ordered pair of regions.
    Paths(PathsArgs),
}

#[derive(Debug, Args)]
pub struct PathsArgs {
    /// Regions to measure (comma-separated; default: every region of --sky).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub regions: Vec<String>,
    /// Parallel connections per probe.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Seconds per ordered pair.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The emulated sky to measure (name or state directory); agents run in its namespaces.
    /// Without it every agent runs on this machine and the grid measures loopback.
    #[arg(long, env = "SKYX_SKY", value_name = "NAME|DIR")]
    pub sky: Option<String>,
    /// Write the throughput grid here (Skyplane's throughput.csv schema, bits/s), for
    /// `skyx plan --throughput-grid` / `skyx cp --throughput-grid`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the RTTs here (Skyplane's latency.csv schema, ms).
    #[arg(long, value_name = "FILE")]
    pub rtt_out: Option<PathBuf>,
    /// Print the measurements as JSON.
    #[arg(long)]
    pub json: bool,
    /// Agents' logs go here.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Where the probing agents run (`aws`, `gcp`, `azure`, `cloud`: VMs in the regions
    /// measured, with the providers' flags; default: this machine).
    #[command(flatten)]
    pub provider: crate::args::provider::ProviderArgs,
}

pub fn run(cmd: &BenchCmd) -> Result<()> {
    match &cmd.action {
        BenchAction::Paths(args) => paths(args),
    }
}

fn paths(args: &PathsArgs) -> Result<()> {
    let sky = match &args.sky {
        Some(text) => Some(crate::cmd::sky::resolve_sky(text)?),
        None => None,
    };
    let catalog = args.catalog.load()?;
    let regions: Vec<String> = match (&sky, args.regions.is_empty()) {
        (Some(s), true) => s
            .spec
            .regions
            .iter()
            .map(|r| r.region.to_string())
            .collect(),
        (None, true) => {
            return Err(
                BadInput("give --regions (or --sky to measure a sky's regions)".into()).into(),
            );
        }
        (_, false) => {
            let mut out = Vec::new();
            for r in &args.regions {
                let id = match &sky {
                    Some(s) => crate::cmd::sky::sky_region(s, r)?.region.clone(),
                    None => catalog
                        .resolve_region(r)
                        .with_context(|| format!("--regions {r}"))?,
                };
                out.push(id.to_string());
            }
            out
        }
    };
    let mut provider = LocalProvider::new(LocalProvider::default_program());
    provider.log_dir = args.log_dir.clone();
    let names: Vec<&str> = regions.iter().map(String::as_str).collect();
    let job = crate::args::provider::job_tag("bench", "paths");
    let cloud = args.provider.cloud_for(&names, &job, sky.is_some())?;
    match (&sky, &cloud) {
        (Some(s), _) => provider.namespaces = s.namespaces(),
        (None, Some(cloud)) => crate::args::provider::announce(cloud.as_ref(), "benchmark"),
        (None, None) => tracing::warn!(
            "no --sky: every agent runs on this machine, so the grid measures loopback"
        ),
    }
    let options = PathOptions {
        connections: args.connections,
        seconds: args.seconds,
    };
    let expected = |m: &PathMeasurement| -> Option<f64> {
        let s = sky.as_ref()?;
        s.spec
            .expected_gbps(&m.src.parse().ok()?, &m.dst.parse().ok()?)
    };
    if !args.json {
        println!(
            "Probing {} ordered pairs, {} connections for {} s each{}",
            regions.len() * (regions.len() - 1),
            args.connections,
            args.seconds,
            sky.as_ref()
                .map_or(String::new(), |s| format!(" in sky {:?}", s.spec.name))
        );
        println!(
            "\n{:<26} {:<26} {:>12} {:>12} {:>7} {:>9}",
            "from", "to", "Mbit/s", "shaped", "ratio", "RTT ms"
        );
    }
    let json = args.json;
    let mut on_pair = |m: &PathMeasurement| {
        if json {
            return;
        }
        let shaped = expected(m);
        println!(
            "{:<26} {:<26} {:>12.1} {:>12} {:>7} {:>9.3}",
            m.src,
            m.dst,
            m.result.gbps * 1e3,
            shaped.map_or("-".into(), |g| format!("{:.1}", g * 1e3)),
            shaped.map_or("-".into(), |g| format!("{:.3}", m.result.gbps / g)),
            m.result.rtt_ms_median
        );
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let measurements = runtime.block_on(async {
        let Some(cloud) = &cloud else {
            return Ok(measure_paths(&provider, &regions, &options, &mut on_pair).await?);
        };
        // VMs in the measured regions: readied first, and swept whatever the end (Ctrl-C
        // included: the sweep finds every VM of the job by its label or tag).
        let measured = tokio::select! {
            measured = async {
                cloud
                    .prepare(&names)
                    .await
                    .map_err(crate::args::provider::setting_is_bad_input)?;
                Ok(measure_paths(cloud.as_ref(), &regions, &options, &mut on_pair).await?)
            } => measured,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        crate::args::provider::sweep(cloud.as_ref(), "benchmark").await;
        measured
    })?;
    if let Some(path) = &args.out {
        let grid = skyx_gateway::paths::to_grid(&measurements);
        let tag = format!("skyx-bench-paths-{}c-{}s", args.connections, args.seconds);
        std::fs::write(path, grid.to_csv(&tag))
            .with_context(|| format!("writing {}", path.display()))?;
        if !json {
            println!(
                "\nthroughput grid: {} (use with --throughput-grid)",
                path.display()
            );
        }
    }
    if let Some(path) = &args.rtt_out {
        std::fs::write(path, skyx_gateway::paths::to_rtt_csv(&measurements))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        let rows: Vec<_> = measurements
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).expect("serializes");
                v["shaped_gbps"] = serde_json::json!(expected(m));
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
