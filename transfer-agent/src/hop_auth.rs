//! How a data connection proves both its ends belong to the job ([`HopGuard`]), and the hop
//! handshake that does it without TLS.
//!
//! With chunks sealed end to end (`skyx_protocol::seal`), a hop needs no encryption of its
//! own: what a relay must still refuse is a stranger feeding it. The handshake proves, in one
//! round trip and a half, that each end holds the job's hop key, before a frame is read:
//!
//! ```text
//! connecting agent → "SKXH" | version 1 | job (u64 LE) | its nonce (32 bytes)
//! listening agent  → its nonce (32 bytes) | HMAC-SHA256(hop key, "skyx-hop-listener" | job | both nonces)
//! connecting agent → HMAC-SHA256(hop key, "skyx-hop-connector" | job | both nonces)
//! ```
//!
//! Fresh nonces on both sides make every proof good for one connection only (a recorded
//! handshake replays nowhere), and the two labels keep one side's proof from being reflected
//! as the other's. A listener closes a connection that names another job or fails its proof
//! before sending anything else; a connector closes one whose listener fails its proof. The
//! frames that follow travel as they are: an attacker on the path (not merely at the port) can
//! still drop, delay or inject bytes, which at worst makes a chunk fail its seal or checksum at
//! the sink (refused, sent again) or stall until the gateway sends it another way. It can never
//! make a sink write a byte the source did not seal.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use skyx_agent_api::keys::{Secret, random};
use skyx_agent_api::tls::AgentIdentity;
use skyx_protocol::JobId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"SKXH";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
const HELLO_LEN: usize = 4 + 1 + 8 + NONCE_LEN;

/// How long a listener gives a new connection to prove itself: a stranger who connects and
/// says nothing holds nothing for longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the two ends of a data connection know each other.
#[derive(Clone)]
pub enum HopGuard {
    /// The hop handshake under the job's hop key; frames then travel as they are (chunks
    /// sealed end to end when the job seals them).
    Handshake(Arc<HopKey>),
    /// Mutual TLS with the job's CA: every hop decrypts and re-encrypts.
    Tls(AgentIdentity),
    /// Nothing: tests and benchmarks that measure the protocol alone.
    Open,
}

impl std::fmt::Debug for HopGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HopGuard::Handshake(_) => "Handshake",
            HopGuard::Tls(_) => "Tls",
            HopGuard::Open => "Open",
        })
    }
}

/// The job's hop key, ready to prove with.
pub struct HopKey {
    job: JobId,
    key: hmac::Key,
}

impl std::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HopKey {{ job: {} }}", self.job.0)
    }
}

impl HopKey {
    pub fn new(job: JobId, secret: &Secret) -> HopKey {
        HopKey {
            job,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret.0),
        }
    }

    /// What a proof is an HMAC of: the side's label, the job and both nonces.
    fn input(&self, label: &[u8], a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(label.len() + 8 + 2 * NONCE_LEN);
        msg.extend_from_slice(label);
        msg.extend_from_slice(&self.job.0.to_le_bytes());
        msg.extend_from_slice(a);
        msg.extend_from_slice(b);
        msg
    }

    fn proof(&self, label: &[u8], a: &[u8], b: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, &self.input(label, a, b))
    }

    fn verify(&self, label: &[u8], a: &[u8], b: &[u8], proof: &[u8]) -> bool {
        hmac::verify(&self.key, &self.input(label, a, b), proof).is_ok()
    }
}

const LISTENER: &[u8] = b"skyx-hop-listener";
const CONNECTOR: &[u8] = b"skyx-hop-connector";

/// Why a hop handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("connection failed during the hop handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer spoke something other than the skyx hop handshake")]
    NotAHop,
    #[error("the peer serves job {0}, not this one")]
    OtherJob(u64),
    #[error("the peer does not hold this job's hop key")]
    BadProof,
}

/// The connecting end of the handshake.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    key: &HopKey,
) -> Result<(), HandshakeError> {
    let mine: [u8; NONCE_LEN] = random();
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.extend_from_slice(MAGIC);
    hello.push(VERSION);
    hello.extend_from_slice(&key.job.0.to_le_bytes());
    hello.extend_from_slice(&mine);
    io.write_all(&hello).await?;
    io.flush().await?;
    let mut answer = [0u8; NONCE_LEN + PROOF_LEN];
    io.read_exact(&mut answer).await?;
    let (theirs, proof) = answer.split_at(NONCE_LEN);
    if !key.verify(LISTENER, theirs, &mine, proof) {
        return Err(HandshakeError::BadProof);
    }
    io.write_all(key.proof(CONNECTOR, &mine, theirs).as_ref())
        .await?;
    io.flush().await?;
    Ok(())
}

/// The listening end of the handshake.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    key: &HopKey,
) -> Result<(), HandshakeError> {
    let mut hello = [0u8; HELLO_LEN];
    io.read_exact(&mut hello).await?;
    if &hello[..4] != MAGIC || hello[4] != VERSION {
        return Err(HandshakeError::NotAHop);
    }
    let job = u64::from_le_bytes(hello[5..13].try_into().expect("8 bytes"));
    if job != key.job.0 {
        return Err(HandshakeError::OtherJob(job));
    }
    let theirs = &hello[13..];
    let mine: [u8; NONCE_LEN] = random();
    let mut answer = Vec::with_capacity(NONCE_LEN + PROOF_LEN);
    answer.extend_from_slice(&mine);
    answer.extend_from_slice(key.proof(LISTENER, &mine, theirs).as_ref());
    io.write_all(&answer).await?;
    io.flush().await?;
    let mut proof = [0u8; PROOF_LEN];
    io.read_exact(&mut proof).await?;
    if !key.verify(CONNECTOR, theirs, &mine, &proof) {
        return Err(HandshakeError::BadProof);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(job: u64, byte: u8) -> HopKey {
        HopKey::new(JobId(job), &Secret([byte; 32]))
    }

    async fn shake(
        connector: HopKey,
        listener: HopKey,
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (c, l) = tokio::join!(
            async move {
                let r = connect(&mut a, &connector).await;
                drop(a);
                r
            },
            async move {
                let r = accept(&mut b, &listener).await;
                drop(b);
                r
            }
        );
        (c, l)
    }

    #[tokio::test]
    async fn agents_holding_the_key_shake_hands_and_no_one_else_does() {
        let (c, l) = shake(key(1, 7), key(1, 7)).await;
        assert!(c.is_ok() && l.is_ok(), "{c:?} {l:?}");

        let (c, l) = shake(key(1, 8), key(1, 7)).await;
        assert!(matches!(c, Err(HandshakeError::BadProof)), "{c:?}");
        assert!(l.is_err(), "the listener never takes a stranger: {l:?}");

        let (_, l) = shake(key(2, 7), key(1, 7)).await;
        assert!(matches!(l, Err(HandshakeError::OtherJob(2))), "{l:?}");
    }

    #[tokio::test]
    async fn a_listener_proof_cannot_be_reflected_as_a_connector_proof() {
        let k = key(1, 7);
        let (mine, theirs) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let listener_proof = k.proof(LISTENER, &mine, &theirs);
        assert!(k.verify(LISTENER, &mine, &theirs, listener_proof.as_ref()));
        assert!(!k.verify(CONNECTOR, &mine, &theirs, listener_proof.as_ref()));
    }

    #[tokio::test]
    async fn a_stranger_speaking_anything_else_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\nHost: skyx.invalid\r\nAccept: */*\r\n\r\n")
            .await
            .unwrap();
        let r = accept(&mut b, &key(1, 7)).await;
        assert!(matches!(r, Err(HandshakeError::NotAHop)), "{r:?}");
    }
}
