//! Running a pipeline stage on this machine: its inputs brought down from its region's store
//! (or read where they are when local), its command run with `sh -c` in a process group of its
//! own (so stopping it stops everything it started), and its output taken up after it
//! succeeds. The gateway runs local stages with [`run_stage`] directly; an agent runs one for
//! the gateway through `POST /v1/stage` ([`StageSlot`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use skyx_store::{ObjectUrl, StoreConfig};
use tokio::sync::watch;

use skyx_agent_api::wire::{StageRequest, StageState, StageStatus};

/// Kills a process group when dropped: a stage stopped mid-run (its future dropped) takes
/// every process its command started with it, not just the shell.
#[derive(Debug)]
struct KillGroupOnDrop(rustix::process::Pid);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process_group(self.0, rustix::process::Signal::KILL);
    }
}

fn local_dir(location: &str) -> Option<PathBuf> {
    ObjectUrl::parse(location).ok()?.local_path()
}

fn as_dir_url(dir: &Path) -> Result<ObjectUrl, String> {
    ObjectUrl::parse(&format!("{}/", dir.display())).map_err(|e| e.to_string())
}

/// Runs `req` with scratch space under `work`, stores opened with `config`, the command
/// prefixed by `wrapper` (e.g. `ip netns exec NS`), its output and errors in `log`. `Err`
/// says what failed.
pub async fn run_stage(
    req: &StageRequest,
    work: &Path,
    config: &StoreConfig,
    wrapper: &[String],
    log: &Path,
) -> Result<(), String> {
    let local = StoreConfig::default();
    let made = |dir: &Path| {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
    };
    let (output, upload) = match local_dir(&req.output) {
        Some(dir) => (dir, None),
        None => (work.join("output"), Some(req.output.clone())),
    };
    // A rerun starts from an empty output.
    made(&output)?;
    let mut env = vec![
        ("SKYX_OUTPUT".to_string(), output.display().to_string()),
        ("SKYX_REGION".to_string(), req.region.clone()),
        ("SKYX_STAGE".to_string(), req.stage.clone()),
    ];
    for (name, location) in &req.inputs {
        let dir = match local_dir(location) {
            Some(dir) => dir,
            None => {
                let dir = work.join("inputs").join(name);
                made(&dir)?;
                let from = ObjectUrl::parse(location).map_err(|e| e.to_string())?;
                skyx_store::prefix::copy_prefix(&from, config, &as_dir_url(&dir)?, &local)
                    .await
                    .map_err(|e| format!("bringing its input {location} to its machine: {e}"))?;
                dir
            }
        };
        env.push((
            format!("SKYX_INPUT_{}", name.replace(['-', '.'], "_")),
            dir.display().to_string(),
        ));
    }
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).args(["sh", "-c", &req.command]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("sh");
            c.args(["-c", &req.command]);
            c
        }
    };
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let out = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("its command could not start: {e}"))?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        .map(KillGroupOnDrop);
    let status = child.wait().await;
    // Ended on its own: its group needs no killing (the ID may be reused by now).
    std::mem::forget(group);
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(format!(
                "its command exited with {s} (log: {})",
                log.display()
            ));
        }
        Err(e) => return Err(format!("waiting for its command: {e}")),
    }
    if let Some(to) = upload {
        let to_url = ObjectUrl::parse(&to).map_err(|e| e.to_string())?;
        skyx_store::prefix::copy_prefix(&as_dir_url(&output)?, &local, &to_url, config)
            .await
            .map_err(|e| format!("storing its output in {to}: {e}"))?;
    }
    Ok(())
}

/// The last `max` bytes of a file, as text.
fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The one stage an agent runs at a time, for the control API.
#[derive(Debug)]
pub struct StageSlot {
    work_root: PathBuf,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    state: watch::Receiver<StageState>,
    log: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The agent is going away: so is its stage, with its whole process group.
        self.task.abort();
    }
}

impl StageSlot {
    pub fn new(work_root: PathBuf) -> StageSlot {
        StageSlot {
            work_root,
            running: Mutex::new(None),
        }
    }

    /// Starts `req`; refused while another stage runs.
    pub fn start(&self, req: StageRequest, config: StoreConfig) -> Result<(), String> {
        let mut running = self.running.lock().expect("stage slot");
        if let Some(r) = running.as_ref()
            && *r.state.borrow() == StageState::Running
        {
            return Err("a stage is already running on this agent".into());
        }
        let name = req.stage.replace(['/', '\\'], "_");
        let work = self.work_root.join(&name);
        let log = self.work_root.join(format!("{name}.log"));
        let (tx, rx) = watch::channel(StageState::Running);
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            let outcome = run_stage(&req, &work, &config, &[], &log2).await;
            // Inputs brought down and output taken up: the scratch space is spent.
            let _ = std::fs::remove_dir_all(&work);
            let _ = tx.send(match outcome {
                Ok(()) => StageState::Succeeded,
                Err(why) => StageState::Failed { why },
            });
        });
        *running = Some(Running {
            state: rx,
            log,
            task,
        });
        Ok(())
    }

    /// The stage's state, waiting up to `wait` for it to end.
    pub async fn status(&self, wait: Duration) -> StageStatus {
        let Some((mut state, log)) = self
            .running
            .lock()
            .expect("stage slot")
            .as_ref()
            .map(|r| (r.state.clone(), r.log.clone()))
        else {
            return StageStatus {
                state: StageState::Idle,
                log_tail: String::new(),
            };
        };
        let _ = tokio::time::timeout(wait, state.wait_for(|s| *s != StageState::Running)).await;
        let now = state.borrow().clone();
        StageStatus {
            state: now,
            log_tail: tail(&log, 16 * 1024),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(dir: &Path, command: &str) -> StageRequest {
        StageRequest {
            stage: "s".into(),
            region: "aws:us-east-1".into(),
            command: command.into(),
            inputs: vec![("in".into(), format!("{}/in/", dir.display()))],
            output: format!("{}/out/", dir.display()),
        }
    }

    #[tokio::test]
    async fn a_stage_reads_its_input_writes_its_output_and_reports_how_it_ended() {
        let dir = std::env::temp_dir().join(format!("skyx-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("in")).unwrap();
        std::fs::write(dir.join("in/x"), "input").unwrap();
        let slot = StageSlot::new(dir.join("work"));
        assert_eq!(slot.status(Duration::ZERO).await.state, StageState::Idle);

        let ok = r#"sleep 0.3; cat "$SKYX_INPUT_in/x" > "$SKYX_OUTPUT/y"; echo "$SKYX_STAGE in $SKYX_REGION""#;
        slot.start(request(&dir, ok), StoreConfig::default())
            .unwrap();
        // One stage at a time.
        assert!(
            slot.start(request(&dir, "true"), StoreConfig::default())
                .is_err()
        );
        let status = slot.status(Duration::from_secs(30)).await;
        assert_eq!(status.state, StageState::Succeeded);
        assert_eq!(status.log_tail, "s in aws:us-east-1\n");
        assert_eq!(std::fs::read_to_string(dir.join("out/y")).unwrap(), "input");

        slot.start(
            request(&dir, "echo broken >&2; exit 4"),
            StoreConfig::default(),
        )
        .unwrap();
        let status = slot.status(Duration::from_secs(30)).await;
        match status.state {
            StageState::Failed { why } => assert!(why.contains("exit status: 4"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(status.log_tail, "broken\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
