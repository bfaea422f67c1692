//! Agents on Google Compute Engine VMs, through Compute Engine's REST API v1 ([`api`]).
//!
//! A job's VMs carry its network tag and label (`skyx-job`). Two firewall rules of the job
//! (firewalls are global to a network) admit, on the VMs with the tag, the agents' control
//! port from the gateway's address alone, and everything from the job's own agents alone:
//! each launch adds the new VM's address to the peers' rule once its agent answered hello (the
//! rule is made with the first such address: a rule with no source would admit the whole
//! internet). A VM boots with
//! [`crate::bootstrap::startup_script`]: GCE's Debian images run no cloud-init, and their
//! guest environment runs the `startup-script` metadata as root at every boot.
//!
//! GCE never deletes a VM whose guest powers off (it stops it), so a VM's own end is not
//! enough: every VM is launched with a maximum run duration after which GCE deletes it (the
//! teardown of last resort, should the gateway die and no one sweep), the gateway deletes
//! each VM it let go, and [`sweep`] deletes whatever carries the job's label.
//!
//! Capacity is zonal and arrives in the insert's operation, after the call was accepted: a
//! launch tries the region's zones in turn and reports [`ProviderError::Capacity`] for the
//! region only when every zone said so (or at once for a quota: the region's or the project's).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::bootstrap::{Address, Boot};
use crate::{AgentBinary, AgentHandle, LaunchRequest, LaunchedAgent, Provider, ProviderError};

pub mod api;
pub mod sweep;

pub use crate::names::job_label;
pub use api::{ApiError, Auth, Compute};
pub use sweep::{Swept, sweep};

/// The label every VM of a job carries (its value: [`job_label`]).
pub const JOB_LABEL: &str = "skyx-job";

/// Debian 12, the image family GCE's documentation names for `sourceImage`.
pub const DEFAULT_IMAGE: &str = "projects/debian-cloud/global/images/family/debian-12";

/// Where and how to launch agent VMs.
#[derive(Debug, Clone)]
pub struct GceConfig {
    /// The project VMs are launched in (and billed to).
    pub project: String,
    /// Machine type of every agent (the catalog's gateway type, `n2-standard-32`).
    pub machine_type: String,
    /// The boot image: an image or image family URL (a Linux with systemd, curl, sha256sum
    /// and GCE's guest environment; Debian 12 by default).
    pub image: String,
    /// Where VMs get the `skyx-agent` binary, and its pinned SHA-256.
    pub agent: AgentBinary,
    /// The service account VMs run as (its email), their store access without keys in
    /// metadata; `None`: no service account (public data only).
    pub service_account: Option<String>,
    /// The VPC network (`global/networks/default`).
    pub network: String,
    /// Spot VMs: cheaper, and may be reclaimed (a reclaimed agent is replaced like any agent
    /// that dies).
    pub spot: bool,
    /// After this long GCE deletes the VM whatever happens.
    pub max_run: Duration,
    /// The agents' control port.
    pub control_port: u16,
    /// The gateway's address as the VMs see it (`203.0.113.7/32`).
    pub gateway_cidr: String,
    /// A Compute-compatible endpoint instead of Google's (tests use the contract server).
    pub endpoint: Option<String>,
    /// How calls are authorised.
    pub auth: Auth,
    /// How long a VM may take to boot and answer.
    pub ready_timeout: Duration,
    /// How often a booting VM is looked at.
    pub poll: Duration,
}

/// The zones of each region the job launched in, and the job's firewall state.
#[derive(Debug, Default)]
struct JobState {
    zones: BTreeMap<String, Vec<String>>,
    /// Whether the gateway's rule exists.
    gateway_rule: bool,
    /// The peers admitted so far (the peers' rule exists once there is one).
    peers: Vec<IpAddr>,
}

#[derive(Debug)]
pub struct GceProvider {
    config: GceConfig,
    job: String,
    compute: Compute,
    state: tokio::sync::Mutex<JobState>,
    launched: AtomicU32,
}

/// A VM that runs an agent.
#[derive(Debug)]
struct GceAgent {
    compute: Compute,
    zone: String,
    name: String,
    deleted: bool,
}

#[async_trait]
impl AgentHandle for GceAgent {
    fn id(&self) -> String {
        format!("{}/{}", self.zone, self.name)
    }

    fn is_alive(&mut self) -> bool {
        !self.deleted
    }

    async fn terminate(&mut self) {
        if self.deleted {
            return;
        }
        match sweep::delete_instance(&self.compute, &self.zone, &self.name).await {
            Ok(()) => self.deleted = true,
            Err(e) => tracing::error!(
                instance = %self.name,
                "deleting the agent VM failed ({e}); `skyx sweep` or its maximum run duration will"
            ),
        }
    }
}

fn gcp_region(region: &str) -> Option<&str> {
    region.strip_prefix("gcp:")
}

/// A skyx GCP region as GCE names it: the catalog's are zones (`us-east1-b`, Skyplane's
/// convention), a user's may be regions (`us-east1`). Returns the region and the zone, if one
/// was named.
pub fn region_and_zone(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('-') {
        Some((region, letter))
            if letter.len() == 1 && letter.chars().all(|c| c.is_ascii_lowercase()) =>
        {
            (region, Some(name))
        }
        _ => (name, None),
    }
}

impl GceProvider {
    pub fn new(config: GceConfig, job: impl Into<String>) -> Self {
        let compute = Compute::new(
            config.endpoint.as_deref(),
            &config.project,
            config.auth.clone(),
        );
        GceProvider {
            config,
            job: job.into(),
            compute,
            state: tokio::sync::Mutex::new(JobState::default()),
            launched: AtomicU32::new(0),
        }
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// The job's label value, network tag and name prefix.
    pub fn label(&self) -> String {
        job_label(&self.job)
    }

    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    fn fail(agent: &str, region: &str, why: impl std::fmt::Display) -> ProviderError {
        ProviderError::NotReady {
            agent: agent.to_string(),
            why: format!("GCE in {region}: {why}"),
        }
    }

    fn setting(region: &str, why: impl std::fmt::Display) -> ProviderError {
        ProviderError::Setting {
            region: format!("gcp:{region}"),
            why: why.to_string(),
        }
    }

    /// Readies every region of `regions` (`gcp:us-east1-b`, `gcp:us-east1`) before any VM
    /// starts: its zones
    /// looked up, the image found, the gateway's rule made. A region or image that does not
    /// exist fails here, with nothing launched.
    pub async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        let before = "(before any launch)";
        for region in regions {
            let Some(r) = gcp_region(region) else {
                return Err(Self::fail(
                    before,
                    region,
                    "the GCE provider launches in gcp: regions only",
                ));
            };
            self.zones(before, r).await?;
        }
        self.image_exists(regions.first().copied().unwrap_or("gcp:?"))
            .await?;
        self.gateway_rule(before).await
    }

    /// The image named by the configuration exists (else a setting error).
    async fn image_exists(&self, region: &str) -> Result<(), ProviderError> {
        let image = self.config.image.trim_start_matches('/');
        // `projects/P/global/images/family/F` or `projects/P/global/images/I`: both are GETs
        // of the images collection of project P.
        let Some((project, rest)) = image
            .strip_prefix("projects/")
            .and_then(|p| p.split_once("/global/images/"))
        else {
            return Err(Self::setting(
                region.trim_start_matches("gcp:"),
                format!(
                    "image '{}': expected projects/PROJECT/global/images/NAME or .../images/family/FAMILY",
                    self.config.image
                ),
            ));
        };
        let images = Compute::new(
            self.config.endpoint.as_deref(),
            project,
            self.config.auth.clone(),
        );
        match images.get(&format!("global/images/{rest}"), &[]).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(Self::setting(
                region.trim_start_matches("gcp:"),
                format!("image {} does not exist", self.config.image),
            )),
            Err(e) => Err(Self::fail("(before any launch)", region, e)),
        }
    }

    /// The zones to try for an agent in `name` (`us-east1-b` or `us-east1`), in order: the
    /// zone named first, then the rest of its region's.
    async fn zones(&self, agent: &str, name: &str) -> Result<Vec<String>, ProviderError> {
        let (region, zone) = region_and_zone(name);
        let mut zones = self.region_zones(agent, region).await?;
        if let Some(zone) = zone {
            let Some(at) = zones.iter().position(|z| z == zone) else {
                return Err(Self::setting(
                    name,
                    format!("region {region} has no zone {zone}"),
                ));
            };
            let first = zones.remove(at);
            zones.insert(0, first);
        }
        Ok(zones)
    }

    /// The zones of `region` (`us-east1`), asked once.
    async fn region_zones(&self, agent: &str, region: &str) -> Result<Vec<String>, ProviderError> {
        let mut state = self.state.lock().await;
        if let Some(zones) = state.zones.get(region) {
            return Ok(zones.clone());
        }
        let answer = match self.compute.get(&format!("regions/{region}"), &[]).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => {
                return Err(Self::setting(region, "no such region in this project"));
            }
            Err(e) => return Err(Self::fail(agent, region, e)),
        };
        let zones: Vec<String> = answer["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|z| z.as_str()?.rsplit('/').next().map(str::to_string))
            .collect();
        if zones.is_empty() {
            return Err(Self::setting(region, "the region lists no zones"));
        }
        state.zones.insert(region.to_string(), zones.clone());
        Ok(zones)
    }

    fn rule_name(&self, which: &str) -> String {
        format!("skyx-{}-{which}", self.label())
    }

    /// The rule that admits the gateway to the agents' control port, made once.
    async fn gateway_rule(&self, agent: &str) -> Result<(), ProviderError> {
        let mut state = self.state.lock().await;
        if state.gateway_rule {
            return Ok(());
        }
        let rule = self.rule(
            "gw",
            json!([{"IPProtocol": "tcp", "ports": [self.config.control_port.to_string()]}]),
            vec![self.config.gateway_cidr.clone()],
        );
        self.insert_rule(&rule)
            .await
            .map_err(|e| Self::fail(agent, "global", e))?;
        // Below the job's two rules and above the network's own (a default network admits
        // every internal address, and SSH from anywhere, at 65534): nothing else reaches the
        // job's VMs.
        let mut deny = self.rule("deny", Value::Null, vec!["0.0.0.0/0".into()]);
        deny.as_object_mut().map(|r| r.remove("allowed"));
        deny["denied"] = json!([{"IPProtocol": "all"}]);
        deny["priority"] = json!(1100);
        self.insert_rule(&deny)
            .await
            .map_err(|e| Self::fail(agent, "global", e))?;
        state.gateway_rule = true;
        Ok(())
    }

    fn rule(&self, which: &str, allowed: Value, sources: Vec<String>) -> Value {
        json!({
            "name": self.rule_name(which),
            "description": format!("skyx job {}: {}", self.job, match which {
                "gw" => "the gateway to the agents' control port",
                "deny" => "nothing else to the job's agents",
                _ => "the job's agents to each other",
            }),
            "network": self.config.network,
            "direction": "INGRESS",
            "priority": 1000,
            "allowed": allowed,
            "sourceRanges": sources,
            "targetTags": [self.label()],
        })
    }

    async fn insert_rule(&self, rule: &Value) -> Result<(), ApiError> {
        let inserted = self
            .compute
            .post(
                "global/firewalls",
                &[("requestId", &api::request_id())],
                Some(rule),
            )
            .await;
        match inserted {
            Ok(op) => self.compute.wait(&op, "firewalls.insert").await,
            // Made by an earlier try whose answer was lost: brought to what is asked now.
            Err(ApiError::Http { status: 409, .. }) => {
                let name = rule["name"].as_str().unwrap_or_default();
                let op = self
                    .compute
                    .patch(&format!("global/firewalls/{name}"), rule)
                    .await?;
                self.compute.wait(&op, "firewalls.patch").await
            }
            Err(e) => Err(e),
        }
    }

    /// Admits a new agent's address: the peers' rule made with it, or widened to it.
    pub async fn admit_peer(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        if state.peers.contains(&ip) {
            return Ok(());
        }
        let mut sources: Vec<String> = state.peers.iter().map(|p| format!("{p}/32")).collect();
        sources.push(format!("{ip}/32"));
        let everything = json!([{"IPProtocol": "tcp"}, {"IPProtocol": "udp"}]);
        if state.peers.is_empty() {
            self.insert_rule(&self.rule("peers", everything, sources))
                .await?;
        } else {
            let op = self
                .compute
                .patch(
                    &format!("global/firewalls/{}", self.rule_name("peers")),
                    // (The discovery document requires the name in a patch too.)
                    &json!({ "name": self.rule_name("peers"), "sourceRanges": sources }),
                )
                .await?;
            self.compute.wait(&op, "firewalls.patch").await?;
        }
        state.peers.push(ip);
        Ok(())
    }

    /// The instances.insert body of one agent VM.
    fn instance(&self, name: &str, zone: &str, machine: &str, script: String) -> Value {
        let mut scheduling = json!({
            "instanceTerminationAction": "DELETE",
            "maxRunDuration": {"seconds": self.config.max_run.as_secs().max(30).to_string()},
        });
        if self.config.spot {
            scheduling["provisioningModel"] = json!("SPOT");
            scheduling["onHostMaintenance"] = json!("TERMINATE");
            scheduling["automaticRestart"] = json!(false);
        } else {
            scheduling["provisioningModel"] = json!("STANDARD");
        }
        let mut body = json!({
            "name": name,
            "description": format!("skyx agent of job {}", self.job),
            "machineType": format!("zones/{zone}/machineTypes/{machine}"),
            "disks": [{
                "boot": true,
                "autoDelete": true,
                "initializeParams": {"sourceImage": self.config.image, "diskSizeGb": "10"},
            }],
            "networkInterfaces": [{
                "network": self.config.network,
                "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
            }],
            "metadata": {"items": [{"key": "startup-script", "value": script}]},
            "tags": {"items": [self.label()]},
            "labels": {JOB_LABEL: self.label()},
            "scheduling": scheduling,
        });
        if let Some(email) = &self.config.service_account {
            // Storage read-write is the most the VM's token may do; the account's roles on
            // the job's buckets say what it does (README: objectViewer, objectUser).
            body["serviceAccounts"] = json!([{
                "email": email,
                "scopes": ["https://www.googleapis.com/auth/devstorage.read_write"],
            }]);
        }
        body
    }
}

#[async_trait]
impl Provider for GceProvider {
    fn name(&self) -> &str {
        "gce"
    }

    async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        GceProvider::prepare(self, regions).await
    }

    async fn sweep(&self) -> Result<Vec<String>, String> {
        GceProvider::sweep(self).await
    }

    async fn admit(&self, ip: IpAddr) -> Result<(), ProviderError> {
        self.admit_peer(ip)
            .await
            .map_err(|e| Self::fail("(a peer in another cloud)", "global", e))
    }

    fn job_marker(&self) -> Option<String> {
        Some(format!(
            "GCE instances of project {} labelled {JOB_LABEL}={}",
            self.config.project,
            self.label()
        ))
    }

    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
        let Some(region) = gcp_region(&req.region) else {
            return Err(ProviderError::Capacity {
                agent: req.name.clone(),
                region: req.region.clone(),
                why: "the GCE provider launches in gcp: regions only".into(),
            });
        };
        let script = crate::bootstrap::startup_script(&Boot {
            name: &req.name,
            token: &req.token,
            gateway_cert: &crate::cert_env(&req.gateway),
            agent: &self.config.agent,
            address: Address::GceMetadata,
            // The service account's tokens come from the metadata server on their own.
            store_identity: None,
        })
        .map_err(|e| Self::fail(&req.name, region, e))?;
        self.gateway_rule(&req.name).await?;
        let zones = self.zones(&req.name, region).await?;
        let machine = req
            .instance
            .as_deref()
            .unwrap_or(self.config.machine_type.as_str());
        let mut full = Vec::new();
        for zone in &zones {
            let n = self.launched.fetch_add(1, Ordering::Relaxed);
            let name = format!("skyx-{}-{n}", self.label());
            let body = self.instance(&name, zone, machine, script.clone());
            let inserted = match self
                .compute
                .post(
                    &format!("zones/{zone}/instances"),
                    &[("requestId", &api::request_id())],
                    Some(&body),
                )
                .await
            {
                Ok(op) => match self.compute.wait(&op, "instances.insert").await {
                    Err(e) if !e.is_capacity() => {
                        // Accepted, then lost or failed: whatever it made goes (gone is fine).
                        if let Err(d) = sweep::delete_instance(&self.compute, zone, &name).await {
                            tracing::warn!("VM {name} of a failed launch stays: {d}");
                        }
                        Err(e)
                    }
                    done => done,
                },
                Err(e) => Err(e),
            };
            match inserted {
                Ok(()) => {
                    let mut handle = GceAgent {
                        compute: self.compute.clone(),
                        zone: zone.clone(),
                        name: name.clone(),
                        deleted: false,
                    };
                    return match self.wait_ready(zone, &name, &req).await {
                        Ok(control) => Ok(LaunchedAgent {
                            name: req.name,
                            region: req.region,
                            control,
                            handle: Box::new(handle),
                        }),
                        Err(e) => {
                            // Never leave a VM behind a failed launch.
                            handle.terminate().await;
                            Err(e)
                        }
                    };
                }
                // A quota of the whole project: no other region would have room either, so
                // it is no cue to plan around this one.
                Err(e) if e.is_global_quota() => {
                    let why = format!("{e} (the project's quota in every region)");
                    return Err(Self::fail(&req.name, region, why));
                }
                // Capacity is zonal: the region's next zone may have it. A quota is not.
                Err(e) if e.is_capacity() => {
                    tracing::info!(zone = %zone, "no capacity for {}: {e}", req.name);
                    full.push(format!("{zone}: {e}"));
                    if e.is_quota() {
                        break;
                    }
                }
                Err(e) => return Err(Self::fail(&req.name, region, e)),
            }
        }
        Err(ProviderError::Capacity {
            agent: req.name.clone(),
            region: req.region.clone(),
            why: full.join("; "),
        })
    }
}

impl GceProvider {
    /// Waits until the VM runs with an external address and its agent answers hello, then
    /// admits it as a peer.
    async fn wait_ready(
        &self,
        zone: &str,
        name: &str,
        req: &LaunchRequest,
    ) -> Result<SocketAddr, ProviderError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let ip = loop {
            match self.look(zone, name, req).await? {
                Some(ip) => break ip,
                None if Instant::now() > deadline => {
                    return Err(Self::fail(&req.name, zone, format!("{name} did not start")));
                }
                None => tokio::time::sleep(self.config.poll).await,
            }
        };
        let control = SocketAddr::new(ip, self.config.control_port);
        let never = |e| {
            let why = format!("{name} runs but its agent never answered on {control}: {e}");
            Self::fail(&req.name, zone, why)
        };
        // A bootstrap that fails powers its VM off: no need to wait out the deadline for an
        // agent that will never start.
        let stopped = async || self.look(zone, name, req).await.map(|_| ());
        crate::session::await_hello(req, control, deadline, self.config.poll, stopped, never)
            .await?;
        // Only an address whose agent proved the job's identity joins the peers' rule (the
        // gateway's own rule is what its hello needs): an address admitted before could be
        // a VM that never became the job's, released and handed to a stranger.
        self.admit_peer(ip)
            .await
            .map_err(|e| Self::fail(&req.name, zone, e))?;
        Ok(control)
    }

    /// The VM's address once it runs (`None` while it is still starting); an error once it
    /// stopped: its bootstrap powered it off, or GCE reclaimed a spot VM.
    async fn look(
        &self,
        zone: &str,
        name: &str,
        req: &LaunchRequest,
    ) -> Result<Option<IpAddr>, ProviderError> {
        let vm = self
            .compute
            .get(&format!("zones/{zone}/instances/{name}"), &[])
            .await
            .map_err(|e| Self::fail(&req.name, zone, e))?;
        let status = vm["status"].as_str().unwrap_or("");
        let nic = &vm["networkInterfaces"][0];
        let ip = nic["accessConfigs"][0]["natIP"]
            .as_str()
            .or(nic["networkIP"].as_str())
            .and_then(|a| a.parse::<IpAddr>().ok());
        match (status, ip) {
            ("RUNNING", Some(ip)) => Ok(Some(ip)),
            ("STOPPING" | "STOPPED" | "TERMINATED" | "SUSPENDING" | "SUSPENDED", _) => {
                Err(Self::fail(
                    &req.name,
                    zone,
                    format!("{name} is {status}: its bootstrap failed or it was reclaimed"),
                ))
            }
            _ => Ok(None),
        }
    }

    /// Deletes every VM labelled with this job and the job's firewall rules. Returns the
    /// VMs deleted.
    pub async fn sweep(&self) -> Result<Vec<String>, String> {
        let swept = sweep(&self.compute, Some(&self.label()), false).await?;
        Ok(swept.instances)
    }
}

impl GceProvider {
    /// The peers admitted so far (each a /32 of the peers' rule).
    pub async fn peers(&self) -> Vec<IpAddr> {
        self.state.lock().await.peers.clone()
    }
}
