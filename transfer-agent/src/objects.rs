//! Reading chunks from the source store and assembling objects in the destination store.
//!
//! Every agent of a copy shares the manifest: the objects in order, with their size and the
//! chunk size they were cut with, so a chunk's `(object, offset)` is enough to know its key,
//! its part number and whether it is the whole object.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use skyx_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PartReceipt, StoreError};
use tokio::sync::{Mutex, OnceCell};

/// One object of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestObject {
    pub src_key: String,
    pub dst_key: String,
    pub size: u64,
    /// The chunk size this object was cut with (see the gateway's chunker).
    pub chunk_size: u64,
}

impl ManifestObject {
    /// Whether the object travels as one chunk (written with a single put).
    pub fn is_whole(&self) -> bool {
        self.size <= self.chunk_size
    }

    /// The 1-based part number of the chunk at `offset`.
    pub fn part_of(&self, offset: u64) -> u32 {
        (offset / self.chunk_size.max(1)) as u32 + 1
    }
}

/// Reads one chunk of a source object.
pub async fn read_chunk(
    store: &dyn ObjectStore,
    object: &ManifestObject,
    offset: u64,
    len: u64,
) -> Result<Bytes, StoreError> {
    store
        .get_range_bytes(&object.src_key, offset..offset + len)
        .await
}

/// Writes chunks into the destination store and completes objects.
#[derive(Debug)]
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    manifest: Arc<Vec<ManifestObject>>,
    /// One multipart upload per object, created by whichever chunk arrives first.
    uploads: Mutex<HashMap<u32, Arc<OnceCell<MultipartUpload>>>>,
    parts: Mutex<HashMap<u32, Vec<PartReceipt>>>,
}

impl ObjectWriter {
    pub fn new(store: Arc<dyn ObjectStore>, manifest: Arc<Vec<ManifestObject>>) -> Self {
        ObjectWriter {
            store,
            manifest,
            uploads: Mutex::new(HashMap::new()),
            parts: Mutex::new(HashMap::new()),
        }
    }

    fn object(&self, index: u32) -> Result<&ManifestObject, StoreError> {
        self.manifest.get(index as usize).ok_or_else(|| {
            self.store.error(
                skyx_store::ErrorKind::InvalidInput,
                "write",
                "",
                format!("object {index} is not in the manifest"),
            )
        })
    }

    async fn upload(&self, index: u32, key: &str) -> Result<MultipartUpload, StoreError> {
        let cell = self.uploads.lock().await.entry(index).or_default().clone();
        cell.get_or_try_init(|| self.store.create_multipart(key))
            .await
            .cloned()
    }

    /// Writes the verified chunk at `offset` of object `index`. Writing the same chunk twice
    /// writes the same part twice (harmless: the later write wins with identical bytes).
    pub async fn write(&self, index: u32, offset: u64, data: Bytes) -> Result<(), StoreError> {
        let object = self.object(index)?;
        if object.is_whole() {
            return self.store.put(&object.dst_key, data).await;
        }
        let upload = self.upload(index, &object.dst_key).await?;
        let receipt = self
            .store
            .put_part(&upload, object.part_of(offset), data)
            .await?;
        let mut parts = self.parts.lock().await;
        let list = parts.entry(index).or_default();
        list.retain(|p| p.part_number != receipt.part_number);
        list.push(receipt);
        Ok(())
    }

    /// Every chunk of object `index` landed: assemble it. Whole objects are already in place.
    pub async fn complete(&self, index: u32) -> Result<(), StoreError> {
        let object = self.object(index)?;
        if object.is_whole() {
            return Ok(());
        }
        let upload = self.upload(index, &object.dst_key).await?;
        let parts = self.parts.lock().await.remove(&index).unwrap_or_default();
        let expected = object.size.div_ceil(object.chunk_size.max(1)) as usize;
        if parts.len() != expected {
            return Err(self.store.error(
                skyx_store::ErrorKind::InvalidInput,
                "complete_multipart",
                &object.dst_key,
                format!("{} of {expected} parts were written", parts.len()),
            ));
        }
        self.store.complete_multipart(&upload, parts).await?;
        self.uploads.lock().await.remove(&index);
        Ok(())
    }

    /// Gives the object up: its parts are discarded so none is left to bill.
    pub async fn abort(&self, index: u32) -> Result<(), StoreError> {
        let cell = self.uploads.lock().await.remove(&index);
        self.parts.lock().await.remove(&index);
        if let Some(upload) = cell.and_then(|c| c.get().cloned()) {
            self.store.abort_multipart(&upload).await?;
        }
        Ok(())
    }
}
