//! The exhaustive mode (`max_relay_candidates: None`) on the built-in 71-region grid: 50 random
//! requests, each planned for the most throughput and then for the least cost at a floor
//! just under it, as `bench/src/bin/planner_search.rs --all` draws them. Before the mode was
//! rebuilt, the exact program over every region took up to a minute per request and failed
//! with microlp's "Singular matrix" on about a third of cases with a GCP end.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_planner::{BoundKind, CostCap, Objective, TransferPlan, TransferRequest, plan_transfer};

fn random_request(catalog: &Catalog, rng: &mut SmallRng) -> TransferRequest {
    let regions: Vec<&RegionId> = catalog.regions().iter().collect();
    let src = regions[rng.random_range(0..regions.len())].clone();
    let dst = loop {
        let d = regions[rng.random_range(0..regions.len())];
        if *d != src {
            break d.clone();
        }
    };
    let mut req = TransferRequest::new(
        src,
        dst,
        rng.random_range(1..=1000u64) * 1_000_000_000,
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(1e12),
        },
    );
    req.config.max_vms_per_region = rng.random_range(1..=8);
    req.config.max_connections_per_vm = [8, 16, 32, 64][rng.random_range(0..4)];
    req
}

/// Plans `req` in both modes; the exhaustive plan must exist, be at least as good as the
/// default one, and carry a gap consistent with its own figures.
fn both_modes(catalog: &Catalog, req: &TransferRequest, case: usize) -> TransferPlan {
    let default =
        plan_transfer(catalog, req).unwrap_or_else(|e| panic!("case {case}: default mode: {e}"));
    let mut all = req.clone();
    all.config.max_relay_candidates = None;
    let plan =
        plan_transfer(catalog, &all).unwrap_or_else(|e| panic!("case {case}: exhaustive: {e}"));
    assert!(
        !default.chosen.better_than(&plan.chosen, &req.objective),
        "case {case}: the default mode found a better plan than the exhaustive one"
    );
    let gap = plan
        .optimality_gap
        .unwrap_or_else(|| panic!("case {case}: no gap reported"));
    assert!((0.0..1.0).contains(&gap.relative), "case {case}: {gap:?}");
    match gap.bound_kind {
        BoundKind::CostUsdAtLeast => assert!(
            plan.chosen.cost_usd.total >= gap.bound * (1.0 - 1e-6),
            "case {case}: ${} below the bound {gap:?}",
            plan.chosen.cost_usd.total
        ),
        BoundKind::ThroughputGbpsAtMost => assert!(
            plan.chosen.throughput_gbps <= gap.bound * (1.0 + 1e-6),
            "case {case}: {} Gbps above the bound {gap:?}",
            plan.chosen.throughput_gbps
        ),
    }
    plan
}

#[test]
fn the_exhaustive_mode_plans_fifty_random_requests_on_the_real_grid() {
    let catalog = Catalog::builtin();
    let mut rng = SmallRng::seed_from_u64(2026);
    let mut gaps = Vec::new();
    for case in 0..50 {
        let mut req = random_request(&catalog, &mut rng);
        let fastest = both_modes(&catalog, &req, case);
        let fraction = [0.5, 0.9, 0.99, 0.999, 0.9999][rng.random_range(0..5)];
        let floor = fastest.chosen.throughput_gbps * fraction;
        req.objective = Objective::MinCost {
            throughput_floor: Gbps(floor),
        };
        let cheapest = both_modes(&catalog, &req, case);
        assert!(
            cheapest.chosen.throughput_gbps >= floor * (1.0 - 1e-9),
            "case {case}: {} Gbps for a floor of {floor}",
            cheapest.chosen.throughput_gbps
        );
        gaps.push(cheapest.optimality_gap.unwrap().relative);
    }
    gaps.sort_by(f64::total_cmp);
    eprintln!(
        "min-cost gaps to the LP bound: median {:.3}%, worst {:.3}%",
        gaps[gaps.len() / 2] * 100.0,
        gaps[gaps.len() - 1] * 100.0
    );
}
