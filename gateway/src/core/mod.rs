//! The copy's pure core: no IO, no clock (time is passed in), no async runtime, so every
//! decision is testable on its own (enforced by `tests/e2e/tidy.rs`).
//!
//! - [`chunker`]: splits a copy into chunks every destination store can assemble.
//! - [`tracker`]: follows every chunk until the sink reports it landed, re-dispatching when a
//!   route fails or a chunk is late.
//! - [`topology`]: turns a plan into agents and routes.
//! - [`replan`]: when a streamed listing calls for planning again, and what a new plan changes.
//! - [`filter`]: `--include`/`--exclude`, applied in order as the AWS CLI does.

pub mod chunker;
pub mod filter;
pub mod replan;
pub mod topology;
pub mod tracker;
