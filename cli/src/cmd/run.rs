//! `skyx run PIPELINE.toml`: plan a staged pipeline jointly (where each stage runs and how data
//! moves between stages) and show it against the best single-cloud and the greedy plans.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use skyx_catalog::Catalog;
use skyx_pipeline_run::AgentCompute;
use skyx_pipeline_run::ComputeProvider;
use skyx_provision::{LocalProvider, Provider};

use crate::args::provider::{Metering, ProviderArgs};
use skyx_pipeline::schedule::DataSource;
use skyx_pipeline::{DataRef, JointProblem, PipelinePlan, PipelineSpec, Schedule};
use skyx_pipeline_run::{
    EdgeRun, InputRun, LocalCompute, PipelineReport, PipelineRun, PlannerHooks, RegionStore,
    StageRun, run_pipeline,
};
use skyx_sky::SkyManifest;
use skyx_store::StoreConfig;

use crate::args::catalog::CatalogArgs;
use crate::error::BadInput;
use crate::render::pipeline::{render, render_report};

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
    /// Where stages run: `local` (processes of this gateway, the default), `agents` (an agent
    /// of its own each, launched by the provider; the default with a cloud provider), `ray`
    /// (a job on the Ray cluster of each stage's region, --ray-cluster).
    #[arg(long, value_enum)]
    pub compute: Option<ComputeKind>,
    /// Same as `--compute agents`.
    #[arg(long, hide = true, conflicts_with = "compute")]
    pub stages_on_agents: bool,
    #[command(flatten)]
    pub ray: crate::args::ray::RayArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

/// Where a pipeline's stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeKind {
    Local,
    Agents,
    Ray,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let text = crate::files::read_input(&args.pipeline, "pipeline", crate::files::PIPELINE_CAP)?;
    let spec = skyx_pipeline::parse(&text, &args.pipeline.display().to_string())
        .map_err(|e| BadInput(e.to_string()))?;
    let sky = match &args.sky {
        Some(t) => Some(crate::cmd::sky::resolve_sky(t)?),
        None => None,
    };
    let mut catalog = args.catalog.load()?;
    if let Some(sky) = &sky {
        catalog =
            crate::cmd::routing::sky_catalog(catalog, sky, args.catalog.throughput_grid.is_some())?;
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
    // A pipeline's stages always stand in their planned regions: on this machine, a run is a
    // rehearsal of the plan.
    let metering = args.provider.metering(true)?;
    let report = execute(args, &spec, &text, &plan, problem, catalog, sky.as_ref())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pipeline": spec.name,
                "plan": plan,
                "report": report,
                "metering": metering.as_str(),
            }))?
        );
    } else {
        let rehearsal = metering == Metering::Rehearsal;
        print!("{}", render_report(&spec, &plan, &report, rehearsal));
    }
    Ok(())
}

/// The bucket a pipeline's data goes under in each region of a sky.
const PIPELINE_BUCKET: &str = "skyx-pipelines";

/// The spec and the placements, digested as copies are (stable across runs and builds).
fn fingerprint(text: &str, plan: &Schedule) -> String {
    let placements = plan
        .stages
        .iter()
        .map(|s| format!("{}:{}", s.option.region, s.option.instance));
    skyx_gateway::journal::digest(std::iter::once(text.to_string()).chain(placements))
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
    let state = crate::cmd::transfer::state_dir_from(args.state_dir.as_ref());
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
        crate::cmd::transfer::in_sky(&mut local, sky);
        local_compute.namespaces = sky
            .spec
            .regions
            .iter()
            .map(|r| (r.region.to_string(), r.namespace.clone()))
            .collect();
    }
    // Checked before anything starts: a bad cloud setting launches no VM.
    let job = crate::args::provider::job_tag("run", &spec.name);
    let mut regions: Vec<String> = run.stages.iter().map(|s| s.region.clone()).collect();
    regions.extend(run.inputs.iter().map(|i| i.region.clone()));
    regions.sort_unstable();
    regions.dedup();
    let regions: Vec<&str> = regions.iter().map(String::as_str).collect();
    let cloud = args.provider.cloud_for(&regions, &job, sky.is_some())?;
    if let Some(cloud) = &cloud {
        crate::args::provider::announce(cloud.as_ref(), "run");
    }
    let provider: Arc<dyn Provider> = match &cloud {
        Some(cloud) => cloud.clone(),
        None => Arc::new(local),
    };
    let kind = match (args.compute, args.stages_on_agents) {
        (Some(kind), _) => kind,
        (None, true) => ComputeKind::Agents,
        (None, false) if cloud.is_some() => ComputeKind::Agents,
        (None, false) => ComputeKind::Local,
    };
    let compute: Arc<dyn ComputeProvider> = match kind {
        ComputeKind::Agents => Arc::new(AgentCompute {
            provider: provider.clone(),
            job: job.clone(),
            gateway: Arc::new(skyx_agent_api::GatewayIdentity::generate()?),
        }),
        ComputeKind::Local => Arc::new(local_compute),
        ComputeKind::Ray => {
            let launch = crate::args::ray::LaunchSettings {
                pipeline: run.name.clone(),
                dir: root.join("ray-clusters"),
                gcp_project: args.provider.gce.api.project.clone(),
                azure_subscription: args.provider.azure.api.subscription.clone(),
            };
            Arc::new(args.ray.compute(&run, &catalog, sky.is_some(), launch)?)
        }
    };
    if kind != ComputeKind::Ray {
        args.ray.check_unused()?;
    }
    let hooks = PlannerHooks {
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
        let cancel_rx = crate::args::provider::cancel_on_ctrl_c();
        let started = std::time::Instant::now();
        let json = args.json;
        let mut on_status = move |msg: &str| {
            if !json {
                eprintln!("[{:>7.1}s] {msg}", started.elapsed().as_secs_f64());
            }
        };
        if let Some(cloud) = &cloud
            && let Err(e) = cloud.prepare(&regions).await
        {
            // A setting that cannot work launches no VM; the groups it made go.
            crate::args::provider::sweep(cloud.as_ref(), "run").await;
            return Err(crate::args::provider::setting_is_bad_input(e));
        }
        let report = run_pipeline(
            run,
            Arc::new(hooks),
            provider,
            compute,
            &mut on_status,
            cancel_rx,
        )
        .await;
        if let Some(cloud) = &cloud {
            // Whatever the run's end, no VM of it outlives it.
            crate::args::provider::sweep(cloud.as_ref(), "run").await;
        }
        Ok(report?)
    })
}
