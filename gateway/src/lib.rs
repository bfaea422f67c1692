//! The control plane of a copy.
//!
//! Pure core ([`core`]: no IO, time passed in): the chunker, the tracker, the topology and the
//! `--include`/`--exclude` filters.
//!
//! Driving it: [`listing`] works out what a copy moves (and what it refuses to write);
//! [`sync`] what a sync leaves in place, copies and deletes; [`check`] whether two trees
//! hold the same objects;
//! [`copy`] runs a copy end to end with agents launched through a `skyx_provision::Provider`;
//! [`journal`] makes it resumable; [`paths`] measures paths between regions with real agents.
//!
//! It must never provision machines itself or plan routes: providers and plans come in.

pub mod check;
pub mod copy;
pub mod core;
pub mod journal;
pub mod listing;
pub mod paths;
pub mod pricing;
pub mod spill;
pub mod streamed;
pub mod sync;

pub use crate::core::chunker::{
    ChunkError, ChunkPolicy, ChunkSpec, MAX_CHUNK, ObjectEntry, checked_chunk_size, chunk_size,
    object_chunks, plan_chunks,
};
pub use crate::core::filter::{FilterRule, KeyFilter, ObjectFilter};
pub use crate::core::topology::{AgentSlot, RouteSpec, Topology};
pub use crate::core::tracker::{Progress, RouteId, Tracker, TrackerConfig, TrackerEvent};
pub use check::{CheckOptions, CheckReport, Outcome, check};
pub use copy::{
    Broadcast, CopyError, CopyJob, CopyOptions, CopyReport, CrashAfter, Destination, ListedVolume,
    MAX_DESTINATIONS, Prediction, Pricing, ProgressSnapshot, Refinement, Replan, Replanned,
    Replanner, ServerSideJob, Verification, VolumeEstimate, items_of, run_broadcast, run_copy,
    run_server_side,
};
pub use journal::{Journal, JournalError, journal_path};
pub use listing::{
    CopyItem, CopyItems, ListError, Listed, Listing, MetadataPolicy, SkippedObject,
    attach_properties, is_marker, list_copy, list_destination, list_files_from, rebase_key,
    with_properties,
};
pub use paths::{PathMeasurement, PathOptions, PathsError, measure_paths};
pub use streamed::{
    CopySources, Look, Looked, Tally, VolumeProbe, list_copy_streaming, look_at, probe_volume,
};
pub use sync::merge::Decision;
pub use sync::stream::{
    Decisions, StreamedSync, SyncTally, copies, list_destination_streaming, sync_decisions,
};
pub use sync::{
    Compare, Deletions, RecordedTimes, SyncError, SyncPlan, SyncRules, complete_checksums,
    delete_extraneous, plan_sync,
};
