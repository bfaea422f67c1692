//! Azure Blob Storage on the official `azure_storage_blob` 1.x crate.
//!
//! The crate authenticates with Entra ID tokens or SAS URLs only. We support both, and also a
//! connection string or account key (what Azurite and storage-account users have) by signing an
//! account SAS from the key ourselves ([`account_sas`]). Where credentials come from, in order:
//! 1. `AZURE_STORAGE_CONNECTION_STRING` whose `AccountName` is the URL's account (its
//!    `BlobEndpoint`, and its `AccountKey` or `SharedAccessSignature`);
//! 2. `AZURE_STORAGE_SAS_TOKEN`;
//! 3. `AZURE_STORAGE_KEY` (with `AZURE_STORAGE_ACCOUNT` naming the account);
//! 4. Entra ID: a client secret from `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`,
//!    the VM's managed identity when `SKYX_AZURE_MANAGED_IDENTITY=1`, else developer tools
//!    (`az login`, `azd auth login`);
//! 5. none, when `anonymous` is set: a container with public read access.
//!
//! Each of these can also be given per end ([`AzureConfig`]), not only through the environment.
//!
//! Multipart maps to blocks: parts are staged blocks with fixed-length ids, completion commits
//! the block list. The crate's list API has no delimiter, so the delimiter form folds a flat
//! listing. The SDK's own retries are off; [`RetryPolicy`] is the policy in force.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, NoFormat, RequestContent, RetryOptions, StatusCode};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockOptions, BlockLookupList,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use url::Url;

use crate::Written;
use crate::error::{ErrorKind, Result, StoreError, kind_from_http_status};
use crate::retry::RetryPolicy;
use crate::{
    ByteStream, CopySource, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PartReceipt,
    Properties, StoreLocation,
};

mod config;
mod copy;
mod sas;

pub use config::AzureConfig;
pub(crate) use config::{blob_endpoint, url_readable_elsewhere};
use config::{connection_for, entra_credential};
pub use sas::account_sas;

/// How long a SAS signed from a key stays valid; transfers can run for days.
const SAS_LIFETIME: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

pub struct AzureStore {
    container: BlobContainerClient,
    /// The container URL with its SAS (if any), for copy sources.
    container_url: Url,
    location: StoreLocation,
    retry: RetryPolicy,
    /// Access tier and encryption scope of every blob written.
    write: crate::WriteOptions,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the container URL: it may carry a SAS.
        f.debug_struct("AzureStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl AzureStore {
    pub fn new(
        account: &str,
        container: &str,
        config: &AzureConfig,
        retry: RetryPolicy,
    ) -> Result<Self> {
        let location = StoreLocation::Azure {
            account: account.into(),
            container: container.into(),
        };
        let bad = |why: String| {
            StoreError::new(
                ErrorKind::InvalidInput,
                location.to_string(),
                "open",
                "",
                why,
            )
        };
        let conn = connection_for(config, account);
        let (endpoint, _) = blob_endpoint(config, account);
        let expiry = SystemTime::now() + SAS_LIFETIME;
        let sas = if let Some(c) = &conn {
            match (&c.sas, &c.key) {
                (Some(sas), _) => Some(sas.trim_start_matches('?').to_string()),
                (None, Some(key)) => Some(account_sas(account, key, expiry).map_err(bad)?),
                (None, None) => None,
            }
        } else if let Some(sas) = &config.sas_token {
            Some(sas.trim_start_matches('?').to_string())
        } else if let Some((acct, key)) = config.account_key.as_ref().filter(|(a, _)| a == account)
        {
            Some(account_sas(acct, key, expiry).map_err(bad)?)
        } else {
            None
        };
        let mut url = Url::parse(&format!("{}/{container}", endpoint.trim_end_matches('/')))
            .map_err(|e| bad(format!("bad blob endpoint '{endpoint}': {e}")))?;
        let credential: Option<Arc<dyn TokenCredential>> = match &sas {
            Some(sas) => {
                url.set_query(Some(sas));
                None
            }
            None if config.anonymous => None,
            None => Some(
                entra_credential(config).map_err(|e| bad(format!("no Azure credentials: {e}")))?,
            ),
        };
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                ..Default::default()
            },
            ..Default::default()
        };
        let client = BlobContainerClient::new(url.clone(), credential, Some(options))
            .map_err(|e| bad(format!("cannot create the container client: {e}")))?;
        Ok(AzureStore {
            container: client,
            container_url: url,
            location,
            retry,
            write: crate::WriteOptions::default(),
        })
    }

    /// Writes every blob with `write`'s access tier and encryption scope (checked for Azure
    /// by [`crate::WriteOptions::for_store`]).
    pub fn with_write_options(mut self, write: crate::WriteOptions) -> Self {
        self.write = write;
        self
    }

    /// The access tier blobs are written in, if one is set.
    fn tier(&self) -> Option<azure_storage_blob::models::AccessTier> {
        self.write
            .storage_class
            .as_deref()
            .and_then(|t| t.parse().ok())
    }

    /// What a block list commit (or a Put Blob) sets: the properties, the tier, the scope.
    fn commit_options(&self, p: &Properties) -> BlockBlobClientCommitBlockListOptions<'static> {
        BlockBlobClientCommitBlockListOptions {
            tier: self.tier(),
            encryption_scope: self.write.azure_scope().map(str::to_string),
            ..commit_options(p)
        }
    }

    fn blob(&self, key: &str) -> BlobClient {
        self.container.blob_client(key)
    }

    fn fail(&self, op: &'static str, key: &str, e: azure_core::Error) -> StoreError {
        use azure_core::error::ErrorKind as AzKind;
        let (kind, message) = match e.kind() {
            AzKind::HttpResponse {
                status, error_code, ..
            } => {
                let code = error_code.clone().unwrap_or_default();
                let kind = match code.as_str() {
                    "ContainerNotFound" => ErrorKind::BucketNotFound,
                    "BlobNotFound" => ErrorKind::NotFound,
                    "AuthenticationFailed"
                    | "AuthorizationFailure"
                    | "AuthorizationPermissionMismatch"
                    | "InsufficientAccountPermissions" => ErrorKind::PermissionDenied,
                    "ServerBusy" | "OperationTimedOut" => ErrorKind::Throttled,
                    "InvalidRange" => ErrorKind::InvalidInput,
                    _ => kind_from_http_status(u16::from(*status)),
                };
                (
                    kind,
                    if code.is_empty() {
                        format!("HTTP {}", u16::from(*status))
                    } else {
                        format!("{code} (HTTP {})", u16::from(*status))
                    },
                )
            }
            AzKind::Connection | AzKind::Io => (ErrorKind::Transient, format!("network: {e}")),
            AzKind::Credential => (ErrorKind::PermissionDenied, format!("credential: {e}")),
            _ => (ErrorKind::Other, e.to_string()),
        };
        StoreError::new(kind, self.location.to_string(), op, key, message).with_source(e)
    }

    fn blob_url_with_sas(&self, key: &str) -> String {
        let mut url = self.container_url.clone();
        url.path_segments_mut()
            .expect("container URL is a base")
            .extend(key.split('/'));
        url.to_string()
    }

    fn block_id(upload: &MultipartUpload, part_number: u32) -> Vec<u8> {
        // Every block id of a blob must have the same length.
        format!("{}-{part_number:06}", upload.upload_id).into_bytes()
    }
}

/// A block list committed with the object's properties (Azure sets them on commit).
fn commit_options(p: &Properties) -> BlockBlobClientCommitBlockListOptions<'static> {
    let metadata = p.azure_metadata();
    BlockBlobClientCommitBlockListOptions {
        blob_content_type: p.content_type.clone(),
        blob_content_encoding: p.content_encoding.clone(),
        blob_content_language: p.content_language.clone(),
        blob_content_disposition: p.content_disposition.clone(),
        blob_cache_control: p.cache_control.clone(),
        metadata: (!metadata.is_empty()).then(|| metadata.into_iter().collect()),
        ..Default::default()
    }
}

fn system_time(t: Option<time::OffsetDateTime>) -> Option<SystemTime> {
    t.map(SystemTime::from)
}

fn md5_array(v: Option<Vec<u8>>) -> Option<[u8; 16]> {
    v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
}

#[async_trait]
impl ObjectStore for AzureStore {
    fn location(&self) -> &StoreLocation {
        &self.location
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            ..Default::default()
        };
        let prefix = prefix.to_string();
        match self.container.list_blobs(Some(options)) {
            Ok(pager) => pager
                .map(move |item| match item {
                    Ok(blob) => {
                        let props = blob.properties.unwrap_or_default();
                        Ok(ObjectMeta {
                            key: blob.name.unwrap_or_default(),
                            size: props.content_length.unwrap_or(0),
                            last_modified: system_time(props.last_modified),
                            etag: props
                                .etag
                                .map(|e| e.to_string().trim_matches('"').to_string()),
                            md5: md5_array(props.content_md5),
                            crc32c: None,
                        })
                    }
                    Err(e) => Err(self.fail("list", &prefix, e)),
                })
                .boxed(),
            Err(e) => stream::once(async move { Err(self.fail("list", &prefix, e)) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: &str) -> Result<ListResult> {
        // No delimiter in the crate's API: fold the flat listing into one level.
        let mut out = ListResult::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut all = self.list(prefix);
        while let Some(meta) = all.try_next().await? {
            let rest = &meta.key[prefix.len()..];
            match rest.find('/') {
                Some(i) => {
                    let p = format!("{prefix}{}", &rest[..=i]);
                    if seen.insert(p.clone()) {
                        out.common_prefixes.push(p);
                    }
                }
                None => out.objects.push(meta),
            }
        }
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.retry
            .run(|| async {
                let props = self
                    .blob(key)
                    .get_properties(None)
                    .await
                    .map_err(|e| self.fail("head", key, e))?;
                Ok(ObjectMeta {
                    key: key.to_string(),
                    size: props.content_length().ok().flatten().unwrap_or(0),
                    last_modified: system_time(props.last_modified().ok().flatten()),
                    etag: props
                        .etag()
                        .ok()
                        .flatten()
                        .map(|e| e.to_string().trim_matches('"').to_string()),
                    md5: md5_array(props.content_md5().ok().flatten()),
                    crc32c: None,
                })
            })
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<ByteStream> {
        // Azure clamps ranges past the end (and refuses a start at or past it); the trait
        // promises exactly the range, so check the size first.
        let meta = crate::head_of_version(self, key, version).await?;
        crate::check_range(self, key, &range, meta.size)?;
        if range.start == range.end {
            return Ok(stream::empty().boxed());
        }
        let result = self
            .retry
            .run(|| async {
                let options = BlobClientDownloadOptions {
                    range: Some((range.start..range.end).into()),
                    // Pinned in the request too: a blob rewritten after the head is a 412.
                    if_match: version.map(|v| format!("\"{v}\"").into()),
                    // One request at a time: callers parallelise across ranges themselves, and
                    // memory stays at one partition.
                    parallel: std::num::NonZero::new(1),
                    ..Default::default()
                };
                self.blob(key)
                    .download(Some(options))
                    .await
                    .map_err(|e| self.fail("get", key, e))
            })
            .await?;
        let (store, key) = (self.location.to_string(), key.to_string());
        Ok(result
            .body
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
                let props = self
                    .blob(key)
                    .get_properties(None)
                    .await
                    .map_err(|e| self.fail("head", key, e))?;
                let system = Properties {
                    content_type: props.content_type().ok().flatten(),
                    content_encoding: props.content_encoding().ok().flatten(),
                    content_language: props.content_language().ok().flatten(),
                    content_disposition: props.content_disposition().ok().flatten(),
                    cache_control: props.cache_control().ok().flatten(),
                    ..Properties::default()
                };
                let user = props.metadata().unwrap_or_default();
                Ok(system.with_user_metadata(&user))
            })
            .await
    }

    async fn put_with(&self, key: &str, data: Bytes, properties: &Properties) -> Result<Written> {
        let size = data.len() as u64;
        self.retry
            .run(|| async {
                // Put Blob takes the same properties as a block list commit.
                let c = self.commit_options(properties);
                let options = BlobClientUploadOptions {
                    tier: c.tier,
                    encryption_scope: c.encryption_scope,
                    blob_content_type: c.blob_content_type,
                    blob_content_encoding: c.blob_content_encoding,
                    blob_content_language: c.blob_content_language,
                    blob_content_disposition: c.blob_content_disposition,
                    blob_cache_control: c.blob_cache_control,
                    metadata: c.metadata,
                    // One Put Blob whatever the size: past 4 MiB the SDK commits staged blocks,
                    // and the answer's MD5 is the block list's (the blob keeps none).
                    partition_size: std::num::NonZero::new(size.max(1)),
                    ..Default::default()
                };
                self.blob(key)
                    .upload(
                        <RequestContent<Bytes, NoFormat> as From<Bytes>>::from(data.clone()),
                        Some(options),
                    )
                    .await
                    .map_err(|e| self.fail("put", key, e))
                    .map(|out| Written {
                        size,
                        crc32c: None,
                        md5: md5_array(out.content_md5),
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
        let id = Self::block_id(upload, part_number);
        self.retry
            .run(|| async {
                self.blob(&upload.key)
                    .block_blob_client()
                    .stage_block(
                        &id,
                        data.len() as u64,
                        <RequestContent<Bytes, NoFormat> as From<Bytes>>::from(data.clone()),
                        Some(BlockBlobClientStageBlockOptions {
                            encryption_scope: self.write.azure_scope().map(str::to_string),
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(|e| self.fail("put_part", &upload.key, e))
            })
            .await?;
        Ok(PartReceipt {
            part_number,
            etag: String::from_utf8_lossy(&id).into_owned(),
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
        let list = BlockLookupList {
            latest: Some(
                parts
                    .iter()
                    .map(|p| Self::block_id(upload, p.part_number))
                    .collect(),
            ),
            ..Default::default()
        };
        self.retry
            .run(|| async {
                let content: RequestContent<BlockLookupList, _> = list
                    .clone()
                    .try_into()
                    .map_err(|e| self.fail("complete_multipart", &upload.key, e))?;
                self.blob(&upload.key)
                    .block_blob_client()
                    .commit_block_list(content, Some(self.commit_options(&upload.properties)))
                    .await
                    .map_err(|e| self.fail("complete_multipart", &upload.key, e))
                    .map(|_| ())
            })
            .await
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<()> {
        // Azure has no "discard uncommitted blocks" call; they expire after seven days. When
        // no blob of that name exists, committing an empty list and deleting the result discards
        // them now. An existing blob is left alone (its uncommitted blocks expire).
        match self.head(&upload.key).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                self.complete_multipart(upload, Vec::new()).await?;
                self.delete(&upload.key).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.retry
            .run(|| async {
                match self.blob(key).delete(None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                        let err = self.fail("delete", key, e);
                        // A missing blob is fine; a missing container is not.
                        if err.kind == ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(err)
                        }
                    }
                    Err(e) => Err(self.fail("delete", key, e)),
                }
            })
            .await
    }

    async fn create_bucket(&self) -> Result<()> {
        self.retry
            .run(|| async {
                match self.container.create(None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
                    Err(e) => Err(self.fail("create_container", "", e)),
                }
            })
            .await
    }

    fn copy_source(&self, meta: &ObjectMeta) -> CopySource {
        CopySource {
            url: Some(self.blob_url_with_sas(&meta.key)),
            ..CopySource::by_name(&self.location, meta)
        }
    }

    async fn copy_from(
        &self,
        source: &CopySource,
        key: &str,
        properties: &Properties,
    ) -> Result<crate::Copied> {
        self.copy_in(source, key, properties).await?;
        // Copy Blob answers an ETag and a copy status, no checksum of what it wrote.
        Ok(crate::Copied::default())
    }

    fn min_part_size(&self) -> u64 {
        1
    }

    fn max_parts(&self) -> u32 {
        50_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_sas_has_the_documented_fields_and_a_stable_signature() {
        let expiry = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800); // 2100-01-01
        let sas = account_sas("acct", "a2V5a2V5a2V5", expiry).unwrap();
        assert!(sas.starts_with("sv=2022-11-02&ss=b&srt=sco&sp=rwdlacup&se=2100-01-01T00%3A00%3A00Z&spr=https,http&sig="), "{sas}");
        assert_eq!(sas, account_sas("acct", "a2V5a2V5a2V5", expiry).unwrap());
        assert_ne!(sas, account_sas("acct", "b3RoZXJrZXk=", expiry).unwrap());
        assert!(
            account_sas("acct", "not base64!", expiry)
                .unwrap_err()
                .contains("base64")
        );
    }
}
