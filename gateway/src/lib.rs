//! The control plane.
//!
//! Pure core (no IO, time passed in): [`chunker`] splits a copy into chunks every destination
//! store can assemble; [`tracker`] follows every chunk until the sink reports it landed,
//! re-dispatching when a route fails or a chunk is late; [`topology`] turns a plan into agents
//! and routes.
//!
//! Driving it: [`provider`] launches agents (local processes by default); [`listing`] works out
//! what a copy moves; [`copy`] runs a copy end to end; [`journal`] makes it resumable.

pub mod agent_compute;
pub mod chunker;
pub mod copy;
pub mod dag;
pub mod ec2;
pub mod journal;
pub mod listing;
pub mod paths;
pub mod pipeline_run;
pub mod provider;
pub mod topology;
pub mod tracker;

pub use chunker::{ChunkError, ChunkPolicy, ChunkSpec, ObjectEntry, chunk_size, plan_chunks};
pub use copy::{
    CopyError, CopyJob, CopyOptions, CopyReport, Pricing, ProgressSnapshot, Verification, run_copy,
};
pub use journal::{Journal, JournalError, journal_path};
pub use listing::{
    CopyItem, KeyFilter, ListError, Listing, SkippedObject, SyncPlan, list_copy, list_destination,
    plan_sync,
};
pub use paths::{PathMeasurement, PathOptions, PathsError, measure_paths};
pub use provider::{LocalProvider, Provider, ProviderError};
pub use topology::{AgentSlot, RouteSpec, Topology};
pub use tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};
