//! From a plan to agents and routes: which agents run where, and which chain of agents each
//! chunk may travel.
//!
//! The planner speaks in regions: VMs per region, Gbps and connections per region pair, and the
//! flow decomposed into region paths. The data plane needs concrete chains of agents. A
//! *route* is one such chain (a source agent, relay agents, a sink agent), with connections per
//! hop. Every relay listener serves exactly one route, so relays need no routing table and the
//! gateway knows which chunks a dead agent may have held: those in flight on its routes.
//!
//! Pure: no IO. Routes are made so that every planned agent carries traffic: as many routes as
//! the busiest region has agents, shared among the planned paths by their Gbps (every path at
//! least one), each region's agents assigned round-robin to the routes through it, and each
//! planned edge's connections split among its routes by their share of its Gbps.

use std::collections::BTreeMap;

use skyx_planner::RoutePlan;
use skyx_planner::broadcast::MulticastPlan;

/// Connections from a relay to a sink on its own agent (a destination that also relays).
pub const LOOPBACK_CONNECTIONS: u32 = 4;

/// One agent to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlot {
    /// The region label (`aws:us-east-1`, or `local`).
    pub region: String,
    /// Its index among the region's agents.
    pub index: u32,
}

impl AgentSlot {
    /// A name for logs, process lists and the gateway's messages.
    pub fn name(&self) -> String {
        format!("{}#{}", self.region, self.index)
    }
}

/// One way chunks travel: a chain of agents, or for a broadcast a tree whose relays fork.
///
/// Its *nodes* are listed parents first: node 0 reads the source, every other node receives
/// from its parent (a listener of its own), and the nodes in `sinks` write a destination. A
/// sink node has no children: a destination that also relays is a relay node with a child
/// sink node on the same agent.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Each node's agent (an index into [`Topology::agents`]); on a chain: source, relays...,
    /// sink.
    pub agents: Vec<usize>,
    /// Connections on the link into each node but the first (`agents.len() - 1` entries).
    pub connections: Vec<u32>,
    /// Planned wire Gbps on this route (for the summary; dispatch adapts to what routes do).
    pub gbps: f64,
    /// The parent of each node but the first (`agents.len() - 1` entries, each smaller than
    /// its node's index).
    pub parents: Vec<usize>,
    /// (node, destination) of each node that writes a destination.
    pub sinks: Vec<(usize, usize)>,
}

impl RouteSpec {
    /// The chain `agents` (source first, sink last, writing the one destination).
    pub fn chain(agents: Vec<usize>, connections: Vec<u32>, gbps: f64) -> RouteSpec {
        let n = agents.len();
        assert!(n >= 2, "a route has a source and a sink");
        RouteSpec {
            agents,
            connections,
            gbps,
            parents: (0..n - 1).collect(),
            sinks: vec![(n - 1, 0)],
        }
    }

    /// The children of node `node`.
    pub fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        (1..self.agents.len()).filter(move |&i| self.parents[i - 1] == node)
    }

    /// The destinations written at or below node `node`.
    pub fn destinations_below(&self, node: usize) -> Vec<usize> {
        let mut below = vec![false; self.agents.len()];
        below[node] = true;
        for i in node + 1..self.agents.len() {
            below[i] = below[self.parents[i - 1]];
        }
        self.sinks
            .iter()
            .filter(|&&(n, _)| below[n])
            .map(|&(_, d)| d)
            .collect()
    }

    /// Whether it is well formed: parents before children, sinks at leaves.
    fn check(&self) -> Result<(), String> {
        let n = self.agents.len();
        if n < 2 || self.connections.len() != n - 1 || self.parents.len() != n - 1 {
            return Err(format!("a route of {n} nodes needs {} links", n.max(1) - 1));
        }
        if let Some(i) = (1..n).find(|&i| self.parents[i - 1] >= i) {
            return Err(format!("node {i} comes before its parent"));
        }
        if self.sinks.is_empty() {
            return Err("a route writes no destination".into());
        }
        if let Some(&(node, _)) = self
            .sinks
            .iter()
            .find(|&&(node, _)| node == 0 || node >= n || self.children(node).next().is_some())
        {
            return Err(format!("sink node {node} is not a leaf"));
        }
        // A leaf that writes nothing would be wired as a sink with no destination.
        let writes = |i: usize| self.sinks.iter().any(|&(node, _)| node == i);
        if let Some(leaf) = (1..n).find(|&i| self.children(i).next().is_none() && !writes(i)) {
            return Err(format!("node {leaf} leads nowhere and writes nothing"));
        }
        Ok(())
    }
}

/// Agents and the routes through them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    pub agents: Vec<AgentSlot>,
    pub routes: Vec<RouteSpec>,
}

impl Topology {
    /// How many distinct agents read the source (first on a route) and write a destination.
    pub fn ends(&self) -> (usize, usize) {
        (self.sources().len(), self.sinks().len())
    }

    /// One source agent in `src`, one sink agent in `dst`, one route between them.
    pub fn direct(src: &str, dst: &str, connections: u32) -> Topology {
        Topology {
            agents: vec![
                AgentSlot {
                    region: src.to_string(),
                    index: 0,
                },
                AgentSlot {
                    region: dst.to_string(),
                    // Two agents of one region (a copy within it) need distinct names.
                    index: u32::from(src == dst),
                },
            ],
            routes: vec![RouteSpec::chain(vec![0, 1], vec![connections.max(1)], 0.0)],
        }
    }

    /// One source agent in `src` forking to one sink agent per destination of `dsts` (a
    /// broadcast between ends the planner does not know: local directories, custom
    /// endpoints).
    pub fn star(src: &str, dsts: &[String], connections: u32) -> Topology {
        let mut agents = vec![AgentSlot {
            region: src.to_string(),
            index: 0,
        }];
        for (d, region) in dsts.iter().enumerate() {
            agents.push(AgentSlot {
                region: region.clone(),
                // Agents of one region need distinct names.
                index: 1 + d as u32,
            });
        }
        let n = agents.len();
        Topology {
            routes: vec![RouteSpec {
                agents: (0..n).collect(),
                connections: vec![connections.max(1); n - 1],
                gbps: 0.0,
                parents: vec![0; n - 1],
                sinks: (1..n).map(|node| (node, node - 1)).collect(),
            }],
            agents,
        }
    }

    /// Whether every route is well formed and no agent writes two destinations (an agent
    /// holds one destination store).
    pub fn check(&self) -> Result<(), String> {
        let mut writes: BTreeMap<usize, usize> = BTreeMap::new();
        for (r, route) in self.routes.iter().enumerate() {
            route.check().map_err(|e| format!("route {r}: {e}"))?;
            if let Some(&a) = route.agents.iter().find(|&&a| a >= self.agents.len()) {
                return Err(format!("route {r}: agent {a} does not exist"));
            }
            for &(node, dest) in &route.sinks {
                let agent = route.agents[node];
                if *writes.entry(agent).or_insert(dest) != dest {
                    return Err(format!(
                        "agent {} writes two destinations",
                        self.agents[agent].name()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The destination agent `agent` writes, if it writes one.
    pub fn destination_of(&self, agent: usize) -> Option<usize> {
        self.routes.iter().find_map(|r| {
            r.sinks
                .iter()
                .find(|&&(node, _)| r.agents[node] == agent)
                .map(|&(_, d)| d)
        })
    }

    /// How many destinations the routes write (1 but for a broadcast).
    pub fn destinations(&self) -> usize {
        self.routes
            .iter()
            .flat_map(|r| r.sinks.iter().map(|&(_, d)| d + 1))
            .max()
            .unwrap_or(1)
    }

    /// The agents and routes that carry `plan`, with at most `max_connections` per hop of a
    /// route (an agent's connection budget).
    pub fn from_plan(plan: &RoutePlan, max_connections: u32) -> Topology {
        // Agents, region by region, in a stable order.
        let mut agents = Vec::new();
        let mut by_region: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (region, &count) in &plan.vms {
            for index in 0..count.max(1) {
                by_region
                    .entry(region.to_string())
                    .or_default()
                    .push(agents.len());
                agents.push(AgentSlot {
                    region: region.to_string(),
                    index,
                });
            }
        }
        let paths: Vec<(Vec<String>, f64)> = plan
            .paths
            .iter()
            .filter(|p| p.regions.len() >= 2)
            .map(|p| (p.regions.iter().map(|r| r.to_string()).collect(), p.gbps))
            .collect();
        let busiest = by_region.values().map(Vec::len).max().unwrap_or(1);
        let counts = apportion(
            &paths.iter().map(|(_, g)| *g).collect::<Vec<_>>(),
            busiest.max(paths.len()),
        );
        // Edge totals, to split connections by Gbps share.
        let edge = |a: &str, b: &str| {
            plan.edges
                .iter()
                .find(|e| e.src.to_string() == a && e.dst.to_string() == b)
        };
        let mut next_agent: BTreeMap<String, usize> = BTreeMap::new();
        let mut routes = Vec::new();
        for ((regions, gbps), n) in paths.iter().zip(counts) {
            let per_route = gbps / n as f64;
            for _ in 0..n {
                let chain: Vec<usize> = regions
                    .iter()
                    .map(|r| {
                        let pool = by_region.get(r).map(Vec::as_slice).unwrap_or(&[]);
                        let k = next_agent.entry(r.clone()).or_default();
                        let agent = if pool.is_empty() {
                            // A path through a region without VMs cannot come from the planner;
                            // give it one so the route still has an agent.
                            by_region.entry(r.clone()).or_default().push(agents.len());
                            agents.push(AgentSlot {
                                region: r.clone(),
                                index: 0,
                            });
                            agents.len() - 1
                        } else {
                            pool[*k % pool.len()]
                        };
                        *k += 1;
                        agent
                    })
                    .collect();
                let connections = regions
                    .windows(2)
                    .map(|w| match edge(&w[0], &w[1]) {
                        Some(e) if e.gbps > 0.0 => ((f64::from(e.connections) * per_route / e.gbps)
                            .ceil() as u32)
                            .clamp(1, max_connections.max(1)),
                        _ => 1,
                    })
                    .collect();
                routes.push(RouteSpec::chain(chain, connections, per_route));
            }
        }
        Topology { agents, routes }
    }

    /// The agents and tree routes that carry the broadcast `plan` from `src` to `dsts`
    /// (destination `i` is `dsts[i]`): one route per partition tree, each region's agents
    /// taken round-robin by the trees through it, and each link's connections split among
    /// its trees by their share of the data, at most `max_connections` per link of a route.
    /// Where a destination also relays, its agent forks to its own sink over a loopback link
    /// of [`LOOPBACK_CONNECTIONS`].
    pub fn from_broadcast(
        plan: &MulticastPlan,
        src: &str,
        dsts: &[String],
        max_connections: u32,
    ) -> Result<Topology, String> {
        let mut agents = Vec::new();
        let mut by_region: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut pool = |region: &str, agents: &mut Vec<AgentSlot>| -> Vec<usize> {
            let count = plan
                .vms
                .iter()
                .find(|(r, _)| r.to_string() == region)
                .map_or(1, |(_, &n)| n.max(1));
            by_region
                .entry(region.to_string())
                .or_insert_with(|| {
                    (0..count)
                        .map(|index| {
                            agents.push(AgentSlot {
                                region: region.to_string(),
                                index,
                            });
                            agents.len() - 1
                        })
                        .collect()
                })
                .clone()
        };
        // Each link's total share, to split its connections among the trees crossing it.
        let mut link_share: BTreeMap<(String, String), f64> = BTreeMap::new();
        for t in &plan.trees {
            for (a, b) in &t.hops {
                *link_share
                    .entry((a.to_string(), b.to_string()))
                    .or_default() += t.share;
            }
        }
        let mut routes = Vec::new();
        for (k, tree) in plan.trees.iter().enumerate() {
            let hops: Vec<(String, String)> = tree
                .hops
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let mut agent_in = |region: &str, agents: &mut Vec<AgentSlot>| {
                let p = pool(region, agents);
                p[k % p.len()]
            };
            let mut route = RouteSpec {
                agents: vec![agent_in(src, &mut agents)],
                connections: Vec::new(),
                gbps: plan.throughput_gbps * tree.share,
                parents: Vec::new(),
                sinks: Vec::new(),
            };
            // Breadth first from the source, so parents come before children.
            let mut frontier = vec![(src.to_string(), 0usize)];
            let mut seen = vec![src.to_string()];
            while let Some((region, node)) = frontier.pop() {
                for (a, b) in hops.iter().filter(|(a, _)| *a == region) {
                    if seen.contains(b) {
                        return Err(format!("tree {k} reaches {b} twice"));
                    }
                    seen.push(b.clone());
                    let edge = plan
                        .edges
                        .iter()
                        .find(|e| e.src.to_string() == *a && e.dst.to_string() == *b);
                    let share = tree.share / link_share[&(a.clone(), b.clone())].max(1e-12);
                    let connections = edge.map_or(1, |e| {
                        ((f64::from(e.connections) * share).ceil() as u32)
                            .clamp(1, max_connections.max(1))
                    });
                    route.agents.push(agent_in(b, &mut agents));
                    route.connections.push(connections);
                    route.parents.push(node);
                    frontier.insert(0, (b.clone(), route.agents.len() - 1));
                }
            }
            // Destinations: a leaf writes; one that relays gets a sink node of its own.
            for (d, dst) in dsts.iter().enumerate() {
                let Some(node) = (0..route.agents.len())
                    .find(|&i| i > 0 && agents[route.agents[i]].region == *dst)
                else {
                    return Err(format!("tree {k} does not reach {dst}"));
                };
                if route.children(node).next().is_some() {
                    route.agents.push(route.agents[node]);
                    route.connections.push(LOOPBACK_CONNECTIONS);
                    route.parents.push(node);
                    route.sinks.push((route.agents.len() - 1, d));
                } else {
                    route.sinks.push((node, d));
                }
            }
            routes.push(route);
        }
        let t = Topology { agents, routes };
        t.check()?;
        Ok(t)
    }

    /// Every hop of every route uses exactly `n` connections.
    pub fn with_connections(mut self, n: u32) -> Topology {
        for r in &mut self.routes {
            r.connections.iter_mut().for_each(|c| *c = n.max(1));
        }
        self
    }

    /// Indices of the agents that are sources (first on some route).
    pub fn sources(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.routes.iter().map(|r| r.agents[0]).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Indices of the agents that write a destination (a sink node of some route).
    pub fn sinks(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .routes
            .iter()
            .flat_map(|r| r.sinks.iter().map(|&(node, _)| r.agents[node]))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Splits `total` whole routes among weights (largest remainder), each at least one.
fn apportion(weights: &[f64], total: usize) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let total = total.max(weights.len());
    let sum: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    if sum <= 0.0 {
        let mut out = vec![total / weights.len(); weights.len()];
        for slot in out.iter_mut().take(total % weights.len()) {
            *slot += 1;
        }
        return out;
    }
    // One each first, then the rest by share.
    let rest = total - weights.len();
    let exact: Vec<f64> = weights
        .iter()
        .map(|w| w.max(0.0) / sum * rest as f64)
        .collect();
    let mut out: Vec<usize> = exact.iter().map(|e| 1 + e.floor() as usize).collect();
    let mut left = total - out.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .partial_cmp(&(exact[a] - exact[a].floor()))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn ends_count_the_distinct_agents_that_read_and_write() {
        let one = Topology::direct("aws:us-east-1", "aws:eu-west-1", 8);
        assert_eq!(one.ends(), (1, 1));
        assert_eq!(Topology::default().ends(), (0, 0));
    }

    use super::*;

    #[test]
    fn apportion_gives_every_path_a_route_and_the_rest_by_share() {
        assert_eq!(apportion(&[3.0, 1.0], 2), vec![1, 1]);
        assert_eq!(apportion(&[3.0, 1.0], 6), vec![4, 2]);
        assert_eq!(apportion(&[1.0], 8), vec![8]);
        assert_eq!(apportion(&[0.0, 0.0], 3), vec![2, 1]);
        let v = apportion(&[5.0, 3.0, 2.0], 10);
        assert_eq!(v.iter().sum::<usize>(), 10);
        assert!(v.iter().all(|&n| n >= 1));
    }

    #[test]
    fn a_broadcast_plan_becomes_one_tree_route_per_partition_writing_every_destination() {
        use skyx_planner::{BroadcastRequest, Objective};
        let catalog = skyx_catalog::Catalog::builtin();
        let id = |r: &str| catalog.resolve_region(r).unwrap();
        let dsts = [
            "azure:southafricanorth",
            "azure:brazilsouth",
            "gcp:asia-southeast1-a",
        ];
        let mut req = BroadcastRequest::new(
            id("aws:us-east-1"),
            dsts.iter().map(|d| id(d)).collect(),
            10_000_000_000,
            Objective::MinCost {
                throughput_floor: skyx_catalog::Gbps(1.0),
            },
        );
        req.config.max_vms_per_region = 2;
        let plan = skyx_planner::plan_broadcast(&catalog, &req).unwrap();
        let names: Vec<String> = dsts.iter().map(|d| d.to_string()).collect();
        let t = Topology::from_broadcast(&plan.chosen, "aws:us-east-1", &names, 64).unwrap();
        assert_eq!(t.routes.len(), plan.chosen.trees.len());
        assert_eq!(t.destinations(), 3);
        for (route, tree) in t.routes.iter().zip(&plan.chosen.trees) {
            route.check().unwrap();
            assert_eq!(t.agents[route.agents[0]].region, "aws:us-east-1");
            // Each destination written once, by an agent of its region.
            let mut written: Vec<usize> = route.sinks.iter().map(|&(_, d)| d).collect();
            written.sort_unstable();
            assert_eq!(written, vec![0, 1, 2]);
            for &(node, d) in &route.sinks {
                assert_eq!(t.agents[route.agents[node]].region, dsts[d]);
            }
            // Every link is a hop of the tree, or a relaying destination's loopback to its
            // own sink.
            for node in 1..route.agents.len() {
                let parent = route.agents[route.parents[node - 1]];
                let (a, b) = (
                    &t.agents[parent].region,
                    &t.agents[route.agents[node]].region,
                );
                let hop = tree
                    .hops
                    .iter()
                    .any(|(x, y)| x.to_string() == *a && y.to_string() == *b);
                assert!(
                    hop || parent == route.agents[node],
                    "{a} -> {b} is not in {tree:?}"
                );
                assert!(route.connections[node - 1] >= 1);
            }
        }
        // No agent writes two destinations, whatever the trees share.
        t.check().unwrap();
    }

    #[test]
    fn a_route_with_a_leaf_that_writes_nothing_is_refused() {
        let mut t = Topology::star("local", &["local".into(), "local".into()], 2);
        t.routes[0].sinks.pop();
        assert!(t.check().unwrap_err().contains("leads nowhere"));
    }

    #[test]
    fn direct_is_one_route_between_two_agents() {
        let t = Topology::direct("local", "local", 4);
        assert_eq!(t.agents.len(), 2);
        assert_eq!(t.routes[0].agents, vec![0, 1]);
        assert_eq!(t.routes[0].connections, vec![4]);
        assert_eq!(t.sources(), vec![0]);
        assert_eq!(t.sinks(), vec![1]);
    }
}
