//! Stages as Ray jobs (issue #18, under way): `jobs` is the Jobs REST API as a stage uses it,
//! pure — the submission body, the head's answers, and what a job's state means for the stage.
//! The compute provider that submits each stage to its region's Ray head comes next.

pub mod jobs;
