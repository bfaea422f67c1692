//! One object-store trait, one module per backend.
//!
//! [`ObjectStore`] is the small required surface every backend implements (list, head, ranged
//! streaming read, put, multipart create/part/complete/abort, delete, copy).
//! [`ObjectStoreExt`] adds conveniences built only on that surface, notably [`ObjectStoreExt::upload`],
//! which streams any size through multipart with memory bounded by part size × concurrency and
//! aborts the upload on every failure path so no orphaned parts cost money.
//!
//! Backends: [`local`] (files, atomic via an unnamed file linked into place), [`s3`] (aws-sdk-s3),
//! [`azure`] (the official azure_storage_blob), [`gcs`] (gcloud-storage, JSON API).
//! [`open`] builds the right one for an [`ObjectUrl`] from a [`StoreConfig`].

pub mod azure;
pub mod error;
pub mod gcs;
pub mod local;
pub mod pace;
pub mod prefix;
pub mod properties;
pub mod retry;
pub mod s3;
pub mod server_side;
pub mod synthetic;
pub mod throttle;
pub mod url;
pub mod write;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{Stream, StreamExt, TryStreamExt};

pub use error::{ErrorKind, Result, StoreError};
pub use properties::Properties;
pub use retry::RetryPolicy;
pub use server_side::CopySource;
pub use url::{ObjectUrl, StoreLocation, UrlError};
pub use write::{Encryption, WriteOptions, WriteOptionsError};

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// The store's entity tag, quotes removed; for GCS, the object's generation. Either names
    /// one version of the object.
    pub etag: Option<String>,
    /// MD5 of the content, where the store keeps it (S3 single-part ETag, Azure Content-MD5,
    /// GCS md5Hash).
    pub md5: Option<[u8; 16]>,
    /// CRC32C of the content, where the store keeps it (GCS).
    pub crc32c: Option<u32>,
}

/// What a store says it holds right after a put: the size, and the content checksums its
/// answer carries (S3: the CRC32C it checked the bytes against, and an ETag that is the MD5
/// where S3 guarantees that; GCS: the object's CRC32C and MD5; Azure: the MD5 it computed;
/// the synthetic device: the CRC32C of bytes it checked). A writer compares them with what it
/// sent: verification where the bytes are, with no request of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub crc32c: Option<u32>,
    pub md5: Option<[u8; 16]>,
}

/// What a store's service said about a server-side copy it made: the copy's content checksums
/// where its answer states them (S3: the CRC32C it computed over the bytes it copied, and an
/// ETag that is the copy's MD5 where S3 guarantees that; GCS: the new object's MD5 and
/// CRC32C). The gateway verifies a copy with them and no request of its own when they prove
/// it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub crc32c: Option<u32>,
    pub md5: Option<[u8; 16]>,
    /// How the answer proves the copy holds the bytes of the version copied, if it does.
    pub same_as_source: Option<CopyProof>,
}

/// How a store proves a server-side copy holds the source version's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyProof {
    /// S3: the copy's ETag is its MD5 and equals the ETag of the version copied (pinned by
    /// `if-match`), which so is that version's MD5 as well.
    Md5,
    /// The local filesystem: the copy, read back, has the CRC32C of the source as read.
    ReadBack,
}

/// One level of a listing: objects directly under the prefix and the "directories" below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListResult {
    pub objects: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
}

/// An open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    /// What the finished object carries. Stores that set properties when an upload completes
    /// (Azure's block list, GCS's compose, a local file's mtime) read them here; putting parts
    /// never needs them.
    pub properties: Properties,
    /// The CRC32C of the whole object, when the completer knows it (from the bytes the source
    /// read): S3 checks the assembled object against it and keeps it.
    pub crc32c: Option<u32>,
}

impl MultipartUpload {
    /// An open upload, as the one who opened it knows it.
    pub fn new(key: &str, upload_id: &str, properties: Properties) -> Self {
        MultipartUpload {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            properties,
            crc32c: None,
        }
    }

    /// The same upload, completed with the whole object's CRC32C.
    pub fn with_crc32c(mut self, crc32c: Option<u32>) -> Self {
        self.crc32c = crc32c;
        self
    }

    /// An upload whose id the client mints itself, for stores without a server-side upload
    /// (Azure blocks, GCS composed parts): random, so concurrent uploads never share parts.
    pub fn client_side(key: &str, properties: &Properties) -> Self {
        use rand::Rng;
        Self::new(
            key,
            &format!("{:016x}", rand::rng().random::<u64>()),
            properties.clone(),
        )
    }
}

/// Proof that a part landed; `complete_multipart` needs one per part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    /// 1-based, as in S3.
    pub part_number: u32,
    pub etag: String,
    /// The CRC32C of the part's bytes, when known (S3 takes them back at completion).
    pub crc32c: Option<u32>,
}

/// The operations every backend provides. Keys are relative to the store's bucket/container;
/// for the local filesystem they are absolute paths without the leading `/`.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Which store this is, for messages.
    fn location(&self) -> &StoreLocation;

    /// Every object whose key starts with `prefix`, recursively, page after page.
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>>;

    /// Objects directly under `prefix` and the common prefixes (delimiter `/`) below it.
    async fn list_with_delimiter(&self, prefix: &str) -> Result<ListResult>;

    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// The object's system properties, user metadata and modification time (one HEAD; a
    /// local file's Content-Type is guessed from its name).
    async fn properties(&self, key: &str) -> Result<Properties>;

    /// The bytes in `range` (end exclusive), streamed. With `version` (an [`ObjectMeta::etag`]
    /// from a listing or head), only of that version: the store checks it (a conditional read:
    /// `If-Match`, a GCS generation, a local file's identity before and after reading) and an
    /// object that is no longer that version is an [`ErrorKind::Changed`] error.
    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<ByteStream>;

    /// Writes a whole object in one request, with `properties`. Readers never see a partial
    /// object. Answers what the store said it holds.
    async fn put_with(&self, key: &str, data: Bytes, properties: &Properties) -> Result<Written>;

    /// Writes a whole object with no properties of its own.
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_with(key, data, &Properties::default())
            .await
            .map(drop)
    }

    /// Opens an upload whose object will carry `properties`.
    async fn create_multipart_with(
        &self,
        key: &str,
        properties: &Properties,
    ) -> Result<MultipartUpload>;

    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload> {
        self.create_multipart_with(key, &Properties::default())
            .await
    }

    /// Uploads part `part_number` (1-based). Parts may arrive in any order and concurrently;
    /// every part but the last must be at least [`ObjectStore::min_part_size`].
    async fn put_part(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt>;

    /// Assembles the parts in part-number order into the object, atomically.
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: Vec<PartReceipt>,
    ) -> Result<()>;

    /// Discards the upload and its parts.
    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<()>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// How another store of this kind finds `meta`'s object for a server-side copy.
    fn copy_source(&self, meta: &ObjectMeta) -> CopySource {
        CopySource::by_name(self.location(), meta)
    }

    /// Writes `key` from `source` (an object of this store or of another of its kind) without
    /// its bytes passing through us, carrying `properties`; answers what the service said it
    /// wrote. Stores that cannot refuse.
    async fn copy_from(
        &self,
        source: &CopySource,
        key: &str,
        properties: &Properties,
    ) -> Result<Copied> {
        let _ = properties;
        Err(self.error(
            ErrorKind::InvalidInput,
            "copy",
            key,
            format!("cannot copy server-side from {}", source.location),
        ))
    }

    /// Whether [`ObjectStore::copy_keeping`] can copy here: the service carries the source's
    /// own properties and metadata itself, so they need not be read first.
    fn copies_keeping_properties(&self) -> bool {
        false
    }

    /// As [`ObjectStore::copy_from`], carrying the source's own properties and metadata as
    /// the service copies them (S3 `MetadataDirective: COPY`; a local file's modification
    /// time), with no read of them first. `None`: this copy cannot carry them (an S3 copy in
    /// parts), nothing was written: read them from the source and use `copy_from`. Stores
    /// that cannot copy keeping properties refuse.
    async fn copy_keeping(&self, source: &CopySource, key: &str) -> Result<Option<Copied>> {
        Err(self.error(
            ErrorKind::InvalidInput,
            "copy",
            key,
            format!(
                "cannot copy from {} keeping its own properties",
                source.location
            ),
        ))
    }

    /// Makes durable what this store's copies left to a cache (server-side copies between
    /// local paths: one sync per filesystem written); other stores' writes are durable when
    /// answered.
    async fn sync_written(&self) -> Result<()> {
        Ok(())
    }

    /// Server-side copies worth running at once against this store.
    fn copies_at_once(&self) -> usize {
        32
    }

    /// Copies within this store, server-side, with the object's properties.
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let meta = self.head(from).await?;
        let properties = self.properties(from).await?;
        self.copy_from(&self.copy_source(&meta), to, &properties)
            .await
            .map(drop)
    }

    /// Removes the hidden temp files beside `keys` whose writer died (a put or part that will
    /// never be renamed into place); returns how many went. Only stores that stage beside the
    /// destination have any (the local filesystem); unfinished uploads, on any store, are
    /// aborted by id from the gateway's journal instead.
    async fn remove_abandoned_staging(&self, keys: &[String]) -> Result<usize> {
        let _ = keys;
        Ok(0)
    }

    /// Creates the bucket (container) this store names; an existing one is not an error.
    async fn create_bucket(&self) -> Result<()>;

    /// The cloud region the bucket lives in (`us-east-1`, `europe-west4`), where the store can
    /// tell: real S3 and GCS buckets. `None` for local paths, stores behind a custom endpoint
    /// (a local server's answer means nothing) and multi-region buckets.
    async fn bucket_region(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The smallest non-final part the store accepts.
    fn min_part_size(&self) -> u64 {
        5 * 1024 * 1024
    }

    /// The most parts one upload may have.
    fn max_parts(&self) -> u32 {
        10_000
    }

    /// An error of this store, for backends and callers.
    fn error(&self, kind: ErrorKind, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::new(kind, self.location().to_string(), op, key, message)
    }
}

/// How [`ObjectStoreExt::upload`] splits and parallelises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Bytes per part (raised to the store's minimum).
    pub part_size: u64,
    /// Parts in flight at once. Memory is about `part_size × (concurrency + 1)`.
    pub concurrency: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            part_size: 16 * 1024 * 1024,
            concurrency: 4,
        }
    }
}

/// Conveniences built only on [`ObjectStore`].
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// The whole object in memory (small objects only).
    async fn get(&self, key: &str) -> Result<Bytes> {
        let meta = self.head(key).await?;
        self.get_range_bytes(key, 0..meta.size, meta.etag.as_deref())
            .await
    }

    /// A range in memory (of `version` only, as [`ObjectStore::get_range`]).
    async fn get_range_bytes(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<Bytes> {
        let want = range.end.saturating_sub(range.start);
        let mut buf = BytesMut::with_capacity(want as usize);
        let mut stream = self.get_range(key, range, version).await?;
        while let Some(chunk) = stream.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != want {
            return Err(self.error(
                ErrorKind::Transient,
                "get",
                key,
                format!("expected {want} bytes, the store sent {}", buf.len()),
            ));
        }
        Ok(buf.freeze())
    }

    /// Streams `data` into `key`: one put when it fits in one part, else a multipart upload with
    /// at most `concurrency` parts in flight. Any failure aborts the upload, so no parts are left
    /// behind, and the error is returned. Returns the bytes written.
    async fn upload<S>(&self, key: &str, data: S, options: UploadOptions) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin,
    {
        let part_size = options.part_size.max(self.min_part_size()) as usize;
        let mut data = data;
        let mut buf = BytesMut::with_capacity(part_size);
        // Fill the first part; if the stream ends first, a single put does it.
        while buf.len() < part_size {
            match data.try_next().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => {
                    let len = buf.len() as u64;
                    self.put(key, buf.freeze()).await?;
                    return Ok(len);
                }
            }
        }
        let upload = self.create_multipart(key).await?;
        match upload_parts(
            self,
            &upload,
            data,
            buf,
            part_size,
            options.concurrency.max(1),
        )
        .await
        {
            Ok((parts, total)) => match self.complete_multipart(&upload, parts).await {
                Ok(()) => Ok(total),
                Err(e) => Err(abort_after(self, &upload, e).await),
            },
            Err(e) => Err(abort_after(self, &upload, e).await),
        }
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

async fn abort_after<S: ObjectStore + ?Sized>(
    store: &S,
    upload: &MultipartUpload,
    cause: StoreError,
) -> StoreError {
    if let Err(abort) = store.abort_multipart(upload).await {
        tracing::warn!(key = %upload.key, error = %abort, "aborting a failed multipart upload failed");
    }
    cause
}

async fn upload_parts<S, D>(
    store: &S,
    upload: &MultipartUpload,
    data: D,
    first: BytesMut,
    part_size: usize,
    concurrency: usize,
) -> Result<(Vec<PartReceipt>, u64)>
where
    S: ObjectStore + ?Sized,
    D: Stream<Item = Result<Bytes>> + Send + Unpin,
{
    let mut in_flight = FuturesUnordered::new();
    let result = feed_parts(
        store,
        upload,
        data,
        first,
        part_size,
        concurrency,
        &mut in_flight,
    )
    .await;
    if result.is_err() {
        // Let every part already sent finish before the caller aborts: a part that lands after
        // the abort would be orphaned (and billed), and dropping its future does not recall it.
        while in_flight.next().await.is_some() {}
    }
    result
}

async fn feed_parts<'a, S, D>(
    store: &'a S,
    upload: &'a MultipartUpload,
    mut data: D,
    first: BytesMut,
    part_size: usize,
    concurrency: usize,
    in_flight: &mut FuturesUnordered<futures::future::BoxFuture<'a, Result<PartReceipt>>>,
) -> Result<(Vec<PartReceipt>, u64)>
where
    S: ObjectStore + ?Sized,
    D: Stream<Item = Result<Bytes>> + Send + Unpin,
{
    let mut receipts = Vec::new();
    let mut total = 0u64;
    let mut part_number = 0u32;
    let mut buf = first;
    let mut done = false;
    loop {
        // Cut every full part out of the buffer.
        while buf.len() >= part_size || (done && !buf.is_empty()) {
            let take = buf.len().min(part_size);
            let part = buf.split_to(take).freeze();
            part_number += 1;
            if part_number > store.max_parts() {
                return Err(store.error(
                    ErrorKind::InvalidInput,
                    "put_part",
                    &upload.key,
                    format!(
                        "object needs more than {} parts of {part_size} bytes; raise the part size",
                        store.max_parts()
                    ),
                ));
            }
            total += part.len() as u64;
            // Backpressure: wait for a slot before reading more.
            while in_flight.len() >= concurrency {
                let receipt: PartReceipt = in_flight.next().await.expect("non-empty")?;
                receipts.push(receipt);
            }
            in_flight.push(store.put_part(upload, part_number, part));
        }
        if done {
            break;
        }
        match data.try_next().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => done = true,
        }
    }
    while let Some(receipt) = in_flight.next().await {
        receipts.push(receipt?);
    }
    receipts.sort_by_key(|r| r.part_number);
    Ok((receipts, total))
}

/// How to reach each kind of store. `from_env` reads the variables the clouds' own tools read.
/// Serializable: the gateway hands each end's settings to the agents that use that end.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    pub s3: s3::S3Config,
    pub azure: azure::AzureConfig,
    pub gcs: gcs::GcsConfig,
    pub local: local::LocalConfig,
    /// How objects are written into this store (a destination's storage class, encryption).
    pub write: WriteOptions,
    /// Each process keeps its own retry policy.
    #[serde(skip)]
    pub retry: RetryPolicy,
}

impl StoreConfig {
    pub fn from_env() -> Self {
        Self::from_lookup(&env_var)
    }

    /// Where each store is and how it is used, without how to authenticate to it (keys, a
    /// profile, a connection string, a SAS): what another machine is told when the
    /// credentials are this one's own. It then authenticates as itself: S3's credential chain,
    /// Azure's `or_credentials_of` its own settings. Anonymous access is kept: it is how the
    /// store is used, not a secret.
    pub fn without_credentials(mut self) -> StoreConfig {
        self.s3.static_credentials = None;
        self.s3.profile = None;
        self.azure = self.azure.without_credentials();
        self.gcs.credentials_file = None;
        self
    }

    /// Every store's settings from variables looked up through `var` instead of the process
    /// environment (e.g. one region of an emulated sky, whose stores differ per region).
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Self {
        StoreConfig {
            s3: s3::S3Config::from_lookup(var),
            azure: azure::AzureConfig::from_lookup(var),
            gcs: gcs::GcsConfig::from_lookup(var),
            local: local::LocalConfig::default(),
            write: WriteOptions::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// A variable of the process environment; empty counts as unset.
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Opens the store that holds `url`.
pub async fn open(url: &ObjectUrl, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>> {
    // Each store throttles on its own: its own adaptive concurrency.
    let config = &StoreConfig {
        retry: config.retry.clone().with_own_limit(),
        ..config.clone()
    };
    Ok(match &url.location {
        StoreLocation::Local => Arc::new(local::LocalStore::with_config(
            &config.local,
            config.retry.clone(),
        )),
        StoreLocation::S3 { bucket } => Arc::new(
            s3::S3Store::new(bucket, &config.s3, config.retry.clone())
                .await?
                .with_write_options(write_options(url, config)?),
        ),
        StoreLocation::Azure { account, container } => Arc::new(
            azure::AzureStore::new(account, container, &config.azure, config.retry.clone())?
                .with_write_options(write_options(url, config)?),
        ),
        StoreLocation::Gcs { bucket } => Arc::new(
            gcs::GcsStore::new(bucket, &config.gcs, config.retry.clone())
                .await?
                .with_write_options(write_options(url, config)?),
        ),
        StoreLocation::Synthetic { objects, size } => {
            Arc::new(synthetic::SyntheticStore::new(*objects, *size))
        }
    })
}

/// `config`'s write options as the store of `url` takes them.
fn write_options(url: &ObjectUrl, config: &StoreConfig) -> Result<WriteOptions> {
    config.write.for_store(&url.location).map_err(|e| {
        StoreError::new(
            ErrorKind::InvalidInput,
            url.location.to_string(),
            "open",
            "",
            e.to_string(),
        )
    })
}

/// Checks a requested range against the object's size: every backend returns exactly the
/// range or fails, even where the store itself would clamp it.
pub(crate) fn check_range<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
    range: &Range<u64>,
    size: u64,
) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(store.error(
            ErrorKind::InvalidInput,
            "get",
            key,
            format!(
                "range {}..{} outside the object's {size} bytes",
                range.start, range.end
            ),
        ));
    }
    Ok(())
}

/// The object's head, if it is still `version` (when one is asked for): stores whose ranged
/// reads need a head first (for the size) check the pin on it too.
pub(crate) async fn head_of_version<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
    version: Option<&str>,
) -> Result<ObjectMeta> {
    let meta = store.head(key).await?;
    if let (Some(want), Some(now)) = (version, meta.etag.as_deref())
        && want != now
    {
        return Err(changed(store, key, want, now));
    }
    Ok(meta)
}

/// The error of a read pinned to version `want` of an object that is now `now`.
pub(crate) fn changed<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
    want: &str,
    now: &str,
) -> StoreError {
    store.error(
        ErrorKind::Changed,
        "get",
        key,
        format!("the copy listed version {want}, the store now has {now}"),
    )
}

/// Lists `prefix` into a vector (tests and small listings).
pub async fn list_all(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<ObjectMeta>> {
    store.list(prefix).try_collect().await
}
