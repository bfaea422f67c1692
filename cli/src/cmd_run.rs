//! `skyx run PIPELINE.toml`: plan a staged pipeline jointly (where each stage runs and how data
//! moves between stages) and show it against the best single-cloud and the greedy plans.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use skyx_pipeline::{PipelineObjective, PipelinePlan, PipelineSpec, Schedule};

use crate::catalog_args::CatalogArgs;
use crate::transfer::BadInput;
use crate::units::format_bytes;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline spec (TOML; see examples/pipelines/).
    pub pipeline: PathBuf,
    /// Plan and print; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read {}", args.pipeline.display()))?;
    let spec = skyx_pipeline::parse(&text, &args.pipeline.display().to_string())
        .map_err(|e| BadInput(e.to_string()))?;
    let catalog = args.catalog.load()?;
    let plan = skyx_pipeline::plan_pipeline(&catalog, &spec).map_err(|e| match e {
        skyx_pipeline::PipelineError::Spec(e) => anyhow::Error::new(BadInput(e.to_string())),
        skyx_pipeline::PipelineError::Joint(e) => anyhow::Error::new(e),
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pipeline": spec.name,
                "objective": spec.objective,
                "stages": spec.stages.iter().map(|s| &s.name).collect::<Vec<_>>(),
                "plan": plan,
            }))?
        );
    } else {
        print!("{}", render(&spec, &plan));
    }
    if !args.dry_run {
        anyhow::bail!(
            "executing pipelines is not available in this build yet: the plan above is what \
             would run (use --dry-run to plan only)"
        );
    }
    Ok(())
}

fn hours(s: f64) -> String {
    if s < 90.0 {
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
