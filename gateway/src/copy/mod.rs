//! Running a copy: provision agents, wire routes, dispatch chunks, finalize and verify objects,
//! journal progress, tear everything down.
//!
//! The decisions live in the pure parts ([`crate::core::tracker`] says which chunk goes where and
//! when an object is whole; [`crate::core::topology`] says which agents make which routes); this
//! module is the async driver around them. The source listing streams in (a task forwards it
//! through a bounded queue) and objects are taken into the run's window only as there is room
//! (`admit.rs`): chunks waiting for a route, and objects held, stay under configured bounds,
//! whatever the size of the copy. Its loop:
//! 0. take objects in from the listing while the window has room (their journaled progress
//!    looked up on the way);
//! 1. keep every live route's window of chunks full (opening multipart uploads at the
//!    destination, and telling the route's sink of each object, before its first chunk goes);
//! 2. take agents' events (one poller task per agent, long-polling its control API): landed
//!    chunks are journaled, then fed to the tracker; chunks a source gave up go out again;
//! 3. complete and verify objects the tracker reports whole (bounded concurrency), journal
//!    them and let them go;
//! 4. replace agents that died and rebuild their routes, re-dispatching what they held.
//!
//! Whatever happens, every agent is shut down before `run_copy` returns.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use skyx_agent_api::wire::{
    AgentEvent, AgentMetrics, Branch, ChunkOrder, CompressionSpec, Dispatch, EventsResponse,
    IdentityWire, JobSpec, ListenRequest, NextHop, RouteRequest, SinkObject, SinkObjects,
    SourceObject, Transport,
};
use skyx_agent_api::{AgentClient, ClientError, GatewayIdentity, JobCa, JobKeys};
use skyx_protocol::{ChunkId, JobId};
use skyx_store::{
    MultipartUpload, ObjectStore, ObjectUrl, PartReceipt, Properties, StoreError, StoreLocation,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

mod admit;
mod cleanup;
mod dispatch;
mod finalize;
mod refine;
mod report;
mod server_side;
mod wiring;

use admit::{ActiveObject, Feed};

pub use refine::{ListedVolume, Replan, Replanned, Replanner, VolumeEstimate};
pub use report::{
    AgentReport, CopyReport, FailedObject, HopReport, Prediction, ProgressSnapshot, Refinement,
    Verification,
};
pub use server_side::{ServerSideJob, run_server_side};

use crate::core::chunker::{ChunkError, ChunkPolicy, ChunkSpec};
use crate::core::topology::{AgentSlot, RouteSpec, Topology};
use crate::core::tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};
use crate::journal::{Journal, JournalBatch, JournalError, JournalState, digest};
use crate::listing::{CopyItem, CopyItems, version_of};
use skyx_provision::{
    AgentSession, LaunchRequest, LaunchedAgent, Provider, ProviderError, SessionError,
};

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub transport: Transport,
    /// Chunks sealed end to end (sources seal, sinks open, relays forward ciphertext they
    /// hold no key to). Off only for benchmarks inside one trust domain: with the `tcp`
    /// transport, every byte then crosses the network in the clear.
    pub seal_chunks: bool,
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
    /// Objects held in the run's window at once, at most (taken in from the listing, not yet
    /// finished): with the chunks queued, what bounds the gateway's and the sinks' memory.
    pub window_objects: usize,
    /// `--tpslimit`: requests per second to each end's store, shared among the agents that
    /// use it.
    pub tps_limit: Option<f64>,
    /// `--bwlimit`: bytes per second read from the source, shared among the source agents.
    pub bw_limit: Option<u64>,
    /// How long a sink retries a write its store refused for a reason that may pass, before
    /// the chunk is sent again (across the paid hops) or its object fails; the gateway rides
    /// out the same window completing and checking an object.
    pub sink_retry: Duration,
    /// Writes of one chunk the destination refused (each after the sink's own retries)
    /// before its object fails.
    pub max_write_failures: u32,
    /// Fault injection for tests: a crash right after journaling a number of landed chunks.
    pub crash_after_landed: Option<CrashAfter>,
    /// Planning the route again as a streamed listing shows more of the volume (`refine.rs`);
    /// `None`: the topology given is kept whatever the listing shows.
    pub replan: Option<Replan>,
    /// Planning the route again without regions that have no capacity for an agent as the
    /// copy starts (`wiring.rs`), on the volume planned on or listed since; `None`: such a
    /// launch fails the copy.
    pub capacity_replan: Option<Replan>,
}

/// Fault injection: once `after` events have happened, `crash` runs. The binary's edge passes a
/// function that kills the process as SIGKILL would (tests in-process pass one that cancels);
/// a library never ends the process itself.
#[derive(Clone)]
pub struct CrashAfter {
    pub after: u64,
    pub crash: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for CrashAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrashAfter {{ after: {} }}", self.after)
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            transport: Transport::Tcp,
            seal_chunks: true,
            compression: CompressionSpec::Auto { level: 1 },
            chunk_size: 8 * 1024 * 1024,
            read_concurrency: 8,
            write_concurrency: 16,
            journal: None,
            resume: false,
            tracker: TrackerConfig::default(),
            max_replacements: 4,
            finalize_concurrency: 32,
            window_objects: 10_000,
            tps_limit: None,
            bw_limit: None,
            sink_retry: Duration::from_millis(skyx_agent_api::wire::DEFAULT_SINK_RETRY_MS),
            max_write_failures: 2,
            crash_after_landed: None,
            replan: None,
            capacity_replan: None,
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
    /// Each end's settings, handed to the agents that use that end, when the user configured
    /// it; `None`: agents use their own environment.
    pub src_settings: Option<skyx_store::StoreConfig>,
    pub dst_settings: Option<skyx_store::StoreConfig>,
    /// How the destination stores what sinks write (storage class, encryption).
    pub dst_write: skyx_store::WriteOptions,
    /// A broadcast's other destinations (`None`: a copy to one destination, `dst_*`).
    pub broadcast: Option<Broadcast>,
    pub topology: Topology,
    pub options: CopyOptions,
    pub pricing: Pricing,
}

/// Destinations a broadcast may have (each chunk names its own in a 16-bit set).
pub const MAX_DESTINATIONS: usize = skyx_protocol::Dests::MAX;

/// The destinations of a broadcast beyond the first (destination 0, the job's `dst_*`).
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Destination 0 as the user named it: each object's key there (the listing's) says
    /// where it goes at the others ([`crate::listing::rebase_key`]).
    pub first: ObjectUrl,
    /// The source named one object (not a prefix): how the listing placed it.
    pub source_is_object: bool,
    /// Destinations 1, 2, ...
    pub more: Vec<Destination>,
}

/// One more destination of a broadcast.
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: ObjectUrl,
    /// Its store, as agents open it (`s3://bucket`, `file://`, ...).
    pub store: String,
    pub settings: Option<skyx_store::StoreConfig>,
    pub write: skyx_store::WriteOptions,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Launch(#[from] SessionError),
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(
        "cannot resume: the copy's settings (chunk size, how the destination is written) changed since the interrupted copy, or its journal is from an older skyx (journal {journal}); run without --resume to start over"
    )]
    ResumeMismatch { journal: String },
    #[error("listing the source failed after {listed} objects: {source}; {resume}")]
    Listing {
        listed: u64,
        source: Box<StoreError>,
        resume: String,
    },
    #[error("every route failed: {why}; {resume}")]
    NoRoutes { why: String, resume: String },
    #[error("interrupted; {resume}")]
    Interrupted { resume: String },
    #[error("agent setup failed: {0}")]
    Setup(String),
    #[error("cannot broadcast: {0}")]
    Broadcast(String),
}

impl CopyError {
    /// The region and the cloud's words, when this is a launch the region had no capacity for.
    fn out_of_capacity(&self) -> Option<(String, String)> {
        match self {
            CopyError::Launch(SessionError::Provider(ProviderError::Capacity {
                region,
                why,
                ..
            })) => Some((region.clone(), why.clone())),
            _ => None,
        }
    }
}

struct AgentRt {
    slot: AgentSlot,
    /// The planned slot it fills (a replacement stands for the agent it replaced).
    stands_for: AgentSlot,
    /// It reads the source / writes a destination, which one (as installed).
    source: bool,
    sink: Option<usize>,
    client: AgentClient,
    launched: LaunchedAgent,
    alive: bool,
    started: Instant,
    ended: Option<Instant>,
    metrics: AgentMetrics,
    /// Consecutive failed polls.
    poll_failures: u32,
    poller: Option<tokio::task::JoinHandle<()>>,
    /// (a sink) Objects it was told of and not yet told to forget.
    sink_knows: HashSet<u32>,
    /// (a sink) Objects to tell it to forget with its next registration.
    sink_forget: Vec<u32>,
}

struct RouteRt {
    /// Its nodes, their agents (indices into the run's agents) and links.
    shape: RouteSpec,
    /// The id each link reports under, the link into node `i` at `i - 1`: the route's own on a
    /// chain (each agent has one way out), one per link on a tree (`Run::links`).
    links: Vec<u32>,
    alive: bool,
    /// Why it went down, as an agent on it said.
    down_why: Option<String>,
    /// A dead route already rebuilt under a new id (kept for metering what it carried).
    rebuilt: bool,
    /// A refined plan moved off it: it takes no more chunks (what it carries lands).
    drained: bool,
    window: usize,
}

impl RouteRt {
    /// It is given chunks: alive, and not drained by a refined plan.
    fn taking(&self) -> bool {
        self.alive && !self.drained
    }
}

type PollResult = (usize, Result<EventsResponse, ClientError>);

/// A listing already in memory, as a [`CopyItems`] stream.
pub fn items_of(items: Vec<CopyItem>) -> CopyItems {
    futures::stream::iter(items.into_iter().map(Ok)).boxed()
}

/// What went wrong with one chunk so far, to name the cause when its attempts run out.
#[derive(Default)]
struct ChunkTrouble {
    /// Writes the destination refused (see `CopyOptions::max_write_failures`).
    write_failures: u32,
    /// The latest reason it went out again, and whether that was the destination's refusal.
    last: Option<(String, bool)>,
}

struct Run<'a> {
    job: &'a CopyJob,
    job_id: JobId,
    /// The gateway's control identity: agents serve their control API to it alone.
    gateway: Arc<GatewayIdentity>,
    ca: JobCa,
    /// The job's hop key and chunk key (see `skyx_agent_api::keys`).
    keys: JobKeys,
    provider: &'a dyn Provider,
    /// The topology launched: the job's, or one planned around regions out of capacity.
    topology: Topology,
    /// Regions a launch found out of capacity: no plan made again goes there.
    refused: Vec<String>,
    /// The destinations' stores, destination `i` at `i` (one but for a broadcast).
    dsts: Vec<Arc<dyn ObjectStore>>,
    src: Arc<dyn ObjectStore>,
    agents: Vec<AgentRt>,
    routes: Vec<RouteRt>,
    /// The route of each tree link id (see `RouteRt::links`).
    links: HashMap<u32, usize>,
    policy: ChunkPolicy,
    /// The listing, as it streams in.
    feed: Feed,
    /// Objects taken in and not yet let go, by id.
    active: HashMap<u32, ActiveObject>,
    /// The most objects held at once.
    held_peak: u64,
    next_object: u32,
    next_chunk: u64,
    journal: Option<Journal>,
    /// Uploads earlier runs left open (source key → upload id, destination key) whose object
    /// the listing has not reached yet; what is left once it ends is aborted.
    earlier_uploads: HashMap<String, (String, String)>,
    polls: mpsc::UnboundedSender<PollResult>,
    replaced: u32,
    /// Where the next round of dispatch starts (rotates for fairness).
    next_route: usize,
    landed_this_run: u64,
    failed: Vec<FailedObject>,
    /// The source keys in `failed` (each object is named once).
    failed_keys: HashSet<String>,
    /// Objects that failed before being taken in (they cannot be cut into chunks).
    failed_unadmitted: u64,
    /// What went wrong with each chunk sent again (see `ChunkTrouble`).
    troubles: HashMap<u64, ChunkTrouble>,
    /// The destination's latest passing refusal of a write (its store down or throttling,
    /// after the sink's retries) and when: why the copy's chunks may be failing even where a
    /// chunk only met a busy hop.
    last_refusal: Option<(Instant, String)>,
    /// Upload id → (destination key, destination) of uploads still to abort (see
    /// `cleanup.rs`).
    pending_aborts: HashMap<String, (String, usize)>,
    verified: BTreeMap<String, u64>,
    /// Objects (and their bytes and chunks) an earlier run completed, skipped by `--resume`.
    resumed: (u64, u64, u64),
    /// Chunks an earlier run landed, not sent again.
    chunks_skipped: u64,
    /// (local destinations) Directories whose abandoned staging was swept, by destination,
    /// each with a key in it (what the store's sweep takes).
    swept_dirs: HashMap<(usize, String), String>,
    /// Prices to meter with: the job's, and those of regions refined plans added.
    pricing: Pricing,
    /// When to plan again (once the first milestone is checked).
    milestones: Option<crate::core::replan::Milestones>,
    /// A refinement whose agents are being launched.
    refining: Option<refine::PendingRefinement<'a>>,
    refinements: Vec<Refinement>,
}

/// Runs `job`: provisions its agents through `provider`, moves every object of `items` as the
/// listing streams in, verifies each at `dst`, and tears the agents down. Objects that fail are listed in the report; the error is
/// for failures of the copy as a whole. Setting `cancel` to true stops the copy (agents torn
/// down, journal kept for `--resume`).
pub async fn run_copy(
    job: &CopyJob,
    items: CopyItems,
    provider: &dyn Provider,
    src: Arc<dyn ObjectStore>,
    dst: Arc<dyn ObjectStore>,
    progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
    cancel: watch::Receiver<bool>,
) -> Result<CopyReport, CopyError> {
    run_broadcast(job, items, provider, src, vec![dst], progress, cancel).await
}

/// As [`run_copy`], to every destination of `dsts` at once (destination `i`'s store at `i`;
/// the job's `broadcast` names those past the first): chunks are read once and forked where
/// the topology's trees fork, and an object is done once every destination verified it.
/// A broadcast keeps no journal, and does not plan again as the listing streams.
pub async fn run_broadcast(
    job: &CopyJob,
    items: CopyItems,
    provider: &dyn Provider,
    src: Arc<dyn ObjectStore>,
    dsts: Vec<Arc<dyn ObjectStore>>,
    progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
    mut cancel: watch::Receiver<bool>,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    check_destinations(job, dsts.len())?;
    // Chunks are cut once for every destination: the largest part floor, the fewest parts.
    let policy = ChunkPolicy {
        target: job.options.chunk_size,
        min_part: dsts.iter().map(|d| d.min_part_size()).max().unwrap_or(0),
        max_parts: dsts.iter().map(|d| d.max_parts()).min().unwrap_or(u32::MAX),
    };
    if policy.target > crate::core::chunker::MAX_CHUNK {
        return Err(ChunkError::ChunkTooLarge {
            chunk: policy.target,
        }
        .into());
    }
    // What decides how objects are cut and written: progress made under other settings is
    // not taken over.
    let settings = digest([
        policy.target.to_le_bytes().to_vec(),
        policy.min_part.to_le_bytes().to_vec(),
        policy.max_parts.to_le_bytes().to_vec(),
        format!("{:?}", job.dst_write).into_bytes(),
    ]);
    let (journal, state) = open_journal(job, &settings).await?;

    let job_id = JobId(rand::rng().random::<u64>() >> 1);
    let (polls_tx, mut polls_rx) = mpsc::unbounded_channel();
    let mut run = Run {
        job,
        job_id,
        gateway: Arc::new(
            GatewayIdentity::generate().map_err(|e| CopyError::Setup(e.to_string()))?,
        ),
        ca: JobCa::generate(job_id).map_err(|e| CopyError::Setup(e.to_string()))?,
        keys: JobKeys::generate(job.options.seal_chunks),
        provider,
        topology: job.topology.clone(),
        refused: Vec::new(),
        dsts,
        src,
        agents: Vec::new(),
        routes: Vec::new(),
        links: HashMap::new(),
        policy,
        feed: Feed::start(items),
        active: HashMap::new(),
        held_peak: 0,
        next_object: 0,
        next_chunk: 0,
        journal,
        earlier_uploads: state.open_uploads,
        polls: polls_tx,
        replaced: 0,
        next_route: 0,
        landed_this_run: 0,
        failed: Vec::new(),
        failed_keys: HashSet::new(),
        failed_unadmitted: 0,
        troubles: HashMap::new(),
        last_refusal: None,
        pending_aborts: state
            .pending_aborts
            .into_iter()
            .map(|(id, key)| (id, (key, 0)))
            .collect(),
        verified: BTreeMap::new(),
        resumed: (0, 0, 0),
        chunks_skipped: 0,
        swept_dirs: HashMap::new(),
        pricing: job.pricing.clone(),
        milestones: None,
        refining: None,
        refinements: Vec::new(),
    };
    let mut tracker = Tracker::broadcast(job.options.tracker, run.dsts.len());

    // Whatever earlier runs left: uploads to abort (and, locally, staging no one owns, swept
    // as the listing reaches each directory).
    run.retry_pending_aborts().await?;
    let result = async {
        // Agents start only once there is something to send: a copy whose every object is
        // already in place (a resume after the last landing, or nothing to copy) needs none.
        run.admit_until_work(&mut tracker, &mut cancel).await?;
        if !tracker.is_done() || !run.feed.ended() {
            run.setup(&cancel).await?;
        }
        run.drive(&mut tracker, &mut polls_rx, progress, started, &mut cancel)
            .await?;
        run.abort_unlisted_uploads().await?;
        run.final_metrics().await;
        Ok::<_, CopyError>(())
    }
    .await;
    run.feed.stop();
    // Agents a refinement was launching are taken in, so the teardown reaches them.
    run.settle_refinement().await;
    run.teardown().await;
    // The agents are gone: what they were writing when they died is no one's now.
    run.sweep_staging_again().await;
    let still_pending = run.retry_pending_aborts().await;
    // The copy's own error comes first (an interrupt stays an interrupt).
    result?;
    let still_pending = still_pending?;
    let report = run.report(&tracker, started);
    // A copy with failed objects keeps its journal, so `--resume` retries just those; so does
    // one with uploads it could not abort, so the next run retries them.
    if still_pending > 0 {
        tracing::warn!(
            uploads = still_pending,
            "uploads could not be aborted; the next run of this copy retries"
        );
    }
    if let Some(j) = run.journal.take()
        && report.objects_failed.is_empty()
        && still_pending == 0
    {
        j.remove();
    }
    Ok(report)
}

/// Whether the job's destinations, its stores (`stores` of them) and its topology agree; a
/// broadcast's limits (no journal, no planning again) are checked here too.
fn check_destinations(job: &CopyJob, stores: usize) -> Result<(), CopyError> {
    let named = 1 + job.broadcast.as_ref().map_or(0, |b| b.more.len());
    let bad = |why: String| Err(CopyError::Broadcast(why));
    if stores != named {
        return bad(format!(
            "{named} destinations named, {stores} stores opened"
        ));
    }
    if named > MAX_DESTINATIONS {
        return bad(format!(
            "{named} destinations; a broadcast has at most {MAX_DESTINATIONS}"
        ));
    }
    job.topology
        .check()
        .map_err(|e| CopyError::Setup(format!("the topology: {e}")))?;
    for (r, route) in job.topology.routes.iter().enumerate() {
        let mut written: Vec<usize> = route.sinks.iter().map(|&(_, d)| d).collect();
        written.sort_unstable();
        if written != (0..named).collect::<Vec<_>>() {
            return bad(format!(
                "route {r} writes destinations {written:?}; every route writes each of the copy's {named} once"
            ));
        }
    }
    if named > 1 && (job.options.journal.is_some() || job.options.resume) {
        return bad("a broadcast keeps no journal, so it cannot be resumed".into());
    }
    if named > 1 && (job.options.replan.is_some() || job.options.capacity_replan.is_some()) {
        return bad("a broadcast is planned once, before it starts".into());
    }
    Ok(())
}

/// Opens the journal, or starts a new one. An earlier run's journal under the same settings
/// is taken over whether or not `--resume` is given: what decides is each object's record
/// (`admit.rs`); `--resume` only lets objects it completed be skipped. Under other settings
/// (or from an older skyx) `--resume` is refused; without it the copy starts a new journal, and
/// the uploads the old one left open become aborts to do, so no orphaned parts are billed.
async fn open_journal(
    job: &CopyJob,
    settings: &str,
) -> Result<(Option<Journal>, JournalState), CopyError> {
    let Some(path) = &job.options.journal else {
        return Ok((None, JournalState::default()));
    };
    let mut carried = JournalBatch::default();
    match Journal::open(path)? {
        Some((Some(journal), state)) if state.settings == settings => {
            tracing::info!(journal = %path.display(), open_uploads = state.open_uploads.len(), "taking over the journal of an earlier run");
            return Ok((Some(journal), state));
        }
        Some(_) if job.options.resume => {
            return Err(CopyError::ResumeMismatch {
                journal: path.display().to_string(),
            });
        }
        Some((journal, state)) => {
            carried.abort_later.extend(state.open_uploads.into_values());
            carried.abort_later.extend(state.pending_aborts);
            drop(journal);
        }
        None => {}
    }
    let journal = Journal::create(path, settings)?;
    journal.record(&carried)?;
    let state = JournalState {
        pending_aborts: carried.abort_later.into_iter().collect(),
        ..JournalState::default()
    };
    Ok((Some(journal), state))
}
