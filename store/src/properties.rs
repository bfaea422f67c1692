//! An object's properties carried across stores: its HTTP system properties, its user metadata
//! and its modification time.
//!
//! Mapping rules between clouds (what a copy keeps, each backend applying them when it writes):
//! - **System properties**: Content-Type, Content-Encoding, Content-Language,
//!   Content-Disposition and Cache-Control on every cloud; Expires on S3 only (GCS and Azure
//!   have none, so it is dropped there). A local file keeps none of them; a local source's
//!   Content-Type is guessed from its file name.
//! - **User metadata** (`x-amz-meta-*`, `x-goog-meta-*`, Azure metadata): names are lowercased
//!   (S3 and Azure do not keep case). Azure takes only C# identifiers as names, so any other
//!   character becomes `_` and a leading digit gets a `_` in front. S3 and Azure take only
//!   ASCII values, so a non-ASCII value is written RFC 2047-encoded (`=?UTF-8?B?...?=`, as S3
//!   itself returns such values) and decoded when read.
//! - **Modification time**: kept as the user metadata `mtime` (seconds since the epoch with a
//!   fraction, the name and form rclone uses) on clouds, and as the file's mtime locally.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

/// The user metadata name the modification time travels under.
pub const MTIME_KEY: &str = "mtime";

/// What travels with an object's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Properties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// An HTTP date, as the source gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// User metadata, names lowercased, values as the user wrote them (decoded).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// When the content was last modified at its origin (not when a store received it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<SystemTime>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Builds properties from a store's user metadata (already lowercased or not): takes the
    /// `mtime` entry out as the modification time and decodes RFC 2047 values.
    pub fn with_user_metadata<'a>(
        mut self,
        metadata: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Properties {
        for (name, value) in metadata {
            let name = name.to_ascii_lowercase();
            let value = decode_value(value);
            if name == MTIME_KEY
                && let Some(t) = parse_mtime(&value)
            {
                self.modified = Some(t);
                continue;
            }
            self.user.insert(name, value);
        }
        self
    }

    /// The user metadata to write, with the modification time as `mtime`, values ASCII
    /// (RFC 2047 where they were not), for stores that take only ASCII values.
    pub fn ascii_metadata(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .user
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), encode_value(v)))
            .collect();
        if let Some(t) = self.modified {
            out.insert(MTIME_KEY.into(), format_mtime(t));
        }
        out
    }

    /// As [`Properties::ascii_metadata`], with names Azure takes (C# identifiers).
    pub fn azure_metadata(&self) -> BTreeMap<String, String> {
        self.ascii_metadata()
            .into_iter()
            .map(|(k, v)| (azure_name(&k), v))
            .collect()
    }

    /// The user metadata to write where values may be any UTF-8 (GCS).
    pub fn utf8_metadata(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .user
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if let Some(t) = self.modified {
            out.insert(MTIME_KEY.into(), format_mtime(t));
        }
        out
    }
}

/// `mtime` as rclone writes it: seconds since the epoch, a `.`, nanoseconds.
pub fn format_mtime(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(_) => "0".into(),
    }
}

/// Reads `mtime` as rclone and skyx write it (a fraction of any length, or none).
pub fn parse_mtime(value: &str) -> Option<SystemTime> {
    let (secs, frac) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
    let secs: u64 = secs.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A C# identifier for an Azure metadata name: other characters become `_`, a leading digit
/// gets a `_` in front.
pub fn azure_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A value as an ASCII-only store takes it: unchanged if it is printable ASCII, else RFC 2047
/// base64-encoded UTF-8.
pub fn encode_value(value: &str) -> String {
    if value.chars().all(|c| (' '..='~').contains(&c)) {
        return value.to_string();
    }
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
    )
}

/// The inverse of [`encode_value`]; other values unchanged.
pub fn decode_value(value: &str) -> String {
    let inner = value
        .strip_prefix("=?UTF-8?B?")
        .or_else(|| value.strip_prefix("=?utf-8?b?"))
        .and_then(|v| v.strip_suffix("?="));
    inner
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| value.to_string())
}

/// The Content-Type of a local file, guessed from its name as web servers do.
pub fn guess_content_type(name: &str) -> Option<String> {
    mime_guess::from_path(name)
        .first()
        .map(|m| m.essence_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_round_trips_and_reads_other_forms() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(format_mtime(t), "1700000000.123456789");
        assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        assert_eq!(
            parse_mtime("1700000000.5"),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_mtime("1700000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(parse_mtime("yesterday"), None);
        assert_eq!(parse_mtime("1.2e3"), None);
    }

    #[test]
    fn names_and_values_map_to_what_each_cloud_takes() {
        assert_eq!(azure_name("x-owner"), "x_owner");
        assert_eq!(azure_name("2fa"), "_2fa");
        assert_eq!(azure_name("ok_name"), "ok_name");
        assert_eq!(encode_value("plain ascii"), "plain ascii");
        let v = "café ☕";
        let encoded = encode_value(v);
        assert!(encoded.is_ascii() && encoded.starts_with("=?UTF-8?B?"));
        assert_eq!(decode_value(&encoded), v);
        assert_eq!(
            decode_value("=?UTF-8?B?not base64?="),
            "=?UTF-8?B?not base64?="
        );
        let mut user = BTreeMap::new();
        user.insert("Owner".to_string(), v.to_string());
        user.insert("mtime".to_string(), "1700000000.25".to_string());
        let p = Properties::default().with_user_metadata(&user);
        assert_eq!(p.user.get("owner").map(String::as_str), Some(v));
        assert!(p.modified.is_some() && !p.user.contains_key("mtime"));
        assert_eq!(
            p.ascii_metadata().get("mtime").unwrap(),
            "1700000000.250000000"
        );
        assert_eq!(p.ascii_metadata().get("owner").unwrap(), &encoded);
        assert_eq!(p.utf8_metadata().get("owner").unwrap(), v);
    }

    #[test]
    fn content_types_are_guessed_from_names() {
        assert_eq!(
            guess_content_type("a/index.html").as_deref(),
            Some("text/html")
        );
        assert_eq!(guess_content_type("x.css").as_deref(), Some("text/css"));
        assert_eq!(
            guess_content_type("data.json").as_deref(),
            Some("application/json")
        );
        assert_eq!(guess_content_type("noext"), None);
    }
}
