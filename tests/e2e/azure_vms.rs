//! `skyx cp --provider azure` and `skyx sweep --provider azure` against the Resource Manager
//! contract server (`deploy/contracts/azure.py`, started by deploy/test-servers.sh): missing or
//! malformed settings are refused before anything is made, a copy whose agents never come up
//! (the server boots no machine) fails saying so with the job's resource group deleted, and a
//! sweep removes what a crashed gateway left. Each test has its own subscription.

use std::process::Command;

use serde_json::{Value, json};

use crate::stores::Scratch;
use crate::util::{stderr, stdout};

fn endpoint() -> String {
    std::env::var("SKYX_TEST_AZURE_ARM_ENDPOINT")
        .expect("SKYX_TEST_AZURE_ARM_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

/// A subscription id of this test run alone (ARM's are GUIDs).
fn subscription(n: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:08x}-{n:04x}-4000-8000-{:012x}", std::process::id())
}

fn arm(method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--noproxy", "*", "-X", method])
        .args([
            "-H",
            "Authorization: Bearer e2e",
            "-H",
            "Content-Type: application/json",
        ])
        .arg(format!("{}{path}", endpoint()));
    if let Some(body) = body {
        curl.args(["-d", &body.to_string()]);
    }
    let out = curl.output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn groups(subscription: &str) -> Vec<String> {
    arm(
        "GET",
        &format!("/_contract/state?subscription={subscription}"),
        None,
    )["resourceGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn agents_on_azure_need_their_settings_and_never_outlive_their_job() {
    let scratch = Scratch::new("azure-vms");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("object"), vec![1u8; 100_000]).unwrap();
    let dst = scratch.dir.join("dst").display().to_string();
    let src = src.display().to_string();
    let sub = subscription(1);
    let ep = endpoint();
    let cp = |extra: &[&str]| {
        let mut args = vec![
            "cp",
            "-r",
            &src,
            &dst,
            "--src-region",
            "azure:eastus",
            "--dst-region",
            "azure:westeurope",
            "--max-vms-per-region",
            "1",
            "--provider",
            "azure",
            "--azure-arm-endpoint",
            &ep,
            "--azure-access-token",
            "e2e",
            "--agent-url",
            "https://releases.example.invalid/skyx-agent",
            "--gateway-cidr",
            "203.0.113.7/32",
            "--vm-ready-timeout",
            "3s",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &[("AZURE_SUBSCRIPTION_ID", "")])
    };
    let out = cp(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--azure-subscription"),
        "{}",
        stderr(&out)
    );
    let out = cp(&["--azure-subscription", &sub, "--azure-image", "debian-12"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--azure-image"), "{}", stderr(&out));
    assert_eq!(
        groups(&sub),
        Vec::<String>::new(),
        "a refused copy made a resource group"
    );

    let out = cp(&["--azure-subscription", &sub]);
    assert!(!out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("never answered"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resource group skyx-"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        groups(&sub),
        Vec::<String>::new(),
        "the job's resource group stays"
    );
    assert!(!std::path::Path::new(&dst).join("object").exists());
}

/// `skyx sweep --provider azure` deletes the resource groups a crashed gateway left (by their
/// `skyx-job` tag), after a dry run that deletes nothing, and leaves other jobs' groups.
#[test]
fn sweep_removes_what_a_crashed_gateway_left_on_azure() {
    let scratch = Scratch::new("azure-sweep");
    let sub = subscription(2);
    for (group, job) in [("skyx-crashed", "crashed"), ("skyx-other", "other")] {
        arm(
            "PUT",
            &format!("/subscriptions/{sub}/resourcegroups/{group}?api-version=2025-04-01"),
            Some(&json!({"location": "eastus", "tags": {"skyx-job": job}})),
        );
    }
    assert_eq!(groups(&sub).len(), 2);
    let ep = endpoint();
    let sweep = |extra: &[&str]| {
        let mut args = vec![
            "sweep",
            "--provider",
            "azure",
            "--azure-subscription",
            &sub,
            "--azure-arm-endpoint",
            &ep,
            // The token as a command prints it (az's, for a real sweep).
            "--azure-access-token-command",
            "echo e2e",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &[])
    };
    let out = sweep(&["--job", "crashed", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would remove 1 resource groups"),
        "{}",
        stdout(&out)
    );
    assert_eq!(groups(&sub).len(), 2);
    let out = sweep(&["--job", "crashed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deleted resource group skyx-crashed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(groups(&sub), ["skyx-other"]);
}
