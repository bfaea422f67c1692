//! Where agents come from. A [`Provider`] launches one `skyx-agent` in a region and hands back
//! its control address and a handle that can tell whether it is alive and terminate it;
//! [`AgentSession::launch`] is the one way the rest of skyx starts an agent (launch, hello, API
//! version check, terminate on any failure).
//!
//! One module per kind of machine: [`local`] (processes on this machine, optionally inside a
//! network namespace per region: the default and the emulated sky), [`ec2`] (VMs on EC2,
//! behind the `ec2` feature), [`gce`] (VMs on Compute Engine, behind `gce`) and [`azure`]
//! (VMs on Azure, behind `azure`). What every cloud VM boots with is [`bootstrap`]. Every provider
//! runs the same conformance checks (`tests/`).
//!
//! This crate never decides what agents do: it starts them, says hello, and stops them.

use std::net::SocketAddr;

use base64::Engine as _;

use async_trait::async_trait;

#[cfg(feature = "azure")]
pub mod azure;
pub mod binary;
pub mod bootstrap;
pub mod clouds;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "ec2")]
pub mod ec2;
#[cfg(feature = "gce")]
pub mod gce;
pub mod local;
pub mod names;
pub mod session;
pub mod token_command;

pub use binary::{AgentBinary, BinaryError};
pub use clouds::Clouds;
pub use local::LocalProvider;
pub use names::job_label;
pub use session::{AgentSession, SessionError};
pub use token_command::{TokenCommand, TokenCommandError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    #[error("cannot start agent {agent} ({program}): {source}")]
    Spawn {
        agent: String,
        program: String,
        source: std::io::Error,
    },
    #[error("agent {agent} did not report ready: {why}")]
    NotReady { agent: String, why: String },
    /// A setting of the provider cannot work in a region (an image or a subnet that does not
    /// exist there): the user's to fix, not a machine that failed.
    #[error("{region}: {why}")]
    Setting { region: String, why: String },
    #[error("no capacity for agent {agent} in {region}: {why}")]
    Capacity {
        agent: String,
        region: String,
        why: String,
    },
}

/// What to launch.
#[derive(Clone)]
pub struct LaunchRequest {
    /// A name for the agent (shows in `ps` and logs).
    pub name: String,
    /// The job the agent serves, as it names files: concurrent jobs (a pipeline's copies)
    /// keep apart.
    pub job: String,
    pub region: String,
    /// The machine to launch where the provider has a choice (a stage's planned instance
    /// type); `None`: the provider's agent machine.
    pub instance: Option<String>,
    /// The launch's secret token: the agent gets it through its environment (or user data)
    /// and proves it holds it when the gateway first says hello; it never crosses the network.
    pub token: String,
    /// The gateway's control identity: the agent is handed its certificate (public) and serves
    /// its control API to that certificate alone.
    pub gateway: std::sync::Arc<skyx_agent_api::GatewayIdentity>,
}

impl std::fmt::Debug for LaunchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log.
        f.debug_struct("LaunchRequest")
            .field("name", &self.name)
            .field("job", &self.job)
            .field("region", &self.region)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The gateway's certificate as an agent reads it from its environment (base64 DER).
pub fn cert_env(gateway: &skyx_agent_api::GatewayIdentity) -> String {
    base64::engine::general_purpose::STANDARD.encode(gateway.cert())
}

/// A running agent.
#[derive(Debug)]
pub struct LaunchedAgent {
    pub name: String,
    pub region: String,
    pub control: SocketAddr,
    pub handle: Box<dyn AgentHandle>,
}

/// Control over one launched agent's machine or process.
#[async_trait]
pub trait AgentHandle: Send + Sync + std::fmt::Debug {
    /// A provider-specific id (pid, instance id).
    fn id(&self) -> String;
    /// Whether the agent's process or machine is still running.
    fn is_alive(&mut self) -> bool;
    /// Stops the agent for good (waits for it to be gone).
    async fn terminate(&mut self);
}

/// Launches agents.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError>;

    /// Readies the clouds of `regions` (`aws:us-east-1`) before any agent starts, so that a
    /// setting that cannot work ([`ProviderError::Setting`]) launches nothing. Processes need
    /// nothing readied.
    async fn prepare(&self, _regions: &[&str]) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Admits an agent launched elsewhere (another cloud's VM at `ip`) to this job's agents:
    /// their rules let it in as they let in the job's own. Processes need no rules.
    async fn admit(&self, _ip: std::net::IpAddr) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Removes whatever the job left in the cloud (VMs, rules, groups), whoever started it;
    /// returns the VMs removed. Processes die with their gateway: nothing to sweep.
    async fn sweep(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    /// How to find the job's machines in the cloud's console (`skyx-job=…` tag or label), for
    /// a user whose gateway died before its sweep; `None` for processes.
    fn job_marker(&self) -> Option<String> {
        None
    }
}
