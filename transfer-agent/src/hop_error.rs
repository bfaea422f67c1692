//! [`HopError`], the data path's errors: its own module so the TCP hop (`hop`) and the QUIC
//! transport (`quic`) both use it without importing each other.

use std::net::SocketAddr;

use skyx_agent_api::tls::TlsError;

/// Errors of the data path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HopError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to next hop {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with next hop {addr} failed (is it an agent of this job?): {source}")]
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("hop handshake with {addr} failed (is it an agent of this job?): {source}")]
    HopHandshake {
        addr: SocketAddr,
        source: crate::hop_auth::HandshakeError,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the hop is closed: every connection to the next hop failed")]
    Closed,
}
