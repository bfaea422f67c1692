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

/// (instance, state, instance type) of every instance in `region` whose job tag starts with
/// one of `jobs` (tests running beside each other make VMs of their own meanwhile).
async fn job_vms(region: &str, jobs: &[&str]) -> Vec<(String, String, String)> {
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
        .filter(|i| {
            i.tags().iter().any(|t| {
                t.key() == Some("skyx-job")
                    && t.value()
                        .is_some_and(|v| jobs.iter().any(|j| v.starts_with(j)))
            })
        })
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
        // (Jobs of `skyx cp` and `skyx run`.)
        let jobs = ["cp-", "run-"];
        rt.block_on(job_vms("us-east-1", &jobs))
            .into_iter()
            .chain(rt.block_on(job_vms("us-west-2", &jobs)))
            .collect()
    };
    let before: Vec<String> = all_vms().into_iter().map(|(id, ..)| id).collect();
    let launched = || -> Vec<(String, String, String)> {
        all_vms()
            .into_iter()
            .filter(|(id, ..)| !before.contains(id))
            .collect()
    };

    // Settings missing or wrong: refused, naming the flag, before any VM exists. us-west-2's
    // image is the default, Debian's SSM parameter, which moto does not hold.
    let out = cp(&[
        "--ec2-image",
        &east_image,
        "--gateway-cidr",
        "203.0.113.7/32",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SSM parameter /aws/service/debian/release/12/latest/amd64")
            && stderr(&out).contains("--ec2-image"),
        "{}",
        stderr(&out)
    );
    let out = cp(&[
        "--ec2-image",
        &east_image,
        "--ec2-image",
        &west_image,
        "--gateway-cidr",
        "203.0.113.7/32",
        "--agent-sha256",
        "not-hex",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--agent-sha256"), "{}", stderr(&out));
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
    // Pinned by this build's SHA-256 when no pin is given.
    assert!(
        stderr(&out).contains("VMs run skyx-agent only if its SHA-256 is"),
        "{}",
        stderr(&out)
    );
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
    let out = run(&["--ec2-image", "us-east-1=ssm:/skyx-test/no-such-image"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/skyx-test/no-such-image"),
        "{}",
        stderr(&out)
    );
    assert!(
        all_vms().iter().all(|(id, ..)| seen.contains(id)),
        "a run refused for its image launched VMs"
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

/// `skyx sweep` finds what a job left (its VMs and its security group, by the job's tag), says
/// so with `--dry-run` and removes nothing, then removes them; it refuses to guess which jobs
/// to sweep.
#[test]
fn sweep_removes_what_a_crashed_gateway_left() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = Scratch::new("sweep");
    let job = format!("crashed-{}", std::process::id());
    let tag = |kind: aws_sdk_ec2::types::ResourceType| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(kind)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("skyx-job")
                    .value(&job)
                    .build(),
            )
            .build()
    };
    let group = rt.block_on(async {
        let client = client("us-east-1").await;
        let group = client
            .create_security_group()
            .group_name(format!("skyx-{job}"))
            .description("left by a crashed gateway")
            .tag_specifications(tag(aws_sdk_ec2::types::ResourceType::SecurityGroup))
            .send()
            .await
            .unwrap();
        client
            .run_instances()
            .image_id(an_image("us-east-1").await)
            .min_count(2)
            .max_count(2)
            .security_group_ids(group.group_id().unwrap())
            .tag_specifications(tag(aws_sdk_ec2::types::ResourceType::Instance))
            .send()
            .await
            .unwrap();
        group.group_id().unwrap().to_string()
    });
    let ep = endpoint();
    let sweep = |extra: &[&str]| {
        let mut args = vec![
            "sweep",
            "--provider",
            "ec2",
            "--region",
            "aws:us-east-1",
            "--ec2-endpoint",
            &ep,
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &CREDENTIALS)
    };
    let live = || -> Vec<String> {
        rt.block_on(job_vms("us-east-1", &["crashed-"]))
            .into_iter()
            .filter(|(_, state, _)| state != "terminated" && state != "shutting-down")
            .map(|(id, ..)| id)
            .collect()
    };
    let ours = |ids: &[String], text: &str| ids.iter().filter(|id| text.contains(*id)).count();

    let out = sweep(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--all-jobs"), "{}", stderr(&out));

    let before = live();
    let out = sweep(&["--job", &job, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("would remove 2 VMs and 1 security groups"),
        "{text}"
    );
    assert!(text.contains(&group), "{text}");
    assert_eq!(ours(&before, &text), 2, "{text}");
    assert_eq!(live(), before, "a dry run removed something");

    let out = sweep(&["--job", &job]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("removed 2 VMs and 1 security groups"),
        "{text}"
    );
    let after = live();
    assert_eq!(ours(&after, &text), 0, "still running: {after:?}\n{text}");
    let groups = rt.block_on(async {
        client("us-east-1")
            .await
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:skyx-job")
                    .values(&job)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .security_groups()
            .len()
    });
    assert_eq!(groups, 0, "the job's group stays");
}
