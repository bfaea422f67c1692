//! How the destination stores what a copy writes: `--storage-class` (S3 and GCS classes,
//! Azure access tiers, also spelled `--block-blob-tier` as AzCopy does), `--sse`,
//! `--sse-kms-key-id` (an S3 KMS key id or a GCS Cloud KMS key name) and `--encryption-scope`
//! (Azure). Checked against the destination's kind before anything is written.

use anyhow::Result;
use clap::Args;
use skyx_store::{Encryption, StoreLocation, WriteOptions, WriteOptionsError};

use crate::error::BadInput;

#[derive(Debug, Args, Default)]
pub struct WriteArgs {
    /// Storage class of every object written (S3: STANDARD_IA, GLACIER_IR, ...; GCS:
    /// NEARLINE, COLDLINE, ARCHIVE; Azure access tier: Hot, Cool, Cold, Archive).
    #[arg(long, alias = "block-blob-tier", value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// S3 server-side encryption of every object written: AES256 or aws:kms.
    #[arg(long, value_name = "AES256|aws:kms")]
    pub sse: Option<String>,
    /// The KMS key: an S3 key id or ARN (implies --sse aws:kms), or a GCS Cloud KMS key
    /// (projects/P/locations/L/keyRings/R/cryptoKeys/K).
    #[arg(long, value_name = "KEY")]
    pub sse_kms_key_id: Option<String>,
    /// Azure encryption scope of every blob written.
    #[arg(long, value_name = "SCOPE")]
    pub encryption_scope: Option<String>,
}

impl WriteArgs {
    /// The options for a destination at `dst`, or a bad-input error naming the flag.
    pub fn options(&self, dst: &StoreLocation) -> Result<WriteOptions> {
        if self.encryption_scope.is_some() && (self.sse.is_some() || self.sse_kms_key_id.is_some())
        {
            return Err(BadInput(
                "--encryption-scope (Azure) cannot go with --sse or --sse-kms-key-id".into(),
            )
            .into());
        }
        let encryption = match (self.sse.as_deref(), &self.sse_kms_key_id) {
            (None, None) => self.encryption_scope.clone().map(Encryption::AzureScope),
            (Some("AES256"), None) => Some(Encryption::S3Managed),
            (Some("AES256"), Some(_)) => {
                return Err(
                    BadInput("--sse-kms-key-id needs --sse aws:kms, not AES256".into()).into(),
                );
            }
            (Some("aws:kms") | None, key) => Some(Encryption::Kms { key: key.clone() }),
            (Some(other), _) => {
                return Err(BadInput(format!("--sse {other}: expected AES256 or aws:kms")).into());
            }
        };
        let options = WriteOptions {
            storage_class: self.storage_class.clone(),
            encryption,
        };
        options.for_store(dst).map_err(|e| {
            let flag = match &e {
                WriteOptionsError::UnknownClass { .. } | WriteOptionsError::NoClasses { .. } => {
                    format!(
                        "--storage-class {}",
                        self.storage_class.as_deref().unwrap_or("")
                    )
                }
                WriteOptionsError::GcsKeyMissing => "--sse aws:kms".to_string(),
                WriteOptionsError::NoEncryption { .. } => [
                    self.sse.as_ref().map(|_| "--sse"),
                    self.sse_kms_key_id.as_ref().map(|_| "--sse-kms-key-id"),
                    self.encryption_scope.as_ref().map(|_| "--encryption-scope"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/"),
            };
            BadInput(format!("{flag}: {e}")).into()
        })
    }
}
