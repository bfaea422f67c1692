//! The overlay planner: a pure function from a catalog and a transfer request to a plan.
//!
//! No IO, no clock, no async. `plan_transfer` builds the planning [`Network`] (allowed regions,
//! measured and priced links), picks relay candidates, solves the mixed-integer program of
//! [`solve`], and computes the direct and best single-relay plans under the same objective so
//! every answer says how much the overlay buys.

pub mod broadcast;
mod exhaustive;
mod network;
mod plan;
mod programs;
mod request;
pub mod solve;

use std::collections::BTreeSet;

use serde::Serialize;
use skyx_catalog::{Catalog, VmPriceSource};

pub use broadcast::{BroadcastPlan, BroadcastRequest, plan_broadcast};
pub use exhaustive::{BoundKind, EXHAUSTIVE_TWO_HOP, OptimalityGap, is_exhaustive};
pub use network::{BuildNotes, Link, Network, Node, build_network};
pub use plan::{
    CostBreakdown, EdgePlan, PathShare, RegionVms, RouteKind, RoutePlan, to_dot, validate,
};
pub use programs::REPAIR_MAX_LINKS;
use programs::{Goal, plain_direct, solve_for};
pub use request::{
    CostCap, Objective, PlannerConfig, RegionConstraints, RouteChoice, TransferRequest,
};
use solve::Vms;

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
    /// In the exhaustive mode: how far the plan can at most be from the best over every
    /// allowed region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimality_gap: Option<OptimalityGap>,
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

    let (mut overlay_net, kind, support) = overlay_network(&full, req, &mut notes);
    let server_side = server_side_plan(catalog, req);
    let mut overlay = solve_for(&overlay_net, req, kind);
    let exhaustive = req.route == RouteChoice::Auto && is_exhaustive(req);
    if exhaustive {
        let wide = exhaustive::wide_network(&full, &support);
        if let Ok(plan) = solve_for(&wide, req, kind)
            && overlay
                .as_ref()
                .ok()
                .is_none_or(|o| plan.better_than(o, &req.objective))
        {
            overlay = Ok(plan);
        }
        let relays = wide.regions_in_use().len().saturating_sub(2);
        notes.push(format!(
            "exhaustive: the exact program ran over {relays} relay regions (the LP relaxation's \
             and the best {EXHAUSTIVE_TWO_HOP} by two-hop throughput and price), and over the \
             default candidates"
        ));
        overlay_net = wide;
    }
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

    let optimality_gap = if exhaustive {
        // The bound only reports; its trouble is not the plan's.
        exhaustive::gap(&full, req, &chosen).ok().flatten()
    } else {
        None
    };
    if let Some(gap) = &optimality_gap {
        notes.push(gap.describe(full.nodes.len()));
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
        optimality_gap,
        model: ModelSize {
            regions_allowed: full.nodes.len(),
            regions_considered: overlay_net.regions_in_use().len(),
            links_considered: overlay_net.links.len(),
        },
    })
}

/// The network the overlay MILP sees: with automatic routing, the relay candidates (best by
/// two-hop throughput and price, plus what the LP relaxation routes through) and the endpoints.
/// Also the relaxation's relays (empty on its numerical trouble, or for a fixed route), which
/// the exhaustive mode widens.
fn overlay_network(
    full: &Network,
    req: &TransferRequest,
    notes: &mut Vec<String>,
) -> (Network, RouteKind, BTreeSet<usize>) {
    match &req.route {
        RouteChoice::Auto => {
            // The exhaustive mode starts from the default candidates (see `exhaustive`).
            let two_hop = req
                .config
                .max_relay_candidates
                .unwrap_or(request::DEFAULT_RELAY_CANDIDATES);
            let mut candidates = relay_candidates(full, two_hop);
            // The relaxation only widens the set: on numerical trouble the two-hop relays
            // stand.
            let support = relaxation_support(full, req).unwrap_or_default();
            candidates.extend(&support);
            if candidates.len() + 2 < full.nodes.len() && !is_exhaustive(req) {
                notes.push(format!(
                    "overlay considered {} of {} allowed relay regions (best by two-hop \
                     throughput, by two-hop price, and those the LP relaxation over all of \
                     them routes through)",
                    candidates.len(),
                    full.nodes.len() - 2
                ));
            }
            (full.restricted_to(&candidates), RouteKind::Overlay, support)
        }
        RouteChoice::Direct => (full.clone(), RouteKind::Direct, BTreeSet::new()),
        RouteChoice::Via(_) => (full.clone(), RouteKind::Via, BTreeSet::new()),
    }
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
    let (overlay_net, kind, _) = overlay_network(&full, req, &mut Vec::new());
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

pub(crate) fn check_request(req: &TransferRequest) -> Result<(), PlanError> {
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
    if let Some(s) = req.config.repair_search_s
        && !(s.is_finite() && s > 0.0)
    {
        return bad(format!("repair search limit {s} s must be more than 0"));
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
pub(crate) fn relay_candidates(net: &Network, k: usize) -> BTreeSet<usize> {
    let relays: Vec<usize> = (0..net.nodes.len())
        .filter(|&r| r != net.src && r != net.dst)
        .collect();
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
pub(crate) fn relaxation_support(
    net: &Network,
    req: &TransferRequest,
) -> Result<BTreeSet<usize>, PlanError> {
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
