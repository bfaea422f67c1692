//! `skyx run --compute ray`: a pipeline's stages as jobs of real Ray heads (two, started by
//! `deploy/test-servers.sh`, each its own cluster standing for a region: A offers 2 CPUs, B 16;
//! every stage of these pipelines asks for its instance's 8), the data between regions moving
//! through skyx agents. A stage no node of its region's cluster fits moves to another region;
//! a gateway killed while a stage's job runs finds that job when it runs again and does not run
//! the stage twice; Ctrl-C stops the running job and its command.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::run::{pipeline, pipeline_over, raw_input};
use crate::stores::Scratch;
use crate::util::{bin, ok, stderr, stdout};

pub(crate) fn head(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name}: start the servers with deploy/test-servers.sh (it starts the Ray heads)")
    })
}

/// Every job the head at `address` knows.
pub(crate) fn jobs(address: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--noproxy", "*"])
        .arg(format!("{address}/api/jobs/"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The jobs of stage `stage` of the pipeline whose spec is in `dir`, on the head at `address`.
pub(crate) fn stage_jobs(address: &str, dir: &Path, stage: &str) -> Vec<Value> {
    let marker = dir.display().to_string();
    jobs(address)
        .into_iter()
        .filter(|j| {
            j["metadata"]["skyx_stage"] == stage
                && j["runtime_env"]["env_vars"]["SKYX_STAGE_REQUEST"]
                    .as_str()
                    .is_some_and(|r| r.contains(&marker))
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(240), "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `skyx run SPEC --json --compute ray` with each region's head.
pub(crate) fn ray_run(
    scratch: &Scratch,
    spec: &Path,
    clusters: &[(&str, &str)],
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(bin("skyx"));
    cmd.args([
        "run",
        &spec.display().to_string(),
        "--json",
        "--compute",
        "ray",
    ])
    .args(extra)
    .env_remove("RUST_LOG")
    .env_remove("SKYX_SKY")
    .env("SKYX_STATE_DIR", scratch.state());
    if !extra.contains(&"--ray-skyx") {
        cmd.arg("--ray-skyx").arg(bin("skyx"));
    }
    for (region, address) in clusters {
        cmd.arg("--ray-cluster").arg(format!("{region}={address}"));
    }
    cmd
}

fn spawn_held(cmd: &mut Command, dir: &Path) -> Child {
    std::fs::write(dir.join("HOLD"), "").unwrap();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("stage b never started", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("skyx run ended early: {status}");
        }
        dir.join("b-started").exists()
    });
    child
}

/// The raw input and the three-region pipeline over it in `scratch` (`run::pipeline`): its spec.
pub(crate) fn three_region_spec(scratch: &Scratch) -> std::path::PathBuf {
    raw_input(&scratch.dir);
    let spec = scratch.dir.join("three.toml");
    std::fs::write(&spec, pipeline(&scratch.dir)).unwrap();
    spec
}

/// Stage c's regions (`run::pipeline` allows it the two Azure ones): the one the plan puts it
/// in first, and the other.
pub(crate) fn c_regions(spec: &Path) -> (String, &'static str) {
    let dry = ok(&["run", &spec.display().to_string(), "--dry-run", "--json"]);
    let plan: Value = serde_json::from_str(&dry).unwrap();
    let first = plan["plan"]["joint"]["stages"][2]["option"]["region"]
        .as_str()
        .unwrap()
        .to_string();
    let other = ["azure:eastus", "azure:westus2"]
        .into_iter()
        .find(|r| *r != first)
        .unwrap();
    (first, other)
}

#[test]
fn a_pipelines_stages_run_as_ray_jobs_and_a_resumed_run_follows_the_job_it_left() {
    let scratch = Scratch::new("run-ray");
    let b = head("SKYX_TEST_RAY_B");
    let spec = three_region_spec(&scratch);
    let regions = [
        "aws:us-east-1",
        "gcp:europe-west1-b",
        "azure:eastus",
        "azure:westus2",
    ];
    let clusters: Vec<(&str, &str)> = regions.iter().map(|r| (*r, b.as_str())).collect();

    // Killed while b's job runs: the job goes on without the gateway.
    let mut child = spawn_held(&mut ray_run(&scratch, &spec, &clusters, &[]), &scratch.dir);
    child.kill().unwrap();
    child.wait().unwrap();
    let running = stage_jobs(&b, &scratch.dir, "b");
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0]["status"], "RUNNING", "{running:?}");

    // Run again: a is done (journal), b's job is followed, not started again; once it is let
    // go, c runs behind it, checking both of its inputs.
    let rerun = ray_run(&scratch, &spec, &clusters, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(scratch.dir.join("HOLD")).unwrap();
    let out = rerun.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for (stage, runs) in [("a", "runs-a"), ("b", "runs-b")] {
        let text = std::fs::read_to_string(scratch.dir.join(runs)).unwrap();
        assert_eq!(text, "run\n", "stage {stage} ran more than once");
    }
    for stage in ["a", "b", "c"] {
        let jobs = stage_jobs(&b, &scratch.dir, stage);
        assert_eq!(jobs.len(), 1, "{stage}: {jobs:?}");
        assert_eq!(jobs[0]["status"], "SUCCEEDED", "{stage}: {jobs:?}");
        assert!(
            jobs[0]["entrypoint"]
                .as_str()
                .unwrap()
                .ends_with("stage-run")
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = v["report"]["stages"].as_array().unwrap();
    assert_eq!(stages[0]["resumed"], true, "{v}");
    let transfers = v["report"]["transfers"].as_array().unwrap();
    assert!(
        transfers
            .iter()
            .any(|t| t["data"] == "b" && t["local"] == false && t["bytes"].as_u64() > Some(0)),
        "{v}"
    );
    assert!(scratch.dir.join("final-manifest").exists());
    // The stage's log came back from the head.
    let log = std::fs::read_to_string(scratch.state().join("pipelines/e2e-three/c.log"));
    assert!(
        log.is_ok_and(|l| l.contains("Running entrypoint")),
        "c's log"
    );
    scratch.assert_no_agents_left();
}

#[test]
fn a_stage_no_node_of_its_cluster_fits_is_placed_in_another_region() {
    let scratch = Scratch::new("run-ray-fit");
    let (a, b) = (head("SKYX_TEST_RAY_A"), head("SKYX_TEST_RAY_B"));
    let spec = three_region_spec(&scratch);
    let (first, other) = c_regions(&spec);
    // c's first region is A's (2 CPUs: its 8 never fit), its other B's.
    let clusters = [
        ("aws:us-east-1", b.as_str()),
        ("gcp:europe-west1-b", b.as_str()),
        (first.as_str(), a.as_str()),
        (other, b.as_str()),
    ];
    let out = ray_run(&scratch, &spec, &clusters, &["--ray-start-timeout", "3s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["stages"][2]["region"], other, "{v}");
    let replans = v["report"]["replans"].as_array().unwrap();
    assert_eq!(replans.len(), 1, "{v}");
    // The job that waited on A never ran (Ray holds the stop skyx sent until the job's
    // supervisor starts, which on A it never does); c ran on B.
    let waited = stage_jobs(&a, &scratch.dir, "c");
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert!(
        ["PENDING", "STOPPED"].contains(&waited[0]["status"].as_str().unwrap()),
        "{waited:?}"
    );
    assert_eq!(stage_jobs(&b, &scratch.dir, "c")[0]["status"], "SUCCEEDED");
    assert!(scratch.dir.join("final-manifest").exists());
}

#[test]
fn ctrl_c_stops_the_running_ray_job_and_its_command() {
    let scratch = Scratch::new("run-ray-stop");
    let b = head("SKYX_TEST_RAY_B");
    raw_input(&scratch.dir);
    let spec = scratch.dir.join("three.toml");
    let dir = &scratch.dir;
    std::fs::write(
        &spec,
        pipeline_over(
            dir,
            &format!("{}/raw/", dir.display()),
            "aws:us-east-1",
            r#"["aws:us-east-1"]"#,
            r#"["aws:us-east-1"]"#,
            r#"["aws:us-east-1"]"#,
        ),
    )
    .unwrap();
    let clusters = [("aws:us-east-1", b.as_str())];
    let child = spawn_held(&mut ray_run(&scratch, &spec, &clusters, &[]), dir);
    let interrupt = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    wait_for("b's job was never stopped", || {
        stage_jobs(&b, dir, "b")[0]["status"] == "STOPPED"
    });
    // Its command (waiting on HOLD, which is still there) is gone with it.
    let hold = dir.join("HOLD").display().to_string();
    wait_for("b's command outlived its job", || {
        !Command::new("pgrep")
            .args(["-f", &hold])
            .status()
            .unwrap()
            .success()
    });
    assert!(!dir.join("final-manifest").exists());
}

#[test]
fn ray_settings_are_checked_before_anything_starts() {
    let scratch = Scratch::new("run-ray-bad");
    let spec = three_region_spec(&scratch);
    let refused = |mut cmd: Command, says: &str| {
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    };
    // Stages planned where no cluster is given.
    refused(
        ray_run(
            &scratch,
            &spec,
            &[("aws:us-east-1", "http://127.0.0.1:9")],
            &[],
        ),
        "is planned in gcp:europe-west1-b, which no --ray-cluster names",
    );
    refused(
        ray_run(&scratch, &spec, &[], &["--ray-cluster", "aws:us-east-1"]),
        "--ray-cluster aws:us-east-1: expected REGION=URL",
    );
    refused(
        ray_run(&scratch, &spec, &[("aws:us-east-1", "ftp://h")], &[]),
        "expected the head's dashboard as http(s)://HOST:PORT",
    );
    let mut local = Command::new(bin("skyx"));
    local
        .args(["run", &spec.display().to_string(), "--json"])
        .args(["--ray-cluster", "aws:us-east-1=http://127.0.0.1:9"])
        .env("SKYX_STATE_DIR", scratch.state());
    refused(local, "--ray-cluster is for --compute ray");
    assert!(!scratch.dir.join("runs-a").exists());
    scratch.assert_no_agents_left();
}
