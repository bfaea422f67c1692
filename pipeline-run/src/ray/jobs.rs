//! The Ray Jobs REST API as a stage uses it, without I/O: the submission body, what the head
//! answers, and what a job's state means for the stage. Facts from Ray's sources
//! (`docs/ray-jobs.md`): `POST /api/jobs/` takes a `JobSubmitRequest` and refuses with 400 any
//! key it does not know (so only the fields used are sent, and older heads accept them); a
//! submission id already taken is refused with the text "already exists" (400 from the agent,
//! 500 through the head: the text, not the status, tells); `GET /api/jobs/{id}` answers
//! `JobDetails`, 404 for an unknown id; `PENDING` → `RUNNING` → `SUCCEEDED` | `FAILED` |
//! `STOPPED`, the last three final.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a stage asks of its cluster, from the instance type the plan chose.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageResources {
    pub cpus: Option<f64>,
    pub gpus: Option<f64>,
}

/// A stage's job as submitted to a Ray head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    /// The stage's own id for the job: a gateway that restarts finds the job by it.
    pub submission_id: String,
    /// A shell command line: Ray runs it with `sh -c` on the node it schedules the job on.
    pub entrypoint: String,
    pub runtime_env: RuntimeEnv,
    /// CPUs the entrypoint holds while it runs (with none asked, Ray runs it on the head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
    /// Other resources (an accelerator type, a custom resource), by Ray's resource name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub entrypoint_resources: BTreeMap<String, f64>,
    /// Strings only, as Ray requires: who submitted the job, for which run and stage.
    pub metadata: BTreeMap<String, String>,
}

/// The job's runtime environment: its variables (strings only, as Ray requires).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuntimeEnv {
    pub env_vars: BTreeMap<String, String>,
}

/// A job's status, as Ray names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Pending,
    Running,
    Stopped,
    Succeeded,
    Failed,
}

impl JobStatus {
    /// Final: it never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Succeeded | Self::Failed)
    }
}

/// What of `GET /api/jobs/{id}`'s answer a stage reads (the rest is ignored: fields come and go
/// between Ray versions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobDetails {
    pub status: JobStatus,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub driver_exit_code: Option<i64>,
}

/// What a submission's answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Accepted,
    /// A job with this submission id exists: it is the one to follow, not to start again.
    AlreadyExists,
    Refused {
        status: u16,
        why: String,
    },
}

/// Reads the head's answer to `POST /api/jobs/`: `status` and its (plain text or JSON) body.
pub fn submitted(status: u16, body: &str) -> Submitted {
    if (200..300).contains(&status) {
        Submitted::Accepted
    } else if body.contains("already exists") {
        Submitted::AlreadyExists
    } else {
        Submitted::Refused {
            status,
            why: last_line(body),
        }
    }
}

/// Where a stage stands, from its job's details and how long the job has waited to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Queued or running: ask again.
    Underway,
    Succeeded,
    Failed(String),
    /// Stopped by someone (not by this gateway: it stops jobs only as it gives up on them).
    Stopped(String),
    /// Still not started after `start_bound`: no node offers what it asks. The stage belongs
    /// elsewhere (a capacity error, which the executor re-plans on).
    Unschedulable(String),
}

/// Maps a job's state to the stage's. `pending_for`: how long this gateway has seen it
/// `PENDING`; beyond `start_bound`, it is taken as unschedulable (Ray itself would wait
/// `RAY_JOB_START_TIMEOUT_SECONDS`, 15 minutes by default, and then fail it).
pub fn progress(details: &JobDetails, pending_for: Duration, start_bound: Duration) -> Progress {
    let said = || details.message.clone().unwrap_or_default();
    match details.status {
        JobStatus::Pending if pending_for > start_bound => Progress::Unschedulable(format!(
            "the job did not start within {}s{}",
            start_bound.as_secs(),
            details
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        )),
        JobStatus::Pending | JobStatus::Running => Progress::Underway,
        JobStatus::Succeeded => Progress::Succeeded,
        JobStatus::Stopped => Progress::Stopped(said()),
        JobStatus::Failed => Progress::Failed(match details.driver_exit_code {
            Some(code) => format!("exit code {code}: {}", first_line(&said())),
            None => first_line(&said()),
        }),
    }
}

/// The submission id of `stage`'s `attempt` at `placement` (its region and instance) in the
/// run `run_id`: stable across restarts of the gateway, so a job already submitted is found
/// rather than started again; another run, another placement (after a re-plan, maybe on the
/// same cluster) or another attempt (after a failure) is another id. Letters, digits, `-` and
/// `_` only.
pub fn submission_id(run_id: &str, stage: &str, placement: &str, attempt: u32) -> String {
    let clean: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let run: String = run_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(24)
        .collect();
    format!(
        "skyx-{run}-{clean}-{:08x}-{attempt}",
        fnv1a(placement) as u32
    )
}

/// FNV-1a, 64 bits: a short, stable tag of a string (not a defence against anyone).
pub(super) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

/// Ray's error bodies are often Python tracebacks: the last line says what went wrong.
pub(super) fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    line.trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(json: &str) -> JobDetails {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_the_fields_used_are_sent() {
        let submission = Submission {
            submission_id: "skyx-ab-s-1".into(),
            entrypoint: "skyx stage-run".into(),
            runtime_env: RuntimeEnv {
                env_vars: [("SKYX_REGION".to_string(), "aws:us-east-1".to_string())].into(),
            },
            entrypoint_num_cpus: Some(2.0),
            entrypoint_num_gpus: None,
            entrypoint_resources: BTreeMap::new(),
            metadata: [("skyx_stage".to_string(), "s".to_string())].into(),
        };
        let body = serde_json::to_value(&submission).unwrap();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "entrypoint",
                "entrypoint_num_cpus",
                "metadata",
                "runtime_env",
                "submission_id"
            ]
        );
        assert_eq!(
            body["runtime_env"]["env_vars"]["SKYX_REGION"],
            "aws:us-east-1"
        );
    }

    #[test]
    fn a_taken_submission_id_is_told_by_its_text_whatever_the_status() {
        let head = "Traceback (most recent call last):\n  ...\nRuntimeError: Request failed with \
                    status code 400: ValueError: Job with submission_id skyx-1 already exists. \
                    Please use a different submission_id.\n";
        assert_eq!(submitted(500, head), Submitted::AlreadyExists);
        assert_eq!(submitted(400, head), Submitted::AlreadyExists);
        assert_eq!(
            submitted(200, "{\"submission_id\":\"x\"}"),
            Submitted::Accepted
        );
        let refused = submitted(400, "Traceback ...\nTypeError: bad keyword 'x'\n\n");
        assert_eq!(
            refused,
            Submitted::Refused {
                status: 400,
                why: "TypeError: bad keyword 'x'".into()
            }
        );
    }

    #[test]
    fn a_job_pending_beyond_the_bound_is_unschedulable_and_final_states_say_why() {
        let bound = Duration::from_secs(60);
        let pending = details(
            r#"{"status":"PENDING","message":"Job has not started yet.","type":"SUBMISSION"}"#,
        );
        assert_eq!(
            progress(&pending, Duration::from_secs(59), bound),
            Progress::Underway
        );
        assert!(matches!(
            progress(&pending, Duration::from_secs(61), bound),
            Progress::Unschedulable(why) if why.contains("within 60s") && why.contains("not started")
        ));
        let failed = details(
            r#"{"status":"FAILED","driver_exit_code":3,"message":"Job entrypoint command failed with exit code 3, last available logs:\nboom"}"#,
        );
        assert_eq!(
            progress(&failed, Duration::ZERO, bound),
            Progress::Failed(
                "exit code 3: Job entrypoint command failed with exit code 3, last available logs:"
                    .into()
            )
        );
        let done = details(r#"{"status":"SUCCEEDED","driver_exit_code":0,"message":null}"#);
        assert_eq!(progress(&done, Duration::ZERO, bound), Progress::Succeeded);
        assert!(JobStatus::Stopped.is_final() && !JobStatus::Running.is_final());
    }

    #[test]
    fn submission_ids_are_stable_per_run_placement_and_attempt_and_safe() {
        let id = |run: &str, place: &str, attempt: u32| {
            submission_id(run, "feature extract", place, attempt)
        };
        let a = id("0123456789abcdef01234567", "aws:us-east-1/m6i.2xlarge", 1);
        assert!(
            a.starts_with("skyx-0123456789abcdef01234567-feature_extract-"),
            "{a}"
        );
        assert!(a.ends_with("-1"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(
            a,
            id("0123456789abcdef01234567", "aws:us-east-1/m6i.2xlarge", 1)
        );
        for other in [
            id("0123456789abcdef01234567", "aws:us-east-1/m6i.2xlarge", 2),
            id("0123456789abcdef01234567", "aws:us-west-2/m6i.2xlarge", 1),
            id("fedcba9876543210fedcba98", "aws:us-east-1/m6i.2xlarge", 1),
        ] {
            assert_ne!(a, other);
        }
    }
}
