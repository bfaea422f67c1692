//! The EC2 agent provider against moto's EC2 server (started by deploy/test-servers.sh):
//! what a launch asks EC2 for (image, type, bootstrap, terminate-on-shutdown, tags, a security
//! group open to the gateway and the job's peers only), and that no VM outlives a launch whose
//! agent never answers, nor a job that is swept.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use skyx_provision::ec2::{Ec2Config, Ec2Provider, JOB_TAG, job_instances};
use skyx_provision::{LaunchRequest, Provider, ProviderError};

fn endpoint() -> String {
    std::env::var("SKYX_TEST_EC2_ENDPOINT")
        .expect("SKYX_TEST_EC2_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

async fn provider(job: &str) -> (Ec2Provider, aws_sdk_ec2::Client) {
    let mut config = Ec2Config {
        images: BTreeMap::new(),
        instance_type: "m5.8xlarge".into(),
        agent_url: "https://releases.example.invalid/skyx-agent".into(),
        control_port: 7443,
        gateway_cidr: "203.0.113.7/32".into(),
        endpoint: Some(endpoint()),
        credentials: Some(("testing".into(), "testing".into())),
        ready_timeout: Duration::from_secs(3),
    };
    let probe = Ec2Provider::new(config.clone(), job);
    let client = probe.client_for("us-east-1").await;
    // Any image moto knows.
    let images = client
        .describe_images()
        .send()
        .await
        .expect("moto answers DescribeImages");
    let image = images.images()[0].image_id().unwrap().to_string();
    config.images.insert("us-east-1".into(), image);
    (Ec2Provider::new(config, job), client)
}

#[tokio::test]
async fn a_vm_whose_agent_never_answers_is_terminated_and_was_launched_as_asked() {
    let job = format!("t{}", std::process::id());
    let (provider, client) = provider(&job).await;
    let err = provider
        .launch(LaunchRequest {
            name: "aws:us-east-1#0".into(),
            instance: None,
            job: "moto".into(),
            region: "aws:us-east-1".into(),
            token: "secret-token-123".into(),
            gateway: std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotReady { why, .. } if why.contains("never answered")),
        "{err}"
    );
    // Nothing of the job is left running.
    assert_eq!(
        job_instances(&client, &job).await.unwrap(),
        Vec::<String>::new()
    );

    // The one VM it made: tagged, terminate on shutdown, bootstrapped with the agent.
    let out = client
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{JOB_TAG}"))
                .values(&job)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instances: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert_eq!(instances.len(), 1);
    let inst = instances[0];
    assert_eq!(inst.instance_type().unwrap().as_str(), "m5.8xlarge");
    let id = inst.instance_id().unwrap();
    let behavior = client
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .unwrap();
    assert_eq!(
        behavior
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value()),
        Some("terminate")
    );
    let user_data = client
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = user_data.user_data().and_then(|v| v.value()).unwrap();
    let text = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(text.starts_with("#cloud-config"), "{text}");
    assert!(text.contains("secret-token-123"));
    assert!(text.contains("skyx-agent.service") && text.contains("releases.example.invalid"));
    assert!(!text.contains('@'), "every placeholder is filled: {text}");

    // The group admits the gateway on the control port and the job's peer, nothing else.
    let groups = client
        .describe_security_groups()
        .group_ids(inst.security_groups()[0].group_id().unwrap())
        .send()
        .await
        .unwrap();
    let perms = groups.security_groups()[0].ip_permissions();
    let cidrs: Vec<String> = perms
        .iter()
        .flat_map(|p| {
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip().map(str::to_string))
        })
        .collect();
    assert!(cidrs.contains(&"203.0.113.7/32".to_string()), "{cidrs:?}");
    assert!(
        cidrs.iter().all(|c| c.ends_with("/32")),
        "no open ranges: {cidrs:?}"
    );
    let control = perms
        .iter()
        .find(|p| {
            p.ip_ranges()
                .iter()
                .any(|r| r.cidr_ip() == Some("203.0.113.7/32"))
        })
        .unwrap();
    assert_eq!(
        (control.from_port(), control.to_port()),
        (Some(7443), Some(7443))
    );
}

#[tokio::test]
async fn sweeping_a_job_terminates_every_vm_it_tagged() {
    let job = format!("s{}", std::process::id());
    let (provider, client) = provider(&job).await;
    // A launch fails (no agent), but its region state exists; VMs of the job started some
    // other way (a gateway that died mid-launch) are found by their tag.
    let _ = provider
        .launch(LaunchRequest {
            name: "aws:us-east-1#0".into(),
            instance: None,
            job: "moto".into(),
            region: "aws:us-east-1".into(),
            token: "t".into(),
            gateway: std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
        })
        .await;
    let image = client.describe_images().send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        client
            .run_instances()
            .image_id(&image)
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(JOB_TAG)
                            .value(&job)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    assert_eq!(job_instances(&client, &job).await.unwrap().len(), 2);
    let swept = provider.sweep().await.unwrap();
    assert_eq!(swept.len(), 2);
    assert!(job_instances(&client, &job).await.unwrap().is_empty());
}

#[tokio::test]
async fn regions_outside_aws_are_refused_as_capacity_elsewhere() {
    let (provider, _) = provider("x").await;
    let err = provider
        .launch(LaunchRequest {
            name: "gcp:us-central1-a#0".into(),
            instance: None,
            job: "moto".into(),
            region: "gcp:us-central1-a".into(),
            token: "t".into(),
            gateway: std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Capacity { .. }), "{err}");
}
