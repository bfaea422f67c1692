//! [`AgentBinary`]: where a VM gets `skyx-agent` and the SHA-256 it must have. Every cloud's
//! bootstrap refuses (and powers its VM off on) a binary that does not match the pin, so a
//! download URL that serves something else, by mistake or by an attacker on the way, runs
//! nothing.

use std::io::Read as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Where the agent binary comes from on a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinary {
    /// Downloaded from here (http or https); `None`: the image has it at
    /// `/usr/local/bin/skyx-agent` already.
    pub url: Option<String>,
    /// The binary's SHA-256 (lowercase hex). Required with a download; with a preinstalled
    /// image, `None` trusts the image.
    pub sha256: Option<String>,
}

/// Why an agent binary setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BinaryError {
    /// Not an http(s) URL with a host, or with characters a shell would read.
    #[error(
        "agent URL '{0}': expected an http:// or https:// URL without quotes, spaces or control characters"
    )]
    Url(String),
    /// Not a SHA-256 in hex.
    #[error("agent SHA-256 '{0}': expected 64 hex digits")]
    Sha256(String),
    /// A download with nothing to check it against.
    #[error("a downloaded agent must be pinned by its SHA-256")]
    Unpinned,
}

impl AgentBinary {
    /// The agent downloaded from `url`, refused unless its SHA-256 is `sha256`.
    pub fn download(url: &str, sha256: &str) -> Result<AgentBinary, BinaryError> {
        Ok(AgentBinary {
            url: Some(checked_url(url)?),
            sha256: Some(checked_sha256(sha256)?),
        })
    }

    /// The agent the image already has, checked against `sha256` when given.
    pub fn preinstalled(sha256: Option<&str>) -> Result<AgentBinary, BinaryError> {
        Ok(AgentBinary {
            url: None,
            sha256: sha256.map(checked_sha256).transpose()?,
        })
    }

    /// Checks a value built field by field (the renderers put both fields into a shell
    /// script: nothing unchecked may reach it).
    pub fn check(&self) -> Result<(), BinaryError> {
        if let Some(url) = &self.url {
            checked_url(url)?;
            if self.sha256.is_none() {
                return Err(BinaryError::Unpinned);
            }
        }
        if let Some(sum) = &self.sha256 {
            checked_sha256(sum)?;
        }
        Ok(())
    }
}

fn checked_url(url: &str) -> Result<String, BinaryError> {
    let scheme = url.starts_with("https://") || url.starts_with("http://");
    let clean = !url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '\\' | '`'));
    let host = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if scheme && clean && host {
        Ok(url.to_string())
    } else {
        Err(BinaryError::Url(url.to_string()))
    }
}

fn checked_sha256(sum: &str) -> Result<String, BinaryError> {
    let sum = sum.trim();
    if sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(sum.to_ascii_lowercase())
    } else {
        Err(BinaryError::Sha256(sum.to_string()))
    }
}

/// The SHA-256 of the file at `path` (lowercase hex): the pin for a build this machine has.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_download_needs_a_clean_url_and_a_pin() {
        let ok = AgentBinary::download("https://example.com/skyx-agent", SUM).unwrap();
        assert_eq!(ok.sha256.as_deref(), Some(SUM));
        for bad in [
            "ftp://x/a",
            "https://x/a'; rm -rf /; '",
            "https://x/a b",
            "https://x/$(id)`",
            "https://",
        ] {
            let err = AgentBinary::download(bad, SUM).unwrap_err();
            assert!(matches!(err, BinaryError::Url(_)), "{bad}: {err}");
        }
        for bad in ["abc", &SUM[1..], &format!("{}g", &SUM[1..])] {
            assert!(matches!(
                AgentBinary::download("https://x/a", bad),
                Err(BinaryError::Sha256(_))
            ));
        }
        let unpinned = AgentBinary {
            url: Some("https://x/a".into()),
            sha256: None,
        };
        assert_eq!(unpinned.check(), Err(BinaryError::Unpinned));
    }

    #[test]
    fn the_pin_of_a_file_is_its_sha256() {
        let path = std::env::temp_dir().join(format!("skyx-sha-{}", std::process::id()));
        std::fs::write(&path, b"test").unwrap();
        assert_eq!(sha256_of(&path).unwrap(), SUM);
        std::fs::remove_file(&path).unwrap();
    }
}
