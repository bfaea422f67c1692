//! Stage compute on Ray clusters: each stage is a Ray job on its region's cluster, submitted to
//! the cluster's head through the Jobs REST API. The job's entrypoint is `skyx stage-run` on
//! whichever node Ray schedules it: it brings the stage's inputs down from the region's store
//! with skyx's own store code, runs the stage's command (`SKYX_INPUT_*`, `SKYX_OUTPUT`,
//! `SKYX_REGION`) and takes the output up, as an agent's stage runner does; the stage's request
//! travels in the job's runtime environment (`SKYX_STAGE_REQUEST`). The job asks for the
//! planned instance's CPUs and GPUs, so Ray places it on a node that has them. A job
//! still waiting to start after a bound is stopped and its stage placed elsewhere; a job
//! already submitted for the stage (a gateway that died and runs again) is followed, not
//! started again; giving the compute back stops a job that has not ended. A stage in a region
//! given no cluster gets one of its own from the launcher, if there is one, torn down as its
//! compute is given back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use skyx_agent_api::wire::StageRequest;

use super::cluster::shell_word;
use super::head::{RayError, RayHead};
pub use super::jobs::StageResources;
use super::jobs::{
    JobStatus, Progress, RuntimeEnv, Submission, Submitted, progress, submission_id,
};
use super::launch::{LaunchedCluster, RayLauncher};
use crate::run::{Compute, ComputeError, ComputeProvider, StageContext, StageRunError};

/// The variable `skyx stage-run` reads the stage's request from.
pub const STAGE_REQUEST_ENV: &str = "SKYX_STAGE_REQUEST";
/// Attempts of one stage in one run (each a job of its own) before giving up.
const MAX_ATTEMPTS: u32 = 100;
/// How long the head may fail every call (a restarting dashboard) before the stage is given up
/// as lost.
const HEAD_SILENCE: Duration = Duration::from_secs(120);

/// Provisions each stage as a job of its region's Ray cluster.
#[derive(Debug, Clone)]
pub struct RayCompute {
    /// Each region's cluster, by its head.
    pub heads: BTreeMap<String, RayHead>,
    /// The resources of each instance type the plan may choose (from the catalog); an instance
    /// not in it asks for nothing, and Ray runs the job on the head node.
    pub resources: BTreeMap<String, StageResources>,
    /// `skyx` as the clusters' nodes run it.
    pub skyx: String,
    /// How long a job may wait to start before its stage is placed elsewhere.
    pub start_bound: Duration,
    /// How often a running job is asked about.
    pub poll: Duration,
    /// Launches a cluster of its own for each stage planned in a region `heads` has none for.
    pub launcher: Option<RayLauncher>,
}

#[async_trait]
impl ComputeProvider for RayCompute {
    async fn provision(
        &self,
        stage: &str,
        region: &str,
        instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError> {
        let resources = self.resources.get(instance).cloned().unwrap_or_default();
        let placement = format!("{region}/{instance}");
        let Some(head) = self.heads.get(region) else {
            let Some(launcher) = &self.launcher else {
                return Err(ComputeError::Capacity {
                    region: region.to_string(),
                    why: "no Ray cluster is given for this region".into(),
                });
            };
            let (cluster, head) = launcher.up(stage, region, instance, &resources).await?;
            return Ok(Box::new(RayStage {
                head,
                resources,
                placement,
                skyx: shell_word(launcher.node_skyx()),
                start_bound: self.start_bound,
                poll: self.poll,
                job: None,
                ended: false,
                cluster: Some(cluster),
            }));
        };
        // A head that does not answer may be restarting its dashboard: it has as long as a
        // running job's head has (a head that answers and refuses is no head to wait for).
        let asked = Instant::now();
        let mut said = false;
        loop {
            match head.version().await {
                Ok(_) => break,
                Err(e @ RayError::Unreachable { .. }) if asked.elapsed() < HEAD_SILENCE => {
                    if !std::mem::replace(&mut said, true) {
                        tracing::warn!(region, "waiting for the region's Ray head: {e}");
                    }
                    tokio::time::sleep(self.poll).await;
                }
                Err(e) => return Err(ComputeError::Failed(e.to_string())),
            }
        }
        Ok(Box::new(RayStage {
            head: head.clone(),
            resources,
            placement,
            skyx: shell_word(&self.skyx),
            start_bound: self.start_bound,
            poll: self.poll,
            job: None,
            ended: false,
            cluster: None,
        }))
    }
}

#[derive(Debug)]
struct RayStage {
    head: RayHead,
    resources: StageResources,
    /// Its region and instance: part of its jobs' ids.
    placement: String,
    /// `skyx` on the cluster's nodes, as a word of the entrypoint's shell command.
    skyx: String,
    start_bound: Duration,
    poll: Duration,
    /// The submission id of the job this stage follows.
    job: Option<String>,
    /// Its job reached a final state.
    ended: bool,
    /// The cluster launched for it, if it was: torn down as the compute is given back.
    cluster: Option<LaunchedCluster>,
}

#[async_trait]
impl Compute for RayStage {
    async fn run(&mut self, stage: &StageRequest, ctx: &StageContext) -> Result<(), StageRunError> {
        let failed = |why: String| StageRunError::Failed(why);
        let head = self.head.address().to_string();
        for attempt in 1..=MAX_ATTEMPTS {
            let submission = self
                .submission(stage, &ctx.run_id, attempt)
                .map_err(failed)?;
            let id = submission.submission_id.clone();
            // Known before it is asked for: a submission cut short may still have been taken,
            // and giving the compute back then stops it.
            self.job = Some(id.clone());
            match self.head.submit(&submission).await {
                Ok(Submitted::Accepted) => {}
                Ok(Submitted::AlreadyExists) => {
                    // Submitted by an earlier run of this gateway: followed, or (ended badly)
                    // tried again as the next attempt.
                    match self.head.details(&id).await {
                        Ok(Some(d))
                            if matches!(d.status, JobStatus::Failed | JobStatus::Stopped) =>
                        {
                            continue;
                        }
                        Ok(Some(_)) => {
                            tracing::info!(job = %id, %head, "following the stage's job")
                        }
                        Ok(None) => {
                            return Err(failed(format!(
                                "{head} says job {id} exists and does not know it"
                            )));
                        }
                        Err(e) => return Err(failed(e.to_string())),
                    }
                }
                Ok(Submitted::Refused { status, why }) => {
                    return Err(failed(format!("{head} refused job {id} ({status}): {why}")));
                }
                Err(e) => return Err(failed(e.to_string())),
            }
            return self.follow(&id, ctx).await;
        }
        Err(failed(format!(
            "{MAX_ATTEMPTS} jobs of this stage ended badly on {head}"
        )))
    }

    async fn release(&mut self) {
        if let Some(id) = &self.job
            && !self.ended
        {
            if let Err(e) = self.head.stop(id).await {
                tracing::warn!(job = %id, "stopping the stage's Ray job: {e}");
            }
            self.ended = true;
        }
        if let Some(mut cluster) = self.cluster.take() {
            cluster.down().await;
        }
    }
}

impl RayStage {
    fn submission(
        &self,
        stage: &StageRequest,
        run_id: &str,
        attempt: u32,
    ) -> Result<Submission, String> {
        let request = serde_json::to_string(stage).map_err(|e| e.to_string())?;
        let env_vars = [
            (STAGE_REQUEST_ENV.to_string(), request),
            ("SKYX_REGION".to_string(), stage.region.clone()),
            ("SKYX_STAGE".to_string(), stage.stage.clone()),
        ]
        .into();
        Ok(Submission {
            submission_id: submission_id(run_id, &stage.stage, &self.placement, attempt),
            entrypoint: format!("exec {} stage-run", self.skyx),
            runtime_env: RuntimeEnv { env_vars },
            entrypoint_num_cpus: self.resources.cpus,
            entrypoint_num_gpus: self.resources.gpus,
            entrypoint_resources: BTreeMap::new(),
            metadata: [
                ("skyx_stage".to_string(), stage.stage.clone()),
                ("skyx_region".to_string(), stage.region.clone()),
            ]
            .into(),
        })
    }

    /// Waits for job `id` to end, its log copied to the stage's log as it grows.
    async fn follow(&mut self, id: &str, ctx: &StageContext) -> Result<(), StageRunError> {
        let head = self.head.address().to_string();
        let mut pending_since: Option<Instant> = None;
        let mut failing_since: Option<Instant> = None;
        let mut polls: u64 = 0;
        loop {
            let details = match self.head.details(id).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    return Err(StageRunError::Failed(format!(
                        "{head} no longer knows job {id}"
                    )));
                }
                Err(e) => {
                    if failing_since.get_or_insert_with(Instant::now).elapsed() > HEAD_SILENCE {
                        return Err(StageRunError::Failed(e.to_string()));
                    }
                    tokio::time::sleep(self.poll).await;
                    continue;
                }
            };
            failing_since = None;
            let pending_for = match details.status {
                JobStatus::Pending => pending_since.get_or_insert_with(Instant::now).elapsed(),
                _ => Duration::ZERO,
            };
            let state = progress(&details, pending_for, self.start_bound);
            if state != Progress::Underway || polls % 5 == 4 {
                self.copy_log(id, ctx).await;
            }
            polls += 1;
            let log = ctx.log.display();
            match state {
                Progress::Underway => tokio::time::sleep(self.poll).await,
                Progress::Succeeded => {
                    self.ended = true;
                    return Ok(());
                }
                Progress::Failed(why) => {
                    self.ended = true;
                    return Err(StageRunError::Failed(format!(
                        "Ray job {id} on {head} failed: {why} (its log: {log})"
                    )));
                }
                Progress::Stopped(why) => {
                    self.ended = true;
                    return Err(StageRunError::Failed(format!(
                        "Ray job {id} on {head} was stopped: {why}"
                    )));
                }
                Progress::Unschedulable(why) => {
                    // Given back by the driver (which stops it) before the stage moves.
                    return Err(StageRunError::Unschedulable(format!(
                        "Ray job {id} on {head}: {why}"
                    )));
                }
            }
        }
    }

    async fn copy_log(&self, id: &str, ctx: &StageContext) {
        match self.head.logs(id).await {
            Ok(text) => {
                if let Some(dir) = ctx.log.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let _ = std::fs::write(&ctx.log, text);
            }
            Err(e) => tracing::debug!(job = %id, "reading the job's log: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entrypoint_quotes_the_program_for_the_shell() {
        assert_eq!(shell_word("/opt/skyx/bin/skyx"), "/opt/skyx/bin/skyx");
        assert_eq!(shell_word("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("~/skyx"), "~/skyx");
        assert_eq!(shell_word("~/my skyx"), "~/'my skyx'");
    }

    #[test]
    fn a_submission_asks_for_the_instances_resources_and_carries_the_request() {
        let stage = RayStage {
            head: RayHead::new("http://127.0.0.1:8265").unwrap(),
            resources: StageResources {
                cpus: Some(8.0),
                gpus: Some(1.0),
            },
            placement: "gcp:us-central1-a/a2-highgpu-1g".into(),
            skyx: shell_word("/usr/local/bin/skyx"),
            start_bound: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            job: None,
            ended: false,
            cluster: None,
        };
        let request = StageRequest {
            stage: "train".into(),
            region: "gcp:us-central1-a".into(),
            command: "python train.py".into(),
            inputs: vec![("data".into(), "gs://b/data/".into())],
            output: "gs://b/model/".into(),
        };
        let s = stage.submission(&request, "f00dfeed", 2).unwrap();
        assert!(
            s.submission_id.starts_with("skyx-f00dfeed-train-"),
            "{}",
            s.submission_id
        );
        assert_eq!(s.entrypoint, "exec /usr/local/bin/skyx stage-run");
        assert_eq!(
            (s.entrypoint_num_cpus, s.entrypoint_num_gpus),
            (Some(8.0), Some(1.0))
        );
        assert!(s.entrypoint_resources.is_empty());
        let carried: StageRequest =
            serde_json::from_str(&s.runtime_env.env_vars[STAGE_REQUEST_ENV]).unwrap();
        assert_eq!(carried, request);
    }
}
