//! The emulated sky end to end, as a user drives it: `skyx sky up` (three regions, two clouds,
//! links delayed by their measured round trips), every link checked with `ping` and `iperf3`,
//! `skyx bench paths` against the shaping, an overlay `skyx cp` between two regions' own stores
//! with its contents checked byte for byte, a three-stage `skyx run` across the three regions
//! with each region's data in its own store, and `skyx sky down` leaving no namespace, link or
//! process behind. Also: the links of a copy's relay cut mid-copy (every packet dropped, no
//! reset, as a cut in the middle of a path looks): the copy ends naming the stall, and once
//! the link heals a resume completes it with nothing left behind. Needs root (network
//! namespaces and tc), as CI has.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::stores::{Dataset, Scratch, dataset, report, write_local};
use crate::util::{bin, stderr, stdout};

const SRC: &str = "aws:us-east-1";
const RELAY_FAST: &str = "gcp:europe-west1-b";
const DST: &str = "gcp:asia-southeast1-a";

/// A sky for one test, torn down when dropped (also when the test fails).
pub(crate) struct TestSky {
    name: String,
    subnet: String,
    pub(crate) state: PathBuf,
    scratch_state: PathBuf,
}

impl TestSky {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("skyx"));
        c.args(args)
            .env_remove("RUST_LOG")
            .env_remove("SKYX_SKY")
            .env("SKYX_STATE_DIR", &self.scratch_state);
        c
    }

    pub(crate) fn skyx(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run skyx")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let o = self.skyx(args);
        assert!(
            o.status.success(),
            "skyx {args:?} failed: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs `skyx ARGS` inside `region`'s namespace with its store's variables.
    pub(crate) fn in_region(&self, region: &str, args: &[&str]) -> String {
        let state = self.state.display().to_string();
        let skyx = bin("skyx").display().to_string();
        let mut full = vec!["sky", "exec", region, "--state-dir", &state, "--", &skyx];
        full.extend_from_slice(args);
        self.ok(&full)
    }

    fn down(&self) -> Output {
        self.skyx(&[
            "sky",
            "down",
            "--name",
            &self.name,
            "--state-dir",
            &self.state.display().to_string(),
        ])
    }
}

impl Drop for TestSky {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

fn namespaces_named(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line or working directory is inside `dir` (the sky's servers).
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline =
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie && (cmdline.contains(&needle) || cwd.starts_with(dir)) {
            out.push(pid);
        }
    }
    out
}

pub(crate) fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The three regions (in this order: the mesh link from region i to region j is `to{j}` in
/// i's namespace) brought up at 1/20 scale as sky `{prefix}{pid}` on subnet
/// 10.`{subnet_base}+pid%span`: a name and subnet of their own, since a user's default sky
/// (skyx, 10.77/16) may be up, and the tests of this process run at once. Returns the sky and
/// what `up` printed.
/// Brings up a sky of the three regions at 1/20 scale, `extra` flags added to `sky up`.
fn sky_up(
    scratch: &Scratch,
    prefix: &str,
    subnets: (u32, u32),
    extra: &[&str],
) -> (TestSky, String) {
    sky_of(scratch, prefix, subnets, &[SRC, RELAY_FAST, DST], extra)
}

/// As [`sky_up`], of `regions`.
pub(crate) fn sky_of(
    scratch: &Scratch,
    prefix: &str,
    (subnet_base, span): (u32, u32),
    regions: &[&str],
    extra: &[&str],
) -> (TestSky, String) {
    let id = std::process::id() % 100_000;
    let sky = TestSky {
        name: format!("{prefix}{id}"),
        subnet: (subnet_base + id % span).to_string(),
        state: scratch.dir.join("sky"),
        scratch_state: scratch.state(),
    };
    let state = sky.state.display().to_string();
    let regions = regions.join(",");
    let mut args = vec![
        "sky",
        "up",
        "--name",
        &sky.name,
        "--state-dir",
        &state,
        "--regions",
        &regions,
        "--scale",
        "0.05",
        "--subnet",
        &sky.subnet,
    ];
    args.extend_from_slice(extra);
    let up = sky.ok(&args);
    (sky, up)
}

/// Writes `data` locally, copies it into a new bucket `src` of the source region's S3 under
/// `ds/`, and makes an empty bucket `dst` in the destination region's GCS. Returns the local
/// copy.
fn stage(sky: &TestSky, scratch: &Scratch, data: &Dataset, src: &str, dst: &str) -> PathBuf {
    let local = scratch.dir.join("data");
    write_local(&local, data);
    let (local_arg, src_url) = (local.display().to_string(), format!("s3://{src}/ds/"));
    sky.in_region(SRC, &["mb", &format!("s3://{src}")]);
    sky.in_region(SRC, &["cp", "-r", &local_arg, &src_url, "--no-progress"]);
    sky.in_region(DST, &["mb", &format!("gs://{dst}")]);
    local
}

#[test]
fn a_sky_comes_up_measures_as_shaped_carries_an_overlay_copy_and_goes_away() {
    let scratch = Scratch::new("sky");
    let (sky, up) = sky_up(&scratch, "e2e", (100, 100), &[]);
    let name = sky.name.clone();
    let state = sky.state.display().to_string();
    let regions = format!("{SRC},{RELAY_FAST},{DST}");
    assert!(up.contains(&format!("{name}-aws-us-east-1")), "{up}");
    assert_eq!(namespaces_named(&format!("{name}-")).len(), 3);
    // A second sky of the same name is refused, naming the way out.
    let again = sky.skyx(&[
        "sky",
        "up",
        "--name",
        &name,
        "--state-dir",
        &state,
        "--regions",
        &regions,
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("already up"), "{}", stderr(&again));

    // Every link, the control paths from here included, has the round trip and the goodput
    // it was built with, as ping and iperf3 measure them.
    let status = sky.ok(&["sky", "status", "--state-dir", &state, "--json"]);
    crate::sky_links::every_link_measures_as_built(&serde_json::from_str(&status).unwrap());

    // Every ordered pair measures what it was shaped to (link or VM egress cap), within the
    // error of a 3-second probe. (At 1/20 scale the slowest link runs at 5.5 Mbit/s; at the
    // benchmark's 1/50 it is 2.2 Mbit/s, where a few dozen flows' losses and timeouts make
    // short probes read low: 0.84 of the shaping over 3 s in bench/results. They can read
    // high too: the probe's window is the listener's clock between two snapshot requests that
    // travel with the data, so a delay line that stalls on a loaded machine while it holds
    // the first request, and then catches up, shortens the window and not the bytes: 1.10 of
    // the shaping in a CI run of 2026-12-03. A link left unshaped reads many times it.)
    let grid = scratch.dir.join("grid.csv");
    let measured = sky.ok(&[
        "bench",
        "paths",
        "--sky",
        &state,
        "--seconds",
        "3",
        "--connections",
        "8",
        "--json",
        "--out",
        &grid.display().to_string(),
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&measured).unwrap();
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let (got, shaped) = (
            row["gbps"].as_f64().unwrap(),
            row["shaped_gbps"].as_f64().unwrap(),
        );
        let ratio = got / shaped;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "{} → {}: measured {:.1} Mbit/s, shaped {:.1} Mbit/s",
            row["src"],
            row["dst"],
            got * 1e3,
            shaped * 1e3
        );
    }
    // The measured grid is a catalog grid: the planner takes it and routes around the slow
    // direct path (5.5 Mbit/s shaped at this scale, against 212 through the relay).
    let plan = sky.ok(&[
        "plan",
        "--src",
        SRC,
        "--dst",
        DST,
        "--volume",
        "1GB",
        "--throughput-grid",
        &grid.display().to_string(),
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let paths = plan["paths"].as_array().unwrap();
    assert!(
        paths
            .iter()
            .all(|p| p["regions"].as_array().unwrap().len() == 3),
        "expected every path through a relay: {plan}"
    );

    // An overlay copy from the S3 store in aws:us-east-1 to the GCS store in
    // gcp:asia-southeast1-a, through a relay agent in the third namespace.
    // 40 MiB in all: enough for the relay to pay for its VM's minute (the direct path would
    // take a minute at this scale; a few megabytes go direct, correctly).
    let data = dataset(40, 40 << 20);
    let local = stage(&sky, &scratch, &data, "sky-src", "sky-dst");
    let out = sky.skyx(&[
        "cp",
        "-r",
        "s3://sky-src/ds/",
        "gs://sky-dst/ds/",
        "--sky",
        &state,
        "--src-region",
        SRC,
        "--dst-region",
        DST,
        "--json",
        "--no-progress",
    ]);
    let r = report(&out);
    assert_eq!(r["objects_copied"].as_u64(), Some(data.len() as u64), "{r}");
    let hop_regions: Vec<(String, String)> = r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["src_region"].as_str().unwrap().into(),
                h["dst_region"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(hop_regions.len(), 2, "one relay: {hop_regions:?}");
    assert_eq!(hop_regions[0].0, SRC);
    assert_eq!(hop_regions[1].1, DST);
    // Read the destination back inside its region and compare every byte.
    let back = scratch.dir.join("back");
    sky.in_region(
        DST,
        &[
            "cp",
            "-r",
            "gs://sky-dst/ds/",
            &back.display().to_string(),
            "--no-progress",
        ],
    );
    let (want, got) = (files_under(&local), files_under(&back));
    assert_eq!(want.len(), data.len());
    assert!(want == got, "the copy's contents differ from the source");
    // A URL whose cloud is not the region's store is refused before anything runs.
    let wrong = sky.skyx(&[
        "cp",
        "-r",
        "gs://sky-dst/ds/",
        "gs://sky-dst/x/",
        "--sky",
        &state,
        "--src-region",
        SRC,
        "--dst-region",
        DST,
    ]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("s3://, not gs://"),
        "{}",
        stderr(&wrong)
    );
    scratch.assert_no_agents_left();

    // A three-stage pipeline across the three regions, each region's data in its own store:
    // a reads its input where it is (S3 in aws:us-east-1), b's and c's inputs cross the shaped
    // links through agents into GCS, and every stage checks its input before it works.
    let pipe_dir = scratch.dir.join("pipeline");
    crate::run::raw_input(&pipe_dir);
    sky.in_region(
        SRC,
        &[
            "cp",
            "-r",
            &pipe_dir.join("raw").display().to_string(),
            "s3://sky-src/raw/",
            "--no-progress",
        ],
    );
    let spec = pipe_dir.join("three.toml");
    std::fs::write(
        &spec,
        crate::run::pipeline_over(
            &pipe_dir,
            "s3://sky-src/raw/",
            SRC,
            &format!(r#"["{SRC}"]"#),
            &format!(r#"["{RELAY_FAST}"]"#),
            &format!(r#"["{DST}"]"#),
        ),
    )
    .unwrap();
    let out = sky.skyx(&[
        "run",
        &spec.display().to_string(),
        "--sky",
        &state,
        "--json",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = v["report"]["stages"].as_array().unwrap();
    let regions: Vec<&str> = stages
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, [SRC, RELAY_FAST, DST]);
    let transfers = v["report"]["transfers"].as_array().unwrap();
    for t in transfers {
        // raw → a stays in its region; every other edge crossed, with a prediction beside it.
        let local = t["data"] == "raw" && t["to_stage"] == "a";
        assert_eq!(t["local"], local, "{t}");
        if !local {
            assert!(t["bytes"].as_u64().unwrap() > 0, "{t}");
            assert!(t["predicted_s"].as_f64().is_some(), "{t}");
        }
    }
    assert!(pipe_dir.join("final-manifest").exists());
    // The data is where the plan put it: b's output in its region's GCS, and its copy among
    // c's inputs in the destination region's.
    let listed = sky.in_region(
        RELAY_FAST,
        &["ls", "-r", "gs://skyx-pipelines/e2e-three/b/output/"],
    );
    assert!(listed.contains("MANIFEST"), "{listed}");
    let listed = sky.in_region(
        DST,
        &["ls", "-r", "gs://skyx-pipelines/e2e-three/c/inputs/b/"],
    );
    assert!(listed.contains("part-3"), "{listed}");
    scratch.assert_no_agents_left();

    // Again from scratch, each stage on an agent of its own in its region's namespace (the
    // path stage VMs take): the agent brings the inputs down from its region's store itself.
    std::fs::remove_file(pipe_dir.join("final-manifest")).unwrap();
    let agents_state = scratch.dir.join("state-agents").display().to_string();
    let out = sky.skyx(&[
        "run",
        &spec.display().to_string(),
        "--sky",
        &state,
        "--compute",
        "agents",
        "--state-dir",
        &agents_state,
        "--json",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(pipe_dir.join("final-manifest").exists());
    scratch.assert_no_agents_left();

    // Down removes every namespace, link and process, and the state directory.
    let down = sky.down();
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(namespaces_named(&format!("{name}-")).is_empty());
    let links = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}c"))
        })
        .count();
    assert_eq!(links, 0, "control links left in the root namespace");
    assert!(
        processes_under(&sky.state).is_empty(),
        "{:?}",
        processes_under(&sky.state)
    );
    assert!(!sky.state.exists());
}

/// Runs `cmd` in namespace `ns` (`ip netns exec`), panicking with its stderr if it fails.
fn in_namespace(ns: &str, cmd: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("ip netns exec");
    assert!(out.status.success(), "{ns}: {cmd:?}: {}", stderr(&out));
    stdout(&out)
}

/// Whether namespace `ns` has an established TCP connection to `addr`.
fn connected_to(ns: &str, addr: std::net::Ipv4Addr) -> bool {
    // /proc/net/tcp writes addresses as the little-endian hex of the 32-bit word.
    let hex = format!("{:08X}", u32::from_le_bytes(addr.octets()));
    in_namespace(ns, &["cat", "/proc/net/tcp"])
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].starts_with(&hex) && f[3] == "01"
        })
}

/// The names of `bucket`'s objects under `prefix`, asked of the GCS JSON API at `endpoint`
/// directly (skyx's own listings never show its staging).
fn gcs_names(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let host = endpoint.trim_start_matches("http://");
    let mut conn = TcpStream::connect(host).expect("connect to the GCS emulator");
    write!(
        conn,
        "GET /storage/v1/b/{bucket}/o?prefix={prefix} HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").expect("an HTTP answer").1;
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON listing");
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for `child`, killing it and failing if it runs past `limit` (a copy that never
/// notices a cut link would run for many minutes); the failure shows the agents' logs (in
/// `logs/` of the state directory) beside the gateway's.
fn wait_at_most(mut child: Child, limit: Duration, what: &str, state: &Path) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            let agents: String = std::fs::read_dir(state.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let log = std::fs::read_to_string(e.path()).unwrap_or_default();
                    format!("--- {}\n{log}", e.file_name().to_string_lossy())
                })
                .collect();
            panic!(
                "{what}: still running {} s after the cut; nothing noticed it\n{}\n{agents}",
                limit.as_secs(),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_relay_link_cut_mid_copy_ends_the_copy_naming_the_stall_and_a_resume_completes_it() {
    let scratch = Scratch::new("sky-cut");
    // Apart from the other sky test's 100-199.
    // The gateway sits by the destination: this test watches the destination's store for the
    // first landing, and must see it while most of the copy is still to come.
    let (sky, _) = sky_up(&scratch, "cut", (200, 50), &["--gateway-at", DST]);
    let (name, subnet) = (sky.name.clone(), sky.subnet.clone());
    let state = sky.state.display().to_string();
    let ns = |region: &str| format!("{name}-{}", region.replace(':', "-"));
    let (relay_ns, dst_ns) = (ns(RELAY_FAST), ns(DST));
    let dst_addr: std::net::Ipv4Addr = format!("10.{subnet}.0.3").parse().unwrap();
    let gcs = format!("http://{dst_addr}:9023");

    // 160 MiB: about eight seconds through the relay at this scale. In 1 MiB chunks: with the
    // default 8 MiB, the object's 20 chunks all go out at once over the hop's connections and
    // land together near the end, leaving the cut too little of the copy to catch (CI saw the
    // copy end whole, exit 0, before the cut took hold).
    let data = dataset(10, 160 << 20);
    let local = stage(&sky, &scratch, &data, "cut-src", "cut-dst");
    let copy = [
        "cp",
        "-r",
        "s3://cut-src/ds/",
        "gs://cut-dst/ds/",
        "--sky",
        &state,
        "--src-region",
        SRC,
        "--dst-region",
        DST,
        "--via",
        RELAY_FAST,
        "--chunk-size",
        "1MiB",
        "--json",
        "--no-progress",
    ];
    let mut child = sky
        .command(&copy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first chunks have landed through the relay, every packet between the relay and
    // the sink is dropped, both ways: no reset, no error, just silence.
    while gcs_names(&gcs, "cut-dst", ".skyx-uploads/").is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the copy ended ({status}) before a chunk landed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        connected_to(&relay_ns, dst_addr),
        "the relay carries the copy"
    );
    for (ns, dev) in [(&relay_ns, "to2"), (&dst_ns, "to1")] {
        in_namespace(
            ns,
            &[
                "tc", "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "0",
            ],
        );
    }
    let out = wait_at_most(
        child,
        Duration::from_secs(240),
        "a copy over a cut link",
        &sky.scratch_state,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stalled"), "the cause is named: {err}");
    assert!(
        err.contains(&format!("{RELAY_FAST}#")),
        "the reporting relay is named: {err}"
    );
    assert!(err.contains("--resume"), "the way on is named: {err}");
    scratch.assert_no_agents_left();

    // The link heals (unshaped now); the resume lands the rest, intact.
    for (ns, dev) in [(&relay_ns, "to2"), (&dst_ns, "to1")] {
        in_namespace(ns, &["tc", "qdisc", "del", "dev", dev, "root"]);
    }
    let mut resume = copy.to_vec();
    resume.push("--resume");
    let r = report(&sky.skyx(&resume));
    let landed = r["objects_copied"].as_u64().unwrap() + r["objects_resumed"].as_u64().unwrap();
    assert_eq!(landed, data.len() as u64, "{r}");
    // What landed before the cut is not sent again.
    let total: u64 = data.values().map(|&n| n as u64).sum();
    for hop in r["hops"].as_array().unwrap() {
        let wire = hop["wire_bytes"].as_u64().unwrap();
        assert!(wire < total, "the resume sent everything again: {hop}");
    }
    let back = scratch.dir.join("back");
    sky.in_region(
        DST,
        &[
            "cp",
            "-r",
            "gs://cut-dst/ds/",
            &back.display().to_string(),
            "--no-progress",
        ],
    );
    assert!(
        files_under(&local) == files_under(&back),
        "the copy's contents differ from the source"
    );
    assert_eq!(
        gcs_names(&gcs, "cut-dst", ".skyx-uploads/"),
        Vec::<String>::new(),
        "staged parts left"
    );
    scratch.assert_no_agents_left();
}
