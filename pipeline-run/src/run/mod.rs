//! Running a planned pipeline: the [`skyx_pipeline::schedule::Dag`] decides what happens next; this module
//! does it. Stage compute comes from a [`ComputeProvider`] (local processes by default, inside
//! a region's namespace on the emulated sky); data between regions moves with [`run_copy`]
//! over the overlay the caller's [`PipelineHooks::route`] plans; a journal (`state.redb`)
//! records finished stages and landed transfers so a restarted gateway resumes.
//!
//! Where data lives: each region has a directory `<root>/regions/<region>/` standing for its
//! object store; a stage writes `<region>/<stage>/output/`, and each of its inputs lands in
//! `<region>/<stage>/inputs/<name>/` (or, when the data is already in the region, the stage
//! reads it where it is). A stage's command gets `SKYX_OUTPUT`, `SKYX_INPUT_<name>` and
//! `SKYX_REGION` in its environment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use skyx_agent_api::wire::StageRequest;
use skyx_store::{ObjectUrl, StoreConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

mod compute;
mod model;
mod status;
mod transfers;

pub use crate::hooks::{PipelineHooks, Placement, PlannedRoute, Replanned};
use crate::journal::{PipelineJournal, RunJournal};
pub use compute::{
    Compute, ComputeError, ComputeProvider, LocalCompute, StageContext, StageRunError,
};
pub use model::{
    EdgeRun, InputRun, PipelineReport, PipelineRun, RegionStore, StageReport, StageRun,
    TransferReport,
};
use skyx_gateway::{CopyJob, CopyOptions, CopyReport, run_copy};
use skyx_gateway::{ListError, ObjectFilter, list_copy};
use skyx_pipeline::schedule::{Dag, DagCommand, DagEvent, DagStage, DagTransfer, DataSource};
use skyx_provision::Provider;
use transfers::CopyCtx;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineRunError {
    #[error("pipeline {pipeline} failed: {why}")]
    Failed { pipeline: String, why: String },
    #[error("pipeline {pipeline}: {what}: {source}")]
    Io {
        pipeline: String,
        what: String,
        source: std::io::Error,
    },
    #[error("pipeline {0} was interrupted; run it again to resume")]
    Interrupted(String),
}

fn region_dir(root: &Path, region: &str) -> PathBuf {
    root.join("regions").join(region.replace([':', '/'], "_"))
}

fn edge_key(edge: &EdgeRun, region: &str) -> String {
    format!("{}→{}@{region}", edge.name, edge.to_stage)
}

struct Driver {
    run: PipelineRun,
    hooks: Arc<dyn PipelineHooks>,
    provider: Arc<dyn Provider>,
    compute: Arc<dyn ComputeProvider>,
    journal: RunJournal,
    journal_file: PipelineJournal,
    started: Instant,
    stage_reports: Vec<StageReport>,
    transfer_reports: Vec<TransferReport>,
    replans: Vec<String>,
    /// (region, instance) pairs that reported no capacity.
    blocked: Vec<(String, String)>,
    /// Transfer → (bytes landed, bytes total) of copies under way, for status lines.
    progress: Arc<Mutex<BTreeMap<usize, (u64, u64)>>>,
    /// Per transfer, the attempt under way: a copy's report counts only for its own attempt.
    attempts: Vec<u64>,
}

impl Driver {
    fn save(&self) -> Result<(), PipelineRunError> {
        self.journal_file
            .save(&self.run.fingerprint, &self.journal)
            .map_err(|why| PipelineRunError::Failed {
                pipeline: self.run.name.clone(),
                why,
            })
    }

    fn store_config(&self, region: &str) -> StoreConfig {
        self.run
            .region_stores
            .get(region)
            .map_or_else(StoreConfig::from_env, |r| r.config.clone())
    }

    /// Where the pipeline's data lives in `region`, ending in `/`.
    fn region_root(&self, region: &str) -> String {
        match self.run.region_stores.get(region) {
            Some(store) => format!("{}{}/", store.url, self.run.name),
            None => region_dir(&self.run.root, region).display().to_string() + "/",
        }
    }

    /// Where stage `s` leaves its output, in its region.
    fn output_location(&self, s: usize) -> String {
        let st = &self.run.stages[s];
        format!("{}{}/output/", self.region_root(&st.region), st.name)
    }

    /// Where the data of `edge` is, and its region.
    fn source_location(&self, edge: &EdgeRun) -> (String, String) {
        match edge.source {
            DataSource::Input(i) => (
                self.run.inputs[i].url.clone(),
                self.run.inputs[i].region.clone(),
            ),
            DataSource::Stage(u) => (self.output_location(u), self.run.stages[u].region.clone()),
        }
    }

    /// Where stage `to` reads `edge` from once it has landed in its region: where it already
    /// is when it starts there, else the stage's inputs in the region.
    fn input_location(&self, edge: &EdgeRun) -> String {
        let to = &self.run.stages[edge.to_stage];
        let (src, src_region) = self.source_location(edge);
        if src_region == to.region {
            return src;
        }
        format!(
            "{}{}/inputs/{}/",
            self.region_root(&to.region),
            to.name,
            edge.name
        )
    }

    /// Stage `s` as its compute runs it, and where its things go here.
    fn stage_request(&self, s: usize) -> (StageRequest, StageContext) {
        let st = &self.run.stages[s];
        let request = StageRequest {
            stage: st.name.clone(),
            region: st.region.clone(),
            command: st.command.clone(),
            inputs: self
                .run
                .edges
                .iter()
                .filter(|e| e.to_stage == s)
                .map(|e| (e.name.clone(), self.input_location(e)))
                .collect(),
            output: self.output_location(s),
        };
        let ctx = StageContext {
            run_id: self.journal.run_id.clone(),
            work: self.run.root.join("work").join(&st.name),
            config: self.store_config(&st.region),
            log: self.run.root.join(format!("{}.log", st.name)),
        };
        (request, ctx)
    }
}

/// A name for a run started afresh: its fingerprint's first 12 characters, then 12 of a digest
/// of it with the time and this process (another run of the same pipeline is another name).
fn new_run_id(fingerprint: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let salt = skyx_gateway::journal::digest([
        fingerprint.to_string(),
        now.to_string(),
        std::process::id().to_string(),
    ]);
    let head: String = fingerprint.chars().take(12).collect();
    let tail: String = salt.chars().take(12).collect();
    format!("{head}{tail}")
}

/// What a copy task says when it ends: its transfer's event, for attempt `attempt`.
struct Reply {
    attempt: u64,
    event: DagEvent,
    report: Option<TransferReport>,
}

/// Runs `run` to the end (or resumes it from its journal). `on_status` hears every step.
pub async fn run_pipeline(
    run: PipelineRun,
    hooks: Arc<dyn PipelineHooks>,
    provider: Arc<dyn Provider>,
    compute: Arc<dyn ComputeProvider>,
    on_status: &mut (dyn FnMut(&str) + Send),
    mut cancel: watch::Receiver<bool>,
) -> Result<PipelineReport, PipelineRunError> {
    std::fs::create_dir_all(&run.root).map_err(|source| PipelineRunError::Io {
        pipeline: run.name.clone(),
        what: format!("creating {}", run.root.display()),
        source,
    })?;
    for (region, store) in &run.region_stores {
        let failed = |why: String| PipelineRunError::Failed {
            pipeline: run.name.clone(),
            why: format!("the store of {region} ({}): {why}", store.url),
        };
        let url = ObjectUrl::parse(&store.url).map_err(|e| failed(e.to_string()))?;
        let opened = skyx_store::open(&url, &store.config)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Idempotent: an existing bucket is fine.
        opened
            .create_bucket()
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let mut run = run;
    let (journal_file, previous) =
        PipelineJournal::open(&PipelineJournal::path_in(&run.root), &run.fingerprint).map_err(
            |why| PipelineRunError::Failed {
                pipeline: run.name.clone(),
                why,
            },
        )?;
    if let Some(j) = &previous {
        for st in &mut run.stages {
            if let Some(p) = j.placements.get(&st.name) {
                st.place(p);
            }
        }
    }
    let edges = run.edges.len();
    let mut previous = previous;
    if let Some(j) = previous.as_mut()
        && j.run_id.is_empty()
    {
        // A journal of an older skyx: its run is named now.
        j.run_id = new_run_id(&run.fingerprint);
    }
    let mut driver = Driver {
        journal_file,
        journal: previous.clone().unwrap_or_else(|| RunJournal {
            run_id: new_run_id(&run.fingerprint),
            placements: run
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.placement()))
                .collect(),
            ..RunJournal::default()
        }),
        stage_reports: run
            .stages
            .iter()
            .map(|s| StageReport {
                name: s.name.clone(),
                region: s.region.clone(),
                instance: s.instance.clone(),
                started_s: None,
                finished_s: None,
                resumed: false,
                predicted_s: s.predicted_s,
                usd_per_hour: s.usd_per_hour,
                metered_usd: None,
            })
            .collect(),
        run,
        hooks,
        provider,
        compute,
        started: Instant::now(),
        transfer_reports: Vec::new(),
        replans: Vec::new(),
        blocked: Vec::new(),
        progress: Arc::default(),
        attempts: vec![0; edges],
    };
    driver.save()?;
    let dag_transfers = |d: &Driver| -> Vec<DagTransfer> {
        d.run
            .edges
            .iter()
            .map(|e| DagTransfer {
                source: e.source,
                to_stage: e.to_stage,
                src_region: d.source_location(e).1,
                dst_region: d.run.stages[e.to_stage].region.clone(),
            })
            .collect()
    };
    let mut dag = Dag::new(
        driver
            .run
            .stages
            .iter()
            .map(|s| DagStage {
                name: s.name.clone(),
                region: s.region.clone(),
            })
            .collect(),
        dag_transfers(&driver),
    );
    if let Some(j) = &previous {
        let succeeded: Vec<usize> = (0..driver.run.stages.len())
            .filter(|&s| j.succeeded.contains(&driver.run.stages[s].name))
            .collect();
        let landed: Vec<usize> = (0..driver.run.edges.len())
            .filter(|&t| {
                let e = &driver.run.edges[t];
                j.landed
                    .contains(&edge_key(e, &driver.run.stages[e.to_stage].region))
            })
            .collect();
        for &s in &succeeded {
            driver.stage_reports[s].resumed = true;
        }
        on_status(&format!(
            "resuming: {} stages done, {} transfers landed",
            succeeded.len(),
            landed.len()
        ));
        dag.restore(&succeeded, &landed);
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let mut computes: BTreeMap<usize, Box<dyn Compute>> = BTreeMap::new();
    let mut copies: Copies = BTreeMap::new();
    let mut pending: Vec<DagCommand> = dag.start();
    let mut provisioning: JoinSet<Provisioned> = JoinSet::new();
    let mut running: JoinSet<StageDone> = JoinSet::new();
    // Tells running stages to stop (their processes are killed, their compute released).
    let (stop_stages, stop_rx) = watch::channel(false);
    let mut ticker =
        tokio::time::interval(driver.run.status_every.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        // Commands can beget commands (a re-plan restarts transfers): run them all first.
        while !pending.is_empty() {
            for cmd in std::mem::take(&mut pending) {
                match cmd {
                    DagCommand::Provision { stage } => {
                        let st = driver.run.stages[stage].clone();
                        on_status(&format!(
                            "provisioning {} ({} in {})",
                            st.name, st.instance, st.region
                        ));
                        let compute = driver.compute.clone();
                        // Provisioning may take minutes on a cloud: it runs beside everything else.
                        provisioning.spawn(async move {
                            (
                                stage,
                                compute.provision(&st.name, &st.region, &st.instance).await,
                            )
                        });
                    }
                    DagCommand::StartTransfer { transfer } => {
                        driver
                            .start_transfer(transfer, &tx, &mut copies, on_status)
                            .await;
                    }
                    DagCommand::RunStage { stage } => {
                        let st = driver.run.stages[stage].clone();
                        let (request, ctx) = driver.stage_request(stage);
                        let Some(mut compute) = computes.remove(&stage) else {
                            return Err(PipelineRunError::Failed {
                                pipeline: driver.run.name.clone(),
                                why: format!("stage {} would run without compute", st.name),
                            });
                        };
                        on_status(&format!("running {} in {}", st.name, st.region));
                        driver.stage_reports[stage].started_s =
                            Some(driver.started.elapsed().as_secs_f64());
                        let mut stop = stop_rx.clone();
                        running.spawn(async move {
                            let outcome = tokio::select! {
                                outcome = compute.run(&request, &ctx) => Some(outcome),
                                // The run's future is dropped here, which kills the process.
                                _ = stop.wait_for(|&s| s) => None,
                            };
                            if outcome.is_none() {
                                compute.release().await;
                            }
                            StageDone {
                                stage,
                                compute,
                                outcome,
                            }
                        });
                    }
                    DagCommand::Release { stage } => {
                        if let Some(mut c) = computes.remove(&stage) {
                            c.release().await;
                        }
                    }
                    DagCommand::Replan { stage, region, why } => {
                        // Moved stages have no compute yet (only stages not started may move);
                        // the copies heading for their old regions are restarted, and so
                        // cancelled, by the `StartTransfer`s the relocation issues.
                        let moves: Vec<(usize, String)> = driver
                            .replan(stage, &region, &why, &dag, on_status)?
                            .into_iter()
                            .map(|s| (s, driver.run.stages[s].region.clone()))
                            .collect();
                        pending.extend(dag.relocate(&moves));
                    }
                    DagCommand::Finish => {
                        on_status("pipeline finished");
                    }
                    DagCommand::Abort { why } => {
                        stop_everything(
                            &mut copies,
                            &mut computes,
                            &stop_stages,
                            &mut running,
                            &mut provisioning,
                        )
                        .await;
                        return Err(PipelineRunError::Failed {
                            pipeline: driver.run.name.clone(),
                            why,
                        });
                    }
                }
            }
        }
        if dag.is_done() {
            break;
        }
        tokio::select! {
            Some(done) = provisioning.join_next() => {
                let (stage, result) = done.expect("provisioning task panicked");
                match result {
                    Ok(c) => {
                        computes.insert(stage, c);
                        pending.extend(dag.handle(DagEvent::Provisioned { stage }));
                    }
                    Err(ComputeError::Capacity { why, .. }) => pending.extend(dag.handle(
                        DagEvent::ProvisionFailed { stage, capacity: true, why },
                    )),
                    Err(ComputeError::Failed(why)) => pending.extend(dag.handle(
                        DagEvent::ProvisionFailed { stage, capacity: false, why },
                    )),
                }
            }
            Some(done) = running.join_next() => {
                let StageDone { stage, compute, outcome } = done.expect("stage task panicked");
                computes.insert(stage, compute);
                let name = driver.run.stages[stage].name.clone();
                if let Some(Err(StageRunError::Unschedulable(why))) = outcome {
                    // Not run: it starts again wherever the re-plan puts it.
                    let region = &driver.run.stages[stage].region;
                    on_status(&format!("{name} could not be scheduled in {region}: {why}"));
                    driver.stage_reports[stage].started_s = None;
                    pending.extend(dag.handle(DagEvent::StageUnschedulable { stage, why }));
                    continue;
                }
                let finished_s = driver.started.elapsed().as_secs_f64();
                let report = &mut driver.stage_reports[stage];
                report.finished_s = Some(finished_s);
                if let Some(started_s) = report.started_s {
                    report.metered_usd = Some((finished_s - started_s) / 3600.0 * report.usd_per_hour);
                }
                let (success, why) = match outcome {
                    Some(Ok(())) => (true, String::new()),
                    Some(Err(e)) => (false, e.to_string()),
                    None => (false, "it was stopped".into()),
                };
                if success {
                    on_status(&format!("{name} finished"));
                    driver.journal.succeeded.insert(name);
                    driver.save()?;
                }
                pending.extend(dag.handle(DagEvent::StageExited { stage, success, why }));
            }
            Some(Reply { attempt, event, report }) = rx.recv() => {
                let (DagEvent::TransferLanded { transfer } | DagEvent::TransferFailed { transfer, .. }) = event else {
                    unreachable!("copy tasks report transfers only");
                };
                // A copy cancelled by a re-plan may have ended just before: its word is stale.
                if attempt != driver.attempts[transfer] {
                    continue;
                }
                driver.progress.lock().expect("progress").remove(&transfer);
                if let DagEvent::TransferLanded { transfer } = &event {
                    let e = &driver.run.edges[*transfer];
                    let key = edge_key(e, &driver.run.stages[e.to_stage].region);
                    driver.journal.landed.insert(key);
                    driver.save()?;
                    copies.remove(transfer);
                }
                if let Some(r) = report {
                    driver.transfer_reports.push(r);
                }
                pending.extend(dag.handle(event));
            }
            _ = ticker.tick(), if driver.run.status_every.is_some() => {
                on_status(&driver.status_line(&dag));
            }
            _ = cancel.changed() => {
                stop_everything(&mut copies, &mut computes, &stop_stages, &mut running, &mut provisioning).await;
                return Err(PipelineRunError::Interrupted(driver.run.name.clone()));
            }
        }
    }
    for (_, mut c) in std::mem::take(&mut computes) {
        c.release().await;
    }
    Ok(PipelineReport {
        stages: driver.stage_reports,
        transfers: driver.transfer_reports,
        elapsed_s: driver.started.elapsed().as_secs_f64(),
        replans: driver.replans,
    })
}

/// A provisioning task's result: the stage, and its compute or why there is none.
type Provisioned = (usize, Result<Box<dyn Compute>, ComputeError>);

type Copies = BTreeMap<usize, (watch::Sender<bool>, tokio::task::JoinHandle<()>)>;

/// A stage ran (`outcome`: `Err` says what failed), or was stopped (`None`, its compute
/// released).
struct StageDone {
    stage: usize,
    compute: Box<dyn Compute>,
    outcome: Option<Result<(), StageRunError>>,
}

/// How long an abort waits for provisioning under way, so that compute that comes up is
/// released rather than left running.
const PROVISION_DRAIN: Duration = Duration::from_secs(60);

/// Stops every copy and every stage, and gives back all compute, including compute still
/// being provisioned (waited for, up to [`PROVISION_DRAIN`]), so an aborted or interrupted
/// run leaves nothing behind.
async fn stop_everything(
    copies: &mut Copies,
    computes: &mut BTreeMap<usize, Box<dyn Compute>>,
    stop_stages: &watch::Sender<bool>,
    running: &mut JoinSet<StageDone>,
    provisioning: &mut JoinSet<Provisioned>,
) {
    for (_, (cancel, copy)) in std::mem::take(copies) {
        let _ = cancel.send(true);
        copy.abort();
    }
    let _ = stop_stages.send(true);
    for (_, mut c) in std::mem::take(computes) {
        c.release().await;
    }
    // Each stopped stage releases its own compute; a stage that ended meanwhile returns it.
    while let Some(done) = running.join_next().await {
        if let Ok(StageDone {
            mut compute,
            outcome: Some(_),
            ..
        }) = done
        {
            compute.release().await;
        }
    }
    let drained = tokio::time::timeout(PROVISION_DRAIN, async {
        while let Some(done) = provisioning.join_next().await {
            if let Ok((_, Ok(mut compute))) = done {
                compute.release().await;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("provisioning still under way after {PROVISION_DRAIN:?}: abandoned");
        provisioning.shutdown().await;
    }
}

impl Driver {
    /// Starts moving the data of edge `transfer` to its stage's region (or reports it there
    /// already).
    async fn start_transfer(
        &mut self,
        transfer: usize,
        tx: &mpsc::UnboundedSender<Reply>,
        copies: &mut Copies,
        on_status: &mut (dyn FnMut(&str) + Send),
    ) {
        let edge = self.run.edges[transfer].clone();
        let (src, src_region) = self.source_location(&edge);
        let dst = self.input_location(&edge);
        let dst_region = self.run.stages[edge.to_stage].region.clone();
        let to_stage = self.run.stages[edge.to_stage].name.clone();
        let started_s = self.started.elapsed().as_secs_f64();
        self.attempts[transfer] += 1;
        let attempt = self.attempts[transfer];
        let mut report = TransferReport {
            data: edge.name.clone(),
            to_stage,
            src_region: src_region.clone(),
            dst_region: dst_region.clone(),
            bytes: 0,
            wire_bytes: 0,
            egress_usd: 0.0,
            vm_usd: 0.0,
            started_s,
            finished_s: started_s,
            predicted_s: None,
            predicted_usd: None,
            local: true,
        };
        if src == dst {
            let _ = tx.send(Reply {
                attempt,
                event: DagEvent::TransferLanded { transfer },
                report: Some(report),
            });
            return;
        }
        on_status(&format!(
            "moving {} to {} ({} → {})",
            edge.name, report.to_stage, src_region, dst_region
        ));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let ctx = CopyCtx {
            hooks: self.hooks.clone(),
            provider: self.provider.clone(),
            options: self.run.copy_options.clone(),
            journal: self.run.root.join("copies").join(format!(
                "{transfer}-{}.redb",
                dst_region.replace([':', '/'], "_")
            )),
            progress: self.progress.clone(),
            transfer,
            src_config: self.store_config(&src_region),
            dst_config: self.store_config(&dst_region),
        };
        let from_stage = matches!(edge.source, DataSource::Stage(_));
        let tx = tx.clone();
        let start = self.started;
        let fut = async move {
            let result = ctx
                .copy(&src, &src_region, &dst, &dst_region, from_stage, cancel_rx)
                .await;
            report.finished_s = start.elapsed().as_secs_f64();
            let (event, report) = match result {
                Ok(None) => {
                    report.predicted_s = Some(0.0);
                    report.predicted_usd = Some(0.0);
                    report.local = false;
                    (DagEvent::TransferLanded { transfer }, Some(report))
                }
                Ok(Some((r, (predicted_s, predicted_usd)))) => {
                    report.bytes = r.bytes_total;
                    report.wire_bytes = r.hops.first().map_or(0, |h| h.wire_bytes);
                    report.egress_usd = r.egress_usd;
                    report.vm_usd = r.vm_usd;
                    report.predicted_s = Some(predicted_s);
                    report.predicted_usd = Some(predicted_usd);
                    report.local = false;
                    (DagEvent::TransferLanded { transfer }, Some(report))
                }
                Err(why) => (DagEvent::TransferFailed { transfer, why }, None),
            };
            let _ = tx.send(Reply {
                attempt,
                event,
                report,
            });
        };
        if let Some((old_cancel, old)) = copies.remove(&transfer) {
            let _ = old_cancel.send(true);
            old.abort();
            let _ = old.await;
        }
        self.progress.lock().expect("progress").remove(&transfer);
        copies.insert(transfer, (cancel_tx, tokio::spawn(fut)));
    }

    /// Re-places the pipeline after `failed` found no capacity in `region`: returns every
    /// stage that moved (to another region, or to another instance in place).
    fn replan(
        &mut self,
        failed: usize,
        region: &str,
        why: &str,
        dag: &Dag,
        on_status: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<usize>, PipelineRunError> {
        let failed_name = self.run.stages[failed].name.clone();
        let instance = self.run.stages[failed].instance.clone();
        self.blocked.push((region.to_string(), instance.clone()));
        let current: Vec<Placement> = self.run.stages.iter().map(StageRun::placement).collect();
        let replaceable = dag.replaceable(failed);
        let replanned = self
            .hooks
            .replan(failed, &current, &replaceable, &self.blocked)
            .map_err(|no| PipelineRunError::Failed {
                pipeline: self.run.name.clone(),
                why: format!(
                    "no capacity for {failed_name} ({instance} in {region}: {why}) and no other placement: {no}"
                ),
            })?;
        let mut moved = Vec::new();
        for (s, p) in &replanned.placements {
            let s = *s;
            if s != failed && *p == current[s] {
                continue;
            }
            let name = self.run.stages[s].name.clone();
            let note = if s == failed {
                format!(
                    "{name}: no capacity for {instance} in {region} ({why}); moved to {} in {}",
                    p.instance, p.region
                )
            } else {
                format!(
                    "{name}: moved with {failed_name}, from {} in {} to {} in {}",
                    current[s].instance, current[s].region, p.instance, p.region
                )
            };
            on_status(&format!("re-planned {note}"));
            self.replans.push(note);
            self.run.stages[s].place(p);
            let report = &mut self.stage_reports[s];
            report.region = p.region.clone();
            report.instance = p.instance.clone();
            report.usd_per_hour = p.usd_per_hour;
            report.predicted_s = p.predicted_s;
            self.journal.placements.insert(name, p.clone());
            moved.push(s);
        }
        if let Some(note) = replanned.note {
            on_status(&format!("re-planned: {note}"));
            self.replans.push(note);
        }
        if !moved.contains(&failed) {
            return Err(PipelineRunError::Failed {
                pipeline: self.run.name.clone(),
                why: format!("the re-plan did not place {failed_name}"),
            });
        }
        self.save()?;
        Ok(moved)
    }
}
