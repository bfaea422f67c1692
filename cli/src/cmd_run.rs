//! `skyx run PIPELINE.toml`: plan a staged pipeline jointly (where each stage runs and how data
//! moves between stages) and show it against the best single-cloud and the greedy plans.

use std::fmt::Write as _;
use std::path::PathBuf;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;
use skyx_catalog::{Catalog, Gbps};
use skyx_gateway::copy::Pricing;
use skyx_gateway::dag::DataSource;
use skyx_gateway::pipeline_run::{
    EdgeRun, InputRun, LocalCompute, PipelineHooks, PipelineReport, PipelineRun, StageRun,
    run_pipeline,
};
use skyx_gateway::{LocalProvider, Topology};
use skyx_pipeline::{
    DataRef, JointProblem, PipelineObjective, PipelinePlan, PipelineSpec, Schedule, StageOption,
};
use skyx_planner::{CostCap, Objective, TransferRequest, plain_direct_plan, plan_transfer};

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
    /// Print the plan (and the run's report) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run inside an emulated sky (`skyx sky up`): stages and agents run in their regions'
    /// namespaces and the planner sees the sky's regions and links.
    #[arg(long, env = "SKYX_SKY", value_name = "NAME|DIR")]
    pub sky: Option<String>,
    /// Where the pipeline's journal, region directories and logs live (default
    /// $SKYX_STATE_DIR, else ~/.local/state/skyx).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read {}", args.pipeline.display()))?;
    let spec = skyx_pipeline::parse(&text, &args.pipeline.display().to_string())
        .map_err(|e| BadInput(e.to_string()))?;
    let sky = match &args.sky {
        Some(t) => Some(crate::cmd_sky::resolve_sky(t)?),
        None => None,
    };
    let mut catalog = args.catalog.load()?;
    if let Some(sky) = &sky {
        catalog =
            crate::transfer::sky_catalog(catalog, sky, args.catalog.throughput_grid.is_some())?;
    }
    let to_cli = |e: skyx_pipeline::PipelineError| match e {
        skyx_pipeline::PipelineError::Spec(e) => anyhow::Error::new(BadInput(e.to_string())),
        skyx_pipeline::PipelineError::Joint(e) => anyhow::Error::new(e),
    };
    // Priced once: the plan comes from it, and the executor re-places stages with it.
    let problem = skyx_pipeline::pipeline_problem(&catalog, &spec).map_err(to_cli)?;
    let plan = skyx_pipeline::plan_problem(&problem).map_err(to_cli)?;
    if args.dry_run {
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
        return Ok(());
    }
    if !args.json {
        print!("{}", render(&spec, &plan));
        println!();
    }
    let report = execute(args, &spec, &text, &plan, problem, catalog, sky.as_ref())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pipeline": spec.name,
                "plan": plan,
                "report": report,
            }))?
        );
    } else {
        print!("{}", render_report(&spec, &plan, &report));
    }
    Ok(())
}

/// What the driver asks of the plan: routes between regions, and new places for stages that
/// found no capacity.
struct Hooks {
    catalog: Catalog,
    problem: JointProblem,
    /// The option each stage runs on now (re-plans change it).
    current: Mutex<Vec<StageOption>>,
    max_vms_per_region: u32,
}

impl PipelineHooks for Hooks {
    fn route(&self, src: &str, dst: &str, bytes: u64) -> Result<(Topology, Pricing), String> {
        let a = self
            .catalog
            .resolve_region(src)
            .map_err(|e| e.to_string())?;
        let b = self
            .catalog
            .resolve_region(dst)
            .map_err(|e| e.to_string())?;
        let mut req = TransferRequest::new(
            a,
            b,
            bytes.max(1),
            Objective::MinCost {
                throughput_floor: Gbps(0.1),
            },
        );
        req.config.max_vms_per_region = self.max_vms_per_region;
        if let Ok(direct) = plain_direct_plan(&self.catalog, &req) {
            req.objective = Objective::MaxThroughput {
                cost_cap: CostCap::TotalUsd(direct.cost_usd.total),
            };
        }
        let plan = plan_transfer(&self.catalog, &req).map_err(|e| e.to_string())?;
        let routing = crate::transfer::routing_from_plan(&self.catalog, plan, 64, None);
        Ok((routing.topology, routing.pricing))
    }

    fn replan(&self, stage: usize, blocked: &[(usize, String)]) -> Option<String> {
        // Stages other than this one keep their places (they may be running or done); this
        // one takes its best remaining option given where the others are.
        let mut current = self.current.lock().expect("placements");
        let mut p = self.problem.clone();
        for (s, opts) in p.options.iter_mut().enumerate() {
            if s == stage {
                opts.retain(|o| {
                    !blocked
                        .iter()
                        .any(|(b, r)| *b == s && o.region.to_string() == *r)
                });
            } else {
                *opts = vec![current[s].clone()];
            }
        }
        if p.options[stage].is_empty() {
            return None;
        }
        let schedule = p.solve(None).ok()?;
        let chosen = schedule.stages[stage].option.clone();
        current[stage] = chosen.clone();
        Some(chosen.region.to_string())
    }
}

fn fingerprint(text: &str, plan: &Schedule) -> String {
    // FNV-1a over the spec and the placements: stable across runs and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let placements: Vec<String> = plan
        .stages
        .iter()
        .map(|s| format!("{}:{}", s.option.region, s.option.instance))
        .collect();
    for b in text.bytes().chain(placements.join(",").bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn execute(
    args: &RunArgs,
    spec: &PipelineSpec,
    text: &str,
    plan: &PipelinePlan,
    problem: JointProblem,
    catalog: Catalog,
    sky: Option<&skyx_sky::SkyManifest>,
) -> Result<PipelineReport> {
    let state = args
        .state_dir
        .clone()
        .or_else(|| std::env::var_os("SKYX_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".local/state/skyx")
        });
    let root = state.join("pipelines").join(&spec.name);
    let run = PipelineRun {
        name: spec.name.clone(),
        stages: spec
            .stages
            .iter()
            .zip(&plan.joint.stages)
            .map(|(st, sched)| StageRun {
                name: st.name.clone(),
                region: sched.option.region.to_string(),
                instance: sched.option.instance.clone(),
                command: st.run.clone(),
            })
            .collect(),
        inputs: spec
            .inputs
            .iter()
            .zip(&problem.input_regions)
            .map(|(i, r)| InputRun {
                name: i.name.clone(),
                url: i.url.clone(),
                region: r.to_string(),
            })
            .collect(),
        edges: spec
            .stages
            .iter()
            .enumerate()
            .flat_map(|(v, st)| {
                st.inputs.iter().map(move |&d| EdgeRun {
                    source: match d {
                        DataRef::Input(i) => DataSource::Input(i),
                        DataRef::Stage(u) => DataSource::Stage(u),
                    },
                    name: spec.data_name(d).to_string(),
                    to_stage: v,
                })
            })
            .collect(),
        root: root.clone(),
        fingerprint: fingerprint(text, &plan.joint),
        copy_options: skyx_gateway::CopyOptions {
            compression: skyx_agent::api::CompressionSpec::Auto { level: 1 },
            ..Default::default()
        },
    };
    let mut provider = LocalProvider::new(LocalProvider::default_program());
    provider.log_dir = Some(root.join("logs"));
    let mut compute = LocalCompute::default();
    if let Some(sky) = sky {
        provider.namespaces = sky.namespaces();
        compute.namespaces = sky
            .spec
            .regions
            .iter()
            .map(|r| (r.region.to_string(), r.namespace.clone()))
            .collect();
    }
    let hooks = Hooks {
        catalog,
        current: Mutex::new(plan.joint.stages.iter().map(|s| s.option.clone()).collect()),
        problem,
        max_vms_per_region: if sky.is_some() { 1 } else { 8 },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = cancel_tx.send(true);
            }
        });
        let started = std::time::Instant::now();
        let json = args.json;
        let mut on_status = move |msg: &str| {
            if !json {
                eprintln!("[{:>7.1}s] {msg}", started.elapsed().as_secs_f64());
            }
        };
        Ok(run_pipeline(
            run,
            Arc::new(hooks),
            Arc::new(provider),
            Arc::new(compute),
            &mut on_status,
            cancel_rx,
        )
        .await?)
    })
}

fn render_report(spec: &PipelineSpec, plan: &PipelinePlan, r: &PipelineReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nRan {} in {:.1} s{}",
        spec.name,
        r.elapsed_s,
        if r.replans.is_empty() {
            String::new()
        } else {
            format!(" ({} re-plans)", r.replans.len())
        }
    );
    for note in &r.replans {
        let _ = writeln!(out, "  re-planned: {note}");
    }
    let _ = writeln!(
        out,
        "  {:<12} {:<26} {:<30} {:>9} {:>9}",
        "stage", "region", "instance", "start s", "finish s"
    );
    for s in &r.stages {
        let t = |v: Option<f64>| {
            v.map_or(if s.resumed { "done".into() } else { "-".into() }, |v| {
                format!("{v:.1}")
            })
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<26} {:<30} {:>9} {:>9}",
            s.name,
            s.region,
            s.instance,
            t(s.started_s),
            t(s.finished_s)
        );
    }
    let moved: Vec<_> = r.transfers.iter().filter(|t| !t.local).collect();
    if !moved.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:<28} {:<48} {:>10} {:>10} {:>9} {:>9} {:>8}",
            "transfer", "route", "bytes", "wire", "egress $", "agents $", "secs"
        );
        for t in &moved {
            let _ = writeln!(
                out,
                "  {:<28} {:<48} {:>10} {:>10} {:>9.4} {:>9.4} {:>8.1}",
                format!("{} → {}", t.data, t.to_stage),
                format!("{} → {}", t.src_region, t.dst_region),
                format_bytes(t.bytes as f64),
                format_bytes(t.wire_bytes as f64),
                t.egress_usd,
                t.vm_usd,
                t.finished_s - t.started_s
            );
        }
    }
    let metered: f64 = r.transfers.iter().map(|t| t.egress_usd + t.vm_usd).sum();
    let planned_bytes: u64 = plan
        .joint
        .transfers
        .iter()
        .filter(|t| t.src != t.dst)
        .map(|t| t.bytes)
        .sum();
    let moved_bytes: u64 = moved.iter().map(|t| t.bytes).sum();
    let _ = writeln!(
        out,
        "\n  data movement: metered ${metered:.4} for {} (the plan priced ${:.2} for the {} its size estimates gave)",
        format_bytes(moved_bytes as f64),
        plan.joint.transfer_usd,
        format_bytes(planned_bytes as f64),
    );
    let _ = writeln!(
        out,
        "  compute: planned ${:.2} for {:.1} h of stage time on the chosen instances (local processes here ran for {:.1} s)",
        plan.joint.compute_usd,
        plan.joint
            .stages
            .iter()
            .map(|s| s.option.hours)
            .sum::<f64>(),
        r.stages
            .iter()
            .filter_map(|s| Some(s.finished_s? - s.started_s?))
            .sum::<f64>(),
    );
    out
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
