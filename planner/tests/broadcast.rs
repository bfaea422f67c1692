//! Broadcast planning: the tree program against every Steiner tree enumerated on small
//! graphs, and invariants of plans on the built-in 71-region grid.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_catalog::{Catalog, Gbps, RegionId, UsdPerGb, UsdPerHour, VmPriceSource};
use skyx_planner::broadcast::solve::{self as bsolve, Trees};
use skyx_planner::broadcast::{BroadcastRequest, plan_broadcast};
use skyx_planner::{CostCap, Link, Network, Node, Objective, solve};

const WIRE_GB: f64 = 1000.0;

/// A complete 5-node graph: 0 the source, 1 and 2 relays, 3 and 4 destinations (which may
/// relay to each other).
fn random_network(rng: &mut SmallRng) -> (Network, Vec<usize>) {
    let nodes = (0..5)
        .map(|i| Node {
            region: format!("aws:test-{i}").parse().unwrap(),
            vm_price: UsdPerHour(rng.random_range(1..=6) as f64 * 0.5),
            vm_price_source: VmPriceSource::UserOverride,
            egress_cap: Gbps(rng.random_range(2..=8) as f64),
            ingress_cap: Gbps(rng.random_range(4..=12) as f64),
        })
        .collect();
    let mut links = Vec::new();
    for a in 0..5 {
        for b in 0..5 {
            if a == b || b == 0 {
                continue;
            }
            links.push(Link {
                src: a,
                dst: b,
                gbps: Gbps(rng.random_range(1..=10) as f64),
                measured_connections: rng.random_range(1..=4),
                price: UsdPerGb(rng.random_range(1..=12) as f64 * 0.01),
            });
        }
    }
    let net = Network {
        nodes,
        links,
        src: 0,
        dst: 3,
        max_vms_per_region: 3,
        max_connections_per_vm: rng.random_range(2..=6),
        vm_overhead_h: [0.0, 1.0 / 60.0, 10.0][rng.random_range(0..3)],
    };
    (net, vec![3, 4])
}

/// Every Steiner arborescence: a set of links in which each region is entered at most once,
/// everything hangs off the source, every destination is reached and every leaf is one.
fn steiner_trees(net: &Network, dsts: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for mask in 1u32..(1 << net.links.len()) {
        let tree: Vec<usize> = (0..net.links.len())
            .filter(|e| mask & (1 << e) != 0)
            .collect();
        let support: Vec<bool> = (0..net.links.len()).map(|e| mask & (1 << e) != 0).collect();
        if let Some(found) = bsolve::tree_within(net, dsts, &support)
            && found == tree
        {
            out.push(tree);
        }
    }
    out
}

/// The cheapest VMs and whole connections that carry `trees` at `w`, and their cost; `None`
/// past a limit.
fn priced(net: &Network, dsts: &[usize], trees: &[Vec<usize>], w: f64) -> Option<f64> {
    let mut t = Trees {
        trees: trees.to_vec(),
        connections: vec![0; net.links.len()],
        vms: vec![0; net.nodes.len()],
        wire_gbps: w,
    };
    let load = t.link_gbps(net);
    t.connections = t.fewest_connections(net);
    let k = f64::from(net.max_connections_per_vm);
    for v in 0..net.nodes.len() {
        let node = &net.nodes[v];
        let sum =
            |links: Vec<usize>, f: &dyn Fn(usize) -> f64| links.into_iter().map(f).sum::<f64>();
        let outs: Vec<usize> = net.out_links(v).map(|(e, _)| e).collect();
        let ins: Vec<usize> = net.in_links(v).map(|(e, _)| e).collect();
        let need = (sum(outs.clone(), &|e| load[e]) / node.egress_cap.0)
            .max(sum(ins.clone(), &|e| load[e]) / node.ingress_cap.0)
            .max(sum(outs, &|e| f64::from(t.connections[e])) / k)
            .max(sum(ins, &|e| f64::from(t.connections[e])) / k);
        let mut n = (need - 1e-9).ceil().max(0.0) as u32;
        if v == net.src || dsts.contains(&v) {
            n = n.max(1);
        }
        if n > net.max_vms_per_region {
            return None;
        }
        t.vms[v] = n;
    }
    bsolve::validate_trees(net, dsts, &t).expect("the closed form is feasible");
    Some(t.egress_usd(net, WIRE_GB) + t.vm_usd(net, WIRE_GB))
}

#[test]
fn broadcast_trees_match_every_steiner_tree_enumerated() {
    let mut rng = SmallRng::seed_from_u64(17);
    let mut compared = 0;
    let mut split = 0;
    for case in 0..24 {
        let (net, dsts) = random_network(&mut rng);
        let partitions = 1 + case % 2;
        let w = rng.random_range(2..=12) as f64 * 0.5;
        let all = steiner_trees(&net, &dsts);
        let mut brute = f64::INFINITY;
        if partitions == 1 {
            for t in &all {
                if let Some(c) = priced(&net, &dsts, std::slice::from_ref(t), w) {
                    brute = brute.min(c);
                }
            }
        } else {
            for (i, a) in all.iter().enumerate() {
                for b in &all[i..] {
                    if let Some(c) = priced(&net, &dsts, &[a.clone(), b.clone()], w) {
                        brute = brute.min(c);
                    }
                }
            }
        }
        let milp = bsolve::min_cost_trees(&net, &dsts, partitions, w, WIRE_GB).unwrap();
        match milp {
            None => assert!(
                brute.is_infinite(),
                "case {case}: MILP found nothing, brute ${brute}"
            ),
            Some(t) => {
                bsolve::validate_trees(&net, &dsts, &t)
                    .unwrap_or_else(|e| panic!("case {case}: {e}"));
                let c = t.egress_usd(&net, WIRE_GB) + t.vm_usd(&net, WIRE_GB);
                assert!(
                    c <= brute * (1.0 + f64::from(solve::MIP_GAP)) + 1e-9,
                    "case {case}: MILP ${c} above the best trees ${brute}"
                );
                assert!(
                    c >= brute * (1.0 - 1e-9) - 1e-9,
                    "case {case}: ${c} below every tree ${brute}"
                );
                if t.trees.len() == 2 && t.trees[0] != t.trees[1] {
                    split += 1;
                }
                compared += 1;
            }
        }
    }
    eprintln!("{compared} compared, {split} split over two trees");
    assert!(compared >= 12, "too few feasible cases ({compared})");
    assert!(
        split >= 1,
        "no case used two different trees: partitions are not exercised"
    );
}

fn region(s: &str) -> RegionId {
    s.parse().unwrap()
}

#[test]
fn broadcast_plans_on_the_real_grid_deliver_everything_to_every_destination_once_per_link() {
    let catalog = Catalog::builtin();
    let dsts = vec![
        region("gcp:europe-west4-a"),
        region("azure:uksouth"),
        region("aws:ap-southeast-2"),
    ];
    for objective in [
        Objective::MinCost {
            throughput_floor: Gbps(5.0),
        },
        Objective::MinCost {
            throughput_floor: Gbps(12.0),
        },
        Objective::Deadline { seconds: 3600.0 },
    ] {
        let req = BroadcastRequest::new(
            region("aws:us-east-1"),
            dsts.clone(),
            500_000_000_000,
            objective,
        );
        let started = std::time::Instant::now();
        let plan = plan_broadcast(&catalog, &req).unwrap();
        eprintln!(
            "{objective:?}: {:.2} Gbps ${:.2} in {:.2} s; separate overlays ${:.2}, direct ${:.2}",
            plan.chosen.throughput_gbps,
            plan.chosen.cost_usd.total,
            started.elapsed().as_secs_f64(),
            plan.separate_overlays
                .as_ref()
                .map_or(f64::NAN, |s| s.cost_usd.total),
            plan.separate_direct
                .as_ref()
                .map_or(f64::NAN, |s| s.cost_usd.total),
        );
        let chosen = &plan.chosen;
        assert!(chosen.cost_usd.total > 0.0);
        for tree in &chosen.trees {
            // Each partition reaches every destination, entering each region once: no link
            // carries a partition twice.
            let mut entered = std::collections::BTreeSet::new();
            for (_, to) in &tree.hops {
                assert!(
                    entered.insert(to.clone()),
                    "{to} entered twice: {:?}",
                    tree.hops
                );
            }
            for d in &dsts {
                assert!(entered.contains(d), "{d} not reached by {:?}", tree.hops);
            }
        }
        // Every destination receives the full volume: each tree's share sums to one.
        let shares: f64 = chosen.trees.iter().map(|t| t.share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        let gb: f64 = req.volume_bytes as f64 / 1e9;
        for e in &chosen.edges {
            assert!(
                e.gb <= gb * (1.0 + 1e-9),
                "{} -> {} carries {} GB of {gb}",
                e.src,
                e.dst,
                e.gb
            );
        }
        if let Objective::MinCost { throughput_floor } = objective {
            assert!(chosen.throughput_gbps >= throughput_floor.0 * (1.0 - 1e-9));
        }
        if let Objective::Deadline { seconds } = objective {
            assert!(chosen.time_s <= seconds * (1.0 + 1e-9));
        }
        let separate = plan.separate_direct.as_ref().unwrap();
        assert_eq!(separate.per_destination.len(), 3);
    }
}

#[test]
fn a_broadcast_with_a_cost_cap_or_a_repeated_destination_is_refused_clearly() {
    let catalog = Catalog::builtin();
    let mut req = BroadcastRequest::new(
        region("aws:us-east-1"),
        vec![region("gcp:europe-west4-a"), region("azure:uksouth")],
        1_000_000_000,
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(10.0),
        },
    );
    let msg = plan_broadcast(&catalog, &req).unwrap_err().to_string();
    assert!(msg.contains("throughput floor or a deadline"), "{msg}");
    req.objective = Objective::Deadline { seconds: 60.0 };
    req.dsts.push(region("azure:uksouth"));
    let msg = plan_broadcast(&catalog, &req).unwrap_err().to_string();
    assert!(msg.contains("azure:uksouth is given twice"), "{msg}");
    req.dsts = vec![region("aws:us-east-1")];
    let msg = plan_broadcast(&catalog, &req).unwrap_err().to_string();
    assert!(msg.contains("is the source"), "{msg}");
}
