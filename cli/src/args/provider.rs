//! `--provider`: where a copy's agents run. `local` (the default) starts them as processes on
//! this machine (inside the sky's namespaces with `--sky`); `ec2` launches one AWS VM per agent
//! through the EC2 API, bootstrapped by cloud-init to download and start `skyx-agent`, in a
//! security group open to this gateway and the job's own agents only, and terminated at the
//! end, whatever the end (every VM of the job is swept by its tag as the last step).

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use skyx_gateway::Topology;
use skyx_provision::ec2::{Ec2Config, Ec2Provider};

use crate::error::BadInput;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// Agents as local processes.
    Local,
    /// Agents on AWS EC2 VMs (aws: regions only).
    Ec2,
}

#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Where agents run.
    #[arg(long, value_enum, default_value = "local")]
    pub provider: ProviderKind,
    /// EC2: the image (AMI) to boot in a region, `us-east-1=ami-0abc...` (repeat per region; a
    /// Linux with cloud-init and systemd).
    #[arg(long = "ec2-image", value_name = "REGION=AMI")]
    pub ec2_images: Vec<String>,
    /// EC2: the agents' instance type (the catalog's gateway type, which plans are priced with).
    #[arg(long, default_value = "m5.8xlarge")]
    pub ec2_instance_type: String,
    /// EC2: where the VMs download the `skyx-agent` binary (https URL).
    #[arg(long, env = "SKYX_AGENT_URL", value_name = "URL")]
    pub agent_url: Option<String>,
    /// EC2: this gateway's address as the VMs see it, as a CIDR (`203.0.113.7/32`): the only
    /// address the agents' control port admits.
    #[arg(long, value_name = "CIDR")]
    pub gateway_cidr: Option<String>,
    /// EC2: an EC2-compatible endpoint instead of AWS (moto's server in tests).
    #[arg(long, env = "SKYX_EC2_ENDPOINT", value_name = "URL")]
    pub ec2_endpoint: Option<String>,
    /// EC2: how long a VM may take to boot and answer before it is terminated.
    #[arg(long, default_value = "5min", value_name = "DURATION")]
    pub ec2_ready_timeout: String,
}

impl ProviderArgs {
    /// The EC2 provider these flags describe for `topology`'s agents, under job tag `job`; every
    /// missing or malformed setting is named.
    pub fn ec2(
        &self,
        topology: &Topology,
        job: &str,
        in_sky: bool,
    ) -> Result<Ec2Provider, BadInput> {
        let regions: Vec<&str> = topology.agents.iter().map(|a| a.region.as_str()).collect();
        self.ec2_for(&regions, job, in_sky)
    }

    /// The EC2 provider for agents in `regions` (each `aws:...`), under job tag `job`.
    pub fn ec2_for(
        &self,
        regions: &[&str],
        job: &str,
        in_sky: bool,
    ) -> Result<Ec2Provider, BadInput> {
        if in_sky {
            return Err(BadInput(
                "--provider ec2 and --sky do not mix: a sky's agents run in its namespaces".into(),
            ));
        }
        let mut images = BTreeMap::new();
        for pair in &self.ec2_images {
            let Some((region, ami)) = pair.split_once('=') else {
                return Err(BadInput(format!(
                    "--ec2-image '{pair}': expected REGION=AMI, e.g. us-east-1=ami-0abc1234"
                )));
            };
            let region = region.trim().trim_start_matches("aws:");
            images.insert(region.to_string(), ami.trim().to_string());
        }
        let mut missing = Vec::new();
        for region in regions {
            match region.strip_prefix("aws:") {
                None => {
                    return Err(BadInput(format!(
                        "--provider ec2 launches agents in aws: regions only, and the plan puts one in {region} (keep the plan in AWS: --only-cloud aws, or a pipeline's clouds = [\"aws\"])"
                    )));
                }
                Some(r) if !images.contains_key(r) && !missing.contains(&r) => missing.push(r),
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            return Err(BadInput(format!(
                "--provider ec2 needs an image for every region it launches in: add {}",
                missing
                    .iter()
                    .map(|r| format!("--ec2-image {r}=AMI"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let agent_url = self.agent_url.clone().ok_or_else(|| {
            BadInput("--provider ec2 needs --agent-url: where the VMs download skyx-agent".into())
        })?;
        let gateway_cidr = self.gateway_cidr.clone().ok_or_else(|| {
            BadInput("--provider ec2 needs --gateway-cidr: this machine's address as the VMs see it, e.g. 203.0.113.7/32".into())
        })?;
        if !is_ipv4_cidr(&gateway_cidr) {
            return Err(BadInput(format!(
                "--gateway-cidr '{gateway_cidr}': expected an IPv4 address and prefix, e.g. 203.0.113.7/32"
            )));
        }
        let ready = skyx_catalog::units::parse_duration_s(&self.ec2_ready_timeout)
            .map_err(|e| BadInput(format!("--ec2-ready-timeout: {e}")))?;
        Ok(Ec2Provider::new(
            Ec2Config {
                images,
                instance_type: self.ec2_instance_type.clone(),
                agent_url,
                control_port: skyx_provision::ec2::CONTROL_PORT,
                gateway_cidr,
                endpoint: self.ec2_endpoint.clone(),
                credentials: None,
                ready_timeout: Duration::from_secs_f64(ready),
            },
            job,
        ))
    }
}

/// Just enough CIDR checking to refuse a typo before any VM is launched.
fn is_ipv4_cidr(s: &str) -> bool {
    s.split_once('/').is_some_and(|(addr, prefix)| {
        addr.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
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
pub fn announce(ec2: &Ec2Provider, what: &str) {
    eprintln!(
        "agents on EC2: every VM of this {what} is tagged {}={}",
        skyx_provision::ec2::JOB_TAG,
        ec2.job()
    );
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

/// Terminates whatever VMs `ec2`'s job left, whatever the job's end, and says what it did
/// (`what`: "copy", "run").
pub async fn sweep(ec2: &Ec2Provider, what: &str) {
    match ec2.sweep().await {
        Ok(left) if !left.is_empty() => {
            eprintln!(
                "terminated {} VMs the {what} left: {}",
                left.len(),
                left.join(" ")
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: could not sweep the {what}'s VMs ({e}); terminate every instance tagged {}={}",
            skyx_provision::ec2::JOB_TAG,
            ec2.job()
        ),
    }
}
