//! Every link of an emulated sky measured with the tools people measure paths with: `ping`
//! for the round trip (each region pair, and the control path from this machine to each
//! region) and `iperf3` for the goodput of each direction, against what the sky was built to
//! be. Within 10% of the target, on every link (goodput: the best of up to three runs, none
//! above it).

use std::process::Command;

use serde_json::Value;

use crate::util::{stderr, stdout};

/// How far a measurement may be from its target.
const WITHIN: f64 = 0.10;

/// Runs `cmd` in namespace `ns` (`None`: here), which must succeed.
fn run_in(ns: Option<&str>, cmd: &[&str]) -> String {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(cmd);
            c
        }
        None => {
            let mut c = Command::new(cmd[0]);
            c.args(&cmd[1..]);
            c
        }
    };
    let out = c.output().expect("run a measuring tool");
    assert!(out.status.success(), "{ns:?}: {cmd:?}: {}", stderr(&out));
    stdout(&out)
}

/// The round trip `ping` measures from `ns` to `addr`, in ms: the least of five, the path's
/// own (the sky delays packets in user space, so a loaded machine adds its own wait to some).
fn ping_ms(ns: Option<&str>, addr: &str) -> f64 {
    let out = run_in(ns, &["ping", "-c", "5", "-i", "0.2", "-q", addr]);
    // rtt min/avg/max/mdev = 216.6/216.9/217.2/0.2 ms
    let stats = out
        .lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.contains("min/avg")))
        .unwrap_or_else(|| panic!("no round-trip line in ping's output: {out}"))
        .1;
    stats.split('/').next().unwrap().parse().unwrap()
}

/// The goodput `iperf3` measures from `src` to `dst` (4 streams for 6 s after 3 s of slow
/// start), in Gbps.
fn iperf_gbps(src_ns: &str, src: &str, dst_ns: &str, dst: &str) -> f64 {
    run_in(Some(dst_ns), &["iperf3", "-s", "-B", dst, "-1", "-D"]);
    let mut out = String::new();
    for _ in 0..20 {
        let o = Command::new("ip")
            .args(["netns", "exec", src_ns, "iperf3", "-c", dst, "-B", src])
            .args(["-t", "6", "-O", "3", "-P", "4", "-J"])
            .output()
            .expect("run iperf3");
        if o.status.success() {
            out = stdout(&o);
            break;
        }
        // The server may not listen yet.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3: {e}: {out}"));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

fn assert_near(what: &str, got: f64, target: f64) {
    let error = (got - target).abs() / target;
    assert!(
        error <= WITHIN,
        "{what}: measured {got:.2}, target {target:.2} ({:.0}% off)",
        error * 100.0
    );
}

/// Checks every link of the sky whose manifest (`skyx sky status --json`) is `manifest`.
pub fn every_link_measures_as_built(manifest: &Value) {
    let spec = &manifest["spec"];
    let regions = spec["regions"].as_array().unwrap();
    let field = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
    for r in regions {
        let target = r["control_rtt_ms"].as_f64().unwrap();
        let got = ping_ms(None, &field(r, "addr"));
        // The gateway's own region has no delay: a loopback-like round trip.
        if target == 0.0 {
            assert!(got < 5.0, "gateway → {}: {got:.2} ms", field(r, "region"));
        } else {
            assert_near(
                &format!("gateway → {} (ms)", field(r, "region")),
                got,
                target,
            );
        }
    }
    for l in spec["links"].as_array().unwrap() {
        let (src, dst) = (field(l, "src"), field(l, "dst"));
        let region = |id: &str| regions.iter().find(|r| field(r, "region") == id).unwrap();
        let (a, b) = (region(&src), region(&dst));
        let (a_ns, b_ns) = (field(a, "namespace"), field(b, "namespace"));
        let (a_addr, b_addr) = (field(a, "addr"), field(b, "addr"));
        let rtt = ping_ms(Some(&a_ns), &b_addr);
        assert_near(
            &format!("{src} ↔ {dst} (ms)"),
            rtt,
            l["rtt_ms"].as_f64().unwrap(),
        );
        let cap = a["egress_cap_gbps"].as_f64().unwrap_or(f64::INFINITY);
        let target = l["shaped_gbps"].as_f64().unwrap().min(cap);
        // The best of up to three runs: one that falls short because this machine's cores
        // are busy with the test beside it says nothing of the link; one above the target
        // says the shaping leaks, whichever run it is.
        let what = format!("{src} → {dst} (Gbps)");
        let mut best: f64 = 0.0;
        for _ in 0..3 {
            let got = iperf_gbps(&a_ns, &a_addr, &b_ns, &b_addr);
            assert!(
                got <= target * (1.0 + WITHIN),
                "{what}: measured {got:.2}, target {target:.2}"
            );
            best = best.max(got);
            if best >= target * (1.0 - WITHIN) {
                break;
            }
        }
        assert_near(&what, best, target);
    }
}
