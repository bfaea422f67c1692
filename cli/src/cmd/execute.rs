//! Running a copy the route decided: through agents (local processes, or EC2 machines with
//! `--provider ec2`) or server-side, with a progress bar and Ctrl-C handling.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use skyx_gateway::{
    CopyItems, CopyJob, CopyReport, MetadataPolicy, ProgressSnapshot, ServerSideJob, run_copy,
    run_server_side, with_properties,
};
use skyx_provision::{LocalProvider, Provider};

use crate::args::provider::ProviderKind;
use crate::cmd::routing::Routing;
use crate::cmd::transfer::{
    BadInput, Endpoints, TransferArgs, in_sky, load_sky, metadata_policy, options, state_dir,
    store_root,
};
use crate::units::format_bytes;

/// What a copy moves: a listing as it streams (held whole or still going), with the bytes
/// listed so far for the progress bar.
pub struct Sources {
    pub items: CopyItems,
    pub bytes_so_far: u64,
    /// The listing goes on while the copy runs: the route is planned again as it does, on
    /// the volume `volume` counts (`None`: as far as the copy's own listing has gone).
    pub still_listing: bool,
    pub volume: Option<std::sync::Arc<skyx_gateway::ListedVolume>>,
}

/// Whether the copy lets the destination's service carry each object's own properties (a
/// server-side copy that can, with nothing overriding them: no `--no-metadata`,
/// `--content-type` or `--metadata`), so none is read first.
pub fn service_keeps_properties(
    args: &TransferArgs,
    ends: &Endpoints,
    routing: &Routing,
) -> Result<bool> {
    Ok(routing.server_side
        && metadata_policy(args)? == MetadataPolicy::default()
        && ends.dst.copies_keeping_properties())
}

/// `items` with the properties the copy writes with each (one read per object), unless the
/// service carries them itself.
pub fn with_copy_properties(
    args: &TransferArgs,
    ends: &Endpoints,
    routing: &Routing,
    items: CopyItems,
) -> Result<CopyItems> {
    if service_keeps_properties(args, ends, routing)? {
        return Ok(items);
    }
    Ok(with_properties(
        ends.src.clone(),
        items,
        metadata_policy(args)?,
    ))
}

/// Runs the copy with a progress bar and Ctrl-C handling.
pub async fn execute(
    args: &TransferArgs,
    ends: &Endpoints,
    sources: Sources,
    routing: &Routing,
) -> Result<CopyReport> {
    let Sources {
        items,
        bytes_so_far: total,
        still_listing,
        volume,
    } = sources;
    if routing.server_side {
        return execute_server_side(args, ends, items, total, routing).await;
    }
    let mut options = options(args, &ends.src_url, &ends.dst_url)?;
    let replan = routing
        .replanner
        .as_ref()
        .map(|planner| skyx_gateway::Replan {
            planned_on: total,
            planner: planner.clone(),
            volume,
        });
    // A region out of capacity for an agent as the copy starts is planned around.
    options.capacity_replan = replan.clone();
    if still_listing {
        options.replan = replan;
    }
    let agents = Agents::new(args, &routing.topology, "copy")?;
    agents.prepare(&routing.topology).await?;
    let job = CopyJob {
        src_store: store_root(&ends.src_url),
        dst_store: store_root(&ends.dst_url),
        src_settings: ends.src_settings.clone(),
        dst_settings: ends.dst_settings.clone(),
        dst_write: ends.dst_write.clone(),
        broadcast: None,
        topology: routing.topology.clone(),
        options,
        pricing: routing.pricing.clone(),
    };
    let (bar, mut on_progress) = progress_bar(args, total);
    let cancel_rx = crate::args::provider::cancel_on_ctrl_c();
    let report = run_copy(
        &job,
        items,
        agents.provider(),
        ends.src.clone(),
        ends.dst.clone(),
        &mut on_progress,
        cancel_rx,
    )
    .await;
    bar.finish_and_clear();
    agents.sweep().await;
    Ok(report?)
}

/// Where a copy's agents run: local processes (in the sky's namespaces when a sky is up), or
/// cloud VMs with `--provider aws|gcp|azure`.
pub struct Agents {
    local: LocalProvider,
    cloud: Option<Arc<dyn Provider>>,
    what: &'static str,
}

impl Agents {
    /// The provider for `topology`'s agents; a bad cloud setting is refused here, before
    /// anything starts, so it launches no VM.
    pub fn new(
        args: &TransferArgs,
        topology: &skyx_gateway::Topology,
        what: &'static str,
    ) -> Result<Agents> {
        let sky = load_sky(args)?;
        if args.provider.provider != ProviderKind::Local
            && topology.agents.iter().any(|a| !a.region.contains(':'))
        {
            return Err(BadInput(
                "agents on VMs need the ends' regions: give --src-region and --dst-region (aws:..., gcp:..., azure:...)".into(),
            )
            .into());
        }
        let tag = crate::args::provider::job_tag("cp", what);
        let cloud = args.provider.cloud(topology, &tag, sky.is_some())?;
        if let Some(cloud) = &cloud {
            crate::args::provider::announce(cloud.as_ref(), what);
        }
        let mut local = LocalProvider::new(LocalProvider::default_program());
        local.log_dir = Some(state_dir(args).join("logs"));
        if let Some(sky) = &sky {
            in_sky(&mut local, sky);
        }
        Ok(Agents { local, cloud, what })
    }

    pub fn provider(&self) -> &dyn Provider {
        match &self.cloud {
            Some(cloud) => cloud.as_ref(),
            None => &self.local,
        }
    }

    /// Readies the clouds before any agent starts (images looked up, networks found, the
    /// job's groups and rules made), so a setting that cannot work launches no VM; on failure
    /// what it made is swept.
    pub async fn prepare(&self, topology: &skyx_gateway::Topology) -> Result<()> {
        if let Some(cloud) = &self.cloud {
            let regions: Vec<&str> = topology.agents.iter().map(|a| a.region.as_str()).collect();
            // A Ctrl-C while the clouds are readied stops there, and what was made goes.
            let prepared = tokio::select! {
                prepared = cloud.prepare(&regions) => {
                    prepared.map_err(crate::args::provider::setting_is_bad_input)
                }
                _ = tokio::signal::ctrl_c() => {
                    Err(anyhow::anyhow!("interrupted while readying the clouds"))
                }
            };
            if let Err(e) = prepared {
                self.sweep().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whatever the copy's end, no VM of the job outlives it.
    pub async fn sweep(&self) {
        if let Some(cloud) = &self.cloud {
            crate::args::provider::sweep(cloud.as_ref(), self.what).await;
        }
    }
}

/// The progress bar (hidden for `--json`, `--no-progress` or no terminal) and the callback
/// that moves it.
/// `total` is the bytes known at the start; a listing that streams raises it as it goes.
pub fn progress_bar(
    args: &TransferArgs,
    total: u64,
) -> (ProgressBar, impl FnMut(&ProgressSnapshot) + Send + 'static) {
    let bar = if args.json || args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        b
    };
    let bar2 = bar.clone();
    let stats = crate::cmd::transfer::stats_every(args).ok().flatten();
    let mut next_stats = stats;
    let on_progress = move |p: &ProgressSnapshot| {
        if let (Some(every), Some(next)) = (stats, next_stats)
            && p.elapsed >= next
        {
            eprintln!(
                "skyx: stats t={:.1}s objects={}/{} bytes={}/{} wire={} held={}",
                p.elapsed.as_secs_f64(),
                p.progress.objects_complete,
                p.progress.objects_total,
                p.progress.bytes_landed,
                p.progress.bytes_total,
                p.wire_bytes,
                p.objects_held,
            );
            next_stats = Some(next + every);
        }
        if p.progress.bytes_total > bar2.length().unwrap_or(0) {
            bar2.set_length(p.progress.bytes_total);
        }
        bar2.set_position(p.progress.bytes_landed);
        bar2.set_message(format!(
            "{}/{} objects, {} on the wire",
            p.progress.objects_complete,
            p.progress.objects_total,
            format_bytes(p.wire_bytes as f64)
        ));
    };
    (bar, on_progress)
}

/// Runs the copy server-side: the provider copies every object, no agent starts.
async fn execute_server_side(
    args: &TransferArgs,
    ends: &Endpoints,
    items: CopyItems,
    total: u64,
    routing: &Routing,
) -> Result<CopyReport> {
    // Only a provider's own copy crosses between regions; two local paths copied by this
    // process have no hop to meter.
    let metered = routing.metering == crate::args::provider::Metering::Cloud;
    let hop = routing.plan.as_ref().filter(|_| metered).map(|p| {
        let (a, b) = (p.src.to_string(), p.dst.to_string());
        let price = routing
            .pricing
            .egress_usd_per_gb
            .get(&(a.clone(), b.clone()))
            .copied();
        (a, b, price)
    });
    let job = ServerSideJob {
        concurrency: ends.dst.copies_at_once(),
        keep_source_properties: service_keeps_properties(args, ends, routing)?,
        hop,
    };
    let (bar, mut on_progress) = progress_bar(args, total);
    let cancel_rx = crate::args::provider::cancel_on_ctrl_c();
    let report = run_server_side(
        &job,
        items,
        ends.src.clone(),
        ends.dst.clone(),
        &mut on_progress,
        cancel_rx,
    )
    .await;
    bar.finish_and_clear();
    Ok(report?)
}
