//! What the executor asks of its caller ([`PipelineHooks`]: routes and re-plans, with the
//! types they answer in), and [`PlannerHooks`]: those questions answered by the planners — a
//! route (and its predicted time and cost) for data moving between two regions, from the
//! overlay planner; new places for stages that found no capacity, from
//! `JointProblem::replan`, keeping every stage that has started where it is.

use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_gateway::{Pricing, Topology};
use skyx_pipeline::{JointProblem, StageOption};
use skyx_planner::{
    Objective, PlannerConfig, TransferRequest, fastest_within_direct_cost, plan_transfer,
};

/// A route between two regions planned for one transfer, with what the plan predicts for it.
#[derive(Debug, Clone)]
pub struct PlannedRoute {
    pub topology: Topology,
    pub pricing: Pricing,
    /// Seconds and USD (egress and agent VMs) the plan predicts for the bytes to move.
    pub predicted_s: f64,
    pub predicted_usd: f64,
}

/// Where a stage runs, and what the plan expects it to take there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub region: String,
    pub instance: String,
    pub usd_per_hour: f64,
    /// The spec's runtime estimate for this instance.
    pub predicted_s: f64,
}

/// New places for stages after a capacity error.
#[derive(Debug, Clone)]
pub struct Replanned {
    /// Stage → its placement, for every stage the re-plan was allowed to move.
    pub placements: Vec<(usize, Placement)>,
    /// Anything the user should know (say, a deadline that can no longer be met).
    pub note: Option<String>,
}

/// What the driver asks of its caller, which holds the catalog and the plan.
pub trait PipelineHooks: Send + Sync {
    /// The agents and routes for moving `bytes` from one region to another, and their prices.
    fn route(&self, src_region: &str, dst_region: &str, bytes: u64)
    -> Result<PlannedRoute, String>;
    /// Places the pipeline again after `failed` found no capacity: stages with `replaceable`
    /// set may move, the others keep `current`; no replaceable stage may go to a blocked
    /// (region, instance). An error says why nothing fits.
    fn replan(
        &self,
        failed: usize,
        current: &[Placement],
        replaceable: &[bool],
        blocked: &[(String, String)],
    ) -> Result<Replanned, String>;
}

/// What the driver asks of the plan: routes between regions, and new places for stages that
/// found no capacity.
#[derive(Debug)]
pub struct PlannerHooks {
    pub catalog: Catalog,
    pub problem: JointProblem,
    /// Most agent VMs the overlay planner may use in one region.
    pub max_vms_per_region: u32,
}

fn placement(o: &StageOption) -> Placement {
    Placement {
        region: o.region.to_string(),
        instance: o.instance.clone(),
        usd_per_hour: o.usd_per_hour,
        predicted_s: o.seconds(),
    }
}

impl PipelineHooks for PlannerHooks {
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
        let topology = Topology::from_plan(
            &plan.chosen,
            PlannerConfig::default().max_connections_per_vm,
        );
        let pricing = Pricing::for_plan(&self.catalog, &plan, &topology);
        Ok(PlannedRoute {
            topology,
            pricing,
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
