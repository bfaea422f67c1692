//! `--provider azure` flags: the subscription, size, image, identity and spot of the agents'
//! Azure VMs, and how the gateway reaches Resource Manager.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use skyx_provision::azure::{Arm, ArmAuth, AzureConfig, AzureProvider, ImageReference};
use skyx_provision::{AgentBinary, TokenCommand};

use crate::error::BadInput;

#[derive(Debug, Clone, Args)]
pub struct AzureArgs {
    #[command(flatten)]
    pub api: AzureApiArgs,
    /// Azure: the agents' VM size (the catalog's gateway size, which plans are priced with).
    #[arg(
        id = "azure_vm_size",
        long = "azure-vm-size",
        default_value = "Standard_D32_v5"
    )]
    pub vm_size: String,
    /// Azure: the image, `PUBLISHER:OFFER:SKU:VERSION`: a Linux with cloud-init, systemd,
    /// curl, sha256sum and a glibc as new as Debian 12's.
    #[arg(
        id = "azure_image",
        long = "azure-image", default_value = skyx_provision::azure::DEFAULT_IMAGE)]
    pub image: String,
    /// Azure: a user-assigned managed identity agent VMs run as (its resource id), their
    /// access to the job's containers (README "Agents on real machines" has the roles).
    #[arg(
        id = "azure_identity",
        long = "azure-identity",
        value_name = "RESOURCE_ID"
    )]
    pub identity: Option<String>,
    /// Azure: spot VMs (evicted ones are deleted; their agents are replaced like any that die).
    #[arg(id = "azure_spot", long = "azure-spot")]
    pub spot: bool,
}

/// Which subscription's Resource Manager, and how to call it (also `skyx sweep`'s).
#[derive(Debug, Clone, Args)]
pub struct AzureApiArgs {
    /// Azure: the subscription VMs are made in (and billed to).
    #[arg(
        id = "azure_subscription",
        long = "azure-subscription",
        env = "AZURE_SUBSCRIPTION_ID",
        value_name = "ID"
    )]
    pub subscription: Option<String>,
    /// Azure: a Resource Manager-compatible endpoint instead of Azure's (the contract server
    /// in tests).
    #[arg(
        id = "azure_arm_endpoint",
        long = "azure-arm-endpoint",
        env = "SKYX_AZURE_ARM_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
    /// Azure: an ARM access token (`az account get-access-token`); it lives about an hour,
    /// and a job that outlives it cannot delete its resource group: prefer
    /// --azure-access-token-command. Default: the Azure CLI's login.
    #[arg(
        id = "azure_access_token",
        long = "azure-access-token",
        env = "SKYX_AZURE_ACCESS_TOKEN",
        hide_env_values = true,
        conflicts_with = "azure_access_token_command"
    )]
    pub access_token: Option<String>,
    /// Azure: a command that prints an ARM access token (`az account get-access-token
    /// --query accessToken -o tsv`), run again every 10 minutes and whenever ARM refuses its
    /// token.
    #[arg(
        id = "azure_access_token_command",
        long = "azure-access-token-command",
        env = "SKYX_AZURE_ACCESS_TOKEN_COMMAND",
        value_name = "COMMAND"
    )]
    pub access_token_command: Option<String>,
}

impl AzureApiArgs {
    /// The subscription's Resource Manager, as these flags say to call it.
    pub fn arm(&self) -> Result<Arm, BadInput> {
        Ok(Arm::new(
            self.endpoint.as_deref(),
            &self.subscription()?,
            self.auth()?,
            Duration::from_secs(2),
        ))
    }

    fn subscription(&self) -> Result<String, BadInput> {
        // (An empty $AZURE_SUBSCRIPTION_ID names no subscription.)
        let subscription = self.subscription.clone().filter(|s| !s.trim().is_empty());
        subscription.ok_or_else(|| {
            BadInput(
                "--provider azure needs --azure-subscription (or $AZURE_SUBSCRIPTION_ID)".into(),
            )
        })
    }

    fn auth(&self) -> Result<ArmAuth, BadInput> {
        match (&self.access_token, &self.access_token_command) {
            (Some(token), _) => Ok(ArmAuth::Bearer(token.clone())),
            (None, Some(line)) => Ok(ArmAuth::Command(Arc::new(TokenCommand::new(line)))),
            (None, None) => ArmAuth::developer_tools().map_err(|e| BadInput(e.to_string())),
        }
    }
}

impl AzureArgs {
    /// The Azure provider these flags describe for job `job`.
    pub fn provider(
        &self,
        agent: AgentBinary,
        gateway_cidr: String,
        ready: Duration,
        job: &str,
    ) -> Result<AzureProvider, BadInput> {
        let image = ImageReference::parse(&self.image)
            .map_err(|e| BadInput(format!("--azure-image: {e}")))?;
        Ok(AzureProvider::new(
            AzureConfig {
                subscription: self.api.subscription()?,
                vm_size: self.vm_size.clone(),
                image,
                agent,
                identity: self.identity.clone(),
                spot: self.spot,
                control_port: skyx_provision::bootstrap::CONTROL_PORT,
                gateway_cidr,
                endpoint: self.api.endpoint.clone(),
                auth: self.api.auth()?,
                ready_timeout: ready,
                poll: Duration::from_secs(2),
            },
            job,
        ))
    }
}
