//! Server-side copies: an object one store describes ([`CopySource`]) is written by another
//! store of the same kind without its bytes passing through an agent (S3 CopyObject and
//! UploadPartCopy, GCS rewrite, Azure Copy Blob; between two local paths, this process).
//!
//! The destination's service reads the source, so the destination's credentials (or, on
//! Azure, a signature the source store adds to the source's URL) must be able to read it;
//! [`eligibility`] says from the two ends' settings whether that holds.

use crate::{StoreConfig, StoreLocation};

/// An object a store of the same kind can copy server-side, as its own store describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct CopySource {
    pub location: StoreLocation,
    pub key: String,
    pub size: u64,
    /// The version copied: the copy fails rather than take another (S3 `x-amz-copy-source-if-
    /// match`, Azure `x-ms-source-if-match`).
    pub etag: Option<String>,
    /// The content MD5 the source keeps, if any (Azure checks a copy against it).
    pub md5: Option<[u8; 16]>,
    /// A URL the destination's service fetches (Azure), with the source's SAS: never printed.
    pub(crate) url: Option<String>,
}

impl std::fmt::Debug for CopySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopySource")
            .field("location", &self.location)
            .field("key", &self.key)
            .field("size", &self.size)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

impl CopySource {
    /// A source the destination's service finds by bucket and key.
    pub fn by_name(location: &StoreLocation, meta: &crate::ObjectMeta) -> Self {
        CopySource {
            location: location.clone(),
            key: meta.key.clone(),
            size: meta.size,
            etag: meta.etag.clone(),
            md5: meta.md5,
            url: None,
        }
    }
}

/// Whether `dst` can copy from `src` server-side, with each end reached through its settings;
/// `Err` says why not. Both must be the same kind of store behind the same service endpoint.
/// S3 and GCS sign the copy with the destination's credentials only, so both ends must use the
/// same ones; an Azure destination fetches a URL the source signs (or a public one), so any
/// two accounts of one service can.
pub fn eligibility(
    src: &StoreLocation,
    src_config: &StoreConfig,
    dst: &StoreLocation,
    dst_config: &StoreConfig,
) -> Result<(), String> {
    match (src, dst) {
        (StoreLocation::S3 { .. }, StoreLocation::S3 { .. }) => {
            let (s, d) = (&src_config.s3, &dst_config.s3);
            if s.endpoint != d.endpoint {
                return Err("the two ends are different S3 services (endpoints)".into());
            }
            // A bucket's region does not matter: S3 copies across regions.
            let same_identity = s.static_credentials == d.static_credentials
                && s.profile == d.profile
                && s.anonymous == d.anonymous
                && s.requester_pays == d.requester_pays;
            if !same_identity {
                return Err(
                    "the two ends use different S3 credentials; the destination's must read the source"
                        .into(),
                );
            }
            if s.anonymous {
                return Err("an anonymous destination cannot write".into());
            }
            Ok(())
        }
        (StoreLocation::Gcs { .. }, StoreLocation::Gcs { .. }) => {
            let (s, d) = (&src_config.gcs, &dst_config.gcs);
            if s.endpoint != d.endpoint {
                return Err("the two ends are different GCS services (endpoints)".into());
            }
            if s != d {
                return Err(
                    "the two ends use different GCS credentials; the destination's must read the source"
                        .into(),
                );
            }
            Ok(())
        }
        (StoreLocation::Azure { account: a, .. }, StoreLocation::Azure { account: b, .. }) => {
            // The destination's service fetches the source's URL: any account of the real
            // service can be reached, but a service behind a custom endpoint (an emulator, a
            // private endpoint) only reaches itself.
            let service = |config: &StoreConfig, account: &str| {
                let (endpoint, custom) = crate::azure::blob_endpoint(&config.azure, account);
                let url = url::Url::parse(&endpoint).ok();
                let host =
                    url.map(|u| format!("{:?}:{:?}", u.host_str(), u.port_or_known_default()));
                (host, custom)
            };
            let ((hs, custom_s), (hd, custom_d)) = (service(src_config, a), service(dst_config, b));
            if (custom_s || custom_d) && hs != hd {
                return Err("the two ends are different Azure services (endpoints)".into());
            }
            if a != b && !crate::azure::url_readable_elsewhere(&src_config.azure, a) {
                return Err(
                    "the source account signs no URL the destination's account could read (it uses Entra ID, not a SAS or key)"
                        .into(),
                );
            }
            if dst_config.write.azure_scope().is_some() {
                return Err("Copy Blob cannot set an encryption scope".into());
            }
            Ok(())
        }
        // Two paths of this machine: the process copies them itself.
        (StoreLocation::Local, StoreLocation::Local) => Ok(()),
        _ => Err("the two ends are different kinds of store".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::S3Config;

    fn s3(bucket: &str) -> StoreLocation {
        StoreLocation::S3 {
            bucket: bucket.into(),
        }
    }

    #[test]
    fn only_ends_one_service_and_identity_can_copy_between_are_eligible() {
        let config = |endpoint: Option<&str>, keys: Option<(&str, &str)>| StoreConfig {
            s3: S3Config {
                endpoint: endpoint.map(str::to_string),
                static_credentials: keys.map(|(a, b)| (a.into(), b.into())),
                ..S3Config::default()
            },
            ..StoreConfig::default()
        };
        let a = config(None, Some(("ak", "sk")));
        let regional = StoreConfig {
            s3: S3Config {
                region: Some("eu-west-1".into()),
                ..a.s3.clone()
            },
            ..a.clone()
        };
        assert_eq!(eligibility(&s3("x"), &a, &s3("y"), &regional), Ok(()));
        let other_keys = config(None, Some(("ak2", "sk2")));
        let e = eligibility(&s3("x"), &a, &s3("y"), &other_keys).unwrap_err();
        assert!(e.contains("different S3 credentials"), "{e}");
        let other_service = config(Some("http://127.0.0.1:9000"), Some(("ak", "sk")));
        let e = eligibility(&s3("x"), &a, &s3("y"), &other_service).unwrap_err();
        assert!(e.contains("different S3 services"), "{e}");
        let gcs = StoreLocation::Gcs { bucket: "g".into() };
        let e = eligibility(&s3("x"), &a, &gcs, &a).unwrap_err();
        assert!(e.contains("different kinds"), "{e}");
        assert_eq!(
            eligibility(&StoreLocation::Local, &a, &StoreLocation::Local, &a),
            Ok(())
        );

        // Azure: two accounts of the public service can; two emulators cannot.
        let az = |account: &str| StoreLocation::Azure {
            account: account.into(),
            container: "c".into(),
        };
        let public = StoreConfig {
            azure: crate::azure::AzureConfig {
                anonymous: true,
                ..Default::default()
            },
            ..StoreConfig::default()
        };
        assert_eq!(
            eligibility(&az("one"), &public, &az("two"), &public),
            Ok(())
        );
        // Entra ID signs no URL: only within one account.
        let entra = StoreConfig::default();
        assert_eq!(eligibility(&az("one"), &entra, &az("one"), &entra), Ok(()));
        let e = eligibility(&az("one"), &entra, &az("two"), &entra).unwrap_err();
        assert!(e.contains("signs no URL"), "{e}");
        let emulator = |port: u16| StoreConfig {
            azure: crate::azure::AzureConfig {
                endpoint: Some(format!("http://127.0.0.1:{port}/acct")),
                sas_token: Some("sv=x&sig=y".into()),
                ..Default::default()
            },
            ..StoreConfig::default()
        };
        assert_eq!(
            eligibility(&az("one"), &emulator(1), &az("two"), &emulator(1)),
            Ok(())
        );
        assert!(eligibility(&az("one"), &emulator(1), &az("two"), &emulator(2)).is_err());
    }
}
