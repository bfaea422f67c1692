//! Planning time over the shipped 71-region grid (issue target: ≤ 1 s).
//!
//! Cases cover both objectives, a pair where direct is fine and pairs where relays win, with
//! the default relay-candidate pruning (16) and with every allowed region in the model.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use skyx_catalog::{Catalog, Gbps};
use skyx_planner::{
    CostCap, Objective, TransferRequest, fastest_within_direct_cost, plan_transfer,
};

struct Case {
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    objective: Objective,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "min_cost_floor8_useast1_asiase1",
            src: "aws:us-east-1",
            dst: "gcp:asia-southeast1-a",
            objective: Objective::MinCost {
                throughput_floor: Gbps(8.0),
            },
        },
        Case {
            name: "min_cost_floor10_azsc_asiane3",
            src: "azure:southcentralus",
            dst: "gcp:asia-northeast3-a",
            objective: Objective::MinCost {
                throughput_floor: Gbps(10.0),
            },
        },
        Case {
            name: "max_tput_cap30_useast1_asiase1",
            src: "aws:us-east-1",
            dst: "gcp:asia-southeast1-a",
            objective: Objective::MaxThroughput {
                cost_cap: CostCap::TotalUsd(30.0),
            },
        },
        Case {
            name: "max_tput_cap50_westeu_asias1",
            src: "azure:westeurope",
            dst: "gcp:asia-south1-a",
            objective: Objective::MaxThroughput {
                cost_cap: CostCap::TotalUsd(50.0),
            },
        },
    ]
}

fn bench_plans(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let mut group = c.benchmark_group("plan_transfer_71_regions");
    group.sample_size(10);
    for case in cases() {
        for candidates in [Some(16), None] {
            let mut req = TransferRequest::new(
                case.src.parse().unwrap(),
                case.dst.parse().unwrap(),
                100_000_000_000,
                case.objective,
            );
            req.config.max_relay_candidates = candidates;
            let label = candidates.map_or("all".to_string(), |k| format!("k{k}"));
            group.bench_with_input(BenchmarkId::new(case.name, label), &req, |b, req| {
                b.iter(|| plan_transfer(&catalog, req).expect("plannable"))
            });
        }
    }
    group.finish();
}

/// The default objective (fastest within the plain direct copy's cost) with and without the
/// VMs' billed overhead: with it, a cost-capped plan whose VMs the overhead binds is searched
/// again with fewer VMs per region and against the direct copy, so small copies take more
/// solves. Both settings run in the same process, so their ratio is the price of the search.
fn bench_vm_overhead(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let mut group = c.benchmark_group("default_objective_vm_overhead");
    group.sample_size(10);
    for (volume, bytes) in [
        ("8MB", 8_000_000u64),
        ("10GB", 10_000_000_000),
        ("1TB", 1_000_000_000_000),
    ] {
        for overhead_s in [0.0, 60.0] {
            let mut req = TransferRequest::new(
                "aws:us-east-1".parse().unwrap(),
                "gcp:asia-southeast1-a".parse().unwrap(),
                bytes,
                Objective::MaxThroughput {
                    cost_cap: CostCap::TotalUsd(1.0),
                },
            );
            req.config.vm_overhead_s = overhead_s;
            group.bench_with_input(
                BenchmarkId::new(volume, format!("overhead{overhead_s}s")),
                &req,
                |b, req| {
                    b.iter(|| {
                        let mut req = req.clone();
                        fastest_within_direct_cost(&catalog, &mut req).expect("direct plannable");
                        plan_transfer(&catalog, &req).expect("plannable")
                    })
                },
            );
        }
    }
    group.finish();
}

fn bench_catalog_load(c: &mut Criterion) {
    c.bench_function("catalog_builtin_load", |b| b.iter(Catalog::builtin));
}

criterion_group!(benches, bench_plans, bench_vm_overhead, bench_catalog_load);
criterion_main!(benches);
