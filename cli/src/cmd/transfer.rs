//! What `skyx cp` and `skyx sync` share: the transfer flags, planning the route, running the
//! copy with a progress bar and Ctrl-C handling, and the summary.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use skyx_agent_api::wire::{CompressionSpec, Transport};
use skyx_gateway::{
    CopyOptions, CopyReport, Listing, MetadataPolicy, ObjectFilter, SkippedObject, journal_path,
    list_copy, list_files_from,
};
use skyx_provision::LocalProvider;
use skyx_sky::SkyManifest;
use skyx_store::{ObjectStore, ObjectUrl, StoreConfig};

use crate::args::catalog::CatalogArgs;
use crate::args::ends::{EndArgs, Remotes, Side, default_config_path, resolve};
use crate::args::provider::ProviderArgs;
use crate::args::select::SelectArgs;
use crate::args::write::WriteArgs;
use crate::cmd::plan::{ConstraintArgs, ObjectiveArgs, RouteArgs};
pub use crate::error::{BadInput, PartialFailure, SkippedObjects};
use crate::units::parse_bytes;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    /// TCP connections opened by the hop handshake (both agents prove they hold the job's
    /// key); chunks sealed end to end, so relays forward ciphertext without decrypting it.
    Tcp,
    /// TCP connections each with mutual TLS: every hop decrypts and re-encrypts.
    Tls,
    /// One QUIC connection (TLS 1.3) with a stream per connection.
    Quic,
}

/// End-to-end encryption of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncryptArg {
    /// Sources seal every chunk (AES-256-GCM under a key of the job only they and the sinks
    /// hold); relays cannot read or alter it.
    On,
    /// Chunks unsealed: only for benchmarks inside one trust domain. With `--transport tcp`
    /// every byte then crosses the network in the clear, and anyone on the path can alter it.
    Off,
}

/// Whether the provider copies between the two ends itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerSideArg {
    /// When both ends allow it and the plan finds it better (always, without regions).
    Auto,
    /// Always; an error if the ends cannot.
    Always,
    /// Never: agents carry every byte.
    Never,
}

/// Flags every data-moving command takes.
#[derive(Debug, Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Every copied object's Content-Type (else the source's; a local file's is guessed from
    /// its name).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// User metadata to set on every copied object (added to the source's, replacing entries
    /// of the same name); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Copy no system properties or user metadata from the source (saves one request per
    /// object on cloud sources); the modification time is still carried.
    #[arg(long)]
    pub no_metadata: bool,
    /// Follow symbolic links in a local source, to files and directories (the default).
    #[arg(long, overrides_with = "no_follow_symlinks")]
    pub follow_symlinks: bool,
    /// Leave symbolic links in a local source out.
    #[arg(long, overrides_with = "follow_symlinks")]
    pub no_follow_symlinks: bool,
    /// Region of the source (e.g. aws:us-east-1). Needed for local paths and local servers;
    /// with neither region given, one local agent pair copies directly.
    #[arg(long, value_name = "REGION")]
    pub src_region: Option<String>,
    /// Region of the destination.
    #[arg(long, value_name = "REGION")]
    pub dst_region: Option<String>,
    /// Compression: auto (zstd -1, skipped for objects that do not shrink), off, zstd:LEVEL.
    #[arg(long, default_value = "auto")]
    pub compress: String,
    /// Connections on every hop of every route (default: the plan's; 8 without regions).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: Option<u32>,
    /// Data transport between agents.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportArg,
    /// Chunks sealed end to end between source and sink agents.
    #[arg(long, value_enum, default_value = "on")]
    pub encrypt: EncryptArg,
    /// Server-side copy (S3 CopyObject, GCS rewrite, Azure Copy Blob) between two stores of
    /// one cloud reached with the same identity (on Azure, any two accounts): auto uses it
    /// when the plan says it is better, or always when no regions are known.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub server_side: ServerSideArg,
    /// Chunk size (raised where the destination's part rules need it). [default: the copy
    /// engine's, 8MiB]
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,
    /// Print what would be copied, the plan and its predicted time and cost; copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Continue an interrupted copy of the same source and destination from its journal.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print a one-line status to stderr every DURATION (e.g. 1s), as rclone's `--stats`
    /// with `--stats-one-line` does: for logs, where a progress bar cannot draw.
    #[arg(long, value_name = "DURATION")]
    pub stats: Option<String>,
    /// Where journals and agent logs live (default $SKYX_STATE_DIR, else
    /// $XDG_STATE_HOME/skyx, else ~/.local/state/skyx).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run inside an emulated sky (`skyx sky up`), given by name or by a path with a `/`: agents
    /// run in their regions' namespaces, each end's store is its region's server, and the
    /// planner sees the sky's links (1 agent VM per region).
    #[arg(long, env = "SKYX_SKY", value_name = "NAME|DIR")]
    pub sky: Option<String>,
    /// At most this many requests per second to each end's store, all agents together (as
    /// rclone's --tpslimit, shared among the agents that use the store).
    #[arg(long, value_name = "N")]
    pub tpslimit: Option<f64>,
    /// At most this many bytes per second read from the source, all agents together
    /// (10MiB, 1G; shared among the source agents). Copies through agents only.
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// Agents that may be replaced after dying before the copy gives up.
    #[arg(long, default_value_t = CopyOptions::default().max_replacements)]
    pub max_replacements: u32,
    /// How long a sink keeps retrying a write its destination refuses for a reason that may
    /// pass (a reset, a 5xx, throttling) before the chunk is sent again or its object fails,
    /// and how long completing an object rides out the same (e.g. 30s, 5m; default 60s).
    #[arg(long, value_name = "DURATION")]
    pub sink_retry: Option<String>,
    #[command(flatten)]
    pub ends: EndArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    #[command(flatten)]
    pub route: RouteArgs,
    #[command(flatten)]
    pub constraints: ConstraintArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

/// Names, on stderr, each source object the copy will not write and why. Keys are shown
/// escaped: a key is remote input and may hold control characters.
pub fn warn_skipped(src: &ObjectUrl, skipped: &[SkippedObject]) {
    for s in skipped {
        let url = ObjectUrl {
            location: src.location.clone(),
            key: s.src_key.clone(),
        };
        eprintln!(
            "skyx: skipping {}: {}",
            url.to_string().escape_debug(),
            s.why
        );
    }
}

/// Fails with [`SkippedObjects`] when any object was skipped.
pub fn check_skipped(skipped: &[SkippedObject]) -> Result<()> {
    if skipped.is_empty() {
        Ok(())
    } else {
        Err(SkippedObjects(skipped.len()).into())
    }
}

/// What the flags take from the source: the objects `--files-from` names, else the listing
/// of `SRC` (`recursive`: everything under it), through the filters; and the filters, which
/// a sync applies to its deletions too.
pub async fn select_sources(
    t: &TransferArgs,
    ends: &Endpoints,
    recursive: bool,
) -> Result<(Listing, ObjectFilter)> {
    let filter = t.select.object_filter(std::time::SystemTime::now())?;
    let listing = match t.select.names()? {
        Some(names) => {
            list_files_from(
                ends.src.as_ref(),
                &ends.src_url,
                &ends.dst_url,
                &names,
                &filter,
            )
            .await?
        }
        None => {
            list_copy(
                ends.src.as_ref(),
                &ends.src_url,
                &ends.dst_url,
                recursive,
                &filter,
            )
            .await?
        }
    };
    Ok((listing, filter))
}

/// What `--content-type`, `--metadata` and `--no-metadata` ask for.
pub fn metadata_policy(args: &TransferArgs) -> Result<MetadataPolicy> {
    let mut set = std::collections::BTreeMap::new();
    for entry in &args.metadata {
        let Some((k, v)) = entry.split_once('=') else {
            bail!(BadInput(format!("--metadata {entry}: expected KEY=VALUE")));
        };
        let k = k.trim();
        let valid = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid {
            bail!(BadInput(format!(
                "--metadata {entry}: a key is letters, digits, '-', '_' or '.'"
            )));
        }
        set.insert(k.to_ascii_lowercase(), v.to_string());
    }
    if let Some(t) = &args.content_type
        && (t.is_empty() || !t.contains('/') || t.chars().any(char::is_control))
    {
        bail!(BadInput(format!(
            "--content-type {t:?}: expected a media type such as text/html"
        )));
    }
    Ok(MetadataPolicy {
        drop: args.no_metadata,
        content_type: args.content_type.clone(),
        set,
    })
}

/// Where journals, logs and pipeline state live: `--state-dir`, else `$SKYX_STATE_DIR`, else
/// `$XDG_STATE_HOME/skyx`, else `~/.local/state/skyx` (one rule for every command).
pub fn state_dir_from(flag: Option<&PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("SKYX_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("skyx");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".local/state/skyx")
}

pub(crate) fn state_dir(args: &TransferArgs) -> PathBuf {
    state_dir_from(args.state_dir.as_ref())
}

fn compression(text: &str) -> Result<CompressionSpec> {
    Ok(match text.trim() {
        "auto" => CompressionSpec::Auto { level: 1 },
        "off" | "none" => CompressionSpec::Off,
        t => match t.strip_prefix("zstd:").or(t.strip_prefix("zstd")) {
            Some("") => CompressionSpec::Zstd { level: 1 },
            Some(level) => {
                let level: i32 = level.parse().map_err(|_| {
                    BadInput(format!(
                        "--compress {t}: the level must be a number (zstd:3)"
                    ))
                })?;
                if !(-7..=22).contains(&level) {
                    return Err(
                        BadInput(format!("--compress {t}: zstd levels run from -7 to 22")).into(),
                    );
                }
                CompressionSpec::Zstd { level }
            }
            None => {
                return Err(
                    BadInput(format!("--compress {t}: expected auto, off or zstd:LEVEL")).into(),
                );
            }
        },
    })
}

/// The URLs and stores of a transfer.
pub struct Endpoints {
    pub src_url: ObjectUrl,
    pub dst_url: ObjectUrl,
    pub src: Arc<dyn ObjectStore>,
    pub dst: Arc<dyn ObjectStore>,
    /// Each end's settings when the user configured that end, as its agents are told them
    /// (credentials only when they were named for the end:
    /// [`crate::args::ends::End::for_agents`]).
    pub src_settings: Option<StoreConfig>,
    pub dst_settings: Option<StoreConfig>,
    /// How the destination stores what is written (`--storage-class`, `--sse`, ...).
    pub dst_write: skyx_store::WriteOptions,
    /// Whether the destination's service can copy from the source itself, or why not.
    pub server_side: Result<(), String>,
}

/// The emulated sky of `--sky`, if any: a state directory or a sky's name.
pub fn load_sky(args: &TransferArgs) -> Result<Option<SkyManifest>> {
    let Some(text) = &args.sky else {
        return Ok(None);
    };
    Ok(Some(crate::cmd::sky::resolve_sky(text)?))
}

/// How to reach one end's store: the process environment, or in a sky, the store of the
/// region the end is in (whose cloud must match the URL's).
fn end_config(
    sky: Option<&SkyManifest>,
    region: Option<&String>,
    url: &ObjectUrl,
    flag: &str,
) -> Result<StoreConfig> {
    let Some(sky) = sky else {
        return Ok(StoreConfig::from_env());
    };
    let Some(region) = region else {
        bail!(BadInput(format!(
            "in a sky, give {flag}: the region decides which store the URL means"
        )));
    };
    let r = crate::cmd::sky::sky_region(sky, region)?;
    let scheme = match url.location {
        // Served by each agent itself, in any region.
        skyx_store::StoreLocation::Local | skyx_store::StoreLocation::Synthetic { .. } => None,
        skyx_store::StoreLocation::S3 { .. } => Some("s3"),
        skyx_store::StoreLocation::Azure { .. } => Some("az"),
        skyx_store::StoreLocation::Gcs { .. } => Some("gs"),
    };
    if let Some(scheme) = scheme
        && scheme != r.store.scheme()
    {
        bail!(BadInput(format!(
            "{flag} {}: that region's store is {}://, not {scheme}://",
            r.region,
            r.store.scheme()
        )));
    }
    let env = SkyManifest::store_env(r);
    Ok(StoreConfig::from_lookup(&|k| env.get(k).cloned()))
}

/// Whether two local paths may be copied by this process rather than agents: not when they
/// stand for regions (a sky, or regions named: the path between them is what is copied over),
/// and not with `--resume`, whose journal only agents keep.
fn local_copy_in_process(
    args: &TransferArgs,
    src: &ObjectUrl,
    dst: &ObjectUrl,
) -> std::result::Result<(), String> {
    let local = |u: &ObjectUrl| u.location == skyx_store::StoreLocation::Local;
    if !(local(src) && local(dst)) {
        return Ok(());
    }
    if args.sky.is_some() || args.src_region.is_some() || args.dst_region.is_some() {
        return Err(
            "local paths in named regions are copied by agents, over the path between them".into(),
        );
    }
    if args.resume {
        return Err(
            "--resume goes on from the journal the agents keep; local paths are copied by agents"
                .into(),
        );
    }
    Ok(())
}

/// A local directory is not copied into itself: the walk would find what the copy writes
/// and copy it again, deeper each time (GNU `cp` refuses the same).
fn refuse_copy_into_itself(src: &ObjectUrl, dst: &ObjectUrl) -> Result<()> {
    let local = skyx_store::StoreLocation::Local;
    if src.location != local || dst.location != local {
        return Ok(());
    }
    let (s, d) = (src.key.trim_end_matches('/'), dst.key.trim_end_matches('/'));
    if !s.is_empty() && d.strip_prefix(s).is_some_and(|rest| rest.starts_with('/')) {
        bail!(BadInput(format!(
            "the destination /{d} is inside the source /{s}: a directory cannot be copied into itself"
        )));
    }
    Ok(())
}

pub async fn open_endpoints(args: &TransferArgs, src: &str, dst: &str) -> Result<Endpoints> {
    open_endpoints_in(args, src, dst, args.dst_region.as_ref()).await
}

/// As [`open_endpoints`], with the destination in `dst_region` (one of a broadcast's).
pub async fn open_endpoints_in(
    args: &TransferArgs,
    src: &str,
    dst: &str,
    dst_region: Option<&String>,
) -> Result<Endpoints> {
    let sky = load_sky(args)?;
    let remotes = load_remotes(args.ends.config.as_deref())?;
    let src_end = resolve(src, Side::Src, &args.ends, &remotes, |url| {
        end_config(sky.as_ref(), args.src_region.as_ref(), url, "--src-region")
    })?;
    let dst_end = resolve(dst, Side::Dst, &args.ends, &remotes, |url| {
        end_config(sky.as_ref(), dst_region, url, "--dst-region")
    })?;
    let (src_url, dst_url) = (src_end.url.clone(), dst_end.url.clone());
    let mut src_config = src_end.settings.clone();
    src_config.retry.requests_per_second = tps_limit(args)?;
    src_config.local.follow_symlinks = !args.no_follow_symlinks;
    let mut dst_config = dst_end.settings.clone();
    dst_config.retry.requests_per_second = tps_limit(args)?;
    // Checked before any store opens: a bad class or key writes nothing.
    dst_config.write = args.write.options(&dst_url.location)?;

    let src_store = skyx_store::open(&src_url, &src_config)
        .await
        .with_context(|| format!("opening the source {src}"))?;
    let dst_store = skyx_store::open(&dst_url, &dst_config)
        .await
        .with_context(|| format!("opening the destination {dst}"))?;
    // Fail before launching anything if the destination bucket is missing or refuses us.
    // (One page of a listing: enough to prove the bucket exists and we may read it.)
    match futures::TryStreamExt::try_next(&mut dst_store.list(&dst_url.key)).await {
        Ok(_) => {}
        // A local destination directory that does not exist yet is created by the copy; a
        // bucket that answers "not found" does not exist.
        Err(e)
            if e.kind == skyx_store::ErrorKind::NotFound
                && dst_url.location == skyx_store::StoreLocation::Local => {}
        Err(e) if e.kind == skyx_store::ErrorKind::NotFound => {
            let e = skyx_store::StoreError::new(
                skyx_store::ErrorKind::BucketNotFound,
                dst_url.location.to_string(),
                "list",
                &dst_url.key,
                format!("the destination bucket does not exist ({})", e.message),
            );
            return Err(anyhow::Error::new(e).context(format!("checking the destination {dst}")));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("checking the destination {dst}")));
        }
    }
    refuse_copy_into_itself(&src_url, &dst_url)?;
    let server_side = skyx_store::server_side::eligibility(
        &src_url.location,
        &src_config,
        &dst_url.location,
        &dst_config,
    )
    .and_then(|()| local_copy_in_process(args, &src_url, &dst_url));
    Ok(Endpoints {
        server_side,
        src_url,
        dst_url,
        src: src_store,
        dst: dst_store,
        src_settings: src_end.configured.then(|| src_end.for_agents(src_config)),
        dst_write: dst_config.write.clone(),
        dst_settings: dst_end.configured.then(|| dst_end.for_agents(dst_config)),
    })
}

/// The named remotes of `--config`, else of the default config file if there is one.
pub fn load_remotes(flag: Option<&std::path::Path>) -> Result<Remotes> {
    Ok(match flag {
        Some(path) => Remotes::load(Some(path), true)?,
        None => Remotes::load(default_config_path().as_deref(), false)?,
    })
}

/// The store root agents open (the URL without its key).
pub(crate) fn store_root(url: &ObjectUrl) -> String {
    match &url.location {
        skyx_store::StoreLocation::Local => "file:///".to_string(),
        loc => format!("{loc}/"),
    }
}

/// `--tpslimit`, checked.
pub fn tps_limit(args: &TransferArgs) -> Result<Option<f64>> {
    match args.tpslimit {
        Some(n) if !(n.is_finite() && n > 0.0) => {
            bail!(BadInput(format!(
                "--tpslimit {n}: expected requests per second, more than 0"
            )))
        }
        n => Ok(n),
    }
}

/// `--bwlimit`, in bytes per second, checked.
pub fn bw_limit(args: &TransferArgs) -> Result<Option<u64>> {
    let Some(text) = &args.bwlimit else {
        return Ok(None);
    };
    let rate = text.trim().trim_end_matches("/s");
    match parse_bytes(rate) {
        Ok(0) => bail!(BadInput(format!(
            "--bwlimit {text}: more than 0 bytes per second"
        ))),
        Ok(n) => Ok(Some(n)),
        Err(e) => bail!(BadInput(format!("--bwlimit {text}: {e} (e.g. 10MiB)"))),
    }
}

/// `--sink-retry`, checked: above zero, and under half the time the gateway waits for a chunk
/// to land (past that it would send again a chunk the sink still holds).
/// `--stats`: how often to print a status line, if asked.
pub fn stats_every(args: &TransferArgs) -> Result<Option<std::time::Duration>> {
    let Some(text) = &args.stats else {
        return Ok(None);
    };
    match crate::units::parse_duration_s(text) {
        Ok(s) if s > 0.0 => Ok(Some(std::time::Duration::from_secs_f64(s))),
        _ => bail!(BadInput(format!(
            "--stats {text}: expected a positive duration such as 1s or 500ms"
        ))),
    }
}

fn sink_retry(args: &TransferArgs) -> Result<std::time::Duration> {
    let defaults = CopyOptions::default();
    let Some(text) = &args.sink_retry else {
        return Ok(defaults.sink_retry);
    };
    let most = defaults.tracker.landing_timeout.as_secs_f64() / 2.0;
    match crate::units::parse_duration_s(text) {
        Ok(s) if s > 0.0 && s < most => Ok(std::time::Duration::from_secs_f64(s)),
        _ => bail!(BadInput(format!(
            "--sink-retry {text}: expected a duration above zero and under {} (e.g. 30s, 2m)",
            crate::units::format_duration(most)
        ))),
    }
}

pub fn options(args: &TransferArgs, src: &ObjectUrl, dst: &ObjectUrl) -> Result<CopyOptions> {
    let chunk_size = match &args.chunk_size {
        None => CopyOptions::default().chunk_size,
        Some(text) => {
            let size = parse_bytes(text).map_err(|e| BadInput(format!("--chunk-size: {e}")))?;
            if size < 64 * 1024 {
                bail!(BadInput(format!("--chunk-size {text}: at least 64KiB")));
            }
            if size > skyx_gateway::MAX_CHUNK {
                bail!(BadInput(format!(
                    "--chunk-size {text}: at most {} (the largest chunk a frame carries)",
                    crate::units::format_bytes(skyx_gateway::MAX_CHUNK as f64)
                )));
            }
            size
        }
    };
    Ok(CopyOptions {
        tps_limit: tps_limit(args)?,
        bw_limit: bw_limit(args)?,
        transport: match args.transport {
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Tls => Transport::Tls,
            TransportArg::Quic => Transport::Quic,
        },
        seal_chunks: args.encrypt == EncryptArg::On,
        compression: compression(&args.compress)?,
        chunk_size,
        journal: Some(journal_path(
            &state_dir(args),
            &src.to_string(),
            &dst.to_string(),
        )),
        resume: args.resume,
        max_replacements: args.max_replacements,
        sink_retry: sink_retry(args)?,
        // Fault injection for the crash-and-resume tests (see tests/e2e/cp_faults.rs).
        crash_after_landed: std::env::var("SKYX_FAULT_ABORT_AFTER_LANDED")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(|after| skyx_gateway::CrashAfter {
                after,
                crash: Arc::new(|| std::process::abort()),
            }),
        ..Default::default()
    })
}

/// Agents of `provider` start in their regions' namespaces of `sky`, with their regions'
/// stores.
pub fn in_sky(provider: &mut LocalProvider, sky: &SkyManifest) {
    provider.namespaces = sky.namespaces();
    provider.region_env = sky
        .spec
        .regions
        .iter()
        .map(|r| {
            (
                r.region.to_string(),
                SkyManifest::store_env(r).into_iter().collect(),
            )
        })
        .collect();
}

/// Exit with the right code when objects failed.
pub fn check_failures(report: &CopyReport) -> Result<()> {
    if report.objects_failed.is_empty() {
        Ok(())
    } else {
        Err(PartialFailure {
            failed: report.objects_failed.len(),
            total: report.objects_total,
        }
        .into())
    }
}
