//! What `cp` and `sync` print: the dry run (what would move, and the plan's agents and
//! routes) and the summary of a copy (per hop bytes and metered egress, the prediction beside
//! what happened), human-readable or JSON.

use std::fmt::Write as _;

use anyhow::Result;
use skyx_gateway::{CopyItem, CopyReport, Prediction};

use crate::args::provider::Metering;
use crate::cmd::routing::{Routing, prediction};
use crate::units::{format_bytes, format_duration};

pub fn render_dry_run(items: &[CopyItem], routing: &Routing, what: &str) -> String {
    let total: u64 = items.iter().map(|i| i.size).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{what}: {} objects, {}",
        items.len(),
        format_bytes(total as f64)
    );
    for i in items.iter().take(20) {
        let _ = writeln!(
            out,
            "  {} -> {} ({})",
            super::terminal_safe(&i.src_key),
            super::terminal_safe(&i.dst_key),
            format_bytes(i.size as f64)
        );
    }
    if items.len() > 20 {
        let _ = writeln!(out, "  ... and {} more", items.len() - 20);
    }
    render_topology(&mut out, routing);
    out
}

fn render_topology(out: &mut String, routing: &Routing) {
    let t = &routing.topology;
    if routing.server_side {
        let _ = writeln!(
            out,
            "\nServer-side: the destination's service copies every object from the source itself (between local paths, this process does); no agents"
        );
    } else {
        let _ = writeln!(
            out,
            "\nAgents: {} ({} routes)",
            t.agents.len(),
            t.routes.len()
        );
    }
    for r in &t.routes {
        let chain: Vec<String> = r.agents.iter().map(|&a| t.agents[a].name()).collect();
        let conns: Vec<String> = r.connections.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            out,
            "  {}  (connections per hop: {})",
            chain.join(" -> "),
            conns.join(", ")
        );
    }
    match &routing.plan {
        Some(plan) => {
            let c = &plan.chosen;
            let _ = writeln!(
                out,
                "\nPredicted: {} at {:.2} Gbps; ${:.4} = egress ${:.4} + VMs ${:.4}",
                format_duration(c.time_s),
                c.throughput_gbps,
                c.cost_usd.total,
                c.cost_usd.egress,
                c.cost_usd.vm
            );
            if let Some(d) = &plan.direct {
                let _ = writeln!(
                    out,
                    "Direct:    {} at {:.2} Gbps; ${:.4}",
                    format_duration(d.time_s),
                    d.throughput_gbps,
                    d.cost_usd.total
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "\nNo regions given (--src-region/--dst-region): one local agent pair, no egress pricing."
            );
        }
    }
    if let Some(note) = metering_note(routing) {
        let _ = writeln!(out, "{note}");
    }
}

/// What the figures of a route run on this machine are, where they are not a bill; `None`
/// for cloud agents and for a copy with no plan.
fn metering_note(routing: &Routing) -> Option<&'static str> {
    match (routing.metering, &routing.plan) {
        (Metering::Cloud, _) | (Metering::Local, None) => None,
        (Metering::Local, Some(_)) => Some(
            "Agents on this machine copy directly (one source agent, one sink agent): the plan is what cloud agents would do, not run (--rehearse plays it here, --provider aws|gcp|azure runs it)",
        ),
        (Metering::Rehearsal, _) => Some(
            "A rehearsal: agents on this machine play the plan's regions; every cost is the plan's prediction for cloud agents (no VM ran, no hop crossed between clouds)",
        ),
    }
}

/// The summary: human-readable or JSON, with the plan's prediction next to what happened.
pub fn render_report(report: &CopyReport, routing: &Routing, json: bool) -> Result<String> {
    let started_on = started_on(report, routing);
    if json {
        let mut v = serde_json::to_value(report)?;
        v["predicted"] = serde_json::to_value(started_on.map(|(p, _)| p))?;
        v["predicted_for"] = match started_on {
            Some((_, true)) => "plan around regions out of capacity".into(),
            Some((_, false)) => "first plan".into(),
            None => serde_json::Value::Null,
        };
        v["metering"] = routing.metering.as_str().into();
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut out = String::new();
    let r = report;
    let _ = writeln!(
        out,
        "Copied {} of {} objects ({} resumed, {} failed), {} in {} at {:.3} Gbps",
        r.objects_copied,
        r.objects_total,
        r.objects_resumed,
        r.objects_failed.len(),
        format_bytes(r.bytes_total as f64),
        format_duration(r.elapsed_s),
        r.throughput_gbps
    );
    if r.objects_server_side > 0 {
        let _ = writeln!(
            out,
            "  server-side: {} objects copied by the provider itself (between local paths, by this process), none through agents",
            r.objects_server_side
        );
    }
    if r.objects_server_side < r.objects_copied || r.chunks_total > 0 {
        let _ = writeln!(
            out,
            "  read and sent {} ({} chunks of {} skipped as already landed); compression {:.2}x",
            format_bytes(r.bytes_sent as f64),
            r.chunks_skipped,
            r.chunks_total,
            r.compression_ratio
        );
    }
    if !r.hops.is_empty() {
        let _ = writeln!(
            out,
            "  hops (bytes on the wire, {}):",
            match routing.metering {
                Metering::Cloud => "metered egress",
                Metering::Rehearsal => "egress the plan predicts for cloud agents",
                Metering::Local => "between agents on this machine: no cloud egress",
            }
        );
        for h in &r.hops {
            let price = h
                .usd_per_gb
                .map(|p| format!("${p:.3}/GB"))
                .unwrap_or_else(|| "unpriced".into());
            let resent = if h.resent_bytes > 0 {
                format!(
                    "  ({} resent on this hop)",
                    format_bytes(h.resent_bytes as f64)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "    {:<26} -> {:<26} {:>10}  {:>11}  ${:.4}{resent}",
                h.src_region,
                h.dst_region,
                format_bytes(h.wire_bytes as f64),
                price,
                h.egress_usd
            );
        }
    }
    let _ = writeln!(
        out,
        "  {}: ${:.4} = egress ${:.4} + agents ${:.4} ({} agents{}{})",
        match routing.metering {
            Metering::Cloud => "cost",
            Metering::Rehearsal => "predicted cost on cloud agents (a rehearsal: no VM ran)",
            Metering::Local => {
                "cost of agents and hops (all on this machine; the stores' own charges for reading and writing from here are not counted)"
            }
        },
        r.total_usd,
        r.egress_usd,
        r.vm_usd,
        r.agents.len(),
        if routing.pricing.vm_overhead_s > 0.0 {
            format!(
                ", each billed {:.0} s beyond its run as the plan counts",
                routing.pricing.vm_overhead_s
            )
        } else {
            String::new()
        },
        if r.agents_replaced > 0 {
            format!(", {} replaced after failing", r.agents_replaced)
        } else {
            String::new()
        }
    );
    let peak = r.agents.iter().map(|a| a.peak_rss_bytes).max().unwrap_or(0);
    if peak > 0 {
        let _ = writeln!(
            out,
            "  agents: peak memory {} (largest), CPU {:.1} s in all",
            format_bytes(peak as f64),
            r.agents.iter().map(|a| a.cpu_seconds).sum::<f64>()
        );
    }
    if let Some((p, around_full)) = started_on {
        let listing_refined = r.refinements.iter().any(|f| f.cause.is_none());
        let _ = writeln!(
            out,
            "  {}: {} at {:.2} Gbps, ${:.4} (egress ${:.4} + VMs ${:.4}){}",
            match routing.metering {
                Metering::Local => "planned for cloud agents, not run here (--rehearse plays it)",
                _ => "planner predicted",
            },
            format_duration(p.time_s),
            p.throughput_gbps,
            p.cost_usd,
            p.egress_usd,
            p.vm_usd,
            match (around_full, listing_refined) {
                (true, _) => ", for the plan made around regions out of capacity",
                (false, true) => ", for the volume first listed",
                (false, false) => "",
            }
        );
    }
    for f in &r.refinements {
        let _ = writeln!(out, "  {}", refinement_line(f));
    }
    let verified: Vec<String> = r
        .verified
        .iter()
        .map(|(how, n)| format!("{n} by {how}"))
        .collect();
    if !verified.is_empty() {
        let _ = writeln!(
            out,
            "  verified at the destination: {}",
            verified.join(", ")
        );
    }
    if r.corrupt_chunks_detected > 0 {
        let _ = writeln!(
            out,
            "  {} corrupt chunks detected on the wire and resent",
            r.corrupt_chunks_detected
        );
    }
    for f in &r.objects_failed {
        let _ = writeln!(
            out,
            "  FAILED {}: {}",
            super::terminal_safe(&f.key),
            super::terminal_safe(&f.why)
        );
    }
    if !r.objects_failed.is_empty()
        && let Some(j) = &r.journal
    {
        let _ = writeln!(
            out,
            "  journal kept at {j}: run the same command with --resume to retry the failed objects"
        );
    }
    Ok(out)
}

/// What the planner predicted for the plan the copy started on, and whether that is a plan
/// made around regions out of capacity (the first plan then never ran); `None` when the plan
/// it started on has no prediction.
fn started_on(report: &CopyReport, routing: &Routing) -> Option<(Prediction, bool)> {
    let first = routing.plan.as_ref()?;
    let around_full = report.refinements.iter().rev().find(|f| f.cause.is_some());
    match around_full {
        Some(f) => f.prediction.map(|p| (p, true)),
        None => Some((prediction(&first.chosen), false)),
    }
}

/// One refinement of the plan, in a line.
fn refinement_line(f: &skyx_gateway::Refinement) -> String {
    // (A copy that found no plan around a region out of capacity failed, with no report.)
    if let (Some(cause), Some(plan)) = (&f.cause, &f.plan) {
        return format!("planned again before starting, {cause}: {plan}");
    }
    let at = format!(
        "planned again at {} objects ({}) listed{}, {} to go",
        f.listed_objects,
        format_bytes(f.listed_bytes as f64),
        if f.listing_ended {
            ", the whole listing"
        } else {
            ""
        },
        format_bytes(f.to_go_bytes as f64)
    );
    let Some(plan) = &f.plan else {
        return format!("{at}: could not be planned, the route stayed");
    };
    let mut did = Vec::new();
    if !f.agents_launched.is_empty() {
        did.push(format!("launched {}", f.agents_launched.join(", ")));
    }
    if f.routes_built > 0 {
        did.push(format!("{} routes built", f.routes_built));
    }
    if f.routes_drained > 0 {
        did.push(format!("{} routes drained", f.routes_drained));
    }
    did.extend(f.failures.iter().map(|w| format!("failed: {w}")));
    if did.is_empty() {
        did.push("the running route already carries it".into());
    }
    format!("{at}: {plan}; {}", did.join("; "))
}
