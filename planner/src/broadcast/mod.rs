//! One source, many destinations (`skyx plan --dst R1,R2,…`): a multicast plan in which the
//! data is split into equal partitions, each relayed along its own tree and forked at the
//! regions where the tree branches, so each byte crosses each link it uses once. Compared
//! side by side with what tools do today: a separate overlay copy to each destination, and a
//! separate direct copy to each.
//!
//! The exact program (see [`solve`]) runs over a small network: the source, the destinations
//! (which may relay to each other), the best [`RELAYS_PER_DESTINATION`] relays per destination
//! by two-hop throughput and price, and every relay a separate overlay copy would use.

pub mod solve;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use skyx_catalog::{Catalog, RegionId};

use crate::network::{Network, build_network_relaying_at_dst};
use crate::plan::{CostBreakdown, EdgePlan, RoutePlan};
use crate::programs::Goal;
use crate::request::{Objective, PlannerConfig, RegionConstraints, RouteChoice, TransferRequest};
use crate::{ModelSize, PlanError, plan_transfer};
use solve::{Trees, as_fast_as_their_vms, min_cost_trees, relaxed_support, validate_trees};

/// How many equal partitions the data is split into by default: each may follow its own
/// tree, so a plan can spread load over up to this many trees.
pub const DEFAULT_PARTITIONS: usize = 4;

/// Relay candidates per destination, by two-hop throughput and price.
pub const RELAYS_PER_DESTINATION: usize = 4;

const COST_CAP_REFUSED: &str = "a broadcast is planned for a throughput floor or a deadline; \
    the fastest broadcast within a cost cap is not supported (its program ran for minutes)";

/// A request to copy `volume_bytes` from `src` to every region of `dsts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastRequest {
    pub src: RegionId,
    pub dsts: Vec<RegionId>,
    /// Logical bytes, delivered whole to each destination.
    pub volume_bytes: u64,
    /// A throughput floor or a deadline, as for one destination: every destination receives
    /// at the plan's rate.
    pub objective: Objective,
    pub compression_ratio: f64,
    pub constraints: RegionConstraints,
    pub config: PlannerConfig,
    /// Equal parts the data is split into, each following one tree.
    pub partitions: usize,
}

impl BroadcastRequest {
    pub fn new(
        src: RegionId,
        dsts: Vec<RegionId>,
        volume_bytes: u64,
        objective: Objective,
    ) -> Self {
        BroadcastRequest {
            src,
            dsts,
            volume_bytes,
            objective,
            compression_ratio: 1.0,
            constraints: RegionConstraints::default(),
            config: PlannerConfig::default(),
            partitions: DEFAULT_PARTITIONS,
        }
    }

    /// The same copy to `dst` alone.
    pub fn unicast(&self, dst: &RegionId) -> TransferRequest {
        TransferRequest {
            compression_ratio: self.compression_ratio,
            constraints: self.constraints.clone(),
            config: self.config.clone(),
            ..TransferRequest::new(
                self.src.clone(),
                dst.clone(),
                self.volume_bytes,
                self.objective,
            )
        }
    }
}

/// One partition's tree, as hops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionTree {
    /// Fraction of the data that follows this tree.
    pub share: f64,
    pub hops: Vec<(RegionId, RegionId)>,
}

/// A multicast plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MulticastPlan {
    /// Logical Gbps every destination receives.
    pub throughput_gbps: f64,
    pub wire_gbps: f64,
    pub time_s: f64,
    pub cost_usd: CostBreakdown,
    /// Each link used, with the load of every partition crossing it.
    pub edges: Vec<EdgePlan>,
    pub vms: BTreeMap<RegionId, u32>,
    pub trees: Vec<PartitionTree>,
}

/// N separate copies, one per destination, run at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeparateCopies {
    /// Until the last destination has everything.
    pub time_s: f64,
    /// The slowest destination's rate.
    pub throughput_gbps: f64,
    pub cost_usd: CostBreakdown,
    pub per_destination: Vec<RoutePlan>,
}

impl SeparateCopies {
    fn of(plans: Vec<RoutePlan>) -> SeparateCopies {
        let sum = |f: fn(&RoutePlan) -> f64| plans.iter().map(f).sum::<f64>();
        SeparateCopies {
            time_s: plans.iter().map(|p| p.time_s).fold(0.0, f64::max),
            throughput_gbps: plans
                .iter()
                .map(|p| p.throughput_gbps)
                .fold(f64::INFINITY, f64::min),
            cost_usd: CostBreakdown {
                egress: sum(|p| p.cost_usd.egress),
                vm: sum(|p| p.cost_usd.vm),
                total: sum(|p| p.cost_usd.total),
            },
            per_destination: plans,
        }
    }
}

/// The planner's answer to a broadcast request, with what separate copies would do.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastPlan {
    pub src: RegionId,
    pub dsts: Vec<RegionId>,
    pub volume_bytes: u64,
    pub objective: Objective,
    pub chosen: MulticastPlan,
    /// A separate overlay copy to each destination under the same objective, when each can
    /// be planned.
    pub separate_overlays: Option<SeparateCopies>,
    /// A separate direct copy to each destination under the same objective.
    pub separate_direct: Option<SeparateCopies>,
    pub notes: Vec<String>,
    pub model: ModelSize,
}

/// Plans `req` over `catalog`.
pub fn plan_broadcast(
    catalog: &Catalog,
    req: &BroadcastRequest,
) -> Result<BroadcastPlan, PlanError> {
    check(req)?;
    let first = req.unicast(&req.dsts[0]);
    let (full, _) = build_network_relaying_at_dst(catalog, &first)?;
    let dsts = destination_nodes(&full, req)?;

    let overlays: Result<Vec<RoutePlan>, PlanError> = req
        .dsts
        .iter()
        .map(|d| plan_transfer(catalog, &req.unicast(d)).map(|p| p.chosen))
        .collect();
    let direct: Result<Vec<RoutePlan>, PlanError> = req
        .dsts
        .iter()
        .map(|d| {
            let mut unicast = req.unicast(d);
            unicast.route = RouteChoice::Direct;
            plan_transfer(catalog, &unicast).map(|p| p.chosen)
        })
        .collect();

    let mut relays = BTreeSet::new();
    for &d in &dsts {
        let towards = Network {
            dst: d,
            ..full.clone()
        };
        relays.extend(crate::relay_candidates(&towards, RELAYS_PER_DESTINATION));
    }
    for plan in overlays.iter().flatten() {
        for region in plan.vms.keys() {
            relays.extend(full.nodes.iter().position(|n| &n.region == region));
        }
    }
    relays.remove(&full.src);
    relays.extend(dsts.iter().copied());
    let candidates = full.with_links(|l| {
        let keep = |v: usize| v == full.src || relays.contains(&v);
        keep(l.src) && keep(l.dst)
    });

    let wire_gb = first.wire_volume_gb();
    let Goal::WireFloor(rate) = Goal::of(&first) else {
        return Err(PlanError::InvalidRequest(COST_CAP_REFUSED.into()));
    };
    // Branch and bound over every candidate link ran for minutes: the exact program runs over
    // the links the relaxation uses, every hop of the separate overlay copies (so the trees
    // can at least do what they do), the direct links and those between destinations.
    let mut keep: BTreeSet<(usize, usize)> = BTreeSet::new();
    // The relaxation only narrows the search; on its trouble the other links stand.
    if let Ok(support) = relaxed_support(&candidates, &dsts, rate, wire_gb) {
        keep.extend(
            candidates
                .links
                .iter()
                .zip(support)
                .filter(|(_, used)| *used)
                .map(|(l, _)| (l.src, l.dst)),
        );
    }
    let node = |r: &RegionId| full.nodes.iter().position(|n| &n.region == r);
    for plan in overlays.iter().flatten() {
        for e in &plan.edges {
            if let (Some(a), Some(b)) = (node(&e.src), node(&e.dst)) {
                keep.insert((a, b));
            }
        }
    }
    for &a in std::iter::once(&full.src).chain(&dsts) {
        keep.extend(dsts.iter().map(|&b| (a, b)));
    }
    let net = candidates.with_links(|l| keep.contains(&(l.src, l.dst)));
    // The cut-down network can miss what trees need (the separate copies each had the
    // source's VMs to themselves): then over every candidate link.
    let (net, trees) = match min_cost_trees(&net, &dsts, req.partitions, rate, wire_gb) {
        Ok(Some(trees)) => (net, trees),
        Ok(None) | Err(PlanError::Solver(_)) => {
            match min_cost_trees(&candidates, &dsts, req.partitions, rate, wire_gb)? {
                Some(trees) => (candidates, trees),
                None => return Err(unreachable_objective(req)),
            }
        }
        Err(e) => return Err(e),
    };
    // As for one destination: as fast as the chosen VMs go, which only shortens their bill.
    let trees = as_fast_as_their_vms(&net, trees);
    validate_trees(&net, &dsts, &trees)
        .map_err(|e| PlanError::Solver(format!("broadcast plan failed its checks: {e}")))?;

    let chosen = multicast_plan(&net, &trees, wire_gb, req.compression_ratio);
    let notes = vec![format!(
        "broadcast: the data in {} equal partitions, each relayed along its own tree and \
         forked where it branches; {} relay regions considered",
        req.partitions,
        relays.len() - dsts.len()
    )];
    Ok(BroadcastPlan {
        src: req.src.clone(),
        dsts: req.dsts.clone(),
        volume_bytes: req.volume_bytes,
        objective: req.objective,
        chosen,
        separate_overlays: overlays.ok().map(SeparateCopies::of),
        separate_direct: direct.ok().map(SeparateCopies::of),
        notes,
        model: ModelSize {
            regions_allowed: full.nodes.len(),
            regions_considered: relays.len() + 1,
            links_considered: net.links.len(),
        },
    })
}

fn check(req: &BroadcastRequest) -> Result<(), PlanError> {
    let bad = |m: String| Err(PlanError::InvalidRequest(m));
    if req.dsts.is_empty() {
        return bad("a broadcast needs at least one destination".into());
    }
    // Volume, compression, limits and the objective's own figures, as for one destination.
    crate::check_request(&req.unicast(&req.dsts[0]))?;
    if let Objective::MaxThroughput { .. } = req.objective {
        return bad(COST_CAP_REFUSED.into());
    }
    let mut seen = BTreeSet::new();
    for d in &req.dsts {
        if *d == req.src {
            return bad(format!("destination {d} is the source"));
        }
        if !seen.insert(d) {
            return bad(format!("destination {d} is given twice"));
        }
    }
    if req.partitions == 0 || req.partitions > 16 {
        return bad(format!("{} partitions: choose 1 to 16", req.partitions));
    }
    Ok(())
}

/// The destinations' node indices in `full`, or why one cannot be used.
fn destination_nodes(full: &Network, req: &BroadcastRequest) -> Result<Vec<usize>, PlanError> {
    req.dsts
        .iter()
        .map(|d| {
            if let Some(why) = req.constraints.refusal(d) {
                return Err(PlanError::EndpointRefused {
                    region: d.clone(),
                    why,
                });
            }
            full.nodes
                .iter()
                .position(|n| &n.region == d)
                .ok_or_else(|| {
                    PlanError::InvalidRequest(format!(
                        "{d} is not in the throughput grid or has no VM price in the catalog"
                    ))
                })
        })
        .collect()
}

fn unreachable_objective(req: &BroadcastRequest) -> PlanError {
    PlanError::Infeasible {
        why: format!(
            "no broadcast trees reach all {} destinations at this rate within {} VMs per \
             region and {} connections per VM",
            req.dsts.len(),
            req.config.max_vms_per_region,
            req.config.max_connections_per_vm
        ),
        achievable: "a lower floor, a later deadline or more VMs per region may be; each \
                     destination can also be planned on its own"
            .into(),
    }
}

fn multicast_plan(net: &Network, trees: &Trees, wire_gb: f64, ratio: f64) -> MulticastPlan {
    let region = |v: usize| net.nodes[v].region.clone();
    let load = trees.link_gbps(net);
    let crossings = trees.crossings(net);
    let per_partition_gb = wire_gb / trees.trees.len() as f64;
    let edges = net
        .links
        .iter()
        .enumerate()
        .filter(|(e, _)| crossings[*e] > 0)
        .map(|(e, l)| {
            let gb = per_partition_gb * f64::from(crossings[e]);
            EdgePlan {
                src: region(l.src),
                dst: region(l.dst),
                gbps: load[e],
                connections: trees.connections[e],
                usd_per_gb: l.price.0,
                gb,
                egress_usd: gb * l.price.0,
            }
        })
        .collect();
    let egress = trees.egress_usd(net, wire_gb);
    let vm = trees.vm_usd(net, wire_gb);
    MulticastPlan {
        throughput_gbps: trees.wire_gbps * ratio,
        wire_gbps: trees.wire_gbps,
        time_s: wire_gb * 8.0 / trees.wire_gbps,
        cost_usd: CostBreakdown {
            egress,
            vm,
            total: egress + vm,
        },
        edges,
        vms: (0..net.nodes.len())
            .filter(|&v| trees.vms[v] > 0)
            .map(|v| (region(v), trees.vms[v]))
            .collect(),
        trees: trees
            .trees
            .iter()
            .map(|tree| PartitionTree {
                share: 1.0 / trees.trees.len() as f64,
                hops: tree
                    .iter()
                    .map(|&e| (region(net.links[e].src), region(net.links[e].dst)))
                    .collect(),
            })
            .collect(),
    }
}
