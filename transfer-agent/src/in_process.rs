//! Agents inside this process, for tests of the gateway: [`InProcessProvider`] is a
//! `skyx_provision::Provider` whose agents run the real agent code (control API, hops, stores)
//! on loopback, each on a tokio runtime of its own in a thread of its own.
//!
//! A runtime per agent is what makes a kill faithful: a crash
//! ([`InProcessProvider::crash_after_chunks`]) or terminating the handle shuts the agent's
//! runtime down, which drops every task and socket the agent had, as the end of a process
//! would. An agent sharing the test's runtime would leave its sending tasks running after its
//! control API was gone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skyx_agent_api::ControlIdentity;
use skyx_provision::{AgentHandle, LaunchRequest, LaunchedAgent, Provider, ProviderError};
use skyx_store::StoreConfig;
use tokio::sync::{Notify, oneshot};

use crate::agent::{Agent, AgentConfig, CrashHook};
use crate::control::{Activity, Control, serve};
use crate::stage::StageSlot;

/// Stops one agent: shared by its handle and its crash hook.
type Stop = Arc<Mutex<Option<oneshot::Sender<()>>>>;

/// Launches agents as threads of this process. Every agent opens stores with `store`.
#[derive(Debug, Clone, Default)]
pub struct InProcessProvider {
    pub store: StoreConfig,
    /// Each launch (`name@n`) and whether its thread has ended.
    agents: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
    /// Agent name → chunks after which its first launch dies.
    crashes: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl InProcessProvider {
    pub fn new(store: StoreConfig) -> Self {
        InProcessProvider {
            store,
            ..Default::default()
        }
    }

    /// The first agent launched as `name` dies, as if killed, once it has handled `chunks`
    /// chunks in any role; its replacement (same name) lives.
    pub fn crash_after_chunks(&self, name: &str, chunks: u64) {
        self.crashes
            .lock()
            .expect("crashes")
            .insert(name.to_string(), chunks);
    }

    /// Agents launched and still running.
    pub fn running(&self) -> Vec<String> {
        let agents = self.agents.lock().expect("agents");
        agents
            .iter()
            .filter(|(_, done)| !done.load(Ordering::SeqCst))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Agents launched so far, running or not.
    pub fn launched(&self) -> usize {
        self.agents.lock().expect("agents").len()
    }
}

#[derive(Debug)]
struct InProcessAgent {
    name: String,
    stop: Stop,
    done: Arc<AtomicBool>,
}

#[async_trait]
impl AgentHandle for InProcessAgent {
    fn id(&self) -> String {
        format!("thread of {}", self.name)
    }

    fn is_alive(&mut self) -> bool {
        !self.done.load(Ordering::SeqCst)
    }

    async fn terminate(&mut self) {
        if let Some(stop) = self.stop.lock().expect("stop").take() {
            let _ = stop.send(());
        }
        while !self.done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait]
impl Provider for InProcessProvider {
    fn name(&self) -> &str {
        "in-process"
    }

    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
        // Names repeat when an agent is replaced: the registry keeps each launch.
        let key = {
            let agents = self.agents.lock().expect("agents");
            let launch = format!("{}@", req.name);
            let n = agents.keys().filter(|k| k.starts_with(&launch)).count();
            format!("{}@{n}", req.name)
        };
        let (ready_tx, ready_rx) = oneshot::channel::<std::io::Result<SocketAddr>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stop: Stop = Arc::new(Mutex::new(Some(stop_tx)));
        let crash = self.crashes.lock().expect("crashes").remove(&req.name);
        let config = AgentConfig {
            name: req.name.clone(),
            data_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: None,
            store: self.store.clone(),
            corrupt_every: None,
            crash_after_chunks: crash.map(|after| {
                let stop = stop.clone();
                CrashHook {
                    after,
                    crash: Arc::new(move || {
                        if let Some(s) = stop.lock().expect("stop").take() {
                            let _ = s.send(());
                        }
                    }),
                }
            }),
        };
        let done = Arc::new(AtomicBool::new(false));
        let thread_done = done.clone();
        let token = req.token.clone();
        let (identity, tls) = crate::control::identity_for(req.gateway.cert()).map_err(|e| {
            ProviderError::NotReady {
                agent: req.name.clone(),
                why: format!("its control identity: {e}"),
            }
        })?;
        let spawned = std::thread::Builder::new()
            .name(format!("agent {}", req.name))
            .spawn(move || {
                run_agent(config, (token, identity, tls), ready_tx, stop_rx);
                thread_done.store(true, Ordering::SeqCst);
            });
        let not_ready = |why: String| ProviderError::NotReady {
            agent: req.name.clone(),
            why,
        };
        if let Err(e) = spawned {
            return Err(not_ready(format!("cannot start its thread: {e}")));
        }
        let control = match ready_rx.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(not_ready(format!("cannot listen: {e}"))),
            Err(_) => return Err(not_ready("its runtime failed to start".into())),
        };
        self.agents
            .lock()
            .expect("agents")
            .insert(key, done.clone());
        Ok(LaunchedAgent {
            name: req.name.clone(),
            region: req.region,
            control,
            handle: Box::new(InProcessAgent {
                name: req.name,
                stop,
                done,
            }),
        })
    }
}

/// One agent's life on its own runtime: serve the control API until the gateway asks it to
/// shut down or it is stopped, then drop the runtime and everything on it.
fn run_agent(
    config: AgentConfig,
    (token, identity, tls): (String, Arc<ControlIdentity>, Arc<rustls::ServerConfig>),
    ready: oneshot::Sender<std::io::Result<SocketAddr>>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let work = std::env::temp_dir().join(format!(
        "skyx-in-process-{}-{}",
        std::process::id(),
        config.name.replace(['/', ':', '#'], "_")
    ));
    runtime.block_on(async move {
        let listener =
            match tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
        let addr = listener.local_addr();
        let agent = Arc::new(Agent::new(config));
        let shutdown = Arc::new(Notify::new());
        let control = Control {
            agent: agent.clone(),
            token: token.into(),
            identity,
            activity: Arc::new(Activity::default()),
            shutdown: shutdown.clone(),
            stage: Arc::new(StageSlot::new(work)),
        };
        let server = tokio::spawn(serve(listener, tls, control));
        if ready.send(addr).is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.notified() => {
                // Let the answer to the shutdown request leave.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = stop => {}
        }
        agent.close();
        server.abort();
    });
    // Every task and socket of this agent ends here, as with a process that exits.
    runtime.shutdown_background();
}
