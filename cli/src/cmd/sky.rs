//! `skyx sky up|down|status|env|exec`: the emulated multi-region sky (see the `skyx_sky` crate).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skyx_sky::{
    DEFAULT_REGIONS, DEFAULT_RTT_SCALE, DEFAULT_SCALE, SkyManifest, SkyOptions, SkySpec, Tools,
};

use crate::args::catalog::CatalogArgs;
use crate::error::BadInput;

#[derive(Debug, Args)]
pub struct SkyCmd {
    #[command(subcommand)]
    pub action: SkyAction,
}

/// Which sky: by name (state in /run/skyx-sky/NAME) or by its state directory.
#[derive(Debug, Args, Clone)]
pub struct SkySelect {
    /// The sky's name (prefix of its namespaces and interfaces).
    #[arg(long, default_value = "skyx")]
    pub name: String,
    /// The sky's state directory (default /run/skyx-sky/NAME).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl SkySelect {
    pub fn dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| SkyManifest::default_state_dir(&self.name))
    }
}

#[derive(Debug, Subcommand)]
pub enum SkyAction {
    /// Build the sky: a namespace per region, shaped links, a store server in each (needs root).
    Up {
        #[command(flatten)]
        select: SkySelect,
        /// Regions (comma-separated). Default: eight regions across AWS, GCP and Azure with
        /// slow direct paths and fast relays.
        #[arg(long, value_delimiter = ',', value_name = "REGION")]
        regions: Vec<String>,
        /// Links run at measured throughput × this factor.
        #[arg(long, default_value_t = DEFAULT_SCALE)]
        scale: f64,
        /// Second octet of the sky's private network 10.N.0.0/16.
        #[arg(long, default_value_t = 77)]
        subnet: u8,
        /// Links are delayed by the catalog's measured round trip × this factor (0: no delay).
        #[arg(long, default_value_t = DEFAULT_RTT_SCALE)]
        rtt_scale: f64,
        /// The region this machine (the gateway) sits in: its control path to each region has
        /// that pair's round trip. Default: the first region.
        #[arg(long, value_name = "REGION")]
        gateway_at: Option<String>,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Carry the sky's links with their delay (started by `up`, stopped by `down`).
    #[command(hide = true)]
    DelayLine {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Remove every namespace, link and process of the sky.
    Down {
        #[command(flatten)]
        select: SkySelect,
    },
    /// Show the sky's regions, stores and shaped links.
    Status {
        #[command(flatten)]
        select: SkySelect,
        #[arg(long)]
        json: bool,
    },
    /// Print `export` lines that point the clouds' tools at a region's store.
    Env {
        region: String,
        #[command(flatten)]
        select: SkySelect,
    },
    /// Run a command inside a region's namespace with its store's variables set.
    Exec {
        region: String,
        #[command(flatten)]
        select: SkySelect,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub fn run(cmd: &SkyCmd) -> Result<()> {
    match &cmd.action {
        SkyAction::Up {
            select,
            regions,
            scale,
            subnet,
            rtt_scale,
            gateway_at,
            catalog,
        } => {
            let catalog = catalog.load()?;
            let opts = SkyOptions {
                name: select.name.clone(),
                regions: if regions.is_empty() {
                    DEFAULT_REGIONS.iter().map(|r| r.to_string()).collect()
                } else {
                    regions.clone()
                },
                scale: *scale,
                subnet: *subnet,
                rtt_scale: *rtt_scale,
                gateway_at: gateway_at.clone(),
            };
            let spec = SkySpec::new(&catalog, &opts).map_err(|e| BadInput(e.to_string()))?;
            let tools = Tools {
                skyx: std::env::current_exe().context("finding the skyx program")?,
                ..Tools::from_env()
            };
            let manifest = skyx_sky::up(spec, &select.dir(), &tools)?;
            print_status(&manifest);
            println!(
                "\nUse it: skyx cp ... --sky {} --src-region R1 --dst-region R2; tear down: skyx sky down --name {}",
                manifest.state_dir.display(),
                manifest.spec.name
            );
            Ok(())
        }
        SkyAction::DelayLine { state_dir } => {
            let manifest = SkyManifest::load(state_dir)?;
            skyx_sky::delay_line::run(
                &manifest.spec.delay_lines(),
                &state_dir.join(SkyManifest::DELAY_READY_FILE),
            )?;
            Ok(())
        }
        SkyAction::Down { select } => {
            let removed = skyx_sky::down(&select.dir(), &select.name)?;
            println!(
                "removed {} namespaces: {}",
                removed.len(),
                removed.join(" ")
            );
            Ok(())
        }
        SkyAction::Status { select, json } => {
            let manifest = SkyManifest::load(&select.dir())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                print_status(&manifest);
            }
            Ok(())
        }
        SkyAction::Env { region, select } => {
            let manifest = SkyManifest::load(&select.dir())?;
            let r = sky_region(&manifest, region)?;
            for (k, v) in SkyManifest::store_env(r) {
                println!("export {k}='{v}'");
            }
            Ok(())
        }
        SkyAction::Exec {
            region,
            select,
            command,
        } => {
            let manifest = SkyManifest::load(&select.dir())?;
            let r = sky_region(&manifest, region)?;
            let status = Command::new("ip")
                .args(["netns", "exec", &r.namespace])
                .args(command)
                .envs(SkyManifest::store_env(r))
                .status()
                .with_context(|| format!("running {command:?} in {}", r.namespace))?;
            if status.success() {
                Ok(())
            } else {
                anyhow::bail!("{command:?} in {} exited with {status}", r.namespace)
            }
        }
    }
}

/// The sky `--sky TEXT` means: a path when it contains a `/` (a state directory or manifest),
/// otherwise a sky's name.
pub fn resolve_sky(text: &str) -> Result<SkyManifest> {
    let dir = if text.contains('/') {
        PathBuf::from(text)
    } else {
        SkyManifest::default_state_dir(text)
    };
    Ok(SkyManifest::load(&dir).map_err(|e| BadInput(format!("--sky {text}: {e}")))?)
}

/// Finds a region of the sky by its id (`aws:us-east-1`) or namespace.
pub fn sky_region<'a>(manifest: &'a SkyManifest, text: &str) -> Result<&'a skyx_sky::SkyRegion> {
    manifest
        .find_region(text)
        .map_err(|e| BadInput(e.to_string()).into())
}

fn print_status(m: &SkyManifest) {
    let spec = &m.spec;
    println!(
        "Sky {:?}: {} regions, links at {} × measured throughput (state: {})",
        spec.name,
        spec.regions.len(),
        spec.scale,
        m.state_dir.display()
    );
    println!(
        "\n{:<26} {:<34} {:<12} {:<8} {:<26} VM egress cap",
        "region", "namespace", "address", "store", "endpoint"
    );
    for r in &spec.regions {
        println!(
            "{:<26} {:<34} {:<12} {:<8} {:<26} {}",
            r.region.to_string(),
            r.namespace,
            r.addr.to_string(),
            r.store.scheme(),
            SkyManifest::endpoint(r),
            r.egress_cap_gbps
                .map_or("-".to_string(), |c| format!("{:.0} Mbit/s", c * 1e3))
        );
    }
    println!("\nShaped goodput (Mbit/s), row → column:");
    print!("{:<26}", "");
    for (j, _) in spec.regions.iter().enumerate() {
        print!(" {:>7}", format!("[{j}]"));
    }
    println!();
    for (i, a) in spec.regions.iter().enumerate() {
        print!("{:<26}", format!("[{i}] {}", a.region));
        for b in &spec.regions {
            match spec.expected_gbps(&a.region, &b.region) {
                Some(g) => print!(" {:>7.1}", g * 1e3),
                None => print!(" {:>7}", "-"),
            }
        }
        println!();
    }
    let gateway = spec
        .gateway_at
        .as_ref()
        .map_or("-".to_string(), |g| g.to_string());
    println!(
        "\nRound trips (ms, measured × {}), row ↔ column; the gateway sits in {gateway}:",
        spec.rtt_scale
    );
    print!("{:<26} {:>7}", "", "gateway");
    for (j, _) in spec.regions.iter().enumerate() {
        print!(" {:>7}", format!("[{j}]"));
    }
    println!();
    for (i, a) in spec.regions.iter().enumerate() {
        print!(
            "{:<26} {:>7.1}",
            format!("[{i}] {}", a.region),
            a.control_rtt_ms
        );
        for b in &spec.regions {
            match spec
                .links
                .iter()
                .find(|l| l.src == a.region && l.dst == b.region)
            {
                Some(l) => print!(" {:>7.1}", l.rtt_ms),
                None => print!(" {:>7}", "-"),
            }
        }
        println!();
    }
}
