//! Each end of a transfer configured on its own: `--src-*`/`--dst-*` flags and named remotes
//! from a config file, over what the environment says (which stays the default).
//!
//! A remote is written `NAME:bucket/key` (as in rclone) and defined in the config file
//! (`--config`, else `$SKYX_CONFIG`, else `$XDG_CONFIG_HOME/skyx/config.toml`, else
//! `~/.config/skyx/config.toml`; skyx works without one):
//!
//! ```toml
//! [remotes.wasabi]
//! type = "s3"
//! endpoint = "https://s3.eu-central-1.wasabisys.com"
//! access_key_id = "..."
//! secret_access_key = "..."
//!
//! [remotes.partner]
//! type = "azure"
//! account = "partnerdata"
//! sas_token = "sv=...&sig=..."
//! ```
//!
//! The settings of an end apply in this order, later winning: the environment (or, in an
//! emulated sky, the end's region), the remote, the end's flags. An end configured by a
//! remote or a flag has its settings handed to the agents that use it (over the control
//! API, never on a command line); others leave agents to their own environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;
use skyx_store::{ObjectUrl, StoreConfig, StoreLocation};

use crate::error::BadInput;

/// The per-end flags every data-moving command takes.
#[derive(Debug, Args, Default, Clone)]
pub struct EndArgs {
    /// The source's endpoint: an S3-compatible server (MinIO, R2, Wasabi), a GCS endpoint
    /// (Private Service Connect; an emulator with --src-no-sign-request), an Azure blob
    /// endpoint.
    #[arg(long, value_name = "URL")]
    pub src_endpoint: Option<String>,
    /// The destination's endpoint.
    #[arg(long, value_name = "URL")]
    pub dst_endpoint: Option<String>,
    /// The AWS profile an S3 source is read with (~/.aws/config, ~/.aws/credentials).
    #[arg(long, value_name = "NAME")]
    pub src_profile: Option<String>,
    /// The AWS profile an S3 destination is written with.
    #[arg(long, value_name = "NAME")]
    pub dst_profile: Option<String>,
    /// Read the source without credentials: a public bucket or container (the AWS CLI's
    /// --no-sign-request).
    #[arg(long)]
    pub src_no_sign_request: bool,
    /// Reach the destination without credentials.
    #[arg(long)]
    pub dst_no_sign_request: bool,
    /// The source is an S3 requester-pays bucket: you pay for its requests and egress.
    #[arg(long)]
    pub src_requester_pays: bool,
    /// The destination is an S3 requester-pays bucket.
    #[arg(long)]
    pub dst_requester_pays: bool,
    /// The config file with named remotes [default: $SKYX_CONFIG, else
    /// $XDG_CONFIG_HOME/skyx/config.toml, else ~/.config/skyx/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Which end of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

impl Side {
    fn flag(self, name: &str) -> String {
        match self {
            Side::Src => format!("--src-{name}"),
            Side::Dst => format!("--dst-{name}"),
        }
    }
}

/// One end's flags, picked out of [`EndArgs`].
#[derive(Debug, Default)]
struct EndFlags<'a> {
    endpoint: Option<&'a str>,
    profile: Option<&'a str>,
    no_sign_request: bool,
    requester_pays: bool,
}

impl EndArgs {
    fn of(&self, side: Side) -> EndFlags<'_> {
        match side {
            Side::Src => EndFlags {
                endpoint: self.src_endpoint.as_deref(),
                profile: self.src_profile.as_deref(),
                no_sign_request: self.src_no_sign_request,
                requester_pays: self.src_requester_pays,
            },
            Side::Dst => EndFlags {
                endpoint: self.dst_endpoint.as_deref(),
                profile: self.dst_profile.as_deref(),
                no_sign_request: self.dst_no_sign_request,
                requester_pays: self.dst_requester_pays,
            },
        }
    }
}

/// An S3 (or S3-compatible) remote.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Remote {
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(default)]
    anonymous: bool,
    #[serde(default)]
    requester_pays: bool,
    #[serde(default)]
    path_style: bool,
}

/// An Azure Blob remote: `NAME:container/key` in `account`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AzureRemote {
    account: String,
    endpoint: Option<String>,
    connection_string: Option<String>,
    sas_token: Option<String>,
    account_key: Option<String>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    #[serde(default)]
    managed_identity: bool,
    /// A user-assigned identity of the VM (resource id or client id); with
    /// `managed_identity`, which one.
    managed_identity_id: Option<String>,
    #[serde(default)]
    anonymous: bool,
}

/// A Google Cloud Storage remote.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcsRemote {
    endpoint: Option<String>,
    project: Option<String>,
    credentials_file: Option<PathBuf>,
    #[serde(default)]
    anonymous: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Remote {
    S3(S3Remote),
    Azure(AzureRemote),
    Gcs(GcsRemote),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    remotes: BTreeMap<String, Remote>,
}

/// The named remotes of the config file (none when there is no file).
#[derive(Debug, Default)]
pub struct Remotes {
    file: Option<PathBuf>,
    remotes: BTreeMap<String, Remote>,
}

/// Where the config file is when `--config` does not say (the edge reads the environment).
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKYX_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("skyx/config.toml"))
}

impl Remotes {
    /// Reads `path`, given with `--config` (`explicit`: it must exist) or by default (it may
    /// not exist).
    pub fn load(path: Option<&Path>, explicit: bool) -> Result<Remotes, BadInput> {
        let Some(path) = path else {
            return Ok(Remotes::default());
        };
        let text = match crate::files::read_text(path, "config file", crate::files::CONFIG_CAP) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Remotes::default());
            }
            Err(e) => {
                return Err(BadInput(format!("config file {}: {e}", path.display())));
            }
        };
        Remotes::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Remotes, BadInput> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|e| BadInput(format!("config file {}: {e}", path.display())))?;
        for (name, remote) in &file.remotes {
            if !is_remote_name(name) {
                return Err(BadInput(format!(
                    "config file {}: remote name {name:?}: use letters, digits, '-' and '_', \
                     starting with a letter",
                    path.display()
                )));
            }
            if let Remote::S3(s3) = remote
                && s3.access_key_id.is_some() != s3.secret_access_key.is_some()
            {
                return Err(BadInput(format!(
                    "config file {}: remote {name}: give access_key_id and secret_access_key \
                     together",
                    path.display()
                )));
            }
        }
        Ok(Remotes {
            file: Some(path.to_path_buf()),
            remotes: file.remotes,
        })
    }
}

fn is_remote_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One end, resolved: its URL, how to reach its store, and whether the user configured it
/// (then its agents are handed `settings`).
#[derive(Debug)]
pub struct End {
    pub url: ObjectUrl,
    pub settings: StoreConfig,
    pub configured: bool,
    /// Whether the end's credentials were named for it (by its remote or a flag) rather than
    /// taken from this machine's environment.
    pub named_credentials: bool,
}

impl End {
    /// What the copy's agents are told of this end: `settings` (this end's, as the copy uses
    /// them) less the credentials that are only this machine's: an agent reaches the store as
    /// itself, with its own keys or its VM's identity, and this machine's keys stay here.
    pub fn for_agents(&self, settings: StoreConfig) -> StoreConfig {
        let mut told = settings.clone().without_credentials();
        // Only the end's own store's credentials, and only when they were named for it: the
        // environment's keys of other stores stay here too.
        if self.named_credentials {
            match self.url.location {
                StoreLocation::S3 { .. } => told.s3 = settings.s3,
                StoreLocation::Azure { .. } => told.azure = settings.azure,
                StoreLocation::Gcs { .. } => told.gcs = settings.gcs,
                StoreLocation::Local | StoreLocation::Synthetic { .. } => {}
            }
        }
        told
    }
}

/// Resolves `text` (a URL, a local path or `REMOTE:path`) for `side`, starting from the
/// settings `base` gives for its URL (the environment's, or the end's region's in a sky).
pub fn resolve(
    text: &str,
    side: Side,
    args: &EndArgs,
    remotes: &Remotes,
    base: impl FnOnce(&ObjectUrl) -> anyhow::Result<StoreConfig>,
) -> anyhow::Result<End> {
    let (url, remote) = match remote_part(text) {
        Some((name, rest)) => {
            let Some(remote) = remotes.remotes.get(name) else {
                let file = remotes
                    .file
                    .as_ref()
                    .map_or("no config file".to_string(), |f| f.display().to_string());
                return Err(BadInput(format!(
                    "{text}: no remote named {name:?} ({file}); a local path whose first part \
                     holds a ':' is written ./{text}"
                ))
                .into());
            };
            let url = match remote {
                Remote::S3(_) => format!("s3://{rest}"),
                Remote::Gcs(_) => format!("gs://{rest}"),
                Remote::Azure(az) => format!("az://{}/{rest}", az.account),
            };
            let url = ObjectUrl::parse(&url).map_err(|e| BadInput(format!("{text}: {e}")))?;
            (url, Some(remote))
        }
        None => (
            ObjectUrl::parse(text).map_err(|e| BadInput(e.to_string()))?,
            None,
        ),
    };
    let mut settings = base(&url)?;
    let remote_credentials = remote.is_some_and(|r| apply_remote(&mut settings, r));
    let flags = args.of(side);
    let flagged = apply_flags(&mut settings, &url, side, &flags)?;
    let named_credentials = remote_credentials || flags.no_sign_request || flags.profile.is_some();
    Ok(End {
        url,
        settings,
        named_credentials,
        configured: remote.is_some() || flagged,
    })
}

/// `NAME` and the rest of `NAME:rest`, when `text` has that form (no `://`, no `/` before
/// the `:`).
fn remote_part(text: &str) -> Option<(&str, &str)> {
    let (name, rest) = text.split_once(':')?;
    if rest.starts_with("//") || !is_remote_name(name) {
        return None;
    }
    Some((name, rest))
}

/// Applies a remote's settings; whether it named credentials (or anonymous access).
fn apply_remote(settings: &mut StoreConfig, remote: &Remote) -> bool {
    match remote {
        Remote::S3(r) => {
            let s3 = &mut settings.s3;
            if r.endpoint.is_some() {
                s3.endpoint = r.endpoint.clone();
            }
            if r.region.is_some() {
                s3.region = r.region.clone();
            }
            if r.profile.is_some() {
                s3.profile = r.profile.clone();
                s3.static_credentials = None;
            }
            if let (Some(id), Some(secret)) = (&r.access_key_id, &r.secret_access_key) {
                s3.static_credentials = Some((id.clone(), secret.clone()));
            }
            s3.anonymous |= r.anonymous;
            s3.requester_pays |= r.requester_pays;
            s3.force_path_style |= r.path_style || r.endpoint.is_some();
            r.profile.is_some() || r.access_key_id.is_some() || r.anonymous
        }
        Remote::Azure(r) => {
            let named = skyx_store::azure::AzureConfig {
                connection_string: r.connection_string.clone(),
                sas_token: r.sas_token.clone(),
                account_key: r.account_key.clone().map(|k| (r.account.clone(), k)),
                managed_identity: r.managed_identity,
                managed_identity_id: r.managed_identity_id.clone(),
                client_secret: match (&r.tenant_id, &r.client_id, &r.client_secret) {
                    (Some(t), Some(c), Some(s)) => Some((t.clone(), c.clone(), s.clone())),
                    _ => None,
                },
                endpoint: r.endpoint.clone(),
                anonymous: r.anonymous,
            };
            // A remote's credentials replace the environment's: they are another account's.
            // A remote that names none only says where its account is, reached as whoever
            // runs the copy (this machine's environment; an agent's own, its VM's identity).
            let names_credentials = named.names_credentials();
            settings.azure = if names_credentials {
                named
            } else {
                skyx_store::azure::AzureConfig {
                    endpoint: r
                        .endpoint
                        .clone()
                        .or_else(|| settings.azure.endpoint.clone()),
                    ..settings.azure.clone()
                }
            };
            names_credentials
        }
        Remote::Gcs(r) => {
            let gcs = &mut settings.gcs;
            if r.endpoint.is_some() {
                // The environment's anonymity was its emulator's (STORAGE_EMULATOR_HOST), not
                // this endpoint's.
                gcs.endpoint = r.endpoint.clone();
                gcs.anonymous = false;
            }
            if r.project.is_some() {
                gcs.project = r.project.clone();
            }
            if r.credentials_file.is_some() {
                gcs.credentials_file = r.credentials_file.clone();
            }
            gcs.anonymous |= r.anonymous;
            r.credentials_file.is_some() || r.anonymous
        }
    }
}

/// Applies one end's flags; whether any was given. A flag that does not fit the end's store
/// is bad input naming it.
fn apply_flags(
    settings: &mut StoreConfig,
    url: &ObjectUrl,
    side: Side,
    flags: &EndFlags<'_>,
) -> Result<bool, BadInput> {
    let kind = match url.location {
        StoreLocation::Local => "a local path",
        StoreLocation::S3 { .. } => "S3",
        StoreLocation::Azure { .. } => "Azure",
        StoreLocation::Gcs { .. } => "GCS",
        StoreLocation::Synthetic { .. } => "the synthetic benchmark device",
    };
    let is_s3 = matches!(url.location, StoreLocation::S3 { .. });
    let misfit = |name: &str, wants: &str| {
        BadInput(format!(
            "{} is for {wants} ends, and {url} is {kind}",
            side.flag(name)
        ))
    };
    let mut given = false;
    if let Some(endpoint) = flags.endpoint {
        if matches!(
            url.location,
            StoreLocation::Local | StoreLocation::Synthetic { .. }
        ) {
            return Err(misfit("endpoint", "object-store"));
        }
        let parsed = url::Url::parse(endpoint).map_err(|e| {
            BadInput(format!(
                "{} {endpoint}: not a URL ({e})",
                side.flag("endpoint")
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(BadInput(format!(
                "{} {endpoint}: expected an http:// or https:// URL",
                side.flag("endpoint")
            )));
        }
        match url.location {
            StoreLocation::S3 { .. } => {
                settings.s3.endpoint = Some(endpoint.to_string());
                settings.s3.force_path_style = true;
            }
            StoreLocation::Gcs { .. } => {
                // As a remote's endpoint: the emulator variable's anonymity is not this one's.
                settings.gcs.endpoint = Some(endpoint.to_string());
                settings.gcs.anonymous = false;
            }
            _ => settings.azure.endpoint = Some(endpoint.to_string()),
        }
        given = true;
    }
    if let Some(profile) = flags.profile {
        if !is_s3 {
            return Err(misfit("profile", "S3"));
        }
        if flags.no_sign_request {
            return Err(BadInput(format!(
                "{} and {} contradict each other: a profile signs requests",
                side.flag("profile"),
                side.flag("no-sign-request")
            )));
        }
        check_aws_profile(profile)
            .map_err(|why| BadInput(format!("{} {profile}: {why}", side.flag("profile"))))?;
        settings.s3.profile = Some(profile.to_string());
        settings.s3.static_credentials = None;
        given = true;
    }
    if flags.no_sign_request {
        match url.location {
            StoreLocation::Local | StoreLocation::Synthetic { .. } => {
                return Err(misfit("no-sign-request", "object-store"));
            }
            StoreLocation::S3 { .. } => settings.s3.anonymous = true,
            StoreLocation::Gcs { .. } => settings.gcs.anonymous = true,
            StoreLocation::Azure { .. } => {
                settings.azure = skyx_store::azure::AzureConfig {
                    endpoint: settings.azure.endpoint.take(),
                    anonymous: true,
                    ..Default::default()
                }
            }
        }
        given = true;
    }
    if flags.requester_pays {
        if !is_s3 {
            return Err(misfit("requester-pays", "S3"));
        }
        settings.s3.requester_pays = true;
        given = true;
    }
    Ok(given)
}

/// Whether the AWS profile `name` exists in the shared config or credentials file (where the
/// SDK would look), so a typo is bad input now rather than a credentials failure later.
fn check_aws_profile(name: &str) -> Result<(), String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let config = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/config"));
    let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/credentials"));
    let read = |p: &Path| {
        crate::files::read_text(p, "AWS config", crate::files::CONFIG_CAP).unwrap_or_default()
    };
    if profile_in(&read(&config), name, true) || profile_in(&read(&credentials), name, false) {
        Ok(())
    } else {
        Err(format!(
            "no such profile in {} or {}",
            config.display(),
            credentials.display()
        ))
    }
}

/// Whether an INI `text` has the profile's section: `[profile NAME]` in the config file
/// (`[default]` for the default profile), `[NAME]` in the credentials file.
fn profile_in(text: &str, name: &str, config_file: bool) -> bool {
    text.lines().any(|line| {
        let Some(section) = line
            .trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
        else {
            return false;
        };
        let section = section.trim();
        if config_file && name != "default" {
            section
                .strip_prefix("profile")
                .is_some_and(|rest| rest.starts_with(char::is_whitespace) && rest.trim() == name)
        } else {
            section == name
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[remotes.wasabi]
type = "s3"
endpoint = "https://s3.wasabisys.com"
access_key_id = "AK"
secret_access_key = "SK"

[remotes.partner]
type = "azure"
account = "partnerdata"
sas_token = "sv=1&sig=x"

[remotes.public]
type = "gcs"
anonymous = true

[remotes.private]
type = "azure"
account = "ours"
endpoint = "https://ours.privatelink.blob.core.windows.net"
"#;

    fn env(_: &ObjectUrl) -> anyhow::Result<StoreConfig> {
        Ok(StoreConfig::default())
    }

    fn says(e: anyhow::Error) -> String {
        e.to_string()
    }

    fn remotes() -> Remotes {
        Remotes::parse(FILE, Path::new("config.toml")).unwrap()
    }

    /// This machine's keys are this machine's: agents are told where a store is, and reach it
    /// with their own credentials, unless the end names its own.
    #[test]
    fn the_environments_credentials_stay_here_and_named_ones_travel() {
        let r = remotes();
        let keyed = |_: &ObjectUrl| -> anyhow::Result<StoreConfig> {
            let mut config = StoreConfig::default();
            config.azure.connection_string = Some("AccountName=ours;AccountKey=a2V5".into());
            config.s3.static_credentials = Some(("ENV-AK".into(), "ENV-SK".into()));
            Ok(config)
        };
        // An S3 end given an endpoint: agents are told the endpoint, not this machine's keys.
        let args = EndArgs {
            src_endpoint: Some("http://10.0.0.1:9000".into()),
            ..EndArgs::default()
        };
        let end = resolve("s3://bkt/k", Side::Src, &args, &r, keyed).unwrap();
        assert!(end.configured && end.settings.s3.static_credentials.is_some());
        let told = end.for_agents(end.settings.clone()).s3;
        assert_eq!(told.static_credentials, None);
        assert_eq!(told.endpoint.as_deref(), Some("http://10.0.0.1:9000"));
        // A remote's own keys are the end's: they travel, and the environment's Azure key,
        // which is not the end's, does not.
        let end = resolve("wasabi:bkt/k", Side::Src, &args, &r, keyed).unwrap();
        let told = end.for_agents(end.settings.clone());
        assert_eq!(told.s3.static_credentials, Some(("AK".into(), "SK".into())));
        assert!(!told.azure.names_credentials(), "{:?}", told.azure);
        let args = EndArgs::default();
        let end = resolve("private:data/k", Side::Dst, &args, &r, keyed).unwrap();
        let here = &end.settings.azure;
        assert_eq!(
            here.connection_string.as_deref(),
            Some("AccountName=ours;AccountKey=a2V5")
        );
        let endpoint = "https://ours.privatelink.blob.core.windows.net";
        assert_eq!(here.endpoint.as_deref(), Some(endpoint));
        let told = end.for_agents(end.settings.clone()).azure;
        assert!(!told.names_credentials(), "{told:?}");
        assert_eq!(told.endpoint.as_deref(), Some(endpoint));
        // A remote's own SAS is the end's: it travels.
        let end = resolve("partner:data/k", Side::Dst, &args, &r, keyed).unwrap();
        let told = end.for_agents(end.settings.clone()).azure;
        assert_eq!(told.sas_token.as_deref(), Some("sv=1&sig=x"));
        assert!(told.connection_string.is_none());
    }

    #[test]
    fn remotes_name_their_store_and_carry_its_settings() {
        let r = remotes();
        let args = EndArgs::default();
        let end = resolve("wasabi:bkt/a/b", Side::Src, &args, &r, env).unwrap();
        assert_eq!(end.url.to_string(), "s3://bkt/a/b");
        assert!(end.configured);
        assert_eq!(
            end.settings.s3.static_credentials,
            Some(("AK".into(), "SK".into()))
        );
        assert!(end.settings.s3.force_path_style);
        let end = resolve("partner:cont/k", Side::Dst, &args, &r, env).unwrap();
        assert_eq!(end.url.to_string(), "az://partnerdata/cont/k");
        assert_eq!(end.settings.azure.sas_token.as_deref(), Some("sv=1&sig=x"));
        let end = resolve("public:bkt/x", Side::Src, &args, &r, env).unwrap();
        assert!(end.settings.gcs.anonymous);
        // Plain URLs and paths are not remotes, and leave agents to their environment.
        let end = resolve("s3://bkt/x", Side::Src, &args, &r, env).unwrap();
        assert!(!end.configured);
        assert!(resolve("./nope:x", Side::Src, &args, &r, env).is_ok());
        let e = resolve("nope:bkt/x", Side::Src, &args, &r, env).unwrap_err();
        assert!(says(e).contains("no remote named \"nope\""));
    }

    #[test]
    fn config_files_with_mistakes_are_refused_naming_them() {
        for (text, says) in [
            ("[remotes.x]\ntype = \"s4\"\n", "unknown variant"),
            (
                "[remotes.x]\ntype = \"s3\"\nendpont = \"http://a\"\n",
                "endpont",
            ),
            (
                "[remotes.x]\ntype = \"s3\"\naccess_key_id = \"a\"\n",
                "together",
            ),
            ("[remotes.\"1x\"]\ntype = \"gcs\"\n", "remote name"),
            ("[remotes.x]\ntype = \"azure\"\n", "account"),
            ("[remote.x]\ntype = \"gcs\"\n", "remote"),
        ] {
            let e = Remotes::parse(text, Path::new("c.toml")).unwrap_err();
            assert!(
                e.0.contains("c.toml") && e.0.contains(says),
                "{text}: {}",
                e.0
            );
        }
    }

    /// `STORAGE_EMULATOR_HOST`'s anonymity is its emulator's: an endpoint a remote or a flag
    /// names takes credentials unless it says otherwise.
    #[test]
    fn a_named_gcs_endpoint_is_not_anonymous_for_the_emulator_variable() {
        let emulator = |_: &ObjectUrl| {
            Ok(StoreConfig::from_lookup(&|v| {
                (v == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:9023".to_string())
            }))
        };
        let psc =
            "[remotes.psc]\ntype = \"gcs\"\nendpoint = \"https://storage-x.p.googleapis.com\"\n";
        let r = Remotes::parse(psc, Path::new("c.toml")).unwrap();
        let none = EndArgs::default();
        assert!(
            resolve("gs://bkt/x", Side::Src, &none, &r, emulator)
                .unwrap()
                .settings
                .gcs
                .anonymous
        );
        let end = resolve("psc:bkt/x", Side::Src, &none, &r, emulator).unwrap();
        assert!(!end.settings.gcs.anonymous);
        let mut flag = EndArgs {
            src_endpoint: Some("https://storage-x.p.googleapis.com".into()),
            ..EndArgs::default()
        };
        let end = resolve("gs://bkt/x", Side::Src, &flag, &r, emulator).unwrap();
        assert!(!end.settings.gcs.anonymous);
        flag.src_no_sign_request = true;
        let end = resolve("gs://bkt/x", Side::Src, &flag, &r, emulator).unwrap();
        assert!(end.settings.gcs.anonymous);
    }

    #[test]
    fn flags_configure_their_end_and_refuse_ends_they_do_not_fit() {
        let r = Remotes::default();
        let args = EndArgs {
            src_no_sign_request: true,
            dst_endpoint: Some("http://127.0.0.1:9000".into()),
            dst_requester_pays: true,
            ..EndArgs::default()
        };
        let src = resolve("s3://bkt/x", Side::Src, &args, &r, env).unwrap();
        assert!(src.configured && src.settings.s3.anonymous && !src.settings.s3.requester_pays);
        let dst = resolve("s3://out/y", Side::Dst, &args, &r, env).unwrap();
        assert!(dst.configured && dst.settings.s3.requester_pays);
        assert_eq!(
            dst.settings.s3.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        for (args, url, want) in [
            (
                EndArgs {
                    src_requester_pays: true,
                    ..EndArgs::default()
                },
                "gs://bkt/x",
                "--src-requester-pays is for S3 ends",
            ),
            (
                EndArgs {
                    src_no_sign_request: true,
                    ..EndArgs::default()
                },
                "/tmp/x",
                "--src-no-sign-request is for object-store ends",
            ),
            (
                EndArgs {
                    src_endpoint: Some("localhost:9000".into()),
                    ..EndArgs::default()
                },
                "s3://bkt/x",
                "--src-endpoint localhost:9000",
            ),
            (
                EndArgs {
                    src_profile: Some("p".into()),
                    src_no_sign_request: true,
                    ..EndArgs::default()
                },
                "s3://bkt/x",
                "contradict",
            ),
        ] {
            let e = says(resolve(url, Side::Src, &args, &r, env).unwrap_err());
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn profiles_are_found_where_the_sdk_looks() {
        let config = "[default]\nregion=x\n[profile prod]\n[profileless]\n";
        assert!(profile_in(config, "default", true));
        assert!(profile_in(config, "prod", true));
        assert!(!profile_in(config, "less", true));
        assert!(!profile_in(config, "profileless", true));
        assert!(profile_in("[prod]\naws_access_key_id=a\n", "prod", false));
        assert!(!profile_in("[prod]\n", "dev", false));
    }
}
