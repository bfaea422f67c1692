//! `skyx cp SRC DST`: copy objects between stores through the planned overlay.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::Args;
use skyx_gateway::{
    CopyItems, CopySources, Listing, Look, ObjectFilter, RecordedTimes, SyncRules, Tally, items_of,
    list_copy_streaming, list_destination, plan_sync, probe_volume,
};

use crate::cmd::execute::{Sources, execute, with_copy_properties};
use crate::cmd::routing::plan_routing;

/// The ends' regions, where given or found.
type Regions = (Option<String>, Option<String>);
use crate::cmd::transfer::{
    Endpoints, TransferArgs, check_failures, check_skipped, open_endpoints, select_sources,
    warn_skipped,
};
use crate::render::copy::{render_dry_run, render_report};
use crate::units::format_bytes;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: s3://bucket/key, gs://bucket/key, az://account/container/key, a local path.
    pub src: String,
    /// Destination, in the same forms; several make a broadcast (the source read once,
    /// relays forking to each destination).
    #[arg(required = true, num_args = 1..)]
    pub dst: Vec<String>,
    /// Copy everything under the source prefix (directory).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

pub fn run(args: &CpArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &CpArgs) -> Result<()> {
    // (Several destinations are a broadcast: `cp_broadcast`.)
    let t = &args.transfer;
    let ends = open_endpoints(t, &args.src, &args.dst[0]).await?;
    let regions = crate::cmd::routing::infer_regions(t, &ends).await;
    // A plain `cp -r` streams a listing too long to wait for; what needs the whole listing
    // first (a dry run, --files-from, --no-clobber's comparison) lists it all.
    if args.recursive && !t.dry_run && !t.select.no_clobber && t.select.names()?.is_none() {
        let filter = t.select.object_filter(std::time::SystemTime::now())?;
        // With no region known there is no route to plan on a volume: the copy starts with
        // the first object listed.
        let look = match regions {
            (None, None) => Look::first_object(),
            _ => Look::default(),
        };
        let sources = list_copy_streaming(
            ends.src.clone(),
            &ends.src_url,
            &ends.dst_url,
            &filter,
            look,
        )
        .await?;
        return match sources {
            CopySources::Listed(listing) => copy_listed(t, &ends, regions, listing, &filter).await,
            CopySources::Streaming {
                looked,
                items,
                tally,
            } => copy_streaming(t, &ends, regions, looked, items, tally, &filter).await,
        };
    }
    let (listing, filter) = select_sources(t, &ends, args.recursive).await?;
    copy_listed(t, &ends, regions, listing, &filter).await
}

/// Copies a listing that streams on while the copy runs: the route is planned on what was
/// listed so far, said so, and what the listing skipped is named at the end.
async fn copy_streaming(
    t: &TransferArgs,
    ends: &Endpoints,
    regions: Regions,
    (looked, so_far): (usize, u64),
    items: CopyItems,
    tally: Arc<Mutex<Tally>>,
    filter: &ObjectFilter,
) -> Result<()> {
    let routing = plan_routing(t, so_far, regions, ends)?;
    // Planned again as the listing goes on, on the volume a counting listing finds ahead of
    // the copy's own.
    let probe = routing
        .replanner
        .as_ref()
        .map(|_| probe_volume(ends.src.clone(), &ends.src_url, &ends.dst_url, filter));
    if routing.plan.is_some() {
        eprintln!(
            "skyx: the listing of {} goes on while the copy runs; the route is planned on the {} objects ({}) listed so far{}",
            ends.src_url,
            looked,
            format_bytes(so_far as f64),
            if probe.is_some() {
                ", and again each time the bytes listed double"
            } else {
                ""
            }
        );
    }
    let items = with_copy_properties(t, ends, &routing, items)?;
    let report = execute(
        t,
        ends,
        Sources {
            items,
            bytes_so_far: so_far,
            still_listing: true,
            volume: probe.as_ref().map(|p| p.volume.clone()),
        },
        &routing,
    )
    .await?;
    drop(probe);
    print!("{}", render_report(&report, &routing, t.json)?);
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    warn_skipped(&ends.src_url, &tally.skipped);
    check_failures(&report)?;
    check_skipped(&tally.skipped)
}

/// Copies a listing held whole.
async fn copy_listed(
    t: &TransferArgs,
    ends: &Endpoints,
    regions: Regions,
    listing: Listing,
    filter: &ObjectFilter,
) -> Result<()> {
    warn_skipped(&ends.src_url, &listing.skipped);
    let mut items = listing.items;
    if t.select.no_clobber && !items.is_empty() {
        // --no-clobber: what the destination already has stays as it is.
        let existing = list_destination(ends.dst.as_ref(), &ends.dst_url).await?;
        let rules = SyncRules {
            no_clobber: true,
            ..SyncRules::default()
        };
        let none = RecordedTimes::new();
        let plan = plan_sync(
            items,
            &existing,
            &none,
            &ends.dst_url.key,
            filter,
            &rules,
            false,
        )?;
        if plan.unchanged > 0 {
            eprintln!(
                "skyx: --no-clobber: {} objects already at the destination are left as they are",
                plan.unchanged
            );
        }
        items = plan.copy;
    }
    let volume: u64 = items.iter().map(|i| i.size).sum();
    let routing = plan_routing(t, volume, regions, ends)?;
    if t.dry_run {
        if t.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "objects": items.len(),
                    "bytes": volume,
                    "copies": items.iter().map(|i| serde_json::json!({"src": i.src_key, "dst": i.dst_key, "size": i.size})).collect::<Vec<_>>(),
                    "skipped": listing.skipped.iter().map(|s| serde_json::json!({"src": s.src_key, "why": s.why})).collect::<Vec<_>>(),
                    "agents": routing.topology.agents.iter().map(|a| a.name()).collect::<Vec<_>>(),
                    "routes": routing.topology.routes.iter().map(|r| serde_json::json!({
                        "agents": r.agents.iter().map(|&a| routing.topology.agents[a].name()).collect::<Vec<_>>(),
                        "connections": r.connections,
                    })).collect::<Vec<_>>(),
                    "plan": routing.plan,
                    "metering": routing.metering.as_str(),
                }))?
            );
        } else {
            print!("{}", render_dry_run(&items, &routing, "Would copy"));
        }
        return check_skipped(&listing.skipped);
    }
    if items.is_empty() {
        // Nothing to run: the filters left every object out (exit 0, said plainly), or every
        // object listed was skipped (named above, exit 1).
        if listing.filtered_out > 0 {
            println!(
                "Nothing to copy: the filters left out every object under {} ({})",
                ends.src_url, listing.filtered_out
            );
        }
        return check_skipped(&listing.skipped);
    }
    // Read as the copy goes, not all before it starts.
    let items = with_copy_properties(t, ends, &routing, items_of(items))?;
    let sources = Sources {
        items,
        bytes_so_far: volume,
        still_listing: false,
        volume: None,
    };
    let report = execute(t, ends, sources, &routing).await?;
    print!("{}", render_report(&report, &routing, t.json)?);
    check_failures(&report)?;
    check_skipped(&listing.skipped)
}
