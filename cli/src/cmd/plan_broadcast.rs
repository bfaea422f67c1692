//! `skyx plan --dst R1,R2,…`: a broadcast plan (one source, several destinations, relays that
//! fork), shown beside a separate overlay copy and a separate direct copy to each destination.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_planner::broadcast::SeparateCopies;
use skyx_planner::{
    BroadcastPlan, BroadcastRequest, Objective, RouteChoice, plain_direct_plan, plan_broadcast,
};

use super::plan::{PlanArgs, describe_objective, model_and_notes, request_from_flags};
use crate::units::{format_bytes, format_duration, parse_bytes};

/// Whether `args` asks for a broadcast (several comma-separated destinations).
pub fn is_broadcast(args: &PlanArgs) -> bool {
    args.dst.contains(',')
}

/// Plans `args` for its comma-separated destinations.
pub fn run(args: &PlanArgs) -> Result<()> {
    let catalog = &args.catalog.load()?;
    let dsts = args
        .dst
        .split(',')
        .map(|d| catalog.resolve_region(d.trim()).context("--dst"))
        .collect::<Result<Vec<RegionId>>>()?;
    if args.dot {
        bail!(crate::error::BadInput(
            "--dot draws a plan to one destination; use --json for a broadcast".into()
        ));
    }
    if args.route.via.trim() != "auto" {
        bail!(crate::error::BadInput(format!(
            "--via {} fixes one route to one destination; a broadcast plans its own trees",
            args.route.via
        )));
    }
    let src = catalog.resolve_region(&args.src).context("--src")?;
    let volume = parse_bytes(&args.volume).context("--volume")?;
    let o = &args.objective;
    let unicast = request_from_flags(
        src.clone(),
        dsts[0].clone(),
        volume,
        o,
        &args.route,
        &args.constraints,
        catalog,
    )?;
    let mut req = BroadcastRequest::new(src, dsts, volume, unicast.objective);
    req.compression_ratio = unicast.compression_ratio;
    req.constraints = unicast.constraints;
    req.config = unicast.config;
    if o.throughput_floor.is_none() && o.cost_cap.is_none() && o.deadline.is_none() {
        req.objective = default_objective(catalog, &req)?;
    }
    let plan = plan_broadcast(catalog, &req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render(&plan));
    }
    Ok(())
}

/// Without an objective flag: the cheapest broadcast at least as fast as the slowest of the
/// plain direct copies (direct link, one VM per end) to each destination, so every destination
/// has its data no later than if each were copied directly.
pub fn default_objective(catalog: &Catalog, req: &BroadcastRequest) -> Result<Objective> {
    let mut slowest = f64::INFINITY;
    for dst in &req.dsts {
        let mut unicast = req.unicast(dst);
        unicast.route = RouteChoice::Auto;
        slowest = slowest.min(plain_direct_plan(catalog, &unicast)?.throughput_gbps);
    }
    Ok(Objective::MinCost {
        throughput_floor: Gbps(slowest),
    })
}

fn row(out: &mut String, label: &str, gbps: f64, time_s: f64, egress: f64, vm: f64) {
    let _ = writeln!(
        out,
        "  {label:<30} {gbps:>9.2} Gbps  {:>10}  {:>10}  (egress ${egress:.2}, VMs ${vm:.2})",
        format_duration(time_s),
        format!("${:.2}", egress + vm),
    );
}

fn separate_row(out: &mut String, label: &str, copies: &Option<SeparateCopies>) {
    match copies {
        Some(s) => row(
            out,
            label,
            s.throughput_gbps,
            s.time_s,
            s.cost_usd.egress,
            s.cost_usd.vm,
        ),
        None => {
            let _ = writeln!(out, "  {label:<30} not feasible for every destination");
        }
    }
}

/// The human-readable report.
pub fn render(plan: &BroadcastPlan) -> String {
    let c = &plan.chosen;
    let mut out = String::new();
    let dsts: Vec<String> = plan.dsts.iter().map(|d| d.to_string()).collect();
    let _ = writeln!(
        out,
        "Broadcast: {} -> {}, {} to each ({})",
        plan.src,
        dsts.join(", "),
        format_bytes(plan.volume_bytes as f64),
        describe_objective(&plan.objective)
    );
    let _ = writeln!(
        out,
        "\nTrees (each partition relayed once per hop, forked where it branches)"
    );
    for (i, tree) in c.trees.iter().enumerate() {
        let hops: Vec<String> = tree
            .hops
            .iter()
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect();
        let _ = writeln!(
            out,
            "  partition {} ({:.0}%): {}",
            i + 1,
            tree.share * 100.0,
            hops.join(", ")
        );
    }
    let _ = writeln!(out, "\nHops (wire)");
    for e in &c.edges {
        let _ = writeln!(
            out,
            "  {:<28} -> {:<28} {:>7.2} Gbps {:>4} conns ${:.3}/GB {:>10} ${:>8.2}",
            e.src.to_string(),
            e.dst.to_string(),
            e.gbps,
            e.connections,
            e.usd_per_gb,
            format_bytes(e.gb * 1e9),
            e.egress_usd
        );
    }
    let _ = writeln!(out, "\nAgent VMs");
    for (region, count) in &c.vms {
        let _ = writeln!(out, "  {:<28} {count:>2}", region.to_string());
    }
    let _ = writeln!(
        out,
        "\nPredicted: every destination in {} at {:.2} Gbps; ${:.2} = egress ${:.2} + VMs ${:.2}",
        format_duration(c.time_s),
        c.throughput_gbps,
        c.cost_usd.total,
        c.cost_usd.egress,
        c.cost_usd.vm
    );
    let _ = writeln!(
        out,
        "\nCompared (separate copies run at once; time until the last destination has it)\n{:<32} {:>14} {:>11} {:>11}",
        "", "throughput", "time", "cost"
    );
    row(
        &mut out,
        "this broadcast",
        c.throughput_gbps,
        c.time_s,
        c.cost_usd.egress,
        c.cost_usd.vm,
    );
    separate_row(
        &mut out,
        "a separate overlay copy each",
        &plan.separate_overlays,
    );
    separate_row(
        &mut out,
        "a separate direct copy each",
        &plan.separate_direct,
    );
    model_and_notes(&mut out, &plan.model, &plan.notes);
    out
}
