//! Running a copy: provision agents, wire routes, dispatch chunks, finalize and verify objects,
//! journal progress, tear everything down.
//!
//! The decisions live in the pure parts ([`crate::tracker`] says which chunk goes where and
//! when an object is whole; [`crate::topology`] says which agents make which routes); this
//! module is the async driver around them. Its loop:
//! 1. keep every live route's window of chunks full (opening multipart uploads at the
//!    destination, and registering them with the sinks, before an object's first chunk goes);
//! 2. take agents' events (one poller task per agent, long-polling its control API): landed
//!    chunks are journaled, then fed to the tracker; chunks a source gave up go out again;
//! 3. complete and verify objects the tracker reports whole (bounded concurrency);
//! 4. replace agents that died and rebuild their routes, re-dispatching what they held.
//!
//! Whatever happens, every agent is shut down before `run_copy` returns.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use rand::Rng;
use skyx_agent::api::{
    AgentEvent, AgentMetrics, ChunkOrder, CompressionSpec, Dispatch, EventsResponse, IdentityWire,
    JobSpec, ListenRequest, NextHop, ObjectWire, RouteRequest, Transport, Uploads,
};
use skyx_agent::{AgentClient, ClientError, JobCa};
use skyx_protocol::{ChunkId, JobId};
use skyx_store::{MultipartUpload, ObjectStore, PartReceipt, StoreError, StoreLocation};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::chunker::{ChunkError, ChunkPolicy, ChunkSpec, ObjectEntry, chunk_size, plan_chunks};
use crate::journal::{Journal, JournalBatch, JournalError, JournalState, LandedChunk, fingerprint};
use crate::listing::{CopyItem, version_of};
use crate::provider::{LaunchRequest, LaunchedAgent, Provider, ProviderError};
use crate::topology::{AgentSlot, Topology};
use crate::tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub transport: Transport,
    pub compression: CompressionSpec,
    /// Preferred chunk size (raised as the destination's part rules require).
    pub chunk_size: u64,
    /// Chunks each source reads at once per route.
    pub read_concurrency: usize,
    /// Chunks each sink writes at once per route.
    pub write_concurrency: usize,
    /// Where the journal lives; `None`: no journal (no resume).
    pub journal: Option<PathBuf>,
    /// Continue the copy the journal describes instead of starting over.
    pub resume: bool,
    pub tracker: TrackerConfig,
    /// Agents replaced after dying, at most, before the copy gives up.
    pub max_replacements: u32,
    /// Objects completed and verified at once.
    pub finalize_concurrency: usize,
    /// Fault injection for tests: the process aborts (as if killed) right after journaling
    /// this many landed chunks.
    pub abort_after_landed: Option<u64>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            transport: Transport::Tcp,
            compression: CompressionSpec::Auto { level: 1 },
            chunk_size: 8 * 1024 * 1024,
            read_concurrency: 8,
            write_concurrency: 16,
            journal: None,
            resume: false,
            tracker: TrackerConfig::default(),
            max_replacements: 4,
            finalize_concurrency: 32,
            abort_after_landed: None,
        }
    }
}

/// Prices to meter the copy with (empty when regions are unknown).
#[derive(Debug, Clone, Default)]
pub struct Pricing {
    /// USD per GB leaving the first region for the second.
    pub egress_usd_per_gb: HashMap<(String, String), f64>,
    /// USD per hour of one agent VM in a region.
    pub vm_usd_per_hour: HashMap<String, f64>,
    /// Seconds each agent is billed beyond the time it ran (boot and minimum billing, as the
    /// planner priced them), so that metered and predicted cost count alike.
    pub vm_overhead_s: f64,
}

/// A copy to run.
#[derive(Debug, Clone)]
pub struct CopyJob {
    /// The source store (`s3://bucket`, `file://`, ...), as agents open it.
    pub src_store: String,
    pub dst_store: String,
    pub items: Vec<CopyItem>,
    pub topology: Topology,
    pub options: CopyOptions,
    pub pricing: Pricing,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(
        "cannot resume: the source or options changed since the interrupted copy (journal {journal}); run without --resume to start over"
    )]
    ResumeMismatch { journal: String },
    #[error("every route failed and no more agents may be replaced: {why}")]
    NoRoutes { why: String },
    #[error("interrupted; {resume}")]
    Interrupted { resume: String },
    #[error("agent setup failed: {0}")]
    Setup(String),
}

/// How an object was checked at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// Size, and the store's CRC32C equals the CRC32C of the chunks the source read.
    Crc32c,
    /// Size, and the store's MD5 equals the source store's MD5.
    Md5,
    /// Size, and the object read back has the CRC32C of the chunks the source read.
    ReadBack,
    /// Size only: neither store exposes a comparable checksum (every chunk was still
    /// verified end to end on its way).
    Size,
}

/// One object that did not make it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedObject {
    pub key: String,
    pub why: String,
}

/// Bytes and dollars on one region pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HopReport {
    pub src_region: String,
    pub dst_region: String,
    pub wire_bytes: u64,
    pub usd_per_gb: Option<f64>,
    pub egress_usd: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentReport {
    pub name: String,
    pub region: String,
    pub seconds: f64,
    pub usd_per_hour: Option<f64>,
    pub usd: f64,
    /// CPU the agent used, and its peak memory (as it last reported them).
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// Bytes it put on the wire (all its routes' outgoing hops).
    pub wire_bytes_out: u64,
}

/// What a copy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    pub job: u64,
    pub objects_total: u64,
    /// Completed and verified by this run.
    pub objects_copied: u64,
    /// Already complete from an earlier, interrupted run (`--resume`).
    pub objects_resumed: u64,
    pub objects_failed: Vec<FailedObject>,
    pub bytes_total: u64,
    /// Raw bytes sources read and sent in this run.
    pub bytes_sent: u64,
    /// Chunks that had landed before this run and were not sent again.
    pub chunks_skipped: u64,
    pub chunks_total: u64,
    pub elapsed_s: f64,
    /// Logical Gbps over this run.
    pub throughput_gbps: f64,
    /// Wire bytes leaving the sources / raw bytes sent.
    pub compression_ratio: f64,
    pub hops: Vec<HopReport>,
    pub agents: Vec<AgentReport>,
    pub egress_usd: f64,
    pub vm_usd: f64,
    pub total_usd: f64,
    pub verified: BTreeMap<String, u64>,
    pub agents_replaced: u32,
    pub corrupt_chunks_detected: u64,
    pub journal: Option<String>,
}

/// What the progress callback sees.
#[derive(Debug, Clone, Copy)]
pub struct ProgressSnapshot {
    pub progress: Progress,
    pub elapsed: Duration,
    /// Bytes put on the wire by the sources in this run.
    pub wire_bytes: u64,
}

struct AgentRt {
    slot: AgentSlot,
    client: AgentClient,
    launched: LaunchedAgent,
    alive: bool,
    started: Instant,
    ended: Option<Instant>,
    metrics: AgentMetrics,
    /// Consecutive failed polls.
    poll_failures: u32,
    poller: Option<tokio::task::JoinHandle<()>>,
}

struct RouteRt {
    /// Indices into the run's agents.
    agents: Vec<usize>,
    connections: Vec<u32>,
    alive: bool,
    /// A dead route already rebuilt under a new id (kept for metering what it carried).
    rebuilt: bool,
    window: usize,
}

type PollResult = (usize, Result<EventsResponse, ClientError>);

struct Run<'a> {
    job: &'a CopyJob,
    job_id: JobId,
    token: String,
    ca: JobCa,
    provider: &'a dyn Provider,
    dst: Arc<dyn ObjectStore>,
    src: Arc<dyn ObjectStore>,
    agents: Vec<AgentRt>,
    routes: Vec<RouteRt>,
    objects: Arc<Vec<ObjectWire>>,
    specs: Vec<ChunkSpec>,
    /// Object → its chunks' ids (contiguous: the chunker numbers chunks in object order).
    object_chunks: Vec<std::ops::Range<usize>>,
    /// Object → upload id, for multipart objects.
    uploads: HashMap<u32, String>,
    /// Object → part number → etag.
    receipts: HashMap<u32, BTreeMap<u32, String>>,
    /// Chunk → (raw CRC32C, raw length), from the sinks.
    crcs: Vec<Option<(u32, u64)>>,
    journal: Option<Journal>,
    polls: mpsc::UnboundedSender<PollResult>,
    replaced: u32,
    /// Where the next round of dispatch starts (rotates for fairness).
    next_route: usize,
    landed_this_run: u64,
    failed: Vec<FailedObject>,
    verified: BTreeMap<String, u64>,
    /// Objects already complete before this run.
    resumed_complete: HashSet<u32>,
}

pub fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs `job`: provisions its agents through `provider`, moves every object, verifies it at
/// `dst`, and tears the agents down. Objects that fail are listed in the report; the error is
/// for failures of the copy as a whole. Setting `cancel` to true stops the copy (agents torn
/// down, journal kept for `--resume`).
pub async fn run_copy(
    job: &CopyJob,
    provider: &dyn Provider,
    src: Arc<dyn ObjectStore>,
    dst: Arc<dyn ObjectStore>,
    progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
    mut cancel: watch::Receiver<bool>,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let policy = ChunkPolicy {
        target: job.options.chunk_size,
        min_part: dst.min_part_size(),
        max_parts: dst.max_parts(),
    };
    let entries: Vec<ObjectEntry> = job
        .items
        .iter()
        .map(|i| ObjectEntry {
            key: i.src_key.clone(),
            size: i.size,
        })
        .collect();
    let specs = plan_chunks(&entries, &policy)?;
    let objects: Arc<Vec<ObjectWire>> = Arc::new(
        job.items
            .iter()
            .map(|i| ObjectWire {
                src_key: i.src_key.clone(),
                dst_key: i.dst_key.clone(),
                size: i.size,
                chunk_size: chunk_size(i.size, &policy),
            })
            .collect(),
    );
    let fp = fingerprint(
        job.items.iter().map(|i| {
            (
                i.src_key.as_str(),
                i.dst_key.as_str(),
                i.size,
                i.version.as_str(),
            )
        }),
        policy.target,
    );
    let (journal, state) = open_journal(job, &dst, &fp).await?;

    let job_id = JobId(rand::rng().random::<u64>() >> 1);
    let (polls_tx, mut polls_rx) = mpsc::unbounded_channel();
    let mut run = Run {
        job,
        job_id,
        token: random_token(),
        ca: JobCa::generate(job_id).map_err(|e| CopyError::Setup(e.to_string()))?,
        provider,
        dst,
        src,
        agents: Vec::new(),
        routes: Vec::new(),
        objects,
        crcs: vec![None; specs.len()],
        object_chunks: object_chunk_ranges(&specs, job.items.len()),
        specs,
        uploads: HashMap::new(),
        receipts: HashMap::new(),
        journal,
        polls: polls_tx,
        replaced: 0,
        next_route: 0,
        landed_this_run: 0,
        failed: Vec::new(),
        verified: BTreeMap::new(),
        resumed_complete: state.complete.clone(),
    };
    for (object, (id, _)) in &state.uploads {
        run.uploads.insert(*object, id.clone());
    }
    for (chunk, l) in &state.landed {
        if let Some((part, etag)) = &l.part {
            run.receipts
                .entry(l.object)
                .or_default()
                .insert(*part, etag.clone());
        }
        if let Some(slot) = run.crcs.get_mut(*chunk as usize) {
            *slot = Some((l.raw_crc32c, l.raw_len));
        }
    }
    // Chunks of complete objects count as landed too.
    let mut landed: Vec<ChunkId> = state.landed.keys().map(|&c| ChunkId(c)).collect();
    landed.extend(
        run.specs
            .iter()
            .filter(|s| state.complete.contains(&s.object))
            .map(|s| s.id),
    );
    let chunks_skipped = run
        .specs
        .iter()
        .filter(|s| state.complete.contains(&s.object) || state.landed.contains_key(&s.id.0))
        .count() as u64;
    let tracker = Tracker::resume(
        run.specs.clone(),
        run.objects.len(),
        landed,
        job.options.tracker,
    );

    let result = async {
        // With every chunk landed already (a resume after the last landing, or nothing to
        // copy), objects only need completing: no agents.
        if !tracker.is_done() {
            run.setup().await?;
        }
        let tracker = run
            .drive(tracker, &mut polls_rx, progress, started, &mut cancel)
            .await?;
        run.final_metrics().await;
        Ok::<_, CopyError>(tracker)
    }
    .await;
    run.teardown().await;
    let tracker = result?;
    let report = run.report(&tracker, started, chunks_skipped);
    // A copy with failed objects keeps its journal, so `--resume` retries just those.
    if let Some(j) = run.journal.take()
        && report.objects_failed.is_empty()
    {
        j.remove();
    }
    Ok(report)
}

/// Opens (resume) or replaces the journal. Starting over aborts the uploads an earlier,
/// interrupted run left open, so no orphaned parts are billed.
async fn open_journal(
    job: &CopyJob,
    dst: &Arc<dyn ObjectStore>,
    fp: &str,
) -> Result<(Option<Journal>, JournalState), CopyError> {
    let Some(path) = &job.options.journal else {
        return Ok((None, JournalState::default()));
    };
    let existing = Journal::open(path)?;
    if job.options.resume
        && let Some((journal, state)) = existing
    {
        if state.fingerprint != fp {
            return Err(CopyError::ResumeMismatch {
                journal: path.display().to_string(),
            });
        }
        tracing::info!(journal = %path.display(), landed = state.landed.len(), complete = state.complete.len(), "resuming");
        return Ok((Some(journal), state));
    }
    if let Some((journal, state)) = existing {
        for (object, (id, key)) in &state.uploads {
            if !state.complete.contains(object) {
                let upload = MultipartUpload {
                    key: key.clone(),
                    upload_id: id.clone(),
                };
                if let Err(e) = dst.abort_multipart(&upload).await {
                    tracing::warn!(key, error = %e, "aborting an upload of an earlier interrupted copy failed");
                }
            }
        }
        journal.remove();
    }
    Ok((Some(Journal::create(path, fp)?), JournalState::default()))
}

impl Run<'_> {
    fn identity(&self, name: &str) -> Result<IdentityWire, CopyError> {
        let id = self
            .ca
            .issue(name)
            .map_err(|e| CopyError::Setup(e.to_string()))?;
        Ok(IdentityWire {
            cert_der_b64: b64(&id.cert),
            key_der_b64: b64(&id.key),
            ca_der_b64: b64(&id.ca),
        })
    }

    fn job_spec(&self, name: &str, source: bool, sink: bool) -> Result<JobSpec, CopyError> {
        Ok(JobSpec {
            job: self.job_id.0,
            identity: self.identity(name)?,
            transport: self.job.options.transport,
            compression: self.job.options.compression,
            source_store: source.then(|| self.job.src_store.clone()),
            sink_store: sink.then(|| self.job.dst_store.clone()),
            objects: if source || sink {
                self.objects.as_ref().clone()
            } else {
                Vec::new()
            },
            read_concurrency: self.job.options.read_concurrency,
            write_concurrency: self.job.options.write_concurrency,
        })
    }

    /// Takes a launched, installed agent into the run and starts polling it.
    fn adopt(&mut self, slot: AgentSlot, launched: LaunchedAgent) -> usize {
        let idx = self.agents.len();
        let client = AgentClient::new(slot.name(), launched.control, self.token.clone());
        let poller = tokio::spawn(poll_agent(idx, client.clone(), self.polls.clone()));
        self.agents.push(AgentRt {
            slot,
            client,
            launched,
            alive: true,
            started: Instant::now(),
            ended: None,
            metrics: AgentMetrics::default(),
            poll_failures: 0,
            poller: Some(poller),
        });
        idx
    }

    /// Launches the agent for `slot`, installs the job on it (as a source and/or sink, or a
    /// relay when neither) and returns its index.
    async fn launch(
        &mut self,
        slot: AgentSlot,
        source: bool,
        sink: bool,
    ) -> Result<usize, CopyError> {
        let spec = self.job_spec(&slot.name(), source, sink)?;
        let launched = launch_and_install(self.provider, &slot, &self.token, &spec).await?;
        Ok(self.adopt(slot, launched))
    }

    /// Connects a route's agents back to front (each listener must exist before its sender
    /// connects) and returns its id.
    async fn build_route(
        &mut self,
        agents: Vec<usize>,
        connections: Vec<u32>,
    ) -> Result<RouteId, CopyError> {
        let route = RouteId(self.routes.len() as u32);
        let sink = *agents.last().expect("route has a sink");
        let mut next = self.agents[sink]
            .client
            .listen(&ListenRequest {
                route: route.0,
                onward: None,
            })
            .await?
            .addr;
        // Objects with open uploads must be known to a new sink before chunks arrive.
        if !self.uploads.is_empty() {
            let uploads = Uploads {
                uploads: self
                    .uploads
                    .iter()
                    .map(|(o, id)| (*o, id.clone()))
                    .collect(),
            };
            self.agents[sink].client.register_uploads(&uploads).await?;
        }
        for hop in (1..agents.len() - 1).rev() {
            next = self.agents[agents[hop]]
                .client
                .listen(&ListenRequest {
                    route: route.0,
                    onward: Some(NextHop {
                        addr: next,
                        connections: connections[hop],
                    }),
                })
                .await?
                .addr;
        }
        self.agents[agents[0]]
            .client
            .add_route(&RouteRequest {
                route: route.0,
                next: NextHop {
                    addr: next,
                    connections: connections[0],
                },
            })
            .await?;
        let window = (connections[0] as usize * 4).clamp(32, 512);
        self.routes.push(RouteRt {
            agents,
            connections,
            alive: true,
            rebuilt: false,
            window,
        });
        Ok(route)
    }

    async fn setup(&mut self) -> Result<(), CopyError> {
        let topo = self.job.topology.clone();
        let (sources, sinks) = (topo.sources(), topo.sinks());
        let mut specs = Vec::with_capacity(topo.agents.len());
        for (i, slot) in topo.agents.iter().enumerate() {
            specs.push(self.job_spec(&slot.name(), sources.contains(&i), sinks.contains(&i))?);
        }
        // Launch and install every agent at once: launching is the slow part on real clouds.
        let (provider, token) = (self.provider, self.token.clone());
        let launched = futures::future::join_all(
            topo.agents
                .iter()
                .zip(&specs)
                .map(|(slot, spec)| launch_and_install(provider, slot, &token, spec)),
        )
        .await;
        let mut first_error = None;
        let mut index = HashMap::new();
        for (i, res) in launched.into_iter().enumerate() {
            match res {
                Ok(l) => {
                    index.insert(i, self.adopt(topo.agents[i].clone(), l));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for r in &topo.routes {
            let agents = r.agents.iter().map(|a| index[a]).collect();
            self.build_route(agents, r.connections.clone()).await?;
        }
        Ok(())
    }

    async fn drive(
        &mut self,
        mut tracker: Tracker,
        polls: &mut mpsc::UnboundedReceiver<PollResult>,
        progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
        started: Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Tracker, CopyError> {
        let mut finalizing: JoinSet<(u32, Result<Verification, String>)> = JoinSet::new();
        let mut ready: VecDeque<u32> = VecDeque::new();
        let mut last_progress = Instant::now() - Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.fill_windows(&mut tracker).await?;
            while let Some(e) = tracker.poll_event() {
                match e {
                    TrackerEvent::ObjectComplete { object } => {
                        if !self.resumed_complete.contains(&object) {
                            ready.push_back(object);
                        }
                    }
                    TrackerEvent::ObjectFailed {
                        object, attempts, ..
                    } => {
                        self.object_failed(
                            object,
                            format!("a chunk could not be delivered in {attempts} attempts"),
                        )
                        .await?;
                    }
                }
            }
            while finalizing.len() < self.job.options.finalize_concurrency.max(1) {
                let Some(object) = ready.pop_front() else {
                    break;
                };
                finalizing.spawn(self.finalize(object));
            }
            if last_progress.elapsed() >= Duration::from_millis(100) {
                progress(&self.snapshot(&tracker, started));
                last_progress = Instant::now();
            }
            if tracker.is_done() && ready.is_empty() && finalizing.is_empty() {
                progress(&self.snapshot(&tracker, started));
                return Ok(tracker);
            }
            tokio::select! {
                Some((agent, res)) = polls.recv() => {
                    let mut batch = vec![(agent, res)];
                    while let Ok(more) = polls.try_recv() {
                        batch.push(more);
                    }
                    self.handle_polls(batch, &mut tracker).await?;
                }
                Some(done) = finalizing.join_next(), if !finalizing.is_empty() => {
                    let (object, res) = done.expect("finalize does not panic");
                    match res {
                        Ok(v) => {
                            *self.verified.entry(format!("{v:?}").to_lowercase()).or_default() += 1;
                            if let Some(j) = &self.journal {
                                j.record(&JournalBatch { complete: vec![object], ..Default::default() })?;
                            }
                        }
                        Err(why) => {
                            tracker.handle_object_failed_after_landing(object);
                            self.object_failed(object, why).await?;
                        }
                    }
                }
                _ = tick.tick() => {
                    tracker.handle_tick(Instant::now());
                    self.check_agents(&mut tracker).await?;
                }
                _ = cancel.changed() => {
                    if *cancel.borrow() {
                        let resume = match &self.journal {
                            Some(_) => "run the same command with --resume to continue".to_string(),
                            None => "nothing was journaled; run the copy again".to_string(),
                        };
                        return Err(CopyError::Interrupted { resume });
                    }
                }
            }
        }
    }

    fn snapshot(&self, tracker: &Tracker, started: Instant) -> ProgressSnapshot {
        let wire_bytes = self
            .routes
            .iter()
            .enumerate()
            .map(|(r, route)| self.hop_wire_bytes(r, route.agents[0]))
            .sum();
        ProgressSnapshot {
            progress: tracker.progress(),
            elapsed: started.elapsed(),
            wire_bytes,
        }
    }

    fn hop_wire_bytes(&self, route: usize, agent: usize) -> u64 {
        self.agents[agent]
            .metrics
            .routes
            .iter()
            .filter(|m| m.route as usize == route)
            .map(|m| m.wire_bytes)
            .sum()
    }

    /// Keeps every live route's window of chunks full, spreading chunks over the routes in
    /// small batches (round robin) so that every route gets work even when there is little.
    async fn fill_windows(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        let now = Instant::now();
        let n = self.routes.len();
        if n == 0 {
            return Ok(());
        }
        let start = self.next_route % n;
        self.next_route = self.next_route.wrapping_add(1);
        let mut orders: Vec<Vec<ChunkSpec>> = vec![Vec::new(); n];
        loop {
            let mut progressed = false;
            for k in 0..n {
                let r = (start + k) % n;
                let route = &self.routes[r];
                if !route.alive {
                    continue;
                }
                let in_flight = tracker.in_flight_on(RouteId(r as u32)) + orders[r].len();
                let room = route.window.saturating_sub(in_flight);
                // Top up in batches, not chunk by chunk, unless the route is idle.
                if room == 0
                    || (orders[r].is_empty() && in_flight > 0 && room < (route.window / 4).min(16))
                {
                    continue;
                }
                // Two at a time per round: fine-grained round robin (a route's chunks of all
                // rounds still go out in one dispatch call).
                let batch = tracker.poll_dispatch(RouteId(r as u32), room.min(2), now);
                if !batch.is_empty() {
                    progressed = true;
                    orders[r].extend(batch);
                }
            }
            if !progressed {
                break;
            }
        }
        for (r, batch) in orders.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            self.open_uploads(&batch).await?;
            let source = self.routes[r].agents[0];
            let dispatch = Dispatch {
                route: r as u32,
                chunks: batch
                    .iter()
                    .map(|s| ChunkOrder {
                        chunk: s.id.0,
                        object: s.object,
                        offset: s.offset,
                        len: s.len,
                    })
                    .collect(),
            };
            if let Err(e) = self.agents[source].client.dispatch(&dispatch).await {
                tracing::warn!(route = r, error = %e, "dispatch failed; the route is given up");
                self.routes[r].alive = false;
                tracker.handle_route_failed(RouteId(r as u32));
            }
        }
        Ok(())
    }

    /// Opens the destination uploads of multipart objects in `batch` that have none yet,
    /// journals them and tells every live sink.
    async fn open_uploads(&mut self, batch: &[ChunkSpec]) -> Result<(), CopyError> {
        let mut need: Vec<u32> = batch
            .iter()
            .filter(|s| !s.whole_object && !self.uploads.contains_key(&s.object))
            .map(|s| s.object)
            .collect();
        need.sort_unstable();
        need.dedup();
        if need.is_empty() {
            return Ok(());
        }
        let dst = self.dst.clone();
        let objects = self.objects.clone();
        let opened: Vec<Result<(u32, MultipartUpload), StoreError>> =
            futures::stream::iter(need.into_iter().map(|o| {
                let (dst, objects) = (dst.clone(), objects.clone());
                async move {
                    let up = dst.create_multipart(&objects[o as usize].dst_key).await?;
                    Ok((o, up))
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        let mut batch = JournalBatch::default();
        let mut uploads = Uploads {
            uploads: Vec::new(),
        };
        let mut first_error = None;
        for r in opened {
            match r {
                Ok((o, up)) => {
                    batch
                        .uploads
                        .push((o, up.upload_id.clone(), up.key.clone()));
                    uploads.uploads.push((o, up.upload_id.clone()));
                    self.uploads.insert(o, up.upload_id);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Journal before any part can land, so a crash never leaves an unknown upload.
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        if let Some(e) = first_error {
            return Err(e.into());
        }
        let sinks: Vec<usize> = self
            .routes
            .iter()
            .filter(|r| r.alive)
            .map(|r| *r.agents.last().expect("sink"))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for s in sinks {
            if self.agents[s].alive
                && let Err(e) = self.agents[s].client.register_uploads(&uploads).await
            {
                tracing::warn!(agent = %self.agents[s].slot.name(), error = %e, "registering uploads failed");
            }
        }
        Ok(())
    }

    async fn handle_polls(
        &mut self,
        batch: Vec<PollResult>,
        tracker: &mut Tracker,
    ) -> Result<(), CopyError> {
        let mut journal = JournalBatch::default();
        let mut landed = Vec::new();
        let mut lost = Vec::new();
        let mut unreadable = Vec::new();
        let mut down = Vec::new();
        for (agent, res) in batch {
            let rt = &mut self.agents[agent];
            if !rt.alive {
                continue;
            }
            let resp = match res {
                Ok(r) => r,
                Err(e) => {
                    rt.poll_failures += 1;
                    tracing::debug!(agent = %rt.slot.name(), error = %e, "poll failed");
                    continue;
                }
            };
            rt.poll_failures = 0;
            rt.metrics = resp.metrics;
            for e in resp.events {
                match e {
                    AgentEvent::Landed {
                        chunk,
                        object,
                        part,
                        raw_len,
                        raw_crc32c,
                    } => {
                        if tracker.is_landed(ChunkId(chunk)) {
                            continue;
                        }
                        let part = part.map(|p| (p.part_number, p.etag));
                        journal.landed.push((
                            chunk,
                            LandedChunk {
                                object,
                                part: part.clone(),
                                raw_len,
                                raw_crc32c,
                            },
                        ));
                        if let Some((n, etag)) = part {
                            self.receipts.entry(object).or_default().insert(n, etag);
                        }
                        if let Some(slot) = self.crcs.get_mut(chunk as usize) {
                            *slot = Some((raw_crc32c, raw_len));
                        }
                        landed.push(ChunkId(chunk));
                    }
                    AgentEvent::Lost { chunk, route, why } => {
                        tracing::debug!(chunk, route, why, "chunk lost; sending it again");
                        lost.push((ChunkId(chunk), RouteId(route)));
                    }
                    AgentEvent::Unreadable { chunk, why, .. } => {
                        unreadable.push((ChunkId(chunk), why));
                    }
                    AgentEvent::RouteDown { route, why } => {
                        tracing::warn!(route, why, "route down");
                        down.push(route);
                    }
                    AgentEvent::Warning { message } => {
                        tracing::warn!(agent = %self.agents[agent].slot.name(), "{message}");
                    }
                }
            }
        }
        // Durable first: a landing acted on is a landing journaled.
        if let Some(j) = &self.journal {
            j.record(&journal)?;
        }
        self.landed_this_run += journal.landed.len() as u64;
        if let Some(limit) = self.job.options.abort_after_landed
            && self.landed_this_run >= limit
        {
            eprintln!("fault injection: the gateway aborts after {limit} landed chunks");
            std::process::abort();
        }
        for c in landed {
            tracker.handle_landed(c);
        }
        for (c, r) in lost {
            tracker.handle_chunk_lost(c, r);
        }
        for (c, why) in unreadable {
            let object = self.specs[c.0 as usize].object;
            tracker.handle_chunk_failed(c);
            self.note_failure(object, format!("unreadable at the source: {why}"));
        }
        for r in down {
            if let Some(route) = self.routes.get_mut(r as usize) {
                route.alive = false;
                tracker.handle_route_failed(RouteId(r));
            }
        }
        if !self.routes.iter().any(|r| r.alive) {
            self.repair(tracker).await?;
        }
        Ok(())
    }

    /// Marks agents that died (process gone, or unreachable for a while); returns them.
    fn find_dead_agents(&mut self) -> Vec<usize> {
        let mut died = Vec::new();
        for (i, rt) in self.agents.iter_mut().enumerate() {
            if rt.alive && (!rt.launched.handle.is_alive() || rt.poll_failures >= 5) {
                tracing::warn!(agent = %rt.slot.name(), id = %rt.launched.handle.id(), "agent lost");
                rt.alive = false;
                rt.ended = Some(Instant::now());
                if let Some(p) = rt.poller.take() {
                    p.abort();
                }
                died.push(i);
            }
        }
        died
    }

    /// Gives up the routes of agents that died and replaces them.
    async fn check_agents(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        let died = self.find_dead_agents();
        if died.is_empty() {
            return Ok(());
        }
        for (r, route) in self.routes.iter_mut().enumerate() {
            if route.alive && route.agents.iter().any(|a| died.contains(a)) {
                route.alive = false;
                tracker.handle_route_failed(RouteId(r as u32));
            }
        }
        self.repair(tracker).await
    }

    /// Rebuilds every dead route whose agents can be replaced: dead agents are relaunched
    /// in their region (once each) and the route is wired anew under a new id.
    async fn repair(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        let dead_routes: Vec<usize> = (0..self.routes.len())
            .filter(|&r| !self.routes[r].alive && !self.routes[r].rebuilt)
            .collect();
        let mut replacement: HashMap<usize, usize> = HashMap::new();
        for r in dead_routes {
            self.routes[r].rebuilt = true;
            let old = self.routes[r].agents.clone();
            let connections = self.routes[r].connections.clone();
            // A route may die before its agent's death is noticed (the next hop's connections
            // reset first), and wiring may find another agent gone: look again and retry.
            for _attempt in 0..3 {
                self.find_dead_agents();
                let Some(agents) = self.replace_dead(&old, &mut replacement).await else {
                    break;
                };
                match self.build_route(agents, connections.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "rebuilding a route failed");
                        // Give a dying process a moment to be seen as dead.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
        }
        let _ = tracker;
        if !self.routes.iter().any(|r| r.alive) {
            return Err(CopyError::NoRoutes {
                why: format!(
                    "{} agent(s) replaced already (--max-replacements {})",
                    self.replaced, self.job.options.max_replacements
                ),
            });
        }
        Ok(())
    }

    /// The route `old` with its dead agents replaced (each dead agent once, shared through
    /// `replacement`); `None` when the replacement budget is spent or a launch fails.
    async fn replace_dead(
        &mut self,
        old: &[usize],
        replacement: &mut HashMap<usize, usize>,
    ) -> Option<Vec<usize>> {
        let mut agents = Vec::with_capacity(old.len());
        for (pos, &a) in old.iter().enumerate() {
            if self.agents[a].alive {
                agents.push(a);
                continue;
            }
            if let Some(&n) = replacement.get(&a)
                && self.agents[n].alive
            {
                agents.push(n);
                continue;
            }
            if self.replaced >= self.job.options.max_replacements {
                return None;
            }
            self.replaced += 1;
            let mut slot = self.agents[a].slot.clone();
            slot.index += 100 * self.replaced;
            tracing::warn!(agent = %slot.name(), "launching a replacement agent");
            let (source, sink) = (pos == 0, pos == old.len() - 1);
            match self.launch(slot, source, sink).await {
                Ok(n) => {
                    replacement.insert(a, n);
                    agents.push(n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replacement failed");
                    return None;
                }
            }
        }
        Some(agents)
    }

    fn note_failure(&mut self, object: u32, why: String) {
        let key = self.objects[object as usize].src_key.clone();
        if !self.failed.iter().any(|f| f.key == key) {
            self.failed.push(FailedObject { key, why });
        }
    }

    /// Gives an object up: its upload is aborted and the journal forgets it, so a later
    /// `--resume` starts it over.
    async fn object_failed(&mut self, object: u32, why: String) -> Result<(), CopyError> {
        self.note_failure(object, why);
        if let Some(id) = self.uploads.remove(&object) {
            let upload = MultipartUpload {
                key: self.objects[object as usize].dst_key.clone(),
                upload_id: id,
            };
            if let Err(e) = self.dst.abort_multipart(&upload).await {
                tracing::warn!(key = %upload.key, error = %e, "aborting the upload of a failed object failed");
            }
        }
        self.receipts.remove(&object);
        if let Some(j) = &self.journal {
            let chunks = self.object_chunks[object as usize]
                .clone()
                .map(|c| c as u64)
                .collect();
            j.record(&JournalBatch {
                forget: vec![(object, chunks)],
                ..Default::default()
            })?;
        }
        Ok(())
    }

    /// Completes object `object` at the destination and verifies it.
    fn finalize(
        &self,
        object: u32,
    ) -> impl std::future::Future<Output = (u32, Result<Verification, String>)> + Send + 'static
    {
        let dst = self.dst.clone();
        let src = self.src.clone();
        let item = self.job.items[object as usize].clone();
        let wire = self.objects[object as usize].clone();
        let upload = self.uploads.get(&object).cloned();
        let parts: Vec<PartReceipt> = self
            .receipts
            .get(&object)
            .map(|m| {
                m.iter()
                    .map(|(&part_number, etag)| PartReceipt {
                        part_number,
                        etag: etag.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The object's CRC32C, combined from its chunks' in order (an empty object's is 0).
        let mut crc: Option<u32> = Some(0);
        for s in &self.specs[self.object_chunks[object as usize].clone()] {
            crc = match (crc, self.crcs[s.id.0 as usize]) {
                (Some(acc), Some((c, len))) => Some(crc32c::crc32c_combine(acc, c, len as usize)),
                _ => None,
            };
        }
        let dst_is_local = matches!(dst.location(), StoreLocation::Local);
        async move {
            let res = async {
                if let Some(upload_id) = upload {
                    let expected = wire.size.div_ceil(wire.chunk_size.max(1)) as usize;
                    if parts.len() != expected {
                        return Err(format!(
                            "{} of {expected} parts recorded; cannot complete",
                            parts.len()
                        ));
                    }
                    let upload = MultipartUpload {
                        key: wire.dst_key.clone(),
                        upload_id,
                    };
                    if let Err(e) = dst.complete_multipart(&upload, parts).await {
                        // An earlier run may have completed it and died before journaling
                        // that (the parts are gone now): what is at the destination decides.
                        if let Ok(v) = verify(dst.as_ref(), &item, crc, dst_is_local).await {
                            tracing::info!(key = %item.dst_key, "already completed by an earlier run");
                            return Ok(v);
                        }
                        let _ = dst.abort_multipart(&upload).await;
                        return Err(format!("completing the upload: {e}"));
                    }
                    // A multi-chunk object was read in pieces: make sure it did not change.
                    match src.head(&item.src_key).await {
                        Ok(m) if item.is_same_version(&m) => {}
                        Ok(m) => {
                            return Err(format!(
                                "changed at the source during the copy (listed as {} bytes, version {:?}; now {} bytes, version {:?})",
                                item.size,
                                item.version,
                                m.size,
                                version_of(&m)
                            ));
                        }
                        Err(e) => return Err(format!("re-checking the source: {e}")),
                    }
                }
                verify(dst.as_ref(), &item, crc, dst_is_local).await
            }
            .await;
            (object, res)
        }
    }

    /// Reads every live agent's counters once more: the last poll may predate the last bytes.
    async fn final_metrics(&mut self) {
        let reads = self
            .agents
            .iter()
            .map(|rt| {
                let (client, alive) = (rt.client.clone(), rt.alive);
                async move {
                    if alive {
                        client.metrics().await.ok()
                    } else {
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        for (rt, res) in self
            .agents
            .iter_mut()
            .zip(futures::future::join_all(reads).await)
        {
            if let Some(m) = res {
                rt.metrics = m;
            }
        }
    }

    async fn teardown(&mut self) {
        let stops = self.agents.iter_mut().map(|rt| async move {
            if let Some(p) = rt.poller.take() {
                p.abort();
            }
            if rt.alive {
                let _ = rt.client.shutdown().await;
            }
            rt.launched.handle.terminate().await;
            rt.ended.get_or_insert_with(Instant::now);
            rt.alive = false;
        });
        futures::future::join_all(stops).await;
    }

    fn report(&self, tracker: &Tracker, started: Instant, chunks_skipped: u64) -> CopyReport {
        let p = tracker.progress();
        let elapsed = started.elapsed().as_secs_f64();
        let mut hops: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut first_hop_wire = 0;
        for (r, route) in self.routes.iter().enumerate() {
            for (i, pair) in route.agents.windows(2).enumerate() {
                let bytes = self.hop_wire_bytes(r, pair[0]);
                if i == 0 {
                    first_hop_wire += bytes;
                }
                *hops
                    .entry((
                        self.agents[pair[0]].slot.region.clone(),
                        self.agents[pair[1]].slot.region.clone(),
                    ))
                    .or_default() += bytes;
            }
        }
        let hops: Vec<HopReport> = hops
            .into_iter()
            .map(|((a, b), bytes)| {
                let price = if a == b {
                    Some(0.0)
                } else {
                    self.job
                        .pricing
                        .egress_usd_per_gb
                        .get(&(a.clone(), b.clone()))
                        .copied()
                };
                HopReport {
                    egress_usd: price.unwrap_or(0.0) * bytes as f64 / 1e9,
                    src_region: a,
                    dst_region: b,
                    wire_bytes: bytes,
                    usd_per_gb: price,
                }
            })
            .collect();
        let agents: Vec<AgentReport> = self
            .agents
            .iter()
            .map(|rt| {
                let seconds = rt
                    .ended
                    .unwrap_or_else(Instant::now)
                    .duration_since(rt.started)
                    .as_secs_f64();
                let price = self
                    .job
                    .pricing
                    .vm_usd_per_hour
                    .get(&rt.slot.region)
                    .copied();
                AgentReport {
                    name: rt.slot.name(),
                    region: rt.slot.region.clone(),
                    seconds,
                    usd_per_hour: price,
                    usd: price.unwrap_or(0.0) * (seconds + self.job.pricing.vm_overhead_s) / 3600.0,
                    cpu_seconds: rt.metrics.cpu_seconds,
                    peak_rss_bytes: rt.metrics.peak_rss_bytes,
                    wire_bytes_out: rt.metrics.routes.iter().map(|r| r.wire_bytes).sum(),
                }
            })
            .collect();
        let bytes_sent: u64 = self.agents.iter().map(|a| a.metrics.raw_bytes_sent).sum();
        // (`+ 0.0`: an empty float sum is -0.0, which prints as "$-0.0000".)
        let egress_usd: f64 = hops.iter().map(|h| h.egress_usd).sum::<f64>() + 0.0;
        let vm_usd: f64 = agents.iter().map(|a| a.usd).sum::<f64>() + 0.0;
        let moved: u64 = p.bytes_landed;
        CopyReport {
            job: self.job_id.0,
            objects_total: p.objects_total,
            objects_copied: p
                .objects_complete
                .saturating_sub(self.resumed_complete.len() as u64),
            objects_resumed: self.resumed_complete.len() as u64,
            objects_failed: self.failed.clone(),
            bytes_total: p.bytes_total,
            bytes_sent,
            chunks_skipped,
            chunks_total: p.chunks_total,
            elapsed_s: elapsed,
            throughput_gbps: if elapsed > 0.0 {
                bytes_sent.min(moved) as f64 * 8.0 / 1e9 / elapsed
            } else {
                0.0
            },
            compression_ratio: if first_hop_wire > 0 {
                bytes_sent as f64 / first_hop_wire as f64
            } else {
                1.0
            },
            hops,
            agents,
            egress_usd,
            vm_usd,
            total_usd: egress_usd + vm_usd,
            verified: self.verified.clone(),
            agents_replaced: self.replaced,
            corrupt_chunks_detected: self
                .agents
                .iter()
                .map(|a| a.metrics.corrupt_chunks_received)
                .sum(),
            journal: self
                .journal
                .as_ref()
                .map(|j| j.path().display().to_string()),
        }
    }
}

/// Each object's range of chunk ids.
fn object_chunk_ranges(specs: &[ChunkSpec], objects: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = vec![0..0; objects];
    for (i, s) in specs.iter().enumerate() {
        let r = &mut ranges[s.object as usize];
        if r.start == r.end {
            *r = i..i + 1;
        } else {
            r.end = i + 1;
        }
    }
    ranges
}

/// Launches one agent and installs `spec` on it; an agent that cannot be installed is
/// terminated, never left running.
async fn launch_and_install(
    provider: &dyn Provider,
    slot: &AgentSlot,
    token: &str,
    spec: &JobSpec,
) -> Result<LaunchedAgent, CopyError> {
    let name = slot.name();
    let mut launched = provider
        .launch(LaunchRequest {
            name: name.clone(),
            instance: None,
            job: format!("{:016x}", spec.job),
            region: slot.region.clone(),
            token: token.to_string(),
        })
        .await?;
    let client = AgentClient::new(name.clone(), launched.control, token.to_string());
    let installed = async {
        let hello = client.hello().await?;
        if hello.api_version != skyx_agent::api::API_VERSION {
            return Err(CopyError::Setup(format!(
                "agent {name} speaks control API v{}, this gateway v{}",
                hello.api_version,
                skyx_agent::api::API_VERSION
            )));
        }
        client.install(spec).await?;
        Ok(())
    }
    .await;
    match installed {
        Ok(()) => Ok(launched),
        Err(e) => {
            launched.handle.terminate().await;
            Err(e)
        }
    }
}

/// Long-polls one agent's events for the run loop until aborted.
async fn poll_agent(idx: usize, client: AgentClient, out: mpsc::UnboundedSender<PollResult>) {
    let mut after = 0;
    loop {
        let res = client.events(after, Duration::from_millis(500)).await;
        let failed = res.is_err();
        if let Ok(r) = &res {
            after = r.next;
        }
        if out.send((idx, res)).is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Checks a completed object at the destination: its size always; its content by the best
/// checksum both sides expose.
async fn verify(
    dst: &dyn ObjectStore,
    item: &CopyItem,
    crc: Option<u32>,
    read_back: bool,
) -> Result<Verification, String> {
    let meta = dst
        .head(&item.dst_key)
        .await
        .map_err(|e| format!("not found at the destination after writing: {e}"))?;
    if meta.size != item.size {
        return Err(format!(
            "destination has {} bytes, the source {}",
            meta.size, item.size
        ));
    }
    if let (Some(want), Some(got)) = (crc, meta.crc32c) {
        return if want == got {
            Ok(Verification::Crc32c)
        } else {
            Err(format!(
                "destination CRC32C {got:08x} differs from the source's {want:08x}"
            ))
        };
    }
    if let (Some(want), Some(got)) = (item.md5, meta.md5) {
        return if want == got {
            Ok(Verification::Md5)
        } else {
            Err(format!(
                "destination MD5 {} differs from the source's {}",
                hex::encode(got),
                hex::encode(want)
            ))
        };
    }
    if read_back && let Some(want) = crc {
        let mut stream = dst
            .get_range(&item.dst_key, 0..item.size)
            .await
            .map_err(|e| format!("reading back: {e}"))?;
        let mut got = 0u32;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| format!("reading back: {e}"))?;
            got = crc32c::crc32c_append(got, &piece);
        }
        return if want == got {
            Ok(Verification::ReadBack)
        } else {
            Err(format!(
                "destination content (CRC32C {got:08x}) differs from the source's ({want:08x})"
            ))
        };
    }
    Ok(Verification::Size)
}
