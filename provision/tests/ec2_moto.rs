//! The EC2 agent provider against moto's EC2 and SSM servers (started by
//! deploy/test-servers.sh): what a launch asks EC2 for (image looked up in SSM, type,
//! bootstrap with the pinned agent, IMDSv2 required, terminate-on-shutdown, tags, instance
//! profile, subnet, spot, a security group open to the gateway and the job's peers only), and
//! that no VM outlives a launch whose agent never answers, nor a job that is swept.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use skyx_provision::ec2::{Ec2Config, Ec2Provider, Image, Images, JOB_TAG, job_instances};
use skyx_provision::{AgentBinary, LaunchRequest, Provider, ProviderError};

const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn endpoint() -> String {
    std::env::var("SKYX_TEST_EC2_ENDPOINT")
        .expect("SKYX_TEST_EC2_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

async fn provider(job: &str) -> (Ec2Provider, aws_sdk_ec2::Client) {
    let (config, client) = config(job).await;
    (Ec2Provider::new(config, job), client)
}

/// A configuration whose us-east-1 image is any AMI moto knows.
async fn config(job: &str) -> (Ec2Config, aws_sdk_ec2::Client) {
    let mut config = Ec2Config {
        images: Images::default(),
        instance_type: "m5.8xlarge".into(),
        agent: AgentBinary::download("https://releases.example.invalid/skyx-agent", PIN).unwrap(),
        instance_profile: None,
        subnets: BTreeMap::new(),
        spot: false,
        control_port: 7443,
        gateway_cidr: "203.0.113.7/32".into(),
        endpoint: Some(endpoint()),
        credentials: Some(("testing".into(), "testing".into())),
        ready_timeout: Duration::from_secs(3),
    };
    let probe = Ec2Provider::new(config.clone(), job);
    let client = probe.client_for("us-east-1").await;
    let image = any_image(&client).await;
    config
        .images
        .per_region
        .insert("us-east-1".into(), Image::Ami(image));
    (config, client)
}

async fn any_image(client: &aws_sdk_ec2::Client) -> String {
    let images = client
        .describe_images()
        .send()
        .await
        .expect("moto answers DescribeImages");
    images.images()[0].image_id().unwrap().to_string()
}

fn request(token: &str) -> LaunchRequest {
    LaunchRequest {
        name: "aws:us-east-1#0".into(),
        instance: None,
        job: "moto".into(),
        region: "aws:us-east-1".into(),
        token: token.into(),
        gateway: std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
    }
}

/// The instances tagged with `job`, whatever their state.
async fn tagged(client: &aws_sdk_ec2::Client, job: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = client
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{JOB_TAG}"))
                .values(job)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_vm_whose_agent_never_answers_is_terminated_and_was_launched_as_asked() {
    let job = format!("t{}", std::process::id());
    let (provider, client) = provider(&job).await;
    let err = provider
        .launch(request("secret-token-123"))
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

    // The one VM it made: tagged, terminate on shutdown, IMDSv2 only, bootstrapped with the
    // pinned agent.
    let instances = tagged(&client, &job).await;
    assert_eq!(instances.len(), 1);
    let inst = &instances[0];
    let metadata = inst.metadata_options().expect("metadata options");
    assert_eq!(
        metadata.http_tokens(),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required)
    );
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
    assert!(text.contains("skyx-agent.service"));
    assert!(!text.contains('@'), "every placeholder is filled: {text}");
    let bootstrap = bootstrap_of(&text);
    assert!(bootstrap.contains("AGENT_URL='https://releases.example.invalid/skyx-agent'"));
    assert!(bootstrap.contains(&format!("AGENT_SHA256='{PIN}'")));
    assert!(bootstrap.contains("sha256sum -c"), "{bootstrap}");
    assert!(
        bootstrap.contains("X-aws-ec2-metadata-token"),
        "IMDSv2: {bootstrap}"
    );
    assert!(
        !bootstrap.contains('@'),
        "every placeholder is filled: {bootstrap}"
    );

    // The group admits the gateway on the control port, nothing else: the VM's agent never
    // answered, so its address never joined the job's peers.
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
    assert_eq!(cidrs, ["203.0.113.7/32"]);
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

/// Makes an instance profile in moto's IAM (RunInstances refuses a profile that does not
/// exist, as AWS does). moto routes by the credential scope of the Authorization header and
/// checks no signature, so a plain query request does.
fn create_instance_profile(name: &str) {
    use std::io::{Read as _, Write as _};
    let url = endpoint();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let body =
        format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08");
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The bootstrap script cloud-init writes, decoded from the user data.
fn bootstrap_of(user_data: &str) -> String {
    let at = user_data
        .find("/etc/skyx/bootstrap.sh")
        .expect("bootstrap in user data");
    let content = user_data[at..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("content: "))
        .expect("bootstrap content");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(content.trim_matches('"'))
        .unwrap();
    String::from_utf8(decoded).unwrap()
}

/// The image named by an SSM parameter, the subnet, the instance profile and spot all reach
/// RunInstances; a parameter that names nothing fails `prepare`, before any VM.
#[tokio::test]
async fn images_from_ssm_subnets_profiles_and_spot_reach_the_launch() {
    let job = format!("o{}", std::process::id());
    let (mut config, client) = config(&job).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let image = any_image(&client).await;
    let parameter = format!("/skyx-test/{job}/image");
    ssm.put_parameter()
        .name(&parameter)
        .value(&image)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let subnets = client.describe_subnets().send().await.unwrap();
    let subnet = subnets.subnets()[0].clone();
    config.images.per_region.clear();
    config.images.otherwise = Image::Parameter(parameter);
    config
        .subnets
        .insert("us-east-1".into(), subnet.subnet_id().unwrap().to_string());
    let profile = format!("skyx-agent-{job}");
    create_instance_profile(&profile);
    config.instance_profile = Some(format!(
        "arn:aws:iam::123456789012:instance-profile/{profile}"
    ));
    config.spot = true;

    let missing = Ec2Provider::new(
        Ec2Config {
            images: Images {
                otherwise: Image::Parameter(format!("/skyx-test/{job}/none")),
                ..Images::default()
            },
            ..config.clone()
        },
        format!("{job}-missing"),
    );
    let err = missing.prepare(&["aws:us-east-1"]).await.unwrap_err();
    assert!(err.to_string().contains("/none"), "{err}");
    assert!(tagged(&client, &format!("{job}-missing")).await.is_empty());

    let unknown = Ec2Provider::new(
        Ec2Config {
            instance_profile: Some(format!("{profile}-unknown")),
            ..config.clone()
        },
        format!("{job}-unknown"),
    );
    let refused = unknown.launch(request("t")).await.unwrap_err();
    assert!(
        refused.to_string().contains(&format!("{profile}-unknown")),
        "{refused}"
    );
    unknown.sweep().await.unwrap();
    let provider = Ec2Provider::new(config, &job);
    provider.prepare(&["aws:us-east-1"]).await.unwrap();
    let err = provider.launch(request("t")).await.unwrap_err();
    let instances = tagged(&client, &job).await;
    assert_eq!(instances.len(), 1, "{err}");
    let inst = &instances[0];
    assert_eq!(inst.image_id(), Some(image.as_str()));
    assert_eq!(inst.subnet_id(), subnet.subnet_id());
    assert_eq!(
        inst.instance_lifecycle(),
        Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot)
    );
    // moto checks the profile exists, as AWS does, and drops its association when the VM
    // terminates: the launch got past RunInstances with it, and one that does not exist is
    // refused, named.
    assert!(err.to_string().contains("never answered"), "{err}");
    // The job's group is made in the subnet's VPC and is the VM's (on its interface).
    let groups = client
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{JOB_TAG}"))
                .values(&job)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let group = &groups.security_groups()[0];
    assert_eq!(group.vpc_id(), subnet.vpc_id());
    let nic_groups: Vec<_> = inst
        .network_interfaces()
        .iter()
        .flat_map(|n| n.groups())
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(nic_groups, [group.group_id().unwrap()]);
    provider.sweep().await.unwrap();
    assert!(tagged(&client, &job).await.iter().all(|i| {
        i.state().and_then(|s| s.name()) == Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
    }));
}

#[tokio::test]
async fn sweeping_a_job_terminates_every_vm_it_tagged() {
    let job = format!("s{}", std::process::id());
    let (provider, client) = provider(&job).await;
    // A launch fails (no agent), but its region state exists; VMs of the job started some
    // other way (a gateway that died mid-launch) are found by their tag.
    let _ = provider.launch(request("t")).await;
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

#[tokio::test]
async fn an_admitted_peer_joins_every_regions_group_once() {
    let job = format!("p{}", std::process::id());
    let (provider, client) = provider(&job).await;
    provider.prepare(&["aws:us-east-1"]).await.unwrap();
    let (a, b) = (
        "198.51.100.7".parse().unwrap(),
        "198.51.100.8".parse().unwrap(),
    );
    for ip in [a, b, a] {
        provider.admit(ip).await.unwrap();
    }
    let groups = client
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(format!("skyx-{job}"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut cidrs: Vec<String> = groups.security_groups()[0]
        .ip_permissions()
        .iter()
        .flat_map(|p| p.ip_ranges().iter().filter_map(|r| r.cidr_ip()))
        .map(str::to_string)
        .collect();
    cidrs.sort();
    assert_eq!(
        cidrs,
        ["198.51.100.7/32", "198.51.100.8/32", "203.0.113.7/32"]
    );
    provider.sweep().await.unwrap();
}
