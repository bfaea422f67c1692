//! Prices a copy is metered with: egress per region pair from the catalog and each region's
//! agent VM price from the plan, so that the summary's metered cost and the plan's prediction
//! count alike.

use skyx_catalog::{Catalog, RegionId};
use skyx_planner::TransferPlan;

use crate::copy::Pricing;
use crate::core::topology::Topology;

impl Pricing {
    /// The prices of `plan` for the agents of `topology`: egress between every pair of their
    /// regions the catalog prices, VM prices as the plan chose them, and the plan's per-VM
    /// overhead.
    pub fn for_plan(catalog: &Catalog, plan: &TransferPlan, topology: &Topology) -> Pricing {
        let mut pricing = Pricing {
            vm_overhead_s: plan.vm_overhead_s,
            ..Pricing::default()
        };
        for a in &topology.agents {
            for b in &topology.agents {
                if let (Ok(ra), Ok(rb)) =
                    (a.region.parse::<RegionId>(), b.region.parse::<RegionId>())
                    && let Some(p) = catalog.egress_price(&ra, &rb)
                {
                    pricing
                        .egress_usd_per_gb
                        .insert((a.region.clone(), b.region.clone()), p.0);
                }
            }
        }
        for (region, vms) in &plan.chosen.vm_details {
            pricing
                .vm_usd_per_hour
                .insert(region.to_string(), vms.instance_type_price_per_hour);
        }
        pricing
    }
}
