//! The provider conformance suite: what every `skyx_provision::Provider` must do, run against
//! each provider that can start a real agent here — `LocalProvider` (agent processes of this
//! crate's `skyx-agent` binary) and `InProcessProvider` (agents as threads).
//!
//! 1. launch → `AgentSession::launch` says hello in this API version → terminate → gone
//!    (not alive, control port closed);
//! 2. an agent asked to shut down through its control API is gone by itself;
//! 3. a stranger (another gateway's certificate) gets no TLS handshake at the control port; a
//!    gateway whose launch token the agent does not hold refuses it as an impostor; an agent
//!    whose session fails a step (an install, say) is terminated, never left running.
//!
//! EC2 runs the parts that need no booted VM against moto (`provision/tests/ec2_moto.rs`:
//! capacity errors come back as capacity, a VM whose agent never answers is terminated, the
//! sweep leaves nothing).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use skyx_agent::in_process::InProcessProvider;
use skyx_agent_api::{AgentClient, ClientError, GatewayIdentity};
use skyx_provision::{AgentSession, LaunchRequest, LocalProvider, Provider};

static GATEWAY: LazyLock<Arc<GatewayIdentity>> =
    LazyLock::new(|| Arc::new(GatewayIdentity::generate().unwrap()));

fn request(name: &str, token: &str) -> LaunchRequest {
    LaunchRequest {
        name: name.into(),
        job: "conformance".into(),
        region: "test:conformance".into(),
        instance: None,
        token: token.into(),
        gateway: GATEWAY.clone(),
    }
}

/// Whether anything accepts connections at `addr` (a gone agent's port is closed).
async fn answers(addr: std::net::SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

async fn eventually_gone(addr: std::net::SocketAddr) -> bool {
    for _ in 0..200 {
        if !answers(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

async fn conformance(provider: &dyn Provider) {
    let who = provider.name().to_string();
    // 1. launch, hello, terminate, gone.
    let mut session = AgentSession::launch(
        provider,
        request("conf#0", "conformance-token-one-0123456789"),
    )
    .await
    .unwrap_or_else(|e| panic!("{who}: launch: {e}"));
    let (_, hello) = AgentClient::connect(
        "conf#0",
        session.agent.control,
        "conformance-token-one-0123456789",
        &GATEWAY,
    )
    .await
    .unwrap();
    assert_eq!(hello.api_version, skyx_agent_api::API_VERSION, "{who}");
    session.client.metrics().await.unwrap();
    assert!(session.agent.handle.is_alive(), "{who}: alive after launch");
    let control = session.agent.control;
    session.agent.handle.terminate().await;
    assert!(
        !session.agent.handle.is_alive(),
        "{who}: alive after terminate"
    );
    assert!(
        eventually_gone(control).await,
        "{who}: control port still open"
    );

    // 2. a shutdown request through the control API ends the agent by itself.
    let mut session = AgentSession::launch(
        provider,
        request("conf#1", "conformance-token-two-0123456789"),
    )
    .await
    .unwrap();
    let control = session.agent.control;
    session.client.shutdown().await.unwrap();
    assert!(
        eventually_gone(control).await,
        "{who}: still answering after shutdown"
    );
    let mut gone = false;
    for _ in 0..200 {
        if !session.agent.handle.is_alive() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "{who}: the handle still says alive after shutdown");
    session.agent.handle.terminate().await;

    // 3. the control API refuses a stranger's token; a session whose next step fails
    //    terminates its agent.
    let session = AgentSession::launch(
        provider,
        request("conf#2", "conformance-token-the-jobs-0123456"),
    )
    .await
    .unwrap();
    let control = session.agent.control;
    let stranger = GatewayIdentity::generate().unwrap();
    match AgentClient::connect(
        "conf#2",
        control,
        "conformance-token-the-jobs-0123456",
        &stranger,
    )
    .await
    {
        Err(ClientError::Unreachable { .. }) => {}
        other => panic!("{who}: another gateway's certificate was served: {other:?}"),
    }
    match AgentClient::connect(
        "conf#2",
        control,
        "conformance-token-not-the-launchs",
        &GATEWAY,
    )
    .await
    {
        Err(ClientError::Impostor { .. }) => {}
        other => panic!("{who}: an agent without the launch token was taken in: {other:?}"),
    }
    let failed = session
        .then(async |_client: &AgentClient| Err::<(), _>("the install step failed"))
        .await;
    assert!(failed.is_err(), "{who}");
    assert!(
        eventually_gone(control).await,
        "{who}: left running after a failed step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_provider_conforms() {
    let provider = LocalProvider::new((env!("CARGO_BIN_EXE_skyx-agent").into(), Vec::new()));
    conformance(&provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_provider_conforms() {
    let provider = InProcessProvider::default();
    conformance(&provider).await;
    assert_eq!(provider.running(), Vec::<String>::new());
}
