//! The control API's TLS: each end pins the other's certificate, and nothing else is trusted.
//!
//! - The gateway makes a key pair for its run ([`GatewayIdentity`]) and hands each agent its
//!   certificate (public) when launching it, with the launch's secret token. An agent serves
//!   its control API only over TLS that requires *that* certificate from the client: a
//!   stranger at the control port fails the handshake and gets no byte of the API.
//! - An agent makes its own key pair when it starts ([`ControlIdentity`]). The gateway's first
//!   connection takes the agent's certificate as offered and asks it to prove it holds the
//!   launch's token, bound to that certificate and a fresh nonce ([`proof`]); only then is the
//!   certificate pinned, and every later connection must show it. So the token never crosses
//!   the network, even inside TLS, and a machine in the middle of the first connection,
//!   lacking the token, cannot pass for the agent.
//!
//! Each launch has its own token ([`launch_token`]), and the proof names the agent. A token
//! (in a VM's user data, readable through the cloud's API and on that VM) opens no connection
//! to any agent (that needs the gateway's private key, which never leaves the gateway), and
//! dies with its agent. What it does allow: whoever holds it and can also intercept the
//! gateway's first connection to *that* agent could pass for that one agent.

use std::sync::{Arc, Mutex};

use aws_lc_rs::{digest, hmac};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig, SignatureScheme,
};

use crate::tls::TlsError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A self-signed key pair made on the spot.
fn self_signed(name: &str) -> Result<(CertificateDer<'static>, Vec<u8>), TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])?.self_signed(&key)?;
    Ok((cert.der().clone(), key.serialize_der()))
}

fn private_key(pkcs8: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
}

/// The gateway's identity on the control API for one run: its certificate goes to every agent
/// it launches; its private key never leaves this process.
pub struct GatewayIdentity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl std::fmt::Debug for GatewayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayIdentity { .. }")
    }
}

impl GatewayIdentity {
    pub fn generate() -> Result<GatewayIdentity, TlsError> {
        let (cert, key) = self_signed("gateway.skyx.invalid")?;
        Ok(GatewayIdentity { cert, key })
    }

    /// The certificate agents pin (DER; public).
    pub fn cert(&self) -> &[u8] {
        &self.cert
    }

    /// A client configuration presenting this identity and trusting what `server` accepts.
    pub(crate) fn client_config(&self, server: Arc<Pinned>) -> Result<ClientConfig, TlsError> {
        // No ALPN here: the HTTPS connector sets it.
        Ok(ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(server)
            .with_client_auth_cert(vec![self.cert.clone()], private_key(&self.key))?)
    }
}

/// An agent's identity on its control API, made when it starts.
pub struct ControlIdentity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl std::fmt::Debug for ControlIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlIdentity { .. }")
    }
}

impl ControlIdentity {
    pub fn generate() -> Result<ControlIdentity, TlsError> {
        let (cert, key) = self_signed("agent.skyx.invalid")?;
        Ok(ControlIdentity { cert, key })
    }

    pub fn cert(&self) -> &[u8] {
        &self.cert
    }

    /// The control API's server configuration: clients must present `gateway_cert`, exactly.
    pub fn server_config(&self, gateway_cert: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
        let gateway = Arc::new(Pinned::to(gateway_cert));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(gateway)
            .with_single_cert(vec![self.cert.clone()], private_key(&self.key))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

const PROOF_LABEL: &[u8] = b"skyx-control-v1";

/// A fresh launch token: one per agent launched, so one agent's token (in its VM's user data)
/// lets no one pass for another.
pub fn launch_token() -> String {
    crate::keys::random::<24>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn proof_input(name: &str, nonce: &[u8], cert: &[u8]) -> Vec<u8> {
    let mut msg = PROOF_LABEL.to_vec();
    msg.extend_from_slice(&(name.len() as u64).to_le_bytes());
    msg.extend_from_slice(name.as_bytes());
    msg.extend_from_slice(nonce);
    msg.extend_from_slice(digest::digest(&digest::SHA256, cert).as_ref());
    msg
}

/// What agent `name` answers a hello's `nonce` with: HMAC-SHA256 under its launch token over
/// its name, the nonce and the SHA-256 of the certificate it serves with.
pub fn proof(token: &[u8], name: &str, nonce: &[u8], cert: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    hmac::sign(&key, &proof_input(name, nonce, cert))
        .as_ref()
        .to_vec()
}

/// Whether `answer` is agent `name`'s proof for `nonce` and `cert` under `token` (constant
/// time).
pub fn proof_holds(token: &[u8], name: &str, nonce: &[u8], cert: &[u8], answer: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    hmac::verify(&key, &proof_input(name, nonce, cert), answer).is_ok()
}

/// A certificate check that accepts one certificate, byte for byte (its signature on the
/// handshake still checked), or, before a pin exists, whatever the server shows, remembered so
/// the caller can pin it once the agent has proved itself.
#[derive(Debug)]
pub(crate) struct Pinned {
    want: Option<CertificateDer<'static>>,
    seen: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Pinned {
    pub(crate) fn to(cert: &[u8]) -> Pinned {
        Pinned {
            want: Some(CertificateDer::from(cert.to_vec())),
            seen: Mutex::new(None),
            provider: provider(),
        }
    }

    /// Accepts any certificate once and remembers it ([`Pinned::seen`]).
    pub(crate) fn first_contact() -> Pinned {
        Pinned {
            want: None,
            seen: Mutex::new(None),
            provider: provider(),
        }
    }

    pub(crate) fn seen(&self) -> Option<Vec<u8>> {
        self.seen.lock().expect("seen").as_ref().map(|c| c.to_vec())
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        match &self.want {
            Some(want) if want.as_ref() == cert.as_ref() => Ok(()),
            Some(_) => Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            None => {
                *self.seen.lock().expect("seen") = Some(cert.clone().into_owned());
                Ok(())
            }
        }
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_the_token_the_agent_the_nonce_and_the_certificate() {
        let (agent, other) = (
            ControlIdentity::generate().unwrap(),
            ControlIdentity::generate().unwrap(),
        );
        let token = b"token-0123456789abcdef";
        let p = proof(token, "a#0", b"nonce-1", agent.cert());
        assert!(proof_holds(token, "a#0", b"nonce-1", agent.cert(), &p));
        assert!(!proof_holds(
            b"token-0123456789abcdeX",
            "a#0",
            b"nonce-1",
            agent.cert(),
            &p
        ));
        assert!(!proof_holds(token, "a#1", b"nonce-1", agent.cert(), &p));
        assert!(!proof_holds(token, "a#0", b"nonce-2", agent.cert(), &p));
        assert!(!proof_holds(token, "a#0", b"nonce-1", other.cert(), &p));
        assert_ne!(launch_token(), launch_token());
    }
}
