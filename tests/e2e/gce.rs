//! `skyx cp --provider gcp` and `skyx sweep --provider gcp` against the Compute Engine contract
//! server (`deploy/contracts/gce.py`, started by deploy/test-servers.sh): missing or malformed
//! settings are refused before any VM is inserted, a copy whose agents never come up (the
//! server boots no machine) fails saying so with every VM and firewall rule of its job
//! deleted, and a sweep removes what a crashed gateway left. Each test has its own project.

use std::io::{Read as _, Write as _};

use serde_json::{Value, json};

use crate::stores::Scratch;
use crate::util::{stderr, stdout};

fn endpoint() -> String {
    std::env::var("SKYX_TEST_GCE_ENDPOINT")
        .expect("SKYX_TEST_GCE_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

fn project(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}

/// One HTTP/1.1 call to the contract server (loopback; no client library needed).
fn call(method: &str, path: &str, body: Option<&Value>) -> Value {
    let address = endpoint().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).expect("the contract server answers");
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer e2e\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, json) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.contains(" 200 "), "{method} {path}: {head}\n{json}");
    // (The server answers with Content-Length, never chunked.)
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// The project's instances and skyx's firewall rules (a project starts with GCE's own
/// `default-allow-*` rules, as a real one does).
fn state(project: &str) -> Value {
    let mut state = call("GET", &format!("/_contract/state?project={project}"), None);
    let ours: Vec<Value> = state["firewalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("skyx-")))
        .cloned()
        .collect();
    state["firewalls"] = Value::Array(ours);
    state
}

fn inserts(project: &str) -> usize {
    let log = call(
        "GET",
        &format!("/_contract/requests?project={project}"),
        None,
    );
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/instances"))
        .count()
}

#[test]
fn agents_on_gce_need_their_settings_and_never_outlive_their_job() {
    let scratch = Scratch::new("gce");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("object"), vec![1u8; 100_000]).unwrap();
    let dst = scratch.dir.join("dst").display().to_string();
    let src = src.display().to_string();
    let project = project("e2e-cp");
    let ep = endpoint();
    let cp = |extra: &[&str]| {
        let mut args = vec![
            "cp",
            "-r",
            &src,
            &dst,
            "--src-region",
            "gcp:us-east1-b",
            "--dst-region",
            "gcp:europe-west1-b",
            "--only-cloud",
            "gcp",
            "--max-vms-per-region",
            "1",
            "--provider",
            "gcp",
            "--gce-endpoint",
            &ep,
            "--gce-access-token",
            "e2e",
            "--agent-url",
            "https://releases.example.invalid/skyx-agent",
            "--vm-ready-timeout",
            "3s",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        // (The stores' tests name a project in the environment; these name theirs.)
        scratch.skyx(&args, &[("GOOGLE_CLOUD_PROJECT", "")])
    };

    // Settings missing or wrong: refused, naming what is wrong, before any VM exists.
    let out = cp(&["--gateway-cidr", "203.0.113.7/32"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--gcp-project"), "{}", stderr(&out));
    let out = cp(&[
        "--gcp-project",
        &project,
        "--gateway-cidr",
        "203.0.113.7/32",
        "--gce-image",
        "projects/debian-cloud/global/images/family/debian-99",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("debian-99"), "{}", stderr(&out));
    let out = cp(&[
        "--gcp-project",
        &project,
        "--gateway-cidr",
        "203.0.113.7/32",
        "--gce-max-run",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--gce-max-run"), "{}", stderr(&out));
    assert_eq!(inserts(&project), 0, "a refused copy inserted VMs");

    // Complete settings: VMs are inserted, their agents never answer, the copy fails saying
    // so, and nothing of the job is left: no VM, no firewall rule.
    let out = cp(&[
        "--gcp-project",
        &project,
        "--gateway-cidr",
        "203.0.113.7/32",
    ]);
    assert!(!out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("never answered"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("labelled skyx-job="),
        "{}",
        stderr(&out)
    );
    assert!(inserts(&project) > 0, "the copy inserted no VM");
    let left = state(&project);
    assert_eq!(left["instances"], json!([]), "{left}");
    assert_eq!(left["firewalls"], json!([]), "{left}");
    assert!(!std::path::Path::new(&dst).join("object").exists());
}

/// `skyx sweep --provider gcp` finds what a job left (its VMs by label, its firewall rules by
/// name), says so with `--dry-run` and removes nothing, then removes them, leaving other jobs'.
#[test]
fn sweep_removes_what_a_crashed_gateway_left_on_gce() {
    let scratch = Scratch::new("gce-sweep");
    let project = project("e2e-sweep");
    let base = format!("/compute/v1/projects/{project}");
    for (job, zone, n) in [
        ("crashed", "us-east1-b", 0),
        ("crashed", "europe-west1-c", 1),
        ("other", "us-east1-b", 2),
    ] {
        let op = call(
            "POST",
            &format!("{base}/zones/{zone}/instances"),
            Some(&json!({
                "name": format!("skyx-{job}-{n}"),
                "machineType": format!("zones/{zone}/machineTypes/e2-standard-2"),
                "disks": [{"boot": true, "autoDelete": true, "initializeParams":
                    {"sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
                "networkInterfaces": [{"network": "global/networks/default"}],
                "labels": {"skyx-job": job},
            })),
        );
        call(
            "POST",
            &format!(
                "{base}/zones/{zone}/operations/{}/wait",
                op["name"].as_str().unwrap()
            ),
            None,
        );
    }
    let op = call(
        "POST",
        &format!("{base}/global/firewalls"),
        Some(&json!({
            "name": "skyx-crashed-gw",
            "description": "skyx job crashed: the gateway to the agents' control port",
            "network": "global/networks/default",
            "allowed": [{"IPProtocol": "tcp", "ports": ["7443"]}],
            "sourceRanges": ["203.0.113.7/32"],
            "targetTags": ["crashed"],
        })),
    );
    call(
        "POST",
        &format!(
            "{base}/global/operations/{}/wait",
            op["name"].as_str().unwrap()
        ),
        None,
    );
    let ep = endpoint();
    let sweep = |extra: &[&str]| {
        let mut args = vec![
            "sweep",
            "--provider",
            "gcp",
            "--gcp-project",
            &project,
            "--gce-endpoint",
            &ep,
            // The token as a command prints it (gcloud's, for a real sweep).
            "--gce-access-token-command",
            "echo e2e",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &[])
    };
    let names = || -> Vec<String> {
        state(&project)["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["name"].as_str().unwrap().to_string())
            .collect()
    };
    let out = sweep(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = sweep(&["--job", "crashed", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would remove 2 VMs and 1 firewall rules"),
        "{}",
        stdout(&out)
    );
    assert_eq!(names().len(), 3);
    let out = sweep(&["--job", "crashed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed 2 VMs and 1 firewall rules"),
        "{}",
        stdout(&out)
    );
    assert_eq!(names(), ["skyx-other-2"]);
    assert_eq!(state(&project)["firewalls"], json!([]));
}
