//! Running a planned pipeline: the [`crate::dag::Dag`] decides what happens next; this module
//! does it. Stage compute comes from a [`ComputeProvider`] (local processes by default, inside
//! a region's namespace on the emulated sky); data between regions moves with [`run_copy`]
//! over the overlay the caller's [`PipelineHooks::route`] plans; a journal (`state.json`)
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
use std::time::Instant;

use async_trait::async_trait;
use skyx_store::{ObjectUrl, StoreConfig};
use tokio::sync::{mpsc, watch};

use crate::copy::{CopyJob, CopyOptions, CopyReport, Pricing, run_copy};
use crate::dag::{Dag, DagCommand, DagEvent, DagStage, DagTransfer, DataSource};
use crate::listing::{KeyFilter, list_copy};
use crate::provider::Provider;
use crate::topology::Topology;

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

/// Why compute could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// Out of capacity or quota there: the stage can be placed elsewhere.
    #[error("no capacity in {region}: {why}")]
    Capacity { region: String, why: String },
    #[error("{0}")]
    Failed(String),
}

/// Compute for one stage, provisioned in its region.
#[async_trait]
pub trait Compute: Send + Sync {
    /// Runs the stage's command to its end; its output goes to `log`.
    async fn run(
        &mut self,
        command: &str,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<std::process::ExitStatus, std::io::Error>;
    /// Gives the compute back (terminates the VM).
    async fn release(&mut self);
}

#[async_trait]
pub trait ComputeProvider: Send + Sync {
    async fn provision(
        &self,
        stage: &str,
        region: &str,
        instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError>;
}

/// Stage commands as local processes (`sh -c`), inside a region's network namespace when one
/// is given. `SKYX_FAULT_NO_CAPACITY=REGION[,REGION]` makes provisioning there fail with a
/// capacity error (for testing re-planning).
#[derive(Debug, Clone, Default)]
pub struct LocalCompute {
    pub namespaces: BTreeMap<String, String>,
}

#[async_trait]
impl ComputeProvider for LocalCompute {
    async fn provision(
        &self,
        _stage: &str,
        region: &str,
        _instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError> {
        if let Ok(list) = std::env::var("SKYX_FAULT_NO_CAPACITY")
            && list.split(',').any(|r| r.trim() == region)
        {
            return Err(ComputeError::Capacity {
                region: region.to_string(),
                why: "SKYX_FAULT_NO_CAPACITY".into(),
            });
        }
        Ok(Box::new(LocalProcess {
            namespace: self.namespaces.get(region).cloned(),
        }))
    }
}

#[derive(Debug)]
struct LocalProcess {
    namespace: Option<String>,
}

#[async_trait]
impl Compute for LocalProcess {
    async fn run(
        &mut self,
        command: &str,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<std::process::ExitStatus, std::io::Error> {
        let mut cmd = match &self.namespace {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, "sh", "-c", command]);
                c
            }
            None => {
                let mut c = tokio::process::Command::new("sh");
                c.args(["-c", command]);
                c
            }
        };
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        cmd.status().await
    }

    async fn release(&mut self) {}
}

/// What the driver asks of its caller, which holds the catalog and the plan.
pub trait PipelineHooks: Send + Sync {
    /// The agents and routes for moving `bytes` from one region to another, and their prices.
    fn route(
        &self,
        src_region: &str,
        dst_region: &str,
        bytes: u64,
    ) -> Result<(Topology, Pricing), String>;
    /// A new region for `stage`, avoiding every (stage, region) in `blocked`; `None` if there
    /// is no other placement.
    fn replan(&self, stage: usize, blocked: &[(usize, String)]) -> Option<String>;
}

/// One stage as it will run.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub name: String,
    pub region: String,
    pub instance: String,
    pub command: String,
}

/// One pipeline input.
#[derive(Debug, Clone)]
pub struct InputRun {
    pub name: String,
    pub url: String,
    pub region: String,
}

/// An edge: data `source` read by stage `to_stage`, under the name `name`.
#[derive(Debug, Clone)]
pub struct EdgeRun {
    pub source: DataSource,
    pub name: String,
    pub to_stage: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineRun {
    pub name: String,
    pub stages: Vec<StageRun>,
    pub inputs: Vec<InputRun>,
    pub edges: Vec<EdgeRun>,
    /// `<state dir>/pipelines/<name>`.
    pub root: PathBuf,
    /// Identifies the spec and plan: a journal with another fingerprint is not resumed.
    pub fingerprint: String,
    pub copy_options: CopyOptions,
}

/// What happened to one stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    pub name: String,
    pub region: String,
    pub instance: String,
    pub started_s: Option<f64>,
    pub finished_s: Option<f64>,
    pub resumed: bool,
}

/// What happened to one transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransferReport {
    pub data: String,
    pub to_stage: String,
    pub src_region: String,
    pub dst_region: String,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub egress_usd: f64,
    pub vm_usd: f64,
    pub started_s: f64,
    pub finished_s: f64,
    /// Already in the destination region: nothing moved.
    pub local: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineReport {
    pub stages: Vec<StageReport>,
    pub transfers: Vec<TransferReport>,
    pub elapsed_s: f64,
    pub replans: Vec<String>,
}

/// The journal: what a previous run finished.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct RunJournal {
    fingerprint: String,
    /// Stage → region (after any re-plans).
    regions: BTreeMap<String, String>,
    succeeded: BTreeSet<String>,
    /// "data→stage@region" of landed transfers.
    landed: BTreeSet<String>,
}

fn region_dir(root: &Path, region: &str) -> PathBuf {
    root.join("regions").join(region.replace([':', '/'], "_"))
}

/// A stage's output directory.
pub fn output_dir(root: &Path, stage: &StageRun) -> PathBuf {
    region_dir(root, &stage.region)
        .join(&stage.name)
        .join("output")
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
    started: Instant,
    stage_reports: Vec<StageReport>,
    transfer_reports: Vec<TransferReport>,
    replans: Vec<String>,
    blocked: Vec<(usize, String)>,
}

impl Driver {
    fn journal_path(&self) -> PathBuf {
        self.run.root.join("state.json")
    }

    fn save(&self) -> Result<(), PipelineRunError> {
        let path = self.journal_path();
        let tmp = self.run.root.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(&self.journal).expect("journal serializes");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| PipelineRunError::Io {
                pipeline: self.run.name.clone(),
                what: format!("writing {}", path.display()),
                source,
            })
    }

    /// Where the data of `edge` is, in its source region.
    fn source_location(&self, edge: &EdgeRun) -> (String, String) {
        match edge.source {
            DataSource::Input(i) => (
                self.run.inputs[i].url.clone(),
                self.run.inputs[i].region.clone(),
            ),
            DataSource::Stage(u) => {
                let st = &self.run.stages[u];
                (
                    output_dir(&self.run.root, st).display().to_string() + "/",
                    st.region.clone(),
                )
            }
        }
    }

    /// Where stage `to` reads `edge` from once it has landed.
    fn input_location(&self, edge: &EdgeRun) -> String {
        let to = &self.run.stages[edge.to_stage];
        let (src, src_region) = self.source_location(edge);
        let local_src =
            ObjectUrl::parse(&src).is_ok_and(|u| u.location == skyx_store::StoreLocation::Local);
        if src_region == to.region && local_src {
            return src;
        }
        region_dir(&self.run.root, &to.region)
            .join(&to.name)
            .join("inputs")
            .join(&edge.name)
            .display()
            .to_string()
            + "/"
    }
}

type Reply = (DagEvent, Option<TransferReport>);

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
    let mut run = run;
    let previous: Option<RunJournal> = std::fs::read_to_string(run.root.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|j: &RunJournal| j.fingerprint == run.fingerprint);
    if let Some(j) = &previous {
        for st in &mut run.stages {
            if let Some(r) = j.regions.get(&st.name) {
                st.region = r.clone();
            }
        }
    }
    let mut driver = Driver {
        journal: previous.clone().unwrap_or_else(|| RunJournal {
            fingerprint: run.fingerprint.clone(),
            regions: run
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.region.clone()))
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
    let mut provisioning = tokio::task::JoinSet::new();
    let mut running = tokio::task::JoinSet::new();
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
                        let edge = driver.run.edges[transfer].clone();
                        let (src, src_region) = driver.source_location(&edge);
                        let dst = driver.input_location(&edge);
                        let dst_region = driver.run.stages[edge.to_stage].region.clone();
                        let started_s = driver.started.elapsed().as_secs_f64();
                        if src == dst {
                            let report = TransferReport {
                                data: edge.name.clone(),
                                to_stage: driver.run.stages[edge.to_stage].name.clone(),
                                src_region,
                                dst_region,
                                bytes: 0,
                                wire_bytes: 0,
                                egress_usd: 0.0,
                                vm_usd: 0.0,
                                started_s,
                                finished_s: started_s,
                                local: true,
                            };
                            let _ = tx.send((DagEvent::TransferLanded { transfer }, Some(report)));
                            continue;
                        }
                        on_status(&format!(
                            "moving {} to {} ({} → {})",
                            edge.name,
                            driver.run.stages[edge.to_stage].name,
                            src_region,
                            dst_region
                        ));
                        let (cancel_tx, cancel_rx) = watch::channel(false);
                        let ctx = CopyCtx {
                            hooks: driver.hooks.clone(),
                            provider: driver.provider.clone(),
                            options: driver.run.copy_options.clone(),
                            journal: driver.run.root.join("copies").join(format!(
                                "{transfer}-{}.redb",
                                dst_region.replace([':', '/'], "_")
                            )),
                        };
                        let tx2 = tx.clone();
                        let to_stage = driver.run.stages[edge.to_stage].name.clone();
                        let start = driver.started;
                        let fut = async move {
                            let result = ctx
                                .copy(&src, &src_region, &dst, &dst_region, cancel_rx)
                                .await;
                            let finished_s = start.elapsed().as_secs_f64();
                            let reply = match result {
                                Ok(r) => (
                                    DagEvent::TransferLanded { transfer },
                                    Some(TransferReport {
                                        data: edge.name,
                                        to_stage,
                                        src_region,
                                        dst_region,
                                        bytes: r.bytes_total,
                                        wire_bytes: r.hops.first().map_or(0, |h| h.wire_bytes),
                                        egress_usd: r.egress_usd,
                                        vm_usd: r.vm_usd,
                                        started_s,
                                        finished_s,
                                        local: false,
                                    }),
                                ),
                                Err(why) => (DagEvent::TransferFailed { transfer, why }, None),
                            };
                            let _ = tx2.send(reply);
                        };
                        if let Some((old_cancel, old)) = copies.remove(&transfer) {
                            let _ = old_cancel.send(true);
                            old.abort();
                            let _ = old.await;
                        }
                        copies.insert(transfer, (cancel_tx, tokio::spawn(fut)));
                    }
                    DagCommand::RunStage { stage } => {
                        let st = driver.run.stages[stage].clone();
                        let out = output_dir(&driver.run.root, &st);
                        // A rerun starts from an empty output.
                        let _ = std::fs::remove_dir_all(&out);
                        std::fs::create_dir_all(&out).map_err(|source| PipelineRunError::Io {
                            pipeline: driver.run.name.clone(),
                            what: format!("creating {}", out.display()),
                            source,
                        })?;
                        let mut env = vec![
                            ("SKYX_OUTPUT".to_string(), out.display().to_string()),
                            ("SKYX_REGION".to_string(), st.region.clone()),
                            ("SKYX_STAGE".to_string(), st.name.clone()),
                        ];
                        for e in driver.run.edges.iter().filter(|e| e.to_stage == stage) {
                            env.push((
                                format!("SKYX_INPUT_{}", e.name.replace(['-', '.'], "_")),
                                driver.input_location(e).trim_end_matches('/').to_string(),
                            ));
                        }
                        let Some(mut compute) = computes.remove(&stage) else {
                            return Err(PipelineRunError::Failed {
                                pipeline: driver.run.name.clone(),
                                why: format!("stage {} would run without compute", st.name),
                            });
                        };
                        on_status(&format!("running {} in {}", st.name, st.region));
                        driver.stage_reports[stage].started_s =
                            Some(driver.started.elapsed().as_secs_f64());
                        let log = driver.run.root.join(format!("{}.log", st.name));
                        running.spawn(async move {
                            let status = compute.run(&st.command, &env, &log).await;
                            (stage, compute, status, log)
                        });
                    }
                    DagCommand::Release { stage } => {
                        if let Some(mut c) = computes.remove(&stage) {
                            c.release().await;
                        }
                    }
                    DagCommand::Replan { stage, region, why } => {
                        driver.blocked.push((stage, region.clone()));
                        let name = driver.run.stages[stage].name.clone();
                        match driver.hooks.replan(stage, &driver.blocked) {
                            Some(new_region) => {
                                let note = format!(
                                    "{name}: no capacity in {region} ({why}); moved to {new_region}"
                                );
                                on_status(&format!("re-planned {note}"));
                                driver.replans.push(note);
                                driver.run.stages[stage].region = new_region.clone();
                                driver.stage_reports[stage].region = new_region.clone();
                                driver.journal.regions.insert(name, new_region.clone());
                                driver.save()?;
                                for (t, e) in driver.run.edges.iter().enumerate() {
                                    if e.to_stage == stage
                                        && let Some((c, h)) = copies.remove(&t)
                                    {
                                        let _ = c.send(true);
                                        h.abort();
                                        let _ = h.await; // gone, its journal closed, before it restarts
                                    }
                                }
                                pending.extend(dag.relocate(stage, &new_region));
                            }
                            None => {
                                return Err(PipelineRunError::Failed {
                                    pipeline: driver.run.name.clone(),
                                    why: format!(
                                        "no capacity for {name} in {region} ({why}) and no other placement"
                                    ),
                                });
                            }
                        }
                    }
                    DagCommand::Finish => {
                        on_status("pipeline finished");
                    }
                    DagCommand::Abort { why } => {
                        stop_everything(
                            &mut copies,
                            &mut computes,
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
                let (stage, compute, status, log) = done.expect("stage task panicked");
                computes.insert(stage, compute);
                let name = driver.run.stages[stage].name.clone();
                driver.stage_reports[stage].finished_s = Some(driver.started.elapsed().as_secs_f64());
                let (success, why) = match status {
                    Ok(s) if s.success() => (true, String::new()),
                    Ok(s) => (false, format!("its command exited with {s} (log: {})", log.display())),
                    Err(e) => (false, format!("its command could not start: {e}")),
                };
                if success {
                    on_status(&format!("{name} finished"));
                    driver.journal.succeeded.insert(name);
                    driver.save()?;
                }
                pending.extend(dag.handle(DagEvent::StageExited { stage, success, why }));
            }
            Some((event, report)) = rx.recv() => {
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
            _ = cancel.changed() => {
                stop_everything(&mut copies, &mut computes, &mut running, &mut provisioning).await;
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

type Copies = BTreeMap<usize, (watch::Sender<bool>, tokio::task::JoinHandle<()>)>;

/// Stops every copy, gives back all idle compute and ends every stage and provisioning task
/// (a stage's process dies with its task), so an aborted or interrupted run leaves nothing.
async fn stop_everything<A: 'static, B: 'static>(
    copies: &mut Copies,
    computes: &mut BTreeMap<usize, Box<dyn Compute>>,
    running: &mut tokio::task::JoinSet<A>,
    provisioning: &mut tokio::task::JoinSet<B>,
) {
    for (_, (cancel, copy)) in std::mem::take(copies) {
        let _ = cancel.send(true);
        copy.abort();
    }
    for (_, mut c) in std::mem::take(computes) {
        c.release().await;
    }
    running.shutdown().await;
    provisioning.shutdown().await;
}

struct CopyCtx {
    hooks: Arc<dyn PipelineHooks>,
    provider: Arc<dyn Provider>,
    options: CopyOptions,
    journal: PathBuf,
}

impl CopyCtx {
    async fn copy(
        &self,
        src: &str,
        src_region: &str,
        dst: &str,
        dst_region: &str,
        cancel: watch::Receiver<bool>,
    ) -> Result<CopyReport, String> {
        let src_url = ObjectUrl::parse(src).map_err(|e| e.to_string())?;
        let dst_url = ObjectUrl::parse(dst).map_err(|e| e.to_string())?;
        let config = StoreConfig::from_env();
        let src_store = skyx_store::open(&src_url, &config)
            .await
            .map_err(|e| e.to_string())?;
        let dst_store = skyx_store::open(&dst_url, &config)
            .await
            .map_err(|e| e.to_string())?;
        let items = list_copy(
            src_store.as_ref(),
            &src_url,
            &dst_url,
            true,
            &KeyFilter::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let bytes: u64 = items.iter().map(|i| i.size).sum();
        let (topology, pricing) = self.hooks.route(src_region, dst_region, bytes)?;
        if let Some(dir) = self.journal.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut options = self.options.clone();
        options.journal = Some(self.journal.clone());
        options.resume = self.journal.exists();
        let root = |u: &ObjectUrl| match &u.location {
            skyx_store::StoreLocation::Local => "file:///".to_string(),
            loc => format!("{loc}/"),
        };
        let job = CopyJob {
            src_store: root(&src_url),
            dst_store: root(&dst_url),
            items,
            topology,
            options,
            pricing,
        };
        let report = run_copy(
            &job,
            self.provider.as_ref(),
            src_store,
            dst_store,
            &mut |_| {},
            cancel,
        )
        .await
        .map_err(|e| e.to_string())?;
        if !report.objects_failed.is_empty() {
            return Err(format!("{} objects failed", report.objects_failed.len()));
        }
        let _ = std::fs::remove_file(&self.journal);
        Ok(report)
    }
}
