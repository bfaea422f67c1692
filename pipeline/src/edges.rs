//! Pricing the transfers between stages with the overlay planner: for each region pair, the
//! fastest overlay plan that costs no more than a plain direct copy (what `skyx plan` and
//! `skyx cp` do by default), so a pipeline edge carries relays, parallel VMs and connections,
//! and compression, priced by region pair; and the plain direct copy itself, which small data
//! sets take (see [`EdgeRate`]).

use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_planner::{
    Objective, PlannerConfig, RegionConstraints, RoutePlan, TransferRequest,
    fastest_within_direct_cost, plan_route,
};

use crate::joint::{EdgePricer, EdgeRate, RouteRate};

/// Edge prices from the overlay planner over `catalog`, with the pipeline's data rules applied
/// to every relay.
#[derive(Debug)]
pub struct OverlayPricer<'a> {
    pub catalog: &'a Catalog,
    pub constraints: RegionConstraints,
    pub config: PlannerConfig,
}

impl<'a> OverlayPricer<'a> {
    pub fn new(catalog: &'a Catalog, constraints: RegionConstraints) -> Self {
        OverlayPricer {
            catalog,
            constraints,
            // Fewer relay candidates than `skyx plan`: a pipeline prices hundreds of pairs.
            config: PlannerConfig {
                max_relay_candidates: Some(8),
                ..PlannerConfig::default()
            },
        }
    }
}

/// `plan` as a line in the volume it was planned for (`gb` logical GB).
fn route_rate(plan: &RoutePlan, gb: f64, vm_overhead_s: f64) -> RouteRate {
    let fixed_usd: f64 = plan
        .vm_details
        .values()
        .map(|v| f64::from(v.count) * v.instance_type_price_per_hour * vm_overhead_s / 3600.0)
        .sum();
    let widest = plan.paths.iter().max_by(|a, b| a.gbps.total_cmp(&b.gbps));
    let via = widest
        .map(|p| p.regions[1..p.regions.len().saturating_sub(1)].to_vec())
        .unwrap_or_default();
    RouteRate {
        gbps: plan.throughput_gbps,
        usd_per_gb: (plan.cost_usd.total - fixed_usd).max(0.0) / gb,
        egress_usd_per_gb: plan.cost_usd.egress / gb,
        fixed_usd,
        via,
    }
}

impl EdgePricer for OverlayPricer<'_> {
    fn rate(&self, src: &RegionId, dst: &RegionId, compression: f64) -> Option<EdgeRate> {
        // A volume large enough for the wide plan's fixed VM billing to be small beside the
        // rest; 100 GB keeps the numbers readable.
        const VOLUME: u64 = 100_000_000_000;
        let mut req = TransferRequest::new(
            src.clone(),
            dst.clone(),
            VOLUME,
            Objective::MinCost {
                throughput_floor: Gbps(0.1),
            },
        );
        req.compression_ratio = compression;
        req.constraints = self.constraints.clone();
        req.config = self.config.clone();
        // Unplannable directly: the floor objective stands, and the wide plan is the only line.
        let plain = fastest_within_direct_cost(self.catalog, &mut req).ok();
        let wide = plan_route(self.catalog, &req).ok()?;
        let gb = VOLUME as f64 / 1e9;
        let overhead = self.config.vm_overhead_s;
        Some(EdgeRate {
            wide: route_rate(&wide, gb, overhead),
            plain: plain.map(|p| route_rate(&p, gb, overhead)),
        })
    }
}
