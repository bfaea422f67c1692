//! What `sky up` leaves behind: the spec, where its state lives, and the server processes.
//! Everything that uses the sky (down, `skyx cp --sky`, `skyx bench paths`) reads this file.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skyx_catalog::RegionId;

use crate::SkyError;
use crate::spec::{SkyRegion, SkySpec, StoreKind};

/// S3 keys of every sky S3 server.
pub const S3_ACCESS_KEY: &str = "skyx-sky";
pub const S3_SECRET_KEY: &str = "skyx-sky-secret";
/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The project GCS buckets belong to.
pub const GCS_PROJECT: &str = "skyx-sky";

/// A store server started by `up`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerProcess {
    pub region: RegionId,
    pub kind: StoreKind,
    pub pid: u32,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkyManifest {
    pub spec: SkySpec,
    pub state_dir: PathBuf,
    pub servers: Vec<ServerProcess>,
    /// The delay line's process (its own process group), once started.
    #[serde(default)]
    pub delay_line: Option<u32>,
}

impl SkyManifest {
    pub const FILE: &'static str = "sky.json";
    pub const GRID_FILE: &'static str = "grid.csv";
    /// Written by the delay line once every link carries packets.
    pub const DELAY_READY_FILE: &'static str = "delay-line.ready";

    /// The state directory of sky `name` when none is given.
    pub fn default_state_dir(name: &str) -> PathBuf {
        PathBuf::from("/run/skyx-sky").join(name)
    }

    /// Reads a manifest from a file, or from a sky's state directory.
    pub fn load(path: &Path) -> Result<SkyManifest, SkyError> {
        let file = if path.is_dir() {
            path.join(Self::FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| SkyError::NoManifest {
            path: file.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SkyError::BadManifest {
            path: file.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn save(&self) -> Result<(), SkyError> {
        let path = self.state_dir.join(Self::FILE);
        let tmp = self.state_dir.join(".sky.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("manifest serializes");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| SkyError::Io {
                what: format!("writing {}", path.display()),
                source,
            })
    }

    /// The planner's view of the sky (its shaped capacities), written by `up`.
    pub fn grid_path(&self) -> PathBuf {
        self.state_dir.join(Self::GRID_FILE)
    }

    pub fn region(&self, id: &RegionId) -> Option<&SkyRegion> {
        self.spec.region(id)
    }

    /// Finds a region by its id (`aws:us-east-1`) or namespace, with an error that lists the
    /// sky's regions.
    pub fn find_region(&self, text: &str) -> Result<&SkyRegion, SkyError> {
        let text = text.trim();
        self.spec
            .regions
            .iter()
            .find(|r| r.region.to_string() == text || r.namespace == text)
            .ok_or_else(|| {
                SkyError::BadOptions(format!(
                    "region {text:?} is not in sky {:?} (it has {})",
                    self.spec.name,
                    self.spec
                        .regions
                        .iter()
                        .map(|r| r.region.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The store endpoint of a region (`http://addr:port`).
    pub fn endpoint(region: &SkyRegion) -> String {
        format!("http://{}:{}", region.addr, region.store.port())
    }

    /// The variables the clouds' tools (and skyx) read to reach a region's store: what an
    /// agent in that region gets, and what the gateway uses for that region's end of a copy.
    pub fn store_env(region: &SkyRegion) -> BTreeMap<String, String> {
        let endpoint = Self::endpoint(region);
        let mut env = BTreeMap::new();
        match region.store {
            StoreKind::S3 => {
                env.insert("AWS_ENDPOINT_URL".into(), endpoint);
                env.insert("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into());
                env.insert("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into());
                env.insert("AWS_REGION".into(), region.region.region_name().to_string());
            }
            StoreKind::Azurite => {
                env.insert(
                    "AZURE_STORAGE_CONNECTION_STRING".into(),
                    format!(
                        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};\
                         AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
                    ),
                );
            }
            StoreKind::Gcs => {
                env.insert("STORAGE_EMULATOR_HOST".into(), endpoint);
                env.insert("GOOGLE_CLOUD_PROJECT".into(), GCS_PROJECT.into());
            }
        }
        env
    }

    /// The URL of bucket (Azure: container) `bucket` in the region's store, ending in `/`.
    pub fn bucket_url(region: &SkyRegion, bucket: &str) -> String {
        match region.store {
            StoreKind::S3 => format!("s3://{bucket}/"),
            StoreKind::Gcs => format!("gs://{bucket}/"),
            StoreKind::Azurite => format!("az://{AZURITE_ACCOUNT}/{bucket}/"),
        }
    }

    /// Region → (namespace, address): where the local provider starts a region's agents.
    pub fn namespaces(&self) -> BTreeMap<String, (String, IpAddr)> {
        self.spec
            .regions
            .iter()
            .map(|r| {
                (
                    r.region.to_string(),
                    (r.namespace.clone(), IpAddr::V4(r.addr)),
                )
            })
            .collect()
    }
}
