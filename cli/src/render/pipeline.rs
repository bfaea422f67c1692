//! What `skyx run` prints: the plan tables (joint, single-cloud and greedy schedules side by
//! side) and, after a run, what ran against what the plan predicted.

use std::fmt::Write as _;

use skyx_pipeline::{PipelineObjective, PipelinePlan, PipelineSpec, Schedule};
use skyx_pipeline_run::PipelineReport;

use crate::units::format_bytes;

/// What ran against what the plan predicted: per stage its runtime against the spec's
/// estimate, per transfer its time and cost against the route's prediction for the bytes that
/// actually moved, and the totals. With agents and stages on this machine (`rehearsal`) the
/// "metered" figures are the plan's prices for what moved and ran here, and say so: nothing
/// was billed.
pub fn render_report(
    spec: &PipelineSpec,
    plan: &PipelinePlan,
    r: &PipelineReport,
    rehearsal: bool,
) -> String {
    let metered_name = if rehearsal { "priced $" } else { "metered $" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nRan {} in {}{}",
        spec.name,
        hours(r.elapsed_s),
        if r.replans.is_empty() {
            ""
        } else {
            ", re-planned on the way"
        }
    );
    for note in &r.replans {
        let _ = writeln!(out, "  re-planned: {note}");
    }
    let _ = writeln!(
        out,
        "  {:<12} {:<26} {:<30} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "stage", "region", "instance", "start", "ran", "estimate", metered_name, "planned $"
    );
    for s in &r.stages {
        let ran = match (s.started_s, s.finished_s) {
            (Some(a), Some(b)) => hours(b - a),
            _ if s.resumed => "earlier".into(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<26} {:<30} {:>8} {:>8} {:>10} {:>10} {:>10.2}",
            s.name,
            s.region,
            s.instance,
            s.started_s.map_or("-".into(), hours),
            ran,
            hours(s.predicted_s),
            s.metered_usd.map_or("-".into(), |u| format!("{u:.4}")),
            s.predicted_s / 3600.0 * s.usd_per_hour
        );
    }
    let moved: Vec<_> = r.transfers.iter().filter(|t| !t.local).collect();
    if !moved.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:<24} {:<44} {:>9} {:>9} {:>8} {:>9} {:>10} {:>11}",
            "transfer", "route", "bytes", "wire", "took", "predicted", metered_name, "predicted $"
        );
        for t in &moved {
            let _ = writeln!(
                out,
                "  {:<24} {:<44} {:>9} {:>9} {:>8} {:>9} {:>10.4} {:>11}",
                format!("{} → {}", t.data, t.to_stage),
                format!("{} → {}", t.src_region, t.dst_region),
                format_bytes(t.bytes as f64),
                format_bytes(t.wire_bytes as f64),
                hours(t.finished_s - t.started_s),
                t.predicted_s.map_or("-".into(), hours),
                t.egress_usd + t.vm_usd,
                t.predicted_usd.map_or("-".into(), |u| format!("{u:.4}"))
            );
        }
    }
    let metered: f64 = moved.iter().map(|t| t.egress_usd + t.vm_usd).sum();
    let predicted: f64 = moved.iter().filter_map(|t| t.predicted_usd).sum();
    let planned_bytes: u64 = plan
        .joint
        .transfers
        .iter()
        .filter(|t| t.src != t.dst)
        .map(|t| t.bytes)
        .sum();
    let moved_bytes: u64 = moved.iter().map(|t| t.bytes).sum();
    if rehearsal {
        let _ = writeln!(
            out,
            "\n  a rehearsal: stages and agents ran on this machine, standing in for the plan's regions; \"priced\" is what the catalog charges for what moved and ran (no VM ran)"
        );
    }
    let metered_word = if rehearsal { "priced" } else { "metered" };
    let _ = writeln!(
        out,
        "\n  data movement: {metered_word} ${metered:.4}, predicted ${predicted:.4} for the {} that moved (the plan priced ${:.4} for the {} the spec's sizes give)",
        format_bytes(moved_bytes as f64),
        plan.joint.transfer_usd,
        format_bytes(planned_bytes as f64),
    );
    let metered_compute: f64 = r.stages.iter().filter_map(|s| s.metered_usd).sum();
    let _ = writeln!(
        out,
        "  compute: {metered_word} ${metered_compute:.4} at the instances' prices for the time stages ran, planned ${:.2} for the spec's estimates",
        plan.joint.compute_usd,
    );
    let _ = writeln!(
        out,
        "  time: {} elapsed, planned {} for the spec's estimates",
        hours(r.elapsed_s),
        hours(plan.joint.makespan_s)
    );
    out
}

fn hours(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn change(baseline: f64, joint: f64, less: &str, more: &str) -> String {
    let pct = (baseline - joint) / baseline * 100.0;
    if pct.abs() < 0.5 {
        "the same".to_string()
    } else if pct > 0.0 {
        format!("{pct:.0}% {less}")
    } else {
        format!("{:.0}% {more}", -pct)
    }
}

fn objective_text(o: PipelineObjective) -> String {
    match o {
        PipelineObjective::MinCost => "minimum cost".into(),
        PipelineObjective::MinTime => "minimum time".into(),
        PipelineObjective::MinCostDeadline { seconds } => {
            format!("minimum cost within {}", hours(seconds))
        }
        PipelineObjective::MinTimeBudget { usd } => format!("minimum time within ${usd:.2}"),
    }
}

fn schedule_table(out: &mut String, spec: &PipelineSpec, s: &Schedule) {
    let _ = writeln!(
        out,
        "  {:<12} {:<26} {:<34} {:>8} {:>8} {:>10}",
        "stage", "region", "instance", "start", "finish", "compute $"
    );
    for &i in &spec.order {
        let st = &s.stages[i];
        let _ = writeln!(
            out,
            "  {:<12} {:<26} {:<34} {:>8} {:>8} {:>10.2}",
            spec.stages[i].name,
            st.option.region.to_string(),
            st.option.instance,
            hours(st.start_s),
            hours(st.finish_s),
            st.option.compute_usd()
        );
    }
    let moving: Vec<_> = s.transfers.iter().filter(|t| t.src != t.dst).collect();
    if !moving.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:<28} {:<52} {:>9} {:>8} {:>8} {:>9} {:>9}",
            "transfer", "route", "size", "start", "takes", "egress $", "total $"
        );
        for t in moving {
            let mut route = vec![t.src.to_string()];
            route.extend(t.price.via.iter().map(|r| r.to_string()));
            route.push(t.dst.to_string());
            let _ = writeln!(
                out,
                "  {:<28} {:<52} {:>9} {:>8} {:>8} {:>9.2} {:>9.2}",
                format!(
                    "{} → {}",
                    spec.data_name(t.data),
                    spec.stages[t.to_stage].name
                ),
                route.join(" → "),
                format_bytes(t.bytes as f64),
                hours(t.start_s),
                hours(t.finish_s - t.start_s),
                t.price.egress_usd,
                t.price.usd
            );
        }
    }
    let _ = writeln!(
        out,
        "\n  total ${:.2} (compute ${:.2} + data movement ${:.2}), done after {}",
        s.total_usd,
        s.compute_usd,
        s.transfer_usd,
        hours(s.makespan_s)
    );
}

pub fn render(spec: &PipelineSpec, plan: &PipelinePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Pipeline {}: {} stages, objective: {} ({} placements considered, {} region pairs priced by the overlay planner)\n",
        spec.name,
        spec.stages.len(),
        objective_text(spec.objective),
        plan.options_per_stage.iter().sum::<usize>(),
        plan.transfers_priced
    );
    let _ = writeln!(out, "Joint plan:");
    schedule_table(&mut out, spec, &plan.joint);
    let compare = |name: &str, s: &Schedule| {
        format!(
            "{name:<28} ${:>9.2} {:>9}   joint plan: cost {}, time {}",
            s.total_usd,
            hours(s.makespan_s),
            change(s.total_usd, plan.joint.total_usd, "lower", "higher"),
            change(s.makespan_s, plan.joint.makespan_s, "shorter", "longer"),
        )
    };
    let _ = writeln!(out, "\nAgainst the baselines:");
    let _ = writeln!(
        out,
        "  {:<28} ${:>9.2} {:>9}",
        "joint",
        plan.joint.total_usd,
        hours(plan.joint.makespan_s)
    );
    match &plan.single_cloud {
        Some((cloud, s)) => {
            let _ = writeln!(
                out,
                "  {}",
                compare(&format!("best single cloud ({cloud})"), s)
            );
        }
        None => {
            let _ = writeln!(out, "  best single cloud: none");
            for note in &plan.single_cloud_notes {
                let _ = writeln!(out, "    {note}");
            }
        }
    }
    match &plan.greedy {
        Some(s) if !plan.greedy_meets_objective => {
            let _ = writeln!(
                out,
                "  {:<28} ${:>9.2} {:>9}   misses the objective's {}",
                "greedy (stage by stage)",
                s.total_usd,
                hours(s.makespan_s),
                match spec.objective {
                    PipelineObjective::MinTimeBudget { .. } => "budget",
                    _ => "deadline",
                }
            );
        }
        Some(s) => {
            let _ = writeln!(out, "  {}", compare("greedy (stage by stage)", s));
        }
        None => {
            let _ = writeln!(out, "  greedy: placing stages one at a time found no plan");
        }
    }
    if let Some((cloud, s)) = &plan.single_cloud {
        let _ = writeln!(out, "\nBest single-cloud plan ({cloud}):");
        schedule_table(&mut out, spec, s);
    }
    out
}
