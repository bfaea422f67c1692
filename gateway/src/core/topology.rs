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

/// One chain of agents.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Indices into [`Topology::agents`]: source, relays..., sink.
    pub agents: Vec<usize>,
    /// Connections on each hop (`agents.len() - 1` entries).
    pub connections: Vec<u32>,
    /// Planned wire Gbps on this route (for the summary; dispatch adapts to what routes do).
    pub gbps: f64,
}

/// Agents and the routes through them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    pub agents: Vec<AgentSlot>,
    pub routes: Vec<RouteSpec>,
}

impl Topology {
    /// How many distinct agents read the source (first on a route) and write the
    /// destination (last on a route).
    pub fn ends(&self) -> (usize, usize) {
        let firsts: std::collections::BTreeSet<usize> = self
            .routes
            .iter()
            .filter_map(|r| r.agents.first().copied())
            .collect();
        let lasts: std::collections::BTreeSet<usize> = self
            .routes
            .iter()
            .filter_map(|r| r.agents.last().copied())
            .collect();
        (firsts.len(), lasts.len())
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
            routes: vec![RouteSpec {
                agents: vec![0, 1],
                connections: vec![connections.max(1)],
                gbps: 0.0,
            }],
        }
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
                routes.push(RouteSpec {
                    agents: chain,
                    connections,
                    gbps: per_route,
                });
            }
        }
        Topology { agents, routes }
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

    /// Indices of the agents that are sinks (last on some route).
    pub fn sinks(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .routes
            .iter()
            .map(|r| *r.agents.last().expect("a route has agents"))
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
    fn direct_is_one_route_between_two_agents() {
        let t = Topology::direct("local", "local", 4);
        assert_eq!(t.agents.len(), 2);
        assert_eq!(t.routes[0].agents, vec![0, 1]);
        assert_eq!(t.routes[0].connections, vec![4]);
        assert_eq!(t.sources(), vec![0]);
        assert_eq!(t.sinks(), vec![1]);
    }
}
