//! `skyx stage-run`: one pipeline stage on this machine, as a Ray job's entrypoint runs it (see
//! `skyx_pipeline_run::ray`): the stage's request from `SKYX_STAGE_REQUEST`, its inputs
//! brought down from their stores, its command run, its output taken up, with this machine's
//! own store credentials (its environment, or its VM's identity). The command's output is
//! printed when it ends, into the job's log.

use anyhow::{Context, Result, bail};
use skyx_agent_api::wire::StageRequest;
use skyx_pipeline_run::ray::STAGE_REQUEST_ENV;

pub fn run() -> Result<()> {
    let text = std::env::var(STAGE_REQUEST_ENV).with_context(|| {
        format!("{STAGE_REQUEST_ENV} is not set: skyx stage-run is a Ray job's entrypoint")
    })?;
    let request: StageRequest = serde_json::from_str(&text)
        .with_context(|| format!("{STAGE_REQUEST_ENV} is not a stage request"))?;
    let work = tempdir_for(&request.stage)?;
    let log = work.join("stage.log");
    let runtime = tokio::runtime::Runtime::new()?;
    let config = skyx_store::StoreConfig::from_env();
    let outcome = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Ray stops a job with SIGTERM (then SIGKILL) to the entrypoint's process group; the
        // stage's command runs in a group of its own, which goes with the stage's future.
        let (mut term, mut int) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        anyhow::Ok(tokio::select! {
            outcome = skyx_agent::stage::run_stage(&request, &work, &config, &[], &log) => outcome,
            _ = term.recv() => Err("stopped (SIGTERM)".to_string()),
            _ = int.recv() => Err("stopped (SIGINT)".to_string()),
        })
    })?;
    // The command's own output first, then what skyx has to say about it.
    if let Ok(text) = std::fs::read(&log) {
        use std::io::Write;
        let _ = std::io::stdout().write_all(&text);
    }
    let _ = std::fs::remove_dir_all(&work);
    if let Err(why) = outcome {
        bail!("stage {} in {}: {why}", request.stage, request.region);
    }
    Ok(())
}

/// A scratch directory of this run of the stage, under the system's temporary directory.
fn tempdir_for(stage: &str) -> Result<std::path::PathBuf> {
    let safe: String = stage
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = std::env::temp_dir().join(format!("skyx-stage-{safe}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
