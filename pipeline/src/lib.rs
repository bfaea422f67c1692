//! Staged pipelines: where each stage runs and how data moves between stages, chosen together.
//!
//! - [`spec`]: the TOML spec (inputs, stages, candidates, rules, objective), checked with
//!   errors that point at lines: unknown fields, dangling inputs, cycles, bad values.
//! - [`resources`]: candidates matched to the catalog's VM offers under the rules (stage and
//!   pipeline; `confidential = true` keeps confidential-computing families only).
//! - [`edges`]: transfer prices per region pair from the overlay planner.
//! - [`joint`]: the joint MILP, the single-cloud and greedy baselines, and an exhaustive search
//!   for checking them.
//! - [`plan_pipeline`]: all of it in one call, as `skyx run` uses it.
//! - [`schedule`]: the executor's pure core, a state machine over stages and transfers (the
//!   `skyx-pipeline-run` crate drives it).
//!
//! No IO: the caller reads the file and prints the result.

pub mod edges;
pub mod joint;
pub mod resources;
pub mod schedule;
pub mod spec;

use skyx_catalog::{Catalog, Cloud, RegionId};

pub use edges::OverlayPricer;
pub use joint::{
    EdgePrice, EdgePricer, EdgeRate, JointError, JointProblem, Replan, RouteRate, Schedule,
};
pub use resources::{StageOption, is_confidential, stage_options};
pub use spec::{DataRef, PipelineObjective, PipelineSpec, Resource, SpecError, parse};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Joint(#[from] JointError),
}

/// The joint plan next to the baselines it is measured against.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelinePlan {
    pub joint: Schedule,
    /// The best plan with every stage on one cloud, and which cloud.
    pub single_cloud: Option<(Cloud, Schedule)>,
    /// Why each cloud that has no single-cloud plan has none.
    pub single_cloud_notes: Vec<String>,
    /// Stages placed one at a time in order, each at its locally best option.
    pub greedy: Option<Schedule>,
    /// Whether the greedy plan meets the objective's deadline or budget.
    pub greedy_meets_objective: bool,
    pub options_per_stage: Vec<usize>,
    /// Region pairs whose transfers the overlay planner priced.
    pub transfers_priced: usize,
}

/// Plans `spec` against `catalog`: options per stage, transfer prices by the overlay planner,
/// the joint MILP, and both baselines.
pub fn plan_pipeline(
    catalog: &Catalog,
    spec: &PipelineSpec,
) -> Result<PipelinePlan, PipelineError> {
    plan_problem(&pipeline_problem(catalog, spec)?)
}

/// The placement problem of `spec`: each stage's options, the inputs' regions (checked against
/// the pipeline's rules), and every transfer some choice could need, priced by the overlay
/// planner. The executor keeps it to re-place stages.
pub fn pipeline_problem(
    catalog: &Catalog,
    spec: &PipelineSpec,
) -> Result<JointProblem, PipelineError> {
    let options = stage_options(catalog, spec)?;
    let mut input_regions: Vec<RegionId> = Vec::new();
    let data_rules = resources::constraints(&spec.rules, catalog, spec, 1)?;
    for input in &spec.inputs {
        let region = catalog
            .resolve_region(&input.region)
            .map_err(|e| SpecError {
                file: spec.file.clone(),
                line: input.line,
                column: 1,
                message: format!("input {}: region {:?}: {e}", input.name, input.region),
            })?;
        if let Some(why) = data_rules.refusal(&region) {
            return Err(SpecError {
                file: spec.file.clone(),
                line: input.line,
                column: 1,
                message: format!(
                    "input {} is in {region}, which the pipeline's constraints refuse ({why})",
                    input.name
                ),
            }
            .into());
        }
        input_regions.push(region);
    }
    let pricer = OverlayPricer::new(catalog, data_rules);
    Ok(JointProblem::new(spec, input_regions, options, &pricer))
}

/// The joint plan of a priced problem, with the single-cloud and greedy baselines.
pub fn plan_problem(problem: &JointProblem) -> Result<PipelinePlan, PipelineError> {
    let joint = problem.solve(None)?;
    let mut single_cloud: Option<(Cloud, Schedule)> = None;
    let mut single_cloud_notes = Vec::new();
    for cloud in Cloud::ALL {
        match problem.solve(Some(cloud)) {
            Ok(s) => {
                if single_cloud
                    .as_ref()
                    .is_none_or(|(_, b)| problem.better(&s, b))
                {
                    single_cloud = Some((cloud, s));
                }
            }
            Err(e) => single_cloud_notes.push(format!("{cloud}: {e}")),
        }
    }
    let greedy = problem.greedy();
    Ok(PipelinePlan {
        joint,
        single_cloud,
        single_cloud_notes,
        greedy_meets_objective: greedy.as_ref().is_some_and(|g| problem.satisfies(g)),
        greedy,
        options_per_stage: problem.options.iter().map(Vec::len).collect(),
        transfers_priced: problem.pairs_priced,
    })
}
