//! An emulated multi-region sky on one machine (`skyx sky up|down`).
//!
//! Each region of a chosen set is a network namespace with its own address, a real object-store
//! server of its cloud (s3s-fs for AWS, Azurite for Azure, the GCS emulator for GCP) listening
//! only there, and whatever agents the gateway starts there. Regions are joined by a full mesh
//! of veth pairs, each direction shaped with `tbf` to the catalog's measured throughput times a
//! scale, with per-VM egress caps where they bind, and delayed by the catalog's measured round
//! trips (by a user-space delay line: `netem` is not available on these machines), the control
//! path between the gateway and each region too.
//!
//! - [`spec`]: what the sky is, worked out from the catalog without touching the machine.
//! - [`manifest`]: what an `up` left behind, written to its state directory, read by `down`,
//!   by `skyx cp --sky` (where each region's store is, which namespace agents run in) and by
//!   `skyx bench paths`.
//! - [`machine`]: running the commands, starting the delay line and the servers, and tearing
//!   it all down.
//! - [`delay_line`]: the process that carries every link's packets after the link's delay.

pub mod delay_line;
pub mod machine;
pub mod manifest;
pub mod spec;

pub use machine::{Tools, down, up};
pub use manifest::{ServerProcess, SkyManifest};
pub use spec::{
    DEFAULT_REGIONS, DEFAULT_RTT_SCALE, DEFAULT_SCALE, DelayedLink, FRAME_OVERHEAD, ShapedLink,
    SkyOptions, SkyRegion, SkySpec, StoreKind, TunEnd,
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
    #[error("the delay line did not start within {seconds} s; its log: {log}")]
    DelayLineNotReady { seconds: u64, log: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
