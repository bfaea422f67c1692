//! Amazon S3 and S3-compatible servers, on the official aws-sdk-s3.
//!
//! Credentials and region come from the standard AWS chain (environment, profiles, SSO,
//! process, instance metadata), `AWS_ENDPOINT_URL[_S3]` included. A custom endpoint switches to
//! path-style addressing, which S3-compatible servers expect. The SDK's own retries are turned
//! off so that [`RetryPolicy`] is the one documented policy in force.
//!
//! A bucket lives in one region and S3 refuses requests signed for another (`301
//! PermanentRedirect`, `400 AuthorizationHeaderMalformed`, naming the bucket's region in
//! `x-amz-bucket-region`); the SDK does not follow. So a store with no region given asks the
//! bucket (HeadBucket) when it opens, and any request answered that way switches the store's
//! client to the named region and is repeated there once.
//!
//! Checksums at rest: a whole object is written with its CRC32C (`x-amz-checksum-crc32c`),
//! which S3 checks and keeps, and a HEAD reads it back. An ETag is taken for an MD5 only
//! where S3 guarantees it is one (single part, not SSE-KMS/SSE-C, as the HEAD says); listings
//! never claim an MD5.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as AwsBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use crate::error::{ErrorKind, Result, StoreError};
use crate::retry::RetryPolicy;
mod answers;
#[macro_use]
mod requests;
mod checksums;
mod config;

use answers::{error_chain, redirect_region, status_kind, unservable};
use checksums::{crc32c_from_checksum, crc32c_header, crc32c_value, md5_from_etag};
use config::RequesterPays;
pub use config::S3Config;

use crate::Written;
use crate::{
    ByteStream, Copied, CopySource, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PartReceipt, Properties, StoreLocation,
};

#[derive(Debug)]
pub struct S3Store {
    /// The client for the bucket's region (rebuilt when S3 names another; see `follow_region`).
    client: std::sync::RwLock<Client>,
    /// Behind a custom endpoint (an S3-compatible server), not AWS.
    custom_endpoint: bool,
    bucket: String,
    location: StoreLocation,
    retry: RetryPolicy,
    /// Server-side copies above the first size go in parts of the second.
    copy_limits: (u64, u64),
    /// Storage class and encryption of every object written.
    write: crate::WriteOptions,
    /// Multipart uploads keep a full-object CRC32C, until the server refuses one.
    full_object_checksums: AtomicBool,
}

impl S3Store {
    pub async fn new(bucket: &str, config: &S3Config, retry: RetryPolicy) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(p) = &config.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &config.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint {
            loader = loader.endpoint_url(e);
        }
        if config.anonymous {
            loader = loader.no_credentials();
        } else if let Some((ak, sk)) = &config.static_credentials {
            loader =
                loader.credentials_provider(Credentials::new(ak, sk, None, None, "skyx-static"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style || config.endpoint.is_some());
        if config.requester_pays {
            builder = builder.interceptor(RequesterPays);
        }
        if shared.region().is_none() {
            // Signing needs a region; us-east-1 is what the AWS CLI assumes for S3.
            builder = builder.region(Region::new("us-east-1"));
        }
        let store = S3Store {
            custom_endpoint: shared.endpoint_url().is_some(),
            client: std::sync::RwLock::new(Client::from_conf(builder.build())),
            bucket: bucket.to_string(),
            copy_limits: copy::DEFAULT_LIMITS,
            write: crate::WriteOptions::default(),
            full_object_checksums: AtomicBool::new(true),
            location: StoreLocation::S3 {
                bucket: bucket.to_string(),
            },
            retry,
        };
        if config.region.is_none() {
            store.learn_region().await;
        }
        Ok(store)
    }

    /// Writes every object with `write`'s storage class and encryption (checked for S3 by
    /// [`crate::WriteOptions::for_store`]).
    pub fn with_write_options(mut self, write: crate::WriteOptions) -> Self {
        self.write = write;
        self
    }

    /// Server-side copies of objects above `single_max` bytes in parts of `part` bytes (S3's
    /// own limit is 5 GiB; some S3-compatible servers have lower ones).
    pub fn with_copy_limits(mut self, single_max: u64, part: u64) -> Self {
        self.copy_limits = (single_max, part.max(5 * 1024 * 1024));
        self
    }

    fn client(&self) -> Client {
        self.client.read().expect("client lock").clone()
    }

    /// The region the client signs for.
    pub fn region(&self) -> String {
        self.client()
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    /// Asks the bucket its region (HeadBucket answers with `x-amz-bucket-region`, whether it
    /// succeeds, redirects or refuses) and signs for it from now on. A bucket that does not
    /// answer is left to the first real request to fail on.
    async fn learn_region(&self) {
        let answer = self
            .client()
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await;
        let region = match &answer {
            Ok(out) => out.bucket_region().map(str::to_string),
            Err(e) => e
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .map(str::to_string),
        };
        if let Some(region) = region {
            self.follow_region(&region);
        }
    }

    /// Switches the client to `region`; whether it changed (a request refused for the wrong
    /// region is worth repeating once, in the right one).
    fn follow_region(&self, region: &str) -> bool {
        let mut client = self.client.write().expect("client lock");
        if client.config().region().map(|r| r.as_ref()) == Some(region) || region.is_empty() {
            return false;
        }
        tracing::debug!(bucket = %self.bucket, region, "following the bucket to its region");
        let conf = client
            .config()
            .to_builder()
            .region(Region::new(region.to_string()))
            .build();
        *client = Client::from_conf(conf);
        true
    }

    fn fail<E>(&self, op: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if let Some(region) = redirect_region(&e)
            && self.follow_region(&region)
        {
            return StoreError::new(
                ErrorKind::Transient,
                self.location.to_string(),
                op,
                key,
                format!("the bucket is in {region}; repeating the request there"),
            )
            .with_source(e);
        }
        let (kind, message) = match &e {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("");
                let msg = se.err().message().unwrap_or("").to_string();
                let kind = match code {
                    "NoSuchKey" | "NotFound" | "NoSuchUpload" => ErrorKind::NotFound,
                    "NoSuchBucket" => ErrorKind::BucketNotFound,
                    "PreconditionFailed" => ErrorKind::Changed,
                    "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                        ErrorKind::Throttled
                    }
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken" => ErrorKind::PermissionDenied,
                    "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                        ErrorKind::Transient
                    }
                    _ => ErrorKind::Other,
                };
                let kind = if kind == ErrorKind::Other {
                    status_kind(&e).unwrap_or(kind)
                } else {
                    kind
                };
                let reading = matches!(op, "get" | "head" | "copy" | "properties");
                let msg = match unservable(code, &msg).filter(|_| reading) {
                    Some(why) => {
                        return StoreError::new(
                            ErrorKind::Unreadable,
                            self.location.to_string(),
                            op,
                            key,
                            why.to_string(),
                        )
                        .with_source(e);
                    }
                    None => msg,
                };
                (
                    kind,
                    if code.is_empty() {
                        msg
                    } else {
                        format!("{code}: {msg}")
                    },
                )
            }
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => (
                ErrorKind::Transient,
                format!("network: {}", error_chain(&e)),
            ),
            SdkError::ConstructionFailure(_) => (ErrorKind::InvalidInput, error_chain(&e)),
            _ => (ErrorKind::Other, error_chain(&e)),
        };
        StoreError::new(kind, self.location.to_string(), op, key, message).with_source(e)
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<String>,
    ) -> Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output> {
        self.retry
            .run(|| async {
                let mut req = self
                    .client()
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix);
                if delimiter {
                    req = req.delimiter("/");
                }
                if let Some(t) = &token {
                    req = req.continuation_token(t);
                }
                req.send().await.map_err(|e| self.fail("list", prefix, e))
            })
            .await
    }
}

mod copy;

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

fn object_meta(
    key: String,
    size: Option<i64>,
    etag: Option<&str>,
    modified: Option<&aws_sdk_s3::primitives::DateTime>,
) -> ObjectMeta {
    let etag = etag.map(|e| e.trim_matches('"').to_string());
    ObjectMeta {
        key,
        size: size.unwrap_or(0).max(0) as u64,
        last_modified: to_system_time(modified),
        md5: None,
        etag,
        crc32c: None,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> &StoreLocation {
        &self.location
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let prefix = prefix.to_string();
        // State: (next token, finished). One page at a time: the consumer pulls pages.
        stream::try_unfold((None::<String>, false), move |(token, finished)| {
            let prefix = prefix.clone();
            async move {
                if finished {
                    return Ok(None);
                }
                let page = self.list_page(&prefix, false, token).await?;
                let next = page.next_continuation_token().map(str::to_string);
                let done = !page.is_truncated().unwrap_or(false) || next.is_none();
                let items: Vec<Result<ObjectMeta>> = page
                    .contents()
                    .iter()
                    .map(|o| {
                        Ok(object_meta(
                            o.key().unwrap_or("").to_string(),
                            o.size(),
                            o.e_tag(),
                            o.last_modified(),
                        ))
                    })
                    .collect();
                Ok(Some((stream::iter(items), (next, done))))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: &str) -> Result<ListResult> {
        let mut out = ListResult::default();
        let mut token = None;
        loop {
            let page = self.list_page(prefix, true, token).await?;
            out.objects.extend(page.contents().iter().map(|o| {
                object_meta(
                    o.key().unwrap_or("").to_string(),
                    o.size(),
                    o.e_tag(),
                    o.last_modified(),
                )
            }));
            out.common_prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
            token = page.next_continuation_token().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.retry
            .run(|| async {
                let o = self
                    .client()
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| self.fail("head", key, e))?;
                let mut meta = object_meta(
                    key.to_string(),
                    o.content_length(),
                    o.e_tag(),
                    o.last_modified(),
                );
                meta.md5 = meta.etag.as_deref().and_then(|e| {
                    md5_from_etag(
                        e,
                        o.server_side_encryption().map(|s| s.as_str()),
                        o.sse_customer_algorithm().is_some(),
                    )
                });
                meta.crc32c = crc32c_from_checksum(
                    o.checksum_crc32_c(),
                    o.checksum_type().map(|t| t.as_str()),
                );
                Ok(meta)
            })
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<ByteStream> {
        if range.start >= range.end {
            if range.start > range.end {
                return Err(self.error(
                    ErrorKind::InvalidInput,
                    "get",
                    key,
                    format!("empty range {range:?}"),
                ));
            }
            return Ok(stream::empty().boxed());
        }
        let out = self
            .retry
            .run(|| async {
                self.client()
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .range(format!("bytes={}-{}", range.start, range.end - 1))
                    .set_if_match(version.map(|v| format!("\"{v}\"")))
                    .send()
                    .await
                    .map_err(|e| self.fail("get", key, e))
            })
            .await?;
        // S3 answers a stale If-Match with 412; a compatible server that ignores the header
        // still names the version it served.
        if let (Some(want), Some(served)) = (version, out.e_tag())
            && served.trim_matches('"') != want
        {
            // Some servers spell a GET's ETag unlike a listing's (an encrypted object's on
            // MinIO): only a head that disagrees too is a change.
            let now = self.head(key).await?.etag.unwrap_or_default();
            if now != want {
                return Err(crate::changed(self, key, want, &now));
            }
        }
        // S3 clamps a range that runs past the end; the trait promises exactly the range.
        let want = range.end - range.start;
        if out.content_length().is_some_and(|n| n as u64 != want) {
            let size = out
                .content_range()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("?");
            return Err(self.error(
                ErrorKind::InvalidInput,
                "get",
                key,
                format!(
                    "range {}..{} outside the object's {size} bytes",
                    range.start, range.end
                ),
            ));
        }
        let store = self.location.to_string();
        let key = key.to_string();
        Ok(stream::unfold(Some(out.body), move |body| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let mut body: AwsBody = body?;
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                    Ok(None) => None,
                    Err(e) => Some((
                        Err(StoreError::new(
                            ErrorKind::Transient,
                            store,
                            "get",
                            key,
                            format!("reading the body: {e}"),
                        )
                        .with_source(e)),
                        None,
                    )),
                }
            }
        })
        .boxed())
    }

    async fn properties(&self, key: &str) -> Result<Properties> {
        self.properties_in(&self.bucket, key).await
    }

    async fn put_with(&self, key: &str, data: Bytes, properties: &Properties) -> Result<Written> {
        let crc = crc32c_header(&data);
        let size = data.len() as u64;
        self.retry
            .run(|| async {
                // The store checks the bytes against this and keeps it: the object's CRC32C
                // at rest, which verification compares with the source's.
                with_write_options!(
                    with_properties!(self.client().put_object(), properties),
                    &self.write
                )
                .checksum_crc32_c(&crc)
                .bucket(&self.bucket)
                .key(key)
                .body(AwsBody::from(data.clone()))
                .send()
                .await
                .map_err(|e| self.fail("put", key, e))
                .map(|out| Written {
                    size,
                    crc32c: crc32c_from_checksum(out.checksum_crc32_c(), None),
                    md5: out.e_tag().and_then(|etag| {
                        md5_from_etag(
                            etag.trim_matches('"'),
                            out.server_side_encryption().map(|s| s.as_str()),
                            out.sse_customer_algorithm().is_some(),
                        )
                    }),
                })
            })
            .await
    }

    async fn create_multipart_with(
        &self,
        key: &str,
        properties: &Properties,
    ) -> Result<MultipartUpload> {
        let create = |full_object: bool| {
            self.retry.run(move || async move {
                // The object's CRC32C, kept whole (not a checksum of part checksums): S3
                // combines the parts' CRC32Cs, checks the completer's, and a HEAD reads it.
                let request = with_write_options!(
                    with_properties!(self.client().create_multipart_upload(), properties),
                    &self.write
                );
                let request = if full_object {
                    request
                        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
                        .checksum_type(aws_sdk_s3::types::ChecksumType::FullObject)
                } else {
                    request
                };
                request
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.fail("create_multipart", key, e))
            })
        };
        let full_object = self.full_object_checksums.load(Ordering::Relaxed);
        let out = match create(full_object).await {
            // An S3-compatible server that does not take full-object checksums: this store's
            // uploads go without them (checked by size at rest, as before).
            Err(e)
                if full_object && matches!(e.kind, ErrorKind::InvalidInput | ErrorKind::Other) =>
            {
                tracing::warn!(error = %e, "the server refuses full-object CRC32C uploads; going without");
                self.full_object_checksums.store(false, Ordering::Relaxed);
                create(false).await?
            }
            other => other?,
        };
        let upload_id = out.upload_id().ok_or_else(|| {
            self.error(
                ErrorKind::Other,
                "create_multipart",
                key,
                "the server returned no upload id".into(),
            )
        })?;
        Ok(MultipartUpload::new(key, upload_id, properties.clone()))
    }

    async fn put_part(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        let crc = crc32c::crc32c(&data);
        let key = &upload.key;
        let out = self
            .retry
            .run(|| async {
                self.client()
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload.upload_id)
                    .part_number(part_number as i32)
                    .checksum_crc32_c(crc32c_value(crc))
                    .body(AwsBody::from(data.clone()))
                    .send()
                    .await
                    .map_err(|e| self.fail("put_part", key, e))
            })
            .await?;
        let etag = out.e_tag().ok_or_else(|| {
            self.error(
                ErrorKind::Other,
                "put_part",
                key,
                "the server returned no part ETag".into(),
            )
        })?;
        Ok(PartReceipt {
            part_number,
            etag: etag.to_string(),
            crc32c: Some(crc),
        })
    }

    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let full_object = self.full_object_checksums.load(Ordering::Relaxed);
        let mut parts = parts;
        parts.sort_by_key(|p| p.part_number);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.part_number as i32)
                            .e_tag(&p.etag)
                            .set_checksum_crc32_c(
                                p.crc32c.filter(|_| full_object).map(crc32c_value),
                            )
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.retry
            .run(|| async {
                self.client()
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&upload.key)
                    .upload_id(&upload.upload_id)
                    .multipart_upload(completed.clone())
                    .set_checksum_crc32_c(upload.crc32c.filter(|_| full_object).map(crc32c_value))
                    .set_checksum_type(
                        upload
                            .crc32c
                            .filter(|_| full_object)
                            .map(|_| aws_sdk_s3::types::ChecksumType::FullObject),
                    )
                    .send()
                    .await
                    .map_err(|e| self.fail("complete_multipart", &upload.key, e))
                    .map(|_| ())
            })
            .await
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<()> {
        self.retry
            .run(|| async {
                match self
                    .client()
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&upload.key)
                    .upload_id(&upload.upload_id)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let err = self.fail("abort_multipart", &upload.key, e);
                        // Already gone is what we wanted.
                        if err.kind == ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(err)
                        }
                    }
                }
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.retry
            .run(|| async {
                self.client()
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.fail("delete", key, e))
                    .map(|_| ())
            })
            .await
    }

    async fn bucket_region(&self) -> Result<Option<String>> {
        if self.custom_endpoint {
            return Ok(None);
        }
        let out = self
            .retry
            .run(|| async {
                self.client()
                    .get_bucket_location()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| self.fail("get_bucket_location", "", e))
            })
            .await?;
        // No constraint means us-east-1; "EU" is the legacy name of eu-west-1.
        Ok(Some(
            match out.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1",
                Some("EU") => "eu-west-1",
                Some(r) => r,
            }
            .to_string(),
        ))
    }

    async fn create_bucket(&self) -> Result<()> {
        self.retry
            .run(|| async {
                match self
                    .client()
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let code = e.as_service_error().and_then(|s| s.meta().code());
                        if matches!(
                            code,
                            Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                        ) {
                            Ok(())
                        } else {
                            Err(self.fail("create_bucket", "", e))
                        }
                    }
                }
            })
            .await
    }

    async fn copy_from(
        &self,
        source: &CopySource,
        key: &str,
        properties: &Properties,
    ) -> Result<Copied> {
        self.copy_in(source, key, Some(properties)).await
    }

    fn copies_keeping_properties(&self) -> bool {
        true
    }

    async fn copy_keeping(&self, source: &CopySource, key: &str) -> Result<Option<Copied>> {
        // In parts, the properties go with CreateMultipartUpload: the caller reads them
        // through the source's own store (another bucket may be in another region).
        if source.size > self.copy_limits.0 {
            return Ok(None);
        }
        self.copy_in(source, key, None).await.map(Some)
    }

    /// As many as s5cmd's workers: a small object's copy is one request, so the rate over a
    /// path of RTT `t` is this many over `t` (S3 takes 3,500 copies a second per prefix, and
    /// retries what it slows down).
    fn copies_at_once(&self) -> usize {
        256
    }
}
