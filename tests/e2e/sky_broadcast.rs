//! A broadcast in the emulated sky, as a user drives it: one dataset in the source region's S3
//! copied by one `skyx cp` to three destinations on two other clouds (two Azurite regions and
//! a GCS one), planned as trees that fork at a relay, each destination read back in its own
//! region and compared byte for byte. Needs root (network namespaces and tc), as CI has.

use crate::sky::{files_under, sky_of};
use crate::stores::{Scratch, dataset, report, write_local};

const SRC: &str = "aws:us-east-1";
/// The destinations; the first also relays to the other two in the grid's cheapest trees
/// above the floor (us-east-1's direct paths to the other two are slow or dear).
const DSTS: [&str; 3] = [
    "azure:southafricanorth",
    "azure:brazilsouth",
    "gcp:asia-southeast1-a",
];
/// 1 Gbps measured, at the sky's 1/20 scale: well above the slowest direct path, so the plan
/// relays.
const FLOOR_GBPS: &str = "0.05";

#[test]
fn a_broadcast_to_three_regions_forks_at_a_relay_and_lands_byte_identical_everywhere() {
    let scratch = Scratch::new("sky-broadcast");
    let regions = [SRC, DSTS[0], DSTS[1], DSTS[2]];
    let (sky, _) = sky_of(&scratch, "bc", (250, 5), &regions, &[]);
    let state = sky.state.display().to_string();

    let data = dataset(24, 24 << 20);
    let local = scratch.dir.join("data");
    write_local(&local, &data);
    sky.in_region(SRC, &["mb", "s3://bsrc"]);
    sky.in_region(
        SRC,
        &[
            "cp",
            "-r",
            &local.display().to_string(),
            "s3://bsrc/ds/",
            "--no-progress",
        ],
    );
    let urls = [
        "az://devstoreaccount1/bdst0",
        "az://devstoreaccount1/bdst1",
        "gs://bdst2",
    ];
    for (region, url) in DSTS.iter().zip(urls) {
        sky.in_region(region, &["mb", url]);
    }
    let targets: Vec<String> = urls.iter().map(|u| format!("{u}/ds/")).collect();
    let dst_regions = DSTS.join(",");
    let mut args = vec!["cp", "-r", "s3://bsrc/ds/"];
    args.extend(targets.iter().map(String::as_str));
    args.extend([
        "--sky",
        &state,
        "--src-region",
        SRC,
        "--dst-region",
        &dst_regions,
        "--throughput-floor",
        FLOOR_GBPS,
        // Bytes on the wire are then the data's, to count what crossed each link.
        "--compress",
        "off",
        "--json",
        "--no-progress",
    ]);
    let r = report(&sky.skyx(&args));
    assert_eq!(r["objects_copied"].as_u64(), Some(data.len() as u64), "{r}");
    assert_eq!(r["objects_failed"].as_array().map(Vec::len), Some(0), "{r}");
    // The trees fork at the first destination: the source sends each byte once, to it, and
    // it sends each byte on to each of the other two.
    let total: u64 = data.values().map(|&n| n as u64).sum();
    let hops = r["hops"].as_array().unwrap();
    let wire = |from: &str, to: &str| -> u64 {
        hops.iter()
            .filter(|h| h["src_region"] == from && h["dst_region"] == to)
            .map(|h| h["wire_bytes"].as_u64().unwrap())
            .sum()
    };
    let from_src: u64 = hops
        .iter()
        .filter(|h| h["src_region"] == SRC)
        .map(|h| h["wire_bytes"].as_u64().unwrap())
        .sum();
    assert!(
        from_src >= total && from_src < total + total / 10,
        "the source sent {from_src} bytes for {total}: {hops:?}"
    );
    assert!(wire(SRC, DSTS[0]) >= total, "{hops:?}");
    for dst in &DSTS[1..] {
        assert!(
            wire(DSTS[0], dst) >= total,
            "{} -> {dst}: {hops:?}",
            DSTS[0]
        );
    }
    // Every destination holds every byte, read back in its own region.
    let want = files_under(&local);
    for (i, (region, target)) in DSTS.iter().zip(&targets).enumerate() {
        let back = scratch.dir.join(format!("back{i}"));
        sky.in_region(
            region,
            &[
                "cp",
                "-r",
                target,
                &back.display().to_string(),
                "--no-progress",
            ],
        );
        assert!(
            files_under(&back) == want,
            "{target} differs from the source"
        );
    }
    scratch.assert_no_agents_left();
}
