//! Brings a stage's own Ray cluster up and down around it with Ray's cluster launcher CLI:
//! `ray up` (Ray's node providers make the machines), `ray dashboard` (an SSH tunnel to the
//! head's dashboard, which listens on the node's loopback only) and `ray down`. The thin driver
//! of [`super::cluster`].
//!
//! A cluster is torn down whatever happens: by [`LaunchedCluster::down`] when its stage gives
//! its compute back, and otherwise (a launch cut short, a compute dropped) as it is dropped.
//! `ray down` takes minutes: it runs as a process of its own, not waited for (the run goes on,
//! and it outlives skyx if it must; its log is beside the config). Every `ray` command runs in
//! a process group of its own, so the terminal's Ctrl-C, meant for skyx, reaches none of them
//! (skyx stops them itself), and the tunnel's `ssh` goes with it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use skyx_catalog::RegionId;

use super::cluster::{
    ClusterError, ClusterSpec, NODE_SKYX, cluster_config, cluster_name, says_no_capacity,
};
use super::head::RayHead;
use super::jobs::StageResources;
use crate::run::ComputeError;

/// How to launch clusters where stages have none.
#[derive(Debug, Clone)]
pub struct RayLauncher {
    /// The `ray` program (Ray's CLI, with its cloud's SDK beside it).
    pub program: String,
    /// Where each cluster's config and the logs of its `ray` commands go.
    pub dir: PathBuf,
    /// The pipeline's name: part of its clusters' names.
    pub pipeline: String,
    /// The version `program` says it is (`ray --version`).
    pub ray_version: String,
    /// The skyx program mounted on the nodes (a Linux x86_64 build).
    pub skyx: String,
    /// Where the nodes have it (the mount's target); `None`: [`NODE_SKYX`].
    pub node_skyx: Option<String>,
    pub gcp_project: Option<String>,
    pub azure_subscription: Option<String>,
    /// How long the head may take to answer through the tunnel once `ray up` is done.
    pub head_timeout: Duration,
}

/// A cluster `ray up` made (or may have made): `ray down` runs for it when it is dropped.
#[derive(Debug)]
pub struct LaunchedCluster {
    pub name: String,
    teardown: Teardown,
    tunnel: Option<Tunnel>,
}

impl RayLauncher {
    /// Where the nodes of its clusters have skyx.
    pub fn node_skyx(&self) -> &str {
        self.node_skyx.as_deref().unwrap_or(NODE_SKYX)
    }

    /// Brings up the cluster of `stage` placed in `region` on `instance`, and its head's
    /// dashboard through a tunnel. A cloud out of capacity or quota is a capacity error (the
    /// stage moves on); whatever `ray up` made is torn down before it returns an error.
    pub async fn up(
        &self,
        stage: &str,
        region: &str,
        instance: &str,
        resources: &StageResources,
    ) -> Result<(LaunchedCluster, RayHead), ComputeError> {
        let failed = |why: String| ComputeError::Failed(why);
        let region_id: RegionId = region.parse().map_err(|e| failed(format!("{e}")))?;
        let name = cluster_name(&self.pipeline, stage, &format!("{region}/{instance}"));
        let spec = ClusterSpec {
            name: name.clone(),
            region: region_id,
            instance: instance.to_string(),
            resources: resources.clone(),
            ray_version: self.ray_version.clone(),
            skyx: self.skyx.clone(),
            node_skyx: self.node_skyx().to_string(),
            gcp_project: self.gcp_project.clone(),
            azure_subscription: self.azure_subscription.clone(),
        };
        let config = cluster_config(&spec).map_err(|e| match e {
            ClusterError::NotOffered(why) => ComputeError::Capacity {
                region: region.to_string(),
                why,
            },
            ClusterError::Setting(why) => failed(why),
        })?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| failed(format!("{}: {e}", self.dir.display())))?;
        let path = self.dir.join(format!("{name}.yaml"));
        let text = serde_json::to_string_pretty(&config).expect("a JSON value");
        std::fs::write(&path, text).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let mut cluster = LaunchedCluster {
            name: name.clone(),
            teardown: Teardown {
                program: self.program.clone(),
                config: path.clone(),
                armed: true,
            },
            tunnel: None,
        };
        tracing::info!(cluster = %name, %region, %instance, "ray up");
        let up_log = self.dir.join(format!("{name}.up.log"));
        // `--no-restart`: a cluster that is up already (a resumed run's) keeps its Ray, and so
        // the job an earlier gateway left running on it.
        let up = self
            .ray(
                &[
                    "up",
                    "-y",
                    "--no-restart",
                    "--no-config-cache",
                    "--disable-usage-stats",
                ],
                &path,
                &up_log,
            )
            .await;
        if let Err(why) = up {
            let said = std::fs::read_to_string(&up_log).unwrap_or_default();
            cluster.down().await;
            // Only how it ended: Ray's AWS provider logs a subnet out of capacity and goes on
            // to the next, and a later failure is no capacity error.
            return Err(if says_no_capacity(&last_lines(&said, 5)) {
                ComputeError::Capacity {
                    region: region.to_string(),
                    why: format!(
                        "ray up of cluster {name}: {} (its log: {})",
                        last_lines(&said, 3),
                        up_log.display()
                    ),
                }
            } else {
                failed(format!(
                    "ray up of cluster {name} {why}: {} (its log: {})",
                    last_lines(&said, 3),
                    up_log.display()
                ))
            });
        }
        match self.tunnel(&name, &path).await {
            Ok((tunnel, head)) => {
                cluster.tunnel = Some(tunnel);
                Ok((cluster, head))
            }
            Err(why) => {
                cluster.down().await;
                Err(failed(format!("cluster {name}: {why}")))
            }
        }
    }

    /// `ray dashboard`: the head's dashboard on a free port of this machine's loopback, once it
    /// answers there.
    async fn tunnel(&self, name: &str, config: &Path) -> Result<(Tunnel, RayHead), String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free local port: {e}"))?
            .port();
        let log = self.dir.join(format!("{name}.tunnel.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let tunnel = tokio::process::Command::new(&self.program)
            .args([
                "dashboard",
                "--no-config-cache",
                "--port",
                &port.to_string(),
            ])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.program))?;
        let mut tunnel = Tunnel(tunnel);
        let head = RayHead::new(&format!("http://127.0.0.1:{port}"))?;
        let asked = Instant::now();
        loop {
            if head.version().await.is_ok() {
                return Ok((tunnel, head));
            }
            if let Ok(Some(status)) = tunnel.0.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "`ray dashboard` ended ({status}): {}",
                    last_lines(&said, 3)
                ));
            }
            if asked.elapsed() > self.head_timeout {
                return Err(format!(
                    "the head did not answer through `ray dashboard` within {:?} (its log: {})",
                    self.head_timeout,
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs `ray ARGS CONFIG`, its output to `log`.
    async fn ray(&self, args: &[&str], config: &Path, log: &Path) -> Result<(), String> {
        run_ray(&self.program, args, config, log).await
    }
}

impl LaunchedCluster {
    /// Closes the tunnel and starts `ray down` (not waited for).
    pub async fn down(&mut self) {
        if let Some(tunnel) = self.tunnel.take() {
            tunnel.close().await;
        }
        self.teardown.start();
    }
}

/// `ray dashboard` and the `ssh` it runs, a process group of their own.
#[derive(Debug)]
struct Tunnel(tokio::process::Child);

impl Tunnel {
    async fn close(mut self) {
        kill_group(&self.0);
        let _ = self.0.wait().await;
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        kill_group(&self.0);
    }
}

/// SIGKILL to the process group `child` leads (its `ssh` too).
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

/// The `ray down` a cluster is owed: started by [`LaunchedCluster::down`], or as it is dropped.
#[derive(Debug)]
struct Teardown {
    program: String,
    config: PathBuf,
    armed: bool,
}

impl Teardown {
    /// Starts `ray down` once, in a process group of its own, its output beside the config.
    fn start(&mut self) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        let log = self.config.with_extension("down.log");
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(["down", "-y"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .process_group(0);
        if let Ok(out) = std::fs::File::create(&log) {
            if let Ok(err) = out.try_clone() {
                cmd.stderr(err);
            }
            cmd.stdout(out);
        }
        match cmd.spawn() {
            Ok(_) => tracing::info!(
                config = %self.config.display(),
                "ray down started (its log: {})",
                log.display()
            ),
            Err(e) => tracing::error!(
                config = %self.config.display(),
                "ray down could not start ({e}): the cluster may still run; `{} down -y {}` \
                 tears it down",
                self.program,
                self.config.display()
            ),
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.start();
    }
}

async fn run_ray(program: &str, args: &[&str], config: &Path, log: &Path) -> Result<(), String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        // A command cut short (a launch abandoned) ends with it; the cluster's teardown follows.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("could not start ({program}: {e})"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed ({status})"))
    }
}

/// The last `n` lines of `text` that say something, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
