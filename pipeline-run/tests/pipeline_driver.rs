//! The pipeline driver with no data to route (stages in one region, or only an empty output
//! crossing regions), so no agents are needed: a capacity error re-places the failed stage
//! together with the stages that have not started, the journal keeps the new places, an
//! interrupted run stops its running stage and gives back every piece of compute it was given,
//! and a stage that keeps nothing feeds another region an empty input.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skyx_agent_api::wire::StageRequest;
use skyx_pipeline::schedule::DataSource;
use skyx_pipeline_run::{
    Compute, ComputeError, ComputeProvider, EdgeRun, LocalCompute, PipelineHooks, PipelineReport,
    PipelineRun, PipelineRunError, Placement, PlannedRoute, Replanned, StageContext, StageRun,
    StageRunError, run_pipeline,
};
use skyx_provision::LocalProvider;
use tokio::sync::watch;

const FIRST: &str = "aws:us-east-1";
const SECOND: &str = "aws:us-west-2";

/// Local processes, except that `full` regions have no capacity; counts what it hands out
/// and what comes back.
struct CountingCompute {
    full: Vec<String>,
    /// Regions whose compute takes a stage and then cannot schedule it.
    unschedulable: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    live: Arc<AtomicUsize>,
}

struct Counted {
    inner: Box<dyn Compute>,
    unschedulable: bool,
    live: Arc<AtomicUsize>,
    released: bool,
}

#[async_trait]
impl Compute for Counted {
    async fn run(&mut self, stage: &StageRequest, ctx: &StageContext) -> Result<(), StageRunError> {
        if self.unschedulable {
            return Err(StageRunError::Unschedulable("test: no node fits".into()));
        }
        self.inner.run(stage, ctx).await
    }

    async fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.release().await;
    }
}

#[async_trait]
impl ComputeProvider for CountingCompute {
    async fn provision(
        &self,
        stage: &str,
        region: &str,
        instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{stage}@{region}/{instance}"));
        if self.full.iter().any(|r| r == region) {
            return Err(ComputeError::Capacity {
                region: region.into(),
                why: "test: full".into(),
            });
        }
        let inner = LocalCompute::default()
            .provision(stage, region, instance)
            .await?;
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Counted {
            inner,
            unschedulable: self.unschedulable.iter().any(|r| r == region),
            live: self.live.clone(),
            released: false,
        }))
    }
}

/// Moves every stage the driver allows to SECOND; never asked to route (all data stays in
/// one region).
struct MoveAllHooks {
    asked: Mutex<Vec<Vec<bool>>>,
}

impl PipelineHooks for MoveAllHooks {
    fn route(&self, src: &str, dst: &str, _bytes: u64) -> Result<PlannedRoute, String> {
        Err(format!("no route expected ({src} → {dst})"))
    }

    fn replan(
        &self,
        _failed: usize,
        current: &[Placement],
        replaceable: &[bool],
        blocked: &[(String, String)],
    ) -> Result<Replanned, String> {
        self.asked.lock().unwrap().push(replaceable.to_vec());
        let placements = (0..current.len())
            .filter(|&s| replaceable[s])
            .map(|s| {
                let p = Placement {
                    region: SECOND.into(),
                    ..current[s].clone()
                };
                assert!(!blocked.contains(&(p.region.clone(), p.instance.clone())));
                (s, p)
            })
            .collect();
        Ok(Replanned {
            placements,
            note: None,
        })
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skyx-driver-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// a → b → c, every stage in FIRST (a makes its data, so nothing crosses regions when all
/// stages move together); `b_command` runs first in stage b.
fn chain(dir: &Path, b_command: &str) -> PipelineRun {
    let stage = |name: &str, command: &str| StageRun {
        name: name.into(),
        region: FIRST.into(),
        instance: "m6i.large".into(),
        usd_per_hour: 0.096,
        predicted_s: 60.0,
        command: command.into(),
    };
    let copy = |input: &str| {
        format!(
            r#"cp -r "${input}"/. "$SKYX_OUTPUT"/ && echo "$SKYX_STAGE@$SKYX_REGION" >> "$SKYX_OUTPUT/trail""#
        )
    };
    PipelineRun {
        name: "driver".into(),
        stages: vec![
            stage(
                "a",
                r#"echo "$SKYX_STAGE@$SKYX_REGION" > "$SKYX_OUTPUT/trail""#,
            ),
            stage("b", &format!("{b_command} && {}", copy("SKYX_INPUT_a"))),
            stage("c", &copy("SKYX_INPUT_b")),
        ],
        inputs: Vec::new(),
        edges: vec![
            EdgeRun {
                source: DataSource::Stage(0),
                name: "a".into(),
                to_stage: 1,
            },
            EdgeRun {
                source: DataSource::Stage(1),
                name: "b".into(),
                to_stage: 2,
            },
        ],
        root: dir.join("state"),
        fingerprint: "test".into(),
        copy_options: Default::default(),
        status_every: Some(Duration::from_millis(50)),
        region_stores: Default::default(),
    }
}

fn provider() -> Arc<LocalProvider> {
    Arc::new(LocalProvider::new(LocalProvider::default_program()))
}

/// Runs the chain with FIRST refusing its stages (`full`: no capacity at provisioning;
/// `unschedulable`: compute given, the stage then not schedulable), and checks what both must
/// end in: a, which failed first, moved to SECOND with b and c (neither had started), every
/// stage ran there once, and every piece of compute came back. Its report, status lines and
/// state root.
async fn moved_off_first(
    name: &str,
    full: bool,
    unschedulable: bool,
) -> (PipelineReport, Vec<String>, PathBuf) {
    let dir = scratch(name);
    let run = chain(&dir, "true");
    let root = run.root.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let live = Arc::new(AtomicUsize::new(0));
    let first = || vec![FIRST.to_string()];
    let compute = Arc::new(CountingCompute {
        full: if full { first() } else { Vec::new() },
        unschedulable: if unschedulable { first() } else { Vec::new() },
        log: log.clone(),
        live: live.clone(),
    });
    let hooks = Arc::new(MoveAllHooks {
        asked: Mutex::new(Vec::new()),
    });
    let (_cancel_tx, cancel) = watch::channel(false);
    let mut lines = Vec::new();
    let report = run_pipeline(
        run,
        hooks.clone(),
        provider(),
        compute,
        &mut |l| lines.push(l.to_string()),
        cancel,
    )
    .await
    .expect("the pipeline runs after moving");
    assert_eq!(*hooks.asked.lock().unwrap(), vec![vec![true, true, true]]);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            format!("a@{FIRST}/m6i.large"),
            format!("a@{SECOND}/m6i.large"),
            format!("b@{SECOND}/m6i.large"),
            format!("c@{SECOND}/m6i.large"),
        ]
    );
    assert!(report.stages.iter().all(|s| s.region == SECOND));
    let trail = std::fs::read_to_string(root.join("regions/aws_us-west-2/c/output/trail")).unwrap();
    assert_eq!(trail, format!("a@{SECOND}\nb@{SECOND}\nc@{SECOND}\n"));
    assert_eq!(live.load(Ordering::SeqCst), 0, "compute left running");
    (report, lines, root)
}

#[tokio::test]
async fn a_capacity_error_moves_the_failed_stage_and_every_stage_not_yet_started() {
    let (report, _, root) = moved_off_first("replan", true, false).await;
    assert_eq!(report.replans.len(), 3, "{:?}", report.replans);
    assert!(
        report.replans[1].contains("moved with a"),
        "{:?}",
        report.replans
    );
    let placements = skyx_pipeline_run::journaled_placements(&root, "test").unwrap();
    assert!(
        placements.values().all(|p| p.region == SECOND) && placements.len() == 3,
        "{placements:?}"
    );
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

/// Compute that took a stage and could not schedule it (a Ray cluster with no node that fits)
/// is given back, and the stage is placed elsewhere, as after a capacity error.
#[tokio::test]
async fn a_stage_its_compute_could_not_schedule_moves_and_its_compute_is_given_back() {
    let (_, lines, root) = moved_off_first("unschedulable", false, true).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("a could not be scheduled in")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

#[tokio::test]
async fn an_interrupted_run_stops_its_stage_and_gives_back_all_compute() {
    let dir = scratch("interrupt");
    let started = dir.join("b-started");
    // b announces itself, then works for far longer than the test.
    // A duration no other process has, to find b's sleep by.
    let sleep = format!("sleep 599.{}", std::process::id());
    let run = chain(&dir, &format!("touch {} && {sleep}", started.display()));
    let live = Arc::new(AtomicUsize::new(0));
    let compute = Arc::new(CountingCompute {
        full: Vec::new(),
        unschedulable: Vec::new(),
        log: Arc::default(),
        live: live.clone(),
    });
    let hooks = Arc::new(MoveAllHooks {
        asked: Mutex::new(Vec::new()),
    });
    let (cancel_tx, cancel) = watch::channel(false);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    // Interrupted once b has started and a status line has shown it at work.
    let seen = lines.clone();
    let watcher = tokio::spawn(async move {
        while !(started.exists()
            && seen
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("status:") && l.contains("b running")))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel_tx.send(true).unwrap();
    });
    let heard = lines.clone();
    let result = run_pipeline(
        run,
        hooks,
        provider(),
        compute,
        &mut |l| heard.lock().unwrap().push(l.to_string()),
        cancel,
    )
    .await;
    watcher.await.unwrap();
    assert!(
        matches!(result, Err(PipelineRunError::Interrupted(_))),
        "{result:?}"
    );
    assert_eq!(live.load(Ordering::SeqCst), 0, "compute left running");
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|l| l.contains("a done")), "{lines:?}");
    // b's processes are gone, the shell and the sleep it started alike.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &sleep])
        .output()
        .unwrap();
    let sleepers = String::from_utf8_lossy(&ps.stdout).lines().count();
    assert_eq!(sleepers, 0, "stage b's processes still run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_empty_output_reaches_a_stage_in_another_region_as_an_empty_input() {
    let dir = scratch("empty-output");
    // a keeps nothing; b and c, in another region, go on: b finds an empty input (nothing
    // is routed: the hooks refuse every route).
    let mut run = chain(
        &dir,
        r#"test -d "$SKYX_INPUT_a" && test -z "$(ls -A "$SKYX_INPUT_a")""#,
    );
    run.stages[0].command = "true".into();
    run.stages[1].region = SECOND.into();
    run.stages[2].region = SECOND.into();
    let hooks = Arc::new(MoveAllHooks {
        asked: Mutex::new(Vec::new()),
    });
    let (_cancel_tx, cancel) = watch::channel(false);
    let mut lines = Vec::new();
    let report = run_pipeline(
        run,
        hooks,
        provider(),
        Arc::new(LocalCompute::default()),
        &mut |l| lines.push(l.to_string()),
        cancel,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    let a_to_b = report
        .transfers
        .iter()
        .find(|t| t.data == "a")
        .expect("a's transfer is reported");
    assert_eq!(a_to_b.bytes, 0);
    assert_eq!(a_to_b.dst_region, SECOND);
    assert!(
        report.stages.iter().all(|s| s.finished_s.is_some()),
        "{report:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
