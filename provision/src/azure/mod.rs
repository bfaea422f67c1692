//! Agents on Azure VMs, through Azure Resource Manager's REST API ([`arm`]) with an Entra ID
//! token from azure_identity (there is no maintained Rust management SDK).
//!
//! A job lives in one resource group of its own, tagged `skyx-job`: deleting the group is the
//! teardown of last resort ([`sweep`]), since Azure neither deletes nor deallocates a VM whose
//! guest powers off. In each location the job has a virtual network whose subnet carries a
//! network security group admitting the agents' control port from the gateway's address alone
//! and everything from the job's own agents alone (each launch adds the new VM's address to
//! the peers' rule of every location once its agent answered hello). A VM gets a Standard
//! static public address made first, so the gateway knows it before the VM boots and hands it
//! to the bootstrap (Azure's metadata service names no Standard address), a NIC, and
//! cloud-init custom data
//! ([`crate::bootstrap::cloud_init`]); the VM's NIC, address and disk go with the VM.
//!
//! Capacity and quota arrive either at once (`SkuNotAvailable`, quota) or in the create
//! operation (`AllocationFailed`): both are [`ProviderError::Capacity`] for the region, and
//! what the failed launch made is deleted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::bootstrap::{Address, Boot};
use crate::{AgentBinary, AgentHandle, LaunchRequest, LaunchedAgent, Provider, ProviderError};

pub mod arm;
pub mod sweep;

pub use arm::{Arm, ArmAuth, ArmError};
pub use sweep::sweep;

use arm::{COMPUTE_API, NETWORK_API, RESOURCES_API};

/// The tag every resource group of a job carries (its value: [`crate::job_label`]).
pub const JOB_TAG: &str = "skyx-job";

/// A marketplace image (`Debian:debian-12:12-gen2:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
}

impl ImageReference {
    /// Parses an image URN, `PUBLISHER:OFFER:SKU:VERSION`.
    pub fn parse(urn: &str) -> Result<ImageReference, String> {
        let parts: Vec<&str> = urn.split(':').collect();
        match parts[..] {
            [p, o, s, v] if parts.iter().all(|x| !x.trim().is_empty()) => Ok(ImageReference {
                publisher: p.into(),
                offer: o.into(),
                sku: s.into(),
                version: v.into(),
            }),
            _ => Err(format!(
                "image '{urn}': expected PUBLISHER:OFFER:SKU:VERSION, e.g. {DEFAULT_IMAGE}"
            )),
        }
    }
}

/// Debian 12 (Azure's Debian images run cloud-init on custom data).
pub const DEFAULT_IMAGE: &str = "Debian:debian-12:12-gen2:latest";

/// Where and how to launch agent VMs.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    pub subscription: String,
    /// Size of every agent (the catalog's gateway size, `Standard_D32_v5`).
    pub vm_size: String,
    pub image: ImageReference,
    /// Where VMs get the `skyx-agent` binary, and its pinned SHA-256.
    pub agent: AgentBinary,
    /// A user-assigned managed identity (its resource id) agent VMs run as: their store
    /// access without keys in custom data. `None`: no identity (public data only).
    pub identity: Option<String>,
    /// Spot VMs (evicted VMs are deleted; a reclaimed agent is replaced like one that died).
    pub spot: bool,
    /// The agents' control port.
    pub control_port: u16,
    /// The gateway's address as the VMs see it (`203.0.113.7/32`).
    pub gateway_cidr: String,
    /// An ARM-compatible endpoint instead of Azure's (tests use the contract server).
    pub endpoint: Option<String>,
    pub auth: ArmAuth,
    /// How long a VM may take to boot and answer.
    pub ready_timeout: Duration,
    /// The least wait between polls.
    pub poll: Duration,
}

/// The job's network in one location.
#[derive(Debug, Clone)]
struct Site {
    nsg: String,
    subnet: String,
}

#[derive(Debug, Default)]
struct JobState {
    group: bool,
    sites: BTreeMap<String, Site>,
    peers: Vec<IpAddr>,
}

#[derive(Debug)]
pub struct AzureProvider {
    config: AzureConfig,
    job: String,
    arm: Arm,
    state: tokio::sync::Mutex<JobState>,
    launched: AtomicU32,
}

/// A VM that runs an agent (with its NIC and public address).
#[derive(Debug)]
struct AzureAgent {
    arm: Arm,
    group: String,
    vm: String,
    deleted: bool,
}

#[async_trait]
impl AgentHandle for AzureAgent {
    fn id(&self) -> String {
        format!("{}/{}", self.group, self.vm)
    }

    fn is_alive(&mut self) -> bool {
        !self.deleted
    }

    async fn terminate(&mut self) {
        if self.deleted {
            return;
        }
        match delete_vm(&self.arm, &self.group, &self.vm).await {
            Ok(()) => self.deleted = true,
            Err(e) => tracing::error!(
                vm = %self.vm,
                "deleting the agent VM failed ({e}); `skyx sweep` (the job's resource group) will"
            ),
        }
    }
}

/// Deletes a VM and what was made for it (its NIC and public address go with it by their
/// delete options; deleted here too, should those not have been honoured).
async fn delete_vm(arm: &Arm, group: &str, vm: &str) -> Result<(), ArmError> {
    let rg = format!("/resourceGroups/{group}/providers");
    let vm_deleted = arm
        .delete(
            &format!("{rg}/Microsoft.Compute/virtualMachines/{vm}?forceDeletion=true"),
            COMPUTE_API,
        )
        .await;
    // Each is tried whatever the one before answered (a NIC still attached to a VM that
    // could not be deleted is refused, and says so).
    let nic_deleted = arm
        .delete(
            &format!("{rg}/Microsoft.Network/networkInterfaces/{vm}-nic"),
            NETWORK_API,
        )
        .await;
    let ip_deleted = arm
        .delete(
            &format!("{rg}/Microsoft.Network/publicIPAddresses/{vm}-ip"),
            NETWORK_API,
        )
        .await;
    vm_deleted.and(nic_deleted).and(ip_deleted)
}

fn azure_location(region: &str) -> Option<&str> {
    region.strip_prefix("azure:")
}

impl AzureProvider {
    pub fn new(config: AzureConfig, job: impl Into<String>) -> Self {
        let arm = Arm::new(
            config.endpoint.as_deref(),
            &config.subscription,
            config.auth.clone(),
            config.poll,
        );
        AzureProvider {
            config,
            job: job.into(),
            arm,
            state: tokio::sync::Mutex::new(JobState::default()),
            launched: AtomicU32::new(0),
        }
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// The job's resource group.
    pub fn group(&self) -> String {
        format!("skyx-{}", crate::job_label(&self.job))
    }

    pub fn arm(&self) -> &Arm {
        &self.arm
    }

    fn fail(agent: &str, region: &str, why: impl std::fmt::Display) -> ProviderError {
        ProviderError::NotReady {
            agent: agent.to_string(),
            why: format!("Azure in {region}: {why}"),
        }
    }

    fn path(&self, provider_path: &str) -> String {
        format!("/resourceGroups/{}/providers/{provider_path}", self.group())
    }

    /// Readies every location of `regions` (`azure:eastus`) before any VM starts: the job's
    /// group, and in each location its network and security group. A location ARM does not
    /// know fails here, with nothing launched.
    pub async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        for region in regions {
            let Some(location) = azure_location(region) else {
                return Err(Self::fail(
                    "(before any launch)",
                    region,
                    "the Azure provider launches in azure: regions only",
                ));
            };
            self.site("(before any launch)", location).await?;
        }
        Ok(())
    }

    /// The job's network in `location`, made on first use (and the job's group before it).
    async fn site(&self, agent: &str, location: &str) -> Result<Site, ProviderError> {
        let mut state = self.state.lock().await;
        if let Some(site) = state.sites.get(location) {
            return Ok(site.clone());
        }
        let failed = |e: ArmError| match &e {
            ArmError::Http {
                status: 400, code, ..
            } if code.contains("Location") => ProviderError::Setting {
                region: format!("azure:{location}"),
                why: e.to_string(),
            },
            _ => Self::fail(agent, location, e),
        };
        if !state.group {
            let body =
                json!({"location": location, "tags": {JOB_TAG: crate::job_label(&self.job)}});
            self.arm
                .put(
                    &format!("/resourcegroups/{}", self.group()),
                    RESOURCES_API,
                    &body,
                )
                .await
                .map_err(failed)?;
            state.group = true;
        }
        let mut rules = vec![json!({
            "name": "skyx-gateway",
            "properties": {
                "description": "the gateway to the agents' control port",
                "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 100,
                "sourceAddressPrefix": self.config.gateway_cidr, "sourcePortRange": "*",
                "destinationAddressPrefix": "*",
                "destinationPortRange": self.config.control_port.to_string(),
            },
        })];
        if !state.peers.is_empty() {
            rules.push(peers_rule(&state.peers));
        }
        let nsg_path = self.path(&format!(
            "Microsoft.Network/networkSecurityGroups/skyx-{location}"
        ));
        let nsg = self
            .arm
            .put(
                &nsg_path,
                NETWORK_API,
                &json!({"location": location, "properties": {"securityRules": rules}}),
            )
            .await
            .map_err(failed)?;
        let nsg_id = nsg["id"]
            .as_str()
            .map_or_else(|| self.arm.id(&nsg_path), str::to_string);
        // Each location its own address space: the networks are never peered, but distinct
        // ranges keep every private address of the job unambiguous in logs.
        let n = state.sites.len() % 250;
        let vnet_path = self.path(&format!(
            "Microsoft.Network/virtualNetworks/skyx-{location}"
        ));
        self.arm
            .put(
                &vnet_path,
                NETWORK_API,
                &json!({
                    "location": location,
                    "properties": {
                        "addressSpace": {"addressPrefixes": [format!("10.{n}.0.0/16")]},
                        "subnets": [{"name": "agents", "properties": {
                            "addressPrefix": format!("10.{n}.0.0/24"),
                            "networkSecurityGroup": {"id": nsg_id},
                        }}],
                    },
                }),
            )
            .await
            .map_err(failed)?;
        let site = Site {
            nsg: nsg_path,
            subnet: self.arm.id(&format!("{vnet_path}/subnets/agents")),
        };
        state.sites.insert(location.to_string(), site.clone());
        Ok(site)
    }

    /// Admits a new agent's address in every location's security group.
    pub async fn admit_peer(&self, ip: IpAddr) -> Result<(), ArmError> {
        let mut state = self.state.lock().await;
        if state.peers.contains(&ip) {
            return Ok(());
        }
        let mut peers = state.peers.clone();
        peers.push(ip);
        let rule = peers_rule(&peers);
        for site in state.sites.values() {
            self.arm
                .put(
                    &format!("{}/securityRules/skyx-peers", site.nsg),
                    NETWORK_API,
                    &json!({"properties": rule["properties"]}),
                )
                .await?;
        }
        // Recorded once every location admits it: a failed update is tried again next time.
        state.peers = peers;
        Ok(())
    }

    /// The peers admitted so far.
    pub async fn peers(&self) -> Vec<IpAddr> {
        self.state.lock().await.peers.clone()
    }

    /// Deletes the job's resource group (every VM, NIC, address, network of the job). Returns
    /// the groups deleted.
    pub async fn sweep(&self) -> Result<Vec<String>, String> {
        sweep(&self.arm, Some(&crate::job_label(&self.job)), false).await
    }
}

fn peers_rule(peers: &[IpAddr]) -> Value {
    let sources: Vec<String> = peers.iter().map(|p| format!("{p}/32")).collect();
    json!({
        "name": "skyx-peers",
        "properties": {
            "description": "the job's agents to each other",
            "protocol": "*", "access": "Allow", "direction": "Inbound", "priority": 110,
            "sourceAddressPrefixes": sources, "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": "*",
        },
    })
}

/// An OpenSSH public key no one holds the private half of: Linux VMs need a login key, and
/// an agent VM is never logged into.
fn unusable_ssh_key() -> String {
    use aws_lc_rs::signature::KeyPair as _;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().expect("an Ed25519 key");
    let mut blob = Vec::new();
    for part in [b"ssh-ed25519".as_slice(), pair.public_key().as_ref()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    format!(
        "ssh-ed25519 {} skyx-agent-no-login",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

#[async_trait]
impl Provider for AzureProvider {
    fn name(&self) -> &str {
        "azure"
    }

    async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        AzureProvider::prepare(self, regions).await
    }

    async fn sweep(&self) -> Result<Vec<String>, String> {
        AzureProvider::sweep(self).await
    }

    fn job_marker(&self) -> Option<String> {
        Some(format!(
            "Azure resources of resource group {} (tagged {JOB_TAG}={}) in subscription {}",
            self.group(),
            crate::job_label(&self.job),
            self.config.subscription
        ))
    }

    async fn admit(&self, ip: IpAddr) -> Result<(), ProviderError> {
        self.admit_peer(ip)
            .await
            .map_err(|e| Self::fail("(a peer in another cloud)", "every location", e))
    }

    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
        let Some(location) = azure_location(&req.region) else {
            return Err(ProviderError::Capacity {
                agent: req.name.clone(),
                region: req.region.clone(),
                why: "the Azure provider launches in azure: regions only".into(),
            });
        };
        let site = self.site(&req.name, location).await?;
        let n = self.launched.fetch_add(1, Ordering::Relaxed);
        let vm = format!("skyx-{}-{n}", crate::job_label(&self.job));
        let mut handle = AzureAgent {
            arm: self.arm.clone(),
            group: self.group(),
            vm: vm.clone(),
            deleted: false,
        };
        match self.create(&req, location, &site, &vm).await {
            Ok(ip) => match self.wait_ready(location, &vm, ip, &req).await {
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
            },
            Err(e) => {
                // What was made before the failure (an address, a NIC, a failed VM) goes.
                handle.terminate().await;
                Err(e)
            }
        }
    }
}

impl AzureProvider {
    /// The VM's address, NIC and VM; returns the address.
    async fn create(
        &self,
        req: &LaunchRequest,
        location: &str,
        site: &Site,
        vm: &str,
    ) -> Result<IpAddr, ProviderError> {
        let fail = |e: ArmError| {
            if e.is_capacity() {
                ProviderError::Capacity {
                    agent: req.name.clone(),
                    region: req.region.clone(),
                    why: e.to_string(),
                }
            } else if matches!(e.code(), Some("ImageNotFound" | "PlatformImageNotFound")) {
                ProviderError::Setting {
                    region: req.region.clone(),
                    why: e.to_string(),
                }
            } else {
                Self::fail(&req.name, location, e)
            }
        };
        let ip_path = self.path(&format!("Microsoft.Network/publicIPAddresses/{vm}-ip"));
        let address = self
            .arm
            .put(
                &ip_path,
                NETWORK_API,
                &json!({
                    "location": location,
                    "sku": {"name": "Standard"},
                    "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                }),
            )
            .await
            .map_err(fail)?;
        let ip: IpAddr = address["properties"]["ipAddress"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Self::fail(&req.name, location, format!("{vm}-ip has no address")))?;
        let nic_path = self.path(&format!("Microsoft.Network/networkInterfaces/{vm}-nic"));
        self.arm
            .put(
                &nic_path,
                NETWORK_API,
                &json!({
                    "location": location,
                    "properties": {"ipConfigurations": [{"name": "primary", "properties": {
                        "primary": true,
                        "privateIPAllocationMethod": "Dynamic",
                        "subnet": {"id": site.subnet},
                        "publicIPAddress": {"id": self.arm.id(&ip_path)},
                    }}]},
                }),
            )
            .await
            .map_err(fail)?;
        let custom_data = crate::bootstrap::cloud_init(&Boot {
            name: &req.name,
            token: &req.token,
            gateway_cert: &crate::cert_env(&req.gateway),
            agent: &self.config.agent,
            address: Address::Given(ip),
            store_identity: self.config.identity.as_deref(),
        })
        .map_err(|e| Self::fail(&req.name, location, e))?;
        let body = self.vm_body(req, location, vm, &nic_path, &custom_data);
        self.arm
            .put(
                &self.path(&format!("Microsoft.Compute/virtualMachines/{vm}")),
                COMPUTE_API,
                &body,
            )
            .await
            .map_err(fail)?;
        Ok(ip)
    }

    fn vm_body(
        &self,
        req: &LaunchRequest,
        location: &str,
        vm: &str,
        nic_path: &str,
        custom_data: &str,
    ) -> Value {
        let image = &self.config.image;
        let mut body = json!({
            "location": location,
            "tags": {JOB_TAG: crate::job_label(&self.job)},
            "properties": {
                "hardwareProfile": {"vmSize": req.instance.as_deref().unwrap_or(&self.config.vm_size)},
                "storageProfile": {
                    "imageReference": {"publisher": image.publisher, "offer": image.offer,
                        "sku": image.sku, "version": image.version},
                    "osDisk": {"createOption": "FromImage", "deleteOption": "Delete",
                        "managedDisk": {"storageAccountType": "StandardSSD_LRS"}},
                },
                "osProfile": {
                    "computerName": vm,
                    "adminUsername": "skyx",
                    "customData": base64::engine::general_purpose::STANDARD.encode(custom_data),
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": true,
                        "ssh": {"publicKeys": [{
                            "path": "/home/skyx/.ssh/authorized_keys",
                            "keyData": unusable_ssh_key(),
                        }]},
                    },
                },
                "networkProfile": {"networkInterfaces": [{
                    "id": self.arm.id(nic_path),
                    "properties": {"primary": true, "deleteOption": "Delete"},
                }]},
            },
        });
        if self.config.spot {
            body["properties"]["priority"] = json!("Spot");
            body["properties"]["evictionPolicy"] = json!("Delete");
            // Up to the on-demand price: evicted for capacity, never for price.
            body["properties"]["billingProfile"] = json!({"maxPrice": -1});
        }
        if let Some(identity) = &self.config.identity {
            body["identity"] = json!({
                "type": "UserAssigned",
                "userAssignedIdentities": {identity: {}},
            });
        }
        body
    }

    /// Waits until the VM's agent answers hello, then admits it as a peer; fails as soon as
    /// the VM stopped (no need to wait out the deadline for an agent that will never start).
    async fn wait_ready(
        &self,
        location: &str,
        vm: &str,
        ip: IpAddr,
        req: &LaunchRequest,
    ) -> Result<SocketAddr, ProviderError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let control = SocketAddr::new(ip, self.config.control_port);
        let never = |e| {
            let why = format!("the VM runs but its agent never answered on {control}: {e}");
            Self::fail(&req.name, location, why)
        };
        let pause = self.config.poll.max(Duration::from_millis(200));
        let stopped = async || self.not_stopped(location, vm, req).await;
        crate::session::await_hello(req, control, deadline, pause, stopped, never).await?;
        // Admitted once its agent proved the job's identity (see the GCE provider's reason).
        self.admit_peer(ip)
            .await
            .map_err(|e| Self::fail(&req.name, location, e))?;
        Ok(control)
    }

    /// An error once the VM stopped (its bootstrap powers it off when it refuses the agent) or
    /// is gone (Azure deletes a spot VM it evicts: `evictionPolicy` `Delete`). A read that fails
    /// otherwise (throttled, a passing outage) says nothing of the VM: the wait goes on, and
    /// its deadline still holds. (A guest's `poweroff` leaves the VM allocated, and billed, in
    /// `PowerState/stopped`.)
    async fn not_stopped(
        &self,
        location: &str,
        vm: &str,
        req: &LaunchRequest,
    ) -> Result<(), ProviderError> {
        let path = self.path(&format!(
            "Microsoft.Compute/virtualMachines/{vm}/instanceView"
        ));
        let view = match self.arm.get(&path, COMPUTE_API).await {
            Ok(view) => view,
            Err(e) if e.is_not_found() => {
                let why = format!("{vm} is gone (evicted, or deleted by someone else): {e}");
                return Err(Self::fail(&req.name, location, why));
            }
            Err(e) => {
                tracing::debug!(vm, error = %e, "reading the VM's instance view");
                return Ok(());
            }
        };
        let statuses = view["statuses"].as_array().into_iter().flatten();
        let power = statuses
            .filter_map(|s| s["code"].as_str()?.strip_prefix("PowerState/"))
            .next();
        match power {
            Some(p @ ("stopping" | "stopped" | "deallocating" | "deallocated")) => Err(Self::fail(
                &req.name,
                location,
                format!("{vm} is {p}: its bootstrap failed, or someone stopped it"),
            )),
            _ => Ok(()),
        }
    }
}
