//! The GCE agent provider against the Compute Engine contract server (`deploy/contracts/gce.py`,
//! started by deploy/test-servers.sh: it validates every call against Google's discovery
//! document and walks the documented operation and instance lifecycles). What a launch asks
//! GCE for (zone, machine type, image, startup script with the pinned agent, label and tag,
//! maximum run duration, spot, service account, firewall rules open to the gateway and the
//! job's peers only), that a zone out of capacity moves the launch to the next zone and a
//! region out of quota is capacity, and that no VM or rule outlives a launch whose agent never
//! answers, nor a job that is swept. Each test has its own project: the server keeps projects
//! apart, faults included.

use std::time::Duration;

use serde_json::{Value, json};
use skyx_provision::gce::{Auth, GceConfig, GceProvider, JOB_LABEL, job_label, sweep};
use skyx_provision::{AgentBinary, LaunchRequest, Provider, ProviderError};

const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn endpoint() -> String {
    std::env::var("SKYX_TEST_GCE_ENDPOINT")
        .expect("SKYX_TEST_GCE_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

/// A project no other test (or run) uses.
fn project(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}

fn config(project: &str) -> GceConfig {
    GceConfig {
        project: project.into(),
        machine_type: "n2-standard-32".into(),
        image: skyx_provision::gce::DEFAULT_IMAGE.into(),
        agent: AgentBinary::download("https://releases.example.invalid/skyx-agent", PIN).unwrap(),
        service_account: None,
        network: "global/networks/default".into(),
        spot: false,
        max_run: Duration::from_secs(6 * 3600),
        control_port: 7443,
        gateway_cidr: "203.0.113.7/32".into(),
        endpoint: Some(endpoint()),
        auth: Auth::Bearer("contract-test".into()),
        ready_timeout: Duration::from_secs(2),
        poll: Duration::from_millis(20),
    }
}

fn request(region: &str) -> LaunchRequest {
    LaunchRequest {
        name: format!("gcp:{region}#0"),
        instance: None,
        job: "contract".into(),
        region: format!("gcp:{region}"),
        token: "0123456789abcdef".into(),
        gateway: std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
    }
}

/// A test-control call to the contract server (`/_contract/...`).
async fn control(method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut call = reqwest::Client::new().request(method, format!("{}{path}", endpoint()));
    if let Some(body) = body {
        call = call.json(&body);
    }
    let response = call.send().await.expect("the contract server answers");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

/// The API calls of `project` so far: `(method, path after the project, body)`.
async fn calls(project: &str) -> Vec<(String, String, Value)> {
    let log = control(
        reqwest::Method::GET,
        &format!("/_contract/requests?project={project}"),
        None,
    )
    .await;
    let prefix = format!("/compute/v1/projects/{project}/");
    log.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let path = r["path"].as_str().unwrap();
            (
                r["method"].as_str().unwrap().to_string(),
                path.strip_prefix(&prefix).unwrap_or(path).to_string(),
                r["body"].clone(),
            )
        })
        .collect()
}

/// The project's instances and skyx's firewall rules (a project starts with GCE's own
/// `default-allow-*` rules, as a real one does).
async fn state(project: &str) -> Value {
    let mut state = control(
        reqwest::Method::GET,
        &format!("/_contract/state?project={project}"),
        None,
    )
    .await;
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

async fn fault(body: Value) {
    control(reqwest::Method::POST, "/_contract/faults", Some(body)).await;
}

fn inserts(calls: &[(String, String, Value)]) -> Vec<(String, Value)> {
    calls
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.ends_with("/instances"))
        .map(|(_, p, b)| (p.clone(), b.clone()))
        .collect()
}

#[tokio::test]
async fn a_vm_whose_agent_never_answers_is_deleted_and_was_launched_as_asked() {
    let project = project("never");
    let provider = GceProvider::new(config(&project), "cp-never-1");
    provider.prepare(&["gcp:us-east1"]).await.unwrap();
    let err = provider.launch(request("us-east1")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotReady { why, .. } if why.contains("never answered")),
        "{err}"
    );
    // Nothing of the job is left running.
    let now = state(&project).await;
    assert_eq!(now["instances"].as_array().map(Vec::len), Some(0), "{now}");

    let calls = calls(&project).await;
    let inserted = inserts(&calls);
    assert_eq!(inserted.len(), 1, "{calls:?}");
    let (path, vm) = &inserted[0];
    // The region's first zone, the catalog's machine type, Debian 12, a public address.
    assert_eq!(path, "zones/us-east1-b/instances");
    assert_eq!(
        vm["machineType"],
        "zones/us-east1-b/machineTypes/n2-standard-32"
    );
    assert_eq!(
        vm["disks"][0]["initializeParams"]["sourceImage"],
        skyx_provision::gce::DEFAULT_IMAGE
    );
    assert_eq!(vm["disks"][0]["autoDelete"], true);
    assert_eq!(
        vm["networkInterfaces"][0]["accessConfigs"][0]["type"],
        "ONE_TO_ONE_NAT"
    );
    // Found by its label, reached through its tag, deleted by GCE itself after its run.
    let label = job_label("cp-never-1");
    assert_eq!(vm["labels"][JOB_LABEL], label.as_str());
    assert_eq!(vm["tags"]["items"], json!([label]));
    assert_eq!(vm["scheduling"]["instanceTerminationAction"], "DELETE");
    assert_eq!(vm["scheduling"]["maxRunDuration"]["seconds"], "21600");
    assert!(
        vm.get("serviceAccounts").is_none(),
        "no account unless asked"
    );
    // The startup script installs the pinned agent and asks GCE's metadata server.
    let script = vm["metadata"]["items"][0]["value"].as_str().unwrap();
    assert_eq!(vm["metadata"]["items"][0]["key"], "startup-script");
    let bootstrap = decoded_bootstrap(script);
    assert!(
        bootstrap.contains(&format!("AGENT_SHA256='{PIN}'")),
        "{bootstrap}"
    );
    assert!(bootstrap.contains("CLOUD='gcp'"), "{bootstrap}");
    assert!(!script.contains('@') && !bootstrap.contains('@'));

    // The gateway reaches the control port; the VM's address joined no peers' rule (its agent
    // never proved the job's identity); the VM was deleted.
    let rules: Vec<&Value> = calls
        .iter()
        .filter(|(m, p, _)| m == "POST" && p == "global/firewalls")
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0]["sourceRanges"], json!(["203.0.113.7/32"]));
    assert_eq!(
        rules[0]["allowed"],
        json!([{"IPProtocol": "tcp", "ports": ["7443"]}])
    );
    assert_eq!(provider.peers().await, Vec::<std::net::IpAddr>::new());
    // Below the job's rules, above the network's own: nothing else reaches the VMs (a default
    // network admits every internal address, and SSH from anywhere).
    assert_eq!(rules[1]["denied"], json!([{"IPProtocol": "all"}]));
    assert_eq!(rules[1]["sourceRanges"], json!(["0.0.0.0/0"]));
    assert_eq!(rules[1]["priority"], 1100);
    for rule in &rules {
        assert_eq!(rule["targetTags"], json!([label]));
    }
    assert!(
        calls
            .iter()
            .any(|(m, p, _)| m == "DELETE" && p.starts_with("zones/us-east1-b/instances/")),
        "{calls:?}"
    );
    provider.sweep().await.unwrap();
    assert_eq!(state(&project).await["firewalls"], json!([]));
}

/// The bootstrap a startup script writes (base64 after `echo '`, before the bootstrap path).
fn decoded_bootstrap(script: &str) -> String {
    use base64::Engine as _;
    let line = script
        .lines()
        .find(|l| l.contains("/etc/skyx/bootstrap.sh") && l.starts_with("echo '"))
        .expect("the bootstrap is written");
    let b64 = line
        .trim_start_matches("echo '")
        .split('\'')
        .next()
        .unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_full_zone_moves_the_launch_to_the_next_and_a_region_over_quota_is_capacity_at_once() {
    let project = project("full");
    let provider = GceProvider::new(config(&project), "cp-full-1");
    fault(
        json!({"project": project, "zone": "us-east1-b", "code": "ZONE_RESOURCE_POOL_EXHAUSTED"}),
    )
    .await;
    // (No agent answers: the launch ends NotReady, in the zone that had room.)
    let err = provider.launch(request("us-east1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotReady { .. }), "{err}");
    let tried: Vec<String> = inserts(&calls(&project).await)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        tried,
        ["zones/us-east1-b/instances", "zones/us-east1-c/instances"]
    );

    fault(json!({"project": project, "region": "us-east1", "code": "QUOTA_EXCEEDED"})).await;
    let err = provider.launch(request("us-east1")).await.unwrap_err();
    match &err {
        ProviderError::Capacity { region, why, .. } => {
            assert_eq!(region, "gcp:us-east1");
            assert!(why.contains("QUOTA_EXCEEDED"), "{why}");
        }
        other => panic!("expected capacity, got {other}"),
    }
    // A region's quota is every zone's: after it, no other zone is asked (us-east1-b is still
    // full, us-east1-c answers with the quota, us-east1-d is not tried).
    let tried: Vec<String> = inserts(&calls(&project).await)
        .into_iter()
        .skip(2)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        tried,
        ["zones/us-east1-b/instances", "zones/us-east1-c/instances"]
    );
    assert_eq!(state(&project).await["instances"], json!([]));
    provider.sweep().await.unwrap();
}

#[tokio::test]
async fn settings_that_cannot_work_fail_before_any_vm() {
    let project = project("settings");
    let provider = GceProvider::new(config(&project), "cp-settings-1");
    let err = provider.prepare(&["gcp:us-nowhere9"]).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Setting { region, .. } if region == "gcp:us-nowhere9"),
        "{err}"
    );
    let mut bad_image = config(&project);
    bad_image.image = "projects/debian-cloud/global/images/family/debian-99".into();
    let err = GceProvider::new(bad_image, "cp-settings-1")
        .prepare(&["gcp:us-east1"])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Setting { why, .. } if why.contains("debian-99")),
        "{err}"
    );
    assert!(inserts(&calls(&project).await).is_empty());
}

#[tokio::test]
async fn spot_and_a_service_account_reach_the_insert() {
    let project = project("spot");
    let mut config = config(&project);
    config.spot = true;
    config.service_account = Some(format!("agents@{project}.iam.gserviceaccount.com"));
    let provider = GceProvider::new(config, "cp-spot-1");
    let _ = provider.launch(request("europe-west1")).await.unwrap_err();
    let inserted = inserts(&calls(&project).await);
    let vm = &inserted[0].1;
    assert_eq!(vm["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(vm["scheduling"]["automaticRestart"], false);
    assert_eq!(
        vm["serviceAccounts"][0]["email"],
        format!("agents@{project}.iam.gserviceaccount.com").as_str()
    );
    provider.sweep().await.unwrap();
}

#[tokio::test]
async fn sweeping_a_job_deletes_every_vm_and_rule_it_labelled_and_nothing_else() {
    let project = project("sweep");
    let config = config(&project);
    let mine = GceProvider::new(config.clone(), "cp-sweep-mine");
    let theirs = GceProvider::new(config, "cp-sweep-theirs");
    mine.prepare(&["gcp:us-east1"]).await.unwrap();
    theirs.prepare(&["gcp:us-east1"]).await.unwrap();
    // VMs of both jobs started some other way (a gateway that died mid-launch).
    for (job, zone) in [
        ("cp-sweep-mine", "us-east1-b"),
        ("cp-sweep-mine", "us-east1-c"),
        ("cp-sweep-theirs", "us-east1-b"),
    ] {
        let label = job_label(job);
        let name = format!("skyx-{label}-{}", zone.len() + job.len());
        let body = json!({
            "name": name,
            "machineType": format!("zones/{zone}/machineTypes/e2-standard-2"),
            "disks": [{"boot": true, "autoDelete": true,
                "initializeParams": {"sourceImage": skyx_provision::gce::DEFAULT_IMAGE}}],
            "networkInterfaces": [{"network": "global/networks/default"}],
            "labels": {JOB_LABEL: label},
        });
        let op = mine
            .compute()
            .post(&format!("zones/{zone}/instances"), &[], Some(&body))
            .await
            .unwrap();
        mine.compute().wait(&op, "insert").await.unwrap();
    }
    let dry = sweep(mine.compute(), Some(&mine.label()), true)
        .await
        .unwrap();
    assert_eq!(dry.instances.len(), 2, "{dry:?}");
    assert_eq!(
        state(&project).await["instances"].as_array().unwrap().len(),
        3
    );

    let swept = mine.sweep().await.unwrap();
    assert_eq!(swept.len(), 2, "{swept:?}");
    let left = state(&project).await;
    let names: Vec<&str> = left["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with(&format!("skyx-{}-", theirs.label())));
    let mut rules: Vec<&str> = left["firewalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            format!("skyx-{}-deny", theirs.label()),
            format!("skyx-{}-gw", theirs.label())
        ]
    );
    // Every job's: what `skyx sweep --all-jobs` does.
    let all = sweep(theirs.compute(), None, false).await.unwrap();
    assert_eq!(all.instances.len(), 1);
    assert_eq!(state(&project).await["instances"], json!([]));
}

#[tokio::test]
async fn regions_outside_gcp_are_refused_as_capacity_elsewhere() {
    let provider = GceProvider::new(config(&project("elsewhere")), "x");
    let err = provider.launch(request("x")).await;
    assert!(err.is_err());
    let mut aws = request("x");
    aws.region = "aws:us-east-1".into();
    let err = provider.launch(aws).await.unwrap_err();
    assert!(matches!(err, ProviderError::Capacity { .. }), "{err}");
}

#[tokio::test]
async fn admitted_peers_share_one_rule_made_with_the_first_and_widened_after() {
    let project = project("peers");
    let provider = GceProvider::new(config(&project), "cp-peers-1");
    provider.prepare(&["gcp:us-east1"]).await.unwrap();
    let (a, b) = (
        "198.51.100.7".parse().unwrap(),
        "198.51.100.8".parse().unwrap(),
    );
    for ip in [a, b, a] {
        provider.admit(ip).await.unwrap();
    }
    assert_eq!(provider.peers().await, [a, b]);
    let now = state(&project).await;
    let peers: Vec<&Value> = now["firewalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().ends_with("peers"))
        .collect();
    assert_eq!(peers.len(), 1, "{now}");
    assert_eq!(
        peers[0]["sourceRanges"],
        json!(["198.51.100.7/32", "198.51.100.8/32"])
    );
    assert_eq!(peers[0]["targetTags"], json!([job_label("cp-peers-1")]));
    // The gateway's rule, the deny below, and the peers' rule made once; that one widened
    // once; the address admitted again asked nothing.
    let calls = calls(&project).await;
    let count = |method: &str, path: &dyn Fn(&str) -> bool| {
        calls
            .iter()
            .filter(|(m, p, _)| m == method && path(p))
            .count()
    };
    let made = count("POST", &|p| p == "global/firewalls");
    let widened = count("PATCH", &|p| p.ends_with("-peers"));
    assert_eq!((made, widened), (3, 1), "{calls:?}");
    provider.sweep().await.unwrap();
    assert_eq!(state(&project).await["firewalls"], json!([]));
}
