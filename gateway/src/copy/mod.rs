//! Running a copy: provision agents, wire routes, dispatch chunks, finalize and verify objects,
//! journal progress, tear everything down.
//!
//! The decisions live in the pure parts ([`crate::core::tracker`] says which chunk goes where and
//! when an object is whole; [`crate::core::topology`] says which agents make which routes); this
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

use futures::StreamExt;
use rand::Rng;
use skyx_agent_api::wire::{
    AgentEvent, AgentMetrics, ChunkOrder, CompressionSpec, Dispatch, EventsResponse, IdentityWire,
    JobSpec, ListenRequest, NextHop, ObjectWire, RouteRequest, Transport, Uploads,
};
use skyx_agent_api::{AgentClient, ClientError, JobCa};
use skyx_protocol::{ChunkId, JobId};
use skyx_store::{
    MultipartUpload, ObjectStore, PartReceipt, Properties, StoreError, StoreLocation,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

mod cleanup;
mod dispatch;
mod finalize;
mod report;
mod server_side;
mod wiring;

use finalize::object_chunk_ranges;

pub use report::{
    AgentReport, CopyReport, FailedObject, HopReport, ProgressSnapshot, Verification,
};
pub use server_side::{ServerSideJob, run_server_side};

use crate::core::chunker::{
    ChunkError, ChunkPolicy, ChunkSpec, ObjectEntry, chunk_size, plan_chunks,
};
use crate::core::topology::{AgentSlot, Topology};
use crate::core::tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};
use crate::journal::{Journal, JournalBatch, JournalError, JournalState, LandedChunk, fingerprint};
use crate::listing::{CopyItem, version_of};
use skyx_provision::{AgentSession, LaunchRequest, LaunchedAgent, Provider, SessionError};

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
    /// `--tpslimit`: requests per second to each end's store, shared among the agents that
    /// use it.
    pub tps_limit: Option<f64>,
    /// `--bwlimit`: bytes per second read from the source, shared among the source agents.
    pub bw_limit: Option<u64>,
    /// How long a sink retries a write its store refused for a reason that may pass, before
    /// the chunk is sent again (across the paid hops) or its object fails.
    pub sink_retry: Duration,
    /// Writes of one chunk the destination refused (each after the sink's own retries)
    /// before its object fails.
    pub max_write_failures: u32,
    /// Fault injection for tests: a crash right after journaling a number of landed chunks.
    pub crash_after_landed: Option<CrashAfter>,
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
            compression: CompressionSpec::Auto { level: 1 },
            chunk_size: 8 * 1024 * 1024,
            read_concurrency: 8,
            write_concurrency: 16,
            journal: None,
            resume: false,
            tracker: TrackerConfig::default(),
            max_replacements: 4,
            finalize_concurrency: 32,
            tps_limit: None,
            bw_limit: None,
            sink_retry: Duration::from_millis(skyx_agent_api::wire::DEFAULT_SINK_RETRY_MS),
            max_write_failures: 2,
            crash_after_landed: None,
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
    Launch(#[from] SessionError),
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
    #[error("every route failed: {why}; {resume}")]
    NoRoutes { why: String, resume: String },
    #[error("interrupted; {resume}")]
    Interrupted { resume: String },
    #[error("agent setup failed: {0}")]
    Setup(String),
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
    /// Why it went down, as an agent on it said.
    down_why: Option<String>,
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
    /// Objects whose destination upload could not be opened: failed, their chunks dropped.
    refused_uploads: HashSet<u32>,
    /// Object → MD5 of its content, for objects written whole (from the sinks).
    whole_md5s: HashMap<u32, [u8; 16]>,
    journal: Option<Journal>,
    polls: mpsc::UnboundedSender<PollResult>,
    replaced: u32,
    /// Where the next round of dispatch starts (rotates for fairness).
    next_route: usize,
    landed_this_run: u64,
    failed: Vec<FailedObject>,
    /// Writes the destination refused, per chunk (see `CopyOptions::max_write_failures`).
    write_failures: HashMap<u64, u32>,
    /// Upload id → destination key of uploads still to abort (see `cleanup.rs`).
    pending_aborts: HashMap<String, String>,
    verified: BTreeMap<String, u64>,
    /// Objects already complete before this run.
    resumed_complete: HashSet<u32>,
}

pub fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
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
                version: i.etag.clone(),
                properties: i.properties.clone(),
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
    let (journal, state) = open_journal(job, &fp).await?;

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
        whole_md5s: HashMap::new(),
        refused_uploads: HashSet::new(),
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
        write_failures: HashMap::new(),
        pending_aborts: state.pending_aborts.clone(),
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

    // Whatever earlier runs left: uploads to abort, and (locally) staging no one owns.
    run.retry_pending_aborts().await?;
    run.sweep_staging().await;
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
    // The agents are gone: what they were writing when they died is no one's now.
    run.sweep_staging().await;
    let still_pending = run.retry_pending_aborts().await;
    // The copy's own error comes first (an interrupt stays an interrupt).
    let tracker = result?;
    let still_pending = still_pending?;
    let report = run.report(&tracker, started, chunks_skipped);
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

/// Opens (resume) or replaces the journal. Starting over, the uploads an earlier, interrupted
/// run left open become aborts to do, so no orphaned parts are billed.
async fn open_journal(
    job: &CopyJob,
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
    // Starting over: the uploads an earlier run left open (and any it could not abort) are
    // carried into the new journal as aborts to do, which the run does first.
    let mut carried = JournalBatch::default();
    if let Some((journal, state)) = existing {
        for (object, (id, key)) in state.uploads {
            if !state.complete.contains(&object) {
                carried.abort_later.push((id, key));
            }
        }
        carried.abort_later.extend(state.pending_aborts);
        journal.remove();
    }
    let journal = Journal::create(path, fp)?;
    journal.record(&carried)?;
    let state = JournalState {
        pending_aborts: carried.abort_later.into_iter().collect(),
        ..JournalState::default()
    };
    Ok((Some(journal), state))
}
