//! `skyx-agent`, the daemon on each VM. So far its data path: [`hop`] moves chunks to the next
//! agent over many TCP connections driven by the protocol's sans-IO state machines, and accepts
//! them from the previous one. The control API, TLS and store reading/writing build on it.

pub mod hop;

pub use hop::{Delivery, HopError, HopListener, HopSender, HopSenderConfig};
