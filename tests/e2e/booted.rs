//! [`Booted`]: clouds whose VMs boot as network namespaces of this machine, for the tests
//! that run agents as they would run in the cloud. One bridge of the test's own; per cloud a
//! server of the test's own whose boot hook is `deploy/contracts/vmboot.py` (GCE: the contract
//! server `gce.py`; Azure: `azure.py`; EC2: a moto server and `ec2boot.py`, moto's missing
//! boot hook); a file server on the bridge with this build's `skyx-agent`; and, when asked,
//! object stores on the bridge (s3s-fs, Azurite) that the VMs' agents can reach. Dropping it
//! stops every server, halts every VM and removes the bridge.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stores::Scratch;
use crate::util::bin;

pub(crate) fn contracts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/contracts")
}

pub(crate) fn tools() -> PathBuf {
    PathBuf::from(
        std::env::var("SKYX_TEST_TOOLS_DIR")
            .expect("SKYX_TEST_TOOLS_DIR: start the servers with deploy/test-servers.sh"),
    )
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

/// Azurite's well-known development key (its account `devstoreaccount1`).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The keys of the bridge's S3 server, and what an EC2 VM's instance profile grants.
pub const S3_KEY: &str = "booted";
pub const S3_SECRET: &str = "booted-secret";

/// Held by a [`Booted`] with EC2 VMs: moto hands out public addresses from one range, which
/// only one bridge can route (nextest's `moto-vms` group does the same across processes).
static MOTO_RANGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Booted {
    _moto_range: Option<std::sync::MutexGuard<'static, ()>>,
    state: PathBuf,
    pub agent_url: String,
    pub bridge_ip: String,
    endpoints: BTreeMap<&'static str, String>,
    children: Vec<Child>,
}

impl Booted {
    /// `bridge`: the host's address on the VMs' bridge (`10.204.0.1/16`); `clouds`: each cloud
    /// (`gce`, `azure`, `ec2`) with the range its VMs' public addresses come from (EC2's are
    /// moto's, 54.214.0.0/16). Tests that run at once use disjoint ranges: each is routed to
    /// its own bridge.
    pub fn start(scratch: &Scratch, bridge: &str, clouds: &[(&'static str, &str)]) -> Booted {
        let state = scratch.dir.join("vms");
        std::fs::create_dir_all(&state).unwrap();
        let bridge_ip = bridge.split('/').next().unwrap().to_string();
        let moto_range = clouds
            .iter()
            .any(|(cloud, _)| *cloud == "ec2")
            .then(|| MOTO_RANGE.lock().unwrap_or_else(|e| e.into_inner()));
        let mut booted = Booted {
            _moto_range: moto_range,
            state: state.clone(),
            agent_url: String::new(),
            bridge_ip: bridge_ip.clone(),
            endpoints: BTreeMap::new(),
            children: Vec::new(),
        };
        let up = Command::new("python3")
            .arg(contracts().join("vmboot.py"))
            .args(["up", state.to_str().unwrap(), bridge])
            .args(clouds.iter().map(|(_, public)| *public))
            .output()
            .unwrap();
        assert!(
            up.status.success(),
            "vmboot up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        let files = free_port();
        let agent_dir = bin("skyx-agent").parent().unwrap().to_path_buf();
        booted.spawn(
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &files.to_string(),
                    "--bind",
                    &bridge_ip,
                ])
                .current_dir(&agent_dir),
            "files",
        );
        booted.agent_url = format!("http://{bridge_ip}:{files}/skyx-agent");
        wait_port(&format!("{bridge_ip}:{files}"));
        for (cloud, public) in clouds {
            booted.start_cloud(cloud, public);
        }
        booted
    }

    fn spawn(&mut self, command: &mut Command, log: &str) {
        let log = std::fs::File::create(self.state.join(format!("{log}.log"))).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn start_cloud(&mut self, cloud: &'static str, public: &str) {
        let python = std::env::var("SKYX_TEST_CONTRACTS_PYTHON")
            .expect("SKYX_TEST_CONTRACTS_PYTHON: start the servers with deploy/test-servers.sh");
        let api = free_port();
        let endpoint = format!("http://127.0.0.1:{api}");
        // The hook reports power-offs to the cloud's server (EC2: to ec2boot.py's own port).
        let control = match cloud {
            "ec2" => free_port(),
            _ => api,
        };
        // (The contracts' Python: its cloud-init stand-in reads YAML.)
        let hook = format!(
            "{python} {} hook {} http://127.0.0.1:{control} {cloud}",
            contracts().join("vmboot.py").display(),
            self.state.display(),
        );
        match cloud {
            "gce" => self.spawn(
                Command::new(&python)
                    .arg(contracts().join("gce.py"))
                    .args(["--host", "127.0.0.1", "--port", &api.to_string()])
                    .args([
                        "--discovery",
                        &std::env::var("SKYX_TEST_GCE_DISCOVERY").unwrap(),
                    ])
                    .args(["--nat-pool", public, "--boot-hook", &hook]),
                "gce",
            ),
            "azure" => self.spawn(
                Command::new(&python)
                    .arg(contracts().join("azure.py"))
                    .args(["--host", "127.0.0.1", "--port", &api.to_string()])
                    .arg("--specs")
                    .arg(contracts().join("azure-specs"))
                    .args(["--public-ip-pool", public, "--boot-hook", &hook]),
                "azure",
            ),
            _ => {
                let moto = tools().join("moto/bin");
                self.spawn(
                    Command::new(moto.join("moto_server")).args([
                        "-H",
                        "127.0.0.1",
                        "-p",
                        &api.to_string(),
                    ]),
                    "moto",
                );
                wait_port(&format!("127.0.0.1:{api}"));
                self.spawn(
                    Command::new(moto.join("python"))
                        .arg(contracts().join("ec2boot.py"))
                        .args([&endpoint, &control.to_string(), &hook])
                        .args(["us-east-1", "us-west-2", "eu-west-1"])
                        // What an instance profile's role grants: the bridge S3's keys.
                        .env("SKYX_BOOT_ROLE_KEYS", format!("{S3_KEY}:{S3_SECRET}")),
                    "ec2boot",
                );
                wait_port(&format!("127.0.0.1:{control}"));
            }
        }
        wait_port(&format!("127.0.0.1:{api}"));
        self.endpoints.insert(cloud, endpoint);
    }

    /// Makes an instance profile in the EC2 cloud's moto (RunInstances refuses a profile that
    /// does not exist, as AWS does). moto routes by the credential scope of the Authorization
    /// header and checks no signature, so a plain query request does.
    pub fn instance_profile(&self, name: &str) {
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "-X", "POST"])
            .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
            .args(["-H", "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"])
            .args(["-d", &format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08")])
            .arg(format!("{}/", self.endpoint("ec2")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("CreateInstanceProfileResponse"), "{text}");
    }

    /// The API endpoint of `cloud`'s server.
    pub fn endpoint(&self, cloud: &str) -> String {
        self.endpoints[cloud].clone()
    }

    /// An S3 server (s3s-fs, keys [`S3_KEY`]/[`S3_SECRET`]) on the bridge: its endpoint.
    pub fn s3(&mut self) -> String {
        let port = free_port();
        let dir = self.state.join("s3");
        std::fs::create_dir_all(&dir).unwrap();
        self.spawn(
            Command::new(tools().join("bin/s3s-fs"))
                .args([
                    "--host",
                    &self.bridge_ip.clone(),
                    "--port",
                    &port.to_string(),
                ])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg(&dir),
            "s3",
        );
        wait_port(&format!("{}:{port}", self.bridge_ip));
        format!("http://{}:{port}", self.bridge_ip)
    }

    /// The GCS emulator on the bridge, taking only the access tokens a GCE metadata server
    /// stand-in issued (a booted VM's, or [`Booted::gce_metadata`]'s), as GCS takes only
    /// Google's, and logging who made each request (`gcs.log`): its endpoint.
    pub fn gcs(&mut self) -> String {
        let port = free_port();
        let tokens = self.gce_tokens();
        std::fs::create_dir_all(&tokens).unwrap();
        self.spawn(
            Command::new(tools().join("venv/bin/python"))
                .arg(contracts().join("../gcs_emulator.py"))
                .args([
                    "start",
                    "-H",
                    &self.bridge_ip.clone(),
                    "--port",
                    &port.to_string(),
                ])
                .arg("--in-memory")
                .arg("--require-tokens")
                .arg(&tokens),
            "gcs",
        );
        wait_port(&format!("{}:{port}", self.bridge_ip));
        format!("http://{}:{port}", self.bridge_ip)
    }

    /// A GCE metadata server for this host's processes (told with `GCE_METADATA_HOST`, as a
    /// gateway on a GCE VM would find its own), its service account `email` with the
    /// cloud-platform scope: its `host:port`.
    pub fn gce_metadata(&mut self, email: &str) -> String {
        let resource = self.state.join("gateway-instance.json");
        let instance = serde_json::json!({
            "selfLink": "https://compute.googleapis.com/compute/v1/projects/gateway/zones/us-east1-b/instances/gateway",
            "networkInterfaces": [{"networkIP": self.bridge_ip, "accessConfigs": []}],
            "serviceAccounts": [{
                "email": email,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            }],
        });
        std::fs::write(&resource, instance.to_string()).unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        self.spawn(
            Command::new("python3")
                .arg(contracts().join("vmguest.py"))
                .args(["metadata", "gce"])
                .arg(&resource)
                .arg("--tokens")
                .arg(self.gce_tokens())
                .args(["--listen", &address]),
            "gateway-metadata",
        );
        wait_port(&address);
        address
    }

    /// Where GCE metadata stand-ins write the tokens they issue (vmboot.py passes its VMs'
    /// the same directory), and the bridge's GCS emulator looks them up.
    fn gce_tokens(&self) -> PathBuf {
        self.state.join("gce-tokens")
    }

    /// What the bridge's GCS emulator logged ([`Booted::gcs`]).
    pub fn gcs_log(&self) -> String {
        std::fs::read_to_string(self.state.join("gcs.log")).unwrap_or_default()
    }

    /// Azurite over HTTPS taking Entra ID bearer tokens as well as keys (its OAuth "basic"
    /// mode, which checks a token's audience, issuer and times but no signature), on the
    /// bridge: its blob endpoint (`https://IP:PORT/devstoreaccount1`) and the file of the
    /// authority that signed its certificate. The VMs booted from now on trust that authority
    /// (vmboot.py adds it to their certificate bundle); the gateway is told with
    /// `SSL_CERT_FILE`.
    pub fn azurite_oauth(&mut self) -> (String, PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![self.bridge_ip.clone()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let files = |name: &str, pem: String| {
            let path = self.state.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_file = files("trusted-ca.pem", ca.pem());
        let (cert, key) = (
            files("azurite-cert.pem", cert.pem()),
            files("azurite-key.pem", key.serialize_pem()),
        );
        let port = free_port();
        self.spawn(
            Command::new(tools().join("npm/bin/azurite-blob"))
                .args(["--blobHost", &self.bridge_ip.clone()])
                .args(["--blobPort", &port.to_string()])
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["--oauth", "basic", "--inMemoryPersistence", "--loose"])
                .args(["--skipApiVersionCheck", "--disableTelemetry"]),
            "azurite-oauth",
        );
        wait_port(&format!("{}:{port}", self.bridge_ip));
        let endpoint = format!("https://{}:{port}/devstoreaccount1", self.bridge_ip);
        (endpoint, ca_file)
    }

    /// The namespaces of VMs that still run.
    pub fn running(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("vms"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What every booted VM logged (its boot, its metadata server, its bootstrap, its agent).
    pub fn vm_logs(&self) -> String {
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

    /// `args` and the flags that put a command's agents on this harness's GCE VMs, in
    /// `project`.
    pub fn on_gce(&self, project: &str, args: &[&str]) -> Vec<String> {
        let gateway = format!("{}/32", self.bridge_ip);
        let flags = [
            "--provider",
            "gcp",
            "--gcp-project",
            project,
            "--gce-endpoint",
            &self.endpoint("gce"),
            "--gce-access-token",
            "e2e",
            "--agent-url",
            &self.agent_url,
            "--gateway-cidr",
            &gateway,
            "--vm-ready-timeout",
            "90s",
        ];
        args.iter().chain(&flags).map(|a| a.to_string()).collect()
    }

    /// The file `/etc/{path}` of every VM booted so far that wrote one (its writes to /etc
    /// outlive it in the test's state directory).
    pub fn vm_etc(&self, path: &str) -> Vec<String> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.state).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("vm-") {
                let file = entry.path().join("layers/etc/upper").join(path);
                if let Ok(text) = std::fs::read_to_string(file) {
                    files.push(text);
                }
            }
        }
        files
    }

    /// What `cloud`'s contract server holds for `scope` (a project, a subscription).
    pub fn state(&self, cloud: &str, scope: &str) -> Value {
        self.contract(cloud, "state", scope)
    }

    /// Every API request `cloud`'s contract server answered for `scope`: method, path, body,
    /// status.
    pub fn requests(&self, cloud: &str, scope: &str) -> Value {
        self.contract(cloud, "requests", scope)
    }

    /// Tells `cloud`'s contract server to fail launches as `fault` (the body of its
    /// `/_contract/faults`) says.
    pub fn fault(&self, cloud: &str, fault: &Value) {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--noproxy", "*", "-X", "POST"])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &fault.to_string(),
            ])
            .arg(format!("{}/_contract/faults", self.endpoint(cloud)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn contract(&self, cloud: &str, what: &str, scope: &str) -> Value {
        let key = if cloud == "azure" {
            "subscription"
        } else {
            "project"
        };
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*"])
            .arg(format!(
                "{}/_contract/{what}?{key}={scope}",
                self.endpoint(cloud)
            ))
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
            .arg(contracts().join("vmboot.py"))
            .args(["down", self.state.to_str().unwrap()])
            .status();
    }
}

/// Waits (a little) for the VMs a copy's end deleted to be halted: the servers run their
/// halt hooks once the delete is done.
pub fn settle(booted: &Booted) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !booted.running().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    booted.running()
}
