//! The job's two symmetric keys, made by the gateway for each job and handed to its agents
//! over the control API.
//!
//! - The *hop key* every agent of the job holds: with it two agents prove to each other that
//!   both belong to the job before a data connection carries a byte (the agent's hop
//!   handshake). A stranger at a data port, without it, is dropped.
//! - The *chunk key* only sources and sinks hold: sources seal chunks with it and sinks open
//!   them (`skyx_protocol::seal`), so relays forward ciphertext they cannot read or alter.

use crate::wire::Base64;

/// Bytes in each key.
pub const KEY_LEN: usize = 32;

/// `N` fresh random bytes from the system's CSPRNG: keys, tokens and every nonce of the
/// handshakes and seals.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG answers");
    bytes
}

/// A 32-byte secret; its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; KEY_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Fresh random bytes from the system's CSPRNG.
    pub fn generate() -> Secret {
        Secret(random())
    }

    pub fn to_wire(&self) -> Base64 {
        Base64(self.0.to_vec())
    }

    /// The key a control request carried; `None` when it is not [`KEY_LEN`] bytes.
    pub fn from_wire(wire: &Base64) -> Option<Secret> {
        Some(Secret(wire.0.as_slice().try_into().ok()?))
    }
}

/// A job's keys, held by the gateway.
#[derive(Debug, Clone)]
pub struct JobKeys {
    pub hop: Secret,
    /// Absent when the user turned end-to-end encryption off.
    pub chunk: Option<Secret>,
}

impl JobKeys {
    pub fn generate(seal_chunks: bool) -> JobKeys {
        JobKeys {
            hop: Secret::generate(),
            chunk: seal_chunks.then(Secret::generate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_survive_the_wire_but_not_a_wrong_length() {
        let (a, b) = (JobKeys::generate(true), JobKeys::generate(true));
        assert_ne!(a.hop, b.hop);
        assert_ne!(a.hop, a.chunk.clone().unwrap());
        assert_eq!(Secret::from_wire(&a.hop.to_wire()), Some(a.hop.clone()));
        assert_eq!(Secret::from_wire(&Base64(vec![1; 31])), None);
        assert!(JobKeys::generate(false).chunk.is_none());
        assert_eq!(format!("{:?}", a.hop), "Secret(..)");
    }
}
