//! `skyx-agent`, the daemon on each VM. So far its data path: [`hop`] moves chunks to the next
//! agent over many TCP connections driven by the protocol's sans-IO state machines, and accepts
//! them from the previous one. [`tls`] makes every data connection mutual TLS with a per-job CA. The control API and store
//! reading/writing build on these.

pub mod hop;
pub mod objects;
pub mod tls;

pub use hop::{Delivery, HopError, HopListener, HopSender, HopSenderConfig, relay};
pub use objects::{ManifestObject, ObjectWriter, read_chunk};
pub use tls::{AgentIdentity, JobCa, TlsError};
