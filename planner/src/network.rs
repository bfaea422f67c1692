//! The graph the optimiser works on: regions it may use, with VM prices and caps, and the
//! measured, priced links between them. Built from the catalog, or by hand in tests.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::has_path_connecting;
use petgraph::graphmap::DiGraphMap;
use skyx_catalog::{Catalog, Gbps, RegionId, UsdPerGb, UsdPerHour, VmPriceSource};

use crate::PlanError;
use crate::request::{RouteChoice, TransferRequest};

/// A region the plan may place agents in.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub region: RegionId,
    pub vm_price: UsdPerHour,
    pub vm_price_source: VmPriceSource,
    /// Per-VM limit on bytes leaving the region.
    pub egress_cap: Gbps,
    /// Per-VM limit on bytes arriving.
    pub ingress_cap: Gbps,
}

/// A directed link with its measurement and price.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub src: usize,
    pub dst: usize,
    /// Throughput measured between one VM at each end with `measured_connections` streams.
    pub gbps: Gbps,
    pub measured_connections: u32,
    pub price: UsdPerGb,
}

impl Link {
    /// Throughput one connection adds: the grid is linear in connections up to its count.
    pub fn gbps_per_connection(&self) -> f64 {
        self.gbps.0 / f64::from(self.measured_connections)
    }
}

/// A planning graph with a source and a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    pub src: usize,
    pub dst: usize,
    pub max_vms_per_region: u32,
    pub max_connections_per_vm: u32,
    /// Hours each VM is billed beyond the transfer (boot, minimum billing).
    pub vm_overhead_h: f64,
}

impl Network {
    pub fn out_links(&self, node: usize) -> impl Iterator<Item = (usize, &Link)> {
        self.links
            .iter()
            .enumerate()
            .filter(move |(_, l)| l.src == node)
    }

    pub fn in_links(&self, node: usize) -> impl Iterator<Item = (usize, &Link)> {
        self.links
            .iter()
            .enumerate()
            .filter(move |(_, l)| l.dst == node)
    }

    pub fn link_between(&self, src: usize, dst: usize) -> Option<usize> {
        self.links.iter().position(|l| l.src == src && l.dst == dst)
    }

    pub fn graph(&self) -> DiGraphMap<usize, usize> {
        let mut g = DiGraphMap::new();
        for n in 0..self.nodes.len() {
            g.add_node(n);
        }
        for (i, l) in self.links.iter().enumerate() {
            g.add_edge(l.src, l.dst, i);
        }
        g
    }

    pub fn connects_src_to_dst(&self) -> bool {
        has_path_connecting(&self.graph(), self.src, self.dst, None)
    }

    /// The nodes some link of this network touches.
    pub fn regions_in_use(&self) -> BTreeSet<usize> {
        self.links.iter().flat_map(|l| [l.src, l.dst]).collect()
    }

    /// The same network restricted to the given links (nodes are kept, indices stay valid).
    pub fn with_links(&self, keep: impl Fn(&Link) -> bool) -> Network {
        Network {
            links: self.links.iter().filter(|l| keep(l)).cloned().collect(),
            ..self.clone()
        }
    }

    /// The same network keeping only links whose both ends are in `nodes` (plus src and dst).
    pub fn restricted_to(&self, nodes: &BTreeSet<usize>) -> Network {
        let keep = |n: usize| n == self.src || n == self.dst || nodes.contains(&n);
        self.with_links(|l| keep(l.src) && keep(l.dst))
    }
}

/// What happened while building the network that a user should know about.
#[derive(Debug, Clone, Default)]
pub struct BuildNotes {
    /// Regions refused by the constraints, with the reason, for error messages.
    pub refused: BTreeMap<RegionId, String>,
    /// Pairs among allowed regions with a measurement but no price, or the reverse.
    pub unpriced_or_unmeasured: usize,
}

/// Builds the planning network for `req`: allowed regions, no links into the source or out of
/// the destination (they can never carry useful flow), and the route restriction applied.
pub fn build_network(
    catalog: &Catalog,
    req: &TransferRequest,
) -> Result<(Network, BuildNotes), PlanError> {
    build(catalog, req, false)
}

/// As [`build_network`], keeping the links out of the destination: in a broadcast a
/// destination may relay to the others.
pub(crate) fn build_network_relaying_at_dst(
    catalog: &Catalog,
    req: &TransferRequest,
) -> Result<(Network, BuildNotes), PlanError> {
    build(catalog, req, true)
}

fn build(
    catalog: &Catalog,
    req: &TransferRequest,
    links_out_of_dst: bool,
) -> Result<(Network, BuildNotes), PlanError> {
    if req.src == req.dst {
        return Err(PlanError::InvalidRequest(format!(
            "source and destination are both {}: there is no inter-region transfer to plan",
            req.src
        )));
    }
    let mut notes = BuildNotes::default();
    for endpoint in [&req.src, &req.dst] {
        if !catalog.regions().contains(endpoint) {
            return Err(PlanError::InvalidRequest(format!(
                "{endpoint} is not in the throughput grid, so no link from or to it is measured"
            )));
        }
        if let Some(why) = req.constraints.refusal(endpoint) {
            return Err(PlanError::EndpointRefused {
                region: endpoint.clone(),
                why,
            });
        }
    }
    if let RouteChoice::Via(relays) = &req.route {
        for r in relays {
            if let Some(why) = req.constraints.refusal(r) {
                return Err(PlanError::EndpointRefused {
                    region: r.clone(),
                    why: format!("relay given with --via, but {why}"),
                });
            }
            if !catalog.regions().contains(r) {
                return Err(PlanError::InvalidRequest(format!(
                    "relay {r} is not in the throughput grid"
                )));
            }
        }
    }

    let mut nodes = Vec::new();
    let mut index = BTreeMap::new();
    for region in catalog.regions() {
        if let Some(why) = req.constraints.refusal(region) {
            notes.refused.insert(region.clone(), why);
            continue;
        }
        let Some(vm) = catalog.gateway_vm(region) else {
            notes
                .refused
                .insert(region.clone(), "the catalog has no VM price for it".into());
            continue;
        };
        let (vm_price, vm_price_source) = match req.config.vm_price_override {
            Some(p) => (p, VmPriceSource::UserOverride),
            None => (vm.price, vm.source),
        };
        index.insert(region.clone(), nodes.len());
        nodes.push(Node {
            region: region.clone(),
            vm_price,
            vm_price_source,
            egress_cap: vm.egress_cap,
            ingress_cap: vm.ingress_cap,
        });
    }
    let src = *index.get(&req.src).ok_or_else(|| {
        PlanError::InvalidRequest(format!("{} has no VM price in the catalog", req.src))
    })?;
    let dst = *index.get(&req.dst).ok_or_else(|| {
        PlanError::InvalidRequest(format!("{} has no VM price in the catalog", req.dst))
    })?;

    let allowed_pairs: Option<BTreeSet<(usize, usize)>> = match &req.route {
        RouteChoice::Auto => None,
        RouteChoice::Direct => Some([(src, dst)].into()),
        RouteChoice::Via(relays) => {
            let mut chain = vec![src];
            chain.extend(relays.iter().map(|r| index[r]));
            chain.push(dst);
            Some(chain.windows(2).map(|w| (w[0], w[1])).collect())
        }
    };

    let mut links = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate() {
            if i == j || j == src || (i == dst && !links_out_of_dst) {
                continue;
            }
            if let Some(pairs) = &allowed_pairs
                && !pairs.contains(&(i, j))
            {
                continue;
            }
            match (
                catalog.throughput(&a.region, &b.region),
                catalog.egress_price(&a.region, &b.region),
            ) {
                (Some(t), Some(price)) if t.gbps.0 > 0.0 => links.push(Link {
                    src: i,
                    dst: j,
                    gbps: t.gbps,
                    measured_connections: t.connections.max(1),
                    price,
                }),
                (None, None) => {}
                _ => notes.unpriced_or_unmeasured += 1,
            }
        }
    }
    let network = Network {
        nodes,
        links,
        src,
        dst,
        max_vms_per_region: req.config.max_vms_per_region,
        max_connections_per_vm: req.config.max_connections_per_vm,
        vm_overhead_h: req.config.vm_overhead_s / 3600.0,
    };
    Ok((network, notes))
}
