//! Google Cloud Storage on `gcloud-storage` (JSON API).
//!
//! Why this crate and not the official `google-cloud-storage` 1.x: the official crate's data
//! plane is HTTP/JSON, but listing, deleting and composing go through its gRPC-only control
//! client, which the local emulator (and any JSON-only proxy) cannot serve, so half of the trait
//! could never be tested here. `gcloud-storage` speaks the JSON API for every operation and works
//! against both real GCS and the emulator.
//!
//! `STORAGE_EMULATOR_HOST` is honoured as Google's own tools honour it (anonymous credentials,
//! that endpoint). Otherwise credentials come from a key file or Application Default
//! Credentials (on a GCE VM: its service account, from the metadata server), also for an
//! endpoint given otherwise (a Private Service Connect endpoint takes credentials as GCS does).
//!
//! Multipart maps to GCS's parallel composite upload: each part is a temporary object under
//! `.skyx-uploads/<upload id>/`, completion composes them (32 per call, in levels) into the
//! destination and deletes them, abort deletes them. Listings never show `.skyx-uploads/`.

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::objects::compose::{ComposeObjectRequest, ComposingTargets};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range as GcsRange;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::rewrite::RewriteObjectRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::{Object, SourceObjects};

use crate::Written;
use crate::error::{ErrorKind, Result, StoreError, kind_from_http_status};
use crate::retry::RetryPolicy;
use crate::{
    ByteStream, CopySource, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PartReceipt,
    Properties, StoreLocation,
};

/// Where temporary part objects live; never listed.
const UPLOADS: &str = ".skyx-uploads/";
/// GCS composes at most this many sources per request.
const COMPOSE_FAN_IN: usize = 32;

/// How to reach GCS.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsConfig {
    /// A GCS-compatible endpoint (a Private Service Connect endpoint, a proxy, an emulator);
    /// requests still carry credentials unless `anonymous`.
    pub endpoint: Option<String>,
    /// The project new buckets belong to (`GOOGLE_CLOUD_PROJECT`).
    pub project: Option<String>,
    /// No credentials: buckets readable by anyone.
    pub anonymous: bool,
    /// A service account key file (else Application Default Credentials).
    pub credentials_file: Option<std::path::PathBuf>,
}

impl GcsConfig {
    /// Reads `STORAGE_EMULATOR_HOST` (`host:port` or a URL: that endpoint, anonymously), as
    /// Google's tools do.
    pub fn from_env() -> Self {
        Self::from_lookup(&crate::env_var)
    }

    /// As `from_env`, reading variables through `var`.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Self {
        let endpoint = var("STORAGE_EMULATOR_HOST").map(|v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                v
            } else {
                format!("http://{v}")
            }
        });
        let project = ["GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"]
            .iter()
            .find_map(|v| var(v));
        GcsConfig {
            anonymous: endpoint.is_some(),
            endpoint,
            project,
            ..GcsConfig::default()
        }
    }
}

pub struct GcsStore {
    client: Client,
    project: Option<String>,
    /// Behind an anonymous endpoint of its own (an emulator), not Google: no bucket locations.
    emulator: bool,
    bucket: String,
    location: StoreLocation,
    retry: RetryPolicy,
    /// Storage class and KMS key of every object written.
    write: crate::WriteOptions,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl GcsStore {
    pub async fn new(bucket: &str, config: &GcsConfig, retry: RetryPolicy) -> Result<Self> {
        let location = StoreLocation::Gcs {
            bucket: bucket.into(),
        };
        let no_credentials = |e: String| {
            StoreError::new(
                ErrorKind::PermissionDenied,
                location.to_string(),
                "open",
                "",
                e,
            )
        };
        let mut base = ClientConfig::default();
        if let Some(endpoint) = &config.endpoint {
            base.storage_endpoint = endpoint.trim_end_matches('/').to_string();
            if !config.anonymous && endpoint.starts_with("http://") {
                // Allowed (a proxy inside one trust domain), but whoever is on the path reads
                // the token.
                tracing::warn!(
                    endpoint,
                    "GCS credentials go to a plain-HTTP endpoint: anyone on the path can read them"
                );
            }
        }
        let client_config = match &config.credentials_file {
            _ if config.anonymous => base.anonymous(),
            Some(path) => {
                let file = gcloud_storage::client::google_cloud_auth::credentials::CredentialsFile::new_from_file(
                    path.display().to_string(),
                )
                .await
                .map_err(|e| no_credentials(format!("credentials file {}: {e}", path.display())))?;
                base.with_credentials(file).await.map_err(|e| {
                    no_credentials(format!("credentials file {}: {e}", path.display()))
                })?
            }
            None => base.with_auth().await.map_err(|e| {
                let emulator = if config.endpoint.is_some() {
                    " (an emulator at that endpoint takes no credentials: say so with \
                     STORAGE_EMULATOR_HOST, --src/--dst-no-sign-request or a remote's \
                     anonymous = true)"
                } else {
                    ""
                };
                no_credentials(format!(
                    "no Google credentials (Application Default Credentials): {e}{emulator}"
                ))
            })?,
        };
        Ok(GcsStore {
            write: crate::WriteOptions::default(),
            client: Client::new(client_config),
            project: config.project.clone(),
            emulator: config.endpoint.is_some() && config.anonymous,
            bucket: bucket.into(),
            location,
            retry,
        })
    }

    fn fail(&self, op: &'static str, key: &str, e: GcsError) -> StoreError {
        let (kind, message) = match &e {
            GcsError::Response(r) => {
                let reason = r.errors.first().map(|i| i.reason.as_str()).unwrap_or("");
                let lower = r.message.to_ascii_lowercase();
                let kind = match (r.code, reason) {
                    (404, _) if lower.contains("bucket") && !lower.contains("object") => {
                        ErrorKind::BucketNotFound
                    }
                    (404, _) => ErrorKind::NotFound,
                    (_, "rateLimitExceeded" | "userRateLimitExceeded") => ErrorKind::Throttled,
                    (416, _) => ErrorKind::InvalidInput,
                    (code, _) => kind_from_http_status(code),
                };
                (kind, format!("HTTP {}: {}", r.code, r.message))
            }
            GcsError::HttpClient(h) => {
                let kind = match h.status() {
                    Some(s) => kind_from_http_status(s.as_u16()),
                    None => ErrorKind::Transient,
                };
                (kind, format!("HTTP client: {h}"))
            }
            GcsError::TokenSource(t) => (ErrorKind::PermissionDenied, format!("credentials: {t}")),
            other => (ErrorKind::Other, other.to_string()),
        };
        StoreError::new(kind, self.location.to_string(), op, key, message).with_source(e)
    }

    fn meta(object: Object) -> ObjectMeta {
        let b64 = |s: &Option<String>| {
            s.as_deref()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        };
        ObjectMeta {
            md5: b64(&object.md5_hash).and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()),
            crc32c: b64(&object.crc32c)
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map(u32::from_be_bytes),
            last_modified: object.updated.map(SystemTime::from),
            // The generation is what GCS versions an object by (and what a rewrite can pin).
            etag: Some(object.generation.to_string()).filter(|_| object.generation > 0),
            size: object.size.max(0) as u64,
            key: object.name,
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<String>,
    ) -> Result<gcloud_storage::http::objects::list::ListObjectsResponse> {
        self.retry
            .run(|| async {
                let req = ListObjectsRequest {
                    bucket: self.bucket.clone(),
                    prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                    delimiter: delimiter.then(|| "/".to_string()),
                    page_token: token.clone(),
                    ..Default::default()
                };
                self.client
                    .list_objects(&req)
                    .await
                    .map_err(|e| self.fail("list", prefix, e))
            })
            .await
    }

    async fn delete_quietly(&self, names: Vec<String>) -> Result<()> {
        stream::iter(names)
            .map(|name| async move { self.delete(&name).await })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
    }

    async fn compose(
        &self,
        sources: &[String],
        destination: &str,
        properties: &Properties,
    ) -> Result<()> {
        self.retry
            .run(|| async {
                let req = ComposeObjectRequest {
                    bucket: self.bucket.clone(),
                    destination_object: destination.to_string(),
                    composing_targets: ComposingTargets {
                        // GCS clients always describe the result; some servers require it.
                        destination: Some(self.described(destination, properties)),
                        source_objects: sources
                            .iter()
                            .map(|s| SourceObjects {
                                name: s.clone(),
                                ..Default::default()
                            })
                            .collect(),
                    },
                    ..Default::default()
                };
                self.client
                    .compose_object(&req)
                    .await
                    .map_err(|e| self.fail("complete_multipart", destination, e))
                    .map(|_| ())
            })
            .await
    }

    /// Writes every object with `write`'s storage class and KMS key (checked for GCS by
    /// [`crate::WriteOptions::for_store`]).
    pub fn with_write_options(mut self, write: crate::WriteOptions) -> Self {
        self.write = write;
        self
    }

    /// The object `name` as an upload, a compose or a rewrite describes it: [`described`],
    /// and for objects the user sees (not parts, not intermediate composes) the store's
    /// storage class and KMS key.
    fn described(&self, name: &str, p: &Properties) -> Object {
        let mut object = described(name, p);
        if !name.starts_with(UPLOADS) {
            object.storage_class = self.write.storage_class.clone();
            object.kms_key_name = self.write.kms_key().map(str::to_string);
        }
        object
    }

    fn part_name(upload: &MultipartUpload, part_number: u32) -> String {
        format!("{UPLOADS}{}/{part_number:06}", upload.upload_id)
    }
}

/// The object `name` as an upload or a compose describes it: its properties and user
/// metadata (GCS takes UTF-8 values). Without a Content-Type, `application/octet-stream`, as
/// GCS itself would assume.
fn described(name: &str, p: &Properties) -> Object {
    let metadata = p.utf8_metadata();
    Object {
        name: name.to_string(),
        content_type: Some(
            p.content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
        ),
        content_encoding: p.content_encoding.clone(),
        content_language: p.content_language.clone(),
        content_disposition: p.content_disposition.clone(),
        cache_control: p.cache_control.clone(),
        metadata: (!metadata.is_empty()).then(|| metadata.into_iter().collect()),
        ..Default::default()
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    fn location(&self) -> &StoreLocation {
        &self.location
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let prefix = prefix.to_string();
        stream::try_unfold((None::<String>, false), move |(token, finished)| {
            let prefix = prefix.clone();
            async move {
                if finished {
                    return Ok(None);
                }
                let page = self.list_page(&prefix, false, token).await?;
                let next = page.next_page_token.clone().filter(|t| !t.is_empty());
                let done = next.is_none();
                let items: Vec<Result<ObjectMeta>> = page
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| !o.name.starts_with(UPLOADS))
                    .map(|o| Ok(Self::meta(o)))
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
            out.objects.extend(
                page.items
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| !o.name.starts_with(UPLOADS))
                    .map(Self::meta),
            );
            out.common_prefixes.extend(
                page.prefixes
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| p != UPLOADS),
            );
            token = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.retry
            .run(|| async {
                let req = GetObjectRequest {
                    bucket: self.bucket.clone(),
                    object: key.to_string(),
                    ..Default::default()
                };
                self.client
                    .get_object(&req)
                    .await
                    .map(Self::meta)
                    .map_err(|e| self.fail("head", key, e))
            })
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<ByteStream> {
        // GCS clamps a range past the end; the trait promises exactly the range.
        let meta = crate::head_of_version(self, key, version).await?;
        let generation = match version {
            Some(v) => Some(v.parse::<i64>().map_err(|_| {
                self.error(
                    ErrorKind::InvalidInput,
                    "get",
                    key,
                    format!("version {v:?} is not a GCS generation"),
                )
            })?),
            None => None,
        };
        crate::check_range(self, key, &range, meta.size)?;
        if range.start == range.end {
            return Ok(stream::empty().boxed());
        }
        let body = self
            .retry
            .run(|| async {
                // Pinned in the request too: a newer generation written after the head is a
                // 412, never its bytes.
                let req = GetObjectRequest {
                    bucket: self.bucket.clone(),
                    object: key.to_string(),
                    if_generation_match: generation,
                    ..Default::default()
                };
                self.client
                    .download_streamed_object(
                        &req,
                        &GcsRange(Some(range.start), Some(range.end - 1)),
                    )
                    .await
                    .map_err(|e| self.fail("get", key, e))
            })
            .await?;
        let (store, key) = (self.location.to_string(), key.to_string());
        Ok(body
            .map_err(move |e| {
                StoreError::new(
                    ErrorKind::Transient,
                    store.clone(),
                    "get",
                    key.clone(),
                    format!("reading the body: {e}"),
                )
            })
            .boxed())
    }

    async fn properties(&self, key: &str) -> Result<Properties> {
        self.retry
            .run(|| async {
                let req = GetObjectRequest {
                    bucket: self.bucket.clone(),
                    object: key.to_string(),
                    ..Default::default()
                };
                let o = self
                    .client
                    .get_object(&req)
                    .await
                    .map_err(|e| self.fail("head", key, e))?;
                let system = Properties {
                    content_type: o.content_type.clone(),
                    content_encoding: o.content_encoding.clone(),
                    content_language: o.content_language.clone(),
                    content_disposition: o.content_disposition.clone(),
                    cache_control: o.cache_control.clone(),
                    ..Properties::default()
                };
                Ok(match &o.metadata {
                    Some(user) => system.with_user_metadata(user),
                    None => system,
                })
            })
            .await
    }

    async fn put_with(&self, key: &str, data: Bytes, properties: &Properties) -> Result<Written> {
        self.retry
            .run(|| async {
                let req = UploadObjectRequest {
                    bucket: self.bucket.clone(),
                    ..Default::default()
                };
                // A simple upload cannot describe the object; a multipart one can.
                let bare =
                    properties.is_empty() && (self.write.is_empty() || key.starts_with(UPLOADS));
                let upload = if bare {
                    let mut media = Media::new(key.to_string());
                    media.content_length = Some(data.len() as u64);
                    UploadType::Simple(media)
                } else {
                    UploadType::Multipart(Box::new(self.described(key, properties)))
                };
                self.client
                    .upload_object(&req, data.clone(), &upload)
                    .await
                    .map_err(|e| self.fail("put", key, e))
                    .map(|object| {
                        let meta = Self::meta(object);
                        Written {
                            size: meta.size,
                            crc32c: meta.crc32c,
                            md5: meta.md5,
                        }
                    })
            })
            .await
    }

    async fn create_multipart_with(
        &self,
        key: &str,
        properties: &Properties,
    ) -> Result<MultipartUpload> {
        Ok(MultipartUpload::client_side(key, properties))
    }

    async fn put_part(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        let name = Self::part_name(upload, part_number);
        self.put(&name, data).await?;
        Ok(PartReceipt {
            part_number,
            etag: name,
            crc32c: None,
        })
    }

    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let mut parts = parts;
        parts.sort_by_key(|p| p.part_number);
        let mut level: Vec<String> = parts
            .iter()
            .map(|p| Self::part_name(upload, p.part_number))
            .collect();
        let mut temporaries = level.clone();
        let mut depth = 0;
        // Compose in levels of 32 until one compose can produce the destination.
        while level.len() > COMPOSE_FAN_IN {
            let mut next = Vec::new();
            for (i, group) in level.chunks(COMPOSE_FAN_IN).enumerate() {
                let name = format!("{UPLOADS}{}/compose-{depth}-{i:06}", upload.upload_id);
                self.compose(group, &name, &Properties::default()).await?;
                next.push(name.clone());
                temporaries.push(name);
            }
            level = next;
            depth += 1;
        }
        if level.is_empty() {
            self.put_with(&upload.key, Bytes::new(), &upload.properties)
                .await?;
        } else {
            self.compose(&level, &upload.key, &upload.properties)
                .await?;
        }
        self.delete_quietly(temporaries).await
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<()> {
        let prefix = format!("{UPLOADS}{}/", upload.upload_id);
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self.list_page(&prefix, false, token).await?;
            names.extend(page.items.unwrap_or_default().into_iter().map(|o| o.name));
            token = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        self.delete_quietly(names).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.retry
            .run(|| async {
                let req = DeleteObjectRequest {
                    bucket: self.bucket.clone(),
                    object: key.to_string(),
                    ..Default::default()
                };
                match self.client.delete_object(&req).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let err = self.fail("delete", key, e);
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

    async fn bucket_region(&self) -> Result<Option<String>> {
        if self.emulator {
            return Ok(None);
        }
        use gcloud_storage::http::buckets::get::GetBucketRequest;
        let bucket = self
            .retry
            .run(|| async {
                let req = GetBucketRequest {
                    bucket: self.bucket.clone(),
                    ..Default::default()
                };
                self.client
                    .get_bucket(&req)
                    .await
                    .map_err(|e| self.fail("get_bucket", "", e))
            })
            .await?;
        // Multi- and dual-region buckets ("US", "EUR4") are not one region.
        Ok((bucket.location_type.eq_ignore_ascii_case("region"))
            .then(|| bucket.location.to_ascii_lowercase()))
    }

    async fn create_bucket(&self) -> Result<()> {
        use gcloud_storage::http::buckets::insert::{InsertBucketParam, InsertBucketRequest};
        let Some(project) = self.project.clone() else {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "create_bucket",
                "",
                "creating a GCS bucket needs a project: set GOOGLE_CLOUD_PROJECT".into(),
            ));
        };
        self.retry
            .run(|| async {
                let req = InsertBucketRequest {
                    name: self.bucket.clone(),
                    param: InsertBucketParam {
                        project: project.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match self.client.insert_bucket(&req).await {
                    Ok(_) => Ok(()),
                    Err(GcsError::Response(r)) if r.code == 409 => Ok(()),
                    Err(e) => Err(self.fail("create_bucket", "", e)),
                }
            })
            .await
    }

    async fn copy_from(
        &self,
        source: &CopySource,
        key: &str,
        properties: &Properties,
    ) -> Result<crate::Copied> {
        let StoreLocation::Gcs { bucket } = &source.location else {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "copy",
                key,
                format!("cannot copy server-side from {}", source.location),
            ));
        };
        // Rewrite copies across buckets and locations, in as many calls as GCS needs for a
        // large object (each hands back a token to go on with); the request's object resource
        // is the copy's metadata.
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .retry
                .run(|| async {
                    let req = RewriteObjectRequest {
                        destination_bucket: self.bucket.clone(),
                        destination_object: key.to_string(),
                        source_bucket: bucket.clone(),
                        source_object: source.key.clone(),
                        rewrite_token: token.clone(),
                        // Exactly the generation listed: gone (overwritten) means not found.
                        source_generation: source.etag.as_deref().and_then(|g| g.parse().ok()),
                        destination_metadata: Some(self.described(key, properties)),
                        destination_kms_key_name: self.write.kms_key().map(str::to_string),
                        ..Default::default()
                    };
                    self.client
                        .rewrite_object(&req)
                        .await
                        .map_err(|e| self.fail("copy", key, e))
                })
                .await?;
            if resp.done {
                // The answer's resource is the new object, with the checksums GCS computed.
                let stated = resp.resource.map(Self::meta);
                return Ok(crate::Copied {
                    crc32c: stated.as_ref().and_then(|m| m.crc32c),
                    md5: stated.as_ref().and_then(|m| m.md5),
                    same_as_source: None,
                });
            }
            token = resp.rewrite_token;
            if token.is_none() {
                return Err(self.error(
                    ErrorKind::Other,
                    "copy",
                    key,
                    "rewrite not done and no token to continue".into(),
                ));
            }
        }
    }

    fn min_part_size(&self) -> u64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::GcsConfig;

    #[test]
    fn the_emulator_variable_means_anonymous_and_an_endpoint_alone_does_not() {
        let emulator = GcsConfig::from_lookup(&|v| {
            (v == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:9023".to_string())
        });
        assert_eq!(emulator.endpoint.as_deref(), Some("http://127.0.0.1:9023"));
        assert!(emulator.anonymous);
        let google = GcsConfig::from_lookup(&|_| None);
        assert_eq!((google.endpoint, google.anonymous), (None, false));
    }
}
