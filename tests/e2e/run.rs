//! `skyx run`: planning the shipped example, rejecting bad specs with line numbers, and a
//! three-stage pipeline across three regions run end to end with local compute and real
//! agents between regions, where each stage checks its input is complete before it works;
//! then the gateway killed mid-pipeline and the pipeline resumed without redoing finished
//! stages; and a capacity failure re-planned to another region.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::stores::Scratch;
use crate::util::{bin, fails_with, ok, stderr, stdout};

#[test]
fn the_white_paper_example_plans_with_a_saving_over_one_cloud() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/pipelines/sky-ml.toml"
    );
    let out = ok(&["run", example, "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let joint = &v["plan"]["joint"];
    let single = &v["plan"]["single_cloud"][1];
    assert!(joint["total_usd"].as_f64().unwrap() < single["total_usd"].as_f64().unwrap());
    // Preprocessing stays on a confidential-computing instance.
    let pre = &joint["stages"][0]["option"];
    assert!(
        pre["instance"].as_str().unwrap().starts_with("Standard_DC"),
        "{pre}"
    );
    // Every stage meets the 28 h deadline in the joint plan; the greedy one does not.
    assert!(joint["makespan_s"].as_f64().unwrap() <= 28.0 * 3600.0);
    assert_eq!(v["plan"]["greedy_meets_objective"], false);
}

#[test]
fn bad_specs_are_refused_with_the_line_at_fault() {
    let scratch = Scratch::new("run-bad");
    let spec = scratch.dir.join("bad.toml");
    std::fs::write(
        &spec,
        "[pipeline]\nname = \"x\"\nobjective = \"min-cost\"\n\n[[stage]]\nname = \"a\"\nrun = \"true\"\ninputs = [\"nothing\"]\ncandidate = [{ instance = \"m6i.2xlarge\", hours = 1 }]\n",
    )
    .unwrap();
    let err = fails_with(2, &["run", &spec.display().to_string(), "--dry-run"]);
    assert!(err.contains("bad.toml:8:"), "{err}");
    assert!(err.contains("\"nothing\""), "{err}");
    // A stage whose rules leave nowhere to run names the stage and why.
    std::fs::write(
        &spec,
        "[pipeline]\nname = \"x\"\nobjective = \"min-cost\"\n[[input]]\nname = \"in\"\nurl = \"/tmp\"\nregion = \"aws:us-east-1\"\nsize = \"1GB\"\n[[stage]]\nname = \"a\"\nrun = \"true\"\ninputs = [\"in\"]\nconstraints = { confidential = true, clouds = [\"aws\"] }\ncandidate = [{ instance = \"Standard_DC8s_v3\", hours = 1 }]\n",
    )
    .unwrap();
    let err = fails_with(2, &["run", &spec.display().to_string(), "--dry-run"]);
    assert!(
        err.contains("bad.toml:9:") && err.contains("stage a cannot run"),
        "{err}"
    );
    assert!(err.contains("cloud azure is not allowed"), "{err}");
}

/// Three stages pinned to three regions of three clouds. Each stage first checks its input
/// against the manifest the previous stage wrote (every file present, every checksum right),
/// then writes its own output and manifest. Stages `a` and `b` count their runs in `runs-a` and
/// `runs-b`; `b` announces itself and, when `HOLD` exists, waits for it to go away.
pub fn pipeline(dir: &Path) -> String {
    let raw = format!("{}/raw/", dir.display());
    pipeline_over(
        dir,
        &raw,
        "aws:us-east-1",
        r#"["aws:us-east-1"]"#,
        r#"["gcp:europe-west1-b"]"#,
        r#"["azure:eastus", "azure:westus2"]"#,
    )
}

/// The three-stage pipeline reading `raw` (a prefix holding files and their MANIFEST) in
/// `raw_region`, with each stage's allowed regions (TOML arrays).
pub fn pipeline_over(
    dir: &Path,
    raw: &str,
    raw_region: &str,
    a_regions: &str,
    b_regions: &str,
    c_regions: &str,
) -> String {
    let check =
        r#"cd "$IN" && sha256sum -c --quiet MANIFEST || { echo "input incomplete" >&2; exit 9; }"#;
    let write = r#"cd "$SKYX_OUTPUT" && for i in 1 2 3; do head -c $((200000 * i)) /dev/urandom > part-$i; done && sha256sum part-* > MANIFEST"#;
    let d = dir.display();
    let instance = |regions: &str| {
        if regions.contains("aws:") {
            "m6i.2xlarge"
        } else if regions.contains("gcp:") {
            "n2-standard-8"
        } else {
            "Standard_D8s_v5"
        }
    };
    let (ia, ib, ic) = (
        instance(a_regions),
        instance(b_regions),
        instance(c_regions),
    );
    format!(
        r#"[pipeline]
name = "e2e-three"
objective = "min-cost"

[[input]]
name = "raw"
url = "{raw}"
region = "{raw_region}"
size = "1MB"

[[stage]]
name = "a"
run = 'IN=$SKYX_INPUT_raw; {check} && echo run >> {d}/runs-a && {write}'
inputs = ["raw"]
output = {{ size = "1MB" }}
constraints = {{ regions = {a_regions} }}
candidate = [{{ instance = "{ia}", hours = 1 }}]

[[stage]]
name = "b"
run = 'IN=$SKYX_INPUT_a; {check} && echo run >> {d}/runs-b && touch {d}/b-started && while [ -e {d}/HOLD ]; do sleep 0.2; done && {write}'
inputs = ["a"]
output = {{ size = "1MB" }}
constraints = {{ regions = {b_regions} }}
candidate = [{{ instance = "{ib}", hours = 1 }}]

[[stage]]
name = "c"
run = 'IN=$SKYX_INPUT_b; {check} && (IN=$SKYX_INPUT_raw; {check}) && {write} && cp MANIFEST {d}/final-manifest'
inputs = ["b", "raw"]
output = {{ size = "1MB" }}
constraints = {{ regions = {c_regions} }}
candidate = [{{ instance = "{ic}", hours = 1 }}]
"#
    )
}

pub fn raw_input(dir: &Path) {
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("for i in 1 2 3 4; do head -c 300000 /dev/urandom > in-$i; done && sha256sum in-* > MANIFEST")
        .current_dir(&raw)
        .status()
        .unwrap();
    assert!(status.success());
}

fn run_cmd(scratch: &Scratch, spec: &Path) -> Command {
    let mut cmd = Command::new(bin("skyx"));
    cmd.args(["run", &spec.display().to_string(), "--json"])
        .env_remove("RUST_LOG")
        .env_remove("SKYX_SKY")
        .env("SKYX_STATE_DIR", scratch.state());
    cmd
}

#[test]
fn a_three_region_pipeline_runs_each_stage_behind_its_data_and_resumes_after_the_gateway_dies() {
    let scratch = Scratch::new("run-three");
    raw_input(&scratch.dir);
    let spec = scratch.dir.join("three.toml");
    std::fs::write(&spec, pipeline(&scratch.dir)).unwrap();

    // First run: stage b holds; the gateway is killed while b runs.
    std::fs::write(scratch.dir.join("HOLD"), "").unwrap();
    let mut child = run_cmd(&scratch, &spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !scratch.dir.join("b-started").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "stage b never started"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("skyx run ended early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The orphaned stage command is what a VM left running would be: stop it.
    let hold = scratch.dir.join("HOLD");
    let _ = Command::new("pkill")
        .args(["-f", &hold.display().to_string()])
        .status();
    std::fs::remove_file(&hold).unwrap();
    std::fs::remove_file(scratch.dir.join("b-started")).unwrap();
    assert_eq!(
        std::fs::read_to_string(scratch.dir.join("runs-a")).unwrap(),
        "run\n"
    );

    // Second run: resumes. a is not run again; b and c run; every input checked out.
    let out = run_cmd(&scratch, &spec).output().unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    scratch.assert_no_agents_left();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &v["report"];
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages[0]["resumed"], true, "{report}");
    assert_eq!(
        std::fs::read_to_string(scratch.dir.join("runs-a")).unwrap(),
        "run\n"
    );
    let regions: Vec<&str> = stages
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions[0], "aws:us-east-1");
    assert_eq!(regions[1], "gcp:europe-west1-b");
    assert!(regions[2].starts_with("azure:"));
    // Stage c started only after both of its inputs landed.
    let c_start = stages[2]["started_s"].as_f64().unwrap();
    for t in report["transfers"].as_array().unwrap() {
        if t["to_stage"] == "c" {
            assert!(t["finished_s"].as_f64().unwrap() <= c_start, "{t}");
        }
    }
    // a's output reached b before b started (before the kill): the resumed run does not move
    // it again; b's output crosses to c through real agents.
    let transfers = report["transfers"].as_array().unwrap();
    assert!(!transfers.iter().any(|t| t["data"] == "a"), "{report}");
    assert!(
        transfers
            .iter()
            .any(|t| t["data"] == "b" && t["local"] == false && t["bytes"].as_u64() > Some(0)),
        "{report}"
    );
    assert!(scratch.dir.join("final-manifest").exists());
}

#[test]
fn a_stage_without_capacity_is_re_planned_to_another_region() {
    let scratch = Scratch::new("run-capacity");
    raw_input(&scratch.dir);
    let spec = scratch.dir.join("three.toml");
    std::fs::write(&spec, pipeline(&scratch.dir)).unwrap();
    // Where c would go first has no capacity: it must move to the other allowed region.
    let dry = ok(&["run", &spec.display().to_string(), "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let first = plan["plan"]["joint"]["stages"][2]["option"]["region"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run_cmd(&scratch, &spec)
        .env("SKYX_FAULT_NO_CAPACITY", &first)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c_region = v["report"]["stages"][2]["region"].as_str().unwrap();
    assert_ne!(c_region, first);
    assert!(c_region.starts_with("azure:"));
    assert_eq!(v["report"]["replans"].as_array().unwrap().len(), 1);
    assert!(scratch.dir.join("final-manifest").exists());
}

#[test]
fn the_runnable_example_runs_from_the_repository_root() {
    let scratch = Scratch::new("run-example");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(bin("skyx"))
        .args(["run", "examples/pipelines/catalog-report.toml", "--json"])
        .current_dir(root)
        .env_remove("RUST_LOG")
        .env_remove("SKYX_SKY")
        .env("SKYX_STATE_DIR", scratch.state())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    scratch.assert_no_agents_left();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let publish = &v["report"]["stages"][2];
    let region = publish["region"].as_str().unwrap().replace(':', "_");
    // The report counts every CSV the catalog ships (each checked through two regions).
    let csvs = std::fs::read_dir(std::path::Path::new(root).join("catalog/data"))
        .unwrap()
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "csv"))
        .count();
    let report = std::fs::read_to_string(scratch.state().join(format!(
        "pipelines/catalog-report/regions/{region}/publish/output/report.txt"
    )))
    .unwrap();
    assert!(
        report.contains(&format!("catalog files: {csvs}\n")),
        "{report}"
    );
}

#[test]
fn stages_run_on_agents_of_their_own_when_asked() {
    let scratch = Scratch::new("run-agents");
    raw_input(&scratch.dir);
    let spec = scratch.dir.join("three.toml");
    std::fs::write(&spec, pipeline(&scratch.dir)).unwrap();
    let out = run_cmd(&scratch, &spec)
        .args(["--compute", "agents"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    scratch.assert_no_agents_left();
    // Every stage checked its inputs on its agent; the last one's manifest is there, and each
    // stage's log came back from its agent.
    assert!(scratch.dir.join("final-manifest").exists());
    let logs = scratch.state().join("pipelines/e2e-three/logs");
    for stage in ["a", "b", "c"] {
        assert!(
            std::fs::read_dir(&logs).unwrap().flatten().any(|f| f
                .file_name()
                .to_string_lossy()
                .ends_with(&format!("stage-{stage}.log"))),
            "no agent ran stage {stage}"
        );
        assert!(
            scratch
                .state()
                .join(format!("pipelines/e2e-three/{stage}.log"))
                .exists()
        );
    }
}
