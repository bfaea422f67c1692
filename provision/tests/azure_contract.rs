//! The Azure agent provider against the Resource Manager contract server
//! (`deploy/contracts/azure.py`, started by deploy/test-servers.sh: it validates every call
//! against Azure's vendored REST API specs and walks ARM's long-running operations). What a
//! launch asks Azure for (the job's resource group and tag, a security group open to the
//! gateway and the job's peers only, a network, a Standard static public address handed to
//! cloud-init, a NIC, a VM of the catalog's size from Debian 12 with the pinned bootstrap,
//! spot and a managed identity when asked), that `SkuNotAvailable`, quota and an allocation
//! failure are capacity with nothing left behind, and that no VM outlives a launch whose agent
//! never answers (or whose VM powers off, which ends the launch at once), nor a job that is
//! swept. Each test has its own subscription.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use skyx_provision::azure::{ArmAuth, AzureConfig, AzureProvider, ImageReference, sweep};
use skyx_provision::{AgentBinary, LaunchRequest, Provider, ProviderError};

const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn endpoint() -> String {
    std::env::var("SKYX_TEST_AZURE_ARM_ENDPOINT")
        .expect("SKYX_TEST_AZURE_ARM_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

/// A subscription no other test (or run) uses: a GUID, as ARM requires.
fn subscription() -> String {
    let hex = skyx_agent_api::control_tls::launch_token();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn config(subscription: &str) -> AzureConfig {
    AzureConfig {
        subscription: subscription.into(),
        vm_size: "Standard_D32_v5".into(),
        image: ImageReference::parse(skyx_provision::azure::DEFAULT_IMAGE).unwrap(),
        agent: AgentBinary::download("https://releases.example.invalid/skyx-agent", PIN).unwrap(),
        identity: None,
        spot: false,
        control_port: 7443,
        gateway_cidr: "203.0.113.7/32".into(),
        endpoint: Some(endpoint()),
        auth: ArmAuth::Bearer("contract-test".into()),
        ready_timeout: Duration::from_secs(2),
        poll: Duration::from_millis(10),
    }
}

fn request(location: &str) -> LaunchRequest {
    LaunchRequest {
        name: format!("azure:{location}#0"),
        instance: None,
        job: "contract".into(),
        region: format!("azure:{location}"),
        token: "0123456789abcdef".into(),
        gateway: std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
    }
}

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

/// The subscription's API calls so far: `(method, path after the subscription, body)`.
async fn calls(subscription: &str) -> Vec<(String, String, Value)> {
    let log = control(
        reqwest::Method::GET,
        &format!("/_contract/requests?subscription={subscription}"),
        None,
    )
    .await;
    let prefix = format!("/subscriptions/{subscription}");
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

fn puts<'a>(calls: &'a [(String, String, Value)], kind: &str) -> Vec<&'a Value> {
    calls
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains(kind))
        .map(|(_, _, b)| b)
        .collect()
}

async fn state(subscription: &str) -> Value {
    control(
        reqwest::Method::GET,
        &format!("/_contract/state?subscription={subscription}"),
        None,
    )
    .await
}

/// The names of the resources of `kind` in the job's group (`virtualMachines`).
async fn resources(subscription: &str, group: &str, kind: &str) -> Vec<String> {
    let state = state(subscription).await;
    let text = state.to_string();
    let Some(groups) = state["resourceGroups"].as_object() else {
        assert!(state["resourceGroups"].is_array(), "{text}");
        return state["resourceGroups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["name"] == group)
            .flat_map(|g| names(&g["resources"], kind))
            .collect();
    };
    groups
        .get(group)
        .map(|g| names(&g["resources"], kind))
        .unwrap_or_default()
}

fn names(resources: &Value, kind: &str) -> Vec<String> {
    resources
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(t, _)| t.ends_with(kind))
        .flat_map(|(_, list)| list.as_array().cloned().unwrap_or_default())
        .filter_map(|r| {
            r.as_str()
                .map(str::to_string)
                .or_else(|| r["name"].as_str().map(str::to_string))
        })
        .collect()
}

#[tokio::test]
async fn a_vm_whose_agent_never_answers_is_deleted_and_was_launched_as_asked() {
    let sub = subscription();
    let provider = AzureProvider::new(config(&sub), "cp-never-1");
    provider.prepare(&["azure:eastus"]).await.unwrap();
    let err = provider.launch(request("eastus")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotReady { why, .. } if why.contains("never answered")),
        "{err}"
    );
    let group = provider.group();
    for kind in ["virtualMachines", "networkInterfaces", "publicIPAddresses"] {
        assert_eq!(
            resources(&sub, &group, kind).await,
            Vec::<String>::new(),
            "{kind}"
        );
    }

    let calls = calls(&sub).await;
    // The job's group, tagged for the sweep.
    let rg = puts(&calls, "/resourcegroups/");
    assert_eq!(rg[0]["tags"]["skyx-job"], "cp-never-1");
    // The security group admits the gateway to the control port alone.
    let nsg = puts(&calls, "/networkSecurityGroups/skyx-eastus");
    let gateway = &nsg[0]["properties"]["securityRules"][0]["properties"];
    assert_eq!(gateway["sourceAddressPrefix"], "203.0.113.7/32");
    assert_eq!(gateway["destinationPortRange"], "7443");
    assert_eq!(gateway["access"], "Allow");
    // A Standard static address, the VM, and its bootstrap given that address.
    let ip = puts(&calls, "/publicIPAddresses/");
    assert_eq!(ip[0]["sku"]["name"], "Standard");
    assert_eq!(ip[0]["properties"]["publicIPAllocationMethod"], "Static");
    let vm = puts(&calls, "/virtualMachines/")[0];
    let properties = &vm["properties"];
    assert_eq!(properties["hardwareProfile"]["vmSize"], "Standard_D32_v5");
    assert_eq!(
        properties["storageProfile"]["imageReference"]["offer"],
        "debian-12"
    );
    assert_eq!(vm["tags"]["skyx-job"], "cp-never-1");
    assert!(vm.get("identity").is_none() && properties.get("priority").is_none());
    let custom = base64::engine::general_purpose::STANDARD
        .decode(properties["osProfile"]["customData"].as_str().unwrap())
        .unwrap();
    let custom = String::from_utf8(custom).unwrap();
    assert!(custom.starts_with("#cloud-config"), "{custom}");
    // The VM's address, as the launch's error names it.
    let peer = err.to_string();
    let peer = peer.split(" never answered on ").nth(1).unwrap();
    let peer = peer.split(':').next().unwrap();
    let bootstrap = bootstrap_of(&custom);
    assert!(
        bootstrap.contains(&format!("ADDRESS='{peer}'")),
        "{bootstrap}"
    );
    assert!(bootstrap.contains(&format!("AGENT_SHA256='{PIN}'")));
    // Its address joined no peers' rule: its agent never proved the job's identity.
    assert_eq!(provider.peers().await, Vec::<std::net::IpAddr>::new());
    assert_eq!(
        puts(&calls, "/securityRules/skyx-peers"),
        Vec::<&Value>::new()
    );
    assert_eq!(nsg.len(), 1, "{calls:?}");
    assert!(!nsg[0].to_string().contains(peer), "{}", nsg[0]);
    assert!(
        calls
            .iter()
            .any(|(m, p, _)| m == "DELETE" && p.contains("/virtualMachines/")),
        "{calls:?}"
    );
    assert_eq!(
        provider.sweep().await.unwrap(),
        std::slice::from_ref(&group)
    );
    let left = state(&sub).await.to_string();
    assert!(!left.contains(&group), "{left}");
}

#[tokio::test]
async fn a_vm_that_powers_itself_off_ends_its_launch_before_the_deadline_and_is_deleted() {
    let sub = subscription();
    let mut config = config(&sub);
    // Long enough that only the VM's stop, not the deadline, ends the launch in this test.
    config.ready_timeout = Duration::from_secs(30);
    let provider = AzureProvider::new(config, "cp-poweroff-1");
    provider.prepare(&["azure:eastus"]).await.unwrap();
    let group = provider.group();
    // What the bootstrap does when it refuses the agent: `poweroff` in the guest, once the VM
    // runs (the contract server refuses it before).
    let poweroff = async {
        loop {
            if let Some(vm) = resources(&sub, &group, "virtualMachines").await.first() {
                let answer = reqwest::Client::new()
                    .post(format!("{}/_contract/guest-poweroff", endpoint()))
                    .json(&json!({"subscription": sub, "resourceGroup": group, "vm": vm}))
                    .send()
                    .await
                    .unwrap();
                if answer.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let launch = provider.launch(request("eastus"));
    tokio::pin!(launch);
    let launched = tokio::select! {
        // Ended before its VM ran: what it says is checked below.
        launched = &mut launch => launched,
        () = poweroff => launch.await,
    };
    let err = launched.unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotReady { why, .. }
            if why.contains("is stopped: its bootstrap failed, or someone stopped it")),
        "{err}"
    );
    assert_eq!(
        resources(&sub, &group, "virtualMachines").await,
        Vec::<String>::new()
    );
    provider.sweep().await.unwrap();
}

/// The bootstrap cloud-init writes, decoded from the user data.
fn bootstrap_of(user_data: &str) -> String {
    let at = user_data.find("/etc/skyx/bootstrap.sh").expect("bootstrap");
    let content = user_data[at..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("content: "))
        .expect("bootstrap content")
        .trim_matches('"');
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn sizes_out_of_stock_quota_and_failed_allocations_are_capacity_with_nothing_left() {
    let sub = subscription();
    let provider = AzureProvider::new(config(&sub), "cp-full-1");
    let group = provider.group();
    for code in ["SkuNotAvailable", "QuotaExceeded", "AllocationFailed"] {
        control(
            reqwest::Method::POST,
            "/_contract/faults",
            Some(json!({"subscription": sub, "location": "westeurope", "code": code, "count": 1})),
        )
        .await;
        let err = provider.launch(request("westeurope")).await.unwrap_err();
        match &err {
            ProviderError::Capacity { region, why, .. } => {
                assert_eq!(region, "azure:westeurope");
                assert!(
                    why.contains(if code == "QuotaExceeded" {
                        "quota"
                    } else {
                        code
                    }),
                    "{why}"
                );
            }
            other => panic!("{code}: expected capacity, got {other}"),
        }
        for kind in ["virtualMachines", "networkInterfaces", "publicIPAddresses"] {
            assert_eq!(
                resources(&sub, &group, kind).await,
                Vec::<String>::new(),
                "{code}: {kind} left"
            );
        }
    }
    provider.sweep().await.unwrap();
}

#[tokio::test]
async fn settings_that_cannot_work_fail_before_any_vm_or_as_settings() {
    let sub = subscription();
    let provider = AzureProvider::new(config(&sub), "cp-settings-1");
    let err = provider.prepare(&["azure:nowhere"]).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Setting { region, .. } if region == "azure:nowhere"),
        "{err}"
    );
    let mut bad_image = config(&sub);
    bad_image.image = ImageReference::parse("Debian:debian-99:99:latest").unwrap();
    let provider = AzureProvider::new(bad_image, "cp-settings-2");
    let err = provider.launch(request("eastus")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Setting { why, .. } if why.contains("debian-99") || why.contains("PlatformImageNotFound")),
        "{err}"
    );
    for kind in ["virtualMachines", "networkInterfaces", "publicIPAddresses"] {
        assert_eq!(
            resources(&sub, &provider.group(), kind).await,
            Vec::<String>::new()
        );
    }
    provider.sweep().await.unwrap();
    assert!(ImageReference::parse("Debian:debian-12").is_err());
}

#[tokio::test]
async fn spot_and_a_managed_identity_reach_the_vm() {
    let sub = subscription();
    let mut config = config(&sub);
    config.spot = true;
    let identity = format!(
        "/subscriptions/{sub}/resourceGroups/ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agents"
    );
    config.identity = Some(identity.clone());
    let provider = AzureProvider::new(config, "cp-spot-1");
    let _ = provider.launch(request("eastus")).await.unwrap_err();
    let calls = calls(&sub).await;
    let vm = puts(&calls, "/virtualMachines/")[0];
    assert_eq!(vm["properties"]["priority"], "Spot");
    assert_eq!(vm["properties"]["evictionPolicy"], "Delete");
    assert_eq!(vm["identity"]["type"], "UserAssigned");
    assert!(
        vm["identity"]["userAssignedIdentities"]
            .get(&identity)
            .is_some()
    );
    provider.sweep().await.unwrap();
}

#[tokio::test]
async fn sweeping_a_job_deletes_its_resource_group_and_nothing_else() {
    let sub = subscription();
    let mine = AzureProvider::new(config(&sub), "cp-sweep-mine");
    let theirs = AzureProvider::new(config(&sub), "cp-sweep-theirs");
    mine.prepare(&["azure:eastus"]).await.unwrap();
    theirs
        .prepare(&["azure:eastus", "azure:westeurope"])
        .await
        .unwrap();
    let dry = sweep(mine.arm(), Some("cp-sweep-mine"), true)
        .await
        .unwrap();
    assert_eq!(dry, [mine.group()]);
    assert_eq!(mine.sweep().await.unwrap(), [mine.group()]);
    let left = state(&sub).await.to_string();
    assert!(
        !left.contains(&mine.group()) && left.contains(&theirs.group()),
        "{left}"
    );
    // Every job's: what `skyx sweep --all-jobs` does.
    assert_eq!(
        sweep(theirs.arm(), None, false).await.unwrap(),
        [theirs.group()]
    );
}

#[tokio::test]
async fn an_admitted_peer_joins_the_peers_rule_of_every_location_once() {
    let sub = subscription();
    let provider = AzureProvider::new(config(&sub), "cp-peers-1");
    provider
        .prepare(&["azure:eastus", "azure:westeurope"])
        .await
        .unwrap();
    let (a, b) = (
        "198.51.100.7".parse().unwrap(),
        "198.51.100.8".parse().unwrap(),
    );
    for ip in [a, b, a] {
        provider.admit(ip).await.unwrap();
    }
    assert_eq!(provider.peers().await, [a, b]);
    let calls = calls(&sub).await;
    let rules = puts(&calls, "/securityRules/skyx-peers");
    // Each admission in both locations; the address admitted again asked nothing.
    assert_eq!(rules.len(), 4, "{calls:?}");
    assert_eq!(
        rules[3]["properties"]["sourceAddressPrefixes"],
        json!(["198.51.100.7/32", "198.51.100.8/32"])
    );
    assert_eq!(rules[3]["properties"]["access"], "Allow");
    provider.sweep().await.unwrap();
}
