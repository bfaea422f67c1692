//! Object URLs: `s3://bucket/key`, `gs://bucket/key`, `az://account/container/key`,
//! `https://ACCOUNT.blob.core.windows.net/container/key`, `file:///abs/path` and bare paths.
//! A URL that parses names a well-formed location; a malformed one is rejected with the part
//! that is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a store lives (everything but the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreLocation {
    S3 {
        bucket: String,
    },
    Gcs {
        bucket: String,
    },
    Azure {
        account: String,
        container: String,
    },
    /// The local filesystem; keys are absolute paths without the leading `/`.
    Local,
    /// The benchmark device `synthetic://COUNTxSIZE` (see [`crate::synthetic`]): not a store.
    Synthetic {
        objects: u64,
        size: u64,
    },
}

impl StoreLocation {
    pub fn scheme(&self) -> &'static str {
        match self {
            StoreLocation::S3 { .. } => "s3",
            StoreLocation::Gcs { .. } => "gs",
            StoreLocation::Azure { .. } => "az",
            StoreLocation::Local => "file",
            StoreLocation::Synthetic { .. } => "synthetic",
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::S3 { bucket } => write!(f, "s3://{bucket}"),
            StoreLocation::Gcs { bucket } => write!(f, "gs://{bucket}"),
            StoreLocation::Azure { account, container } => write!(f, "az://{account}/{container}"),
            StoreLocation::Local => write!(f, "file://"),
            StoreLocation::Synthetic { objects, size } => {
                write!(f, "synthetic://{objects}x{size}")
            }
        }
    }
}

/// A parsed object URL: a store and a key (or key prefix) inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    pub location: StoreLocation,
    /// The key, or prefix; may be empty (the whole bucket). Never starts with `/`.
    pub key: String,
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            StoreLocation::Local => write!(f, "file:///{}", self.key),
            loc => write!(f, "{loc}/{}", self.key),
        }
    }
}

/// Why a URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad URL '{url}': {part}: {why}")]
pub struct UrlError {
    pub url: String,
    /// The part that is wrong: "scheme", "bucket", "account", "container", "key", "path", "host".
    pub part: &'static str,
    pub why: String,
}

fn err(url: &str, part: &'static str, why: impl Into<String>) -> UrlError {
    UrlError {
        url: url.to_string(),
        part,
        why: why.into(),
    }
}

fn check_bucket(url: &str, bucket: &str, cloud: &str) -> Result<(), UrlError> {
    let ok_chars = bucket.chars().all(|c| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '.'
            || c == '-'
            || (cloud == "gs" && c == '_')
    });
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if bucket.is_empty() {
        return Err(err(url, "bucket", "missing bucket name"));
    }
    if !(3..=63).contains(&bucket.len()) || !ok_chars || !ok_ends || bucket.contains("..") {
        return Err(err(
            url,
            "bucket",
            format!(
                "'{bucket}' is not a valid {cloud} bucket name (3-63 lowercase letters, digits, \
                 '.' or '-', starting and ending with a letter or digit)"
            ),
        ));
    }
    Ok(())
}

fn check_key(url: &str, key: &str) -> Result<(), UrlError> {
    if key.len() > 1024 {
        return Err(err(url, "key", "longer than 1024 bytes"));
    }
    // Control characters (NUL, escape sequences, newlines) are legal in some stores' keys but
    // never what a user meant to type, and they corrupt terminals and file systems.
    if let Some((at, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(err(
            url,
            "key",
            format!("contains the control character {:?} at byte {at}", c),
        ));
    }
    Ok(())
}

fn check_azure(url: &str, account: &str, container: &str) -> Result<(), UrlError> {
    if !(3..=24).contains(&account.len())
        || !account
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(err(
            url,
            "account",
            format!("'{account}' is not a storage account name (3-24 lowercase letters or digits)"),
        ));
    }
    let ok = (3..=63).contains(&container.len())
        && container
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && container.starts_with(|c: char| c.is_ascii_alphanumeric())
        && container.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !container.contains("--");
    if container.is_empty() {
        return Err(err(url, "container", "missing container name"));
    }
    if !ok {
        return Err(err(
            url,
            "container",
            format!(
                "'{container}' is not a container name (3-63 lowercase letters, digits or single \
                 '-', starting and ending with a letter or digit)"
            ),
        ));
    }
    Ok(())
}

fn local(url: &str, path: &Path) -> Result<ObjectUrl, UrlError> {
    let abs: PathBuf = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| err(url, "path", format!("cannot resolve a relative path: {e}")))?
            .join(path)
    };
    // Lexically normalised, as Go's filepath.Clean (s5cmd, rclone) does: `a/./b//c/../d` is
    // `a/b/d`, so a local key never holds `.`, `..` or empty segments (the local store refuses
    // them). `..` pops the name before it, not whatever a symlink there points to.
    let mut clean = PathBuf::from("/");
    for component in abs.components() {
        match component {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::Normal(name) => clean.push(name),
            _ => {}
        }
    }
    let text = clean
        .to_str()
        .ok_or_else(|| err(url, "path", "not valid UTF-8"))?;
    // Keep a trailing slash: it marks a directory prefix.
    let mut key = text.trim_start_matches('/').to_string();
    if url.ends_with('/') && !key.ends_with('/') && !key.is_empty() {
        key.push('/');
    }
    Ok(ObjectUrl {
        location: StoreLocation::Local,
        key,
    })
}

impl ObjectUrl {
    pub fn parse(url: &str) -> Result<ObjectUrl, UrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err(err(url, "path", "empty"));
            }
            return local(url, Path::new(url));
        };
        match scheme {
            "s3" | "gs" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                check_bucket(url, bucket, scheme)?;
                check_key(url, key)?;
                let bucket = bucket.to_string();
                let location = if scheme == "s3" {
                    StoreLocation::S3 { bucket }
                } else {
                    StoreLocation::Gcs { bucket }
                };
                Ok(ObjectUrl {
                    location,
                    key: key.to_string(),
                })
            }
            "az" => {
                let mut parts = rest.splitn(3, '/');
                let account = parts.next().unwrap_or("");
                let container = parts.next().unwrap_or("");
                let key = parts.next().unwrap_or("");
                check_azure(url, account, container)?;
                check_key(url, key)?;
                Ok(ObjectUrl {
                    location: StoreLocation::Azure {
                        account: account.into(),
                        container: container.into(),
                    },
                    key: key.to_string(),
                })
            }
            "https" | "http" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let Some(account) = host.strip_suffix(".blob.core.windows.net") else {
                    return Err(err(
                        url,
                        "host",
                        format!(
                            "'{host}' is not an Azure Blob endpoint (ACCOUNT.blob.core.windows.net); \
                             for other stores use s3://, gs:// or az://"
                        ),
                    ));
                };
                let (container, key) = path.split_once('/').unwrap_or((path, ""));
                check_azure(url, account, container)?;
                check_key(url, key)?;
                Ok(ObjectUrl {
                    location: StoreLocation::Azure {
                        account: account.into(),
                        container: container.into(),
                    },
                    key: key.to_string(),
                })
            }
            "synthetic" => {
                let (host, key) = rest.split_once('/').unwrap_or((rest, ""));
                let parsed = host
                    .split_once('x')
                    .and_then(|(n, s)| Some((n.parse().ok()?, s.parse().ok()?)));
                let Some((objects, size)) = parsed else {
                    return Err(err(
                        url,
                        "host",
                        format!("'{host}' is not COUNTxSIZE (e.g. synthetic://1000000x1024)"),
                    ));
                };
                check_key(url, key)?;
                Ok(ObjectUrl {
                    location: StoreLocation::Synthetic { objects, size },
                    key: key.to_string(),
                })
            }
            "file" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !(host.is_empty() || host == "localhost") {
                    return Err(err(
                        url,
                        "host",
                        format!("file URLs name no host ('{host}'); use file:///abs/path"),
                    ));
                }
                local(url, &Path::new("/").join(path))
            }
            other => Err(err(
                url,
                "scheme",
                format!(
                    "unknown scheme '{other}' (expected s3, gs, az, https (Azure), file, or a path)"
                ),
            )),
        }
    }

    /// The local path of a `Local` URL.
    pub fn local_path(&self) -> Option<PathBuf> {
        matches!(self.location, StoreLocation::Local)
            .then(|| PathBuf::from(format!("/{}", self.key)))
    }
}

impl std::str::FromStr for ObjectUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ObjectUrl {
        ObjectUrl::parse(s).unwrap()
    }

    #[test]
    fn cloud_urls() {
        let u = parse("s3://my-bucket/data/part-0.parquet");
        assert_eq!(
            u.location,
            StoreLocation::S3 {
                bucket: "my-bucket".into()
            }
        );
        assert_eq!(u.key, "data/part-0.parquet");
        assert_eq!(u.to_string(), "s3://my-bucket/data/part-0.parquet");
        assert_eq!(parse("gs://bkt").key, "");
        let a = parse("az://acct01/container-1/dir/x");
        assert_eq!(
            a.location,
            StoreLocation::Azure {
                account: "acct01".into(),
                container: "container-1".into()
            }
        );
        let h = parse("https://acct01.blob.core.windows.net/container-1/dir/x");
        assert_eq!(h, a);
    }

    #[test]
    fn local_paths() {
        assert_eq!(parse("file:///tmp/x/y").key, "tmp/x/y");
        assert_eq!(parse("/tmp/x/").key, "tmp/x/");
        assert_eq!(
            parse("/tmp/x").local_path().unwrap(),
            PathBuf::from("/tmp/x")
        );
        let rel = parse("some/rel");
        assert!(rel.local_path().unwrap().is_absolute());
        // Normalised lexically: no '.', '..' or empty segments ever reach the local store.
        assert_eq!(parse("/tmp/a/./b//c/../d/").key, "tmp/a/b/d/");
        assert_eq!(parse("/../../etc").key, "etc");
    }

    #[test]
    fn errors_name_the_wrong_part() {
        let cases = [
            ("ftp://host/x", "scheme"),
            ("s3://", "bucket"),
            ("s3://Bad_Bucket/x", "bucket"),
            ("s3://ab/x", "bucket"),
            ("az://ACCOUNT/c/x", "account"),
            ("az://account/", "container"),
            ("az://account/bad--name/x", "container"),
            ("https://example.com/x", "host"),
            ("file://server/share", "host"),
        ];
        for (url, part) in cases {
            let e = ObjectUrl::parse(url).unwrap_err();
            assert_eq!(e.part, part, "{url}: {e}");
            assert!(e.to_string().contains(url));
        }
    }
}
