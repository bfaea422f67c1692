//! Server-side copies into an Azure container: Copy Blob from the source's URL (signed with
//! the source's own SAS, so another account works), which the service runs on its own; we poll
//! until it ends, then set the HTTP headers the copy should carry (Copy Blob sets only user
//! metadata), keeping the Content-MD5 the service copied.
//!
//! Copy Blob, not Put Block From URL, because Azurite (the only local Azure) implements just
//! Copy Blob; Put Block From URL copies synchronously in chunks and is left for later.

use std::time::Duration;

use azure_storage_blob::models::{
    AccessTier, BlobClientGetPropertiesResultHeaders, BlobClientSetPropertiesOptions,
    BlobClientStartCopyFromUrlOptions, BlobClientStartCopyFromUrlResultHeaders, CopyStatus,
};

use super::AzureStore;
use crate::error::{ErrorKind, Result};
use crate::{CopySource, ObjectStore, Properties, StoreLocation};

impl AzureStore {
    pub(super) async fn copy_in(
        &self,
        source: &CopySource,
        key: &str,
        properties: &Properties,
    ) -> Result<()> {
        let refuse = |why: String| self.error(ErrorKind::InvalidInput, "copy", key, why);
        let (StoreLocation::Azure { .. }, Some(url)) = (&source.location, &source.url) else {
            return Err(refuse(format!(
                "cannot copy server-side from {}",
                source.location
            )));
        };
        let dest = self.blob(key);
        let metadata = properties.azure_metadata();
        let started = self
            .retry
            .run(|| async {
                let options = BlobClientStartCopyFromUrlOptions {
                    metadata: (!metadata.is_empty())
                        .then(|| metadata.clone().into_iter().collect()),
                    source_if_match: source.etag.as_ref().map(|e| format!("\"{e}\"").into()),
                    // An archived blob takes no more properties: archive it last.
                    tier: self.tier().filter(|t| *t != AccessTier::Archive),
                    ..Default::default()
                };
                dest.start_copy_from_url(url.clone(), Some(options))
                    .await
                    .map_err(|e| self.fail("copy", key, e))
            })
            .await?;
        // Whatever the start said, the blob's properties say how the copy ended (and carry
        // the Content-MD5 it copied).
        let mut pending = started.copy_status().ok().flatten() == Some(CopyStatus::Pending);
        let mut wait = Duration::from_millis(100);
        let md5 = loop {
            if pending {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            let props = self
                .retry
                .run(|| async {
                    dest.get_properties(None)
                        .await
                        .map_err(|e| self.fail("copy", key, e))
                })
                .await?;
            match props.copy_status().ok().flatten() {
                Some(CopyStatus::Pending) => pending = true,
                Some(CopyStatus::Success) | None => break props.content_md5().ok().flatten(),
                Some(other) => {
                    return Err(self.error(
                        ErrorKind::Other,
                        "copy",
                        key,
                        format!(
                            "server-side copy ended as {other:?}: {}",
                            props
                                .copy_status_description()
                                .ok()
                                .flatten()
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
        };
        if let Some(expected) = source.md5
            && md5.as_deref() != Some(expected.as_slice())
        {
            return Err(self.error(
                ErrorKind::Other,
                "copy",
                key,
                "the copy's Content-MD5 is not the source's".into(),
            ));
        }
        // Set Blob Properties replaces every HTTP header, Content-MD5 included: pass it on.
        self.retry
            .run(|| async {
                let options = BlobClientSetPropertiesOptions {
                    blob_content_type: properties.content_type.clone(),
                    blob_content_encoding: properties.content_encoding.clone(),
                    blob_content_language: properties.content_language.clone(),
                    blob_content_disposition: properties.content_disposition.clone(),
                    blob_cache_control: properties.cache_control.clone(),
                    blob_content_md5: md5.clone(),
                    ..Default::default()
                };
                dest.set_properties(Some(options))
                    .await
                    .map_err(|e| self.fail("copy", key, e))
                    .map(|_| ())
            })
            .await?;
        if self.tier() == Some(AccessTier::Archive) {
            self.retry
                .run(|| async {
                    dest.set_tier(AccessTier::Archive, None)
                        .await
                        .map_err(|e| self.fail("copy", key, e))
                        .map(|_| ())
                })
                .await?;
        }
        Ok(())
    }
}
