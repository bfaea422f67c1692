//! `skyx-agent`, the daemon on each VM, as a library ([`daemon`] is its entry point, run by the
//! `skyx-agent` binary and by `skyx agent`).
//!
//! - [`hop`]: one hop of the data plane: many TCP connections (or QUIC streams, [`quic`]) to
//!   the next agent, driven by the protocol's sans-IO state machines, and the listener that
//!   accepts them. [`tls`] makes every data connection mutual TLS with a per-job CA.
//! - [`objects`]: reading chunks from the source store and writing them at the destination.
//! - [`probe`]: iperf3-like path probes between agents (`skyx bench paths`).
//! - [`agent`]: the source, relay and sink roles an agent plays for its job.
//! - [`api`] / [`control`] / [`client`]: the HTTP control API's wire types, its server (in
//!   the agent) and its client (in the gateway).

pub mod agent;
pub mod api;
pub mod client;
pub mod control;
pub mod daemon;
pub mod hop;
pub mod objects;
pub mod probe;
pub mod quic;
pub mod stage;
pub mod tls;

pub use agent::{Agent, AgentConfig, AgentError, EventLog};
pub use client::{AgentClient, ClientError};
pub use hop::{Delivery, HopError, HopListener, HopSender, HopSenderConfig, relay};
pub use objects::{ManifestObject, ObjectWriter, read_chunk};
pub use tls::{AgentIdentity, JobCa, TlsError};
