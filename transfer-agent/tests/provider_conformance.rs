//! The provider conformance suite (`skyx_provision::conformance`) against the providers that
//! start agents on this machine: `LocalProvider` (agent processes of this crate's
//! `skyx-agent` binary) and `InProcessProvider` (agents as threads). The clouds' providers run
//! it in `tests/e2e/provider_conformance.rs`, on VMs booted as network namespaces.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use skyx_agent::in_process::InProcessProvider;
use skyx_agent_api::GatewayIdentity;
use skyx_provision::conformance::{Subject, conformance};
use skyx_provision::{LaunchRequest, LocalProvider, Provider};

static GATEWAY: LazyLock<Arc<GatewayIdentity>> =
    LazyLock::new(|| Arc::new(GatewayIdentity::generate().unwrap()));

fn request(n: usize, token: String) -> LaunchRequest {
    LaunchRequest {
        name: format!("conf#{n}"),
        job: "conformance".into(),
        region: "test:conformance".into(),
        instance: None,
        token,
        gateway: GATEWAY.clone(),
    }
}

fn subject(provider: &dyn Provider) -> Subject<'_> {
    Subject {
        provider,
        region: "test:conformance",
        request: &request,
        handle_sees_exit: true,
        gone_within: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_provider_conforms() {
    let provider = LocalProvider::new((env!("CARGO_BIN_EXE_skyx-agent").into(), Vec::new()));
    conformance(subject(&provider)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_provider_conforms() {
    let provider = InProcessProvider::default();
    conformance(subject(&provider)).await;
    assert_eq!(provider.running(), Vec::<String>::new());
}
