//! [`AgentSession::launch`]: the one way to start an agent. Copies, path probes and stage
//! compute all need the same four steps, and a step skipped in one of them (an unchecked API
//! version, an agent left running after a failed hello) is a bug there only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skyx_agent_api::{API_VERSION, AgentClient, ClientError};

use crate::{LaunchRequest, LaunchedAgent, Provider, ProviderError};

/// Why an agent could not be brought into a job. Whatever the cause, the agent is gone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("agent {agent} speaks control API v{theirs}, this gateway v{API_VERSION}")]
    Version { agent: String, theirs: u32 },
}

/// A launched agent that answered hello in this gateway's API version, and its client.
#[derive(Debug)]
pub struct AgentSession {
    pub agent: LaunchedAgent,
    pub client: AgentClient,
}

impl AgentSession {
    /// Launches `req` through `provider`, says hello and checks the API version. An agent
    /// that fails a step is terminated before the error is returned, never left running.
    pub async fn launch(
        provider: &dyn Provider,
        req: LaunchRequest,
    ) -> Result<AgentSession, SessionError> {
        let (token, gateway) = (req.token.clone(), req.gateway.clone());
        let mut agent = provider.launch(req).await?;
        let greeted =
            match AgentClient::connect(agent.name.clone(), agent.control, &token, &gateway).await {
                Ok((client, hello)) if hello.api_version == API_VERSION => Ok(client),
                Ok((_, hello)) => Err(SessionError::Version {
                    agent: agent.name.clone(),
                    theirs: hello.api_version,
                }),
                Err(e) => Err(e.into()),
            };
        match greeted {
            Ok(client) => Ok(AgentSession { agent, client }),
            Err(e) => {
                agent.handle.terminate().await;
                Err(e)
            }
        }
    }

    /// Runs `step` against the agent (installing a job, say); on failure the agent is
    /// terminated and the error returned.
    pub async fn then<E, F>(mut self, step: F) -> Result<AgentSession, E>
    where
        F: AsyncFnOnce(&AgentClient) -> Result<(), E>,
    {
        match step(&self.client).await {
            Ok(()) => Ok(self),
            Err(e) => {
                self.agent.handle.terminate().await;
                Err(e)
            }
        }
    }
}

/// Says hello to a new VM's agent at `control` until it answers (proving its launch token) or
/// `deadline` passes (`never`: the error then, from the last refusal). `between` runs between
/// tries and may end the wait early (a VM that stopped: its bootstrap failed).
pub(crate) async fn await_hello<B, F>(
    req: &LaunchRequest,
    control: SocketAddr,
    deadline: Instant,
    pause: Duration,
    mut between: B,
    never: impl FnOnce(ClientError) -> ProviderError,
) -> Result<(), ProviderError>
where
    B: FnMut() -> F,
    F: Future<Output = Result<(), ProviderError>>,
{
    loop {
        match AgentClient::connect(req.name.clone(), control, &req.token, &req.gateway).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(never(e)),
            Err(_) => {
                between().await?;
                tokio::time::sleep(pause).await;
            }
        }
    }
}
