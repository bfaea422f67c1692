//! Per-job mutual TLS for data connections.
//!
//! The gateway makes a certificate authority for each job ([`JobCa`]) and issues every agent of
//! the job a certificate signed by it ([`AgentIdentity`]). A listening agent requires a client
//! certificate from the same job CA, and a connecting agent trusts only that CA: data streams are
//! encrypted, and an agent accepts data only from its job's peers. Nothing is trusted from the
//! system's root store, and the CA's key never leaves the gateway.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use skyx_protocol::JobId;

use crate::wire::{Base64, IdentityWire};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The name every agent certificate of a job carries; clients check servers against it.
pub fn job_server_name(job: JobId) -> String {
    format!("job-{}.agents.skyx.invalid", job.0)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A job's certificate authority (held by the gateway).
pub struct JobCa {
    job: JobId,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for JobCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCa")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl JobCa {
    pub fn generate(job: JobId) -> Result<JobCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("skyx job {} CA", job.0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(JobCa { job, issuer })
    }

    /// A certificate and key for agent `name` of this job.
    pub fn issue(&self, name: &str) -> Result<AgentIdentity, TlsError> {
        let mut params = CertificateParams::new(vec![job_server_name(self.job)])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(AgentIdentity {
            job: self.job,
            cert: cert.der().clone(),
            key: key.serialize_der(),
            ca: self.issuer.der().clone(),
        })
    }
}

/// What an agent needs to take part in a job's data plane.
#[derive(Clone)]
pub struct AgentIdentity {
    pub job: JobId,
    pub cert: CertificateDer<'static>,
    /// PKCS#8 DER of the agent's private key.
    pub key: Vec<u8>,
    /// The job CA's certificate: the only one trusted.
    pub ca: CertificateDer<'static>,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("AgentIdentity")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// The identity as the job request carries it to the agent.
    pub fn to_wire(&self) -> IdentityWire {
        IdentityWire {
            cert: Base64(self.cert.to_vec()),
            key: Base64(self.key.clone()),
            ca: Base64(self.ca.to_vec()),
        }
    }

    /// The identity an agent received for `job`.
    pub fn from_wire(job: JobId, wire: IdentityWire) -> AgentIdentity {
        AgentIdentity {
            job,
            cert: wire.cert.0.into(),
            key: wire.key.0,
            ca: wire.ca.0.into(),
        }
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }

    /// For listening: present our certificate, require one from the job CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, provider()).build()?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key_der())?;
        Ok(Arc::new(config))
    }

    /// For connecting: trust only the job CA, authenticate with our certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.cert.clone()], self.key_der())?;
        Ok(Arc::new(config))
    }

    pub fn server_name(&self) -> ServerName<'static> {
        ServerName::try_from(job_server_name(self.job)).expect("a valid DNS name")
    }
}
