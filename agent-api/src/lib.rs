//! The contract between the gateway and its agents, and nothing else: both sides depend on
//! this crate, neither on the other.
//!
//! - [`wire`]: the control API's request and response types and [`wire::API_VERSION`].
//! - [`client`]: the gateway's typed client of one agent's control API.
//! - [`control_tls`]: the control API's TLS, each end pinning the other's certificate.
//! - [`keys`]: the job's hop key (every agent) and chunk key (sources and sinks only).
//! - [`tls`]: the per-job certificate authority the gateway holds and the identities it issues
//!   to agents, with the TLS configurations both ends of a data connection use.
//!
//! It must never hold agent or gateway behaviour: a type or function belongs here only if both
//! sides need it to speak to each other.

pub mod client;
pub mod control_tls;
pub mod keys;
pub mod tls;
pub mod wire;

pub use client::{AgentClient, ClientError, error_chain};
pub use control_tls::{ControlIdentity, GatewayIdentity};
pub use keys::{JobKeys, Secret};
pub use tls::{AgentIdentity, JobCa, TlsError};
pub use wire::API_VERSION;
