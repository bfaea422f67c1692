//! The overlay optimisation as mixed-integer programs (good_lp + microlp).
//!
//! Variables: flow `f_e` (wire Gbps) on each link, integer VMs `n_r` per region. Connections
//! are eliminated from the first stage: "`f_e ≤ c_e · g_e / C_e` and `Σ_out c_e ≤ K · n_u`" is
//! the same as "`Σ_out f_e · C_e / g_e ≤ K · n_u`" for continuous `c`, which halves the model.
//! A second, small stage fixes the VMs, makes connections integer on the links in use and lets
//! the transfer run as fast as the provisioned VMs allow.
//!
//! Cost of a plan moving `V` wire-GB at `W` wire-Gbps:
//! egress `= V/W · Σ p_e f_e`, VMs `= (V·8/W/3600 + O) · Σ n_r · price_r`, where `O` is the
//! hours each VM is billed beyond the transfer. For a fixed `W` all of it is linear. Under a
//! cost cap `Cap`, `cost ≤ Cap` multiplied by `W` is linear in `(f, n, W)` except for the
//! overhead `O · W · Σ n price`: [`max_throughput`] leaves the overhead out (its plan is a
//! candidate), and [`finalize`], where the VMs are fixed, holds the exact cap.

use good_lp::{
    Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable,
    WithInitialSolution, WithMipGap, WithTimeLimit, microlp, variable,
};

use crate::PlanError;
use crate::network::Network;

/// A solved routing: flow per link, connections per link, VMs per node, and the rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Flows {
    /// Wire Gbps per link of the network, indexed like `Network::links`.
    pub link_gbps: Vec<f64>,
    /// Parallel connections per link (0 for unused links).
    pub connections: Vec<u32>,
    /// Agent VMs per node, indexed like `Network::nodes`.
    pub vms: Vec<u32>,
    /// Wire Gbps leaving the source.
    pub wire_gbps: f64,
}

impl Flows {
    /// The (source node, destination node) of each link of `net` these flows use.
    pub fn used_links<'a>(&'a self, net: &'a Network) -> impl Iterator<Item = (usize, usize)> + 'a {
        net.links
            .iter()
            .zip(&self.link_gbps)
            .filter(|(_, f)| **f > FLOW_EPS)
            .map(|(l, _)| (l.src, l.dst))
    }

    /// These flows, solved on `from` (a network with some of `to`'s links and the same
    /// nodes), indexed by `to`'s links.
    pub fn onto(self, from: &Network, to: &Network) -> Flows {
        let mut link_gbps = vec![0.0; to.links.len()];
        let mut connections = vec![0; to.links.len()];
        for (i, l) in from.links.iter().enumerate() {
            if let Some(j) = to.link_between(l.src, l.dst) {
                link_gbps[j] = self.link_gbps[i];
                connections[j] = self.connections[i];
            }
        }
        Flows {
            link_gbps,
            connections,
            ..self
        }
    }
}

/// The whole-connection program stops once its plan is proven within this fraction of its
/// own optimum (or at the repair's search limit); the plan's note says how far it is above
/// the fractional optimum when that is more than 0.5 %.
pub const WHOLE_CONNECTIONS_MIP_GAP: f32 = 5e-3;

/// Branch and bound stops once its plan is proven within this fraction of the optimum.
/// Proving the last hundredth of a percent is where microlp spent tens of seconds on some
/// requests of the 71-region grid; no plan is worse for stopping there by more than this.
pub const MIP_GAP: f32 = 1e-3;

/// microlp with [`MIP_GAP`].
pub(crate) fn exact(
    problem: good_lp::variable::UnsolvedProblem,
) -> good_lp::solvers::microlp::MicroLpProblem {
    microlp(problem)
        .with_mip_gap(MIP_GAP)
        .expect("a finite, positive gap")
}

/// Flow below this is numerical noise, not a route.
pub const FLOW_EPS: f64 = 1e-7;

/// Small weight on total flow so zero-price cycles never appear in an optimum.
const CYCLE_PENALTY: f64 = 1e-7;

/// The budget the second stage must keep to while it speeds the plan up.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// No cost limit: as fast as the VMs allow.
    Unlimited,
    /// Egress dollars per wire Gb must not exceed the first stage's.
    EgressPerGb(f64),
    /// Total dollars (egress + VMs) for `wire_gb` must not exceed the cap.
    Total { cap_usd: f64, wire_gb: f64 },
}

struct Model {
    vars: ProblemVariables,
    f: Vec<Variable>,
    n: Vec<Variable>,
}

fn vm_hours_per_gbps(wire_gb: f64) -> f64 {
    // Time = wire_gb·8/W seconds; multiplying by W gives this constant in hour·Gbps.
    wire_gb * 8.0 / 3600.0
}

/// `None` for an infeasible program, else the failure, naming the program (`what`).
fn solver_error(what: &str, e: ResolutionError) -> Option<PlanError> {
    match e {
        ResolutionError::Infeasible => None,
        other => Some(PlanError::Solver(format!("{what}: {other}"))),
    }
}

/// Whether VM counts are whole numbers (the real problem) or fractions (its LP relaxation,
/// solved without branch and bound to see which regions matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vms {
    Integer,
    Relaxed,
}

impl Model {
    fn new(net: &Network, fixed_vms: Option<&[u32]>, vms: Vms) -> Model {
        let mut vars = ProblemVariables::new();
        let f = net
            .links
            .iter()
            .map(|_| vars.add(variable().min(0.0)))
            .collect();
        let n = (0..net.nodes.len())
            .map(|i| {
                let v = match fixed_vms {
                    Some(fixed) => variable().min(fixed[i]).max(fixed[i]),
                    None => {
                        let v = variable().min(0).max(f64::from(net.max_vms_per_region));
                        if vms == Vms::Integer { v.integer() } else { v }
                    }
                };
                vars.add(v)
            })
            .collect();
        Model { vars, f, n }
    }

    fn egress_dollars_per_gb_times_w(&self, net: &Network) -> Expression {
        net.links
            .iter()
            .zip(&self.f)
            .map(|(l, f)| l.price.0 * *f)
            .sum()
    }

    fn vm_dollars_per_hour(&self, net: &Network) -> Expression {
        net.nodes
            .iter()
            .zip(&self.n)
            .map(|(node, n)| node.vm_price.0 * *n)
            .sum()
    }

    /// Conservation, per-VM caps and (unless `connections` is given) the connection budget in
    /// its flow form.
    fn network_constraints(
        &self,
        net: &Network,
        rate: Expression,
        connections: Option<&[Option<Variable>]>,
    ) -> Vec<good_lp::Constraint> {
        let mut cs = Vec::new();
        let k = f64::from(net.max_connections_per_vm);
        for node in 0..net.nodes.len() {
            let out: Expression = net.out_links(node).map(|(i, _)| self.f[i]).sum();
            let inn: Expression = net.in_links(node).map(|(i, _)| self.f[i]).sum();
            let balance = if node == net.src {
                rate.clone()
            } else if node == net.dst {
                -rate.clone()
            } else {
                Expression::from(0.0)
            };
            cs.push((out.clone() - inn.clone()).eq(balance));
            let n = self.n[node];
            cs.push(out.leq(net.nodes[node].egress_cap.0 * n));
            cs.push(inn.leq(net.nodes[node].ingress_cap.0 * n));
            match connections {
                None => {
                    let conn_out: Expression = net
                        .out_links(node)
                        .map(|(i, l)| self.f[i] / l.gbps_per_connection())
                        .sum();
                    let conn_in: Expression = net
                        .in_links(node)
                        .map(|(i, l)| self.f[i] / l.gbps_per_connection())
                        .sum();
                    cs.push(conn_out.leq(k * n));
                    cs.push(conn_in.leq(k * n));
                }
                Some(c) => {
                    let conn_out: Expression = net.out_links(node).filter_map(|(i, _)| c[i]).sum();
                    let conn_in: Expression = net.in_links(node).filter_map(|(i, _)| c[i]).sum();
                    cs.push(conn_out.leq(k * n));
                    cs.push(conn_in.leq(k * n));
                }
            }
        }
        cs.push(Expression::from(self.n[net.src]).geq(1.0));
        cs.push(Expression::from(self.n[net.dst]).geq(1.0));
        cs
    }

    fn flows(&self, net: &Network, sol: &impl Solution, wire_gbps: f64) -> Flows {
        let link_gbps: Vec<f64> = self
            .f
            .iter()
            .map(|f| {
                let v = sol.value(*f);
                if v < FLOW_EPS { 0.0 } else { v }
            })
            .collect();
        let vms = self
            .n
            .iter()
            .map(|n| sol.value(*n).round().max(0.0) as u32)
            .collect();
        Flows {
            connections: vec![0; net.links.len()],
            link_gbps,
            vms,
            wire_gbps,
        }
    }

    /// As [`Model::flows`], with the whole connections `conns` on the links that carry flow.
    fn flows_with_connections(
        &self,
        net: &Network,
        sol: &impl Solution,
        wire_gbps: f64,
        conns: &[Option<Variable>],
    ) -> Flows {
        let mut flows = self.flows(net, sol, wire_gbps);
        flows.connections = conns
            .iter()
            .zip(&flows.link_gbps)
            .map(|(c, f)| match c {
                Some(c) if *f > FLOW_EPS => sol.value(*c).round() as u32,
                _ => 0,
            })
            .collect();
        flows
    }
}

/// Stage 1 for minimum cost: the cheapest routing that carries exactly `wire_gbps` of
/// `wire_gb`. `Ok(None)` when no routing can carry that rate.
pub fn min_cost_at(
    net: &Network,
    wire_gbps: f64,
    wire_gb: f64,
    vms: Vms,
) -> Result<Option<Flows>, PlanError> {
    Ok(min_cost_solution(net, wire_gbps, wire_gb, vms, wire_gbps)?.map(|(flows, _)| flows))
}

/// A lower bound on the cost in dollars (VM overhead included) of any plan over `net` that
/// carries at least `floor_gbps` for `wire_gb`; `Ok(None)` when no routing carries the floor.
///
/// The LP relaxation at exactly the floor is not one: a plan may run faster than its floor,
/// and its VMs at the ends (whole, at least one each) then bill fewer hours. So the rates from
/// the floor to the most the relaxation carries are cut into steps of [`BOUND_STEP`]; a plan
/// running at a rate in `[a, b]` carries `a` (scaled down, with no more VMs) and bills at most
/// the hours at `b`, and the relaxation priced that way bounds every plan in the step.
pub fn min_cost_lower_bound(
    net: &Network,
    floor_gbps: f64,
    wire_gb: f64,
) -> Result<Option<f64>, PlanError> {
    let Some(most) = max_throughput(net, f64::INFINITY, wire_gb, Vms::Relaxed)? else {
        return Ok(None);
    };
    let most = most.wire_gbps.max(floor_gbps);
    let mut bound: Option<f64> = None;
    let mut a = floor_gbps;
    loop {
        let b = (a * BOUND_STEP).min(most);
        match min_cost_solution(net, a, wire_gb, Vms::Relaxed, b)? {
            Some((_, usd)) => bound = Some(bound.map_or(usd, |x| x.min(usd))),
            // At the floor: nothing carries it. Past it: the relaxation carried `most`, so it
            // carries `a` (flows scaled down) and the solver failed; a step left out would make
            // the bound no bound.
            None => return Ok(None),
        }
        if b >= most {
            break;
        }
        a = b;
    }
    Ok(bound)
}

/// The ratio between the ends of each step of rates [`min_cost_lower_bound`] prices: smaller
/// steps bound tighter and solve more programs (one per step, each some 50 ms on 71 regions).
pub const BOUND_STEP: f64 = 1.25;

/// [`min_cost_at`]'s program, answering with the flows and the optimum's dollars (with the
/// VM counts as solved, fractional for a relaxation). VM hours are billed as if the copy ran
/// at `hours_at_gbps` (`wire_gbps` for the plan itself).
fn min_cost_solution(
    net: &Network,
    wire_gbps: f64,
    wire_gb: f64,
    vms: Vms,
    hours_at_gbps: f64,
) -> Result<Option<(Flows, f64)>, PlanError> {
    let mut m = Model::new(net, None, vms);
    // Objective scaled by W/V (a positive constant): Σ p f + (8/3600 + O·W/V) Σ n price, with
    // the first term's W the rate the hours are billed at.
    let vm_hours = vm_hours_per_gbps(1.0) * wire_gbps / hours_at_gbps
        + net.vm_overhead_h * wire_gbps / wire_gb.max(1e-12);
    let dollars = m.egress_dollars_per_gb_times_w(net) + vm_hours * m.vm_dollars_per_hour(net);
    // The relaxation answers bounds and supports, not routes: without the penalty its
    // optimum's dollars are the relaxation's own minimum.
    let penalty = if vms == Vms::Integer {
        CYCLE_PENALTY
    } else {
        0.0
    };
    let objective = dollars.clone() + m.f.iter().map(|f| penalty * *f).sum::<Expression>();
    let vars = std::mem::take(&mut m.vars);
    let mut problem = vars.minimise(objective).using(exact);
    for c in m.network_constraints(net, Expression::from(wire_gbps), None) {
        problem = problem.with(c);
    }
    match problem.solve() {
        Ok(sol) => {
            let usd = sol.eval(&dollars) * wire_gb / wire_gbps;
            Ok(Some((m.flows(net, &sol, wire_gbps), usd)))
        }
        Err(e) => solver_error("the cheapest routing at a rate", e).map_or(Ok(None), Err),
    }
}

/// Stage 1 for minimum cost with whole connections: the cheapest routing that carries exactly
/// `wire_gbps` with integer VMs *and* integer connections per link, so relays and VMs are
/// chosen knowing that a connection comes whole. Bigger than [`min_cost_at`] (one more integer
/// per link), so it is the repair for a floor that rounding the fractional plan could not
/// keep, not the first try. The answer's connections are set. `Ok(None)`: no routing with
/// whole connections carries that rate.
///
/// `start`, a routing of `net` with whole connections carrying at least `wire_gbps` (the
/// fastest plan, say), seeds branch and bound with a plan to beat: without one, a floor near
/// the most the network carries left it searching for any feasible point for tens of seconds.
pub fn min_cost_whole_connections(
    net: &Network,
    wire_gbps: f64,
    wire_gb: f64,
    start: Option<&Flows>,
    search_s: Option<f64>,
) -> Result<Option<Flows>, PlanError> {
    let mut m = Model::new(net, None, Vms::Integer);
    let max_conn = f64::from(net.max_connections_per_vm) * f64::from(net.max_vms_per_region);
    let conns: Vec<Option<Variable>> = net
        .links
        .iter()
        .map(|_| Some(m.vars.add(variable().integer().min(0.0).max(max_conn))))
        .collect();
    // As `min_cost_at`, plus a weight on connections too small to trade against any price,
    // so no connection is opened that carries nothing.
    let objective = m.egress_dollars_per_gb_times_w(net)
        + (vm_hours_per_gbps(1.0) + net.vm_overhead_h * wire_gbps / wire_gb.max(1e-12))
            * m.vm_dollars_per_hour(net)
        + m.f.iter().map(|f| CYCLE_PENALTY * *f).sum::<Expression>()
        + CYCLE_PENALTY * conns.iter().flatten().sum::<Expression>();
    let vars = std::mem::take(&mut m.vars);
    let mut problem = vars
        .minimise(objective)
        .using(microlp)
        .with_mip_gap(WHOLE_CONNECTIONS_MIP_GAP)
        .expect("a finite, positive gap");
    if let Some(seconds) = search_s {
        // With `start` there is always a plan to return when the time is up.
        problem = problem.with_time_limit(seconds);
    }
    if let Some(start) = start.filter(|s| s.wire_gbps >= wire_gbps) {
        // The same links, VMs and connections at exactly the floor: flows scaled down.
        let scale = wire_gbps / start.wire_gbps;
        let values = (m.f.iter().zip(&start.link_gbps))
            .map(|(v, f)| (*v, f * scale))
            .chain(m.n.iter().zip(&start.vms).map(|(v, n)| (*v, f64::from(*n))))
            .chain(
                conns
                    .iter()
                    .zip(&start.connections)
                    .filter_map(|(v, c)| Some((*v.as_ref()?, f64::from(*c)))),
            )
            .collect::<Vec<_>>();
        problem = problem.with_initial_solution(values);
    }
    for c in m.network_constraints(net, Expression::from(wire_gbps), Some(&conns)) {
        problem = problem.with(c);
    }
    for (i, link) in net.links.iter().enumerate() {
        let c = conns[i].expect("every link has a connection variable");
        problem = problem.with(Expression::from(m.f[i]).leq(link.gbps_per_connection() * c));
    }
    let sol = match problem.solve() {
        Ok(sol) => sol,
        Err(e) => {
            return solver_error("the cheapest routing with whole connections", e)
                .map_or(Ok(None), Err);
        }
    };
    Ok(Some(m.flows_with_connections(net, &sol, wire_gbps, &conns)))
}

/// The fastest routing whose total cost for `wire_gb`, leaving out the VMs' overhead, stays
/// within `cap_usd` (`f64::INFINITY` for no cap). `Ok(None)` when even the slowest routing
/// costs more.
pub fn max_throughput(
    net: &Network,
    cap_usd: f64,
    wire_gb: f64,
    vms: Vms,
) -> Result<Option<Flows>, PlanError> {
    let mut m = Model::new(net, None, vms);
    let w = m.vars.add(variable().min(0.0));
    let egress = m.egress_dollars_per_gb_times_w(net);
    let vm = m.vm_dollars_per_hour(net);
    // Prefer the cheaper of two equally fast plans.
    let tie_break = 1e-6 * (egress.clone() + vm_hours_per_gbps(1.0) * vm.clone());
    let objective = Expression::from(w) - tie_break;
    let vars = std::mem::take(&mut m.vars);
    let mut problem = vars.maximise(objective).using(exact);
    for c in m.network_constraints(net, Expression::from(w), None) {
        problem = problem.with(c);
    }
    if cap_usd.is_finite() {
        problem =
            problem.with((wire_gb * egress + vm_hours_per_gbps(wire_gb) * vm).leq(cap_usd * w));
    }
    match problem.solve() {
        Ok(sol) => {
            let rate = sol.value(w);
            if rate < FLOW_EPS {
                return Ok(None);
            }
            Ok(Some(m.flows(net, &sol, rate)))
        }
        Err(e) => solver_error("the fastest routing", e).map_or(Ok(None), Err),
    }
}

/// Stage 2: with the VMs of `stage1` fixed and only its links in use, choose integer
/// connections and run as fast as those VMs allow within `budget` (VM overhead included).
/// `Ok(None)` when no rate keeps to the budget with these VMs.
pub fn finalize(net: &Network, stage1: &Flows, budget: Budget) -> Result<Option<Flows>, PlanError> {
    // Solved over the links in use only: a program with a zeroed variable for each of the
    // candidate network's 400-odd other links took up to a second a time.
    let used: std::collections::BTreeSet<(usize, usize)> = stage1.used_links(net).collect();
    let sub = net.with_links(|l| used.contains(&(l.src, l.dst)));
    let on_sub = stage1.clone().onto(net, &sub);
    Ok(finalize_used(&sub, &on_sub, budget)?.map(|f| f.onto(&sub, net)))
}

fn finalize_used(
    net: &Network,
    stage1: &Flows,
    budget: Budget,
) -> Result<Option<Flows>, PlanError> {
    let used: Vec<bool> = stage1.link_gbps.iter().map(|f| *f > FLOW_EPS).collect();
    let mut m = Model::new(net, Some(&stage1.vms), Vms::Integer);
    let w = m.vars.add(variable().min(0.0));
    let k = f64::from(net.max_connections_per_vm);
    let max_conn = k * f64::from(net.max_vms_per_region);
    let conns: Vec<Option<Variable>> = used
        .iter()
        .map(|&u| u.then(|| m.vars.add(variable().integer().min(0.0).max(max_conn))))
        .collect();
    let egress = m.egress_dollars_per_gb_times_w(net);
    let vm = m.vm_dollars_per_hour(net);
    let objective = Expression::from(w) - 1e-6 * conns.iter().flatten().sum::<Expression>();
    let vars = std::mem::take(&mut m.vars);
    // No gap here: the program is small (the links in use), and a rate a gap short of what
    // the VMs carry would read as a missed floor or a bound cost cap.
    let mut problem = vars.maximise(objective).using(microlp);
    for c in m.network_constraints(net, Expression::from(w), Some(&conns)) {
        problem = problem.with(c);
    }
    for (i, link) in net.links.iter().enumerate() {
        match conns[i] {
            Some(c) => {
                problem = problem.with(Expression::from(m.f[i]).leq(link.gbps_per_connection() * c))
            }
            None => problem = problem.with(Expression::from(m.f[i]).eq(0.0)),
        }
    }
    problem = match budget {
        Budget::Unlimited => problem,
        Budget::EgressPerGb(k) => problem.with(egress.leq((k * (1.0 + 1e-9) + 1e-12) * w)),
        Budget::Total { cap_usd, wire_gb } => {
            // The VMs are fixed here, so their overhead is a constant and the cap exact.
            let overhead: f64 = net
                .nodes
                .iter()
                .zip(&stage1.vms)
                .map(|(node, n)| node.vm_price.0 * f64::from(*n) * net.vm_overhead_h)
                .sum();
            problem.with(
                (wire_gb * egress + vm_hours_per_gbps(wire_gb) * vm)
                    .leq((cap_usd * (1.0 + 1e-9) - overhead) * w),
            )
        }
    };
    let sol = match problem.solve() {
        Ok(sol) => sol,
        Err(ResolutionError::Infeasible) => return Ok(None),
        Err(e) => {
            return Err(PlanError::Solver(format!(
                "fixing connections on the chosen route failed: {e}"
            )));
        }
    };
    let rate = sol.value(w);
    let flows = m.flows_with_connections(net, &sol, rate, &conns);
    Ok(Some(without_idle_vms(net, flows)))
}

/// `flows` with no VMs where nothing flows: they are not provisioned.
pub fn without_idle_vms(net: &Network, mut flows: Flows) -> Flows {
    for node in 0..net.nodes.len() {
        let touches = net
            .out_links(node)
            .chain(net.in_links(node))
            .any(|(i, _)| flows.link_gbps[i] > FLOW_EPS);
        if !touches {
            flows.vms[node] = 0;
        }
    }
    flows
}

/// The egress dollars per wire-GB of a routing (Σ p_e f_e / W).
pub fn egress_per_gb(net: &Network, flows: &Flows) -> f64 {
    if flows.wire_gbps <= 0.0 {
        return 0.0;
    }
    net.links
        .iter()
        .zip(&flows.link_gbps)
        .map(|(l, f)| l.price.0 * f)
        .sum::<f64>()
        / flows.wire_gbps
}
