//! The joint MILP against exhaustive search on random small DAGs, under every objective, with a
//! closed-form transfer pricer (some region pairs unplannable), plus the baselines' invariants.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_catalog::{Cloud, RegionId};
use skyx_pipeline::StageOption;
use skyx_pipeline::joint::{EdgePricer, EdgeRate, JointError, JointProblem, RouteRate};
use skyx_pipeline::spec::{
    CandidateSpec, DataRef, InputSpec, PipelineObjective, PipelineSpec, PlacementRules, Resource,
    StageSpec,
};

struct TablePricer {
    /// (src, dst) → (Gbps, USD/GB, fixed USD) of the wide plan; absent: unplannable. The plain
    /// copy is half as fast, half as dear again per GB, with a fixed $0.50: which line a data
    /// set takes depends on its size.
    links: BTreeMap<(RegionId, RegionId), (f64, f64, f64)>,
}

impl EdgePricer for TablePricer {
    fn rate(&self, a: &RegionId, b: &RegionId, ratio: f64) -> Option<EdgeRate> {
        let &(wire_gbps, usd_per_wire_gb, fixed_usd) = self.links.get(&(a.clone(), b.clone()))?;
        let wide = RouteRate {
            gbps: wire_gbps * ratio,
            usd_per_gb: usd_per_wire_gb / ratio,
            egress_usd_per_gb: usd_per_wire_gb / ratio,
            fixed_usd,
            via: Vec::new(),
        };
        let plain = RouteRate {
            gbps: wide.gbps / 2.0,
            usd_per_gb: wide.usd_per_gb * 1.5,
            egress_usd_per_gb: wide.egress_usd_per_gb,
            fixed_usd: 0.5,
            via: Vec::new(),
        };
        Some(EdgeRate {
            wide,
            plain: Some(plain),
        })
    }
}

fn regions() -> Vec<RegionId> {
    vec![
        RegionId::new(Cloud::Aws, "us-east-1").unwrap(),
        RegionId::new(Cloud::Aws, "eu-west-1").unwrap(),
        RegionId::new(Cloud::Gcp, "us-central1-a").unwrap(),
        RegionId::new(Cloud::Azure, "eastus").unwrap(),
    ]
}

struct Instance {
    spec: PipelineSpec,
    input_regions: Vec<RegionId>,
    options: Vec<Vec<StageOption>>,
    pricer: TablePricer,
}

fn random_instance(rng: &mut SmallRng) -> Instance {
    let regions = regions();
    let n = rng.random_range(2..=4);
    let n_inputs = rng.random_range(1..=2);
    let inputs: Vec<InputSpec> = (0..n_inputs)
        .map(|i| InputSpec {
            name: format!("in{i}"),
            url: format!("s3://b/in{i}"),
            region: regions[rng.random_range(0..regions.len())].to_string(),
            bytes: rng.random_range(1..=500) * 1_000_000_000,
            compression: if rng.random_bool(0.3) { 2.0 } else { 1.0 },
            line: 1,
        })
        .collect();
    let mut stages = Vec::new();
    let mut options = Vec::new();
    for s in 0..n {
        let mut reads = Vec::new();
        for u in 0..s {
            if rng.random_bool(0.5) {
                reads.push(DataRef::Stage(u));
            }
        }
        if reads.is_empty() || rng.random_bool(0.3) {
            reads.push(DataRef::Input(rng.random_range(0..n_inputs)));
        }
        stages.push(StageSpec {
            name: format!("s{s}"),
            run: "true".into(),
            inputs: reads,
            output_bytes: rng.random_range(1..=300) * 1_000_000_000,
            output_compression: 1.0,
            rules: PlacementRules::default(),
            candidates: vec![CandidateSpec {
                resource: Resource::Instance { name: "x".into() },
                hours: 1.0,
                line: 1,
            }],
            line: 1,
        });
        let k = rng.random_range(1..=3);
        options.push(
            (0..k)
                .map(|c| StageOption {
                    region: regions[rng.random_range(0..regions.len())].clone(),
                    instance: format!("t{c}"),
                    usd_per_hour: rng.random_range(1..=40) as f64 * 0.5,
                    hours: rng.random_range(1..=20) as f64 * 0.5,
                    candidate: c,
                })
                .collect(),
        );
    }
    let mut links = BTreeMap::new();
    for a in &regions {
        for b in &regions {
            if a != b && rng.random_bool(0.85) {
                links.insert(
                    (a.clone(), b.clone()),
                    (
                        rng.random_range(1..=100) as f64 * 0.1,
                        rng.random_range(1..=12) as f64 * 0.01,
                        rng.random_range(0..=20) as f64,
                    ),
                );
            }
        }
    }
    let spec = PipelineSpec {
        file: "random".into(),
        name: "random".into(),
        objective: PipelineObjective::MinCost,
        rules: PlacementRules::default(),
        inputs: inputs.clone(),
        order: (0..n).collect(),
        stages,
    };
    Instance {
        input_regions: inputs.iter().map(|i| i.region.parse().unwrap()).collect(),
        spec,
        options,
        pricer: TablePricer { links },
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn the_milp_matches_exhaustive_search_under_every_objective() {
    let mut rng = SmallRng::seed_from_u64(11);
    let mut checked = 0;
    for case in 0..60 {
        let inst = random_instance(&mut rng);
        let base = JointProblem::new(
            &inst.spec,
            inst.input_regions.clone(),
            inst.options.clone(),
            &inst.pricer,
        );
        // Bounds for the capped objectives from the unconstrained optima.
        let fastest = JointProblem {
            objective: PipelineObjective::MinTime,
            ..base.clone()
        }
        .enumerate_best(10_000);
        let cheapest = JointProblem {
            objective: PipelineObjective::MinCost,
            ..base.clone()
        }
        .enumerate_best(10_000);
        let (Some(fastest), Some(cheapest)) = (fastest, cheapest) else {
            // Nothing is plannable: the MILP must say so too.
            assert!(
                matches!(base.solve(None), Err(JointError::Infeasible(_))),
                "case {case}"
            );
            continue;
        };
        let objectives = [
            PipelineObjective::MinCost,
            PipelineObjective::MinTime,
            PipelineObjective::MinCostDeadline {
                seconds: fastest.makespan_s * rng.random_range(1.0..1.6),
            },
            PipelineObjective::MinCostDeadline {
                seconds: fastest.makespan_s * 0.9,
            },
            PipelineObjective::MinTimeBudget {
                usd: cheapest.total_usd * rng.random_range(1.0..1.6),
            },
            PipelineObjective::MinTimeBudget {
                usd: cheapest.total_usd * 0.9,
            },
        ];
        for objective in objectives {
            let p = JointProblem {
                objective,
                ..base.clone()
            };
            let brute = p.enumerate_best(10_000);
            match (p.solve(None), brute) {
                (Ok(milp), Some(brute)) => {
                    let (m, b) = match objective {
                        PipelineObjective::MinCost | PipelineObjective::MinCostDeadline { .. } => {
                            (milp.total_usd, brute.total_usd)
                        }
                        _ => (milp.makespan_s, brute.makespan_s),
                    };
                    assert!(
                        close(m, b),
                        "case {case} {objective:?}: MILP {m} vs exhaustive {b}"
                    );
                    assert!(
                        p.satisfies(&milp),
                        "case {case} {objective:?}: MILP plan breaks the cap"
                    );
                    checked += 1;
                }
                (Err(JointError::Infeasible(why)), None) => {
                    assert!(!why.is_empty());
                }
                (milp, brute) => {
                    panic!("case {case} {objective:?}: MILP {milp:?} but exhaustive {brute:?}")
                }
            }
        }
    }
    assert!(checked > 150, "only {checked} feasible comparisons");
}

#[test]
fn baselines_are_never_better_than_the_joint_plan() {
    let mut rng = SmallRng::seed_from_u64(5);
    for case in 0..40 {
        let inst = random_instance(&mut rng);
        for objective in [PipelineObjective::MinCost, PipelineObjective::MinTime] {
            let p = JointProblem {
                objective,
                ..JointProblem::new(
                    &inst.spec,
                    inst.input_regions.clone(),
                    inst.options.clone(),
                    &inst.pricer,
                )
            };
            let Ok(joint) = p.solve(None) else { continue };
            if let Some(g) = p.greedy() {
                assert!(!p.better(&g, &joint), "case {case}: greedy beat the MILP");
            }
            for cloud in Cloud::ALL {
                if let Ok(single) = p.solve(Some(cloud)) {
                    assert!(
                        single
                            .stages
                            .iter()
                            .all(|s| s.option.region.cloud() == cloud)
                    );
                    assert!(
                        !p.better(&single, &joint),
                        "case {case}: {cloud} alone beat the MILP"
                    );
                }
            }
        }
    }
}

#[test]
fn stages_start_only_after_their_data_arrives() {
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..30 {
        let inst = random_instance(&mut rng);
        let p = JointProblem::new(
            &inst.spec,
            inst.input_regions.clone(),
            inst.options.clone(),
            &inst.pricer,
        );
        let Ok(plan) = p.solve(None) else { continue };
        for t in &plan.transfers {
            let stage = &plan.stages[t.to_stage];
            assert!(
                stage.start_s + 1e-9 >= t.finish_s,
                "stage starts before its input lands"
            );
            if let DataRef::Stage(u) = t.data {
                assert!(
                    t.start_s + 1e-9 >= plan.stages[u].finish_s,
                    "output moves before it exists"
                );
            }
        }
    }
}

#[test]
fn a_replan_keeps_fixed_stages_avoids_blocked_places_and_is_optimal_for_the_rest() {
    let mut rng = SmallRng::seed_from_u64(29);
    let mut checked = 0;
    for case in 0..60 {
        let inst = random_instance(&mut rng);
        let p = JointProblem::new(
            &inst.spec,
            inst.input_regions.clone(),
            inst.options.clone(),
            &inst.pricer,
        );
        let Ok(plan) = p.solve(None) else { continue };
        let current: Vec<StageOption> = plan.stages.iter().map(|s| s.option.clone()).collect();
        let n = current.len();
        // One stage finds no capacity; some others are already committed.
        let failed = rng.random_range(0..n);
        let fixed: Vec<bool> = (0..n)
            .map(|s| s != failed && rng.random_bool(0.5))
            .collect();
        let blocked = vec![(
            current[failed].region.clone(),
            current[failed].instance.clone(),
        )];
        // Exhaustive search over exactly what the re-plan may choose from.
        let mut restricted = p.clone();
        for (s, opts) in restricted.options.iter_mut().enumerate() {
            if fixed[s] {
                *opts = vec![current[s].clone()];
            } else {
                opts.retain(|o| !blocked.contains(&(o.region.clone(), o.instance.clone())));
            }
        }
        let brute = if restricted.options.iter().any(Vec::is_empty) {
            None
        } else {
            restricted.enumerate_best(10_000)
        };
        match (p.replan(&current, &fixed, &blocked), brute) {
            (Ok(r), Some(brute)) => {
                assert!(
                    r.relaxed.is_none(),
                    "case {case}: min-cost needs no relaxing"
                );
                for s in 0..n {
                    let o = &r.schedule.stages[s].option;
                    // A fixed stage may share the blocked place: it already has its compute.
                    if fixed[s] {
                        assert_eq!(o, &current[s], "case {case}: fixed stage {s} moved");
                    } else {
                        assert!(
                            !blocked.contains(&(o.region.clone(), o.instance.clone())),
                            "case {case}: stage {s} placed where there is no capacity"
                        );
                    }
                }
                assert!(
                    close(r.schedule.total_usd, brute.total_usd),
                    "case {case}: re-plan ${} vs exhaustive ${}",
                    r.schedule.total_usd,
                    brute.total_usd
                );
                checked += 1;
            }
            (Err(JointError::Infeasible(why)), None) => assert!(!why.is_empty()),
            (r, brute) => panic!("case {case}: re-plan {r:?} but exhaustive {brute:?}"),
        }
    }
    assert!(checked > 20, "only {checked} re-plans compared");
}

#[test]
fn a_replan_that_cannot_meet_the_deadline_says_so_and_still_places() {
    let mut rng = SmallRng::seed_from_u64(5);
    let mut relaxed = 0;
    for _ in 0..80 {
        let inst = random_instance(&mut rng);
        let base = JointProblem::new(
            &inst.spec,
            inst.input_regions.clone(),
            inst.options.clone(),
            &inst.pricer,
        );
        let Some(fastest) = JointProblem {
            objective: PipelineObjective::MinTime,
            ..base.clone()
        }
        .enumerate_best(10_000) else {
            continue;
        };
        // The deadline is exactly the fastest plan: blocking one of its places breaks it
        // whenever that place was the only way to be that fast.
        let p = JointProblem {
            objective: PipelineObjective::MinCostDeadline {
                seconds: fastest.makespan_s,
            },
            ..base
        };
        let Ok(plan) = p.solve(None) else { continue };
        let current: Vec<StageOption> = plan.stages.iter().map(|s| s.option.clone()).collect();
        let fixed = vec![false; current.len()];
        let blocked: Vec<(RegionId, String)> = current
            .iter()
            .map(|o| (o.region.clone(), o.instance.clone()))
            .collect();
        if let Ok(r) = p.replan(&current, &fixed, &blocked)
            && let Some(why) = &r.relaxed
        {
            assert!(why.contains("deadline"), "{why}");
            assert!(r.schedule.makespan_s > fastest.makespan_s * (1.0 + 1e-9));
            relaxed += 1;
        }
    }
    assert!(relaxed > 0, "no case needed relaxing");
}
