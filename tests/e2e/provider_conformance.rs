//! The provider conformance suite (`skyx_provision::conformance`) against the clouds'
//! providers, every VM booted as a network namespace from what its provider sent (see
//! `booted`): GCE and Azure against their contract servers, EC2 against moto. Each test then
//! checks the cloud holds no VM of the job and no namespace is left; the job's rules and
//! groups go with the provider's sweep. (`LocalProvider` and `InProcessProvider` run the same
//! suite in `transfer-agent/tests/provider_conformance.rs`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skyx_agent_api::GatewayIdentity;
use skyx_provision::azure::{ArmAuth, AzureConfig, AzureProvider, ImageReference};
use skyx_provision::conformance::{Subject, conformance};
use skyx_provision::ec2::{Ec2Config, Ec2Provider, Image, Images};
use skyx_provision::gce::{Auth, GceConfig, GceProvider};
use skyx_provision::{AgentBinary, LaunchRequest, Provider};

use crate::booted::{Booted, settle};
use crate::stores::{Scratch, runtime};
use crate::util::bin;
use crate::vm_boot::{moto_image, moto_running};

/// The agent the booted VMs download, pinned to this build.
fn agent(booted: &Booted) -> AgentBinary {
    let sha = skyx_provision::binary::sha256_of(&bin("skyx-agent")).unwrap();
    AgentBinary::download(&booted.agent_url, &sha).unwrap()
}

/// Runs the suite against `provider` in `region` (agents named `REGION#n`).
async fn run(provider: &dyn Provider, region: &str) {
    let gateway = Arc::new(GatewayIdentity::generate().unwrap());
    let request = move |n: usize, token: String| LaunchRequest {
        name: format!("{region}#{n}"),
        job: "conformance".into(),
        region: region.into(),
        instance: None,
        token,
        gateway: gateway.clone(),
    };
    conformance(Subject {
        provider,
        region,
        request: &request,
        handle_sees_exit: false,
        gone_within: Duration::from_secs(60),
    })
    .await;
}

#[test]
fn the_gce_provider_conforms_on_booted_vms() {
    let scratch = Scratch::new("conform-gce");
    let gce = Booted::start(&scratch, "10.212.0.1/16", &[("gce", "100.106.0.0/24")]);
    let provider = GceProvider::new(
        GceConfig {
            project: "conform-gce".into(),
            machine_type: "n2-standard-32".into(),
            image: skyx_provision::gce::DEFAULT_IMAGE.into(),
            agent: agent(&gce),
            service_account: None,
            network: "global/networks/default".into(),
            spot: false,
            max_run: Duration::from_secs(3600),
            control_port: 7443,
            gateway_cidr: format!("{}/32", gce.bridge_ip),
            endpoint: Some(gce.endpoint("gce")),
            auth: Auth::Bearer("e2e".into()),
            ready_timeout: Duration::from_secs(90),
            poll: Duration::from_millis(200),
        },
        "conformance",
    );
    let rt = runtime();
    rt.block_on(run(&provider, "gcp:us-east1-b"));
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    assert_eq!(
        gce.state("gce", "conform-gce")["instances"],
        serde_json::json!([])
    );
    rt.block_on(provider.sweep()).unwrap();
}

#[test]
fn the_azure_provider_conforms_on_booted_vms() {
    let scratch = Scratch::new("conform-azure");
    let azure = Booted::start(&scratch, "10.213.0.1/16", &[("azure", "100.107.0.0/24")]);
    let subscription = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
    let provider = AzureProvider::new(
        AzureConfig {
            subscription: subscription.into(),
            vm_size: "Standard_D32_v5".into(),
            image: ImageReference::parse(skyx_provision::azure::DEFAULT_IMAGE).unwrap(),
            agent: agent(&azure),
            identity: None,
            spot: false,
            control_port: 7443,
            gateway_cidr: format!("{}/32", azure.bridge_ip),
            endpoint: Some(azure.endpoint("azure")),
            auth: ArmAuth::Bearer("e2e".into()),
            ready_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(200),
        },
        "conformance",
    );
    let rt = runtime();
    rt.block_on(run(&provider, "azure:westeurope"));
    assert_eq!(settle(&azure), Vec::<String>::new(), "VMs left running");
    let vms: Vec<_> = azure.state("azure", subscription)["resourceGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["resources"]["Microsoft.Compute/virtualMachines"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert!(vms.is_empty(), "{vms:?}");
    rt.block_on(provider.sweep()).unwrap();
    assert_eq!(
        azure.state("azure", subscription)["resourceGroups"],
        serde_json::json!([])
    );
}

#[test]
fn the_ec2_provider_conforms_on_booted_vms() {
    let scratch = Scratch::new("conform-ec2");
    let ec2 = Booted::start(&scratch, "10.214.0.1/16", &[("ec2", "54.214.0.0/16")]);
    let endpoint = ec2.endpoint("ec2");
    let provider = Ec2Provider::new(
        Ec2Config {
            images: Images {
                per_region: BTreeMap::from([(
                    "us-east-1".to_string(),
                    Image::Ami(moto_image(&endpoint, "us-east-1")),
                )]),
                ..Images::default()
            },
            instance_type: "m5.8xlarge".into(),
            agent: agent(&ec2),
            instance_profile: None,
            subnets: BTreeMap::new(),
            spot: false,
            control_port: 7443,
            gateway_cidr: format!("{}/32", ec2.bridge_ip),
            endpoint: Some(endpoint.clone()),
            credentials: Some(("testing".into(), "testing".into())),
            ready_timeout: Duration::from_secs(120),
        },
        "conformance",
    );
    let rt = runtime();
    rt.block_on(run(&provider, "aws:us-east-1"));
    assert_eq!(settle(&ec2), Vec::<String>::new(), "VMs left running");
    assert_eq!(moto_running(&endpoint), 0);
    rt.block_on(provider.sweep()).unwrap();
}
