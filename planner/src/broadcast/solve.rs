//! The broadcast program: one source, several destinations, the data split into `P` equal
//! partitions, each following its own tree (Cloudcast's formulation, NSDI '24, with skyx's VM
//! and connection model).
//!
//! Per partition `p` and link `e`, `y[p][e]` ∈ {0, 1} says the partition crosses `e`; per
//! destination `d`, `x[p][d][e]` ∈ [0, 1] is the partition's path to `d` (a unit of flow from
//! the source to `d`, only over links with `y = 1`). A link carries `W/P · Σ_p y[p][e]` wire
//! Gbps: a partition crosses it once however many destinations lie behind it, because the
//! relay at its far end forks. VMs `n[v]` and connections `c[e]` are integers, with the
//! unicast model's per-VM caps and connection budgets.
//!
//! Cost of moving `V` wire-GB to every destination at `W` wire-Gbps: egress
//! `V/P · Σ_e price_e Σ_p y[p][e]` (independent of `W`), VMs `(V·8/W/3600 + O) · Σ n price`.
//! For a fixed `W` this is linear, so the program answers a throughput floor or a deadline.
//! The fastest trees within a cost cap make it bilinear (`y·W`); linearised with `W`'s upper
//! bound, branch and bound ran for minutes on a real-grid network, and a ladder of rates over
//! this program took 15-35 s a rung near capacity, so that objective is not offered.

use good_lp::solvers::microlp::MicroLpProblem;
use good_lp::{
    Constraint, Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable,
    variable,
};

use crate::PlanError;
use crate::network::Network;
use crate::solve::{FLOW_EPS, exact};

/// A broadcast routing: a tree per partition, with the VMs and connections that carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trees {
    /// Per partition, the indices (into `Network::links`) of its tree's links.
    pub trees: Vec<Vec<usize>>,
    /// Parallel connections per link (0 where no tree crosses it).
    pub connections: Vec<u32>,
    /// Agent VMs per node.
    pub vms: Vec<u32>,
    /// Wire Gbps every destination receives.
    pub wire_gbps: f64,
}

impl Trees {
    /// How many partitions cross each link.
    pub fn crossings(&self, net: &Network) -> Vec<u32> {
        let mut m = vec![0; net.links.len()];
        for tree in &self.trees {
            for &e in tree {
                m[e] += 1;
            }
        }
        m
    }

    /// Wire Gbps on each link.
    pub fn link_gbps(&self, net: &Network) -> Vec<f64> {
        let share = self.wire_gbps / self.trees.len() as f64;
        self.crossings(net)
            .into_iter()
            .map(|m| f64::from(m) * share)
            .collect()
    }

    /// The fewest whole connections per link that carry its load at this rate.
    pub fn fewest_connections(&self, net: &Network) -> Vec<u32> {
        net.links
            .iter()
            .zip(self.link_gbps(net))
            .map(|(l, g)| (g / l.gbps_per_connection() - 1e-9).ceil().max(0.0) as u32)
            .collect()
    }

    /// Egress dollars for `wire_gb` delivered to every destination.
    pub fn egress_usd(&self, net: &Network, wire_gb: f64) -> f64 {
        let per_partition = wire_gb / self.trees.len() as f64;
        self.crossings(net)
            .iter()
            .zip(&net.links)
            .map(|(m, l)| f64::from(*m) * per_partition * l.price.0)
            .sum()
    }

    /// VM dollars for `wire_gb` at this rate, overhead included.
    pub fn vm_usd(&self, net: &Network, wire_gb: f64) -> f64 {
        let hours = wire_gb * 8.0 / self.wire_gbps / 3600.0 + net.vm_overhead_h;
        net.nodes
            .iter()
            .zip(&self.vms)
            .map(|(node, n)| node.vm_price.0 * f64::from(*n) * hours)
            .sum()
    }
}

/// The variables of the program.
struct Model {
    vars: ProblemVariables,
    /// `y[p][e]`.
    y: Vec<Vec<Variable>>,
    /// `x[p][d][e]`.
    x: Vec<Vec<Vec<Variable>>>,
    n: Vec<Variable>,
    c: Vec<Variable>,
}

/// Whether the program's choices are whole (the real problem) or fractional (its LP
/// relaxation, solved to see which links matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrality {
    Whole,
    Relaxed,
}

impl Model {
    fn new(net: &Network, dsts: &[usize], partitions: usize, integrality: Integrality) -> Model {
        let whole = integrality == Integrality::Whole;
        let mut vars = ProblemVariables::new();
        let links = net.links.len();
        let y = (0..partitions)
            .map(|_| {
                (0..links)
                    .map(|_| {
                        let v = variable().min(0.0).max(1.0);
                        vars.add(if whole { v.integer() } else { v })
                    })
                    .collect()
            })
            .collect();
        let x = (0..partitions)
            .map(|_| {
                dsts.iter()
                    .map(|_| {
                        (0..links)
                            .map(|_| vars.add(variable().min(0.0).max(1.0)))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let bounded = |max: f64| {
            let v = variable().min(0.0).max(max);
            if whole { v.integer() } else { v }
        };
        let n = (0..net.nodes.len())
            .map(|_| vars.add(bounded(f64::from(net.max_vms_per_region))))
            .collect();
        let max_conn = f64::from(net.max_connections_per_vm) * f64::from(net.max_vms_per_region);
        let c = (0..links).map(|_| vars.add(bounded(max_conn))).collect();
        Model { vars, y, x, n, c }
    }

    /// Every partition reaches every destination over its own links; caps and budgets hold for
    /// the links' loads (`load[e]`, wire Gbps).
    fn constraints(&self, net: &Network, dsts: &[usize], load: &[Expression]) -> Vec<Constraint> {
        let mut cs = Vec::new();
        for (p, per_dst) in self.x.iter().enumerate() {
            for (j, x) in per_dst.iter().enumerate() {
                for node in 0..net.nodes.len() {
                    let out: Expression = net.out_links(node).map(|(e, _)| x[e]).sum();
                    let inn: Expression = net.in_links(node).map(|(e, _)| x[e]).sum();
                    let balance = if node == net.src {
                        1.0
                    } else if node == dsts[j] {
                        -1.0
                    } else {
                        0.0
                    };
                    cs.push((out - inn).eq(balance));
                }
                for (e, xe) in x.iter().enumerate() {
                    cs.push(Expression::from(*xe).leq(self.y[p][e]));
                }
            }
        }
        let k = f64::from(net.max_connections_per_vm);
        for node in 0..net.nodes.len() {
            let out: Expression = net.out_links(node).map(|(e, _)| load[e].clone()).sum();
            let inn: Expression = net.in_links(node).map(|(e, _)| load[e].clone()).sum();
            let n = self.n[node];
            cs.push(out.leq(net.nodes[node].egress_cap.0 * n));
            cs.push(inn.leq(net.nodes[node].ingress_cap.0 * n));
            let c_out: Expression = net.out_links(node).map(|(e, _)| self.c[e]).sum();
            let c_in: Expression = net.in_links(node).map(|(e, _)| self.c[e]).sum();
            cs.push(c_out.leq(k * n));
            cs.push(c_in.leq(k * n));
        }
        for (e, link) in net.links.iter().enumerate() {
            cs.push(load[e].clone().leq(link.gbps_per_connection() * self.c[e]));
        }
        for &end in std::iter::once(&net.src).chain(dsts) {
            cs.push(Expression::from(self.n[end]).geq(1.0));
        }
        cs
    }

    fn egress_per_gb(&self, net: &Network, partitions: usize) -> Expression {
        let share = 1.0 / partitions as f64;
        self.y
            .iter()
            .flat_map(|y| y.iter().zip(&net.links))
            .map(|(y, l)| share * l.price.0 * *y)
            .sum()
    }

    fn vm_per_hour(&self, net: &Network) -> Expression {
        net.nodes
            .iter()
            .zip(&self.n)
            .map(|(node, n)| node.vm_price.0 * *n)
            .sum()
    }

    /// A weight too small to trade against any price: no connection or path is kept that
    /// carries nothing.
    fn idle_penalty(&self) -> Expression {
        1e-7 * (self.c.iter().copied().sum::<Expression>()
            + self
                .x
                .iter()
                .flatten()
                .flatten()
                .copied()
                .sum::<Expression>())
    }
}

/// `None` for an infeasible program, else the failure.
fn failure(what: &str, e: ResolutionError) -> Result<Option<Trees>, PlanError> {
    match e {
        ResolutionError::Infeasible => Ok(None),
        other => Err(PlanError::Solver(format!("{what}: {other}"))),
    }
}

/// The cheapest trees carrying `wire_gbps` to every destination in `dsts` for `wire_gb`, with
/// the data in `partitions` equal parts. `Ok(None)` when no trees carry that rate.
pub fn min_cost_trees(
    net: &Network,
    dsts: &[usize],
    partitions: usize,
    wire_gbps: f64,
    wire_gb: f64,
) -> Result<Option<Trees>, PlanError> {
    let (m, problem) = min_cost_program(
        net,
        dsts,
        partitions,
        wire_gbps,
        wire_gb,
        Integrality::Whole,
    );
    match problem.solve() {
        Ok(sol) => trees_of(net, dsts, &m, &sol, wire_gbps).map(Some),
        Err(e) => failure("the cheapest broadcast trees", e),
    }
}

fn min_cost_program(
    net: &Network,
    dsts: &[usize],
    partitions: usize,
    wire_gbps: f64,
    wire_gb: f64,
    integrality: Integrality,
) -> (Model, MicroLpProblem) {
    let mut m = Model::new(net, dsts, partitions, integrality);
    let share = wire_gbps / partitions as f64;
    let load: Vec<Expression> = (0..net.links.len())
        .map(|e| m.y.iter().map(|y| share * y[e]).sum())
        .collect();
    let hours = wire_gb * 8.0 / wire_gbps / 3600.0 + net.vm_overhead_h;
    let objective =
        wire_gb * m.egress_per_gb(net, partitions) + hours * m.vm_per_hour(net) + m.idle_penalty();
    let vars = std::mem::take(&mut m.vars);
    let mut problem = vars.minimise(objective).using(exact);
    for c in m.constraints(net, dsts, &load) {
        problem = problem.with(c);
    }
    (m, problem)
}

/// The links the LP relaxation of the cheapest trees at `wire_gbps` routes over (fractional
/// trees, VMs and connections): the exact program then runs over these and a few more, a
/// network small enough for branch and bound. One partition suffices: the relaxation of
/// several is the same program.
pub fn relaxed_support(
    net: &Network,
    dsts: &[usize],
    wire_gbps: f64,
    wire_gb: f64,
) -> Result<Vec<bool>, PlanError> {
    let (m, problem) = min_cost_program(net, dsts, 1, wire_gbps, wire_gb, Integrality::Relaxed);
    match problem.solve() {
        Ok(sol) => Ok(m.y[0].iter().map(|y| sol.value(*y) > FLOW_EPS).collect()),
        Err(ResolutionError::Infeasible) => Ok(vec![false; net.links.len()]),
        Err(e) => Err(PlanError::Solver(format!("the broadcast relaxation: {e}"))),
    }
}

/// The solved trees: per partition, the links on the way from the source to a destination
/// (a link the program set but no destination needs is dropped), the fewest whole connections
/// that carry each link's load, and VMs only where a tree passes.
fn trees_of(
    net: &Network,
    dsts: &[usize],
    m: &Model,
    sol: &impl Solution,
    wire_gbps: f64,
) -> Result<Trees, PlanError> {
    let mut trees = Vec::new();
    for y in &m.y {
        let support: Vec<bool> = y.iter().map(|v| sol.value(*v) > 0.5).collect();
        trees.push(tree_within(net, dsts, &support).ok_or_else(|| {
            PlanError::Solver("a broadcast partition does not reach every destination".into())
        })?);
    }
    let mut solved = Trees {
        trees,
        connections: vec![0; net.links.len()],
        vms: m
            .n
            .iter()
            .map(|n| sol.value(*n).round().max(0.0) as u32)
            .collect(),
        wire_gbps,
    };
    solved.connections = solved.fewest_connections(net);
    let touched = |node: usize| {
        solved
            .trees
            .iter()
            .flatten()
            .any(|&e| net.links[e].src == node || net.links[e].dst == node)
    };
    let keep: Vec<bool> = (0..net.nodes.len())
        .map(|v| v == net.src || dsts.contains(&v) || touched(v))
        .collect();
    for (v, n) in solved.vms.iter_mut().enumerate() {
        if !keep[v] {
            *n = 0;
        }
    }
    Ok(solved)
}

/// `trees` as fast as their VMs carry them: the same trees and VMs, the rate raised until a
/// VM's cap or connection budget binds (connections re-chosen whole for the rate). Faster
/// only bills fewer VM hours; egress is per byte.
pub fn as_fast_as_their_vms(net: &Network, trees: Trees) -> Trees {
    let fits = |rate: f64| -> Option<Trees> {
        let candidate = Trees {
            wire_gbps: rate,
            ..trees.clone()
        };
        let connections = candidate.fewest_connections(net);
        let candidate = Trees {
            connections,
            ..candidate
        };
        // The trees are unchanged; only caps and budgets can break.
        budget_violation(net, &candidate)
            .is_none()
            .then_some(candidate)
    };
    let Some(mut best) = fits(trees.wire_gbps) else {
        return trees;
    };
    // Every partition leaves the source: no rate past its VMs' egress fits.
    let mut hi =
        (net.nodes[net.src].egress_cap.0 * f64::from(trees.vms[net.src])).max(trees.wire_gbps);
    let mut lo = trees.wire_gbps;
    for _ in 0..50 {
        if hi - lo <= lo * 1e-6 {
            break;
        }
        let mid = (lo + hi) / 2.0;
        match fits(mid) {
            Some(t) => {
                lo = mid;
                best = t;
            }
            None => hi = mid,
        }
    }
    best
}

/// The first cap or budget `trees`' loads break, if any.
fn budget_violation(net: &Network, trees: &Trees) -> Option<String> {
    let load = trees.link_gbps(net);
    let tol = 1e-6 * (1.0 + trees.wire_gbps);
    let k = f64::from(net.max_connections_per_vm);
    for (v, node) in net.nodes.iter().enumerate() {
        let n = trees.vms[v];
        let nf = f64::from(n);
        let out: f64 = net.out_links(v).map(|(e, _)| load[e]).sum();
        let inn: f64 = net.in_links(v).map(|(e, _)| load[e]).sum();
        let c_out: u32 = net.out_links(v).map(|(e, _)| trees.connections[e]).sum();
        let c_in: u32 = net.in_links(v).map(|(e, _)| trees.connections[e]).sum();
        let name = &node.region;
        if n > net.max_vms_per_region {
            return Some(format!("{name}: {n} VMs exceed the limit"));
        }
        if out > node.egress_cap.0 * nf + tol || inn > node.ingress_cap.0 * nf + tol {
            return Some(format!(
                "{name}: {out} Gbps out / {inn} in over {n} VMs' caps"
            ));
        }
        if f64::from(c_out) > k * nf || f64::from(c_in) > k * nf {
            return Some(format!(
                "{name}: {c_out} out / {c_in} in connections over {n} VMs"
            ));
        }
    }
    for (e, link) in net.links.iter().enumerate() {
        if load[e] > f64::from(trees.connections[e]) * link.gbps_per_connection() + tol {
            return Some(format!("link {e}: {} Gbps needs more connections", load[e]));
        }
    }
    None
}

/// A tree within `support` (a flag per link) from the source reaching every destination: the
/// first path found to each, breadth first. `None` when a destination is out of reach.
pub fn tree_within(net: &Network, dsts: &[usize], support: &[bool]) -> Option<Vec<usize>> {
    let mut parent: Vec<Option<usize>> = vec![None; net.nodes.len()];
    let mut seen = vec![false; net.nodes.len()];
    seen[net.src] = true;
    let mut queue = std::collections::VecDeque::from([net.src]);
    while let Some(node) = queue.pop_front() {
        for (e, link) in net.out_links(node) {
            if support[e] && !seen[link.dst] {
                seen[link.dst] = true;
                parent[link.dst] = Some(e);
                queue.push_back(link.dst);
            }
        }
    }
    let mut tree = std::collections::BTreeSet::new();
    for &d in dsts {
        let mut node = d;
        while node != net.src {
            let e = parent[node]?;
            tree.insert(e);
            node = net.links[e].src;
        }
    }
    Some(tree.into_iter().collect())
}

/// Checks broadcast trees against every constraint of the model: each partition's links form
/// a tree from the source (one way into each region) reaching every destination, and the
/// loads fit the VMs' caps and connection budgets. Used by tests and on every plan returned.
pub fn validate_trees(net: &Network, dsts: &[usize], trees: &Trees) -> Result<(), String> {
    for (p, tree) in trees.trees.iter().enumerate() {
        let mut into = vec![0; net.nodes.len()];
        for &e in tree {
            into[net.links[e].dst] += 1;
        }
        if into.iter().any(|&k| k > 1) || into[net.src] > 0 {
            return Err(format!("partition {p}: a region is entered twice"));
        }
        let support: Vec<bool> = (0..net.links.len()).map(|e| tree.contains(&e)).collect();
        match tree_within(net, dsts, &support) {
            Some(t) if t.len() == tree.len() => {}
            Some(_) => return Err(format!("partition {p}: links that lead to no destination")),
            None => return Err(format!("partition {p}: a destination is not reached")),
        }
    }
    if let Some(why) = budget_violation(net, trees) {
        return Err(why);
    }
    if std::iter::once(&net.src)
        .chain(dsts)
        .any(|&end| trees.vms[end] == 0)
    {
        return Err("the source and every destination need a VM".into());
    }
    Ok(())
}
