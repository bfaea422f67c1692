//! Joint placement: one mixed-integer program chooses every stage's option (region and
//! instance) with the transfers between stages priced by the overlay planner per region pair,
//! so egress, relays and parallelism are in the choice, not a cloud-level constant. Stage
//! finish times respect data arrival. Pure: edge prices come in through [`EdgePricer`].
//!
//! The model, for stage options `x[s,o]` (binary, one per stage) and region choices
//! `z[s,r] = Σ_{o in r} x[s,o]`:
//! - a stage-to-stage edge u→v between regions a ≠ b is "in use" through `y[e,a,b] ≥ z[u,a] +
//!   z[v,b] − 1`, `y ≥ 0` (no big-M: every term with y is minimised, so y is 1 exactly for the
//!   chosen pair); an input edge depends on one stage's region only;
//! - `start[v] ≥ Σ_o x[v,o]·T(input → r_o)` for each pipeline input, `start[v] ≥ finish[u] +
//!   Σ y·T(a,b)` for each stage input, `finish[v] = start[v] + Σ_o x[v,o]·hours_o`;
//! - cost = Σ x·(price·hours) + Σ x·C(input → r) + Σ y·C(a,b); makespan ≥ every finish.
//!
//! Transfers out of a stage start when it finishes; pipeline inputs start moving at time 0,
//! while compute is provisioned.

use std::collections::BTreeMap;

use good_lp::{
    Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable, microlp,
    variable,
};
use skyx_catalog::{Cloud, RegionId};

use crate::resources::StageOption;
use crate::spec::{DataRef, PipelineObjective, PipelineSpec};

/// What moving one data set between two regions costs and takes, as the overlay planner
/// plans it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EdgePrice {
    pub seconds: f64,
    pub usd: f64,
    pub egress_usd: f64,
    pub gbps: f64,
    /// The relay regions of the plan's widest path (empty: direct).
    pub via: Vec<RegionId>,
}

/// One way of moving data between two regions, as a line in the volume: the transfer VMs'
/// boot and minimum billing are paid once, egress and VM time per GB.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteRate {
    /// Logical (uncompressed) Gbps.
    pub gbps: f64,
    /// Dollars per logical GB: egress on every hop plus the transfer VMs' time.
    pub usd_per_gb: f64,
    pub egress_usd_per_gb: f64,
    /// Dollars paid whatever the volume: every transfer VM's boot and minimum billing.
    pub fixed_usd: f64,
    /// The relay regions of the plan's widest path (empty: direct).
    pub via: Vec<RegionId>,
}

impl RouteRate {
    fn usd(&self, gb: f64) -> f64 {
        self.fixed_usd + gb * self.usd_per_gb
    }
}

/// How data moves between two regions, at any volume. skyx copies with the fastest plan that
/// costs no more than a plain direct copy (one VM at each end). A plan with relays and parallel
/// VMs grows with the volume like the direct copy does (egress and VM time per GB), but its
/// VMs' fixed billing only pays off for enough data. So two lines price every data set: the
/// wide plan, planned for a large volume, where it costs no more than the plain copy, and
/// the plain copy below that.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EdgeRate {
    pub wide: RouteRate,
    /// The plain direct copy; `None`: the wide plan is the only line (tests' tables).
    pub plain: Option<RouteRate>,
}

impl EdgeRate {
    /// One line for every volume.
    pub fn flat(rate: RouteRate) -> EdgeRate {
        EdgeRate {
            wide: rate,
            plain: None,
        }
    }

    /// The line skyx would copy `gb` logical GB with.
    pub fn line(&self, gb: f64) -> &RouteRate {
        match &self.plain {
            Some(plain) if plain.usd(gb) < self.wide.usd(gb) => plain,
            _ => &self.wide,
        }
    }

    pub fn price(&self, bytes: u64) -> EdgePrice {
        let gb = bytes as f64 / 1e9;
        let line = self.line(gb);
        EdgePrice {
            seconds: gb * 8.0 / line.gbps,
            usd: line.usd(gb),
            egress_usd: gb * line.egress_usd_per_gb,
            gbps: line.gbps,
            via: line.via.clone(),
        }
    }
}

/// Rates of data movement between regions (the overlay planner in production, tables in
/// tests). `None`: the pair cannot be planned (no measured path under the rules).
pub trait EdgePricer: Sync {
    fn rate(&self, src: &RegionId, dst: &RegionId, compression: f64) -> Option<EdgeRate>;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JointError {
    #[error("no placement satisfies the objective: {0}")]
    Infeasible(String),
    #[error("the solver failed: {0}")]
    Solver(String),
}

/// A planning problem: the spec, each stage's options, and the price of every transfer that
/// some choice of options would need.
#[derive(Debug, Clone)]
pub struct JointProblem {
    pub objective: PipelineObjective,
    /// Stages in topological order are `order`; `inputs[s]` what stage s reads.
    pub order: Vec<usize>,
    pub stage_names: Vec<String>,
    pub inputs: Vec<Vec<DataRef>>,
    pub options: Vec<Vec<StageOption>>,
    /// Region of each pipeline input.
    pub input_regions: Vec<RegionId>,
    /// Bytes of each pipeline input and each stage's output.
    pub input_bytes: Vec<u64>,
    pub output_bytes: Vec<u64>,
    /// (data, source region, destination region) → price; a missing key means unplannable.
    pub prices: BTreeMap<(DataRef, RegionId, RegionId), EdgePrice>,
    /// Region pairs the pricer planned.
    pub pairs_priced: usize,
}

impl JointProblem {
    /// Prices every transfer some choice could need, in parallel, through `pricer`.
    pub fn new(
        spec: &PipelineSpec,
        input_regions: Vec<RegionId>,
        options: Vec<Vec<StageOption>>,
        pricer: &dyn EdgePricer,
    ) -> JointProblem {
        let regions_of = |s: usize| -> Vec<RegionId> {
            let mut r: Vec<RegionId> = options[s].iter().map(|o| o.region.clone()).collect();
            r.sort();
            r.dedup();
            r
        };
        let mut wanted: Vec<(DataRef, RegionId, RegionId, u64, f64)> = Vec::new();
        for (v, stage) in spec.stages.iter().enumerate() {
            for &d in &stage.inputs {
                let (bytes, ratio) = spec.data_size(d);
                let sources = match d {
                    DataRef::Input(i) => vec![input_regions[i].clone()],
                    DataRef::Stage(u) => regions_of(u),
                };
                for a in &sources {
                    for b in regions_of(v) {
                        if *a != b {
                            wanted.push((d, a.clone(), b, bytes, ratio));
                        }
                    }
                }
            }
        }
        // One rate per (source, destination, compression), planned in parallel.
        let mut pairs: Vec<(RegionId, RegionId, u64)> = wanted
            .iter()
            .map(|(_, a, b, _, ratio)| (a.clone(), b.clone(), ratio.to_bits()))
            .collect();
        pairs.sort();
        pairs.dedup();
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8);
        let chunk = pairs.len().div_ceil(threads).max(1);
        let mut rates: BTreeMap<(RegionId, RegionId, u64), EdgeRate> = BTreeMap::new();
        std::thread::scope(|scope| {
            let handles: Vec<_> = pairs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|(a, b, ratio)| {
                                pricer
                                    .rate(a, b, f64::from_bits(*ratio))
                                    .map(|r| ((a.clone(), b.clone(), *ratio), r))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                rates.extend(h.join().expect("pricing thread panicked"));
            }
        });
        let mut prices = BTreeMap::new();
        for (d, a, b, bytes, ratio) in wanted {
            if let Some(rate) = rates.get(&(a.clone(), b.clone(), ratio.to_bits())) {
                prices.insert((d, a, b), rate.price(bytes));
            }
        }
        let pairs_priced = rates.len();
        JointProblem {
            objective: spec.objective,
            order: spec.order.clone(),
            stage_names: spec.stages.iter().map(|s| s.name.clone()).collect(),
            inputs: spec.stages.iter().map(|s| s.inputs.clone()).collect(),
            options,
            input_regions,
            input_bytes: spec.inputs.iter().map(|i| i.bytes).collect(),
            output_bytes: spec.stages.iter().map(|s| s.output_bytes).collect(),
            prices,
            pairs_priced,
        }
    }

    fn source_region(&self, d: DataRef, choice: &[usize]) -> RegionId {
        match d {
            DataRef::Input(i) => self.input_regions[i].clone(),
            DataRef::Stage(u) => self.options[u][choice[u]].region.clone(),
        }
    }

    fn bytes(&self, d: DataRef) -> u64 {
        match d {
            DataRef::Input(i) => self.input_bytes[i],
            DataRef::Stage(u) => self.output_bytes[u],
        }
    }

    /// The price of moving `d` from `a` to `b`: free within a region, `None` if unplannable.
    pub fn edge(&self, d: DataRef, a: &RegionId, b: &RegionId) -> Option<EdgePrice> {
        if a == b {
            return Some(EdgePrice {
                seconds: 0.0,
                usd: 0.0,
                egress_usd: 0.0,
                gbps: 0.0,
                via: Vec::new(),
            });
        }
        self.prices.get(&(d, a.clone(), b.clone())).cloned()
    }

    /// Times and costs of one assignment of options to stages; `None` if it needs a transfer
    /// that cannot be planned.
    pub fn evaluate(&self, choice: &[usize]) -> Option<Schedule> {
        let n = self.options.len();
        let mut start = vec![0.0f64; n];
        let mut finish = vec![0.0f64; n];
        let mut transfers = Vec::new();
        for &v in &self.order {
            let dst = self.options[v][choice[v]].region.clone();
            let mut ready = 0.0f64;
            for &d in &self.inputs[v] {
                let src = self.source_region(d, choice);
                let price = self.edge(d, &src, &dst)?;
                let begins = match d {
                    DataRef::Input(_) => 0.0,
                    DataRef::Stage(u) => finish[u],
                };
                let ends = begins + price.seconds;
                ready = ready.max(ends);
                transfers.push(ScheduledTransfer {
                    data: d,
                    to_stage: v,
                    src,
                    dst: dst.clone(),
                    bytes: self.bytes(d),
                    start_s: begins,
                    finish_s: ends,
                    price,
                });
            }
            start[v] = ready;
            finish[v] = ready + self.options[v][choice[v]].seconds();
        }
        let compute_usd: f64 = (0..n)
            .map(|s| self.options[s][choice[s]].compute_usd())
            .sum();
        let transfer_usd: f64 = transfers.iter().map(|t| t.price.usd).sum();
        Some(Schedule {
            choice: choice.to_vec(),
            stages: (0..n)
                .map(|s| ScheduledStage {
                    stage: s,
                    option: self.options[s][choice[s]].clone(),
                    start_s: start[s],
                    finish_s: finish[s],
                })
                .collect(),
            transfers,
            compute_usd,
            transfer_usd,
            total_usd: compute_usd + transfer_usd,
            makespan_s: finish.iter().cloned().fold(0.0, f64::max),
        })
    }

    /// Whether `a` is better than `b` under the objective (feasibility first for the capped
    /// objectives, then the objective, then the other measure).
    pub fn better(&self, a: &Schedule, b: &Schedule) -> bool {
        let key = |s: &Schedule| -> (bool, f64, f64) {
            match self.objective {
                PipelineObjective::MinCost => (true, s.total_usd, s.makespan_s),
                PipelineObjective::MinTime => (true, s.makespan_s, s.total_usd),
                PipelineObjective::MinCostDeadline { seconds } => (
                    s.makespan_s <= seconds * (1.0 + 1e-9),
                    s.total_usd,
                    s.makespan_s,
                ),
                PipelineObjective::MinTimeBudget { usd } => (
                    s.total_usd <= usd * (1.0 + 1e-9) + 1e-9,
                    s.makespan_s,
                    s.total_usd,
                ),
            }
        };
        let (fa, a1, a2) = key(a);
        let (fb, b1, b2) = key(b);
        if fa != fb {
            return fa;
        }
        let rel = |x: f64, y: f64| (x - y) / y.abs().max(1e-9);
        if rel(a1, b1).abs() > 1e-7 {
            return a1 < b1;
        }
        a2 < b2 - 1e-9
    }

    pub fn satisfies(&self, s: &Schedule) -> bool {
        match self.objective {
            PipelineObjective::MinCostDeadline { seconds } => {
                s.makespan_s <= seconds * (1.0 + 1e-9)
            }
            PipelineObjective::MinTimeBudget { usd } => s.total_usd <= usd * (1.0 + 1e-9) + 1e-9,
            _ => true,
        }
    }

    /// The optimal schedule (the MILP), optionally with every stage on `cloud`.
    pub fn solve(&self, cloud: Option<Cloud>) -> Result<Schedule, JointError> {
        let allowed: Vec<Vec<usize>> = self
            .options
            .iter()
            .map(|opts| {
                (0..opts.len())
                    .filter(|&o| cloud.is_none_or(|c| opts[o].region.cloud() == c))
                    .collect()
            })
            .collect();
        if let Some((s, _)) = allowed.iter().enumerate().find(|(_, a)| a.is_empty()) {
            return Err(JointError::Infeasible(format!(
                "stage {} has no option on {}",
                self.stage_names[s],
                cloud.map_or("any cloud".into(), |c| c.to_string())
            )));
        }
        let choice = self.solve_milp(&allowed)?;
        let schedule = self.evaluate(&choice).ok_or_else(|| {
            JointError::Solver("the solution needs an unplannable transfer".into())
        })?;
        if !self.satisfies(&schedule) {
            return Err(JointError::Infeasible(self.describe_limit(&allowed)));
        }
        Ok(schedule)
    }

    /// Re-places the pipeline after provisioning failed for lack of capacity. Stages marked
    /// `fixed` (running, done, or with compute or data already committed) keep `current`; the
    /// others choose again among their options, none of which may be a blocked (region,
    /// instance). When the objective's deadline or budget can no longer be met from here, the
    /// re-plan keeps its direction (least cost, least time) without the limit, and says so.
    pub fn replan(
        &self,
        current: &[StageOption],
        fixed: &[bool],
        blocked: &[(RegionId, String)],
    ) -> Result<Replan, JointError> {
        assert_eq!(current.len(), self.options.len(), "one placement per stage");
        assert_eq!(fixed.len(), self.options.len(), "one flag per stage");
        let mut p = self.clone();
        for (s, opts) in p.options.iter_mut().enumerate() {
            if fixed[s] {
                *opts = vec![current[s].clone()];
            } else {
                opts.retain(|o| {
                    !blocked
                        .iter()
                        .any(|(r, i)| *r == o.region && *i == o.instance)
                });
                if opts.is_empty() {
                    return Err(JointError::Infeasible(format!(
                        "stage {} has no placement left: every option is blocked",
                        self.stage_names[s]
                    )));
                }
            }
        }
        match p.solve(None) {
            Ok(schedule) => Ok(Replan {
                schedule,
                relaxed: None,
            }),
            Err(JointError::Infeasible(why)) => {
                let (objective, dropped) = match self.objective {
                    PipelineObjective::MinCostDeadline { .. } => {
                        (PipelineObjective::MinCost, "deadline")
                    }
                    PipelineObjective::MinTimeBudget { .. } => {
                        (PipelineObjective::MinTime, "budget")
                    }
                    _ => return Err(JointError::Infeasible(why)),
                };
                p.objective = objective;
                let schedule = p.solve(None)?;
                Ok(Replan {
                    schedule,
                    relaxed: Some(format!(
                        "the {dropped} can no longer be met ({why}); re-planned for {}",
                        match objective {
                            PipelineObjective::MinCost => "the least cost",
                            _ => "the least time",
                        }
                    )),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn describe_limit(&self, allowed: &[Vec<usize>]) -> String {
        let relaxed = JointProblem {
            objective: match self.objective {
                PipelineObjective::MinCostDeadline { .. } => PipelineObjective::MinTime,
                PipelineObjective::MinTimeBudget { .. } => PipelineObjective::MinCost,
                o => o,
            },
            ..self.clone()
        };
        let best = relaxed
            .solve_milp(allowed)
            .ok()
            .and_then(|c| relaxed.evaluate(&c));
        match (self.objective, best) {
            (PipelineObjective::MinCostDeadline { seconds }, Some(b)) => format!(
                "the deadline is {:.1} h but the fastest placement takes {:.1} h",
                seconds / 3600.0,
                b.makespan_s / 3600.0
            ),
            (PipelineObjective::MinTimeBudget { usd }, Some(b)) => format!(
                "the budget is ${usd:.2} but the cheapest placement costs ${:.2}",
                b.total_usd
            ),
            _ => "no placement can move every stage's inputs".into(),
        }
    }

    fn solve_milp(&self, allowed: &[Vec<usize>]) -> Result<Vec<usize>, JointError> {
        let n = self.options.len();
        let mut vars = ProblemVariables::new();
        // x[s][o] for allowed options.
        let x: Vec<BTreeMap<usize, Variable>> = allowed
            .iter()
            .map(|opts| {
                opts.iter()
                    .map(|&o| (o, vars.add(variable().binary())))
                    .collect()
            })
            .collect();
        let start: Vec<Variable> = (0..n).map(|_| vars.add(variable().min(0.0))).collect();
        let finish: Vec<Variable> = (0..n).map(|_| vars.add(variable().min(0.0))).collect();
        let makespan = vars.add(variable().min(0.0));
        let mut constraints = Vec::new();
        let mut cost = Expression::from(0.0);
        let hours = |s: f64| s / 3600.0;
        // z[s][region] as expressions.
        let z = |s: usize| -> BTreeMap<RegionId, Expression> {
            let mut m: BTreeMap<RegionId, Expression> = BTreeMap::new();
            for (&o, &v) in &x[s] {
                *m.entry(self.options[s][o].region.clone()).or_default() += v;
            }
            m
        };
        for s in 0..n {
            let one: Expression = x[s].values().map(|&v| Expression::from(v)).sum();
            constraints.push(one.eq(1.0));
            let run: Expression = x[s]
                .iter()
                .map(|(&o, &v)| self.options[s][o].hours * v)
                .sum();
            constraints.push((Expression::from(finish[s]) - start[s] - run).eq(0.0));
            constraints.push((Expression::from(makespan) - finish[s]).geq(0.0));
            for (&o, &v) in &x[s] {
                cost += self.options[s][o].compute_usd() * v;
            }
        }
        for (v, &start_v) in start.iter().enumerate() {
            let zv = z(v);
            for &d in &self.inputs[v] {
                match d {
                    DataRef::Input(i) => {
                        let src = &self.input_regions[i];
                        let mut arrival = Expression::from(0.0);
                        for (region, zexpr) in &zv {
                            match self.edge(d, src, region) {
                                Some(p) => {
                                    arrival += hours(p.seconds) * zexpr.clone();
                                    cost += p.usd * zexpr.clone();
                                }
                                // This region cannot receive the input: never choose it.
                                None => constraints.push(zexpr.clone().eq(0.0)),
                            }
                        }
                        constraints.push((Expression::from(start_v) - arrival).geq(0.0));
                    }
                    DataRef::Stage(u) => {
                        let zu = z(u);
                        let mut transfer = Expression::from(0.0);
                        for (a, za) in &zu {
                            for (b, zb) in &zv {
                                if a == b {
                                    continue;
                                }
                                match self.edge(d, a, b) {
                                    Some(p) if p.seconds > 0.0 || p.usd > 0.0 => {
                                        let y = vars.add(variable().min(0.0).max(1.0));
                                        constraints.push(
                                            (Expression::from(y) - za.clone() - zb.clone())
                                                .geq(-1.0),
                                        );
                                        transfer += hours(p.seconds) * y;
                                        cost += p.usd * y;
                                    }
                                    Some(_) => {}
                                    None => constraints.push((za.clone() + zb.clone()).leq(1.0)),
                                }
                            }
                        }
                        constraints
                            .push((Expression::from(start[v]) - finish[u] - transfer).geq(0.0));
                    }
                }
            }
        }
        // Ties go to the other measure, scaled small enough never to trade against the first.
        let objective = match self.objective {
            PipelineObjective::MinCost | PipelineObjective::MinCostDeadline { .. } => {
                cost.clone() + 1e-6 * makespan
            }
            PipelineObjective::MinTime | PipelineObjective::MinTimeBudget { .. } => {
                Expression::from(makespan) + 1e-6 * cost.clone()
            }
        };
        match self.objective {
            PipelineObjective::MinCostDeadline { seconds } => {
                constraints.push(Expression::from(makespan).leq(hours(seconds)));
            }
            PipelineObjective::MinTimeBudget { usd } => constraints.push(cost.clone().leq(usd)),
            _ => {}
        }
        let mut problem = vars.minimise(objective).using(microlp);
        for c in constraints {
            problem = problem.with(c);
        }
        match problem.solve() {
            Ok(sol) => Ok((0..n)
                .map(|s| {
                    x[s].iter()
                        .max_by(|a, b| sol.value(*a.1).total_cmp(&sol.value(*b.1)))
                        .map(|(&o, _)| o)
                        .expect("a stage has options")
                })
                .collect()),
            Err(ResolutionError::Infeasible) => {
                Err(JointError::Infeasible(self.describe_limit_without_milp()))
            }
            Err(e) => Err(JointError::Solver(e.to_string())),
        }
    }

    fn describe_limit_without_milp(&self) -> String {
        match self.objective {
            PipelineObjective::MinCostDeadline { seconds } => {
                format!(
                    "nothing finishes within the {:.1} h deadline",
                    seconds / 3600.0
                )
            }
            PipelineObjective::MinTimeBudget { usd } => {
                format!("nothing fits the ${usd:.2} budget")
            }
            _ => "no placement can move every stage's inputs".into(),
        }
    }

    /// "Place stages one at a time" (what a per-stage optimiser does): in topological order,
    /// each stage takes its best option given where its inputs already are, by its own finish
    /// time (time objectives) or its compute plus inbound transfer cost (cost objectives).
    pub fn greedy(&self) -> Option<Schedule> {
        let n = self.options.len();
        let mut choice = vec![0usize; n];
        let mut finish = vec![0.0f64; n];
        let by_time = matches!(
            self.objective,
            PipelineObjective::MinTime | PipelineObjective::MinTimeBudget { .. }
        );
        for &v in &self.order {
            let mut best: Option<(f64, f64, usize)> = None;
            for (o, opt) in self.options[v].iter().enumerate() {
                let mut ready = 0.0f64;
                let mut usd = opt.compute_usd();
                let mut ok = true;
                for &d in &self.inputs[v] {
                    let src = self.source_region(d, &choice);
                    match self.edge(d, &src, &opt.region) {
                        Some(p) => {
                            let begins = match d {
                                DataRef::Input(_) => 0.0,
                                DataRef::Stage(u) => finish[u],
                            };
                            ready = ready.max(begins + p.seconds);
                            usd += p.usd;
                        }
                        None => ok = false,
                    }
                }
                if !ok {
                    continue;
                }
                let done = ready + opt.seconds();
                let key = if by_time { (done, usd) } else { (usd, done) };
                if best.is_none_or(|(k1, k2, _)| (key.0, key.1) < (k1, k2)) {
                    best = Some((key.0, key.1, o));
                }
            }
            let (_, _, o) = best?;
            choice[v] = o;
            let s = self.evaluate_partial(&choice, v, &finish)?;
            finish[v] = s;
        }
        self.evaluate(&choice)
    }

    fn evaluate_partial(&self, choice: &[usize], v: usize, finish: &[f64]) -> Option<f64> {
        let dst = &self.options[v][choice[v]].region;
        let mut ready = 0.0f64;
        for &d in &self.inputs[v] {
            let src = self.source_region(d, choice);
            let p = self.edge(d, &src, dst)?;
            let begins = match d {
                DataRef::Input(_) => 0.0,
                DataRef::Stage(u) => finish[u],
            };
            ready = ready.max(begins + p.seconds);
        }
        Some(ready + self.options[v][choice[v]].seconds())
    }

    /// The best schedule by trying every assignment (for checking the MILP on small problems;
    /// refuses more than `limit` assignments).
    pub fn enumerate_best(&self, limit: u64) -> Option<Schedule> {
        let total: u64 = self.options.iter().map(|o| o.len() as u64).product();
        assert!(total <= limit, "{total} assignments is more than {limit}");
        let n = self.options.len();
        let mut choice = vec![0usize; n];
        let mut best: Option<Schedule> = None;
        loop {
            if let Some(s) = self.evaluate(&choice)
                && best.as_ref().is_none_or(|b| self.better(&s, b))
            {
                best = Some(s);
            }
            let mut i = 0;
            loop {
                if i == n {
                    return best.filter(|b| self.satisfies(b));
                }
                choice[i] += 1;
                if choice[i] < self.options[i].len() {
                    break;
                }
                choice[i] = 0;
                i += 1;
            }
        }
    }
}

/// A stage placed and timed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduledStage {
    pub stage: usize,
    pub option: StageOption,
    pub start_s: f64,
    pub finish_s: f64,
}

/// A transfer of one data set into one stage's region.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduledTransfer {
    pub data: DataRef,
    pub to_stage: usize,
    pub src: RegionId,
    pub dst: RegionId,
    pub bytes: u64,
    pub start_s: f64,
    pub finish_s: f64,
    pub price: EdgePrice,
}

/// A full assignment with its times and costs.
/// A re-placed pipeline.
#[derive(Debug, Clone)]
pub struct Replan {
    pub schedule: Schedule,
    /// Set when the objective's limit had to go, saying why.
    pub relaxed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Schedule {
    pub choice: Vec<usize>,
    pub stages: Vec<ScheduledStage>,
    pub transfers: Vec<ScheduledTransfer>,
    pub compute_usd: f64,
    pub transfer_usd: f64,
    pub total_usd: f64,
    pub makespan_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(gbps: f64, usd_per_gb: f64, fixed_usd: f64) -> RouteRate {
        RouteRate {
            gbps,
            usd_per_gb,
            egress_usd_per_gb: usd_per_gb,
            fixed_usd,
            via: Vec::new(),
        }
    }

    #[test]
    fn small_data_takes_the_plain_copy_and_large_data_the_wide_plan() {
        // Wide: $2 of VM billing, then $0.09/GB at 10 Gbps. Plain: $0.10, then $0.10/GB at
        // 2 Gbps. They cost the same at 190 GB.
        let rate = EdgeRate {
            wide: line(10.0, 0.09, 2.0),
            plain: Some(line(2.0, 0.10, 0.10)),
        };
        let small = rate.price(1_000_000);
        assert!(
            (small.usd - (0.10 + 0.001 * 0.10)).abs() < 1e-12,
            "{small:?}"
        );
        assert_eq!(small.gbps, 2.0);
        let large = rate.price(1_000_000_000_000);
        assert!(
            (large.usd - (2.0 + 1000.0 * 0.09)).abs() < 1e-9,
            "{large:?}"
        );
        assert_eq!(large.gbps, 10.0);
        // At the crossing, the faster plan.
        assert_eq!(rate.price(190_000_000_000).gbps, 10.0);
        // One line: every volume takes it, fixed part included.
        let flat = EdgeRate::flat(line(10.0, 0.09, 2.0)).price(1_000_000);
        assert!((flat.usd - (2.0 + 0.001 * 0.09)).abs() < 1e-12, "{flat:?}");
    }
}
