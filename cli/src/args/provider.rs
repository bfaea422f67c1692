//! `--provider`: where a copy's agents run. `local` (the default) starts them as processes on
//! this machine: one source and one sink agent copying directly, or the plan's whole route
//! played here with `--rehearse` (and in a sky's namespaces with `--sky`), its costs shown as
//! predictions ([`Metering`]). `aws` (`ec2`), `gcp` (`gce`) and `azure` launch one VM per agent through
//! the cloud's API, bootstrapped to download the pinned `skyx-agent` and start it, reachable
//! from this gateway and the job's own agents only, and removed at the end, whatever the end
//! (everything of the job is swept by its tag or label as the last step).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use skyx_gateway::Topology;
use skyx_provision::ec2::{Ec2Config, Ec2Provider, Image, Images};
use skyx_provision::{AgentBinary, Provider};

use crate::args::azure::AzureArgs;
use crate::args::gce::GceArgs;
use crate::error::BadInput;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// Agents as local processes.
    Local,
    /// Agents on AWS EC2 VMs (aws: regions only).
    #[value(name = "aws", alias = "ec2")]
    Ec2,
    /// Agents on Google Compute Engine VMs (gcp: regions only).
    #[value(name = "gcp", alias = "gce")]
    Gcp,
    /// Agents on Azure VMs (azure: regions only).
    Azure,
    /// Agents on VMs of each region's own cloud (EC2, GCE, Azure), the clouds' settings as
    /// for each one alone.
    Cloud,
}

impl ProviderKind {
    /// The cloud prefix of the regions this provider launches in, and how to name it.
    fn cloud(self) -> Option<(&'static str, &'static str)> {
        match self {
            ProviderKind::Local => None,
            ProviderKind::Ec2 => Some(("aws:", "--provider aws")),
            ProviderKind::Gcp => Some(("gcp:", "--provider gcp")),
            ProviderKind::Azure => Some(("azure:", "--provider azure")),
            ProviderKind::Cloud => Some(("", "--provider cloud")),
        }
    }

    /// The one cloud this provider launches in (`None`: processes, or every cloud).
    pub fn only_cloud(self) -> Option<skyx_catalog::Cloud> {
        match self {
            ProviderKind::Ec2 => Some(skyx_catalog::Cloud::Aws),
            ProviderKind::Gcp => Some(skyx_catalog::Cloud::Gcp),
            ProviderKind::Azure => Some(skyx_catalog::Cloud::Azure),
            ProviderKind::Local | ProviderKind::Cloud => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Where agents run.
    #[arg(long, value_enum, default_value = "local")]
    pub provider: ProviderKind,
    /// EC2: the image to boot: `REGION=ami-0abc...` or `REGION=ssm:/parameter/name` for one
    /// region (repeat per region), `ssm:/parameter/name` for every other region (default: the
    /// latest Debian 12, ssm:/aws/service/debian/release/12/latest/amd64). A Linux with
    /// cloud-init, systemd, curl, sha256sum and a glibc as new as Debian 12's.
    #[arg(long = "ec2-image", value_name = "[REGION=]IMAGE")]
    pub ec2_images: Vec<String>,
    /// EC2: the agents' instance type (the catalog's gateway type, which plans are priced with).
    #[arg(long, default_value = "m5.8xlarge")]
    pub ec2_instance_type: String,
    /// VMs: where they download the `skyx-agent` binary (https URL).
    #[arg(long, env = "SKYX_AGENT_URL", value_name = "URL")]
    pub agent_url: Option<String>,
    /// VMs: the SHA-256 the agent binary must have; a VM whose download (or image) has another
    /// powers itself off. Default: the SHA-256 of the `skyx-agent` beside this `skyx` (the
    /// URL must serve that build).
    #[arg(long, value_name = "HEX")]
    pub agent_sha256: Option<String>,
    /// VMs: the image has `/usr/local/bin/skyx-agent` already (checked against
    /// --agent-sha256 when given); nothing is downloaded.
    #[arg(long)]
    pub agent_preinstalled: bool,
    /// EC2: the instance profile agent VMs run as (name or ARN), their access to the job's
    /// buckets without keys in user data (README "Agents on real machines" has the policy).
    #[arg(long, value_name = "NAME|ARN")]
    pub ec2_instance_profile: Option<String>,
    /// EC2: the subnet to launch in, `us-east-1=subnet-0abc...` (repeat per region; default:
    /// the region's default VPC). VMs get a public address either way.
    #[arg(long = "ec2-subnet", value_name = "REGION=SUBNET")]
    pub ec2_subnets: Vec<String>,
    /// EC2: spot instances (cheaper; a reclaimed VM's agent is replaced like one that died).
    #[arg(long)]
    pub ec2_spot: bool,
    /// VMs: this gateway's address as the VMs see it, as a CIDR (`203.0.113.7/32`): the only
    /// address the agents' control port admits.
    #[arg(long, value_name = "CIDR")]
    pub gateway_cidr: Option<String>,
    /// EC2: an EC2-compatible endpoint instead of AWS (moto's server in tests).
    #[arg(long, env = "SKYX_EC2_ENDPOINT", value_name = "URL")]
    pub ec2_endpoint: Option<String>,
    /// VMs: how long one may take to boot and answer before it is removed.
    #[arg(
        long = "vm-ready-timeout",
        alias = "ec2-ready-timeout",
        default_value = "5min",
        value_name = "DURATION"
    )]
    pub ready_timeout: String,
    #[command(flatten)]
    pub gce: GceArgs,
    #[command(flatten)]
    pub azure: AzureArgs,
    /// With agents on this machine: play the plan's route here, relays as local processes
    /// standing in for its regions, and show every cost as the plan's prediction for cloud
    /// agents (no VM runs). Without it, agents on this machine copy directly: one
    /// source agent, one sink agent, the plan shown beside as what cloud agents would do.
    #[arg(long)]
    pub rehearse: bool,
}

/// What a copy's figures are, by where its agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metering {
    /// What runs is what is billed: agents on cloud VMs following the plan, or the provider's
    /// own copy. Hops and VMs are metered at the catalog's prices.
    Cloud,
    /// Agents on this machine play the plan's regions (`--rehearse`, or a sky's namespaces):
    /// every price is the plan's prediction; no VM runs.
    Rehearsal,
    /// Agents on this machine copy directly, one source and one sink: no VM, no hop between
    /// clouds; a plan is shown only as what cloud agents would do.
    Local,
}

impl Metering {
    /// As the JSON summary names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Metering::Cloud => "cloud",
            Metering::Rehearsal => "rehearsal",
            Metering::Local => "local",
        }
    }
}

impl ProviderArgs {
    /// What running agents as these flags say means for the figures (`in_sky`: a sky's
    /// namespaces stand in for its regions).
    pub fn metering(&self, in_sky: bool) -> Result<Metering, BadInput> {
        match self.provider {
            ProviderKind::Local if in_sky || self.rehearse => Ok(Metering::Rehearsal),
            ProviderKind::Local => Ok(Metering::Local),
            _ if self.rehearse => Err(BadInput(
                "--rehearse plays the plan with agents on this machine and --provider aws|gcp|azure|cloud runs it on VMs: give one of them".into(),
            )),
            _ => Ok(Metering::Cloud),
        }
    }

    /// The cloud provider these flags describe for `topology`'s agents, under job `job`
    /// (`None`: agents on this machine); every missing or malformed setting is named.
    pub fn cloud(
        &self,
        topology: &Topology,
        job: &str,
        in_sky: bool,
    ) -> Result<Option<Arc<dyn Provider>>, BadInput> {
        let regions: Vec<&str> = topology.agents.iter().map(|a| a.region.as_str()).collect();
        self.cloud_for(&regions, job, in_sky)
    }

    /// The cloud provider for agents in `regions` (each in the provider's cloud), under job
    /// `job`; `None` for agents on this machine.
    pub fn cloud_for(
        &self,
        regions: &[&str],
        job: &str,
        in_sky: bool,
    ) -> Result<Option<Arc<dyn Provider>>, BadInput> {
        let Some((prefix, flag)) = self.provider.cloud() else {
            return Ok(None);
        };
        if in_sky {
            return Err(BadInput(format!(
                "{flag} and --sky do not mix: a sky's agents run in its namespaces"
            )));
        }
        const CLOUDS: [&str; 3] = ["aws:", "gcp:", "azure:"];
        for region in regions {
            let fits = match self.provider {
                ProviderKind::Cloud => CLOUDS.iter().any(|c| region.starts_with(c)),
                _ => region.starts_with(prefix),
            };
            if fits {
                continue;
            }
            if self.provider == ProviderKind::Cloud {
                return Err(BadInput(format!(
                    "--provider cloud launches agents in aws:, gcp: and azure: regions, and the plan puts one in {region}"
                )));
            }
            let cloud = prefix.trim_end_matches(':');
            return Err(BadInput(format!(
                "{flag} launches agents in {prefix} regions only, and the plan puts one in {region} (keep the plan in one cloud: --only-cloud {cloud}, or a pipeline's clouds = [\"{cloud}\"]; --provider cloud launches in each region's own cloud)"
            )));
        }
        let agent = self.agent_binary()?;
        let gateway_cidr = self.gateway_cidr.clone().ok_or_else(|| {
            BadInput(format!("{flag} needs --gateway-cidr: this machine's address as the VMs see it, e.g. 203.0.113.7/32"))
        })?;
        if !is_ipv4_cidr(&gateway_cidr) {
            return Err(BadInput(format!(
                "--gateway-cidr '{gateway_cidr}': expected this machine's IPv4 address and a prefix of /16 to /32, e.g. 203.0.113.7/32"
            )));
        }
        let ready = skyx_catalog::units::parse_duration_s(&self.ready_timeout)
            .map_err(|e| BadInput(format!("--vm-ready-timeout: {e}")))?;
        let ready = Duration::from_secs_f64(ready);
        let member = |cloud: &str| -> Result<Arc<dyn Provider>, BadInput> {
            let (agent, gateway_cidr) = (agent.clone(), gateway_cidr.clone());
            Ok(match cloud {
                "gcp:" => Arc::new(self.gce.provider(agent, gateway_cidr, ready, job)?),
                "azure:" => Arc::new(self.azure.provider(agent, gateway_cidr, ready, job)?),
                _ => Arc::new(self.ec2(agent, gateway_cidr, ready, job)?),
            })
        };
        if self.provider != ProviderKind::Cloud {
            return member(prefix).map(Some);
        }
        // One provider per cloud the plan uses, each checked before any VM starts.
        let mut members = Vec::new();
        for cloud in CLOUDS {
            if regions.iter().any(|r| r.starts_with(cloud)) {
                members.push((cloud.to_string(), member(cloud)?));
            }
        }
        Ok(Some(Arc::new(skyx_provision::Clouds::new(members))))
    }

    fn ec2(
        &self,
        agent: AgentBinary,
        gateway_cidr: String,
        ready: Duration,
        job: &str,
    ) -> Result<Ec2Provider, BadInput> {
        let images = self.ec2_images()?;
        let subnets = per_region("--ec2-subnet", &self.ec2_subnets, "subnet-")?;
        Ok(Ec2Provider::new(
            Ec2Config {
                images,
                instance_type: self.ec2_instance_type.clone(),
                agent,
                instance_profile: self.ec2_instance_profile.clone(),
                subnets,
                spot: self.ec2_spot,
                control_port: skyx_provision::bootstrap::CONTROL_PORT,
                gateway_cidr,
                endpoint: self.ec2_endpoint.clone(),
                credentials: None,
                ready_timeout: ready,
            },
            job,
        ))
    }
}

impl ProviderArgs {
    /// `--ec2-image`s: per region, and one for the rest.
    fn ec2_images(&self) -> Result<Images, BadInput> {
        let mut images = Images::default();
        for text in &self.ec2_images {
            let bad = |why: String| BadInput(format!("--ec2-image {why}"));
            match text.split_once('=') {
                Some((region, image)) => {
                    let region = aws_region_key("--ec2-image", text, region)?;
                    let image = Image::parse(image).map_err(bad)?;
                    if images.per_region.insert(region.clone(), image).is_some() {
                        return Err(BadInput(format!("--ec2-image: {region} is given twice")));
                    }
                }
                None => match Image::parse(text).map_err(bad)? {
                    Image::Ami(id) => {
                        return Err(BadInput(format!(
                            "--ec2-image {id}: an AMI id holds in one region only: give REGION={id}"
                        )));
                    }
                    every => images.otherwise = every,
                },
            }
        }
        Ok(images)
    }

    /// Where VMs get the agent, pinned: `--agent-sha256`, else this machine's build.
    pub fn agent_binary(&self) -> Result<AgentBinary, BadInput> {
        let bad =
            |e: skyx_provision::BinaryError| BadInput(format!("--agent-url/--agent-sha256: {e}"));
        if self.agent_preinstalled {
            // (An --agent-url, from the flag or $SKYX_AGENT_URL, is not used then.)
            return AgentBinary::preinstalled(self.agent_sha256.as_deref()).map_err(bad);
        }
        let url = self.agent_url.as_deref().ok_or_else(|| {
            BadInput(
                "agents on VMs need --agent-url (where the VMs download skyx-agent) or --agent-preinstalled".into(),
            )
        })?;
        let sha256 = match &self.agent_sha256 {
            Some(sum) => sum.clone(),
            None => {
                let build = local_agent_build().ok_or_else(|| {
                    BadInput(
                        "--agent-url needs --agent-sha256 (no skyx-agent beside this skyx to pin by)".into(),
                    )
                })?;
                let sum = skyx_provision::binary::sha256_of(&build).map_err(|e| {
                    BadInput(format!(
                        "hashing {} for --agent-sha256: {e}",
                        build.display()
                    ))
                })?;
                eprintln!(
                    "skyx: VMs run skyx-agent only if its SHA-256 is {sum} (of {}, this machine's build; --agent-sha256 pins another)",
                    build.display()
                );
                sum
            }
        };
        AgentBinary::download(url, &sha256).map_err(bad)
    }
}

/// The `skyx-agent` built beside the running `skyx`, if any.
fn local_agent_build() -> Option<std::path::PathBuf> {
    let path = std::env::current_exe().ok()?.with_file_name("skyx-agent");
    path.is_file().then_some(path)
}

/// The AWS region a `REGION=...` flag names (`us-east-1`, `aws:us-gov-west-1`), refused when
/// it is not shaped like one: a typo (`us-east1`) would otherwise be a region never launched
/// in, and its setting silently unused.
fn aws_region_key(flag: &str, pair: &str, region: &str) -> Result<String, BadInput> {
    let region = region.trim().trim_start_matches("aws:");
    let parts: Vec<&str> = region.split('-').collect();
    let (last, names) = parts.split_last().unwrap_or((&"", &[]));
    let shaped = parts.len() >= 3
        && parts[0].len() == 2
        && names
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && !last.is_empty()
        && last.chars().all(|c| c.is_ascii_digit());
    if shaped {
        Ok(region.to_string())
    } else {
        Err(BadInput(format!(
            "{flag} '{pair}': '{region}' is not an AWS region name (e.g. us-east-1)"
        )))
    }
}

/// `REGION=VALUE` flags (`flag` names them in errors), each value starting with `prefix`.
fn per_region(
    flag: &str,
    pairs: &[String],
    prefix: &str,
) -> Result<BTreeMap<String, String>, BadInput> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((region, value)) if value.trim().starts_with(prefix) => {
                let region = aws_region_key(flag, pair, region)?;
                if out
                    .insert(region.clone(), value.trim().to_string())
                    .is_some()
                {
                    return Err(BadInput(format!("{flag}: {region} is given twice")));
                }
            }
            _ => {
                return Err(BadInput(format!(
                    "{flag} '{pair}': expected REGION={prefix}..., e.g. us-east-1={prefix}0abc1234"
                )));
            }
        }
    }
    Ok(out)
}

/// Just enough CIDR checking to refuse a typo before any VM is launched, and a range so wide
/// (shorter than /16) that the agents' control port would be open to much of the internet.
fn is_ipv4_cidr(s: &str) -> bool {
    s.split_once('/').is_some_and(|(addr, prefix)| {
        addr.parse::<std::net::Ipv4Addr>().is_ok()
            && prefix.parse::<u8>().is_ok_and(|p| (16..=32).contains(&p))
    })
}

/// A job tag no other job of this machine uses: `{kind}-{name}-{pid}-{millis}` (hex).
pub fn job_tag(kind: &str, name: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{kind}-{name}-{:x}-{millis:x}", std::process::id())
}

/// Says, before any VM starts, how to find every VM of the job (`what`: "copy", "run").
pub fn announce(cloud: &dyn Provider, what: &str) {
    if let Some(marker) = cloud.job_marker() {
        eprintln!("agents on VMs: every VM of this {what} is one of the {marker}");
    }
}

/// A provider's error readying the clouds, as the CLI reports it: a setting that cannot work
/// (an image or subnet that does not exist) is bad input (exit 2), anything else a failure.
pub fn setting_is_bad_input(e: skyx_provision::ProviderError) -> anyhow::Error {
    match e {
        skyx_provision::ProviderError::Setting { region, why } => {
            BadInput(format!("--provider in {region}: {why}")).into()
        }
        other => other.into(),
    }
}

/// A cancel signal set by the first Ctrl-C: copies and runs stop cleanly on it (agents torn
/// down, journal kept).
pub fn cancel_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel_tx.send(true);
        }
    });
    cancel_rx
}

/// Removes whatever VMs `cloud`'s job left, whatever the job's end, and says what it did
/// (`what`: "copy", "run").
pub async fn sweep(cloud: &dyn Provider, what: &str) {
    match cloud.sweep().await {
        Ok(left) if !left.is_empty() => {
            eprintln!(
                "removed {} VMs the {what} left: {}",
                left.len(),
                left.join(" ")
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: could not sweep the {what}'s VMs ({e}); remove every one of the {}",
            cloud.job_marker().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_keys_are_aws_region_names() {
        for ok in [
            "us-east-1",
            "aws:eu-west-3",
            "us-gov-west-1",
            "ap-southeast-2",
        ] {
            assert!(aws_region_key("--f", ok, ok).is_ok(), "{ok}");
        }
        for bad in [
            "us-east1",
            "useast-1",
            "",
            "us-east-",
            "US-EAST-1",
            "gcp:us-east1",
        ] {
            assert!(aws_region_key("--f", bad, bad).is_err(), "{bad}");
        }
    }
}
