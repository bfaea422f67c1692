//! Stage compute on agents: each stage gets an agent of its own, launched through a
//! [`Provider`] (a local process, inside the region's namespace on the sky; a VM on EC2), and
//! runs there through the agent's `POST /v1/stage`: the agent brings the stage's inputs down
//! from its region's store, runs the command in its own process group and takes the output up.
//! The gateway long-polls `GET /v1/stage` until the stage ends (which also keeps the agent's
//! idle lease alive) and copies the end of its log back. Releasing the compute terminates the
//! agent, and with it the machine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use skyx_agent_api::AgentClient;
use skyx_agent_api::wire::{StageRequest, StageState};

use crate::run::{Compute, ComputeError, ComputeProvider, StageContext, StageRunError};
use skyx_provision::{
    AgentSession, LaunchRequest, LaunchedAgent, Provider, ProviderError, SessionError,
};

/// How long one status call waits for the stage to end.
const STATUS_WAIT: Duration = Duration::from_secs(20);
/// Status calls that may fail in a row (a restarting network, a busy agent) before the stage
/// is given up as lost.
const STATUS_RETRIES: u32 = 5;

/// Provisions each stage as an agent of `provider`'s, under job `job`, each with a launch
/// token of its own.
#[derive(Clone)]
pub struct AgentCompute {
    pub provider: Arc<dyn Provider>,
    pub job: String,
    /// The gateway's control identity the stage agents serve their control API to.
    pub gateway: Arc<skyx_agent_api::GatewayIdentity>,
}

impl std::fmt::Debug for AgentCompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCompute")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ComputeProvider for AgentCompute {
    async fn provision(
        &self,
        stage: &str,
        region: &str,
        instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError> {
        let session = AgentSession::launch(
            self.provider.as_ref(),
            LaunchRequest {
                name: format!("{region}#stage-{stage}"),
                job: self.job.clone(),
                region: region.to_string(),
                instance: Some(instance.to_string()),
                token: skyx_agent_api::control_tls::launch_token(),
                gateway: self.gateway.clone(),
            },
        )
        .await
        .map_err(|e| match e {
            SessionError::Provider(ProviderError::Capacity { region, why, .. }) => {
                ComputeError::Capacity { region, why }
            }
            other => ComputeError::Failed(other.to_string()),
        })?;
        Ok(Box::new(StageAgent {
            launched: session.agent,
            client: session.client,
            released: false,
        }))
    }
}

#[derive(Debug)]
struct StageAgent {
    launched: LaunchedAgent,
    client: AgentClient,
    released: bool,
}

#[async_trait]
impl Compute for StageAgent {
    async fn run(&mut self, stage: &StageRequest, ctx: &StageContext) -> Result<(), StageRunError> {
        self.follow(stage, ctx).await.map_err(StageRunError::Failed)
    }

    async fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let _ = self.client.shutdown().await;
        self.launched.handle.terminate().await;
    }
}

impl StageAgent {
    /// Starts the stage on the agent and waits for its end.
    async fn follow(&mut self, stage: &StageRequest, ctx: &StageContext) -> Result<(), String> {
        let agent = self.launched.name.clone();
        self.client
            .start_stage(stage)
            .await
            .map_err(|e| format!("agent {agent} would not start it: {e}"))?;
        let mut failures = 0;
        loop {
            match self.client.stage_status(STATUS_WAIT).await {
                Ok(status) => {
                    failures = 0;
                    if status.state == StageState::Running {
                        continue;
                    }
                    if let Some(dir) = ctx.log.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(&ctx.log, &status.log_tail);
                    return match status.state {
                        StageState::Succeeded => Ok(()),
                        StageState::Failed { why } => Err(format!(
                            "{why} (on agent {agent}; its log's end: {})",
                            ctx.log.display()
                        )),
                        StageState::Idle | StageState::Running => {
                            Err(format!("agent {agent} lost the stage"))
                        }
                    };
                }
                Err(e) => {
                    failures += 1;
                    if failures > STATUS_RETRIES || !self.launched.handle.is_alive() {
                        return Err(format!("agent {agent} stopped answering: {e}"));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
