//! Running a planned pipeline (`skyx run`): the pure scheduler (`skyx_pipeline::schedule`)
//! decides what happens next; [`run`] carries it out — stage compute through a
//! [`ComputeProvider`] (local processes, or agents through any provider: [`agent_compute`]),
//! transfers between regions through `skyx_gateway::run_copy`, a journal for resume.
//!
//! It must never plan itself: placements and routes come from [`PipelineHooks`]; the
//! planner-backed ones are [`PlannerHooks`].

pub mod agent_compute;
pub mod hooks;
pub mod journal;
pub mod ray;
pub mod run;

pub use agent_compute::AgentCompute;
pub use hooks::PlannerHooks;
pub use journal::journaled_placements;
pub use run::*;
