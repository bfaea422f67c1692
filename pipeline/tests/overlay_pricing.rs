//! Edge prices from the overlay planner over the real catalog agree with what `skyx cp` would
//! plan for the same data: a small data set pays the plain direct copy's VM minimum, not a
//! sliver of a wide plan's, and a large one the wide plan's rate.

use skyx_catalog::{Catalog, RegionId};
use skyx_pipeline::EdgePricer;
use skyx_pipeline::edges::OverlayPricer;
use skyx_planner::{
    Objective, RegionConstraints, TransferRequest, fastest_within_direct_cost, plan_route,
};

fn region(s: &str) -> RegionId {
    s.parse().unwrap()
}

/// What `skyx cp` plans for `bytes` by default: (USD, Gbps), and the plain direct copy's USD.
fn cp_plan(catalog: &Catalog, pricer: &OverlayPricer, bytes: u64) -> (f64, f64, f64) {
    let mut req = TransferRequest::new(
        region("aws:us-east-1"),
        region("gcp:asia-southeast1-a"),
        bytes,
        Objective::MinCost {
            throughput_floor: skyx_catalog::Gbps(0.1),
        },
    );
    req.config = pricer.config.clone();
    let plain = fastest_within_direct_cost(catalog, &mut req).unwrap();
    let plan = plan_route(catalog, &req).unwrap();
    (
        plan.cost_usd.total,
        plan.throughput_gbps,
        plain.cost_usd.total,
    )
}

#[test]
fn small_and_large_data_sets_are_priced_as_their_copies_would_be() {
    let catalog = Catalog::builtin();
    let pricer = OverlayPricer::new(&catalog, RegionConstraints::default());
    let rate = pricer
        .rate(
            &region("aws:us-east-1"),
            &region("gcp:asia-southeast1-a"),
            1.0,
        )
        .expect("the pair is plannable");
    assert!(rate.plain.is_some(), "{rate:?}");

    // 2 MB: the plain copy, whose VM minimum dwarfs the data's egress.
    let small = rate.price(2_000_000);
    let (cp_usd, _, plain_usd) = cp_plan(&catalog, &pricer, 2_000_000);
    assert!(
        (small.usd - plain_usd).abs() <= 1e-6 * plain_usd,
        "priced ${} against the plain copy's ${plain_usd}",
        small.usd
    );
    assert!(small.usd <= cp_usd * 1.0001, "{} > {cp_usd}", small.usd);
    assert!(
        small.usd > 2.0 * 0.002 * 0.09,
        "no VM minimum in ${}",
        small.usd
    );

    // 500 GB: the wide plan, faster than the plain copy and within its cost.
    let large = rate.price(500_000_000_000);
    let (_, cp_gbps, plain_usd) = cp_plan(&catalog, &pricer, 500_000_000_000);
    assert!(
        large.usd <= plain_usd * 1.0001,
        "{} > {plain_usd}",
        large.usd
    );
    assert!(large.gbps > small.gbps, "{large:?} vs {small:?}");
    assert!(
        large.gbps <= cp_gbps * 1.0001,
        "priced faster ({} Gbps) than cp plans ({cp_gbps} Gbps)",
        large.gbps
    );
}
