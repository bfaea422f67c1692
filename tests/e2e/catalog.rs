//! `skyx catalog`: inspecting the built-in catalog and reading user-supplied grid and price files.

use std::io::Write;

use serde_json::Value;

use crate::util::{fails_with, ok};

#[test]
fn regions_list_the_71_grid_regions_with_locations() {
    let v: Value = serde_json::from_str(&ok(&["catalog", "regions", "--json"])).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 71);
    assert!(rows.iter().all(|r| r["country"].is_string() && r["agent_vm_usd_per_hour"].as_f64().unwrap() > 0.0));
    let eu: Value = serde_json::from_str(&ok(&[
        "catalog",
        "regions",
        "--continent",
        "europe",
        "--json",
    ]))
    .unwrap();
    assert!(
        eu.as_array()
            .unwrap()
            .iter()
            .all(|r| r["continent"] == "europe")
    );
}

#[test]
fn pair_shows_both_directions() {
    let out = ok(&["catalog", "pair", "aws:us-east-1", "gcp:us-central1"]);
    assert!(
        out.contains("aws:us-east-1 -> gcp:us-central1-a:")
            && out.contains("gcp:us-central1-a -> aws:us-east-1:"),
        "{out}"
    );
    assert!(out.contains("Gbps") && out.contains("$0.0900/GB"), "{out}");
}

#[test]
fn sources_name_where_numbers_came_from() {
    let out = ok(&["catalog", "sources"]);
    assert!(
        out.contains("2022-11-28") && out.contains("SkyPilot"),
        "{out}"
    );
    let old = ok(&["catalog", "sources", "--grid", "2022-01"]);
    assert!(old.contains("2022-01-29"), "{old}");
}

#[test]
fn the_sent_column_can_be_chosen_to_compare_with_skyplane() {
    let pair = ["catalog", "pair", "aws:us-east-1", "gcp:europe-west4-a"];
    let received = ok(&pair);
    assert!(
        received.contains("-> gcp:europe-west4-a: 4.18 Gbps"),
        "{received}"
    );
    let sent = ok(&[&pair[..], &["--grid-column", "sent"]].concat());
    assert!(sent.contains("-> gcp:europe-west4-a: 5.00 Gbps"), "{sent}");
    let sources = ok(&[
        "catalog",
        "sources",
        "--grid",
        "2022-01",
        "--grid-column",
        "sent",
    ]);
    assert!(
        sources.contains("2022-01-29") && sources.contains("throughput_sent"),
        "{sources}"
    );
}

#[test]
fn a_user_grid_replaces_the_builtin_one_in_plans() {
    let dir = std::env::temp_dir().join(format!("skyx-e2e-grid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("measured.csv");
    let mut f = std::fs::File::create(&grid).unwrap();
    // The misspelled column as in Skyplane's Nov-2022 file; 2 Gbps direct, 20 Gbps via us-west-2.
    writeln!(
        f,
        "src_region,dst_region,iperf3_connections,throughput_recieved"
    )
    .unwrap();
    writeln!(f, "aws:us-east-1,aws:eu-west-1,64,2000000000").unwrap();
    writeln!(f, "aws:us-east-1,aws:us-west-2,64,20000000000").unwrap();
    writeln!(f, "aws:us-west-2,aws:eu-west-1,64,20000000000").unwrap();
    drop(f);
    let g = grid.to_str().unwrap();
    let v: Value = serde_json::from_str(&ok(&[
        "plan",
        "--json",
        "--throughput-grid",
        g,
        "--src",
        "aws:us-east-1",
        "--dst",
        "aws:eu-west-1",
        "--max-vms-per-region",
        "1",
        "--throughput-floor",
        "4",
    ]))
    .unwrap();
    assert!(v["vms"]["aws:us-west-2"].as_u64().unwrap() >= 1, "{v}");
    let out = ok(&["catalog", "sources", "--throughput-grid", g]);
    assert!(out.contains("measured.csv"), "{out}");

    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "src_region,dst_region,throughput_received\naws:us-east-1,aws:eu-west-1,lots\n",
    )
    .unwrap();
    let err = fails_with(
        2,
        &[
            "catalog",
            "regions",
            "--throughput-grid",
            bad.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("bad.csv: line 2") && err.contains("'lots' is not a number"),
        "{err}"
    );
    let err = fails_with(
        2,
        &[
            "catalog",
            "regions",
            "--throughput-grid",
            "/nonexistent/grid.csv",
        ],
    );
    assert!(
        err.contains("cannot open throughput grid file /nonexistent/grid.csv"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
