//! Building and tearing down a sky on this machine: `ip` and `tc` commands, the store servers
//! started inside their namespaces, and a manifest saved before anything is created so that
//! `down` can always clean up, even after an `up` that failed halfway.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::SkyError;
use crate::manifest::{S3_ACCESS_KEY, S3_SECRET_KEY, ServerProcess, SkyManifest};
use crate::spec::{SkyRegion, SkySpec, StoreKind};

/// Our GCS emulator launcher, written into the sky's state directory so an installed `skyx`
/// does not need the repository.
const GCS_LAUNCHER: &str = include_str!("../../deploy/gcs_emulator.py");

/// Where the store servers' programs are: what `deploy/test-servers.sh install` puts in
/// `SKYX_TOOLS_DIR` (default `~/.cache/skyx-tools`).
#[derive(Debug, Clone)]
pub struct Tools {
    /// The `skyx` program, which runs the delay line (`skyx sky delay-line`).
    pub skyx: PathBuf,
    pub s3s_fs: PathBuf,
    pub azurite_blob: PathBuf,
    /// The Python with gcp-storage-emulator installed.
    pub python: PathBuf,
}

impl Tools {
    pub fn from_env() -> Tools {
        let dir = std::env::var_os("SKYX_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/skyx-tools")
            });
        Tools {
            skyx: PathBuf::from("skyx"),
            s3s_fs: dir.join("bin/s3s-fs"),
            azurite_blob: dir.join("npm/bin/azurite-blob"),
            python: dir.join("venv/bin/python"),
        }
    }

    fn check(&self, kinds: impl Iterator<Item = StoreKind>) -> Result<(), SkyError> {
        for kind in kinds {
            let (what, path) = match kind {
                StoreKind::S3 => ("s3s-fs", &self.s3s_fs),
                StoreKind::Azurite => ("Azurite", &self.azurite_blob),
                StoreKind::Gcs => ("gcp-storage-emulator's Python", &self.python),
            };
            if !path.exists() {
                return Err(SkyError::ToolMissing {
                    what,
                    path: path.display().to_string(),
                });
            }
        }
        Ok(())
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn run(argv: &[String]) -> Result<String, SkyError> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SkyError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SkyError::Command {
            command: argv.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SkyError {
    let what = what.into();
    move |source| SkyError::Io { what, source }
}

/// Namespaces on this machine whose names say they belong to sky `name`.
fn namespaces_of(name: &str) -> Vec<String> {
    let Ok(list) = run(&["ip".to_string(), "netns".into(), "list".into()]) else {
        return Vec::new();
    };
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| {
            ["aws", "gcp", "azure"]
                .iter()
                .any(|c| ns.starts_with(&format!("{name}-{c}-")))
        })
        .map(str::to_string)
        .collect()
}

/// Builds the sky: network, store servers, manifest, and the planner's grid. On any failure
/// everything created so far is removed before the error is returned.
pub fn up(spec: SkySpec, state_dir: &Path, tools: &Tools) -> Result<SkyManifest, SkyError> {
    if !is_root() {
        return Err(SkyError::NotRoot);
    }
    tools.check(spec.regions.iter().map(|r| r.store))?;
    if state_dir.join(SkyManifest::FILE).exists() || !namespaces_of(&spec.name).is_empty() {
        return Err(SkyError::AlreadyUp {
            name: spec.name.clone(),
            state_dir: state_dir.display().to_string(),
        });
    }
    std::fs::create_dir_all(state_dir.join("logs"))
        .map_err(io(format!("creating {}", state_dir.display())))?;
    let mut manifest = SkyManifest {
        spec,
        state_dir: state_dir.to_path_buf(),
        servers: Vec::new(),
        delay_line: None,
    };
    manifest.save()?;
    match build(&mut manifest, tools) {
        Ok(()) => Ok(manifest),
        Err(e) => {
            tracing::warn!("sky up failed ({e}); removing what was built");
            if let Err(cleanup) = down(&manifest.state_dir, &manifest.spec.name) {
                tracing::warn!("cleaning up after the failed up: {cleanup}");
            }
            Err(e)
        }
    }
}

fn build(manifest: &mut SkyManifest, tools: &Tools) -> Result<(), SkyError> {
    for argv in manifest.spec.network_commands() {
        run(&argv)?;
    }
    // Nothing crosses a link, the control paths included, until the delay line carries it.
    let pid = start_delay_line(&manifest.state_dir, tools)?;
    manifest.delay_line = Some(pid);
    manifest.save()?;
    wait_delay_line(&manifest.state_dir, pid)?;
    let launcher = manifest.state_dir.join("gcs_emulator.py");
    std::fs::write(&launcher, GCS_LAUNCHER).map_err(io("writing the GCS launcher"))?;
    let regions = manifest.spec.regions.clone();
    for region in &regions {
        let server = start_server(region, &manifest.state_dir, tools, &launcher)?;
        manifest.servers.push(server);
        manifest.save()?;
    }
    for (region, server) in regions.iter().zip(&manifest.servers) {
        wait_listening(region, server)?;
    }
    let grid = manifest.spec.expected_grid();
    std::fs::write(
        manifest.grid_path(),
        grid.to_csv(&format!("sky:{}", manifest.spec.name)),
    )
    .map_err(io("writing the sky's grid"))?;
    Ok(())
}

fn delay_line_log(state_dir: &Path) -> PathBuf {
    state_dir.join("logs").join("delay-line.log")
}

/// Starts `skyx sky delay-line` for the sky whose manifest is in `state_dir`, in its own
/// process group (a Ctrl-C where `up` ran must not stop it; `down` does).
fn start_delay_line(state_dir: &Path, tools: &Tools) -> Result<u32, SkyError> {
    // Only this delay line's word counts.
    let _ = std::fs::remove_file(state_dir.join(SkyManifest::DELAY_READY_FILE));
    let mut cmd = Command::new(&tools.skyx);
    cmd.args(["sky", "delay-line", "--state-dir"])
        .arg(state_dir);
    let what = format!("{} sky delay-line", tools.skyx.display());
    spawn_detached(&mut cmd, &delay_line_log(state_dir), what)
}

/// Starts `cmd` with its output to `log`, in its own process group: a Ctrl-C in the terminal
/// that ran `sky up` must not take the sky's processes down with it; `down` signals the group.
fn spawn_detached(cmd: &mut Command, log: &Path, what: String) -> Result<u32, SkyError> {
    let file = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
    let err = file.try_clone().map_err(io("cloning a log handle"))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| SkyError::Spawn {
            program: what,
            source,
        })?;
    Ok(child.id())
}

fn wait_delay_line(state_dir: &Path, pid: u32) -> Result<(), SkyError> {
    let ready = state_dir.join(SkyManifest::DELAY_READY_FILE);
    let limit = Duration::from_secs(30);
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready.exists() {
            return Ok(());
        }
        if !alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(delay_line_log(state_dir)).unwrap_or_default();
    Err(SkyError::DelayLineNotReady {
        seconds: limit.as_secs(),
        log: log.lines().rev().take(5).collect::<Vec<_>>().join(" | "),
    })
}

fn start_server(
    region: &SkyRegion,
    state_dir: &Path,
    tools: &Tools,
    gcs_launcher: &Path,
) -> Result<ServerProcess, SkyError> {
    let addr = region.addr.to_string();
    let port = region.store.port().to_string();
    let data = state_dir.join("data").join(&region.namespace);
    std::fs::create_dir_all(&data).map_err(io(format!("creating {}", data.display())))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &region.namespace]);
    match region.store {
        StoreKind::S3 => {
            cmd.arg(&tools.s3s_fs).args([
                "--host",
                &addr,
                "--port",
                &port,
                "--access-key",
                S3_ACCESS_KEY,
                "--secret-key",
                S3_SECRET_KEY,
            ]);
            cmd.arg(&data);
        }
        StoreKind::Azurite => {
            cmd.arg(&tools.azurite_blob)
                .args([
                    "--blobHost",
                    &addr,
                    "--blobPort",
                    &port,
                    "--inMemoryPersistence",
                ])
                .args(["--loose", "--skipApiVersionCheck", "--disableTelemetry"]);
        }
        StoreKind::Gcs => {
            cmd.arg(&tools.python).arg(gcs_launcher).args([
                "start",
                "-H",
                &addr,
                "--port",
                &port,
                "--in-memory",
            ]);
        }
    }
    let log = state_dir
        .join("logs")
        .join(format!("{}-{:?}.log", region.namespace, region.store).to_lowercase());
    cmd.current_dir(&data);
    let what = format!("{:?} server for {}", region.store, region.region);
    let pid = spawn_detached(&mut cmd, &log, what)?;
    Ok(ServerProcess {
        region: region.region.clone(),
        kind: region.store,
        pid,
        log,
    })
}

fn wait_listening(region: &SkyRegion, server: &ServerProcess) -> Result<(), SkyError> {
    let addr = SocketAddr::new(region.addr.into(), region.store.port());
    let limit = Duration::from_secs(60);
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if !alive(server.pid) {
            break; // it exited: its log says why
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(&server.log).unwrap_or_default();
    let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
    Err(SkyError::ServerNotReady {
        region: region.region.to_string(),
        kind: region.store,
        addr: addr.to_string(),
        seconds: limit.as_secs(),
        log: tail,
    })
}

/// Whether a process runs (an exited child of ours lingers as a zombie until reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn kill(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status();
}

fn pids_in(ns: &str) -> Vec<String> {
    run(&["ip".into(), "netns".into(), "pids".into(), ns.into()])
        .map(|out| out.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Tears sky `name` down: stops its servers, its delay line and every other process in its
/// namespaces (agents, tools), deletes the namespaces (which takes every TUN device, ifb and
/// route with them) and the
/// state directory. Works from the manifest when there is one, and otherwise finds the
/// namespaces by name, so a half-built sky goes too.
pub fn down(state_dir: &Path, name: &str) -> Result<Vec<String>, SkyError> {
    if !is_root() {
        return Err(SkyError::NotRoot);
    }
    let manifest = SkyManifest::load(state_dir).ok();
    let mut namespaces = namespaces_of(name);
    if let Some(m) = &manifest {
        for s in &m.servers {
            kill("-TERM", &format!("-{}", s.pid));
        }
        if let Some(pid) = m.delay_line {
            kill("-KILL", &format!("-{pid}"));
        }
        for r in &m.spec.regions {
            if !namespaces.contains(&r.namespace) {
                namespaces.push(r.namespace.clone());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = namespaces.iter().flat_map(|ns| pids_in(ns)).collect();
        if left.is_empty() {
            break;
        }
        let signal = if Instant::now() < deadline - Duration::from_secs(3) {
            "-TERM"
        } else {
            "-KILL"
        };
        for pid in &left {
            kill(signal, pid);
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for ns in &namespaces {
        if !Path::new("/run/netns").join(ns).exists() {
            continue;
        }
        match run(&["ip".into(), "netns".into(), "del".into(), ns.clone()]) {
            Ok(_) => removed.push(ns.clone()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    // The root-side ends of the control links (`<name>c<i>`, persistent TUN devices) outlive
    // their namespaces: remove them, manifest or not.
    let control = |dev: &str| {
        dev.strip_prefix(&format!("{name}c"))
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Ok(devs) = std::fs::read_dir("/sys/class/net") {
        for dev in devs.flatten() {
            let dev = dev.file_name().to_string_lossy().into_owned();
            if control(&dev) {
                let _ = run(&["ip".into(), "link".into(), "del".into(), dev]);
            }
        }
    }
    if !failures.is_empty() {
        return Err(SkyError::Command {
            command: "ip netns del".into(),
            stderr: failures.join("; "),
        });
    }
    if state_dir.join(SkyManifest::FILE).exists() {
        std::fs::remove_dir_all(state_dir)
            .map_err(io(format!("removing {}", state_dir.display())))?;
    }
    Ok(removed)
}
