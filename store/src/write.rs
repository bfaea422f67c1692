//! How objects are written into a destination beyond their properties: the storage class (S3,
//! GCS) or access tier (Azure), and server-side encryption (S3 SSE-S3 / SSE-KMS with a key, a
//! GCS Cloud KMS key, an Azure encryption scope). One set per destination store, applied to
//! every object it writes (put, multipart, server-side copy).

use crate::StoreLocation;

/// Write settings for one destination; [`WriteOptions::for_store`] checks them against the
/// kind of store and spells them as that store takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteOptions {
    /// S3 storage class (`STANDARD_IA`), GCS storage class (`NEARLINE`) or Azure access tier
    /// (`Cool`).
    pub storage_class: Option<String>,
    pub encryption: Option<Encryption>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// S3 SSE-S3 (`AES256`).
    S3Managed,
    /// S3 SSE-KMS (`aws:kms`, with the key id or the account's default key), or a GCS Cloud
    /// KMS key (`projects/P/locations/L/keyRings/R/cryptoKeys/K`, required).
    Kms { key: Option<String> },
    /// An Azure encryption scope.
    AzureScope(String),
}

/// S3's storage classes (API names).
pub const S3_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];
/// GCS's storage classes.
pub const GCS_CLASSES: &[&str] = &["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"];
/// Azure's access tiers for block blobs.
pub const AZURE_TIERS: &[&str] = &["Hot", "Cool", "Cold", "Archive"];

/// Which setting is wrong, and why: the edge names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteOptionsError {
    #[error("{value:?} is not a {what} of {store}; one of: {choices}")]
    UnknownClass {
        value: String,
        what: &'static str,
        store: String,
        choices: String,
    },
    #[error("{store} has no storage classes")]
    NoClasses { store: String },
    #[error("{store} does not take {what}")]
    NoEncryption { store: String, what: &'static str },
    #[error(
        "a GCS destination needs the KMS key's full name (projects/P/locations/L/keyRings/R/cryptoKeys/K)"
    )]
    GcsKeyMissing,
}

impl WriteOptions {
    pub fn is_empty(&self) -> bool {
        *self == WriteOptions::default()
    }

    /// These options for a destination of `location`'s kind, the class spelled as that store
    /// spells it (case-insensitive input), or what does not fit it.
    pub fn for_store(&self, location: &StoreLocation) -> Result<WriteOptions, WriteOptionsError> {
        let store = match location {
            StoreLocation::Local => "a local destination".to_string(),
            StoreLocation::S3 { .. } => "S3".to_string(),
            StoreLocation::Gcs { .. } => "GCS".to_string(),
            StoreLocation::Azure { .. } => "Azure".to_string(),
            StoreLocation::Synthetic { .. } => "the synthetic benchmark device".to_string(),
        };
        let class = match (&self.storage_class, location) {
            (None, _) => None,
            (Some(_), StoreLocation::Local | StoreLocation::Synthetic { .. }) => {
                return Err(WriteOptionsError::NoClasses { store });
            }
            (Some(c), loc) => {
                let (choices, what) = match loc {
                    StoreLocation::S3 { .. } => (S3_CLASSES, "storage class"),
                    StoreLocation::Gcs { .. } => (GCS_CLASSES, "storage class"),
                    _ => (AZURE_TIERS, "access tier"),
                };
                let found = choices.iter().find(|k| k.eq_ignore_ascii_case(c.trim()));
                Some(found.map(|k| k.to_string()).ok_or_else(|| {
                    WriteOptionsError::UnknownClass {
                        value: c.clone(),
                        what,
                        store: store.clone(),
                        choices: choices.join(", "),
                    }
                })?)
            }
        };
        let refuse = |what| WriteOptionsError::NoEncryption {
            store: store.clone(),
            what,
        };
        let encryption = match (&self.encryption, location) {
            (None, _) => None,
            (Some(Encryption::S3Managed), StoreLocation::S3 { .. }) => Some(Encryption::S3Managed),
            (Some(Encryption::S3Managed), _) => {
                return Err(refuse("S3-managed encryption (AES256)"));
            }
            (Some(Encryption::Kms { key }), StoreLocation::S3 { .. }) => {
                Some(Encryption::Kms { key: key.clone() })
            }
            (Some(Encryption::Kms { key: Some(k) }), StoreLocation::Gcs { .. }) => {
                Some(Encryption::Kms {
                    key: Some(k.clone()),
                })
            }
            (Some(Encryption::Kms { key: None }), StoreLocation::Gcs { .. }) => {
                return Err(WriteOptionsError::GcsKeyMissing);
            }
            (Some(Encryption::Kms { .. }), _) => return Err(refuse("a KMS key")),
            (Some(Encryption::AzureScope(s)), StoreLocation::Azure { .. }) => {
                Some(Encryption::AzureScope(s.clone()))
            }
            (Some(Encryption::AzureScope(_)), _) => return Err(refuse("an encryption scope")),
        };
        Ok(WriteOptions {
            storage_class: class,
            encryption,
        })
    }

    /// The KMS key, if any.
    pub fn kms_key(&self) -> Option<&str> {
        match &self.encryption {
            Some(Encryption::Kms { key }) => key.as_deref(),
            _ => None,
        }
    }

    /// The Azure encryption scope, if any.
    pub fn azure_scope(&self) -> Option<&str> {
        match &self.encryption {
            Some(Encryption::AzureScope(s)) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_against_the_kind_of_store_and_spelled_its_way() {
        let s3 = StoreLocation::S3 { bucket: "b".into() };
        let gcs = StoreLocation::Gcs { bucket: "b".into() };
        let az = StoreLocation::Azure {
            account: "a".into(),
            container: "c".into(),
        };
        let class = |c: &str| WriteOptions {
            storage_class: Some(c.into()),
            encryption: None,
        };
        assert_eq!(
            class("standard_ia")
                .for_store(&s3)
                .unwrap()
                .storage_class
                .as_deref(),
            Some("STANDARD_IA")
        );
        assert_eq!(
            class("cool")
                .for_store(&az)
                .unwrap()
                .storage_class
                .as_deref(),
            Some("Cool")
        );
        let e = class("NEARLINE").for_store(&s3).unwrap_err().to_string();
        assert!(
            e.contains("not a storage class of S3") && e.contains("GLACIER"),
            "{e}"
        );
        assert!(class("STANDARD").for_store(&StoreLocation::Local).is_err());
        let kms = |key: Option<&str>| WriteOptions {
            storage_class: None,
            encryption: Some(Encryption::Kms {
                key: key.map(str::to_string),
            }),
        };
        assert!(kms(None).for_store(&s3).is_ok());
        assert_eq!(
            kms(None).for_store(&gcs),
            Err(WriteOptionsError::GcsKeyMissing)
        );
        let e = kms(Some("k")).for_store(&az).unwrap_err().to_string();
        assert_eq!(e, "Azure does not take a KMS key");
        let scope = WriteOptions {
            storage_class: None,
            encryption: Some(Encryption::AzureScope("s".into())),
        };
        assert!(scope.for_store(&az).is_ok() && scope.for_store(&s3).is_err());
    }
}
