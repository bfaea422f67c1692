//! `--provider gcp` flags: the project, machine type, image, service account, network and
//! spot of the agents' GCE VMs, and how the gateway reaches the Compute Engine API.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use skyx_provision::gce::{Auth, Compute, GceConfig, GceProvider};
use skyx_provision::{AgentBinary, TokenCommand};

use crate::error::BadInput;

#[derive(Debug, Clone, Args)]
pub struct GceArgs {
    #[command(flatten)]
    pub api: GceApiArgs,
    /// GCE: the agents' machine type (the catalog's gateway type, which plans are priced with).
    #[arg(
        id = "gce_machine_type",
        long = "gce-machine-type",
        default_value = "n2-standard-32"
    )]
    pub machine_type: String,
    /// GCE: the boot image, `projects/P/global/images/family/F` or `.../images/NAME`: a Linux
    /// with systemd, curl, sha256sum, GCE's guest environment and a glibc as new as Debian 12's.
    #[arg(
        id = "gce_image",
        long = "gce-image", default_value = skyx_provision::gce::DEFAULT_IMAGE)]
    pub image: String,
    /// GCE: the service account agent VMs run as (its email), their access to the job's
    /// buckets without keys in metadata (README "Agents on real machines" has the roles).
    #[arg(
        id = "gce_service_account",
        long = "gce-service-account",
        value_name = "EMAIL"
    )]
    pub service_account: Option<String>,
    /// GCE: the VPC network of the VMs and the job's firewall rules.
    #[arg(
        id = "gce_network",
        long = "gce-network",
        default_value = "global/networks/default"
    )]
    pub network: String,
    /// GCE: spot VMs (cheaper; a reclaimed VM's agent is replaced like one that died).
    #[arg(id = "gce_spot", long = "gce-spot")]
    pub spot: bool,
    /// GCE: after this long GCE deletes each VM whatever happens (the teardown of last
    /// resort, should this gateway die and no one sweep): longer than the job.
    #[arg(
        id = "gce_max_run",
        long = "gce-max-run",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub max_run: String,
}

/// Which project's Compute Engine API, and how to call it (also `skyx sweep`'s).
#[derive(Debug, Clone, Args)]
pub struct GceApiArgs {
    /// GCE: the project VMs are launched in (and billed to).
    #[arg(
        id = "gcp_project",
        long = "gcp-project",
        env = "GOOGLE_CLOUD_PROJECT",
        value_name = "PROJECT"
    )]
    pub project: Option<String>,
    /// GCE: a Compute-compatible endpoint instead of Google's (the contract server in tests).
    #[arg(
        id = "gce_endpoint",
        long = "gce-endpoint",
        env = "SKYX_GCE_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
    /// GCE: an OAuth access token to call the API with (`gcloud auth print-access-token`);
    /// it lives about an hour, and a job that outlives it cannot delete its VMs: prefer
    /// --gce-access-token-command. Default: Google's application default credentials.
    #[arg(
        id = "gce_access_token",
        long = "gce-access-token",
        env = "SKYX_GCE_ACCESS_TOKEN",
        hide_env_values = true,
        conflicts_with = "gce_access_token_command"
    )]
    pub access_token: Option<String>,
    /// GCE: a command that prints an access token (`gcloud auth print-access-token`), run
    /// again every 10 minutes and whenever the API refuses its token.
    #[arg(
        id = "gce_access_token_command",
        long = "gce-access-token-command",
        env = "SKYX_GCE_ACCESS_TOKEN_COMMAND",
        value_name = "COMMAND"
    )]
    pub access_token_command: Option<String>,
}

impl GceApiArgs {
    /// The project's API, as these flags say to call it.
    pub fn compute(&self) -> Result<Compute, BadInput> {
        Ok(Compute::new(
            self.endpoint.as_deref(),
            &self.project()?,
            self.auth(),
        ))
    }

    fn project(&self) -> Result<String, BadInput> {
        // (An empty $GOOGLE_CLOUD_PROJECT names no project.)
        let project = self.project.clone().filter(|p| !p.trim().is_empty());
        project.ok_or_else(|| {
            BadInput("--provider gcp needs --gcp-project (or $GOOGLE_CLOUD_PROJECT)".into())
        })
    }

    fn auth(&self) -> Auth {
        match (&self.access_token, &self.access_token_command) {
            (Some(token), _) => Auth::Bearer(token.clone()),
            (None, Some(line)) => Auth::Command(Arc::new(TokenCommand::new(line))),
            (None, None) => Auth::default_credentials(),
        }
    }
}

impl GceArgs {
    /// The GCE provider these flags describe for job `job`.
    pub fn provider(
        &self,
        agent: AgentBinary,
        gateway_cidr: String,
        ready: Duration,
        job: &str,
    ) -> Result<GceProvider, BadInput> {
        let project = self.api.project()?;
        let max_run = skyx_catalog::units::parse_duration_s(&self.max_run)
            .map_err(|e| BadInput(format!("--gce-max-run: {e}")))?;
        // GCE accepts 30 s to 120 days.
        if !(30.0..=120.0 * 86400.0).contains(&max_run) {
            return Err(BadInput(format!(
                "--gce-max-run {}: GCE accepts 30s to 120 days",
                self.max_run
            )));
        }
        Ok(GceProvider::new(
            GceConfig {
                project,
                machine_type: self.machine_type.clone(),
                image: self.image.clone(),
                agent,
                service_account: self.service_account.clone(),
                network: self.network.clone(),
                spot: self.spot,
                max_run: Duration::from_secs_f64(max_run),
                control_port: skyx_provision::bootstrap::CONTROL_PORT,
                gateway_cidr,
                endpoint: self.api.endpoint.clone(),
                auth: self.api.auth(),
                ready_timeout: ready,
                poll: Duration::from_secs(2),
            },
            job,
        ))
    }
}
