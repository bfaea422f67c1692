//! Server-side copies into an S3 bucket: CopyObject up to 5 GiB, UploadPartCopy beyond (parts
//! copied concurrently), from any bucket in any region the destination's credentials can
//! read. The copy carries the given properties (`MetadataDirective: REPLACE`) or lets S3 carry
//! the source's own (`COPY`, one request and nothing read first, as the AWS CLI, s5cmd and
//! rclone copy), and takes exactly the version the source listed
//! (`x-amz-copy-source-if-match`). A whole-object copy keeps the source's checksum, which S3
//! copies with the object when no other algorithm is asked for (CopyObject's documented
//! default), so it is not computed again.

use aws_sdk_s3::types::MetadataDirective;
use futures::{StreamExt, TryStreamExt};

use super::S3Store;
use crate::error::{ErrorKind, Result};
use crate::{Copied, CopySource, ObjectStore, PartReceipt, Properties, StoreLocation};

/// Copies above 5 GiB (S3's CopyObject limit) go in parts of 512 MiB.
pub(super) const DEFAULT_LIMITS: (u64, u64) = (5 * 1024 * 1024 * 1024, 512 * 1024 * 1024);
/// UploadPartCopy requests at once.
const COPY_PARTS_AT_ONCE: usize = 8;

/// Characters escaped in `x-amz-copy-source` (everything but unreserved and `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

impl S3Store {
    /// The properties of `key` in `bucket` (this store's, or another the same credentials
    /// read: a server-side copy's source).
    pub(super) async fn properties_in(&self, bucket: &str, key: &str) -> Result<Properties> {
        self.retry
            .run(|| async {
                let o = self
                    .client()
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.fail("head", key, e))?;
                let system = Properties {
                    content_type: o.content_type().map(str::to_string),
                    content_encoding: o.content_encoding().map(str::to_string),
                    content_language: o.content_language().map(str::to_string),
                    content_disposition: o.content_disposition().map(str::to_string),
                    cache_control: o.cache_control().map(str::to_string),
                    expires: o.expires_string().map(str::to_string),
                    ..Properties::default()
                };
                Ok(match o.metadata() {
                    Some(user) => system.with_user_metadata(user),
                    None => system,
                })
            })
            .await
    }

    /// Copies `source` to `key` with `properties`, or (`None`) with the source's own, which
    /// S3 copies itself; a copy onto the source's own key reads them first (S3 refuses a
    /// `COPY` of an object onto itself), as does one in parts from this bucket (completing an
    /// upload cannot copy them; from another bucket `copy_keeping` leaves that to the caller).
    pub(super) async fn copy_in(
        &self,
        source: &CopySource,
        key: &str,
        properties: Option<&Properties>,
    ) -> Result<Copied> {
        let StoreLocation::S3 { bucket } = &source.location else {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "copy",
                key,
                format!("cannot copy server-side from {}", source.location),
            ));
        };
        let copy_source = format!(
            "{bucket}/{}",
            percent_encoding::utf8_percent_encode(&source.key, COPY_SOURCE)
        );
        let (single_max, part) = self.copy_limits;
        let onto_itself = *bucket == self.bucket && source.key == key;
        let own;
        let properties = match properties {
            None if onto_itself || (source.size > single_max && *bucket == self.bucket) => {
                own = self.properties_in(bucket, &source.key).await?;
                Some(&own)
            }
            given => given,
        };
        if source.size <= single_max {
            let out = self
                .retry
                .run(|| async {
                    let request = match properties {
                        Some(p) => with_properties!(self.client().copy_object(), p)
                            .metadata_directive(MetadataDirective::Replace),
                        None => self
                            .client()
                            .copy_object()
                            .metadata_directive(MetadataDirective::Copy),
                    };
                    with_write_options!(request, &self.write)
                        .set_copy_source_if_match(source.etag.clone())
                        .bucket(&self.bucket)
                        .key(key)
                        .copy_source(&copy_source)
                        .send()
                        .await
                        .map_err(|e| self.fail("copy", key, e))
                })
                .await?;
            let result = out.copy_object_result();
            let etag = result.and_then(|r| r.e_tag());
            let md5 = etag.and_then(|etag| {
                super::checksums::md5_from_etag(
                    etag.trim_matches('"'),
                    out.server_side_encryption().map(|s| s.as_str()),
                    out.sse_customer_algorithm().is_some(),
                )
            });
            let unquoted = |e: &str| e.trim_matches('"').to_string();
            return Ok(Copied {
                crc32c: super::checksums::crc32c_from_checksum(
                    result.and_then(|r| r.checksum_crc32_c()),
                    None,
                ),
                md5,
                same_as_source: (md5.is_some()
                    && etag.map(unquoted) == source.etag.as_deref().map(unquoted))
                .then_some(crate::CopyProof::Md5),
            });
        }
        let Some(properties) = properties else {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "copy",
                key,
                "a copy in parts from another bucket needs the source's properties".into(),
            ));
        };
        let upload = self.create_multipart_with(key, properties).await?;
        let ranges: Vec<(u32, u64, u64)> = (0..source.size)
            .step_by(part as usize)
            .enumerate()
            .map(|(i, start)| {
                let end = (start + part).min(source.size) - 1;
                (i as u32 + 1, start, end)
            })
            .collect();
        let parts: Result<Vec<PartReceipt>> = futures::stream::iter(ranges)
            .map(|(part_number, start, end)| {
                let (upload, copy_source) = (&upload, &copy_source);
                async move {
                    let out = self
                        .retry
                        .run(|| async {
                            self.client()
                                .upload_part_copy()
                                .bucket(&self.bucket)
                                .key(key)
                                .upload_id(&upload.upload_id)
                                .part_number(part_number as i32)
                                .copy_source(copy_source)
                                .set_copy_source_if_match(source.etag.clone())
                                .copy_source_range(format!("bytes={start}-{end}"))
                                .send()
                                .await
                                .map_err(|e| self.fail("copy", key, e))
                        })
                        .await?;
                    let result = out.copy_part_result();
                    let crc32c = super::checksums::crc32c_from_checksum(
                        result.and_then(|r| r.checksum_crc32_c()),
                        None,
                    );
                    let etag = result.and_then(|r| r.e_tag());
                    let etag = etag.ok_or_else(|| {
                        self.error(
                            ErrorKind::Other,
                            "copy",
                            key,
                            "the server returned no part ETag".into(),
                        )
                    })?;
                    Ok(PartReceipt {
                        part_number,
                        etag: etag.to_string(),
                        crc32c,
                    })
                }
            })
            .buffer_unordered(COPY_PARTS_AT_ONCE)
            .try_collect()
            .await;
        let result = match parts {
            Ok(parts) => self.complete_multipart(&upload, parts).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if let Err(abort) = self.abort_multipart(&upload).await {
                tracing::warn!(key, error = %abort, "aborting a failed multipart copy failed");
            }
            return Err(e);
        }
        // A multipart object's ETag is no MD5, and completing answers no full-object checksum.
        Ok(Copied::default())
    }
}
