//! Throughput floors the planner once refused although plans meeting them exist: found by
//! `bench/src/bin/planner_search.rs` (seeded random endpoints and limits, a floor just under
//! the most the planner reports achievable) before whole-connection repair, and replayed here
//! with the seed each came from. Each was refused as "could not round connections to whole
//! numbers", as "cannot be reached" with a most above the floor, or with the solver's
//! "Singular matrix".

use skyx_catalog::{Catalog, Gbps};
use skyx_planner::{FRACTIONAL_GAP_NOTED, Objective, TransferRequest, plan_transfer};

/// (seed, source, destination, VMs per region, connections per VM, floor in Gbps).
#[rustfmt::skip]
const REFUSED: &[(u64, &str, &str, u32, u32, f64)] = &[
    (4, "gcp:asia-east2-a", "azure:uksouth", 6, 8, 16.7238),
    (5, "aws:sa-east-1", "azure:uksouth", 1, 32, 2.3870),
    (6, "gcp:asia-northeast2-a", "azure:westus", 2, 64, 13.8600),
    (42, "gcp:europe-north1-a", "aws:us-east-2", 6, 64, 41.5800),
    (67, "gcp:me-west1-a", "aws:us-east-1", 1, 64, 6.9993),
    (70, "aws:me-south-1", "aws:ap-southeast-1", 3, 64, 14.2065),
    (76, "gcp:us-west1-a", "aws:ap-northeast-3", 2, 32, 7.6205),
    (90, "gcp:asia-northeast3-a", "azure:eastus2", 8, 32, 55.9944),
    (96, "aws:me-south-1", "aws:us-west-1", 1, 32, 2.3464),
    (99, "aws:eu-north-1", "gcp:australia-southeast2-a", 1, 32, 2.3585),
];

#[test]
fn floors_once_refused_are_planned_and_met_within_the_fractional_optimum_or_say_why() {
    let catalog = Catalog::builtin();
    for &(seed, src, dst, vms, conns, floor) in REFUSED {
        let mut req = TransferRequest::new(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            100_000_000_000,
            Objective::MinCost {
                throughput_floor: Gbps(floor),
            },
        );
        req.config.max_vms_per_region = vms;
        req.config.max_connections_per_vm = conns;
        let plan = plan_transfer(&catalog, &req)
            .unwrap_or_else(|e| panic!("seed {seed}: {src} -> {dst} at {floor} Gbps: {e}"));
        let chosen = &plan.chosen;
        assert!(
            chosen.throughput_gbps >= floor * (1.0 - 1e-9),
            "seed {seed}: {} Gbps for a floor of {floor}",
            chosen.throughput_gbps
        );
        // Whole connections within every region's budget, out and in.
        for (region, &n) in &chosen.vms {
            let sum = |side: fn(&skyx_planner::EdgePlan) -> &skyx_catalog::RegionId| {
                chosen
                    .edges
                    .iter()
                    .filter(|e| side(e) == region)
                    .map(|e| e.connections)
                    .sum::<u32>()
            };
            let (out, inn) = (sum(|e| &e.src), sum(|e| &e.dst));
            assert!(
                out <= conns * n && inn <= conns * n,
                "seed {seed}: {region} has {n} VMs of {conns} connections, {out} out, {inn} in"
            );
        }
        assert!(
            chosen.edges.iter().all(|e| e.connections >= 1),
            "seed {seed}: a used hop without connections"
        );
        // Within the fractional optimum's margin, or the plan says by how much it is above.
        if let Some(bound) = chosen.fractional_connections_usd
            && chosen.cost_usd.total > bound * (1.0 + FRACTIONAL_GAP_NOTED)
        {
            assert!(
                plan.notes
                    .iter()
                    .any(|n| n.contains("fractional connections")),
                "seed {seed}: ${} against ${bound} without a note: {:?}",
                chosen.cost_usd.total,
                plan.notes
            );
        }
    }
}
