//! `skyx cp SRC DST1 DST2 …`: one copy to several destinations at once (a broadcast). The
//! source is read once; where the plan's trees fork, relays send each chunk on to every
//! destination behind them, so each byte crosses each link once (`skyx plan --dst` shows the
//! plan beside separate copies). Every destination verifies every object on its own.
//!
//! With every end's region known (flags, or asked of the buckets) the broadcast is planned;
//! with none, one local source agent forks to one sink agent per destination.

use anyhow::{Context, Result, bail};
use skyx_gateway::{
    Broadcast, CopyJob, Destination, MAX_DESTINATIONS, Pricing, Topology, items_of, run_broadcast,
};
use skyx_planner::{BroadcastPlan, BroadcastRequest, plan_broadcast};

use crate::args::provider::Metering;
use crate::cmd::cp::CpArgs;
use crate::cmd::execute::{Agents, progress_bar, with_copy_properties};
use crate::cmd::routing::{Routing, bucket_region, sky_catalog};
use crate::cmd::transfer::{
    BadInput, Endpoints, ServerSideArg, TransferArgs, check_failures, check_skipped, load_sky,
    open_endpoints_in, options, select_sources, store_root, warn_skipped,
};
use crate::render::copy::render_report;

pub fn run(args: &CpArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &CpArgs) -> Result<()> {
    let t = &args.transfer;
    refuse_what_a_broadcast_cannot_do(t, &args.dst)?;
    let dst_regions = destination_regions(t, args.dst.len())?;
    let mut ends = Vec::with_capacity(args.dst.len());
    for (dst, region) in args.dst.iter().zip(&dst_regions) {
        ends.push(open_endpoints_in(t, &args.src, dst, region.as_ref()).await?);
    }
    let regions = regions(t, &ends, dst_regions).await;
    let (listing, _filter) = select_sources(t, &ends[0], args.recursive).await?;
    let source_is_object = listing.source_is_object;
    warn_skipped(&ends[0].src_url, &listing.skipped);
    if listing.items.is_empty() {
        if listing.filtered_out > 0 {
            println!(
                "Nothing to copy: the filters left out every object under {} ({})",
                ends[0].src_url, listing.filtered_out
            );
        }
        return check_skipped(&listing.skipped);
    }
    let volume: u64 = listing.items.iter().map(|i| i.size).sum();
    let routing = plan(t, volume, &regions)?;
    let items = with_copy_properties(t, &ends[0], &routing, items_of(listing.items))?;
    let mut options = options(t, &ends[0].src_url, &ends[0].dst_url)?;
    // A broadcast keeps no journal (--resume is refused above).
    options.journal = None;
    let first = &ends[0];
    let job = CopyJob {
        src_store: store_root(&first.src_url),
        dst_store: store_root(&first.dst_url),
        src_settings: first.src_settings.clone(),
        dst_settings: first.dst_settings.clone(),
        dst_write: first.dst_write.clone(),
        broadcast: Some(Broadcast {
            first: first.dst_url.clone(),
            source_is_object,
            more: ends[1..]
                .iter()
                .map(|e| Destination {
                    url: e.dst_url.clone(),
                    store: store_root(&e.dst_url),
                    settings: e.dst_settings.clone(),
                    write: e.dst_write.clone(),
                })
                .collect(),
        }),
        topology: routing.topology.clone(),
        options,
        pricing: routing.pricing.clone(),
    };
    let agents = Agents::new(t, &routing.topology, "copy")?;
    agents.prepare(&routing.topology).await?;
    let (bar, mut on_progress) = progress_bar(t, volume);
    let cancel = crate::args::provider::cancel_on_ctrl_c();
    let report = run_broadcast(
        &job,
        items,
        agents.provider(),
        first.src.clone(),
        ends.iter().map(|e| e.dst.clone()).collect(),
        &mut on_progress,
        cancel,
    )
    .await;
    bar.finish_and_clear();
    agents.sweep().await;
    let report = report?;
    print!("{}", render_report(&report, &routing, t.json)?);
    check_failures(&report)?;
    check_skipped(&listing.skipped)
}

/// Flags a broadcast cannot honour, refused before anything opens.
fn refuse_what_a_broadcast_cannot_do(t: &TransferArgs, dsts: &[String]) -> Result<()> {
    let refuse = |why: &str| bail!(BadInput(format!("several destinations: {why}")));
    if dsts.len() > MAX_DESTINATIONS {
        return refuse(&format!(
            "{} given; a broadcast has at most {}",
            dsts.len(),
            MAX_DESTINATIONS
        ));
    }
    // (`b/x` and `b/x/` are one place.)
    let same = |a: &String, b: &String| a.trim_end_matches('/') == b.trim_end_matches('/');
    for (i, d) in dsts.iter().enumerate() {
        if let Some(j) = dsts[..i].iter().position(|e| same(e, d)) {
            return refuse(&format!(
                "{d} is named twice (destinations {} and {})",
                j + 1,
                i + 1
            ));
        }
    }
    if t.resume {
        return refuse("--resume: a broadcast keeps no journal; run it again");
    }
    if t.dry_run {
        return refuse("--dry-run: `skyx plan --src R --dst R1,R2,…` shows the plan");
    }
    if t.select.no_clobber {
        return refuse("--no-clobber compares one destination; copy to each on its own");
    }
    if t.server_side == ServerSideArg::Always {
        return refuse("--server-side always: a provider copies to one destination");
    }
    if t.route.via.trim() != "auto" {
        return refuse(&format!(
            "--via {} fixes one route to one destination; a broadcast plans its own trees",
            t.route.via
        ));
    }
    Ok(())
}

/// `--dst-region R1,R2,…`: one region per destination, in order (or none).
fn destination_regions(t: &TransferArgs, dsts: usize) -> Result<Vec<Option<String>>> {
    let Some(flag) = &t.dst_region else {
        return Ok(vec![None; dsts]);
    };
    let regions: Vec<Option<String>> = flag
        .split(',')
        .map(|r| Some(r.trim().to_string()))
        .collect();
    if regions.len() != dsts {
        bail!(BadInput(format!(
            "--dst-region {flag}: {} regions for {dsts} destinations (give one per destination, in order)",
            regions.len()
        )));
    }
    Ok(regions)
}

/// The source's region and each destination's (flags, or asked of the buckets; a sky's
/// regions are its flags).
async fn regions(
    t: &TransferArgs,
    ends: &[Endpoints],
    flagged: Vec<Option<String>>,
) -> (Option<String>, Vec<Option<String>>) {
    if t.sky.is_some() {
        return (t.src_region.clone(), flagged);
    }
    let src = match &t.src_region {
        Some(r) => Some(r.clone()),
        None => bucket_region(&ends[0].src_url, &ends[0].src).await,
    };
    let mut dsts = Vec::with_capacity(ends.len());
    for (e, flag) in ends.iter().zip(flagged) {
        dsts.push(match flag {
            Some(r) => Some(r),
            None => bucket_region(&e.dst_url, &e.dst).await,
        });
    }
    (src, dsts)
}

/// The broadcast's topology and prices: planned when every end's region is known, a local
/// star when none is.
fn plan(
    t: &TransferArgs,
    volume: u64,
    (src, dsts): &(Option<String>, Vec<Option<String>>),
) -> Result<Routing> {
    let known: Vec<&String> = dsts.iter().flatten().collect();
    let metering = t.provider.metering(t.sky.is_some())?;
    let star = || {
        let locals = vec!["local".to_string(); dsts.len()];
        let topology = Topology::star("local", &locals, t.connections.unwrap_or(8));
        Ok(routing(topology, Pricing::default(), Metering::Local))
    };

    let flagged = t.src_region.is_some() || t.dst_region.is_some();
    if metering == Metering::Rehearsal
        && t.sky.is_none()
        && (src.is_none() || known.len() != dsts.len())
    {
        bail!(BadInput(
            "--rehearse plays a plan: give --src-region and --dst-region R1,R2,… (one per destination)".into()
        ));
    }
    let (src, dst_regions) = match src {
        Some(src) if known.len() == dsts.len() => (src, known),
        None if known.is_empty() => return star(),
        // Some regions found from buckets, none given: copy directly rather than refuse.
        _ if !flagged => {
            tracing::warn!(
                "only some ends' regions are known; copying directly without a plan \
                 (give --src-region and --dst-region R1,R2,… to plan the broadcast)"
            );
            return star();
        }
        _ => bail!(BadInput(
            "some ends' regions are known and some not: give --src-region and --dst-region R1,R2,… (one per destination)".into()
        )),
    };
    if metering == Metering::Local {
        // Agents on this machine: one source agent forks to the sinks, no relay pretends to
        // be a region.
        eprintln!(
            "skyx: agents on this machine copy directly (one source agent forking to each destination); --rehearse plays the planned broadcast here, --provider aws|gcp|azure runs it on VMs"
        );
        return star();
    }
    let mut catalog = t.catalog.load()?;
    let mut route = t.route.clone();
    if let Some(sky) = load_sky(t)? {
        catalog = sky_catalog(catalog, &sky, t.catalog.throughput_grid.is_some())?;
        // One namespace is one VM.
        route.max_vms_per_region = 1;
    }
    let src_id = catalog.resolve_region(src).context("--src-region")?;
    let dst_ids = dst_regions
        .iter()
        .map(|d| catalog.resolve_region(d).context("--dst-region"))
        .collect::<Result<Vec<_>>>()?;
    // The planner sends one tree to each region; two destinations in one region (or in the
    // source's) are two copies there, which a broadcast plan does not make.
    for (i, d) in dst_ids.iter().enumerate() {
        if *d == src_id {
            bail!(BadInput(format!(
                "destination {} is in the source's region {src_id}: a broadcast plans copies between regions; copy it on its own",
                i + 1
            )));
        }
        if let Some(j) = dst_ids[..i].iter().position(|e| e == d) {
            bail!(BadInput(format!(
                "destinations {} and {} are both in {d}: a broadcast plans one destination per region; copy one of them on its own",
                j + 1,
                i + 1
            )));
        }
    }
    let unicast = crate::cmd::plan::request_from_flags(
        src_id.clone(),
        dst_ids[0].clone(),
        volume.max(1),
        &t.objective,
        &route,
        &t.constraints,
        &catalog,
    )?;
    let mut req = BroadcastRequest::new(src_id, dst_ids, volume.max(1), unicast.objective);
    req.compression_ratio = unicast.compression_ratio;
    req.constraints = unicast.constraints;
    req.config = unicast.config;
    let o = &t.objective;
    if o.throughput_floor.is_none() && o.cost_cap.is_none() && o.deadline.is_none() {
        req.objective = crate::cmd::plan_broadcast::default_objective(&catalog, &req)?;
    }
    let plan = plan_broadcast(&catalog, &req)?;
    eprintln!("skyx: {}", describe(&plan));
    // The catalog's ids (a bucket may say `gcp:us-central1` for `gcp:us-central1-a`).
    let dst_names: Vec<String> = plan.dsts.iter().map(|d| d.to_string()).collect();
    let mut topology = Topology::from_broadcast(
        &plan.chosen,
        &plan.src.to_string(),
        &dst_names,
        t.route.max_connections_per_vm,
    )
    .map_err(|e| anyhow::anyhow!("the broadcast plan cannot be wired: {e}"))?;
    if let Some(n) = t.connections {
        topology = topology.with_connections(n);
    }
    let pricing = Pricing::for_broadcast(&catalog, &topology, req.config.vm_overhead_s);
    Ok(routing(topology, pricing, metering))
}

fn routing(topology: Topology, pricing: Pricing, metering: Metering) -> Routing {
    Routing {
        topology,
        plan: None,
        pricing,
        server_side: false,
        replanner: None,
        metering,
    }
}

/// The plan in a line: its trees and predicted cost beside separate copies.
fn describe(plan: &BroadcastPlan) -> String {
    let c = &plan.chosen;
    let trees: Vec<String> = c
        .trees
        .iter()
        .map(|t| {
            let hops: Vec<String> = t.hops.iter().map(|(a, b)| format!("{a}->{b}")).collect();
            format!("{:.0}% over {}", t.share * 100.0, hops.join(" "))
        })
        .collect();
    let separate = plan
        .separate_direct
        .as_ref()
        .map(|s| format!(" (separate direct copies: ${:.2})", s.cost_usd.total))
        .unwrap_or_default();
    format!(
        "broadcast to {} destinations: {}; {:.2} Gbps to each, ${:.2} predicted{separate}",
        plan.dsts.len(),
        trees.join("; "),
        c.throughput_gbps,
        c.cost_usd.total
    )
}
