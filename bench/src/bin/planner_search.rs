//! A seeded search for requests the planner refuses although a plan exists: random endpoints
//! on the built-in grid, random limits (VMs per region, connections per VM), and a throughput
//! floor just under the most the planner itself reports achievable for the same request. Each
//! refusal is printed with its seed, so it can be replayed and kept as a regression test.
//!
//! Usage: planner_search [--seeds N] [--from S] [--all] [--verbose] [--broadcast K]
//! (`--all`: every region a candidate; `--verbose`: each seed's time; `--broadcast K`: K random
//! destinations, a floor at a random fraction of the slowest plain direct copy's rate, and
//! the broadcast's cost beside separate overlay and direct copies)

use std::time::Instant;

use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_catalog::{Catalog, Gbps, RegionId};
use skyx_planner::{
    BroadcastRequest, CostCap, Objective, TransferRequest, plain_direct_plan, plan_broadcast,
    plan_transfer,
};

/// One random case: the request (objective to be set) and the fraction of the most achievable
/// rate its floor asks for.
fn case(catalog: &Catalog, seed: u64, all: bool) -> (TransferRequest, f64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let regions: Vec<&RegionId> = catalog.regions().iter().collect();
    let src = regions[rng.random_range(0..regions.len())].clone();
    let dst = loop {
        let d = regions[rng.random_range(0..regions.len())];
        if *d != src {
            break d.clone();
        }
    };
    let gb = rng.random_range(1..=1000u64);
    let mut req = TransferRequest::new(
        src,
        dst,
        gb * 1_000_000_000,
        Objective::MinCost {
            throughput_floor: Gbps(1.0),
        },
    );
    req.config.max_vms_per_region = rng.random_range(1..=8);
    req.config.max_connections_per_vm = [8, 16, 32, 64][rng.random_range(0..4)];
    if all {
        req.config.max_relay_candidates = None;
    }
    let fraction = [0.5, 0.9, 0.99, 0.999, 0.9999][rng.random_range(0..5)];
    (req, fraction)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Result<Option<u64>> {
        args.iter()
            .position(|a| a == name)
            .map(|i| {
                args.get(i + 1)
                    .with_context(|| format!("{name} needs a number"))?
                    .parse()
                    .with_context(|| format!("{name} needs a number"))
            })
            .transpose()
    };
    let seeds = value("--seeds")?.unwrap_or(200);
    let from = value("--from")?.unwrap_or(0);
    let all = args.iter().any(|a| a == "--all");
    let verbose = args.iter().any(|a| a == "--verbose");
    let catalog = Catalog::builtin();
    if let Some(k) = value("--broadcast")? {
        return broadcast_search(&catalog, seeds, from, k as usize, verbose);
    }
    let (mut refused, mut planned, mut slowest) = (0u64, 0u64, (0.0f64, 0u64));
    for seed in from..from + seeds {
        let (mut req, fraction) = case(&catalog, seed, all);
        req.objective = Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(1e12),
        };
        let started = Instant::now();
        let most = match plan_transfer(&catalog, &req) {
            Ok(p) => p.chosen.throughput_gbps,
            Err(e) => {
                refused += 1;
                println!(
                    "seed {seed}: max-throughput refused: {} -> {} vms {} conns {}: {e}",
                    req.src,
                    req.dst,
                    req.config.max_vms_per_region,
                    req.config.max_connections_per_vm
                );
                continue;
            }
        };
        req.objective = Objective::MinCost {
            throughput_floor: Gbps(most * fraction),
        };
        let mut gap = String::new();
        match plan_transfer(&catalog, &req) {
            Ok(p) if p.chosen.throughput_gbps >= most * fraction * (1.0 - 1e-9) => {
                if let Some(g) = p.optimality_gap {
                    gap = format!(
                        ", min-cost plan within {:.3}% of the bound",
                        g.relative * 100.0
                    );
                }
                planned += 1
            }
            Ok(p) => {
                refused += 1;
                println!(
                    "seed {seed}: planned below its floor: {} Gbps for {}",
                    p.chosen.throughput_gbps,
                    most * fraction
                );
            }
            Err(e) => {
                refused += 1;
                println!(
                    "seed {seed}: {} -> {} {} GB vms {} conns {} floor {fraction} of {most:.6} Gbps: {e}",
                    req.src,
                    req.dst,
                    req.volume_bytes / 1_000_000_000,
                    req.config.max_vms_per_region,
                    req.config.max_connections_per_vm,
                );
            }
        }
        let took = started.elapsed().as_secs_f64();
        if verbose {
            println!("seed {seed}: {took:.2} s{gap}");
        }
        if took > slowest.0 {
            slowest = (took, seed);
        }
    }
    println!(
        "{planned} planned, {refused} refused of {seeds} seeds from {from}; slowest seed {} ({:.2} s for both plans)",
        slowest.1, slowest.0
    );
    Ok(())
}

/// Random broadcasts: a source, `k` destinations, limits and volume as for one destination,
/// and a floor at 0.5-1.5x the slowest plain direct copy's rate.
fn broadcast_search(
    catalog: &Catalog,
    seeds: u64,
    from: u64,
    k: usize,
    verbose: bool,
) -> Result<()> {
    let (mut planned, mut refused) = (0u64, 0u64);
    let mut times = Vec::new();
    let mut vs_overlay = Vec::new();
    let mut vs_direct = Vec::new();
    for seed in from..from + seeds {
        let (unicast, _) = case(catalog, seed, false);
        let mut rng = SmallRng::seed_from_u64(seed ^ 0xb0ad);
        let regions: Vec<&RegionId> = catalog.regions().iter().collect();
        let mut dsts = vec![unicast.dst.clone()];
        while dsts.len() < k {
            let d = regions[rng.random_range(0..regions.len())];
            if *d != unicast.src && !dsts.contains(d) {
                dsts.push(d.clone());
            }
        }
        let mut slowest = f64::INFINITY;
        for d in &dsts {
            let mut one = unicast.clone();
            one.dst = d.clone();
            slowest = slowest.min(plain_direct_plan(catalog, &one)?.throughput_gbps);
        }
        let floor = slowest * rng.random_range(0.5..1.5);
        let mut req = BroadcastRequest::new(
            unicast.src.clone(),
            dsts,
            unicast.volume_bytes,
            Objective::MinCost {
                throughput_floor: Gbps(floor),
            },
        );
        req.config = unicast.config.clone();
        let started = Instant::now();
        let result = plan_broadcast(catalog, &req);
        let took = started.elapsed().as_secs_f64();
        times.push(took);
        match result {
            Ok(p) => {
                planned += 1;
                let cost = p.chosen.cost_usd.total;
                let ratio = |s: &Option<skyx_planner::broadcast::SeparateCopies>| {
                    s.as_ref().map(|s| cost / s.cost_usd.total)
                };
                vs_overlay.extend(ratio(&p.separate_overlays));
                vs_direct.extend(ratio(&p.separate_direct));
                if verbose {
                    println!(
                        "seed {seed}: {took:.2} s, {:.2} Gbps ${cost:.2}; x{:.3} of separate overlays, x{:.3} of separate direct",
                        p.chosen.throughput_gbps,
                        ratio(&p.separate_overlays).unwrap_or(f64::NAN),
                        ratio(&p.separate_direct).unwrap_or(f64::NAN),
                    );
                }
            }
            Err(e) => {
                refused += 1;
                println!(
                    "seed {seed}: {} -> {:?} floor {floor:.3}: {e}",
                    req.src, req.dsts
                );
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let worst = times.iter().copied().fold(0.0, f64::max);
    println!(
        "{planned} planned, {refused} refused of {seeds} broadcasts to {k} from {from}; planning median {:.2} s, worst {worst:.2} s; cost vs separate overlays median x{:.3}, vs separate direct median x{:.3}",
        median(&mut times),
        median(&mut vs_overlay),
        median(&mut vs_direct),
    );
    Ok(())
}
