//! QUIC endpoints for the data plane (quinn), with the job's mutual TLS.
//!
//! A hop over QUIC is one connection with N bidirectional streams; each stream carries frames
//! exactly like one TCP connection, so the hop's driver and the protocol state machines are the
//! same for both transports. The TLS configuration is the job's (only the job CA is trusted and
//! clients must present a certificate of it), with TLS 1.3 and ALPN `skyx/1` as QUIC requires.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, TransportConfig, VarInt};

use crate::hop_error::HopError;
use skyx_agent_api::tls::{AgentIdentity, TlsError, job_server_name};

const ALPN: &[u8] = b"skyx/1";

/// Flow-control windows sized for long fat inter-region links: a stream may have 16 MiB and a
/// connection 128 MiB unacknowledged (quinn's defaults, tuned for the web, cap a stream at
/// about 1.25 MB, which limits one stream to ~100 Mbit/s at 100 ms RTT).
fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(16 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(128 * 1024 * 1024));
    t.send_window(128 * 1024 * 1024);
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(
        VarInt::from_u32(60_000).into(), // ms
    ));
    Arc::new(t)
}

fn quic_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(rustls::Error::General(format!("QUIC TLS: {e}")))
}

/// A server endpoint on `addr` that accepts only the job's peers.
pub(crate) fn listen(addr: SocketAddr, identity: &AgentIdentity) -> Result<Endpoint, HopError> {
    let mut tls = (*identity.server_config()?).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(quic_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Endpoint::server(config, addr).map_err(|source| HopError::Bind { addr, source })
}

/// A client endpoint and a connection to the agent at `addr`.
pub(crate) async fn connect(
    addr: SocketAddr,
    identity: &AgentIdentity,
) -> Result<(Endpoint, Connection), HopError> {
    let mut tls = (*identity.client_config()?).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(quic_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint =
        Endpoint::client(bind).map_err(|source| HopError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    let connecting = endpoint
        .connect(addr, &job_server_name(identity.job))
        .map_err(|e| HopError::Connect {
            addr,
            source: std::io::Error::other(e),
        })?;
    let conn = connecting.await.map_err(|e| HopError::Handshake {
        addr,
        source: std::io::Error::other(e),
    })?;
    Ok((endpoint, conn))
}
