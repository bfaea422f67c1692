//! The control plane of a copy.
//!
//! Pure core ([`core`]: no IO, time passed in): the chunker, the tracker, the topology and the
//! `--include`/`--exclude` filters.
//!
//! Driving it: [`listing`] works out what a copy moves (and what it refuses to write);
//! [`copy`] runs a copy end to end with agents launched through a `skyx_provision::Provider`;
//! [`journal`] makes it resumable; [`paths`] measures paths between regions with real agents.
//!
//! It must never provision machines itself or plan routes: providers and plans come in.

pub mod copy;
pub mod core;
pub mod journal;
pub mod listing;
pub mod paths;
pub mod pricing;

pub use crate::core::chunker::{
    ChunkError, ChunkPolicy, ChunkSpec, ObjectEntry, chunk_size, plan_chunks,
};
pub use crate::core::filter::{FilterRule, KeyFilter};
pub use crate::core::topology::{AgentSlot, RouteSpec, Topology};
pub use crate::core::tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};
pub use copy::{
    CopyError, CopyJob, CopyOptions, CopyReport, CrashAfter, Pricing, ProgressSnapshot,
    Verification, run_copy,
};
pub use journal::{Journal, JournalError, journal_path};
pub use listing::{
    CopyItem, Deletions, ListError, Listing, MetadataPolicy, SkippedObject, SyncPlan,
    attach_properties, delete_extraneous, is_marker, list_copy, list_destination, plan_sync,
    settle_markers,
};
pub use paths::{PathMeasurement, PathOptions, PathsError, measure_paths};
