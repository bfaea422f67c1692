//! `skyx cp --provider ec2` and `skyx run --provider ec2` against moto's EC2 server (started
//! by deploy/test-servers.sh): missing or malformed settings are refused before any VM is
//! launched, and a copy or a pipeline whose agents never come up (moto boots no real machine)
//! fails saying so, with every VM it launched terminated.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;

use crate::stores::Scratch;
use crate::util::{stderr, stdout};

fn endpoint() -> String {
    std::env::var("SKYX_TEST_EC2_ENDPOINT")
        .expect("SKYX_TEST_EC2_ENDPOINT: start the servers with deploy/test-servers.sh start")
}

const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

async fn client(region: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// (instance, state, instance type) of every instance carrying a skyx job tag in `region`.
async fn job_vms(region: &str) -> Vec<(String, String, String)> {
    let out = client(region)
        .await
        .describe_instances()
        .filters(Filter::builder().name("tag-key").values("skyx-job").build())
        .send()
        .await
        .expect("moto answers DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                i.instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

async fn an_image(region: &str) -> String {
    let images = client(region)
        .await
        .describe_images()
        .send()
        .await
        .expect("moto answers DescribeImages");
    images.images()[0].image_id().unwrap().to_string()
}

#[test]
fn agents_and_stages_on_ec2_need_their_settings_and_never_outlive_their_job() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = Scratch::new("ec2");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("object"), vec![1u8; 100_000]).unwrap();
    let dst = scratch.dir.join("dst").display().to_string();
    let src = src.display().to_string();
    let (east, west) = (
        rt.block_on(an_image("us-east-1")),
        rt.block_on(an_image("us-west-2")),
    );
    let east_image = format!("us-east-1={east}");
    let west_image = format!("us-west-2={west}");
    let ep = endpoint();
    let cp = |extra: &[&str]| {
        let mut args = vec![
            "cp",
            "-r",
            &src,
            &dst,
            "--src-region",
            "aws:us-east-1",
            "--dst-region",
            "aws:us-west-2",
            "--only-cloud",
            "aws",
            "--max-vms-per-region",
            "1",
            "--provider",
            "ec2",
            "--ec2-endpoint",
            &ep,
            "--agent-url",
            "https://releases.example.invalid/skyx-agent",
            "--ec2-ready-timeout",
            "3s",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &CREDENTIALS)
    };
    // VMs of other jobs (earlier tests) may be there already; only new ones count.
    let all_vms = || -> Vec<(String, String, String)> {
        rt.block_on(job_vms("us-east-1"))
            .into_iter()
            .chain(rt.block_on(job_vms("us-west-2")))
            .collect()
    };
    let before: Vec<String> = all_vms().into_iter().map(|(id, ..)| id).collect();
    let launched = || -> Vec<(String, String, String)> {
        all_vms()
            .into_iter()
            .filter(|(id, ..)| !before.contains(id))
            .collect()
    };

    // Settings missing or wrong: refused, naming the flag, before any VM exists.
    let out = cp(&[
        "--ec2-image",
        &east_image,
        "--gateway-cidr",
        "203.0.113.7/32",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ec2-image us-west-2=AMI"),
        "{}",
        stderr(&out)
    );
    let out = cp(&[
        "--ec2-image",
        &east_image,
        "--ec2-image",
        &west_image,
        "--gateway-cidr",
        "203.0.113.7",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--gateway-cidr"), "{}", stderr(&out));
    assert_eq!(launched(), [], "a refused copy launched VMs");

    // Complete settings: VMs are launched, their agents never answer, the copy fails saying
    // so, and every VM it launched is terminated.
    let out = cp(&[
        "--ec2-image",
        &east_image,
        "--ec2-image",
        &west_image,
        "--gateway-cidr",
        "203.0.113.7/32",
    ]);
    assert!(!out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("never answered"), "{}", stderr(&out));
    let after = launched();
    assert!(!after.is_empty(), "the copy launched no VM");
    for (id, state, _) in &after {
        assert!(
            state == "terminated" || state == "shutting-down",
            "{id} is {state}"
        );
    }
    assert!(!std::path::Path::new(&dst).join("object").exists());

    // A pipeline with its stage and copies on EC2: the same checks first, then a stage VM
    // whose agent never answers fails the run, and the run leaves no VM behind.
    let spec = scratch.dir.join("pipeline.toml");
    std::fs::write(
        &spec,
        format!(
            r#"[pipeline]
name = "on-ec2"
objective = "min-cost"

[[input]]
name = "raw"
url = "{src}/"
region = "aws:us-east-1"
size = "1MB"

[[stage]]
name = "only"
run = "true"
inputs = ["raw"]
constraints = {{ regions = ["aws:us-east-1"] }}
candidate = [{{ instance = "m6i.2xlarge", hours = 1 }}]
"#
        ),
    )
    .unwrap();
    let spec = spec.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            &spec,
            "--provider",
            "ec2",
            "--ec2-endpoint",
            &ep,
            "--agent-url",
            "https://releases.example.invalid/skyx-agent",
            "--gateway-cidr",
            "203.0.113.7/32",
            "--ec2-ready-timeout",
            "3s",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &CREDENTIALS)
    };
    let seen: Vec<String> = all_vms().into_iter().map(|(id, ..)| id).collect();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ec2-image us-east-1=AMI"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--ec2-image", &east_image]);
    assert!(!out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("never answered"), "{}", stderr(&out));
    let run_vms: Vec<(String, String, String)> = all_vms()
        .into_iter()
        .filter(|(id, ..)| !seen.contains(id))
        .collect();
    assert!(!run_vms.is_empty(), "the run launched no VM");
    // The stage's VM is the instance the plan chose for it.
    assert_eq!(run_vms[0].2, "m6i.2xlarge");
    for (id, state, _) in &run_vms {
        assert!(
            state == "terminated" || state == "shutting-down",
            "{id} is {state}"
        );
    }
}
