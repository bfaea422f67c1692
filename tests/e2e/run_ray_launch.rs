//! `skyx run --compute ray --ray-launch`: a stage planned where no Ray cluster is given gets one
//! of its own, brought up before its job and torn down after it. Ray's cluster launcher cannot
//! reach a cloud here, so `ray` is a stand-in (`deploy/contracts/ray_launcher.py`): each config
//! skyx writes is checked by the installed Ray's own validator (what `ray up` checks before it
//! calls a cloud), `ray dashboard` tunnels to a real Ray head (B), and `ray up` in the region
//! the test names full fails with EC2's capacity error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::booted::{contracts, tools};
use crate::run_ray::{c_regions, head, ray_run, stage_jobs, three_region_spec};
use crate::stores::Scratch;
use crate::util::{stderr, stdout};

/// An executable `ray` in `dir`: the stand-in, run by the Ray install's Python.
fn standin_ray(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let ray = bin.join("ray");
    std::fs::write(
        &ray,
        format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            tools().join("ray/bin/python").display(),
            contracts().join("ray_launcher.py").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ray, std::fs::Permissions::from_mode(0o755)).unwrap();
    ray
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn stages_without_a_cluster_get_one_launched_and_torn_down_and_a_full_region_is_planned_around() {
    let scratch = Scratch::new("run-ray-launch");
    let b = head("SKYX_TEST_RAY_B");
    let spec = three_region_spec(&scratch);
    let (first, other) = c_regions(&spec);
    // No stage has a cluster: each gets one (a in AWS, b in GCP, c in Azure), and c's first
    // region is full.
    let ray = standin_ray(&scratch.dir);
    let record = scratch.dir.join("record");
    let node = scratch.dir.join("node");
    let node_skyx = node.join("skyx").display().to_string();
    let mut cmd = ray_run(
        &scratch,
        &spec,
        &[],
        &[
            "--ray-launch",
            "--ray-program",
            &ray.display().to_string(),
            "--ray-skyx",
            &node_skyx,
            "--gcp-project",
            "skyx-test-project",
        ],
    );
    cmd.env("SKYX_RAY_STANDIN_HEAD", &b)
        .env("SKYX_RAY_STANDIN_RECORD", &record)
        .env("SKYX_RAY_STANDIN_FULL", first.split_once(':').unwrap().1)
        .env("SKYX_RAY_STANDIN_ROOT", &node);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["stages"][2]["region"], other, "{v}");
    assert_eq!(v["report"]["replans"].as_array().unwrap().len(), 1, "{v}");

    // What each cluster went through: the full region's, a failed up and a teardown all the
    // same; every other, up, its tunnel, down after its stage's job, the tunnel gone.
    // (`ray down` is not waited for.)
    let started = std::time::Instant::now();
    let said = loop {
        let said = std::fs::read_to_string(&record).unwrap();
        if said.matches("down ").count() == 4 || started.elapsed() > Duration::from_secs(120) {
            break said;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut clusters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut tunnels = Vec::new();
    for line in said.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        clusters.entry(words[1]).or_default().push(words[0]);
        if words[0] == "dashboard" {
            tunnels.push(words[2]);
        }
        if line.ends_with("(full)") {
            clusters.get_mut(words[1]).unwrap().push("full");
        }
    }
    assert_eq!(clusters.len(), 4, "{said}");
    let of = |stage: &str| -> Vec<(&str, &Vec<&str>)> {
        let prefix = format!("skyx-{stage}-");
        clusters
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(name, said)| (*name, said))
            .collect()
    };
    let launched = ["up", "dashboard", "down"];
    for stage in ["a", "b"] {
        let mine = of(stage);
        assert_eq!(mine.len(), 1, "{said}");
        assert_eq!(mine[0].1, &launched, "{said}");
    }
    let c = of("c");
    assert_eq!(c.len(), 2, "{said}");
    assert!(
        c.iter().any(|(_, s)| *s == &["up", "full", "down"]),
        "{said}"
    );
    let (c_name, _) = c.iter().find(|(_, s)| *s == &launched).expect(&said);
    for pid in tunnels {
        assert!(!alive(pid), "a tunnel outlived its cluster: {said}");
    }

    // c's job ran on its cluster's head (B, through the tunnel), as skyx mounted there; the
    // config skyx wrote for it is for Ray's Azure provider, in c's region.
    let jobs = stage_jobs(&b, &scratch.dir, "c");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["status"], "SUCCEEDED", "{jobs:?}");
    assert_eq!(
        jobs[0]["entrypoint"],
        format!("exec {node_skyx} stage-run"),
        "{jobs:?}"
    );
    let configs = scratch.state().join("pipelines/e2e-three/ray-clusters");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(configs.join(format!("{c_name}.yaml"))).unwrap(),
    )
    .unwrap();
    assert_eq!(config["provider"]["type"], "azure");
    assert_eq!(
        config["provider"]["location"],
        other.split_once(':').unwrap().1
    );
    assert!(scratch.dir.join("final-manifest").exists());
}

#[test]
fn launch_settings_are_checked_before_anything_starts() {
    let scratch = Scratch::new("run-ray-launch-bad");
    let spec = three_region_spec(&scratch);
    let out = ray_run(
        &scratch,
        &spec,
        &[],
        &[
            "--ray-launch",
            "--ray-program",
            "/nonexistent/ray",
            "--gcp-project",
            "p",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ray-program /nonexistent/ray"),
        "{}",
        stderr(&out)
    );
    let out = ray_run(&scratch, &spec, &[], &["--ray-launch"])
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("(--gcp-project)"), "{}", stderr(&out));
    let mut cmd = Command::new(crate::util::bin("skyx"));
    cmd.args(["run", &spec.display().to_string(), "--ray-launch"])
        .env("SKYX_STATE_DIR", scratch.state());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ray-launch is for --compute ray"),
        "{}",
        stderr(&out)
    );
    assert!(!scratch.dir.join("runs-a").exists());
}
