//! `skyx run PIPELINE.toml`: plan a staged pipeline jointly (where each stage runs and how data
//! moves between stages) and show it against the best single-cloud and the greedy plans.

use std::fmt::Write as _;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_pipeline_run::AgentCompute;
use skyx_pipeline_run::ComputeProvider;
use skyx_provision::{LocalProvider, Provider};

use crate::provider_args::{ProviderArgs, ProviderKind};
use skyx_pipeline::schedule::DataSource;
use skyx_pipeline::{
    DataRef, JointProblem, PipelineObjective, PipelinePlan, PipelineSpec, Schedule, StageOption,
};
use skyx_pipeline_run::{
    EdgeRun, InputRun, LocalCompute, PipelineHooks, PipelineReport, PipelineRun, Placement,
    PlannedRoute, RegionStore, Replanned, StageRun, run_pipeline,
};
use skyx_planner::{Objective, TransferRequest, fastest_within_direct_cost, plan_transfer};
use skyx_sky::SkyManifest;
use skyx_store::StoreConfig;

use crate::catalog_args::CatalogArgs;
use crate::error::BadInput;
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
    /// $SKYX_STATE_DIR, else $XDG_STATE_HOME/skyx, else ~/.local/state/skyx).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run each stage on an agent of its own (launched by the provider, as stage VMs are with
    /// `--provider ec2`) rather than as a process of this gateway.
    #[arg(long)]
    pub stages_on_agents: bool,
    #[command(flatten)]
    pub provider: ProviderArgs,
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
    max_vms_per_region: u32,
}

fn placement(o: &StageOption) -> Placement {
    Placement {
        region: o.region.to_string(),
        instance: o.instance.clone(),
        usd_per_hour: o.usd_per_hour,
        predicted_s: o.seconds(),
    }
}

impl PipelineHooks for Hooks {
    fn route(&self, src: &str, dst: &str, bytes: u64) -> Result<PlannedRoute, String> {
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
        // Unplannable directly: the floor objective stands.
        let _ = fastest_within_direct_cost(&self.catalog, &mut req);
        let plan = plan_transfer(&self.catalog, &req).map_err(|e| e.to_string())?;
        let (predicted_s, predicted_usd) = (plan.chosen.time_s, plan.chosen.cost_usd.total);
        let routing = crate::transfer::routing_from_plan(&self.catalog, plan, 64, None);
        Ok(PlannedRoute {
            topology: routing.topology,
            pricing: routing.pricing,
            predicted_s,
            predicted_usd,
        })
    }

    fn replan(
        &self,
        _failed: usize,
        current: &[Placement],
        replaceable: &[bool],
        blocked: &[(String, String)],
    ) -> Result<Replanned, String> {
        // The options the stages run on now, found again in the problem by region and instance.
        let current: Vec<StageOption> = current
            .iter()
            .zip(&self.problem.options)
            .zip(&self.problem.stage_names)
            .map(|((p, opts), name)| {
                opts.iter()
                    .find(|o| o.region.to_string() == p.region && o.instance == p.instance)
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "stage {name} runs on {} in {}, which the plan does not offer",
                            p.instance, p.region
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let blocked: Vec<(RegionId, String)> = blocked
            .iter()
            .filter_map(|(r, i)| Some((r.parse().ok()?, i.clone())))
            .collect();
        let fixed: Vec<bool> = replaceable.iter().map(|r| !r).collect();
        let r = self
            .problem
            .replan(&current, &fixed, &blocked)
            .map_err(|e| e.to_string())?;
        Ok(Replanned {
            placements: (0..current.len())
                .filter(|&s| replaceable[s])
                .map(|s| (s, placement(&r.schedule.stages[s].option)))
                .collect(),
            note: r.relaxed,
        })
    }
}

/// The bucket a pipeline's data goes under in each region of a sky.
const PIPELINE_BUCKET: &str = "skyx-pipelines";

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
    let state = crate::transfer::state_dir_from(args.state_dir.as_ref());
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
                usd_per_hour: sched.option.usd_per_hour,
                predicted_s: sched.option.seconds(),
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
            compression: skyx_agent_api::wire::CompressionSpec::Auto { level: 1 },
            ..Default::default()
        },
        status_every: (!args.json).then_some(std::time::Duration::from_secs(5)),
        // In a sky every region keeps the pipeline's data in its own store.
        region_stores: sky
            .map(|sky| {
                sky.spec
                    .regions
                    .iter()
                    .map(|r| {
                        let env = SkyManifest::store_env(r);
                        (
                            r.region.to_string(),
                            RegionStore {
                                url: SkyManifest::bucket_url(r, PIPELINE_BUCKET),
                                config: StoreConfig::from_lookup(&|k| env.get(k).cloned()),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut local = LocalProvider::new(LocalProvider::default_program());
    local.log_dir = Some(root.join("logs"));
    let mut local_compute = LocalCompute::default();
    // Fault injection for the re-plan tests (tests/e2e/run.rs): regions with no capacity.
    if let Ok(list) = std::env::var("SKYX_FAULT_NO_CAPACITY") {
        local_compute.no_capacity_in = list.split(',').map(|r| r.trim().to_string()).collect();
    }
    if let Some(sky) = sky {
        crate::transfer::in_sky(&mut local, sky);
        local_compute.namespaces = sky
            .spec
            .regions
            .iter()
            .map(|r| (r.region.to_string(), r.namespace.clone()))
            .collect();
    }
    // Checked before anything starts: a bad EC2 setting launches no VM.
    let job = crate::provider_args::job_tag("run", &spec.name);
    let ec2 = match args.provider.provider {
        ProviderKind::Local => None,
        ProviderKind::Ec2 => {
            let mut regions: Vec<&str> = run.stages.iter().map(|s| s.region.as_str()).collect();
            regions.extend(run.inputs.iter().map(|i| i.region.as_str()));
            regions.sort_unstable();
            regions.dedup();
            let ec2 = Arc::new(args.provider.ec2_for(&regions, &job, sky.is_some())?);
            crate::provider_args::announce(&ec2, "run");
            Some(ec2)
        }
    };
    let provider: Arc<dyn Provider> = match &ec2 {
        Some(ec2) => ec2.clone(),
        None => Arc::new(local),
    };
    let compute: Arc<dyn ComputeProvider> = if ec2.is_some() || args.stages_on_agents {
        Arc::new(AgentCompute {
            provider: provider.clone(),
            job: job.clone(),
            token: skyx_gateway::copy::random_token(),
        })
    } else {
        Arc::new(local_compute)
    };
    let hooks = Hooks {
        catalog,
        problem,
        max_vms_per_region: if sky.is_some() {
            1
        } else {
            skyx_planner::PlannerConfig::default().max_vms_per_region
        },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let cancel_rx = crate::provider_args::cancel_on_ctrl_c();
        let started = std::time::Instant::now();
        let json = args.json;
        let mut on_status = move |msg: &str| {
            if !json {
                eprintln!("[{:>7.1}s] {msg}", started.elapsed().as_secs_f64());
            }
        };
        let report = run_pipeline(
            run,
            Arc::new(hooks),
            provider,
            compute,
            &mut on_status,
            cancel_rx,
        )
        .await;
        if let Some(ec2) = &ec2 {
            // Whatever the run's end, no VM of it outlives it.
            crate::provider_args::sweep(ec2, "run").await;
        }
        Ok(report?)
    })
}

/// What ran against what the plan predicted: per stage its runtime against the spec's
/// estimate, per transfer its time and cost against the route's prediction for the bytes that
/// actually moved, and the totals.
fn render_report(spec: &PipelineSpec, plan: &PipelinePlan, r: &PipelineReport) -> String {
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
        "stage", "region", "instance", "start", "ran", "estimate", "metered $", "planned $"
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
            "transfer", "route", "bytes", "wire", "took", "predicted", "metered $", "predicted $"
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
    let _ = writeln!(
        out,
        "\n  data movement: metered ${metered:.4}, predicted ${predicted:.4} for the {} that moved (the plan priced ${:.4} for the {} the spec's sizes give)",
        format_bytes(moved_bytes as f64),
        plan.joint.transfer_usd,
        format_bytes(planned_bytes as f64),
    );
    let metered_compute: f64 = r.stages.iter().filter_map(|s| s.metered_usd).sum();
    let _ = writeln!(
        out,
        "  compute: metered ${metered_compute:.4} at the instances' prices for the time stages ran, planned ${:.2} for the spec's estimates",
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
