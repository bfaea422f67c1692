//! Agents on AWS EC2 VMs, through aws-sdk-ec2.
//!
//! Each job gets, per region it uses, a security group that admits the agents' control port
//! from the gateway's address alone and everything else from the job's own agents alone: each
//! launch adds the new VM's address to every region's group once its agent answered hello, and
//! the group of a new region starts with every peer already admitted. A VM boots with
//! [`crate::bootstrap::cloud_init`] (cloud-init running `deploy/agent/bootstrap.sh`: install
//! `skyx-agent` and refuse it unless its SHA-256 is the pinned one, ask the address of the VM
//! of the metadata service with an IMDSv2 token, start the agent under systemd with the job
//! token) and is launched with IMDSv2 required and "terminate on shutdown", so an agent that
//! exits (shutdown request, or its idle lease ends because the gateway is gone) or a bootstrap
//! that fails takes its VM with it. Its image is an AMI given per region or the one a public
//! SSM parameter names ([`image`]). VMs are tagged with the job, and [`Ec2Provider::sweep`]
//! ([`sweep`]) terminates whatever a job left: termination does not depend on the gateway
//! staying alive.
//!
//! Launch waits until the VM runs and its agent answers the control API's hello with the proof
//! of its launch token; a VM whose agent never does is terminated before the error is returned.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceInterruptionBehavior,
    InstanceMarketOptionsRequest, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceStateName, InstanceType, IpPermission, IpRange,
    MarketType, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions, Tag,
    TagSpecification,
};
use base64::Engine;

use crate::{AgentBinary, AgentHandle, LaunchRequest, LaunchedAgent, Provider, ProviderError};

pub mod image;
pub mod sweep;

pub use image::{DEFAULT_IMAGE_PARAMETER, Image, Images};
pub use sweep::{Swept, job_instances, sweep_regions, terminate};

/// How long a sweep waits for its VMs to be gone before deleting their groups (AWS refuses
/// to delete a group while a shutting-down VM still holds it).
pub const SWEEP_WAIT: Duration = Duration::from_secs(180);

pub use crate::bootstrap::CONTROL_PORT;

/// The tag every VM and group of a job carries.
pub const JOB_TAG: &str = "skyx-job";

/// Where and how to launch agent VMs.
#[derive(Debug, Clone)]
pub struct Ec2Config {
    /// The image of each region (a Linux with cloud-init, systemd, curl and sha256sum, and a
    /// glibc as new as the agent's build: Debian 12 by default).
    pub images: Images,
    /// Instance type of every agent (the catalog's gateway type, `m5.8xlarge`).
    pub instance_type: String,
    /// Where VMs get the `skyx-agent` binary, and its pinned SHA-256.
    pub agent: AgentBinary,
    /// The instance profile agent VMs run as (name or ARN): their store access without keys
    /// in user data. `None`: no profile (public data, or keys the job hands over).
    pub instance_profile: Option<String>,
    /// The subnet to launch in per region (`us-east-1` → `subnet-…`); a region not named uses
    /// its default VPC. VMs get a public address either way.
    pub subnets: BTreeMap<String, String>,
    /// Spot instances: cheaper, and may be reclaimed (a reclaimed agent is replaced like any
    /// agent that dies).
    pub spot: bool,
    /// The agents' control port.
    pub control_port: u16,
    /// The gateway's address as the VMs see it (`203.0.113.7/32`).
    pub gateway_cidr: String,
    /// An EC2-compatible endpoint instead of AWS (tests use moto's server).
    pub endpoint: Option<String>,
    /// Static keys instead of the standard AWS credential chain.
    pub credentials: Option<(String, String)>,
    /// How long a VM may take to boot and answer.
    pub ready_timeout: Duration,
}

/// A VM that runs an agent.
#[derive(Debug)]
struct Ec2Agent {
    client: Client,
    instance_id: String,
    terminated: bool,
}

#[async_trait]
impl AgentHandle for Ec2Agent {
    fn id(&self) -> String {
        self.instance_id.clone()
    }

    fn is_alive(&mut self) -> bool {
        // The control API tells the gateway whether the agent answers; this only tracks
        // whether the VM was let go.
        !self.terminated
    }

    async fn terminate(&mut self) {
        if self.terminated {
            return;
        }
        match terminate(&self.client, std::slice::from_ref(&self.instance_id)).await {
            Ok(()) => self.terminated = true,
            Err(e) => tracing::error!(
                instance = %self.instance_id,
                "terminating the agent VM failed ({e}); `sweep` or the VM's own shutdown will"
            ),
        }
    }
}

/// Per region: the client, the job's security group, the image and the subnet.
#[derive(Debug, Clone)]
struct RegionState {
    client: Client,
    group_id: String,
    ami: String,
    subnet: Option<String>,
}

#[derive(Debug)]
pub struct Ec2Provider {
    config: Ec2Config,
    job: String,
    regions: tokio::sync::Mutex<BTreeMap<String, RegionState>>,
    /// Addresses of every agent launched so far (the peers each group admits).
    peers: Mutex<Vec<IpAddr>>,
}

fn aws_region(region: &str) -> Option<&str> {
    region.strip_prefix("aws:")
}

impl Ec2Provider {
    pub fn new(config: Ec2Config, job: impl Into<String>) -> Self {
        Ec2Provider {
            config,
            job: job.into(),
            regions: tokio::sync::Mutex::new(BTreeMap::new()),
            peers: Mutex::new(Vec::new()),
        }
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// The EC2 client for `region` (`us-east-1`), as the provider makes it.
    pub async fn client_for(&self, region: &str) -> Client {
        Self::client(&self.config, region).await
    }

    async fn client(config: &Ec2Config, region: &str) -> Client {
        Client::new(&Self::sdk_config(config, region).await)
    }

    async fn sdk_config(config: &Ec2Config, region: &str) -> aws_config::SdkConfig {
        sdk_config(
            region,
            config.endpoint.as_deref(),
            config.credentials.as_ref(),
        )
        .await
    }

    fn fail(agent: &str, region: &str, why: impl std::fmt::Display) -> ProviderError {
        ProviderError::NotReady {
            agent: agent.to_string(),
            why: format!("EC2 in {region}: {why}"),
        }
    }

    fn setting(region: &str, why: String) -> ProviderError {
        ProviderError::Setting {
            region: format!("aws:{region}"),
            why,
        }
    }

    /// The job's group in `region`, created on first use with the gateway's and every known
    /// peer's access.
    async fn region_state(&self, agent: &str, region: &str) -> Result<RegionState, ProviderError> {
        let mut regions = self.regions.lock().await;
        if let Some(s) = regions.get(region) {
            return Ok(s.clone());
        }
        let sdk = Self::sdk_config(&self.config, region).await;
        let client = Client::new(&sdk);
        let ami = image::resolve(
            &aws_sdk_ssm::Client::new(&sdk),
            self.config.images.of(region),
        )
        .await
        .map_err(|why| Self::setting(region, why))?;
        let subnet = self.config.subnets.get(region).cloned();
        let vpc = match &subnet {
            Some(id) => Some(
                subnet_vpc(&client, id)
                    .await
                    .map_err(|why| Self::setting(region, why))?,
            ),
            None => None,
        };
        let group = client
            .create_security_group()
            .set_vpc_id(vpc)
            .group_name(format!("skyx-{}", self.job))
            .description(format!(
                "skyx job {}: the gateway and the job's agents only",
                self.job
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .tags(Tag::builder().key(JOB_TAG).value(&self.job).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Self::fail(agent, region, aws_sdk_ec2::error::DisplayErrorContext(e)))?;
        let group_id = group.group_id().unwrap_or_default().to_string();
        let control = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(self.config.control_port))
            .to_port(i32::from(self.config.control_port))
            .ip_ranges(
                IpRange::builder()
                    .cidr_ip(&self.config.gateway_cidr)
                    .description("skyx gateway")
                    .build(),
            )
            .build();
        let mut permissions = vec![control];
        let peers: Vec<IpAddr> = self.peers.lock().expect("peers").clone();
        permissions.extend(peers.iter().map(|ip| peer_permission(*ip)));
        let granted = client
            .authorize_security_group_ingress()
            .group_id(&group_id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await;
        if let Err(e) = already_granted(granted) {
            // No VM uses the group yet, and the sweep only knows regions readied in full.
            if let Err(d) = client
                .delete_security_group()
                .group_id(&group_id)
                .send()
                .await
            {
                tracing::warn!("security group {group_id} of job {} stays: {d}", self.job);
            }
            return Err(Self::fail(agent, region, e));
        }
        let state = RegionState {
            client,
            group_id,
            ami,
            subnet,
        };
        regions.insert(region.to_string(), state.clone());
        Ok(state)
    }

    /// Readies every region of `regions` (`aws:us-east-1`) before any VM starts: its image
    /// looked up, its subnet found, the job's group made. A setting that cannot work (an SSM
    /// parameter that names no AMI, a subnet of another region) fails here, with nothing
    /// launched.
    pub async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        for region in regions {
            let Some(r) = aws_region(region) else {
                return Err(Self::fail(
                    "(before any launch)",
                    region,
                    "the EC2 provider launches in aws: regions only",
                ));
            };
            self.region_state("(before any launch)", r).await?;
        }
        Ok(())
    }

    /// Admits a new agent's address in every region's group. Recorded as a peer (which the
    /// group of a region readied later admits) only once every group admits it, under the
    /// regions' lock, so no region is readied in between without it.
    async fn admit_peer(&self, ip: IpAddr) -> Result<(), String> {
        let regions = self.regions.lock().await;
        for state in regions.values() {
            let granted = state
                .client
                .authorize_security_group_ingress()
                .group_id(&state.group_id)
                .ip_permissions(peer_permission(ip))
                .send()
                .await;
            already_granted(granted)?;
        }
        self.peers.lock().expect("peers").push(ip);
        Ok(())
    }

    /// Terminates every VM tagged with this job in the regions it used and, once they are
    /// gone, deletes its groups. Returns the instances terminated.
    /// Every region's VMs are terminated before any wait; a region that fails does not keep
    /// the others from being swept (its error is returned after).
    pub async fn sweep(&self) -> Result<Vec<String>, String> {
        let clients: Vec<(String, Client)> = self
            .regions
            .lock()
            .await
            .iter()
            .map(|(region, state)| (region.clone(), state.client.clone()))
            .collect();
        let mut terminated = Vec::new();
        let mut failed = Vec::new();
        for (region, result) in
            sweep::sweep_with(&clients, Some(&self.job), false, SWEEP_WAIT).await
        {
            match result {
                Ok(swept) => {
                    terminated.extend(swept.instances);
                    for (group, why) in swept.groups_left {
                        tracing::warn!("security group {group} of job {} stays: {why}", self.job);
                    }
                }
                Err(e) => failed.push(format!("{region}: {e}")),
            }
        }
        if failed.is_empty() {
            Ok(terminated)
        } else {
            Err(failed.join("; "))
        }
    }
}

fn peer_permission(ip: IpAddr) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .ip_ranges(
            IpRange::builder()
                .cidr_ip(format!("{ip}/32"))
                .description("skyx job peer")
                .build(),
        )
        .build()
}

#[async_trait]
impl Provider for Ec2Provider {
    fn name(&self) -> &str {
        "ec2"
    }

    async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        Ec2Provider::prepare(self, regions).await
    }

    async fn sweep(&self) -> Result<Vec<String>, String> {
        Ec2Provider::sweep(self).await
    }

    async fn admit(&self, ip: IpAddr) -> Result<(), ProviderError> {
        self.admit_peer(ip)
            .await
            .map_err(|why| Self::fail("(a peer in another cloud)", "every region", why))
    }

    fn job_marker(&self) -> Option<String> {
        Some(format!("EC2 instances tagged {JOB_TAG}={}", self.job))
    }

    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
        let Some(region) = aws_region(&req.region) else {
            return Err(ProviderError::Capacity {
                agent: req.name.clone(),
                region: req.region.clone(),
                why: "the EC2 provider launches in aws: regions only".into(),
            });
        };
        let user_data = crate::bootstrap::cloud_init(&crate::bootstrap::Boot {
            name: &req.name,
            token: &req.token,
            gateway_cert: &crate::cert_env(&req.gateway),
            agent: &self.config.agent,
            address: crate::bootstrap::Address::Ec2Metadata,
            // The instance profile's keys come from the metadata service on their own.
            store_identity: None,
        })
        .map_err(|e| Self::fail(&req.name, region, e))?;
        let user_data = base64::engine::general_purpose::STANDARD.encode(user_data);
        let state = self.region_state(&req.name, region).await?;
        let run = self
            .placed(state.client.run_instances(), &state)
            .image_id(&state.ami)
            .instance_type(InstanceType::from(
                req.instance
                    .as_deref()
                    .unwrap_or(self.config.instance_type.as_str()),
            ))
            .min_count(1)
            .max_count(1)
            .user_data(user_data)
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            // IMDSv2 only, one hop: a request forged through the agent (SSRF) cannot read
            // the user data, and nothing beyond the VM reaches the metadata service.
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(Tag::builder().key(JOB_TAG).value(&self.job).build())
                    .tags(Tag::builder().key("Name").value(&req.name).build())
                    .build(),
            )
            .send()
            .await;
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                let text = format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e));
                // Out of capacity or over quota there: the planner can place it elsewhere.
                let capacity = [
                    "InsufficientInstanceCapacity",
                    "InstanceLimitExceeded",
                    "VcpuLimitExceeded",
                    "MaxSpotInstanceCountExceeded",
                    "SpotMaxPriceTooLow",
                ]
                .iter()
                .any(|code| text.contains(code));
                return Err(if capacity {
                    ProviderError::Capacity {
                        agent: req.name.clone(),
                        region: req.region.clone(),
                        why: text,
                    }
                } else {
                    Self::fail(&req.name, region, text)
                });
            }
        };
        let Some(instance_id) = run
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
        else {
            return Err(Self::fail(
                &req.name,
                region,
                "RunInstances returned no instance",
            ));
        };
        let mut handle = Ec2Agent {
            client: state.client.clone(),
            instance_id: instance_id.clone(),
            terminated: false,
        };
        match self.wait_ready(&state.client, &instance_id, &req).await {
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
        }
    }
}

impl Ec2Provider {
    /// A RunInstances request with the job's network (its group; the configured subnet with a
    /// public address), instance profile and market.
    fn placed(
        &self,
        run: aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
        state: &RegionState,
    ) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
        let run = match &state.subnet {
            // A subnet with groups and a public address goes through the interface spec.
            Some(subnet) => run.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(subnet)
                    .groups(&state.group_id)
                    .associate_public_ip_address(true)
                    .delete_on_termination(true)
                    .build(),
            ),
            None => run.security_group_ids(&state.group_id),
        };
        let run = match &self.config.instance_profile {
            Some(p) if p.starts_with("arn:") => {
                run.iam_instance_profile(IamInstanceProfileSpecification::builder().arn(p).build())
            }
            Some(p) => {
                run.iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build())
            }
            None => run,
        };
        if !self.config.spot {
            return run;
        }
        run.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .spot_options(
                    SpotMarketOptions::builder()
                        .spot_instance_type(SpotInstanceType::OneTime)
                        .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                        .build(),
                )
                .build(),
        )
    }

    async fn wait_ready(
        &self,
        client: &Client,
        instance_id: &str,
        req: &LaunchRequest,
    ) -> Result<SocketAddr, ProviderError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let region = aws_region(&req.region).unwrap_or(&req.region);
        // Running, with an address.
        let ip = loop {
            let out = client
                .describe_instances()
                .instance_ids(instance_id)
                .send()
                .await
                .map_err(|e| {
                    Self::fail(
                        &req.name,
                        region,
                        aws_sdk_ec2::error::DisplayErrorContext(e),
                    )
                })?;
            let inst = out.reservations().iter().flat_map(|r| r.instances()).next();
            let running = inst
                .and_then(|i| i.state())
                .and_then(|s| s.name())
                .is_some_and(|n| *n == InstanceStateName::Running);
            let ip = inst
                .and_then(|i| i.public_ip_address().or(i.private_ip_address()))
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let (true, Some(ip)) = (running, ip) {
                break ip;
            }
            if Instant::now() > deadline {
                return Err(Self::fail(
                    &req.name,
                    region,
                    format!("{instance_id} did not start"),
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        // The agent answers once cloud-init has installed and started it.
        let control = SocketAddr::new(ip, self.config.control_port);
        let never = |e| {
            let why = format!("{instance_id} runs but its agent never answered on {control}: {e}");
            Self::fail(&req.name, region, why)
        };
        let pause = Duration::from_secs(2);
        crate::session::await_hello(req, control, deadline, pause, async || Ok(()), never).await?;
        // Admitted once its agent proved the job's identity (see the GCE provider's reason).
        self.admit_peer(ip)
            .await
            .map_err(|e| Self::fail(&req.name, region, e))?;
        Ok(control)
    }
}

/// The AWS SDK's configuration for `region` (`us-east-1`): the standard credential chain
/// unless static keys are given, AWS unless an EC2-compatible `endpoint` is.
pub async fn sdk_config(
    region: &str,
    endpoint: Option<&str>,
    credentials: Option<&(String, String)>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some((key, secret)) = credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            key,
            secret,
            None,
            None,
            "skyx-static",
        ));
    }
    loader.load().await
}

/// The VPC `subnet` is in (the job's group must be made there).
async fn subnet_vpc(client: &Client, subnet: &str) -> Result<String, String> {
    let out = client
        .describe_subnets()
        .subnet_ids(subnet)
        .send()
        .await
        .map_err(|e| {
            format!(
                "subnet {subnet}: {}",
                aws_sdk_ec2::error::DisplayErrorContext(e)
            )
        })?;
    out.subnets()
        .first()
        .and_then(|s| s.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| format!("subnet {subnet} is not in this region"))
}

/// An ingress grant whose rules exist already is done: a group made while an address was
/// being admitted elsewhere, or an SDK retry of a grant that had landed, answers
/// `InvalidPermission.Duplicate`, which is the state asked for.
fn already_granted<T, E>(result: Result<T, aws_sdk_ec2::error::SdkError<E>>) -> Result<(), String>
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().and_then(|s| s.code())
                == Some("InvalidPermission.Duplicate") =>
        {
            Ok(())
        }
        Err(e) => Err(aws_sdk_ec2::error::DisplayErrorContext(e).to_string()),
    }
}
