//! Stages as Ray jobs: `jobs` is the Jobs REST API as a stage uses it, pure (the submission
//! body, the head's answers, what a job's state means for the stage); `head` its thin HTTP
//! driver; `compute` the compute provider that runs each stage as a job of its region's
//! cluster. Where the user has no cluster, `cluster` is the one a stage is given (pure: its
//! name and its config for Ray's cluster launcher) and `launch` brings it up and down.

pub mod cluster;
pub mod compute;
pub mod head;
pub mod jobs;
pub mod launch;

pub use compute::{RayCompute, STAGE_REQUEST_ENV, StageResources};
pub use head::{RayError, RayHead};
pub use launch::RayLauncher;
