//! Agents on VMs booted as they would boot in the cloud: `skyx cp --provider gcp|azure`
//! against a contract server of the test's own (Compute Engine, Resource Manager) whose boot
//! hook (`deploy/contracts/vmboot.py`) boots each VM it says is running as a network namespace
//! of this machine, with the VM's public address, a metadata server at 169.254.169.254
//! answering as the cloud's does, its own mount view, and the exact boot scripts the provider
//! sent, run as the cloud's guest runs them (GCE: the startup script by bash; Azure: the custom
//! data by cloud-init). The bootstrap downloads the agent from a URL the test serves on the
//! VMs' bridge and refuses it unless its SHA-256 is the pinned one. Root and iproute2, as the
//! sky's tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stores::Scratch;
use crate::util::{bin, stderr, stdout};

fn vmboot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/contracts/vmboot.py")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "nothing answers on {address}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A contract server (`gce`, `azure`) whose VMs boot as namespaces on a bridge of their own,
/// and a file server on that bridge with this build's `skyx-agent`. Dropping it halts every
/// VM and removes the bridge.
struct Booted {
    state: PathBuf,
    endpoint: String,
    agent_url: String,
    bridge_ip: String,
    children: Vec<Child>,
}

impl Booted {
    /// `bridge`: the host's address on the VMs' bridge (`10.204.0.1/16`); `public`: the
    /// range VMs' external addresses come from. Tests that run at once use disjoint ranges:
    /// each is routed to its own bridge.
    fn start(scratch: &Scratch, cloud: &str, bridge: &str, public: &str) -> Booted {
        let state = scratch.dir.join("vms");
        std::fs::create_dir_all(&state).unwrap();
        let up = Command::new("python3")
            .arg(vmboot())
            .args(["up", state.to_str().unwrap(), bridge, public])
            .output()
            .unwrap();
        let bridge_ip = bridge.split('/').next().unwrap().to_string();
        let mut booted = Booted {
            state: state.clone(),
            endpoint: String::new(),
            agent_url: String::new(),
            bridge_ip: bridge_ip.clone(),
            children: Vec::new(),
        };
        assert!(up.status.success(), "vmboot up: {}", stderr(&up));
        let files = free_port();
        let agent_dir = bin("skyx-agent").parent().unwrap().to_path_buf();
        booted.children.push(
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &files.to_string(),
                    "--bind",
                    &bridge_ip,
                ])
                .current_dir(&agent_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        booted.agent_url = format!("http://{bridge_ip}:{files}/skyx-agent");
        let api = free_port();
        booted.endpoint = format!("http://127.0.0.1:{api}");
        let python = std::env::var("SKYX_TEST_CONTRACTS_PYTHON")
            .expect("SKYX_TEST_CONTRACTS_PYTHON: start the servers with deploy/test-servers.sh");
        // (The contracts' Python: its cloud-init stand-in reads YAML.)
        let hook = format!(
            "{python} {} hook {} {} {cloud}",
            vmboot().display(),
            state.display(),
            booted.endpoint
        );
        let contracts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/contracts");
        let mut server = Command::new(&python);
        match cloud {
            "gce" => server.arg(contracts.join("gce.py")).args([
                "--discovery",
                &std::env::var("SKYX_TEST_GCE_DISCOVERY").unwrap(),
                "--nat-pool",
                public,
            ]),
            _ => server.arg(contracts.join("azure.py")).args([
                "--specs",
                contracts.join("azure-specs").to_str().unwrap(),
                "--public-ip-pool",
                public,
            ]),
        };
        let log = std::fs::File::create(state.join("server.log")).unwrap();
        booted.children.push(
            server
                .args(["--host", "127.0.0.1", "--port", &api.to_string()])
                .args(["--boot-hook", &hook])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_port(&format!("{bridge_ip}:{files}"));
        wait_port(&format!("127.0.0.1:{api}"));
        booted
    }

    /// The namespaces of VMs that still run.
    fn running(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("vms"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What every booted VM logged (its boot, its metadata server, its bootstrap).
    fn vm_logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.state).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("vm-") {
                for log in ["vm.log", "agent.log"] {
                    all += &std::fs::read_to_string(entry.path().join(log)).unwrap_or_default();
                }
            }
        }
        all
    }

    /// What the contract server holds for `scope` (a project, a subscription).
    fn state(&self, scope: &str) -> Value {
        let key = if scope.contains('-') && scope.len() == 36 {
            "subscription"
        } else {
            "project"
        };
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*"])
            .arg(format!("{}/_contract/state?{key}={scope}", self.endpoint))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("python3")
            .arg(vmboot())
            .args(["down", self.state.to_str().unwrap()])
            .status();
    }
}

/// Waits (a little) for the VMs a copy's end deleted to be halted: the contract server runs
/// its halt hook after the delete operation is done.
fn settle(gce: &Booted) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gce.running().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    gce.running()
}

#[test]
fn a_copy_runs_through_a_relay_on_gce_vms_booted_from_their_startup_script() {
    let scratch = Scratch::new("vm-boot");
    let gce = Booted::start(&scratch, "gce", "10.204.0.1/16", "198.51.100.0/25");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("nested/small.txt"), b"through three booted VMs\n").unwrap();
    let dst = scratch.dir.join("dst");
    let (src, dst_arg) = (src.display().to_string(), dst.display().to_string());
    let gateway = format!("{}/32", gce.bridge_ip);
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
            "--provider",
            "gcp",
            "--gcp-project",
            project,
            "--gce-endpoint",
            &gce.endpoint,
            "--gce-access-token",
            "e2e",
            "--agent-url",
            &gce.agent_url,
            "--gateway-cidr",
            &gateway,
            "--vm-ready-timeout",
            "90s",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        scratch.skyx(&args, &[])
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
    let left = gce.state("boot-pin");
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
    let left = gce.state("boot-copy");
    assert_eq!(left["instances"], serde_json::json!([]), "{left}");
    let rules: Vec<&Value> = left["firewalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with("skyx-"))
        .collect();
    assert!(rules.is_empty(), "{rules:?}");

    // `bench paths` on two booted VMs: each direction measured between them, then swept.
    let out = scratch.skyx(
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
            "--provider",
            "gcp",
            "--gcp-project",
            "boot-bench",
            "--gce-endpoint",
            &gce.endpoint,
            "--gce-access-token",
            "e2e",
            "--agent-url",
            &gce.agent_url,
            "--gateway-cidr",
            &gateway,
            "--vm-ready-timeout",
            "90s",
        ],
        &[],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), gce.vm_logs());
    let measured: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(measured.len(), 2, "{measured:?}");
    for m in &measured {
        assert!(m["gbps"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    assert_eq!(gce.state("boot-bench")["instances"], serde_json::json!([]));
}

#[test]
fn a_copy_runs_on_azure_vms_booted_from_their_custom_data() {
    let scratch = Scratch::new("vm-boot-azure");
    let azure = Booted::start(&scratch, "azure", "10.205.0.1/16", "100.100.0.0/24");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let dst = scratch.dir.join("dst");
    let (src, dst_arg) = (src.display().to_string(), dst.display().to_string());
    let gateway = format!("{}/32", azure.bridge_ip);
    let subscription = "5b7e4c1a-0d2f-4e6b-9a8c-3f1e2d4c5b6a";
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
            &azure.endpoint,
            "--azure-access-token",
            "e2e",
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
    // Nothing of the job is left: its resource group went, and every VM's namespace with it.
    assert_eq!(settle(&azure), Vec::<String>::new(), "VMs left running");
    let left = azure.state(subscription);
    assert_eq!(left["resourceGroups"], serde_json::json!([]), "{left}");
}

/// Ctrl-C while a copy's agents on booted GCE VMs are moving bytes: the copy stops, and no VM,
/// firewall rule or namespace of the job is left.
#[test]
fn ctrl_c_mid_copy_leaves_no_vm_rule_or_namespace() {
    let scratch = Scratch::new("vm-boot-ctrl-c");
    let gce = Booted::start(&scratch, "gce", "10.206.0.1/16", "198.51.100.128/25");
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("slow.bin"), vec![7u8; 40_000_000]).unwrap();
    let (src, dst) = (
        src.display().to_string(),
        scratch.dir.join("dst").display().to_string(),
    );
    let gateway = format!("{}/32", gce.bridge_ip);
    let mut copy = scratch
        .command(
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
                "--provider",
                "gcp",
                "--gcp-project",
                "boot-ctrl-c",
                "--gce-endpoint",
                &gce.endpoint,
                "--gce-access-token",
                "e2e",
                "--agent-url",
                &gce.agent_url,
                "--gateway-cidr",
                &gateway,
                "--vm-ready-timeout",
                "90s",
                "--no-progress",
            ],
            &[],
        )
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
    let left = gce.state("boot-ctrl-c");
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
