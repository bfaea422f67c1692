//! Invariants of plans over the shipped 71-region grid.
//!
//! Every plan `plan_transfer` returns has already passed `validate` (conservation, per-VM
//! caps, connection budgets, VM limits); these tests check what the request asked for: floors,
//! caps, deadlines, region constraints, never worse than direct, and useful errors.

use skyx_catalog::{Catalog, Continent, EU_COUNTRIES, Gbps, RegionId};
use skyx_planner::{
    CostCap, Objective, PlanError, RegionConstraints, RouteChoice, TransferPlan, TransferRequest,
    plan_transfer,
};

const GB: u64 = 1_000_000_000;

fn region(s: &str) -> RegionId {
    s.parse().unwrap()
}

fn request(src: &str, dst: &str, objective: Objective) -> TransferRequest {
    TransferRequest::new(region(src), region(dst), 100 * GB, objective)
}

/// Plans `req` and checks the invariants every successful plan must have.
fn check(catalog: &Catalog, req: &TransferRequest) -> TransferPlan {
    let plan = plan_transfer(catalog, req).unwrap_or_else(|e| panic!("{req:?}: {e}"));
    let chosen = &plan.chosen;
    // Endpoints are provisioned; every hop is between provisioned regions.
    assert!(chosen.vms[&req.src] >= 1 && chosen.vms[&req.dst] >= 1);
    for e in &chosen.edges {
        assert!(chosen.vms.contains_key(&e.src) && chosen.vms.contains_key(&e.dst));
        assert!(e.connections >= 1, "a used hop has connections");
    }
    // Every region touched obeys the constraints, relays included.
    for r in chosen.vms.keys() {
        assert_eq!(
            req.constraints.refusal(r),
            None,
            "{r} violates the constraints"
        );
    }
    // Costs add up and time matches throughput.
    let egress: f64 = chosen.edges.iter().map(|e| e.egress_usd).sum();
    assert!((egress - chosen.cost_usd.egress).abs() < 1e-6);
    assert!((chosen.cost_usd.total - chosen.cost_usd.egress - chosen.cost_usd.vm).abs() < 1e-6);
    let expect_time = req.volume_gb() * 8.0 / chosen.throughput_gbps;
    assert!((chosen.time_s - expect_time).abs() / expect_time < 1e-9);
    // Wire GB leaving the source is the compressed volume.
    let from_src: f64 = chosen
        .edges
        .iter()
        .filter(|e| e.src == req.src)
        .map(|e| e.gb)
        .sum();
    assert!((from_src - req.wire_volume_gb()).abs() < 1e-6 * req.wire_volume_gb());
    // The objective is met, and the overlay is never worse than direct in its own objective.
    match req.objective {
        Objective::MinCost { throughput_floor } => {
            assert!(chosen.throughput_gbps >= throughput_floor.0 * (1.0 - 1e-9));
        }
        Objective::Deadline { seconds } => assert!(chosen.time_s <= seconds * (1.0 + 1e-9)),
        Objective::MaxThroughput { cost_cap } => {
            let cap = match cost_cap {
                CostCap::TotalUsd(v) => v,
                CostCap::PerGb(p) => p.0 * req.volume_gb(),
            };
            assert!(chosen.cost_usd.total <= cap * (1.0 + 1e-6));
        }
    }
    for baseline in [&plan.direct, &plan.best_single_relay]
        .into_iter()
        .flatten()
    {
        assert!(
            !baseline.better_than(chosen, &req.objective),
            "{:?} beats the chosen plan",
            baseline.kind
        );
    }
    plan
}

const PAIRS: &[(&str, &str)] = &[
    ("aws:us-east-1", "gcp:asia-southeast1-a"),
    ("azure:southcentralus", "gcp:asia-northeast3-a"),
    ("aws:eu-west-1", "azure:westeurope"),
    ("gcp:us-central1-a", "aws:ap-southeast-2"),
    ("azure:eastus", "aws:us-west-2"),
];

#[test]
fn min_cost_plans_meet_their_floor_and_beat_or_match_direct() {
    let cat = Catalog::builtin();
    for (src, dst) in PAIRS {
        for floor in [1.0, 5.0, 15.0] {
            let req = request(
                src,
                dst,
                Objective::MinCost {
                    throughput_floor: Gbps(floor),
                },
            );
            check(&cat, &req);
        }
    }
}

#[test]
fn max_throughput_plans_stay_under_their_cap() {
    let cat = Catalog::builtin();
    for (src, dst) in PAIRS {
        for cap in [
            CostCap::TotalUsd(25.0),
            CostCap::PerGb(skyx_catalog::UsdPerGb(0.5)),
        ] {
            let req = request(src, dst, Objective::MaxThroughput { cost_cap: cap });
            check(&cat, &req);
        }
    }
}

#[test]
fn deadline_plans_finish_in_time() {
    let cat = Catalog::builtin();
    let req = request(
        "aws:us-east-1",
        "gcp:asia-southeast1-a",
        Objective::Deadline { seconds: 600.0 },
    );
    let plan = check(&cat, &req);
    assert!(plan.chosen.time_s <= 600.0);
}

#[test]
fn a_tiny_copy_with_a_long_deadline_plans_instead_of_being_refused() {
    // 1 KB in an hour is 2e-9 Gbps, too small a rate for the solver to tell from none.
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:us-east-1",
        "aws:eu-west-1",
        Objective::Deadline { seconds: 3600.0 },
    );
    req.volume_bytes = 1000;
    let plan = check(&cat, &req);
    assert!(plan.chosen.time_s <= 3600.0);
}

#[test]
fn overlay_relays_around_a_slow_direct_link() {
    // The direct link measured 0.16 Gbps; relays through Azure's US regions exceed 10 Gbps.
    let cat = Catalog::builtin();
    let req = request(
        "azure:southcentralus",
        "gcp:asia-northeast3-a",
        Objective::MinCost {
            throughput_floor: Gbps(5.0),
        },
    );
    let plan = check(&cat, &req);
    assert!(
        plan.direct.is_none(),
        "8 VMs on a 0.16 Gbps link cannot carry 5 Gbps"
    );
    assert!(!plan.chosen.relays(&req.src, &req.dst).is_empty());
}

#[test]
fn eu_only_plans_touch_only_eu_regions() {
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:eu-west-1",
        "gcp:europe-north1-a",
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(100.0),
        },
    );
    req.constraints.allow_countries = EU_COUNTRIES.iter().map(|c| c.to_string()).collect();
    let plan = check(&cat, &req);
    for r in plan.chosen.vms.keys() {
        let c = skyx_catalog::location_of(r).unwrap().country;
        assert!(EU_COUNTRIES.contains(&c), "{r} is in {c}");
    }
    // The unconstrained plan is free to leave the EU; the constraint must cost something or
    // nothing, never gain.
    let mut free = req.clone();
    free.constraints = RegionConstraints::default();
    let free_plan = check(&cat, &free);
    assert!(free_plan.chosen.throughput_gbps >= plan.chosen.throughput_gbps * (1.0 - 1e-9));
}

#[test]
fn denied_clouds_and_continents_are_never_relays() {
    let cat = Catalog::builtin();
    let mut req = request(
        "azure:southcentralus",
        "gcp:asia-northeast3-a",
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(60.0),
        },
    );
    req.constraints.deny_clouds = vec![skyx_catalog::Cloud::Aws];
    req.constraints.deny_continents = vec![Continent::Europe];
    let plan = check(&cat, &req);
    for r in plan.chosen.vms.keys() {
        assert_ne!(r.cloud(), skyx_catalog::Cloud::Aws);
    }
}

#[test]
fn compression_shrinks_egress_and_raises_logical_throughput() {
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:us-east-1",
        "azure:westus",
        Objective::MinCost {
            throughput_floor: Gbps(2.0),
        },
    );
    req.route = RouteChoice::Direct;
    let plain = check(&cat, &req);
    req.compression_ratio = 2.5;
    let packed = check(&cat, &req);
    assert!((packed.chosen.cost_usd.egress * 2.5 - plain.chosen.cost_usd.egress).abs() < 1e-6);
    assert!(packed.chosen.throughput_gbps > plain.chosen.throughput_gbps * 2.0);
}

#[test]
fn via_follows_the_given_chain() {
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:us-east-1",
        "gcp:asia-southeast1-a",
        Objective::MinCost {
            throughput_floor: Gbps(1.0),
        },
    );
    req.route = RouteChoice::Via(vec![region("aws:us-west-2")]);
    let plan = check(&cat, &req);
    let hops: Vec<(String, String)> = plan
        .chosen
        .edges
        .iter()
        .map(|e| (e.src.to_string(), e.dst.to_string()))
        .collect();
    assert_eq!(
        hops,
        [
            ("aws:us-east-1".to_string(), "aws:us-west-2".to_string()),
            (
                "aws:us-west-2".to_string(),
                "gcp:asia-southeast1-a".to_string()
            )
        ]
    );
}

#[test]
fn an_unreachable_floor_says_what_is_achievable() {
    let cat = Catalog::builtin();
    let req = request(
        "aws:us-east-1",
        "aws:us-west-2",
        Objective::MinCost {
            throughput_floor: Gbps(500.0),
        },
    );
    let err = plan_transfer(&cat, &req).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PlanError::Infeasible { .. }), "{msg}");
    assert!(
        msg.contains("500.00 Gbps") && msg.contains("the most this route set can carry"),
        "{msg}"
    );
}

#[test]
fn a_cost_cap_below_any_plan_names_the_cheapest() {
    let cat = Catalog::builtin();
    let req = request(
        "aws:us-east-1",
        "gcp:asia-southeast1-a",
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(0.5),
        },
    );
    let msg = plan_transfer(&cat, &req).unwrap_err().to_string();
    assert!(
        msg.contains("no plan costs $0.50") && msg.contains("one VM per end costs $"),
        "{msg}"
    );
}

#[test]
fn constraints_that_exclude_an_endpoint_or_disconnect_are_explained() {
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:us-east-1",
        "aws:eu-west-1",
        Objective::MinCost {
            throughput_floor: Gbps(1.0),
        },
    );
    req.constraints.allow_continents = vec![Continent::Europe];
    let msg = plan_transfer(&cat, &req).unwrap_err().to_string();
    assert!(
        msg.contains("aws:us-east-1 cannot be used") && msg.contains("north-america"),
        "{msg}"
    );

    // A user grid with no direct link and its only relay denied: disconnected.
    let grid = "src_region,dst_region,throughput_received\n\
                aws:us-east-1,aws:us-west-2,5000000000\n\
                aws:us-west-2,aws:eu-west-1,5000000000\n";
    let cat = Catalog::builtin().with_throughput_grid(
        skyx_catalog::ThroughputGrid::from_csv(grid.as_bytes(), "g.csv").unwrap(),
        skyx_catalog::Provenance {
            what: "throughput",
            source: "test".into(),
            as_of: "now".into(),
        },
    );
    let mut req = request(
        "aws:us-east-1",
        "aws:eu-west-1",
        Objective::MinCost {
            throughput_floor: Gbps(1.0),
        },
    );
    let plan = check(&cat, &req);
    assert!(plan.direct.is_none() && plan.direct_infeasible.is_some());
    req.constraints.deny_regions = vec![region("aws:us-west-2")];
    let err = plan_transfer(&cat, &req).unwrap_err();
    assert!(matches!(err, PlanError::Disconnected { .. }), "{err}");
    assert!(err.to_string().contains("1 regions refused"), "{err}");
}

#[test]
fn bad_requests_are_rejected_by_name() {
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:us-east-1",
        "aws:us-east-1",
        Objective::MinCost {
            throughput_floor: Gbps(1.0),
        },
    );
    assert!(
        plan_transfer(&cat, &req)
            .unwrap_err()
            .to_string()
            .contains("both aws:us-east-1")
    );
    req.dst = region("aws:us-west-2");
    req.compression_ratio = 0.5;
    assert!(
        plan_transfer(&cat, &req)
            .unwrap_err()
            .to_string()
            .contains("compression ratio 0.5")
    );
    req.compression_ratio = 1.0;
    req.volume_bytes = 0;
    assert!(
        plan_transfer(&cat, &req)
            .unwrap_err()
            .to_string()
            .contains("volume")
    );
}

#[test]
fn the_exhaustive_mode_considers_the_whole_grid_and_reports_its_gap() {
    let cat = Catalog::builtin();
    let mut req = request(
        "aws:us-east-1",
        "gcp:asia-southeast1-a",
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(30.0),
        },
    );
    let pruned = check(&cat, &req);
    req.config.max_relay_candidates = None;
    let full = check(&cat, &req);
    assert_eq!(full.model.regions_allowed, 71);
    // More candidates can only help the optimum.
    assert!(full.chosen.throughput_gbps >= pruned.chosen.throughput_gbps * (1.0 - 1e-6));
    // The exhaustive mode proves how close it is: the LP relaxation over all 71 regions.
    let gap = full
        .optimality_gap
        .expect("the exhaustive mode reports its gap");
    assert_eq!(
        gap.bound_kind,
        skyx_planner::BoundKind::ThroughputGbpsAtMost
    );
    assert!(
        gap.bound >= full.chosen.throughput_gbps * (1.0 - 1e-9),
        "{gap:?}"
    );
    assert!((0.0..1.0).contains(&gap.relative), "{gap:?}");
    assert!(
        full.notes
            .iter()
            .any(|n| n.contains("all 71 allowed regions considered")),
        "{:?}",
        full.notes
    );
    assert!(pruned.optimality_gap.is_none());
}

#[test]
fn a_tiny_copy_starts_no_more_vms_than_its_minimum_billing_allows() {
    let catalog = Catalog::builtin();
    let default_for = |bytes: u64| {
        let mut req = TransferRequest::new(
            region("aws:us-east-1"),
            region("gcp:asia-southeast1-a"),
            bytes,
            Objective::MaxThroughput {
                cost_cap: CostCap::TotalUsd(1.0),
            },
        );
        skyx_planner::fastest_within_direct_cost(&catalog, &mut req).unwrap();
        check(&catalog, &req)
    };
    // 8 MB: every VM beyond the two ends would cost a minute's billing, far more than the
    // data's egress; the plain direct copy is the fastest plan within its own cost.
    let tiny = default_for(8_000_000);
    assert_eq!(
        tiny.chosen.vms.values().sum::<u32>(),
        2,
        "{:?}",
        tiny.chosen.vms
    );
    // Each VM is billed at least its minute.
    let minute: f64 = tiny
        .chosen
        .vm_details
        .values()
        .map(|v| f64::from(v.count) * v.instance_type_price_per_hour / 60.0)
        .sum();
    assert!(
        tiny.chosen.cost_usd.vm >= minute,
        "{:?}",
        tiny.chosen.cost_usd
    );
    // 1 TB: the minute is noise; relays and many VMs pay for themselves.
    let big = default_for(1000 * GB);
    assert!(
        big.chosen.vms.values().sum::<u32>() > 2,
        "{:?}",
        big.chosen.vms
    );
    assert!(big.chosen.throughput_gbps > tiny.chosen.throughput_gbps * 2.0);
}
