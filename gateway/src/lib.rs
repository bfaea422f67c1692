//! The control plane. So far its pure core: [`chunker`] splits a copy into chunks every
//! destination store can assemble, and [`tracker`] follows every chunk until the sink reports it
//! landed, re-dispatching when a route fails or a chunk is late, and resuming from a journal.
//! Provisioning agents and driving transfers (async, sockets) build on these.

pub mod chunker;
pub mod tracker;

pub use chunker::{ChunkError, ChunkPolicy, ChunkSpec, ObjectEntry, chunk_size, plan_chunks};
pub use tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};
