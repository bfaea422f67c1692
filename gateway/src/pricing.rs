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
        let mut pricing = Pricing::egress_of(catalog, topology, plan.vm_overhead_s);
        for (region, vms) in &plan.chosen.vm_details {
            pricing
                .vm_usd_per_hour
                .insert(region.to_string(), vms.instance_type_price_per_hour);
        }
        pricing
    }

    /// The prices of a broadcast carried by `topology`: egress between every pair of its
    /// agents' regions, each region's transfer VM at the catalog's price, and `vm_overhead_s`
    /// per VM (as the broadcast planner priced them).
    pub fn for_broadcast(catalog: &Catalog, topology: &Topology, vm_overhead_s: f64) -> Pricing {
        let mut pricing = Pricing::egress_of(catalog, topology, vm_overhead_s);
        for a in &topology.agents {
            if let Ok(region) = a.region.parse::<RegionId>()
                && let Some(vm) = catalog.gateway_vm(&region)
            {
                pricing.vm_usd_per_hour.insert(a.region.clone(), vm.price.0);
            }
        }
        pricing
    }

    /// Egress between every pair of `topology`'s agents' regions the catalog prices.
    fn egress_of(catalog: &Catalog, topology: &Topology, vm_overhead_s: f64) -> Pricing {
        let mut pricing = Pricing {
            vm_overhead_s,
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
        pricing
    }
}
