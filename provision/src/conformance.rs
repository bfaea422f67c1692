//! The provider conformance suite: what every [`Provider`] must do, whatever runs its agents
//! (processes, threads, cloud VMs). Each provider's tests call [`conformance`] with a provider
//! that starts real agents: `LocalProvider` and `InProcessProvider` in
//! `transfer-agent/tests/provider_conformance.rs`; EC2 (moto), GCE and Azure (contract
//! servers), each with its VMs booted as network namespaces, in
//! `tests/e2e/provider_conformance.rs`.
//!
//! 1. prepare → launch → `AgentSession::launch` says hello in this API version → terminate →
//!    gone (the handle says so, the control port no longer answers);
//! 2. an agent asked to shut down through its control API is gone by itself (its control port
//!    closes; a process's handle sees it exit), and terminating it afterwards is harmless;
//! 3. a stranger (another gateway's certificate) gets no TLS handshake at the control port; a
//!    gateway whose launch token the agent does not hold refuses it as an impostor; an agent
//!    whose session fails a step (an install, say) is terminated, never left running.
//!
//! Built with the `conformance` feature (for tests only).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skyx_agent_api::control_tls::launch_token;
use skyx_agent_api::{API_VERSION, AgentClient, ClientError, GatewayIdentity};

use crate::{AgentSession, LaunchRequest, Provider};

/// A provider under test and how to ask it for agents.
pub struct Subject<'a> {
    pub provider: &'a dyn Provider,
    /// The region the agents are launched in (`gcp:us-east1-b`, `test:conformance`).
    pub region: &'a str,
    /// The launch request of agent `n` holding `token`.
    pub request: &'a (dyn Fn(usize, String) -> LaunchRequest + Send + Sync),
    /// Whether the handle sees the agent exit by itself (a process does; a VM whose agent
    /// exited is a machine until it is deleted).
    pub handle_sees_exit: bool,
    /// How long an agent may take to be gone once told (a VM's deletion takes longer than a
    /// process's exit).
    pub gone_within: Duration,
}

impl std::fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("provider", &self.provider)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Runs the suite; panics, naming the provider and the step, at the first failure.
pub async fn conformance(s: Subject<'_>) {
    let who = s.provider.name().to_string();
    s.provider
        .prepare(&[s.region])
        .await
        .unwrap_or_else(|e| panic!("{who}: prepare: {e}"));

    // 1. launch, hello, terminate, gone.
    let req = (s.request)(0, launch_token());
    let (token, gateway) = (req.token.clone(), req.gateway.clone());
    let mut session = AgentSession::launch(s.provider, req)
        .await
        .unwrap_or_else(|e| panic!("{who}: launch: {e}"));
    let name = session.agent.name.clone();
    let (_, hello) = AgentClient::connect(&name, session.agent.control, &token, &gateway)
        .await
        .unwrap_or_else(|e| panic!("{who}: a second hello: {e}"));
    assert_eq!(hello.api_version, API_VERSION, "{who}");
    session.client.metrics().await.unwrap();
    assert!(session.agent.handle.is_alive(), "{who}: alive after launch");
    let control = session.agent.control;
    session.agent.handle.terminate().await;
    assert!(
        !session.agent.handle.is_alive(),
        "{who}: alive after terminate"
    );
    assert!(
        gone(control, s.gone_within).await,
        "{who}: control port still open after terminate"
    );

    // 2. a shutdown request through the control API ends the agent by itself.
    let mut session = AgentSession::launch(s.provider, (s.request)(1, launch_token()))
        .await
        .unwrap_or_else(|e| panic!("{who}: launch: {e}"));
    let control = session.agent.control;
    session.client.shutdown().await.unwrap();
    assert!(
        gone(control, s.gone_within).await,
        "{who}: still answering after shutdown"
    );
    if s.handle_sees_exit {
        let deadline = Instant::now() + s.gone_within;
        while session.agent.handle.is_alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            !session.agent.handle.is_alive(),
            "{who}: the handle still says alive after shutdown"
        );
    }
    session.agent.handle.terminate().await;
    assert!(
        !session.agent.handle.is_alive(),
        "{who}: alive after terminate"
    );

    // 3. the control API refuses a stranger and an impostor; a session whose next step fails
    //    terminates its agent.
    let req = (s.request)(2, launch_token());
    let (token, gateway) = (req.token.clone(), req.gateway.clone());
    let session = AgentSession::launch(s.provider, req)
        .await
        .unwrap_or_else(|e| panic!("{who}: launch: {e}"));
    let (name, control) = (session.agent.name.clone(), session.agent.control);
    let stranger = GatewayIdentity::generate().unwrap();
    match AgentClient::connect(&name, control, &token, &stranger).await {
        Err(ClientError::Unreachable { .. }) => {}
        other => panic!("{who}: another gateway's certificate was served: {other:?}"),
    }
    match AgentClient::connect(&name, control, &launch_token(), &gateway).await {
        Err(ClientError::Impostor { .. }) => {}
        other => panic!("{who}: an agent without the launch token was taken in: {other:?}"),
    }
    let failed = session
        .then(async |_client: &AgentClient| Err::<(), _>("the install step failed"))
        .await;
    assert!(failed.is_err(), "{who}");
    assert!(
        gone(control, s.gone_within).await,
        "{who}: left running after a failed step"
    );
}

/// Whether `addr` stops answering within `within`: twice in a row no connection, refused or
/// not taken within a second (a deleted VM's address answers nothing at all; two misses keep
/// one slow accept from passing for gone).
async fn gone(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut misses = 0;
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await;
        misses = if matches!(attempt, Ok(Ok(_))) {
            0
        } else {
            misses + 1
        };
        if misses == 2 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
