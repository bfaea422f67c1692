//! `skyx-agent`, the daemon on each VM, as a library ([`daemon`] is its entry point, run by the
//! `skyx-agent` binary and by `skyx agent`).
//!
//! - [`hop`]: one hop of the data plane: many TCP connections (or QUIC streams, [`quic`]) to
//!   the next agent, driven by the protocol's sans-IO state machines, and ([`hop_listener`])
//!   the listener that accepts them. Every data connection first proves both ends belong to the
//!   job ([`hop_auth`]: the hop handshake, or mutual TLS with the job's CA); chunks are sealed
//!   end to end by sources and opened by sinks. `relay` passes what one hop delivers on to the
//!   next, sealed as it came.
//! - [`objects`]: reading chunks from the source store and writing them at the destination.
//! - [`probe`]: iperf3-like path probes between agents (`skyx bench paths`).
//! - [`agent`]: the agent and the job installed on it, its control requests and the relay
//!   role; `source` and `sink` are the other two roles (`job` what they share).
//! - [`in_process`]: agents as threads of the calling process, a provider for the gateway's
//!   tests (a kill ends every task and socket of the agent, as a process kill would).
//! - [`control`]: the HTTP control API's server; its wire types and the gateway's client live
//!   in `skyx-agent-api`, the contract both sides share.

mod accept;
pub mod agent;
pub mod control;
pub mod daemon;
pub mod events;
pub mod fork;
pub mod hop;
pub mod hop_auth;
pub mod hop_error;
pub mod hop_listener;
pub mod in_process;
mod job;
pub mod objects;
pub mod probe;
pub mod quic;
mod relay;
mod sink;
mod source;
pub mod stage;
pub mod usage;

pub use accept::MAX_HANDSHAKING;
pub use agent::{Agent, AgentConfig, AgentError, EventLog};
pub use fork::{BranchEvents, Fork, ForkBranch};
pub use hop::{HopError, HopSender, HopSenderConfig};
pub use hop_auth::{HopGuard, HopKey};
pub use hop_listener::{Delivery, HopListener};
pub use objects::{ObjectWriter, Wrote, read_chunk};
pub use relay::relay;
