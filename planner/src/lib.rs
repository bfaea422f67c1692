//! The overlay planner: a pure function from a catalog and a transfer request to a plan.
//!
//! No IO, no clock, no async. `plan_transfer` builds the planning [`Network`] (allowed regions,
//! measured and priced links), picks relay candidates, solves the mixed-integer program of
//! [`solve`], and computes the direct and best single-relay plans under the same objective so
//! every answer says how much the overlay buys.

mod network;
mod plan;
mod request;
pub mod solve;

use std::collections::BTreeSet;

use serde::Serialize;
use skyx_catalog::{Catalog, VmPriceSource};

pub use network::{BuildNotes, Link, Network, Node, build_network};
pub use plan::{
    CostBreakdown, EdgePlan, PathShare, RegionVms, RouteKind, RoutePlan, to_dot, validate,
};
pub use request::{
    CostCap, Objective, PlannerConfig, RegionConstraints, RouteChoice, TransferRequest,
};
use solve::{Budget, Flows, Vms};

/// Why no plan was produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The request itself is malformed (non-positive volume, compression below 1, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The source, destination or a forced relay is excluded by the region constraints.
    #[error("{region} cannot be used: {why}")]
    EndpointRefused {
        region: skyx_catalog::RegionId,
        why: String,
    },
    /// No chain of allowed, measured links leads from source to destination.
    #[error("no route from {src} to {dst}: {why}")]
    Disconnected {
        src: skyx_catalog::RegionId,
        dst: skyx_catalog::RegionId,
        why: String,
    },
    /// The objective cannot be met; `achievable` says what can.
    #[error("infeasible: {why}; {achievable}")]
    Infeasible { why: String, achievable: String },
    /// The solver failed for a reason other than infeasibility.
    #[error("solver failed: {0}")]
    Solver(String),
}

/// The planner's answer with its baselines.
#[derive(Debug, Clone, Serialize)]
pub struct TransferPlan {
    pub src: skyx_catalog::RegionId,
    pub dst: skyx_catalog::RegionId,
    pub volume_bytes: u64,
    pub compression_ratio: f64,
    pub objective: Objective,
    /// Seconds each VM is billed beyond the transfer, as the plan's costs count it.
    pub vm_overhead_s: f64,
    /// The chosen plan (its figures are also flattened into the top level of the JSON).
    #[serde(flatten)]
    pub chosen: RoutePlan,
    /// The direct plan under the same objective, when one is feasible.
    pub direct: Option<RoutePlan>,
    /// Why there is no direct plan, when there is none.
    pub direct_infeasible: Option<String>,
    /// The best plan through exactly one relay, when one is feasible.
    pub best_single_relay: Option<RoutePlan>,
    /// The provider's own copy, when the request allows it and the catalog can price it.
    pub server_side: Option<RoutePlan>,
    /// Facts the user should know: estimates used, links skipped, candidates considered.
    pub notes: Vec<String>,
    /// Size of the overlay model that was solved.
    pub model: ModelSize,
}

/// How big the overlay problem was.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ModelSize {
    pub regions_allowed: usize,
    pub regions_considered: usize,
    pub links_considered: usize,
}

/// A plan dearer than the fractional-connection optimum by more than this says so.
pub const FRACTIONAL_GAP_NOTED: f64 = 0.005;

/// Plans `req` over `catalog`.
pub fn plan_transfer(catalog: &Catalog, req: &TransferRequest) -> Result<TransferPlan, PlanError> {
    check_request(req)?;
    let (full, build_notes) = build_network(catalog, req)?;
    if !full.connects_src_to_dst() {
        return Err(disconnected(req, &full, &build_notes));
    }
    let mut notes = Vec::new();
    if build_notes.unpriced_or_unmeasured > 0 {
        notes.push(format!(
            "{} region pairs have a measurement but no price (or the reverse) and were not used",
            build_notes.unpriced_or_unmeasured
        ));
    }

    let (overlay_net, kind) = overlay_network(&full, req, &mut notes)?;
    let server_side = server_side_plan(catalog, req);
    let overlay = solve_for(&overlay_net, req, kind);
    let (direct, direct_infeasible) = direct_plan(&full, req);
    let best_single_relay = best_single_relay(&full, req);
    // The overlay's candidates contain the direct route, not every single relay (those are
    // tried over the whole network): either may beat it, or meet an objective it could not,
    // when rounding connections to whole ones left the overlay behind.
    let mut baselines = [direct.clone(), best_single_relay.clone()]
        .into_iter()
        .flatten();
    let mut chosen = match overlay {
        Ok(plan) => plan,
        Err(e) => {
            // No overlay plan; a baseline or the provider's own copy may still meet the
            // objective (a cost cap only egress without VMs fits).
            let ss = server_side
                .as_ref()
                .filter(|ss| ss.meets(&req.objective, req.volume_gb()));
            match baselines.next().or_else(|| ss.cloned()) {
                Some(p) if req.route == RouteChoice::Auto => p,
                _ => return Err(e),
            }
        }
    };
    if req.route == RouteChoice::Auto {
        for baseline in baselines {
            if baseline.better_than(&chosen, &req.objective) {
                chosen = baseline;
            }
        }
    }
    // The provider's own copy competes under the same objective (never against relays the
    // user forced).
    if let Some(ss) = &server_side {
        notes.push(skyx_catalog::SERVER_SIDE_ESTIMATE.to_string());
        if req.route == RouteChoice::Auto
            && ss.meets(&req.objective, req.volume_gb())
            && ss.better_than(&chosen, &req.objective)
        {
            chosen = ss.clone();
        }
    }

    if let Some(bound) = chosen.fractional_connections_usd {
        let above = chosen.cost_usd.total / bound - 1.0;
        if above > FRACTIONAL_GAP_NOTED {
            notes.push(format!(
                "this plan costs {:.2}% more than the cheapest routing at the floor with \
                 fractional connections (${bound:.2}, the figure Skyplane's planner reports): \
                 connections come whole, and this floor leaves the route's VMs little room \
                 for them",
                above * 100.0
            ));
        }
    }
    for region in chosen.vms.keys() {
        let node = full.nodes.iter().find(|n| &n.region == region);
        if let Some(Node {
            vm_price_source: VmPriceSource::EstimatedCloudMedian { priced_as, .. },
            ..
        }) = node
        {
            notes.push(format!(
                "VM price in {region} is an estimate: the catalog lists no {priced_as} there, so \
                 the {} median is used",
                region.cloud()
            ));
        }
    }

    Ok(TransferPlan {
        src: req.src.clone(),
        dst: req.dst.clone(),
        volume_bytes: req.volume_bytes,
        compression_ratio: req.compression_ratio,
        objective: req.objective,
        vm_overhead_s: req.config.vm_overhead_s,
        chosen,
        direct,
        direct_infeasible,
        best_single_relay,
        server_side,
        notes,
        model: ModelSize {
            regions_allowed: full.nodes.len(),
            regions_considered: overlay_net
                .links
                .iter()
                .flat_map(|l| [l.src, l.dst])
                .collect::<BTreeSet<_>>()
                .len(),
            links_considered: overlay_net.links.len(),
        },
    })
}

/// The network the overlay MILP sees: with automatic routing, the relay candidates (best by
/// two-hop throughput and price, plus what the LP relaxation routes through) and the endpoints.
fn overlay_network(
    full: &Network,
    req: &TransferRequest,
    notes: &mut Vec<String>,
) -> Result<(Network, RouteKind), PlanError> {
    Ok(match &req.route {
        RouteChoice::Auto => {
            let mut candidates = relay_candidates(full, req.config.max_relay_candidates);
            if req.config.max_relay_candidates.is_some() {
                candidates.extend(relaxation_support(full, req)?);
            }
            if candidates.len() + 2 < full.nodes.len() {
                notes.push(format!(
                    "overlay considered {} of {} allowed relay regions (best by two-hop \
                     throughput, by two-hop price, and those the LP relaxation over all of \
                     them routes through)",
                    candidates.len(),
                    full.nodes.len() - 2
                ));
            }
            (full.restricted_to(&candidates), RouteKind::Overlay)
        }
        RouteChoice::Direct => (full.clone(), RouteKind::Direct),
        RouteChoice::Via(_) => (full.clone(), RouteKind::Via),
    })
}

/// The direct route under the request's objective, or why there is none.
fn direct_plan(full: &Network, req: &TransferRequest) -> (Option<RoutePlan>, Option<String>) {
    let direct_net = full.with_links(|l| l.src == full.src && l.dst == full.dst);
    if direct_net.links.is_empty() {
        return (
            None,
            Some("the direct link is not measured or not priced".to_string()),
        );
    }
    match solve_for(&direct_net, req, RouteKind::Direct) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// The chosen route alone, never worse than the direct one, without the single-relay
/// comparison `plan_transfer` reports (which solves one program per relay region): for callers
/// that price many region pairs, such as pipeline placement.
pub fn plan_route(catalog: &Catalog, req: &TransferRequest) -> Result<RoutePlan, PlanError> {
    check_request(req)?;
    let (full, build_notes) = build_network(catalog, req)?;
    if !full.connects_src_to_dst() {
        return Err(disconnected(req, &full, &build_notes));
    }
    let (overlay_net, kind) = overlay_network(&full, req, &mut Vec::new())?;
    let overlay = solve_for(&overlay_net, req, kind);
    let direct = match req.route {
        RouteChoice::Auto => direct_plan(&full, req).0,
        _ => None,
    };
    // As in `plan_transfer`: the direct route wins when better, and answers when the overlay
    // cannot.
    Ok(match (overlay, direct) {
        (Ok(overlay), Some(direct)) if direct.better_than(&overlay, &req.objective) => direct,
        (Ok(overlay), _) => overlay,
        (Err(_), Some(direct)) => direct,
        (Err(e), None) => return Err(e),
    })
}

fn check_request(req: &TransferRequest) -> Result<(), PlanError> {
    let bad = |m: String| Err(PlanError::InvalidRequest(m));
    if req.volume_bytes == 0 {
        return bad("the volume must be more than 0 bytes".into());
    }
    if !(req.compression_ratio.is_finite() && req.compression_ratio >= 1.0) {
        return bad(format!(
            "compression ratio {} must be a number ≥ 1 (logical bytes per wire byte)",
            req.compression_ratio
        ));
    }
    if req.config.max_vms_per_region == 0 || req.config.max_connections_per_vm == 0 {
        return bad("max VMs per region and max connections per VM must be at least 1".into());
    }
    match req.objective {
        Objective::MinCost { throughput_floor } => {
            if !(throughput_floor.0.is_finite() && throughput_floor.0 > 0.0) {
                return bad(format!(
                    "throughput floor {} must be more than 0",
                    throughput_floor
                ));
            }
        }
        Objective::Deadline { seconds } => {
            if !(seconds.is_finite() && seconds > 0.0) {
                return bad(format!("deadline {seconds} s must be more than 0"));
            }
        }
        Objective::MaxThroughput { cost_cap } => {
            let v = match cost_cap {
                CostCap::TotalUsd(v) => v,
                CostCap::PerGb(p) => p.0,
            };
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("cost cap {v} must be more than 0"));
            }
        }
    }
    if let Some(p) = req.config.vm_price_override
        && !(p.0.is_finite() && p.0 >= 0.0)
    {
        return bad(format!("VM price {} must be a number ≥ 0", p.0));
    }
    if !(req.config.vm_overhead_s.is_finite() && req.config.vm_overhead_s >= 0.0) {
        return bad(format!(
            "VM overhead {} s must be a number ≥ 0",
            req.config.vm_overhead_s
        ));
    }
    Ok(())
}

fn disconnected(req: &TransferRequest, net: &Network, notes: &BuildNotes) -> PlanError {
    let why = match &req.route {
        RouteChoice::Direct => "the direct link is not measured or not priced".to_string(),
        RouteChoice::Via(relays) => format!(
            "a hop of the chain {} -> {} -> {} is not measured or not priced",
            req.src,
            relays
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" -> "),
            req.dst
        ),
        RouteChoice::Auto if !notes.refused.is_empty() => format!(
            "the region constraints leave {} regions and no measured path between them \
             ({} regions refused)",
            net.nodes.len(),
            notes.refused.len()
        ),
        RouteChoice::Auto => "no measured, priced path exists in the grid".to_string(),
    };
    PlanError::Disconnected {
        src: req.src.clone(),
        dst: req.dst.clone(),
        why,
    }
}

/// Relay candidates: the best `k/2` by two-hop bottleneck throughput and the best `k/2` by
/// two-hop price, so both fast and cheap detours stay in the model. Regions reachable only by
/// longer chains are still reachable through these candidates.
fn relay_candidates(net: &Network, k: Option<usize>) -> BTreeSet<usize> {
    let relays: Vec<usize> = (0..net.nodes.len())
        .filter(|&r| r != net.src && r != net.dst)
        .collect();
    let Some(k) = k else {
        return relays.into_iter().collect();
    };
    let mut two_hop: Vec<(usize, f64, f64)> = relays
        .iter()
        .filter_map(|&r| {
            let a = &net.links[net.link_between(net.src, r)?];
            let b = &net.links[net.link_between(r, net.dst)?];
            Some((r, a.gbps.0.min(b.gbps.0), a.price.0 + b.price.0))
        })
        .collect();
    let mut chosen = BTreeSet::new();
    two_hop.sort_by(|x, y| y.1.total_cmp(&x.1));
    chosen.extend(two_hop.iter().take(k.div_ceil(2)).map(|x| x.0));
    two_hop.sort_by(|x, y| x.2.total_cmp(&y.2).then(y.1.total_cmp(&x.1)));
    for x in &two_hop {
        if chosen.len() >= k {
            break;
        }
        chosen.insert(x.0);
    }
    chosen
}

/// Relay regions that carry flow in the LP relaxation (fractional VMs) of `req`'s objective over
/// the whole network. The relaxation needs no branch and bound, so it sees every region cheaply;
/// the exact MILP then runs on these plus the two-hop candidates.
fn relaxation_support(net: &Network, req: &TransferRequest) -> Result<BTreeSet<usize>, PlanError> {
    let wire_gb = req.wire_volume_gb();
    let relaxed = match Goal::of(req) {
        Goal::WireFloor(floor) => vec![
            solve::min_cost_at(net, floor, wire_gb, Vms::Relaxed)?,
            // A floor near the most the network carries needs the fastest relays to keep it
            // with whole connections (see `whole_connections_repair`); only a widening, so
            // its trouble is not the plan's.
            solve::max_throughput(net, f64::INFINITY, wire_gb, Vms::Relaxed)
                .ok()
                .flatten(),
        ],
        Goal::CostCap(cap) => vec![solve::max_throughput(net, cap, wire_gb, Vms::Relaxed)?],
    };
    Ok(relaxed
        .iter()
        .flatten()
        .flat_map(|f| f.used_links(net))
        .flat_map(|(a, b)| [a, b])
        .filter(|&n| n != net.src && n != net.dst)
        .collect())
}

/// What a request's objective asks of the programs: the cheapest plan carrying a wire rate
/// (a throughput floor, or a deadline as its rate), or the fastest within a dollar cap.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// Wire Gbps.
    WireFloor(f64),
    /// Dollars for the whole copy.
    CostCap(f64),
}

impl Goal {
    fn of(req: &TransferRequest) -> Goal {
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
fn deadline_floor(wire_gb: f64, seconds: f64) -> f64 {
    (wire_gb * 8.0 / seconds).max(MIN_DEADLINE_GBPS)
}

/// The least rate a deadline plans for: 10 Mbps, which any measured link carries.
const MIN_DEADLINE_GBPS: f64 = 0.01;

/// Solves `req`'s objective on `net` and turns the answer into a plan.
fn solve_for(
    net: &Network,
    req: &TransferRequest,
    kind: RouteKind,
) -> Result<RoutePlan, PlanError> {
    let wire_gb = req.wire_volume_gb();
    let ratio = req.compression_ratio;
    let (flows, fractional) = match Goal::of(req) {
        Goal::WireFloor(floor) => min_cost_plan(net, floor, wire_gb, ratio)?,
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
fn max_throughput_plan(net: &Network, req: &TransferRequest, cap: f64) -> Result<Flows, PlanError> {
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
fn one_vm_direct(net: &Network) -> Network {
    Network {
        max_vms_per_region: 1,
        ..net.with_links(|l| l.src == net.src && l.dst == net.dst)
    }
}

/// The plain direct copy's routing within `budget`, on [`one_vm_direct`]'s network (its only
/// link is the direct one); `None` without a direct link or when nothing fits the budget.
fn one_vm_direct_flows(
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

fn min_cost_plan(
    net: &Network,
    floor_wire: f64,
    wire_gb: f64,
    ratio: f64,
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
    let repaired = whole_connections_repair(net, floor_wire, wire_gb, ratio, support)?;
    Ok((repaired, fractional))
}

/// A floor the fractional plans could not keep once their connections were rounded (every VM
/// on the route at its connection budget): the relays and VM counts are chosen again with
/// whole connections in the model, over the links those plans used plus those of the fastest
/// routings (with whole connections, and the LP relaxation's), so a plan is found whenever
/// the floor is within what those carry. The model stays small (at most
/// [`REPAIR_MAX_LINKS`] links) and solves in milliseconds; past that size, or on numerical
/// trouble, the fastest plan meets the floor at a higher cost. No time limit: the same
/// request always gets the same plan.
fn whole_connections_repair(
    net: &Network,
    floor_wire: f64,
    wire_gb: f64,
    ratio: f64,
    mut support: BTreeSet<(usize, usize)>,
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
        solve::min_cost_whole_connections(&small, floor_wire, wire_gb)
    } else {
        Ok(None)
    };
    let whole = match solved {
        Ok(Some(whole)) => whole.onto(&small, net),
        Ok(None) | Err(_) => {
            return match fastest {
                Some(fastest) if meets(&fastest) => Ok(fastest),
                _ => Err(floor_unreachable(floor_wire, ratio, net, fastest.as_ref())),
            };
        }
    };
    // As fast as those VMs go within the same egress per GB, as for any plan (or, should
    // that program fail, the repaired routing as it is).
    let k = solve::egress_per_gb(net, &whole);
    Ok(solve::finalize(net, &whole, Budget::EgressPerGb(k))
        .ok()
        .flatten()
        .filter(meets)
        .unwrap_or_else(|| solve::without_idle_vms(net, whole)))
}

/// The most links the whole-connection repair solves over: one integer per link makes branch
/// and bound grow fast (the whole candidate network, some 300 links, ran for minutes).
pub const REPAIR_MAX_LINKS: usize = 64;

/// The fastest routing of `net` with whole connections (stage 1, then stage 2 unlimited).
fn fastest_whole(net: &Network, wire_gb: f64) -> Result<Option<Flows>, PlanError> {
    Ok(
        solve::max_throughput(net, f64::INFINITY, wire_gb, Vms::Integer)?
            .map(|f| solve::finalize(net, &f, Budget::Unlimited))
            .transpose()?
            .flatten(),
    )
}

/// Why a floor of `floor_wire` wire Gbps cannot be planned on `net`, given the fastest
/// routing found there.
fn floor_unreachable(
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

fn cost_cap_infeasible(net: &Network, req: &TransferRequest, cap: f64) -> PlanError {
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
fn plain_direct(net: &Network, req: &TransferRequest) -> Result<RoutePlan, PlanError> {
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

/// Sets `req`'s objective to skyx's default: the fastest plan that costs no more than a plain
/// direct copy of the same data (see [`plain_direct_plan`]). When `req` forces a route through
/// relays, the plain copy along that route (one VM per region on it) may cost more, and then
/// its cost is the cap: the route was asked for. Returns the plain direct copy's plan. Fails,
/// leaving `req` as it was, when the direct copy cannot be planned.
pub fn fastest_within_direct_cost(
    catalog: &Catalog,
    req: &mut TransferRequest,
) -> Result<RoutePlan, PlanError> {
    let direct = plain_direct_plan(catalog, req)?;
    let mut cap = direct.cost_usd.total;
    if let RouteChoice::Via(_) = req.route {
        let mut plain = req.clone();
        plain.config.max_vms_per_region = 1;
        plain.objective = Objective::MaxThroughput {
            // No cap worth the name (an infinite one is not a valid request).
            cost_cap: CostCap::TotalUsd(1e12),
        };
        if let Ok(along) = plan_transfer(catalog, &plain) {
            cap = cap.max(along.chosen.cost_usd.total * (1.0 + 1e-9));
        }
    }
    req.objective = Objective::MaxThroughput {
        cost_cap: CostCap::TotalUsd(cap),
    };
    Ok(direct)
}

/// The plan of a plain direct copy (direct link, one VM per end) for `req`'s endpoints, volume
/// and compression. `skyx plan` uses its cost as the default cost cap: "the fastest plan that
/// costs no more than copying directly".
pub fn plain_direct_plan(catalog: &Catalog, req: &TransferRequest) -> Result<RoutePlan, PlanError> {
    check_request(req)?;
    // The baseline is the direct link whatever route the request forces (`--via` builds a
    // network without it).
    let direct = TransferRequest {
        route: RouteChoice::Auto,
        ..req.clone()
    };
    let (net, _) = build_network(catalog, &direct)?;
    plain_direct(&net, &direct)
}

/// The provider's own copy between the request's ends, when the request allows it (whether
/// or not it meets the objective).
fn server_side_plan(catalog: &Catalog, req: &TransferRequest) -> Option<RoutePlan> {
    if !req.server_side {
        return None;
    }
    let gbps = catalog.server_side_gbps(&req.src, &req.dst)?;
    let price = catalog.egress_price(&req.src, &req.dst)?;
    Some(RoutePlan::server_side(
        &req.src,
        &req.dst,
        req.volume_gb(),
        gbps.0,
        price.0,
    ))
}

/// The best plan through exactly one relay, under the request's objective.
fn best_single_relay(full: &Network, req: &TransferRequest) -> Option<RoutePlan> {
    let mut best: Option<RoutePlan> = None;
    for r in 0..full.nodes.len() {
        if r == full.src || r == full.dst {
            continue;
        }
        let (Some(_), Some(_)) = (
            full.link_between(full.src, r),
            full.link_between(r, full.dst),
        ) else {
            continue;
        };
        let path = full
            .with_links(|l| (l.src == full.src && l.dst == r) || (l.src == r && l.dst == full.dst));
        if let Ok(plan) = solve_for(&path, req, RouteKind::SingleRelay)
            && best
                .as_ref()
                .is_none_or(|b| plan.better_than(b, &req.objective))
        {
            best = Some(plan);
        }
    }
    best
}
