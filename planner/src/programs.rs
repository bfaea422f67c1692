//! Which programs answer each objective: the cheapest plan at a floor (with its repair when
//! whole connections do not fit), the fastest plan within a cost cap, and the plain direct copy
//! every plan is compared with.

use std::collections::BTreeSet;

use crate::PlanError;
use crate::network::Network;
use crate::plan::{RouteKind, RoutePlan, validate};
use crate::request::{CostCap, Objective, TransferRequest};
use crate::solve::{self, Budget, Flows, Vms};

/// What a request's objective asks of the programs: the cheapest plan carrying a wire rate
/// (a throughput floor, or a deadline as its rate), or the fastest within a dollar cap.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    /// Wire Gbps.
    WireFloor(f64),
    /// Dollars for the whole copy.
    CostCap(f64),
}

impl Goal {
    pub(crate) fn of(req: &TransferRequest) -> Goal {
        match req.objective {
            Objective::MinCost { throughput_floor } => {
                Goal::WireFloor(throughput_floor.0 / req.compression_ratio)
            }
            Objective::Deadline { seconds } => {
                Goal::WireFloor(deadline_floor(req.wire_volume_gb(), seconds))
            }
            Objective::MaxThroughput { cost_cap } => Goal::CostCap(match cost_cap {
                CostCap::TotalUsd(v) => v,
                CostCap::PerGb(p) => p.0 * req.volume_gb(),
            }),
        }
    }
}

/// The wire throughput (Gbps) a deadline asks for: the volume over the time, but never less
/// than [`MIN_DEADLINE_GBPS`]. A tiny copy with a long deadline asks for a rate too small for
/// the solver to tell from none (1 KB in an hour is 2e-9 Gbps), and finishing sooner never
/// costs more: egress is per byte and VM time only shrinks.
pub(crate) fn deadline_floor(wire_gb: f64, seconds: f64) -> f64 {
    (wire_gb * 8.0 / seconds).max(MIN_DEADLINE_GBPS)
}

/// The least rate a deadline plans for: 10 Mbps, which any measured link carries.
const MIN_DEADLINE_GBPS: f64 = 0.01;

/// Solves `req`'s objective on `net` and turns the answer into a plan.
pub(crate) fn solve_for(
    net: &Network,
    req: &TransferRequest,
    kind: RouteKind,
) -> Result<RoutePlan, PlanError> {
    let wire_gb = req.wire_volume_gb();
    let ratio = req.compression_ratio;
    let (flows, fractional) = match Goal::of(req) {
        Goal::WireFloor(floor) => {
            min_cost_plan(net, floor, wire_gb, ratio, req.config.repair_search_s)?
        }
        Goal::CostCap(cap) => (max_throughput_plan(net, req, cap)?, None),
    };
    validate(net, &flows).map_err(|e| PlanError::Solver(format!("plan failed its checks: {e}")))?;
    let mut plan = RoutePlan::from_flows(kind, net, &flows, wire_gb, ratio);
    plan.fractional_connections_usd = fractional.map(|f| {
        RoutePlan::from_flows(kind, net, &f, wire_gb, ratio)
            .cost_usd
            .total
    });
    Ok(plan)
}

/// The fastest plan within `cap` dollars. The first stage cannot see the VMs' overhead (see
/// `solve`), so its VMs are a candidate the exact second stage may find over the cap, or slowed
/// by it: then fewer VMs per region are tried, down to one, and the plain direct copy, and the
/// fastest that keeps to the cap wins. For large copies the overhead is noise and the first
/// candidate stands.
pub(crate) fn max_throughput_plan(
    net: &Network,
    req: &TransferRequest,
    cap: f64,
) -> Result<Flows, PlanError> {
    let wire_gb = req.wire_volume_gb();
    let budget = Budget::Total {
        cap_usd: cap,
        wire_gb,
    };
    let mut best: Option<Flows> = None;
    let mut limit = net.max_vms_per_region;
    loop {
        let limited = Network {
            max_vms_per_region: limit,
            ..net.clone()
        };
        if let Some(stage1) = solve::max_throughput(&limited, cap, wire_gb, Vms::Integer)?
            && let Some(flows) = solve::finalize(&limited, &stage1, budget)?
        {
            // The overhead did not bind: nothing with fewer VMs can be faster.
            let unbound = flows.wire_gbps >= stage1.wire_gbps * (1.0 - 1e-6);
            if best.as_ref().is_none_or(|b| flows.wire_gbps > b.wire_gbps) {
                best = Some(flows);
            }
            if unbound {
                break;
            }
        }
        if limit == 1 {
            break;
        }
        limit = (limit / 2).max(1);
    }
    if net.link_between(net.src, net.dst).is_some()
        && let Some(flows) = one_vm_direct_flows(net, wire_gb, budget)?
        && best.as_ref().is_none_or(|b| flows.wire_gbps > b.wire_gbps)
    {
        // Back onto `net`'s links (the direct network has only the one).
        best = Some(flows.onto(&one_vm_direct(net), net));
    }
    best.ok_or_else(|| cost_cap_infeasible(net, req, cap))
}

/// `net` cut down to its direct link and one VM per end.
pub(crate) fn one_vm_direct(net: &Network) -> Network {
    Network {
        max_vms_per_region: 1,
        ..net.with_links(|l| l.src == net.src && l.dst == net.dst)
    }
}

/// The plain direct copy's routing within `budget`, on [`one_vm_direct`]'s network (its only
/// link is the direct one); `None` without a direct link or when nothing fits the budget.
pub(crate) fn one_vm_direct_flows(
    net: &Network,
    wire_gb: f64,
    budget: Budget,
) -> Result<Option<Flows>, PlanError> {
    let direct = one_vm_direct(net);
    match solve::max_throughput(&direct, f64::INFINITY, wire_gb, Vms::Integer)? {
        Some(stage1) => solve::finalize(&direct, &stage1, budget),
        None => Ok(None),
    }
}

pub(crate) fn min_cost_plan(
    net: &Network,
    floor_wire: f64,
    wire_gb: f64,
    ratio: f64,
    repair_search_s: Option<f64>,
) -> Result<(Flows, Option<Flows>), PlanError> {
    let mut target = floor_wire;
    // The links each try used: where a repair looks for room.
    let mut support = BTreeSet::new();
    // The cheapest routing at the floor with fractional connections.
    let mut fractional = None;
    // Integer connections can cost a sliver of capacity; aim a little higher and retry.
    for attempt in 0..4 {
        let stage1 = match solve::min_cost_at(net, target, wire_gb, Vms::Integer) {
            Ok(Some(stage1)) => stage1,
            // Not even with fractional connections: the floor is out of reach.
            Ok(None) if attempt == 0 => {
                let fastest = fastest_whole(net, wire_gb)?;
                return Err(floor_unreachable(floor_wire, ratio, net, fastest.as_ref()));
            }
            // Aiming higher went past what these routes carry, or the solver met numerical
            // trouble (microlp's "Singular matrix"): the repair's smaller model decides.
            Ok(None) | Err(PlanError::Solver(_)) => break,
            Err(e) => return Err(e),
        };
        support.extend(stage1.used_links(net));
        let fractional = fractional.get_or_insert_with(|| stage1.clone());
        let k = solve::egress_per_gb(net, &stage1);
        let flows = match solve::finalize(net, &stage1, Budget::EgressPerGb(k)) {
            Ok(Some(flows)) => flows,
            Ok(None) => {
                return Err(PlanError::Solver(
                    "the cheapest routing failed its own egress budget".into(),
                ));
            }
            // Numerical trouble fixing connections: the repair's model decides.
            Err(_) => break,
        };
        if flows.wire_gbps >= floor_wire * (1.0 - 1e-9) {
            return Ok((flows, Some(fractional.clone())));
        }
        target *= (floor_wire / flows.wire_gbps).max(1.0 + 1e-6);
    }
    let repaired =
        whole_connections_repair(net, floor_wire, wire_gb, ratio, support, repair_search_s)?;
    Ok((repaired, fractional))
}

/// A floor the fractional plans could not keep once their connections were rounded (every VM
/// on the route at its connection budget): the relays and VM counts are chosen again with
/// whole connections in the model, over the links those plans used plus those of the fastest
/// routings (with whole connections, and the LP relaxation's), so a plan is found whenever
/// the floor is within what those carry. The model stays small (at most
/// [`REPAIR_MAX_LINKS`] links); branch and bound starts from the fastest plan and searches
/// for `search_s` seconds at most (it finds its plan in milliseconds and may then spend tens
/// of seconds proving it). Past that size, or on numerical trouble, the fastest plan meets
/// the floor at a higher cost.
pub(crate) fn whole_connections_repair(
    net: &Network,
    floor_wire: f64,
    wire_gb: f64,
    ratio: f64,
    mut support: BTreeSet<(usize, usize)>,
    search_s: Option<f64>,
) -> Result<Flows, PlanError> {
    let meets = |f: &Flows| f.wire_gbps >= floor_wire * (1.0 - 1e-9);
    let fastest = fastest_whole(net, wire_gb)?;
    // The relaxation only widens the search; its trouble is not the plan's.
    let relaxed = solve::max_throughput(net, f64::INFINITY, wire_gb, Vms::Relaxed)
        .ok()
        .flatten();
    for f in fastest.iter().chain(&relaxed) {
        support.extend(f.used_links(net));
    }
    let small = net.with_links(|l| support.contains(&(l.src, l.dst)));
    let solved = if small.links.len() <= REPAIR_MAX_LINKS {
        let start = fastest.clone().map(|f| f.onto(net, &small));
        solve::min_cost_whole_connections(&small, floor_wire, wire_gb, start.as_ref(), search_s)
    } else {
        Ok(None)
    };
    let whole = match solved {
        Ok(Some(whole)) => whole,
        Ok(None) | Err(_) => {
            return match fastest {
                Some(fastest) if meets(&fastest) => Ok(fastest),
                _ => Err(floor_unreachable(floor_wire, ratio, net, fastest.as_ref())),
            };
        }
    };
    // As fast as those VMs go within the same egress per GB, as for any plan (or, should
    // that program fail, the repaired routing as it is); on the small network, whose links
    // are all the plan can use.
    let k = solve::egress_per_gb(&small, &whole);
    let fin = solve::finalize(&small, &whole, Budget::EgressPerGb(k))
        .ok()
        .flatten()
        .filter(meets)
        .unwrap_or_else(|| solve::without_idle_vms(&small, whole));
    Ok(fin.onto(&small, net))
}

/// The most links the whole-connection repair solves over: one integer per link makes branch
/// and bound grow fast (the whole candidate network, some 300 links, ran for minutes).
pub const REPAIR_MAX_LINKS: usize = 64;

/// The fastest routing of `net` with whole connections (stage 1, then stage 2 unlimited).
pub(crate) fn fastest_whole(net: &Network, wire_gb: f64) -> Result<Option<Flows>, PlanError> {
    Ok(
        solve::max_throughput(net, f64::INFINITY, wire_gb, Vms::Integer)?
            .map(|f| solve::finalize(net, &f, Budget::Unlimited))
            .transpose()?
            .flatten(),
    )
}

/// Why a floor of `floor_wire` wire Gbps cannot be planned on `net`, given the fastest
/// routing found there.
pub(crate) fn floor_unreachable(
    floor_wire: f64,
    ratio: f64,
    net: &Network,
    fastest: Option<&Flows>,
) -> PlanError {
    let achievable = match fastest {
        Some(f) => format!(
            "the most this route set can carry is {:.2} Gbps ({:.2} Gbps on the wire) \
             with up to {} VMs per region",
            f.wire_gbps * ratio,
            f.wire_gbps,
            net.max_vms_per_region
        ),
        None => "no throughput is achievable".into(),
    };
    PlanError::Infeasible {
        why: format!(
            "a throughput of {:.2} Gbps ({:.2} Gbps on the wire) cannot be reached",
            floor_wire * ratio,
            floor_wire
        ),
        achievable,
    }
}

pub(crate) fn cost_cap_infeasible(net: &Network, req: &TransferRequest, cap: f64) -> PlanError {
    let achievable = match plain_direct(net, req) {
        Ok(p) => format!(
            "the direct route with one VM per end costs ${:.2} at {:.2} Gbps",
            p.cost_usd.total, p.throughput_gbps
        ),
        Err(_) => "no cheaper route was found".into(),
    };
    PlanError::Infeasible {
        why: format!("no plan costs ${cap:.2} or less"),
        achievable,
    }
}

/// A plain direct copy: the direct link, one VM per end, as fast as they go. This is what a
/// single-machine tool achieves at best, and usually the cheapest plan per GB.
pub(crate) fn plain_direct(net: &Network, req: &TransferRequest) -> Result<RoutePlan, PlanError> {
    let one_vm = one_vm_direct(net);
    let wire_gb = req.wire_volume_gb();
    let flows = one_vm_direct_flows(net, wire_gb, Budget::Unlimited)?.ok_or_else(|| {
        PlanError::Disconnected {
            src: req.src.clone(),
            dst: req.dst.clone(),
            why: "the direct link is not measured or not priced".into(),
        }
    })?;
    Ok(RoutePlan::from_flows(
        RouteKind::Direct,
        &one_vm,
        &flows,
        wire_gb,
        req.compression_ratio,
    ))
}
