//! What an agent does for the job installed on it: the roles of the control API's requests.
//!
//! An agent serves one job. Per route it is a *source* (reads dispatched chunks from the source
//! store, encodes them and sends them to the next hop), a *relay* (a listener whose deliveries
//! are forwarded, undecoded, to the next hop), or a *sink* (a listener whose deliveries, decoded
//! and verified end to end by the protocol, are written to the destination store). Everything
//! the gateway must know comes back as [`AgentEvent`]s in an [`EventLog`] it polls.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skyx_protocol::{ChunkKey, Dests, JobId, Role, SenderEvent};
use skyx_store::{ObjectStore, ObjectUrl, StoreConfig, StoreError};
use tokio::sync::mpsc;

pub use crate::events::EventLog;
use crate::fork::{Fork, ForkBranch};
use crate::hop::{HopError, HopSender, HopSenderConfig};
use crate::hop_auth::{HopGuard, HopKey};
use crate::hop_listener::{Delivery, HopListener};
pub use crate::job::CrashHook;
use crate::job::{Counters, Job, SourceOrder};
use crate::objects::ObjectWriter;
use crate::relay::relay;
use crate::sink::run_sink;
use crate::source::{SourceRoute, report_gave_up, run_source_route};
use skyx_agent_api::keys::{KEY_LEN, Secret};
use skyx_agent_api::tls::{AgentIdentity, TlsError};
use skyx_agent_api::wire::{
    AgentEvent, AgentMetrics, Branch, DEFAULT_SINK_RETRY_MS, Dispatch, EventsResponse, JobSpec,
    ListenRequest, ListenResponse, NextHop, ProbeListen, ProbeRequest, ProbeResult, RouteMetrics,
    RouteRequest, SinkObjects, SourceObject, Transport,
};

/// How an agent process is set up (its command line).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    /// The address data listeners bind to.
    pub data_bind: IpAddr,
    /// The address peers are told to connect to (defaults to `data_bind`).
    pub advertise: Option<IpAddr>,
    pub store: StoreConfig,
    /// Fault injection for tests: corrupt every Nth frame this agent sends.
    pub corrupt_every: Option<u64>,
    /// Fault injection for tests: a crash after handling a number of chunks in any role.
    pub crash_after_chunks: Option<CrashHook>,
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("no job is installed on this agent")]
    NoJob,
    #[error("job {0} is already installed on this agent")]
    JobInstalled(u64),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("route {0} is not known here")]
    UnknownRoute(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hop(#[from] HopError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error("cannot open a probe listener on {addr}: {source}")]
    ProbeListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl AgentError {
    /// Whether the gateway sent something wrong (HTTP 400) rather than the agent failing.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            AgentError::BadRequest(_)
                | AgentError::UnknownRoute(_)
                | AgentError::JobInstalled(_)
                | AgentError::NoJob
        )
    }
}

/// The agent: at most one job, its routes and listeners, its events and counters.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    job: Mutex<Option<Arc<Job>>>,
    pub events: Arc<EventLog>,
    counters: Arc<Counters>,
}

async fn open_store(url: &str, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, AgentError> {
    let url = ObjectUrl::parse(url).map_err(|e| AgentError::BadRequest(e.to_string()))?;
    Ok(skyx_store::open(&url, config).await?)
}

impl Agent {
    /// How this agent reaches its region's store.
    pub fn store_config(&self) -> &StoreConfig {
        &self.config.store
    }

    /// How to reach one end's store: the job's settings when the user configured that end
    /// (another account, endpoint, anonymous), with this agent's own credentials where they
    /// name none, else this agent's own settings; retries are always the agent's.
    fn end_settings(
        &self,
        given: Option<StoreConfig>,
        requests_per_second: Option<f64>,
    ) -> StoreConfig {
        let own = &self.config.store;
        let mut config = match given {
            Some(settings) => StoreConfig {
                retry: own.retry.clone(),
                // Told where the store is and not how to authenticate: as this agent.
                azure: settings.azure.or_credentials_of(&own.azure),
                ..settings
            },
            None => own.clone(),
        };
        config.retry.requests_per_second = requests_per_second.or(config.retry.requests_per_second);
        config
    }

    pub fn new(config: AgentConfig) -> Agent {
        Agent {
            counters: Arc::new(Counters {
                crash_after: config.crash_after_chunks.clone(),
                ..Default::default()
            }),
            config,
            job: Mutex::new(None),
            events: Arc::new(EventLog::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn job(&self) -> Result<Arc<Job>, AgentError> {
        self.job
            .lock()
            .expect("job lock")
            .clone()
            .ok_or(AgentError::NoJob)
    }

    /// `POST /v1/job`.
    pub async fn install(&self, spec: JobSpec) -> Result<(), AgentError> {
        if let Some(job) = self.job.lock().expect("job lock").as_ref() {
            return Err(AgentError::JobInstalled(job.id.0));
        }
        let identity = AgentIdentity::from_wire(JobId(spec.job), spec.identity);
        // Fail now, not at the first connection, if the identity is unusable.
        identity.server_config()?;
        let key = |what: &str, wire: &skyx_agent_api::wire::Base64| {
            Secret::from_wire(wire).ok_or_else(|| {
                AgentError::BadRequest(format!("the job's {what} is not {KEY_LEN} bytes"))
            })
        };
        let hop_key = key("hop key", &spec.hop_key)?;
        let chunk_key = match &spec.chunk_key {
            Some(wire) => Some(Arc::new(ChunkKey::new(&key("chunk key", wire)?.0))),
            None => None,
        };
        let guard = match spec.transport {
            Transport::Tcp => HopGuard::Handshake(Arc::new(HopKey::new(JobId(spec.job), &hop_key))),
            Transport::Tls | Transport::Quic => HopGuard::Tls(identity.clone()),
        };
        let source = match &spec.source_store {
            Some(url) => Some(
                open_store(
                    url,
                    &self.end_settings(spec.source_settings, spec.requests_per_second),
                )
                .await?,
            ),
            None => None,
        };
        let writer = match &spec.sink_store {
            Some(url) => Some(Arc::new(ObjectWriter::new(
                open_store(
                    url,
                    &StoreConfig {
                        write: spec.sink_write.clone(),
                        ..self.end_settings(spec.sink_settings, spec.requests_per_second)
                    },
                )
                .await?,
            ))),
            None => None,
        };
        let job = Arc::new(Job {
            id: JobId(spec.job),
            identity,
            transport: spec.transport,
            guard,
            chunk_key,
            compression: spec.compression,
            source,
            writer,
            read_pace: spec
                .read_bytes_per_second
                .map(|b| Arc::new(skyx_store::pace::Pacer::new(b))),
            read_concurrency: spec.read_concurrency.clamp(1, 256),
            write_concurrency: spec.write_concurrency.clamp(1, 256),
            sink_retry: Duration::from_millis(spec.sink_retry_ms.unwrap_or(DEFAULT_SINK_RETRY_MS)),
            routes: Mutex::new(HashMap::new()),
            wire: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            incompressible: Mutex::new(HashSet::new()),
        });
        let mut slot = self.job.lock().expect("job lock");
        if let Some(existing) = slot.as_ref() {
            return Err(AgentError::JobInstalled(existing.id.0));
        }
        *slot = Some(job);
        tracing::info!(agent = %self.config.name, job = spec.job, "job installed");
        Ok(())
    }

    fn hop_config(&self, next: &NextHop) -> HopSenderConfig {
        let connections = next.connections.clamp(1, 1024) as usize;
        let mut config = HopSenderConfig {
            connections,
            // Enough chunks held to keep every connection busy, bounded so memory is too:
            // at most 64 chunks per hop whatever the connection count.
            max_held: (connections * 2).clamp(8, 64),
            corrupt_every: self.config.corrupt_every,
            ..Default::default()
        };
        config.sender.window = 4;
        config
    }

    async fn connect_with_events(
        &self,
        job: &Job,
        next: &NextHop,
    ) -> Result<(HopSender, mpsc::UnboundedReceiver<SenderEvent>), AgentError> {
        let config = self.hop_config(next);
        Ok(match job.transport {
            Transport::Tcp | Transport::Tls => {
                HopSender::connect(next.addr, config, &job.guard).await?
            }
            Transport::Quic => HopSender::connect_quic(next.addr, config, &job.identity).await?,
        })
    }

    async fn bind(
        &self,
        job: &Job,
        role: Role,
        max_pending: usize,
    ) -> Result<(HopListener, mpsc::Receiver<Delivery>), AgentError> {
        let addr = SocketAddr::new(self.config.data_bind, 0);
        // A sink opens sealed chunks; a relay forwards them as they came.
        let opens_with = match role {
            Role::Sink => job.chunk_key.clone(),
            Role::Relay => None,
        };
        Ok(match job.transport {
            Transport::Tcp | Transport::Tls => {
                HopListener::bind(addr, job.id, role, opens_with, max_pending, &job.guard).await?
            }
            Transport::Quic => {
                HopListener::bind_quic(addr, job.id, role, opens_with, max_pending, &job.identity)
                    .await?
            }
        })
    }

    /// Connects to every branch of `onward` at once, counts their bytes under their route ids,
    /// and opens the fork over them; what a branch gives up reaches the gateway from here as it
    /// happens (a sink behind a relay is otherwise heard of only through landing timeouts).
    async fn open_fork(&self, job: &Job, onward: &[Branch]) -> Result<Fork, AgentError> {
        let hops = futures::future::try_join_all(
            onward
                .iter()
                .map(|b| self.connect_with_events(job, &b.next)),
        )
        .await?;
        let mut branches = Vec::with_capacity(onward.len());
        for (b, (hop, events)) in onward.iter().zip(hops) {
            let hop = Arc::new(hop);
            job.wire.lock().expect("wire").push((b.route, hop.clone()));
            branches.push(ForkBranch {
                route: b.route,
                dests: Dests(b.dests),
                hop,
                events,
            });
        }
        let log = self.events.clone();
        Ok(Fork::new(
            branches,
            Arc::new(move |route, down: &AtomicBool, e| report_gave_up(&log, route, down, e)),
        ))
    }

    /// `POST /v1/listen`: a relay or sink listener for one route.
    pub async fn listen(&self, req: ListenRequest) -> Result<ListenResponse, AgentError> {
        let job = self.job()?;
        let listener = if req.onward.is_empty() {
            let Some(writer) = job.writer.clone() else {
                return Err(AgentError::BadRequest(
                    "a sink listener needs the job's sink_store".into(),
                ));
            };
            let (listener, deliveries) = self.bind(&job, Role::Sink, job.write_concurrency).await?;
            tokio::spawn(run_sink(
                req.route,
                deliveries,
                writer,
                job.sink_retry,
                self.events.clone(),
                self.counters.clone(),
            ));
            listener
        } else {
            // As many chunks held as the roomiest branch holds: a fork waits on each branch.
            let max_pending = req
                .onward
                .iter()
                .map(|b| self.hop_config(&b.next).max_held)
                .max()
                .unwrap_or(1);
            let (listener, deliveries) = self.bind(&job, Role::Relay, max_pending).await?;
            let onward = self.open_fork(&job, &req.onward).await?;
            let (route, events) = (req.route, self.events.clone());
            let deliveries = counted(deliveries, self.counters.clone());
            tokio::spawn(async move {
                relay(deliveries, onward).await;
                events.push(AgentEvent::Warning {
                    message: format!("relay of route {route} stopped"),
                });
            });
            listener
        };
        let port = listener.local_addr.port();
        job.listeners.lock().expect("listeners").push(listener);
        let ip = self.config.advertise.unwrap_or(self.config.data_bind);
        Ok(ListenResponse {
            addr: SocketAddr::new(ip, port),
        })
    }

    /// `POST /v1/probe/listen`: a probe listener on the data address (no job needed).
    pub async fn probe_listen(&self, req: ProbeListen) -> Result<ListenResponse, AgentError> {
        if !(req.accept_for_s > 0.0 && req.accept_for_s <= crate::probe::MAX_PROBE_SECONDS * 2.0) {
            return Err(AgentError::BadRequest(format!(
                "accept_for_s {} must be in (0, {}]",
                req.accept_for_s,
                crate::probe::MAX_PROBE_SECONDS * 2.0
            )));
        }
        let addr = SocketAddr::new(self.config.data_bind, 0);
        let bound = crate::probe::listen(addr, Duration::from_secs_f64(req.accept_for_s))
            .await
            .map_err(|source| AgentError::ProbeListen { addr, source })?;
        let ip = self.config.advertise.unwrap_or(self.config.data_bind);
        Ok(ListenResponse {
            addr: SocketAddr::new(ip, bound.port()),
        })
    }

    /// `POST /v1/probe/send`: measure the path to another agent's probe listener.
    pub async fn probe_send(&self, req: ProbeRequest) -> Result<ProbeResult, AgentError> {
        use crate::probe::{MAX_PROBE_CONNECTIONS, MAX_PROBE_SECONDS};
        if req.connections == 0 || req.connections > MAX_PROBE_CONNECTIONS {
            return Err(AgentError::BadRequest(format!(
                "connections {} must be 1 to {MAX_PROBE_CONNECTIONS}",
                req.connections
            )));
        }
        if !(req.seconds > 0.0 && req.seconds <= MAX_PROBE_SECONDS) {
            return Err(AgentError::BadRequest(format!(
                "seconds {} must be in (0, {MAX_PROBE_SECONDS}]",
                req.seconds
            )));
        }
        Ok(crate::probe::probe(
            req.addr,
            req.connections,
            Duration::from_secs_f64(req.seconds),
        )
        .await?)
    }

    /// `POST /v1/route`: become the source of a route.
    pub async fn add_route(&self, req: RouteRequest) -> Result<(), AgentError> {
        let job = self.job()?;
        let Some(store) = job.source.clone() else {
            return Err(AgentError::BadRequest(
                "a source route needs the job's source_store".into(),
            ));
        };
        if job.routes.lock().expect("routes").contains_key(&req.route) {
            return Err(AgentError::BadRequest(format!(
                "route {} is already installed",
                req.route
            )));
        }
        if req.onward.is_empty() {
            return Err(AgentError::BadRequest(format!(
                "route {} has no next hop",
                req.route
            )));
        }
        let fork = self.open_fork(&job, &req.onward).await?;
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        job.routes
            .lock()
            .expect("routes")
            .insert(req.route, orders_tx);
        tokio::spawn(run_source_route(SourceRoute {
            route: req.route,
            job: job.clone(),
            store,
            fork,
            orders: orders_rx,
            events: self.events.clone(),
            counters: self.counters.clone(),
        }));
        Ok(())
    }

    /// `POST /v1/objects`.
    pub fn sink_objects(&self, req: SinkObjects) -> Result<(), AgentError> {
        let job = self.job()?;
        let Some(writer) = job.writer.as_ref() else {
            return Err(AgentError::BadRequest(
                "objects to write go to sinks".into(),
            ));
        };
        writer.update(req);
        Ok(())
    }

    /// `POST /v1/dispatch`.
    pub fn dispatch(&self, req: Dispatch) -> Result<(), AgentError> {
        let job = self.job()?;
        let routes = job.routes.lock().expect("routes");
        let Some(orders) = routes.get(&req.route) else {
            return Err(AgentError::UnknownRoute(req.route));
        };
        let objects: HashMap<u32, Arc<SourceObject>> = req
            .objects
            .into_iter()
            .map(|o| (o.object, Arc::new(o)))
            .collect();
        let mut checked = Vec::with_capacity(req.chunks.len());
        for order in req.chunks {
            let Some(object) = objects.get(&order.object) else {
                return Err(AgentError::BadRequest(format!(
                    "chunk {} names object {}, which the dispatch does not carry",
                    order.chunk, order.object
                )));
            };
            if order.offset + order.len > object.size {
                return Err(AgentError::BadRequest(format!(
                    "chunk {} ({}..{}) runs past the end of {} ({} bytes)",
                    order.chunk,
                    order.offset,
                    order.offset + order.len,
                    object.src_key,
                    object.size
                )));
            }
            checked.push(SourceOrder {
                order,
                object: object.clone(),
            });
        }
        // The route task ends only when the agent does; a closed channel means it is shutting
        // down, and the gateway will learn that from the agent's absence.
        for order in checked {
            let _ = orders.send(order);
        }
        Ok(())
    }

    /// `GET /v1/events`.
    pub async fn events(&self, after: u64, wait: Duration) -> EventsResponse {
        let (next, events) = self.events.since(after, wait).await;
        EventsResponse {
            next,
            events,
            metrics: self.metrics(),
        }
    }

    pub fn metrics(&self) -> AgentMetrics {
        let (cpu_seconds, peak_rss_bytes) = crate::usage::process_usage();
        let mut m = AgentMetrics {
            cpu_seconds,
            peak_rss_bytes,
            store_read_bytes: self.counters.store_read.load(Ordering::Relaxed),
            store_written_bytes: self.counters.store_written.load(Ordering::Relaxed),
            raw_bytes_sent: self.counters.raw_sent.load(Ordering::Relaxed),
            ..Default::default()
        };
        if let Ok(job) = self.job() {
            m.routes = job
                .wire
                .lock()
                .expect("wire")
                .iter()
                .map(|(route, hop)| RouteMetrics {
                    route: *route,
                    wire_bytes: hop.wire_bytes(),
                    resent_bytes: hop.resent_bytes(),
                })
                .collect();
            m.corrupt_chunks_received = job
                .listeners
                .lock()
                .expect("listeners")
                .iter()
                .map(|l| l.corrupt_chunks())
                .sum();
            m.objects_held_peak = job.writer.as_ref().map_or(0, |w| w.peak() as u64);
        }
        m
    }
}

impl Agent {
    /// Stops every listener (used at shutdown so peers see connections close).
    pub fn close(&self) {
        if let Ok(job) = self.job() {
            for l in job.listeners.lock().expect("listeners").iter() {
                l.close();
            }
        }
    }
}
/// Passes deliveries through, counting them (for fault injection).
fn counted(
    mut deliveries: mpsc::Receiver<Delivery>,
    counters: Arc<Counters>,
) -> mpsc::Receiver<Delivery> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(d) = deliveries.recv().await {
            counters.chunk_handled();
            if tx.send(d).await.is_err() {
                break;
            }
        }
    });
    rx
}
