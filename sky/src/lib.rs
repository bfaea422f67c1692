//! An emulated multi-region sky on one machine (`skyx sky up|down`).
//!
//! Each region of a chosen set is a network namespace with its own address, a real object-store
//! server of its cloud (s3s-fs for AWS, Azurite for Azure, the GCS emulator for GCP) listening
//! only there, and whatever agents the gateway starts there. Regions are joined by a full mesh
//! of veth pairs, each direction shaped with `tbf` to the catalog's measured throughput times a
//! scale, with per-VM egress caps where they bind. `netem` is not available on these machines,
//! so links have no added latency: the sky reproduces bandwidth, not distance.
//!
//! - [`spec`]: what the sky is, worked out from the catalog without touching the machine.
//! - [`manifest`]: what an `up` left behind, written to its state directory, read by `down`,
//!   by `skyx cp --sky` (where each region's store is, which namespace agents run in) and by
//!   `skyx bench paths`.
//! - [`machine`]: running the commands, starting the servers, and tearing it all down.

pub mod machine;
pub mod manifest;
pub mod spec;

pub use machine::{Tools, down, up};
pub use manifest::{ServerProcess, SkyManifest};
pub use spec::{
    DEFAULT_REGIONS, DEFAULT_SCALE, FRAME_OVERHEAD, ShapedLink, SkyOptions, SkyRegion, SkySpec,
    StoreKind,
};

/// Why building, reading or tearing down a sky failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkyError {
    #[error("{0}")]
    BadOptions(String),
    #[error("the emulated sky needs root (network namespaces and tc); run as root")]
    NotRoot,
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{what} is not installed at {path}: run `deploy/test-servers.sh install` (or set SKYX_TOOLS_DIR)"
    )]
    ToolMissing { what: &'static str, path: String },
    #[error(
        "sky {name:?} is already up (state in {state_dir}); run `skyx sky down --name {name}` first"
    )]
    AlreadyUp { name: String, state_dir: String },
    #[error("no sky manifest at {path}: is the sky up? ({source})")]
    NoManifest {
        path: String,
        source: std::io::Error,
    },
    #[error("sky manifest {path} is unreadable: {message}")]
    BadManifest { path: String, message: String },
    #[error(
        "the {kind:?} server of {region} did not answer on {addr} (waited up to {seconds} s); its log: {log}"
    )]
    ServerNotReady {
        region: String,
        kind: StoreKind,
        addr: String,
        seconds: u64,
        log: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
