//! The MILP against brute force on small graphs.
//!
//! Brute force enumerates every split of the rate over the simple paths of a 4-region graph in
//! steps of a quarter of the rate, derives the fewest VMs each region needs in closed form, and
//! prices the result. The MILP must (a) return a routing that is feasible with the VMs it chose,
//! checked by the same closed form, and (b) be at least as good as every enumerated routing
//! (within the MIP gap branch and bound stops at, [`solve::MIP_GAP`]).
//! The whole-connection model is checked the same way, with connections rounded up per link
//! before the VMs are counted.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_catalog::{Gbps, RegionId, UsdPerGb, UsdPerHour, VmPriceSource};
use skyx_planner::solve::{self, Flows};
use skyx_planner::{Link, Network, Node};

const WIRE_GB: f64 = 1000.0;
const STEPS: usize = 8;

fn region(i: usize) -> RegionId {
    format!("aws:test-{i}").parse().unwrap()
}

/// A complete 4-node graph (0 = source, 3 = destination) with random but plausible numbers.
fn random_network(rng: &mut SmallRng) -> Network {
    let nodes = (0..4)
        .map(|i| Node {
            region: region(i),
            vm_price: UsdPerHour(rng.random_range(1..=6) as f64 * 0.5),
            vm_price_source: VmPriceSource::UserOverride,
            egress_cap: Gbps(rng.random_range(2..=8) as f64),
            ingress_cap: Gbps(rng.random_range(4..=12) as f64),
        })
        .collect();
    let mut links = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            if a == b || b == 0 || a == 3 {
                continue;
            }
            links.push(Link {
                src: a,
                dst: b,
                gbps: Gbps(rng.random_range(1..=10) as f64),
                measured_connections: 8,
                price: UsdPerGb(rng.random_range(1..=12) as f64 * 0.01),
            });
        }
    }
    Network {
        nodes,
        links,
        src: 0,
        dst: 3,
        max_vms_per_region: 3,
        max_connections_per_vm: 8,
        vm_overhead_h: 0.0,
    }
}

/// The simple source→destination paths, as lists of link indices.
fn simple_paths(net: &Network) -> Vec<Vec<usize>> {
    fn walk(
        net: &Network,
        node: usize,
        seen: &mut Vec<usize>,
        path: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if node == net.dst {
            out.push(path.clone());
            return;
        }
        for (i, l) in net.out_links(node) {
            if !seen.contains(&l.dst) {
                seen.push(l.dst);
                path.push(i);
                walk(net, l.dst, seen, path, out);
                path.pop();
                seen.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(net, net.src, &mut vec![net.src], &mut Vec::new(), &mut out);
    out
}

/// The fewest VMs per node that can carry `link_gbps`, or `None` past the limit.
fn min_vms(net: &Network, link_gbps: &[f64]) -> Option<Vec<u32>> {
    min_vms_with(net, link_gbps, |c| c)
}

/// As `min_vms`, with whole connections: each link opens the fewest whole connections that
/// carry its flow.
fn min_vms_whole(net: &Network, link_gbps: &[f64]) -> Option<Vec<u32>> {
    min_vms_with(net, link_gbps, |c| (c - 1e-9).ceil().max(0.0))
}

fn min_vms_with(
    net: &Network,
    link_gbps: &[f64],
    connections: impl Fn(f64) -> f64,
) -> Option<Vec<u32>> {
    let k = f64::from(net.max_connections_per_vm);
    (0..net.nodes.len())
        .map(|n| {
            let node = &net.nodes[n];
            let out: f64 = net.out_links(n).map(|(i, _)| link_gbps[i]).sum();
            let inn: f64 = net.in_links(n).map(|(i, _)| link_gbps[i]).sum();
            let c_out: f64 = net
                .out_links(n)
                .map(|(i, l)| connections(link_gbps[i] / l.gbps_per_connection()))
                .sum();
            let c_in: f64 = net
                .in_links(n)
                .map(|(i, l)| connections(link_gbps[i] / l.gbps_per_connection()))
                .sum();
            let need = (out / node.egress_cap.0)
                .max(inn / node.ingress_cap.0)
                .max(c_out / k)
                .max(c_in / k);
            let mut vms = (need - 1e-9).ceil().max(0.0) as u32;
            if n == net.src || n == net.dst {
                vms = vms.max(1);
            }
            (vms <= net.max_vms_per_region).then_some(vms)
        })
        .collect()
}

fn cost(net: &Network, link_gbps: &[f64], vms: &[u32], wire_gbps: f64) -> f64 {
    let egress: f64 = net
        .links
        .iter()
        .zip(link_gbps)
        .map(|(l, f)| l.price.0 * WIRE_GB * f / wire_gbps)
        .sum();
    let hours = WIRE_GB * 8.0 / wire_gbps / 3600.0 + net.vm_overhead_h;
    let vm: f64 = net
        .nodes
        .iter()
        .zip(vms)
        .map(|(n, c)| n.vm_price.0 * f64::from(*c) * hours)
        .sum();
    egress + vm
}

/// Every split of `wire_gbps` into `STEPS` equal parts over the simple paths.
fn enumerate_splits(net: &Network, wire_gbps: f64, mut visit: impl FnMut(&[f64])) {
    let paths = simple_paths(net);
    let mut counts = vec![0usize; paths.len()];
    fn rec(p: usize, left: usize, counts: &mut Vec<usize>, f: &mut dyn FnMut(&[usize])) {
        if p + 1 == counts.len() {
            counts[p] = left;
            f(counts);
            return;
        }
        for c in 0..=left {
            counts[p] = c;
            rec(p + 1, left - c, counts, f);
        }
    }
    rec(0, STEPS, &mut counts, &mut |counts| {
        let mut link = vec![0.0; net.links.len()];
        for (path, &c) in paths.iter().zip(counts.iter()) {
            for &i in path {
                link[i] += wire_gbps * c as f64 / STEPS as f64;
            }
        }
        visit(&link);
    });
}

/// The MILP's routing must be feasible with the VMs it bought (checked by the closed form).
fn assert_feasible(net: &Network, flows: &Flows) {
    let needed = min_vms(net, &flows.link_gbps).expect("MILP routing within VM limits");
    for (n, (&have, &need)) in flows.vms.iter().zip(&needed).enumerate() {
        assert!(
            have >= need,
            "node {n}: MILP bought {have} VMs, routing needs {need}"
        );
    }
    for node in 0..net.nodes.len() {
        let out: f64 = net.out_links(node).map(|(i, _)| flows.link_gbps[i]).sum();
        let inn: f64 = net.in_links(node).map(|(i, _)| flows.link_gbps[i]).sum();
        let expect = if node == net.src {
            flows.wire_gbps
        } else if node == net.dst {
            -flows.wire_gbps
        } else {
            0.0
        };
        assert!(
            (out - inn - expect).abs() < 1e-6,
            "node {node} not conserved"
        );
    }
}

#[test]
fn min_cost_matches_brute_force_on_random_graphs() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut compared = 0;
    for case in 0..40 {
        let mut net = random_network(&mut rng);
        // Hours billed per VM beyond the transfer (which takes 17 min to 2.2 h here): none, a
        // minute, or enough to make a VM cost as much as a route's egress, so that the cheapest
        // plan must weigh VMs against egress.
        net.vm_overhead_h = [0.0, 1.0 / 60.0, 10.0, 40.0][rng.random_range(0..4)];
        let wire_gbps = rng.random_range(1..=8) as f64;
        let mut brute = f64::INFINITY;
        enumerate_splits(&net, wire_gbps, |link| {
            if let Some(vms) = min_vms(&net, link) {
                brute = brute.min(cost(&net, link, &vms, wire_gbps));
            }
        });
        let milp = solve::min_cost_at(&net, wire_gbps, WIRE_GB, solve::Vms::Integer).unwrap();
        match milp {
            None => assert!(
                brute.is_infinite(),
                "case {case}: MILP infeasible, brute force found {brute}"
            ),
            Some(flows) => {
                assert_feasible(&net, &flows);
                let milp_cost = cost(&net, &flows.link_gbps, &flows.vms, wire_gbps);
                assert!(
                    milp_cost <= brute * (1.0 + f64::from(solve::MIP_GAP)) + 1e-9,
                    "case {case}: MILP ${milp_cost} worse than brute force ${brute}"
                );
                compared += 1;
            }
        }
    }
    assert!(
        compared >= 20,
        "too few feasible cases ({compared}) to mean anything"
    );
}

#[test]
fn max_throughput_matches_brute_force_on_random_graphs() {
    let mut rng = SmallRng::seed_from_u64(11);
    let mut compared = 0;
    for case in 0..30 {
        let net = random_network(&mut rng);
        let cap = rng.random_range(40..=300) as f64;
        // Brute force over rates in 0.25 Gbps steps and every split at each rate.
        let mut brute: f64 = 0.0;
        for quarter in 1..=120 {
            let w = quarter as f64 * 0.25;
            let mut ok = false;
            enumerate_splits(&net, w, |link| {
                if !ok && let Some(vms) = min_vms(&net, link) {
                    ok = cost(&net, link, &vms, w) <= cap;
                }
            });
            if ok {
                brute = brute.max(w);
            }
        }
        let milp = solve::max_throughput(&net, cap, WIRE_GB, solve::Vms::Integer).unwrap();
        match milp {
            None => assert_eq!(
                brute, 0.0,
                "case {case}: MILP found nothing, brute force {brute}"
            ),
            Some(flows) => {
                assert_feasible(&net, &flows);
                let c = cost(&net, &flows.link_gbps, &flows.vms, flows.wire_gbps);
                assert!(
                    c <= cap * (1.0 + 1e-6),
                    "case {case}: MILP plan costs {c} over cap {cap}"
                );
                assert!(
                    flows.wire_gbps >= brute * (1.0 - f64::from(solve::MIP_GAP)) - 1e-6,
                    "case {case}: MILP {} Gbps below brute force {brute}",
                    flows.wire_gbps
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 15, "too few feasible cases ({compared})");
}

#[test]
fn second_stage_keeps_vms_and_never_slows_down_or_raises_egress() {
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..20 {
        let net = random_network(&mut rng);
        let w = rng.random_range(1..=4) as f64;
        let Some(stage1) = solve::min_cost_at(&net, w, WIRE_GB, solve::Vms::Integer).unwrap()
        else {
            continue;
        };
        let k = solve::egress_per_gb(&net, &stage1);
        let fin = solve::finalize(&net, &stage1, solve::Budget::EgressPerGb(k))
            .unwrap()
            .expect("stage 1's routing keeps to its own egress budget");
        skyx_planner::validate(&net, &fin).unwrap();
        // Rounding connections down to whole numbers loses less than one connection per link.
        let rounding: f64 = net
            .links
            .iter()
            .zip(&stage1.link_gbps)
            .filter(|(_, f)| **f > solve::FLOW_EPS)
            .map(|(l, _)| l.gbps_per_connection())
            .sum();
        assert!(
            fin.wire_gbps >= w - rounding - 1e-6,
            "stage 2 slowed {w} -> {}",
            fin.wire_gbps
        );
        assert!(solve::egress_per_gb(&net, &fin) <= k * (1.0 + 1e-6) + 1e-9);
        for (a, b) in fin.vms.iter().zip(&stage1.vms) {
            assert!(a <= b, "stage 2 added VMs");
        }
    }
}

#[test]
fn whole_connections_match_brute_force_on_random_graphs() {
    let mut rng = SmallRng::seed_from_u64(13);
    let (mut compared, mut rounding_mattered) = (0, 0);
    for case in 0..40 {
        let mut net = random_network(&mut rng);
        // Few, fat connections and roomy VMs, so connections (not bandwidth caps) decide how
        // many VMs a region needs and whole numbers bind: links measured over 1-4 connections,
        // VMs that open 1-3 each.
        for link in &mut net.links {
            link.measured_connections = rng.random_range(1..=4);
        }
        for node in &mut net.nodes {
            node.egress_cap = Gbps(node.egress_cap.0 * 3.0);
            node.ingress_cap = Gbps(node.ingress_cap.0 * 3.0);
        }
        net.max_connections_per_vm = rng.random_range(1..=3);
        net.vm_overhead_h = [0.0, 1.0 / 60.0, 10.0][rng.random_range(0..3)];
        let wire_gbps = rng.random_range(2..=16) as f64 * 0.5;
        let mut brute = f64::INFINITY;
        enumerate_splits(&net, wire_gbps, |link| {
            if let Some(vms) = min_vms_whole(&net, link) {
                brute = brute.min(cost(&net, link, &vms, wire_gbps));
            }
        });
        let whole =
            solve::min_cost_whole_connections(&net, wire_gbps, WIRE_GB, None, None).unwrap();
        let fractional = solve::min_cost_at(&net, wire_gbps, WIRE_GB, solve::Vms::Integer).unwrap();
        match whole {
            None => assert!(
                brute.is_infinite(),
                "case {case}: whole-connection MILP infeasible, brute force found {brute}"
            ),
            Some(flows) => {
                // Whole connections, each node within its VMs' budgets: the plan can be run.
                skyx_planner::validate(&net, &flows).unwrap_or_else(|e| panic!("case {case}: {e}"));
                assert!((flows.wire_gbps - wire_gbps).abs() < 1e-6);
                let c = cost(&net, &flows.link_gbps, &flows.vms, wire_gbps);
                assert!(
                    c <= brute * (1.0 + f64::from(solve::WHOLE_CONNECTIONS_MIP_GAP)) + 1e-9,
                    "case {case}: whole-connection MILP ${c} worse than brute force ${brute}"
                );
                let f = fractional.expect("whole connections are a restriction of fractional");
                let fc = cost(&net, &f.link_gbps, &f.vms, wire_gbps);
                assert!(
                    c >= fc * (1.0 - f64::from(solve::MIP_GAP)) - 1e-9,
                    "case {case}: ${c} below the fractional optimum ${fc}"
                );
                if c > fc * (1.0 + 1e-6) {
                    rounding_mattered += 1;
                }
                compared += 1;
            }
        }
    }
    eprintln!("{compared} compared, whole connections raised the optimum in {rounding_mattered}");
    assert!(compared >= 20, "too few feasible cases ({compared})");
    assert!(
        rounding_mattered >= 3,
        "whole connections changed the optimum in only {rounding_mattered} cases: the test does not exercise them"
    );
}

#[test]
fn the_cost_lower_bound_holds_for_every_routing_at_or_above_the_floor() {
    let mut rng = SmallRng::seed_from_u64(23);
    let (mut checked, mut faster_cheaper) = (0, 0);
    for case in 0..30 {
        let net = random_network(&mut rng);
        let floor = rng.random_range(1..=4) as f64;
        let Some(bound) = solve::min_cost_lower_bound(&net, floor, WIRE_GB).unwrap() else {
            continue;
        };
        let mut at_floor = f64::INFINITY;
        // Plans may run faster than their floor, and bill their VMs fewer hours.
        for (i, rate) in [1.0, 1.3, 1.7, 2.5].iter().map(|k| k * floor).enumerate() {
            enumerate_splits(&net, rate, |link| {
                if let Some(vms) = min_vms(&net, link) {
                    let c = cost(&net, link, &vms, rate);
                    assert!(
                        c >= bound * (1.0 - 1e-6),
                        "case {case}: a plan at {rate} Gbps costs ${c}, below the bound ${bound}"
                    );
                    if i == 0 {
                        at_floor = at_floor.min(c);
                    } else if c < at_floor * (1.0 - 1e-6) {
                        faster_cheaper += 1;
                    }
                    checked += 1;
                }
            });
        }
    }
    assert!(checked > 1000, "too few routings checked ({checked})");
    assert!(
        faster_cheaper > 0,
        "no faster plan was cheaper than every plan at the floor: the test does not exercise the steps"
    );
}
