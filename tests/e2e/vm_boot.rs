//! Agents on VMs booted as they would boot in the cloud: `skyx cp --provider gcp|azure`
//! against a contract server of the test's own (Compute Engine, Resource Manager) whose boot
//! hook (`deploy/contracts/vmboot.py`) boots each VM it says is running as a network namespace
//! of this machine, with the VM's public address, a metadata server at 169.254.169.254
//! answering as the cloud's does, its own mount view, and the exact boot scripts the provider
//! sent, run as the cloud's guest runs them (GCE: the startup script by bash; Azure: the custom
//! data by cloud-init). The bootstrap downloads the agent from a URL the test serves on the
//! VMs' bridge and refuses it unless its SHA-256 is the pinned one. Root and iproute2, as the
//! sky's tests.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::booted::{AZURITE_KEY, Booted, S3_KEY, S3_SECRET, settle};
use crate::stores::Scratch;
use crate::util::{stderr, stdout, strs};

#[test]
fn a_copy_runs_through_a_relay_on_gce_vms_booted_from_their_startup_script() {
    let scratch = Scratch::new("vm-boot");
    let gce = Booted::start(&scratch, "10.204.0.1/16", &[("gce", "198.51.100.0/25")]);
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("nested/small.txt"), b"through three booted VMs\n").unwrap();
    let dst = scratch.dir.join("dst");
    let (src, dst_arg) = (src.display().to_string(), dst.display().to_string());
    let cp = |project: &str, extra: &[&str]| {
        let mut args = vec![
            "cp",
            "-r",
            &src,
            &dst_arg,
            "--src-region",
            "gcp:us-east1-b",
            "--dst-region",
            "gcp:europe-west1-b",
            "--via",
            "gcp:us-west1-a",
            "--max-vms-per-region",
            "1",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&strs(&gce.on_gce(project, &args)), &[])
    };

    // A VM refuses an agent whose hash is not the pinned one, powers itself off, and the
    // launch fails at once saying so; nothing of the job is left.
    let out = cp("boot-pin", &["--agent-sha256", &"0".repeat(64)]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("bootstrap failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        gce.vm_logs()
            .contains("is not the agent the gateway pinned"),
        "{}",
        gce.vm_logs()
    );
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    let left = gce.state("gce", "boot-pin");
    assert_eq!(left["instances"], serde_json::json!([]), "{left}");

    // The pinned build: three VMs boot, the copy goes through the relay, byte for byte.
    let out = cp("boot-copy", &[]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        gce.vm_logs()
    );
    assert!(stdout(&out).contains("gcp:us-west1-a"), "{}", stdout(&out));
    assert_eq!(std::fs::read(dst.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(dst.join("nested/small.txt")).unwrap(),
        b"through three booted VMs\n"
    );
    // Each agent learnt its address from the metadata server, with the header GCE requires.
    let logs = gce.vm_logs();
    assert_eq!(
        logs.matches("access-configs/0/external-ip HTTP/1.1\" 200")
            .count(),
        3,
        "{logs}"
    );
    assert_eq!(logs.matches("agent ready").count(), 3, "{logs}");
    // Nothing of the job is left: no VM, no firewall rule, no namespace.
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    let left = gce.state("gce", "boot-copy");
    assert_eq!(left["instances"], serde_json::json!([]), "{left}");
    let rules: Vec<&Value> = left["firewalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with("skyx-"))
        .collect();
    assert!(rules.is_empty(), "{rules:?}");

    // `bench paths` on two booted VMs: each direction measured between them, then swept.
    let bench = gce.on_gce(
        "boot-bench",
        &[
            "bench",
            "paths",
            "--regions",
            "gcp:us-east1-b,gcp:europe-west1-b",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--json",
        ],
    );
    let out = scratch.skyx(&strs(&bench), &[]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gce.vm_logs());
    let measured: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(measured.len(), 2, "{measured:?}");
    for m in &measured {
        assert!(m["gbps"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    assert_eq!(
        gce.state("gce", "boot-bench")["instances"],
        serde_json::json!([])
    );
}

#[test]
fn a_copy_runs_on_azure_vms_booted_from_their_custom_data() {
    let scratch = Scratch::new("vm-boot-azure");
    let azure = Booted::start(&scratch, "10.205.0.1/16", &[("azure", "100.100.0.0/24")]);
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let dst = scratch.dir.join("dst");
    let (src, dst_arg) = (src.display().to_string(), dst.display().to_string());
    let (gateway, endpoint) = (format!("{}/32", azure.bridge_ip), azure.endpoint("azure"));
    let subscription = "5b7e4c1a-0d2f-4e6b-9a8c-3f1e2d4c5b6a";
    let identity = format!(
        "/subscriptions/{subscription}/resourceGroups/ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agents"
    );
    let out = scratch.skyx(
        &[
            "cp",
            "-r",
            &src,
            &dst_arg,
            "--src-region",
            "azure:eastus",
            "--dst-region",
            "azure:westeurope",
            "--max-vms-per-region",
            "1",
            "--provider",
            "azure",
            "--azure-subscription",
            subscription,
            "--azure-arm-endpoint",
            &endpoint,
            "--azure-access-token",
            "e2e",
            "--azure-identity",
            &identity,
            "--agent-url",
            &azure.agent_url,
            "--gateway-cidr",
            &gateway,
            "--vm-ready-timeout",
            "90s",
            "--no-progress",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        azure.vm_logs()
    );
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), data);
    // cloud-init wrote the files and ran the bootstrap, which took the address the gateway gave.
    let logs = azure.vm_logs();
    assert!(logs.matches("agent ready").count() >= 2, "{logs}");
    // Each agent would reach Azure stores the job gives no credential for as the VM's identity.
    let envs = azure.vm_etc("skyx/agent.env");
    assert!(envs.len() >= 2, "{envs:?}");
    for env in &envs {
        assert!(
            env.contains(&format!("SKYX_AZURE_MANAGED_IDENTITY={identity}\n")),
            "{env}"
        );
    }
    // Nothing of the job is left: its resource group went, and every VM's namespace with it.
    assert_eq!(settle(&azure), Vec::<String>::new(), "VMs left running");
    let left = azure.state("azure", subscription);
    assert_eq!(left["resourceGroups"], serde_json::json!([]), "{left}");
}

/// Ctrl-C while a copy's agents on booted GCE VMs are moving bytes: the copy stops, and no VM,
/// firewall rule or namespace of the job is left.
#[test]
fn ctrl_c_mid_copy_leaves_no_vm_rule_or_namespace() {
    let scratch = Scratch::new("vm-boot-ctrl-c");
    let gce = Booted::start(&scratch, "10.206.0.1/16", &[("gce", "198.51.100.128/25")]);
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("slow.bin"), vec![7u8; 40_000_000]).unwrap();
    let (src, dst) = (
        src.display().to_string(),
        scratch.dir.join("dst").display().to_string(),
    );
    let args = gce.on_gce(
        "boot-ctrl-c",
        &[
            "cp",
            "-r",
            &src,
            &dst,
            "--src-region",
            "gcp:us-east1-b",
            "--dst-region",
            "gcp:europe-west1-b",
            "--max-vms-per-region",
            "1",
            // 40 MB at 2 MB/s: twenty seconds to interrupt it in.
            "--bwlimit",
            "2MB",
            "--no-progress",
        ],
    );
    let mut copy = scratch
        .command(&strs(&args), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once both agents answer and the copy is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while gce.vm_logs().matches("job installed").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the agents never got their job: {}",
            gce.vm_logs()
        );
        assert!(
            copy.try_wait().unwrap().is_none(),
            "the copy ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(gce.running().len(), 2, "both VMs run before Ctrl-C");
    let pid = copy.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = copy.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    let left = gce.state("gce", "boot-ctrl-c");
    assert_eq!(left["instances"], serde_json::json!([]), "{left}");
    assert!(
        !left["firewalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"].as_str().unwrap().starts_with("skyx-")),
        "{left}"
    );
}

/// The moto AMI of `region` (moto holds a set of public ones).
pub(crate) fn moto_image(endpoint: &str, region: &str) -> String {
    let python = std::path::PathBuf::from(std::env::var("SKYX_TEST_TOOLS_DIR").unwrap())
        .join("moto/bin/python");
    let out = Command::new(python)
        .arg("-c")
        .arg(format!(
            "import boto3; print(boto3.client('ec2', region_name='{region}', endpoint_url='{endpoint}', aws_access_key_id='t', aws_secret_access_key='t').describe_images()['Images'][0]['ImageId'])"
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Instances moto still runs (any region the test used).
pub(crate) fn moto_running(endpoint: &str) -> usize {
    let python = std::path::PathBuf::from(std::env::var("SKYX_TEST_TOOLS_DIR").unwrap())
        .join("moto/bin/python");
    let out = Command::new(python)
        .arg("-c")
        .arg(format!(
            "import boto3\nn = 0\nfor r in ['us-east-1', 'us-west-2', 'eu-west-1']:\n    c = boto3.client('ec2', region_name=r, endpoint_url='{endpoint}', aws_access_key_id='t', aws_secret_access_key='t')\n    n += sum(1 for x in c.describe_instances()['Reservations'] for i in x['Instances'] if i['State']['Name'] in ('pending', 'running'))\nprint(n)"
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The issue's whole path: an S3 bucket's objects through a relay on GCE into an Azure
/// container, `--provider cloud` putting each agent in its own region's cloud, every VM booted
/// from what its provider sent (EC2: user data under cloud-init with IMDSv2; GCE: the startup
/// script; Azure: custom data), byte for byte, and nothing of the job left in any cloud.
#[test]
fn s3_through_a_gce_relay_to_azure_on_vms_booted_in_each_cloud() {
    let scratch = Scratch::new("vm-boot-sky");
    let mut sky = Booted::start(
        &scratch,
        "10.208.0.1/16",
        &[
            ("ec2", "54.214.0.0/16"),
            ("gce", "100.101.0.0/24"),
            ("azure", "100.102.0.0/24"),
        ],
    );
    let (s3, (blob, ca)) = (sky.s3(), sky.azurite_oauth());
    // The sink's account is named by where it is, with no credential: this machine reaches it
    // with the key in its environment, and the sink agent as its VM's managed identity (a
    // token from the VM's metadata service, which Azurite checks as Azure Storage would).
    let config = scratch.dir.join("sky.toml");
    std::fs::write(
        &config,
        format!("[remotes.sink]\ntype = \"azure\"\naccount = \"devstoreaccount1\"\nendpoint = \"{blob}\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let key = format!(
        "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={blob};"
    );
    let ca = ca.display().to_string();
    let env = [
        ("AWS_ENDPOINT_URL", s3.as_str()),
        ("AWS_ACCESS_KEY_ID", S3_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ("AWS_REGION", "us-east-1"),
        ("AZURE_STORAGE_CONNECTION_STRING", key.as_str()),
        ("SSL_CERT_FILE", ca.as_str()),
        ("SKYX_CONFIG", config.as_str()),
    ];
    let local = scratch.dir.join("data");
    std::fs::create_dir_all(local.join("deep")).unwrap();
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    std::fs::write(local.join("big.bin"), &big).unwrap();
    std::fs::write(local.join("deep/small.txt"), b"s3 -> gce -> azure\n").unwrap();
    for bucket in ["s3://booted-src", "az://devstoreaccount1/booted-dst"] {
        let out = scratch.skyx(&["mb", bucket], &env);
        assert!(out.status.success(), "mb {bucket}: {}", stderr(&out));
    }
    let local_arg = local.display().to_string();
    let out = scratch.skyx(
        &[
            "cp",
            "-r",
            &local_arg,
            "s3://booted-src/data",
            "--no-progress",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let (ec2, gce, azure) = (
        sky.endpoint("ec2"),
        sky.endpoint("gce"),
        sky.endpoint("azure"),
    );
    // The source agent reads S3 with its VM's role, from the metadata service, as on EC2.
    sky.instance_profile("booted-agents");
    let image = format!("us-east-1={}", moto_image(&ec2, "us-east-1"));
    let gateway = format!("{}/32", sky.bridge_ip);
    let subscription = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
    let identity = format!(
        "/subscriptions/{subscription}/resourceGroups/ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/sink-writer"
    );
    let out = scratch.skyx(
        &[
            "cp",
            "-r",
            "s3://booted-src/data",
            "sink:booted-dst/data",
            "--src-region",
            "aws:us-east-1",
            "--dst-region",
            "azure:westeurope",
            "--via",
            "gcp:us-west1-a",
            "--max-vms-per-region",
            "1",
            "--provider",
            "cloud",
            "--ec2-endpoint",
            &ec2,
            "--ec2-image",
            &image,
            "--ec2-instance-profile",
            "booted-agents",
            // (The agents reach S3 at its endpoint on the bridge, which the job carries.)
            "--src-endpoint",
            &s3,
            "--gcp-project",
            "booted-sky",
            "--gce-endpoint",
            &gce,
            "--gce-access-token",
            "e2e",
            "--azure-subscription",
            subscription,
            "--azure-arm-endpoint",
            &azure,
            "--azure-access-token",
            "e2e",
            "--azure-identity",
            &identity,
            "--agent-url",
            &sky.agent_url,
            "--gateway-cidr",
            &gateway,
            "--vm-ready-timeout",
            "120s",
            "--no-progress",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        sky.vm_logs()
    );
    let text = stdout(&out);
    assert!(
        text.contains("aws:us-east-1") && text.contains("gcp:us-west1-a"),
        "{text}"
    );
    assert!(text.contains("azure:westeurope"), "{text}");
    // Every cloud's guest booted its agent: IMDSv2 on EC2, GCE's metadata server, and the
    // address Azure's gateway gave.
    let logs = sky.vm_logs();
    assert_eq!(logs.matches("agent ready").count(), 3, "{logs}");
    assert!(logs.contains("PUT /latest/api/token"), "{logs}");
    assert!(logs.contains("access-configs/0/external-ip"), "{logs}");
    // Each end reached its store as its VM: the source with its instance profile's keys, the
    // sink with its managed identity's token; this machine's keys never left it.
    assert!(
        logs.contains(
            "GET /latest/meta-data/iam/security-credentials/booted-agents HTTP/1.1\" 200"
        ),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("GET /metadata/identity/oauth2/token?")
                && l.contains("msi_res_id=")
                && l.contains("HTTP/1.1\" 200")),
        "{logs}"
    );

    let back = scratch.dir.join("back");
    let back_arg = back.display().to_string();
    let out = scratch.skyx(
        &[
            "cp",
            "-r",
            "sink:booted-dst/data",
            &back_arg,
            "--no-progress",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(back.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(back.join("deep/small.txt")).unwrap(),
        b"s3 -> gce -> azure\n"
    );

    // Nothing of the job is left in any cloud, nor any namespace on this machine.
    assert_eq!(settle(&sky), Vec::<String>::new(), "VMs left running");
    assert_eq!(moto_running(&ec2), 0);
    assert_eq!(
        sky.state("gce", "booted-sky")["instances"],
        serde_json::json!([])
    );
    assert_eq!(
        sky.state("azure", subscription)["resourceGroups"],
        serde_json::json!([])
    );
}

/// A zone out of room and a region over quota as a copy's agents launch on booted GCE VMs: the
/// source's VM goes to the next zone of its region, and the route is planned again around the
/// relay's region, through another relay. The copy lands byte for byte, and the VMs the first
/// plan launched are gone with the rest.
#[test]
fn a_full_zone_and_a_region_over_quota_are_planned_around_on_booted_vms() {
    let scratch = Scratch::new("vm-boot-capacity");
    let gce = Booted::start(&scratch, "10.210.0.1/16", &[("gce", "100.104.0.0/24")]);
    // The direct path slow, two relays fast, through us-west1 the faster.
    let grid = scratch.dir.join("grid.csv");
    let gbps = |from: &str, to: &str, g: u64| format!("gcp:{from},gcp:{to},{g}000000000\n");
    std::fs::write(
        &grid,
        [
            "src_region,dst_region,throughput_received\n".to_string(),
            gbps("us-east1-b", "europe-west1-b", 2),
            gbps("us-east1-b", "us-west1-a", 20),
            gbps("us-west1-a", "europe-west1-b", 20),
            gbps("us-east1-b", "asia-east1-a", 15),
            gbps("asia-east1-a", "europe-west1-b", 15),
        ]
        .concat(),
    )
    .unwrap();
    let project = "boot-capacity";
    let full = |place: &str, at: &str, code: &str| {
        gce.fault(
            "gce",
            &serde_json::json!({"project": project, place: at, "code": code}),
        );
    };
    full("zone", "us-east1-b", "ZONE_RESOURCE_POOL_EXHAUSTED");
    full("region", "us-west1", "QUOTA_EXCEEDED");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let dst = scratch.dir.join("dst");
    let (src, dst_arg) = (src.display().to_string(), dst.display().to_string());
    let args = gce.on_gce(
        project,
        &[
            "cp",
            "-r",
            &src,
            &dst_arg,
            "--src-region",
            "gcp:us-east1-b",
            "--dst-region",
            "gcp:europe-west1-b",
            "--throughput-grid",
            grid.to_str().unwrap(),
            "--throughput-floor",
            "4",
            "--max-vms-per-region",
            "1",
            "--no-progress",
        ],
    );
    let out = scratch.skyx(&strs(&args), &[]);
    let (said, logs) = (stdout(&out), gce.vm_logs());
    assert!(out.status.success(), "{said}\n{}\n{logs}", stderr(&out));
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), data);
    assert!(
        said.contains("planned again before starting, gcp:us-west1-a had no capacity"),
        "{said}"
    );
    assert!(said.contains("gcp:asia-east1-a"), "{said}");
    // The prediction shown is the plan that ran, not the one given up before it started.
    assert!(
        said.contains("planner predicted: ")
            && said.contains(", for the plan made around regions out of capacity"),
        "{said}"
    );
    // Where VMs were asked for: the source's zone, then the next; the relay's region once (its
    // quota is every zone's), never again once planned around.
    let inserts: Vec<String> = gce
        .requests("gce", project)
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/instances"))
        .map(|r| {
            let path = r["path"].as_str().unwrap();
            path[path.find("zones/").unwrap()..].to_string()
        })
        .collect();
    for zone in [
        "us-east1-b",
        "us-east1-c",
        "us-west1-a",
        "asia-east1-a",
        "europe-west1-b",
    ] {
        assert!(
            inserts.contains(&format!("zones/{zone}/instances")),
            "{inserts:?}"
        );
    }
    assert_eq!(
        inserts.iter().filter(|i| i.contains("us-west1")).count(),
        1,
        "{inserts:?}"
    );
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    let left = gce.state("gce", project);
    assert_eq!(left["instances"], serde_json::json!([]), "{left}");
}
