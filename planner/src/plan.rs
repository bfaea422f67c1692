//! Plans as the planner returns them, and the checks every plan must pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use skyx_catalog::RegionId;

use crate::network::Network;
use crate::request::Objective;
use crate::solve::{FLOW_EPS, Flows};

/// How a route was restricted when it was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Free overlay over the candidate regions.
    Overlay,
    /// The direct link only.
    Direct,
    /// Exactly one relay.
    SingleRelay,
    /// The relay chain the user gave.
    Via,
    /// The provider's own copy between the two buckets: no VMs, no compression.
    ServerSide,
}

/// One hop of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgePlan {
    pub src: RegionId,
    pub dst: RegionId,
    /// Wire Gbps on this hop.
    pub gbps: f64,
    /// Parallel connections across all VMs of the sending region.
    pub connections: u32,
    pub usd_per_gb: f64,
    /// Wire GB this hop carries over the whole transfer.
    pub gb: f64,
    /// Egress dollars for this hop.
    pub egress_usd: f64,
}

/// A share of the transfer following one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathShare {
    pub regions: Vec<RegionId>,
    /// Wire Gbps along this path.
    pub gbps: f64,
}

/// Dollars, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostBreakdown {
    pub egress: f64,
    pub vm: f64,
    pub total: f64,
}

/// VMs in one region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionVms {
    pub count: u32,
    pub instance_type_price_per_hour: f64,
    /// Where the hourly price came from (catalog, derived, estimate, override).
    pub price_source: String,
}

/// A complete routing with its predicted time and bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutePlan {
    pub kind: RouteKind,
    /// Logical (uncompressed) Gbps the user sees.
    pub throughput_gbps: f64,
    /// Gbps on the wire leaving the source.
    pub wire_gbps: f64,
    pub time_s: f64,
    pub cost_usd: CostBreakdown,
    pub edges: Vec<EdgePlan>,
    /// Region → VM count (regions with at least one VM).
    pub vms: BTreeMap<RegionId, u32>,
    pub vm_details: BTreeMap<RegionId, RegionVms>,
    /// The routing decomposed into paths, widest first.
    pub paths: Vec<PathShare>,
    /// For a throughput floor: what the cheapest routing at exactly the floor costs when
    /// connections may be fractional (the figure Skyplane's planner reports). Whole
    /// connections can cost more; never by more than a sliver unless every VM on the route is
    /// at its connection budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fractional_connections_usd: Option<f64>,
}

impl RoutePlan {
    /// Turns solver flows into a plan for `wire_gb` of wire data and `logical_gb` of user data.
    pub(crate) fn from_flows(
        kind: RouteKind,
        net: &Network,
        flows: &Flows,
        wire_gb: f64,
        compression_ratio: f64,
    ) -> RoutePlan {
        let time_s = wire_gb * 8.0 / flows.wire_gbps;
        let mut edges = Vec::new();
        for (i, link) in net.links.iter().enumerate() {
            let gbps = flows.link_gbps[i];
            if gbps <= FLOW_EPS {
                continue;
            }
            let gb = wire_gb * gbps / flows.wire_gbps;
            edges.push(EdgePlan {
                src: net.nodes[link.src].region.clone(),
                dst: net.nodes[link.dst].region.clone(),
                gbps,
                connections: flows.connections[i],
                usd_per_gb: link.price.0,
                gb,
                egress_usd: gb * link.price.0,
            });
        }
        let egress: f64 = edges.iter().map(|e| e.egress_usd).sum();
        let mut vms = BTreeMap::new();
        let mut vm_details = BTreeMap::new();
        let mut vm_usd = 0.0;
        for (i, node) in net.nodes.iter().enumerate() {
            let count = flows.vms[i];
            if count == 0 {
                continue;
            }
            vm_usd += f64::from(count) * node.vm_price.0 * (time_s / 3600.0 + net.vm_overhead_h);
            vms.insert(node.region.clone(), count);
            vm_details.insert(
                node.region.clone(),
                RegionVms {
                    count,
                    instance_type_price_per_hour: node.vm_price.0,
                    price_source: describe_price_source(&node.vm_price_source),
                },
            );
        }
        RoutePlan {
            kind,
            throughput_gbps: flows.wire_gbps * compression_ratio,
            wire_gbps: flows.wire_gbps,
            time_s,
            cost_usd: CostBreakdown {
                egress,
                vm: vm_usd,
                total: egress + vm_usd,
            },
            edges,
            vms,
            vm_details,
            paths: decompose(net, flows),
            fractional_connections_usd: None,
        }
    }

    /// The provider's own copy of `gb` logical GB from `src` to `dst` at `gbps`, billed
    /// `usd_per_gb` as transfer out of the source's region: no VMs, no compression.
    pub fn server_side(
        src: &RegionId,
        dst: &RegionId,
        gb: f64,
        gbps: f64,
        usd_per_gb: f64,
    ) -> Self {
        let egress = gb * usd_per_gb;
        RoutePlan {
            kind: RouteKind::ServerSide,
            throughput_gbps: gbps,
            wire_gbps: gbps,
            time_s: gb * 8.0 / gbps,
            cost_usd: CostBreakdown {
                egress,
                vm: 0.0,
                total: egress,
            },
            edges: vec![EdgePlan {
                src: src.clone(),
                dst: dst.clone(),
                gbps,
                connections: 0,
                usd_per_gb,
                gb,
                egress_usd: egress,
            }],
            vms: BTreeMap::new(),
            vm_details: BTreeMap::new(),
            paths: vec![PathShare {
                regions: vec![src.clone(), dst.clone()],
                gbps,
            }],
            fractional_connections_usd: None,
        }
    }

    /// Whether this plan meets `objective`'s own bound (floor, deadline or cost cap) for `gb`
    /// logical GB.
    pub fn meets(&self, objective: &Objective, gb: f64) -> bool {
        const REL: f64 = 1e-9;
        match objective {
            Objective::MinCost { throughput_floor } => {
                self.throughput_gbps >= throughput_floor.0 * (1.0 - REL)
            }
            Objective::Deadline { seconds } => self.time_s <= seconds * (1.0 + REL),
            Objective::MaxThroughput { cost_cap } => {
                let cap = match cost_cap {
                    crate::request::CostCap::TotalUsd(v) => *v,
                    crate::request::CostCap::PerGb(p) => p.0 * gb,
                };
                self.cost_usd.total <= cap * (1.0 + REL)
            }
        }
    }

    /// Relay regions (every region on the route except the two ends).
    pub fn relays(&self, src: &RegionId, dst: &RegionId) -> Vec<RegionId> {
        self.vms
            .keys()
            .filter(|r| *r != src && *r != dst)
            .cloned()
            .collect()
    }

    /// True when `self` is better than `other` for `objective` (cost first for the cost modes,
    /// throughput first for the throughput mode, the other figure breaking ties).
    pub fn better_than(&self, other: &RoutePlan, objective: &Objective) -> bool {
        const REL: f64 = 1e-9;
        let cheaper = self.cost_usd.total < other.cost_usd.total * (1.0 - REL);
        let same_cost =
            (self.cost_usd.total - other.cost_usd.total).abs() <= other.cost_usd.total.abs() * REL;
        let faster = self.throughput_gbps > other.throughput_gbps * (1.0 + REL);
        let same_speed =
            (self.throughput_gbps - other.throughput_gbps).abs() <= other.throughput_gbps * REL;
        match objective {
            Objective::MinCost { .. } | Objective::Deadline { .. } => {
                cheaper || (same_cost && faster)
            }
            Objective::MaxThroughput { .. } => faster || (same_speed && cheaper),
        }
    }
}

fn describe_price_source(source: &skyx_catalog::VmPriceSource) -> String {
    use skyx_catalog::VmPriceSource::*;
    match source {
        Catalog { priced_as, factor } => format!("catalog: {factor} x {priced_as}"),
        EstimatedCloudMedian { priced_as, factor } => {
            format!("estimate: {factor} x cloud median of {priced_as}")
        }
        UserOverride => "user override".into(),
    }
}

/// Splits a flow into source→destination paths, widest first.
fn decompose(net: &Network, flows: &Flows) -> Vec<PathShare> {
    let mut residual = flows.link_gbps.clone();
    let mut shares = Vec::new();
    // Each round removes at least one link's residual, so this ends within |links| rounds.
    for _ in 0..=net.links.len() {
        let Some(path) = find_path(net, &residual) else {
            break;
        };
        let width = path
            .iter()
            .map(|&i| residual[i])
            .fold(f64::INFINITY, f64::min);
        for &i in &path {
            residual[i] -= width;
        }
        let mut regions = vec![net.nodes[net.src].region.clone()];
        regions.extend(
            path.iter()
                .map(|&i| net.nodes[net.links[i].dst].region.clone()),
        );
        shares.push(PathShare {
            regions,
            gbps: width,
        });
    }
    shares.sort_by(|a, b| b.gbps.total_cmp(&a.gbps));
    shares
}

/// A path of links with positive residual from src to dst (depth-first, no revisits).
fn find_path(net: &Network, residual: &[f64]) -> Option<Vec<usize>> {
    let mut visited = vec![false; net.nodes.len()];
    let mut stack: Vec<(usize, Vec<usize>)> = vec![(net.src, Vec::new())];
    while let Some((node, path)) = stack.pop() {
        if node == net.dst {
            return Some(path);
        }
        if std::mem::replace(&mut visited[node], true) {
            continue;
        }
        for (i, link) in net.out_links(node) {
            if residual[i] > FLOW_EPS * 10.0 && !visited[link.dst] {
                let mut next = path.clone();
                next.push(i);
                stack.push((link.dst, next));
            }
        }
    }
    None
}

/// Checks a routing against every constraint of the model. Used by tests and, as a guard, on
/// every plan the planner returns.
pub fn validate(net: &Network, flows: &Flows) -> Result<(), String> {
    let tol = 1e-6 * (1.0 + flows.wire_gbps);
    let k = f64::from(net.max_connections_per_vm);
    if flows.link_gbps.iter().any(|f| *f < -tol || !f.is_finite()) {
        return Err("negative or non-finite flow".into());
    }
    for (node_idx, node) in net.nodes.iter().enumerate() {
        let out: f64 = net
            .out_links(node_idx)
            .map(|(i, _)| flows.link_gbps[i])
            .sum();
        let inn: f64 = net
            .in_links(node_idx)
            .map(|(i, _)| flows.link_gbps[i])
            .sum();
        let expected = if node_idx == net.src {
            flows.wire_gbps
        } else if node_idx == net.dst {
            -flows.wire_gbps
        } else {
            0.0
        };
        let name = &node.region;
        if (out - inn - expected).abs() > tol {
            return Err(format!("{name}: flow not conserved (out {out}, in {inn})"));
        }
        let n = flows.vms[node_idx];
        if n > net.max_vms_per_region {
            return Err(format!("{name}: {n} VMs exceed the limit"));
        }
        let nf = f64::from(n);
        if out > node.egress_cap.0 * nf + tol {
            return Err(format!("{name}: egress {out} Gbps over {n} VMs' cap"));
        }
        if inn > node.ingress_cap.0 * nf + tol {
            return Err(format!("{name}: ingress {inn} Gbps over {n} VMs' cap"));
        }
        let c_out: u32 = net
            .out_links(node_idx)
            .map(|(i, _)| flows.connections[i])
            .sum();
        let c_in: u32 = net
            .in_links(node_idx)
            .map(|(i, _)| flows.connections[i])
            .sum();
        if f64::from(c_out) > k * nf || f64::from(c_in) > k * nf {
            return Err(format!(
                "{name}: {c_out} out / {c_in} in connections over {n} VMs' budget"
            ));
        }
    }
    for (i, link) in net.links.iter().enumerate() {
        let f = flows.link_gbps[i];
        let carried = f64::from(flows.connections[i]) * link.gbps_per_connection();
        if f > carried + tol {
            return Err(format!(
                "{} -> {}: {f} Gbps needs more than {} connections",
                net.nodes[link.src].region, net.nodes[link.dst].region, flows.connections[i]
            ));
        }
    }
    if flows.vms[net.src] == 0 || flows.vms[net.dst] == 0 {
        return Err("source and destination each need a VM".into());
    }
    Ok(())
}

/// A Graphviz picture of a plan: regions with their VMs, hops with Gbps and connections.
pub fn to_dot(plan: &RoutePlan, src: &RegionId, dst: &RegionId) -> String {
    let mut out = String::from("digraph skyx_plan {\n  rankdir=LR;\n  node [shape=box];\n");
    for (region, count) in &plan.vms {
        let role = if region == src {
            "source"
        } else if region == dst {
            "destination"
        } else {
            "relay"
        };
        let _ = writeln!(
            out,
            "  \"{region}\" [label=\"{region}\\n{role}, {count} VM{}\"];",
            if *count == 1 { "" } else { "s" }
        );
    }
    for e in &plan.edges {
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{:.2} Gbps\\n{} conns\\n${:.3}/GB\"];",
            e.src, e.dst, e.gbps, e.connections, e.usd_per_gb
        );
    }
    out.push_str("}\n");
    out
}
