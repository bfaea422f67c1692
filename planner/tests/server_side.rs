//! The provider's own copy as a route: priced as transfer out of the source's region with no
//! VMs and no compression, chosen only when the request allows it, it meets the objective's
//! bound, and it beats the best agent route under that objective.

use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_planner::{CostCap, Objective, RouteKind, TransferRequest, plan_transfer};

const GB: u64 = 1_000_000_000;

fn request(src: &str, dst: &str, objective: Objective, server_side: bool) -> TransferRequest {
    let mut req = TransferRequest::new(
        src.parse::<RegionId>().unwrap(),
        dst.parse().unwrap(),
        100 * GB,
        objective,
    );
    req.server_side = server_side;
    req
}

#[test]
fn the_cheapest_plan_between_two_s3_regions_is_the_providers_copy_when_allowed() {
    let catalog = Catalog::builtin();
    let floor = Objective::MinCost {
        throughput_floor: Gbps(0.5),
    };
    let plan = plan_transfer(
        &catalog,
        &request("aws:us-east-1", "aws:eu-west-1", floor, true),
    )
    .unwrap();
    let ss = plan.server_side.as_ref().expect("priced");
    assert_eq!(ss.kind, RouteKind::ServerSide);
    assert!(ss.vms.is_empty() && ss.cost_usd.vm == 0.0);
    let price = catalog.egress_price(&plan.src, &plan.dst).unwrap().0;
    assert!((ss.cost_usd.total - 100.0 * price).abs() < 1e-9);
    // No agent route is cheaper than the egress alone plus VMs.
    assert_eq!(plan.chosen.kind, RouteKind::ServerSide);
    assert!(plan.notes.iter().any(|n| n.contains("estimate")));

    // Not allowed (different accounts, a local path): never offered.
    let plan = plan_transfer(
        &catalog,
        &request("aws:us-east-1", "aws:eu-west-1", floor, false),
    )
    .unwrap();
    assert!(plan.server_side.is_none());
    assert_ne!(plan.chosen.kind, RouteKind::ServerSide);

    // Across clouds there is no provider's copy.
    let plan = plan_transfer(
        &catalog,
        &request("aws:us-east-1", "gcp:europe-west1-b", floor, true),
    )
    .unwrap();
    assert!(plan.server_side.is_none());
}

#[test]
fn the_providers_copy_loses_when_it_misses_the_objectives_bound() {
    let catalog = Catalog::builtin();
    let (src, dst) = ("aws:us-east-1", "aws:ap-southeast-2");
    let ss_gbps = catalog
        .server_side_gbps(&src.parse().unwrap(), &dst.parse().unwrap())
        .unwrap()
        .0;
    // A floor above what the provider's copy is estimated to do: agents must carry it.
    let floor = Objective::MinCost {
        throughput_floor: Gbps(ss_gbps * 1.5),
    };
    let plan = plan_transfer(&catalog, &request(src, dst, floor, true)).unwrap();
    assert!(plan.server_side.is_some());
    assert_ne!(plan.chosen.kind, RouteKind::ServerSide);
    assert!(plan.chosen.throughput_gbps >= ss_gbps * 1.5 * (1.0 - 1e-9));

    // Fastest within a cap below the egress bill alone: no server-side.
    let cap = Objective::MaxThroughput {
        cost_cap: CostCap::TotalUsd(0.5),
    };
    assert!(plan_transfer(&catalog, &request(src, dst, cap, true)).is_err());
}

#[test]
fn a_cost_cap_only_the_providers_copy_fits_is_met_by_it() {
    let catalog = Catalog::builtin();
    let (src, dst) = ("aws:us-east-1", "aws:eu-west-1");
    let price = catalog
        .egress_price(&src.parse().unwrap(), &dst.parse().unwrap())
        .unwrap()
        .0;
    // Just above the egress bill of 100 GB: no agent route (egress plus VMs) fits.
    let cap = Objective::MaxThroughput {
        cost_cap: CostCap::TotalUsd(100.0 * price * 1.0001),
    };
    assert!(plan_transfer(&catalog, &request(src, dst, cap, false)).is_err());
    let plan = plan_transfer(&catalog, &request(src, dst, cap, true)).unwrap();
    assert_eq!(plan.chosen.kind, RouteKind::ServerSide);
}
