//! The job an agent serves ([`Job`]: its stores, routes and listeners) and the
//! agent's counters, shared by the roles (`source`, `sink`, the relay in `agent`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skyx_agent_api::tls::AgentIdentity;
use skyx_agent_api::wire::{ChunkOrder, CompressionSpec, SourceObject, Transport};
use skyx_protocol::{ChunkKey, JobId};
use skyx_store::ObjectStore;
use tokio::sync::mpsc;

use crate::hop::HopSender;
use crate::hop_auth::HopGuard;
use crate::hop_listener::HopListener;
use crate::objects::ObjectWriter;

/// Fault injection: once `after` chunks are handled, `crash` runs, once. The daemon passes a
/// process abort (the agent dies as if killed); the in-process provider stops the agent's
/// runtime. The library never ends the process itself.
#[derive(Clone)]
pub struct CrashHook {
    pub after: u64,
    pub crash: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for CrashHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrashHook {{ after: {} }}", self.after)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) store_read: AtomicU64,
    pub(crate) store_written: AtomicU64,
    pub(crate) raw_sent: AtomicU64,
    /// Chunks handled in any role, for fault injection.
    pub(crate) handled: AtomicU64,
    pub(crate) crash_after: Option<CrashHook>,
}

impl Counters {
    /// One more chunk handled; with fault injection on, the process dies at the threshold.
    pub(crate) fn chunk_handled(&self) {
        let n = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(hook) = &self.crash_after
            && n == hook.after
        {
            tracing::error!("fault injection: crashing after {n} chunks");
            (hook.crash)();
        }
    }
}

/// A chunk for a source to read, with the object it belongs to (shared by the object's chunks
/// of one dispatch).
#[derive(Debug, Clone)]
pub(crate) struct SourceOrder {
    pub(crate) order: ChunkOrder,
    pub(crate) object: Arc<SourceObject>,
}

pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(crate) identity: AgentIdentity,
    pub(crate) transport: Transport,
    /// How this agent's TCP data connections prove the job (the hop handshake, or TLS).
    pub(crate) guard: HopGuard,
    /// The key sources seal chunks with and sinks open them with (relays hold none).
    pub(crate) chunk_key: Option<Arc<ChunkKey>>,
    pub(crate) compression: CompressionSpec,
    pub(crate) source: Option<Arc<dyn ObjectStore>>,
    pub(crate) writer: Option<Arc<ObjectWriter>>,
    /// Paces source reads to this agent's share of `--bwlimit`.
    pub(crate) read_pace: Option<Arc<skyx_store::pace::Pacer>>,
    pub(crate) read_concurrency: usize,
    pub(crate) write_concurrency: usize,
    /// How long a sink keeps retrying a write its store refused transiently, from the bytes it
    /// holds, before telling the gateway (which then decides whether to send them again).
    pub(crate) sink_retry: Duration,
    pub(crate) routes: Mutex<HashMap<u32, mpsc::UnboundedSender<SourceOrder>>>,
    /// Bytes each route's outgoing hop put on the wire.
    pub(crate) wire: Mutex<Vec<(u32, Arc<HopSender>)>>,
    pub(crate) listeners: Mutex<Vec<HopListener>>,
    /// Objects found incompressible by `auto` compression.
    pub(crate) incompressible: Mutex<HashSet<u32>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
