//! Planning again as a streamed listing shows more of the copy's volume.
//!
//! A copy that starts before its listing ends is planned on what the listing had shown (the
//! look): a lower bound of its volume. As the listing goes on, the bound grows, and the plan it
//! would make may differ (more VMs, an overlay path that pays only for many bytes, a deadline
//! that needs more rate). [`Milestones`] says when to plan again: each time the bytes listed
//! have doubled since the last plan, and once more when the listing ends (the exact volume),
//! so a copy of any size plans again at most `log2(volume)` times. [`changes`] says what a new
//! plan changes in a running copy.
//!
//! A refinement only ever adds capacity or moves to a different route, never merely shrinks:
//! the volume to go is itself an estimate (what is listed and not yet landed), so a plan for
//! fewer VMs is not trusted to let running ones go. Routes the new plan leaves out stop taking
//! chunks only when it builds others in their place.
//!
//! Pure: no IO, no clock.

use super::topology::{AgentSlot, Topology};

/// When to plan again, from the bytes listed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestones {
    /// Bytes listed when the route was last planned.
    planned_on: u64,
    /// The listing ended and was planned on: nothing more to learn.
    closed: bool,
}

impl Milestones {
    /// Milestones after a first plan made on `planned_on` listed bytes.
    pub fn new(planned_on: u64) -> Self {
        Milestones {
            planned_on,
            closed: false,
        }
    }

    /// Whether to plan again now that `listed` bytes are listed (and the listing has ended,
    /// or not); when it says so, the next milestone starts from `listed`.
    pub fn due(&mut self, listed: u64, listing_ended: bool) -> bool {
        if self.closed {
            return false;
        }
        let due = if listing_ended {
            self.closed = true;
            listed > self.planned_on
        } else {
            listed > self.planned_on && listed >= self.planned_on.saturating_mul(2)
        };
        if due {
            self.planned_on = listed;
        }
        due
    }

    /// Bytes listed when the route was last planned.
    pub fn planned_on(&self) -> u64 {
        self.planned_on
    }
}

/// A running route, as [`changes`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRoute {
    /// Its agents' slots, source to sink.
    pub slots: Vec<AgentSlot>,
    /// It still carries chunks (its agents live).
    pub alive: bool,
    /// An earlier refinement stopped giving it chunks.
    pub drained: bool,
}

impl RunningRoute {
    fn taking(&self) -> bool {
        self.alive && !self.drained
    }
}

/// What a new plan changes in a running copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Agents to launch (slots no running agent fills), each with its roles.
    pub launch: Vec<NewAgent>,
    /// Routes to build: slots source to sink, connections per hop.
    pub build: Vec<(Vec<AgentSlot>, Vec<u32>)>,
    /// Indices (into the running routes given) of drained routes to give chunks again.
    pub undrain: Vec<usize>,
    /// Indices (into the running routes given) of routes to stop giving chunks to.
    pub drain: Vec<usize>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.launch.is_empty()
            && self.build.is_empty()
            && self.undrain.is_empty()
            && self.drain.is_empty()
    }
}

/// An agent a new plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub slot: AgentSlot,
    /// It reads the source (first on a new route).
    pub source: bool,
    /// It writes the destination (last on a new route).
    pub sink: bool,
}

/// What moving from the running routes (over live agents filling `running_agents`) to `plan`
/// takes: the plan's routes no taking route already follows are given chunks again if a live
/// drained route follows them, or else built (launching the slots no running agent fills);
/// when any is, the taking routes the plan does not have are drained. A plan that only drops
/// routes changes nothing (see the module's note).
pub fn changes(running: &[RunningRoute], running_agents: &[AgentSlot], plan: &Topology) -> Changes {
    let planned: Vec<Vec<AgentSlot>> = plan
        .routes
        .iter()
        .map(|r| r.agents.iter().map(|&a| plan.agents[a].clone()).collect())
        .collect();
    let mut out = Changes::default();
    for (slots, route) in planned.iter().zip(&plan.routes) {
        if running.iter().any(|r| r.taking() && &r.slots == slots) {
            continue;
        }
        if let Some(i) = running
            .iter()
            .position(|r| r.alive && r.drained && &r.slots == slots)
        {
            out.undrain.push(i);
            continue;
        }
        let last = slots.len() - 1;
        for (i, slot) in slots.iter().enumerate() {
            if running_agents.contains(slot) {
                continue;
            }
            match out.launch.iter_mut().find(|a| &a.slot == slot) {
                Some(a) => {
                    a.source |= i == 0;
                    a.sink |= i == last;
                }
                None => out.launch.push(NewAgent {
                    slot: slot.clone(),
                    source: i == 0,
                    sink: i == last,
                }),
            }
        }
        out.build.push((slots.clone(), route.connections.clone()));
    }
    if !out.build.is_empty() || !out.undrain.is_empty() {
        out.drain = running
            .iter()
            .enumerate()
            .filter(|(_, r)| r.taking() && !planned.contains(&r.slots))
            .map(|(i, _)| i)
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::topology::RouteSpec;
    use super::*;

    fn slot(region: &str, index: u32) -> AgentSlot {
        AgentSlot {
            region: region.into(),
            index,
        }
    }

    /// A topology of `routes`, each a chain of (region, index), with `c` connections per hop.
    fn topology(routes: &[&[(&str, u32)]], c: u32) -> Topology {
        let mut t = Topology::default();
        for chain in routes {
            let agents = chain
                .iter()
                .map(|&(r, i)| {
                    let s = slot(r, i);
                    match t.agents.iter().position(|a| *a == s) {
                        Some(p) => p,
                        None => {
                            t.agents.push(s);
                            t.agents.len() - 1
                        }
                    }
                })
                .collect::<Vec<_>>();
            let hops = agents.len() - 1;
            t.routes.push(RouteSpec::chain(agents, vec![c; hops], 1.0));
        }
        t
    }

    fn running(t: &Topology) -> (Vec<RunningRoute>, Vec<AgentSlot>) {
        let routes = t
            .routes
            .iter()
            .map(|r| RunningRoute {
                slots: r.agents.iter().map(|&a| t.agents[a].clone()).collect(),
                alive: true,
                drained: false,
            })
            .collect();
        (routes, t.agents.clone())
    }

    #[test]
    fn plans_again_each_time_the_listing_doubles_and_once_at_its_end() {
        let mut m = Milestones::new(100);
        assert!(!m.due(150, false));
        assert!(m.due(200, false));
        assert_eq!(m.planned_on(), 200);
        assert!(!m.due(399, false));
        assert!(m.due(1000, false));
        // The end: planned once more on the exact volume, then never again.
        assert!(m.due(1500, true));
        assert!(!m.due(1500, true));
        assert!(!m.due(10_000, false));
    }

    #[test]
    fn a_listing_that_ends_where_it_was_planned_is_not_planned_again() {
        let mut m = Milestones::new(100);
        assert!(!m.due(100, true));
        assert!(!m.due(400, false));
        // A look that saw no bytes plans again on the first bytes listed.
        let mut empty = Milestones::new(0);
        assert!(empty.due(1, false));
    }

    #[test]
    fn the_same_plan_changes_nothing() {
        let t = topology(&[&[("a", 0), ("b", 0)]], 8);
        let (routes, agents) = running(&t);
        assert!(changes(&routes, &agents, &t.with_connections(4)).is_empty());
    }

    #[test]
    fn an_overlay_path_is_built_beside_the_direct_one_it_replaces() {
        let direct = topology(&[&[("a", 0), ("b", 0)]], 8);
        let (routes, agents) = running(&direct);
        let overlay = topology(&[&[("a", 0), ("r", 0), ("b", 0)]], 4);
        let c = changes(&routes, &agents, &overlay);
        assert_eq!(
            c.launch,
            vec![NewAgent {
                slot: slot("r", 0),
                source: false,
                sink: false
            }]
        );
        assert_eq!(
            c.build,
            vec![(vec![slot("a", 0), slot("r", 0), slot("b", 0)], vec![4, 4])]
        );
        assert_eq!(c.drain, vec![0], "the direct route stops taking chunks");
    }

    #[test]
    fn more_vms_add_routes_and_keep_the_running_ones() {
        let one = topology(&[&[("a", 0), ("b", 0)]], 8);
        let (routes, agents) = running(&one);
        let two = topology(&[&[("a", 0), ("b", 0)], &[("a", 1), ("b", 1)]], 8);
        let c = changes(&routes, &agents, &two);
        assert_eq!(
            c.launch,
            vec![
                NewAgent {
                    slot: slot("a", 1),
                    source: true,
                    sink: false
                },
                NewAgent {
                    slot: slot("b", 1),
                    source: false,
                    sink: true
                }
            ]
        );
        assert_eq!(c.build.len(), 1);
        assert!(c.drain.is_empty());
    }

    #[test]
    fn a_plan_that_only_needs_less_drains_nothing() {
        let two = topology(&[&[("a", 0), ("b", 0)], &[("a", 0), ("r", 0), ("b", 0)]], 8);
        let (routes, agents) = running(&two);
        let one = topology(&[&[("a", 0), ("b", 0)]], 8);
        assert!(changes(&routes, &agents, &one).is_empty());
    }

    #[test]
    fn a_drained_route_planned_again_takes_chunks_again() {
        let direct = topology(&[&[("a", 0), ("b", 0)]], 8);
        let overlay = topology(&[&[("a", 0), ("r", 0), ("b", 0)]], 8);
        let (mut routes, mut agents) = running(&direct);
        // The overlay was built and the direct route drained; now the direct one is back.
        routes[0].drained = true;
        routes.push(running(&overlay).0.remove(0));
        agents.push(slot("r", 0));
        let c = changes(&routes, &agents, &direct);
        assert_eq!(c.undrain, vec![0]);
        assert!(c.build.is_empty() && c.launch.is_empty());
        assert_eq!(c.drain, vec![1]);
    }

    #[test]
    fn a_dead_route_planned_again_is_built_anew() {
        let t = topology(&[&[("a", 0), ("b", 0)]], 8);
        let (mut routes, agents) = running(&t);
        routes[0].alive = false;
        let c = changes(&routes, &agents[..1], &t);
        assert_eq!(c.launch.len(), 1, "its dead sink is launched again");
        assert_eq!(c.build.len(), 1);
        assert!(c.drain.is_empty());
    }
}
