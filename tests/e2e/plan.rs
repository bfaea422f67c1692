//! `skyx plan`: its human, JSON and Graphviz output, exit codes and error messages.

use serde_json::Value;

use crate::util::{fails_with, ok};

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(&all)).expect("plan --json prints one JSON object")
}

#[test]
fn json_has_the_documented_fields() {
    let v = plan_json(&[
        "--src",
        "aws:us-east-1",
        "--dst",
        "gcp:asia-southeast1",
        "--volume",
        "100GB",
        "--min-cost",
        "--throughput-floor",
        "5",
    ]);
    for key in ["throughput_gbps", "time_s"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in ["egress", "vm", "total"] {
        assert!(v["cost_usd"][key].as_f64().is_some(), "cost_usd.{key}");
    }
    let edges = v["edges"].as_array().unwrap();
    assert!(!edges.is_empty());
    for e in edges {
        assert!(e["src"].is_string() && e["dst"].is_string());
        assert!(e["gbps"].as_f64().unwrap() > 0.0 && e["connections"].as_u64().unwrap() >= 1);
    }
    assert!(v["vms"]["aws:us-east-1"].as_u64().unwrap() >= 1);
    // Direct can't reach 5 Gbps on this pair (0.11 Gbps per VM pair), so it is explained.
    assert!(v["direct"].is_null());
    assert!(
        v["direct_infeasible"]
            .as_str()
            .unwrap()
            .contains("cannot be reached")
    );
    assert!(v["throughput_gbps"].as_f64().unwrap() >= 5.0);
}

#[test]
fn direct_figures_are_reported_next_to_the_overlay() {
    let v = plan_json(&[
        "--src",
        "aws:us-east-1",
        "--dst",
        "aws:eu-west-1",
        "--volume",
        "1TB",
        "--cost-cap",
        "40",
    ]);
    let d = &v["direct"];
    assert!(d["throughput_gbps"].as_f64().unwrap() > 0.0);
    assert!(d["time_s"].as_f64().unwrap() > 0.0);
    assert!(d["cost_usd"]["total"].as_f64().unwrap() <= 40.0);
    assert!(
        v["throughput_gbps"].as_f64().unwrap()
            >= d["throughput_gbps"].as_f64().unwrap() * (1.0 - 1e-9)
    );
    assert!(v["cost_usd"]["total"].as_f64().unwrap() <= 40.0 + 1e-6);
}

#[test]
fn vm_price_override_applies_to_every_region() {
    let base = [
        "--src",
        "aws:us-east-1",
        "--dst",
        "aws:eu-west-1",
        "--volume",
        "100GB",
        "--via",
        "direct",
        "--throughput-floor",
        "2",
    ];
    let mut free = base.to_vec();
    free.extend(["--vm-price-per-hour", "0"]);
    let v = plan_json(&free);
    assert_eq!(v["cost_usd"]["vm"].as_f64().unwrap(), 0.0);
    for (_, d) in v["vm_details"].as_object().unwrap() {
        assert_eq!(d["price_source"], "user override");
    }
}

#[test]
fn eu_only_never_routes_outside_the_eu() {
    let v = plan_json(&[
        "--src",
        "aws:eu-west-1",
        "--dst",
        "gcp:europe-north1",
        "--volume",
        "500GB",
        "--only-country",
        "eu",
        "--cost-cap",
        "100",
    ]);
    for region in v["vms"].as_object().unwrap().keys() {
        assert!(
            !region.contains("eu-west-2")
                && !region.contains("europe-west2")
                && !region.contains("uksouth"),
            "{region} is in the UK"
        );
        assert!(
            !region.contains("switzerland")
                && !region.contains("europe-west6")
                && !region.contains("eu-central-2"),
            "{region} is in CH"
        );
    }
}

#[test]
fn human_output_compares_with_direct_and_names_relays() {
    let out = ok(&[
        "plan",
        "--src",
        "azure:southcentralus",
        "--dst",
        "gcp:asia-northeast3",
        "--volume",
        "1TB",
        "--throughput-floor",
        "10",
    ]);
    assert!(out.contains("relays: azure:"), "{out}");
    assert!(
        out.contains("direct") && out.contains("not feasible"),
        "{out}"
    );
    assert!(
        out.contains("Predicted:") && out.contains("egress $"),
        "{out}"
    );
}

#[test]
fn dot_output_is_a_graph_of_the_plan() {
    let out = ok(&[
        "plan",
        "--dot",
        "--src",
        "aws:us-east-1",
        "--dst",
        "aws:eu-west-1",
        "--via",
        "direct",
        "--throughput-floor",
        "1",
    ]);
    assert!(out.starts_with("digraph skyx_plan {"), "{out}");
    assert!(
        out.contains("\"aws:us-east-1\" -> \"aws:eu-west-1\""),
        "{out}"
    );
}

#[test]
fn infeasible_requests_exit_3_and_say_what_is_achievable() {
    let err = fails_with(
        3,
        &[
            "plan",
            "--src",
            "aws:us-east-1",
            "--dst",
            "aws:eu-west-1",
            "--throughput-floor",
            "900",
        ],
    );
    assert!(
        err.contains("900.00 Gbps") && err.contains("the most this route set can carry is"),
        "{err}"
    );
    let err = fails_with(
        3,
        &[
            "plan",
            "--src",
            "aws:us-east-1",
            "--dst",
            "aws:eu-west-1",
            "--only-continent",
            "europe",
        ],
    );
    assert!(err.contains("aws:us-east-1 cannot be used"), "{err}");
    let err = fails_with(
        3,
        &[
            "plan",
            "--src",
            "aws:us-east-1",
            "--dst",
            "aws:eu-west-1",
            "--cost-cap",
            "0.01",
        ],
    );
    assert!(err.contains("no plan costs $0.01"), "{err}");
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    // (flags after `plan --src aws:us-east-1`, what the error must say)
    let cases: &[(&[&str], &str)] = &[
        (&["--dst", "aws:eu-west-9"], "did you mean aws:eu-west-1"),
        (&["--dst", "aws:eu-west-1", "--volume", "ten"], "--volume"),
        (
            &["--dst", "aws:eu-west-1", "--cost-cap", "cheap"],
            "--cost-cap 'cheap'",
        ),
        (
            &["--dst", "aws:eu-west-1", "--compression-ratio", "0.2"],
            "compression ratio 0.2",
        ),
        (
            &["--dst", "aws:eu-west-1", "--only-country", "Germany"],
            "two-letter ISO code",
        ),
        (
            &[
                "--dst",
                "aws:eu-west-1",
                "--throughput-floor",
                "1",
                "--cost-cap",
                "5",
            ],
            "cannot be used with",
        ),
        (&["--dst", "aws:eu-west-1", "--via", ""], "--via ''"),
        (
            &["--dst", "aws:eu-west-1", "--via", "aws:us-east-1"],
            "aws:us-east-1 is the source",
        ),
        (
            &["--dst", "aws:eu-west-1", "--via", "aws:eu-west-1"],
            "aws:eu-west-1 is the destination",
        ),
        (
            &[
                "--dst",
                "aws:eu-west-1",
                "--via",
                "aws:us-east-2,aws:us-west-2,aws:us-east-2",
            ],
            "aws:us-east-2 appears twice",
        ),
        (
            &[
                "--dst",
                "aws:eu-west-1",
                "--via",
                "aws:us-east-2,,aws:us-west-2",
            ],
            "an empty region name",
        ),
        (
            &["--dst", "aws:eu-west-1", "--max-connections-per-vm", "0"],
            "--max-connections-per-vm",
        ),
    ];
    for (flags, expect) in cases {
        let mut args = vec!["plan", "--src", "aws:us-east-1"];
        args.extend_from_slice(flags);
        let err = fails_with(2, &args);
        assert!(err.contains(expect), "{flags:?}: {err}");
    }
}

/// A tiny copy with a long deadline plans (at a rate the solver can see) instead of being
/// called infeasible at "0.00 Gbps".
#[test]
fn a_deadline_on_a_tiny_copy_plans() {
    let v = plan_json(&[
        "--src",
        "aws:us-east-1",
        "--dst",
        "aws:eu-west-1",
        "--volume",
        "1KB",
        "--deadline",
        "1h",
    ]);
    assert!(v["time_s"].as_f64().unwrap() <= 3600.0, "{v}");
}

/// Regression: with `--via` and no objective flag, the default cost cap (a plain direct copy)
/// must still be computed over the direct link, which the forced chain leaves out.
#[test]
fn via_without_an_objective_flag_plans_along_the_route_within_its_plain_copy_cost() {
    let v = plan_json(&[
        "--src",
        "aws:us-east-1",
        "--dst",
        "gcp:asia-southeast1",
        "--via",
        "aws:us-east-2",
    ]);
    let relays: Vec<&str> = v["paths"][0]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(relays[1], "aws:us-east-2", "{v}");
    assert!(v["throughput_gbps"].as_f64().unwrap() > 0.0);
}

#[test]
fn several_destinations_plan_a_broadcast_beside_separate_copies() {
    let dsts = "gcp:europe-west4-a,azure:uksouth,aws:ap-southeast-2";
    let v = plan_json(&["--src", "aws:us-east-1", "--dst", dsts, "--volume", "1TB"]);
    assert_eq!(v["dsts"].as_array().unwrap().len(), 3);
    let trees = v["chosen"]["trees"].as_array().unwrap();
    assert!(!trees.is_empty());
    for tree in trees {
        let reached: Vec<&str> = tree["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[1].as_str().unwrap())
            .collect();
        for d in dsts.split(',') {
            assert!(reached.contains(&d), "{d} not in {reached:?}");
        }
    }
    // The default: the cheapest broadcast at least as fast as the slowest plain direct copy
    // (a floor), priced beside the separate copies.
    let floor = v["objective"]["throughput_floor"].as_f64().unwrap();
    assert_eq!(v["objective"]["mode"], "min_cost");
    assert!(v["chosen"]["throughput_gbps"].as_f64().unwrap() >= floor * (1.0 - 1e-9));
    assert!(v["separate_direct"]["cost_usd"]["total"].as_f64().unwrap() > 0.0);
    let text = ok(&[
        "plan",
        "--src",
        "aws:us-east-1",
        "--dst",
        dsts,
        "--deadline",
        "2h",
    ]);
    assert!(
        text.contains("a separate direct copy each") && text.contains("partition 1"),
        "{text}"
    );

    let err = fails_with(
        2,
        &[
            "plan",
            "--src",
            "aws:us-east-1",
            "--dst",
            dsts,
            "--cost-cap",
            "50",
        ],
    );
    assert!(err.contains("throughput floor or a deadline"), "{err}");
    let err = fails_with(
        2,
        &[
            "plan",
            "--src",
            "aws:us-east-1",
            "--dst",
            dsts,
            "--via",
            "direct",
        ],
    );
    assert!(err.contains("a broadcast plans its own trees"), "{err}");
}
