//! [`LocalProvider`] (the default, no cloud account needed) runs agents as processes on this
//! machine. Each is started with its stdin on a pipe and `--exit-on-stdin-eof`, so an agent
//! never outlives the gateway that launched it, even one killed with SIGKILL; and with
//! `--idle-timeout`, so an agent also exits when nobody polls it. A region can be mapped to a
//! network namespace (`ip netns exec NS skyx-agent ...`), which is how the emulated sky puts
//! each region's agents behind that region's shaped links.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use skyx_agent_api::wire::{GATEWAY_CERT_ENV, Ready, TOKEN_ENV};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::{AgentHandle, LaunchRequest, LaunchedAgent, Provider, ProviderError};

/// Agents as local processes.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    /// The agent program and the arguments before its own flags (`skyx-agent`, or `skyx agent`).
    pub program: PathBuf,
    pub program_args: Vec<String>,
    /// Where each agent's log goes (`<dir>/<name>.log`); discarded when `None`.
    pub log_dir: Option<PathBuf>,
    /// Seconds without a control request after which an agent exits.
    pub idle_timeout_s: u64,
    /// Regions whose agents run inside a network namespace, with the address their data
    /// listeners bind to there.
    pub namespaces: BTreeMap<String, (String, IpAddr)>,
    /// Extra environment for every agent (e.g. fault injection in tests).
    pub env: Vec<(String, String)>,
    /// Environment for the agents of one region, after `env` (in an emulated sky: where that
    /// region's object store is).
    pub region_env: BTreeMap<String, BTreeMap<String, String>>,
}

impl LocalProvider {
    /// `SKYX_AGENT_BIN` when set, else the running `skyx` binary itself as `skyx agent`: one
    /// binary to install, and an agent of exactly the gateway's version.
    pub fn default_program() -> (PathBuf, Vec<String>) {
        match std::env::var_os("SKYX_AGENT_BIN") {
            Some(p) => (PathBuf::from(p), Vec::new()),
            None => (
                std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skyx")),
                vec!["agent".to_string()],
            ),
        }
    }

    pub fn new((program, program_args): (PathBuf, Vec<String>)) -> Self {
        LocalProvider {
            program,
            program_args,
            log_dir: None,
            idle_timeout_s: 60,
            namespaces: BTreeMap::new(),
            env: Vec::new(),
            region_env: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
struct LocalAgent {
    child: Child,
    /// Held open: the agent exits when it closes.
    _stdin: Option<ChildStdin>,
}

#[async_trait]
impl AgentHandle for LocalAgent {
    fn id(&self) -> String {
        self.child
            .id()
            .map(|p| format!("pid {p}"))
            .unwrap_or_else(|| "exited".into())
    }

    fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn terminate(&mut self) {
        // Closing stdin asks it to exit; give it a moment, then kill.
        self._stdin.take();
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
        let namespace = self.namespaces.get(&req.region);
        let mut cmd = match namespace {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.program_args);
        let data_bind = namespace.map(|(_, ip)| ip.to_string());
        cmd.arg("--name")
            .arg(&req.name)
            .arg("--exit-on-stdin-eof")
            .arg("--idle-timeout")
            .arg(self.idle_timeout_s.to_string());
        if let Some(ip) = &data_bind {
            cmd.arg("--data-bind")
                .arg(ip)
                .arg("--control")
                .arg(format!("{ip}:0"));
        }
        cmd.env(TOKEN_ENV, &req.token)
            .env(GATEWAY_CERT_ENV, crate::cert_env(&req.gateway))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.region_env.get(&req.region).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        match &self.log_dir {
            Some(dir) => {
                let _ = std::fs::create_dir_all(dir);
                let file_name =
                    format!("{}-{}.log", req.job, req.name.replace([':', '/', '#'], "_"));
                match std::fs::File::create(dir.join(file_name)) {
                    Ok(f) => cmd.stderr(f),
                    Err(_) => cmd.stderr(Stdio::null()),
                };
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        let mut child = cmd.spawn().map_err(|source| ProviderError::Spawn {
            agent: req.name.clone(),
            program: self.program.display().to_string(),
            source,
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        let ready: Ready = match line {
            Ok(Ok(Some(l))) => serde_json::from_str(&l).map_err(|e| ProviderError::NotReady {
                agent: req.name.clone(),
                why: format!("unexpected first line {l:?}: {e}"),
            })?,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                return Err(ProviderError::NotReady {
                    agent: req.name.clone(),
                    why: format!("it exited ({status:?}) before listening"),
                });
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(ProviderError::NotReady {
                    agent: req.name.clone(),
                    why: "no ready line within 20 s".into(),
                });
            }
        };
        // Drain the rest of stdout so the agent never blocks writing to it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(LaunchedAgent {
            name: req.name,
            region: req.region,
            control: ready.control,
            handle: Box::new(LocalAgent {
                child,
                _stdin: stdin,
            }),
        })
    }
}
