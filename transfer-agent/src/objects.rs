//! Reading chunks from the source store and assembling objects in the destination store.
//!
//! Every agent of a copy shares the manifest: the objects in order, with their size and the
//! chunk size they were cut with, so a chunk's `(object, offset)` is enough to know its key,
//! its part number and whether it is the whole object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use skyx_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PartReceipt, StoreError, StoreLocation,
};

/// One object of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestObject {
    pub src_key: String,
    pub dst_key: String,
    pub size: u64,
    /// The chunk size this object was cut with (see the gateway's chunker).
    pub chunk_size: u64,
    /// The version the copy listed, every read pinned to it (absent: the store listed none).
    pub version: Option<String>,
    /// What the written object carries.
    pub properties: skyx_store::Properties,
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

/// Reads one chunk of a source object, of the version the copy listed: a changed object is an
/// `ErrorKind::Changed` error, never bytes of another version.
pub async fn read_chunk(
    store: &dyn ObjectStore,
    object: &ManifestObject,
    offset: u64,
    len: u64,
) -> Result<Bytes, StoreError> {
    store
        .get_range_bytes(
            &object.src_key,
            offset..offset + len,
            object.version.as_deref(),
        )
        .await
}

/// Writes verified chunks into the destination store. Whole objects are one put; other objects
/// are parts of a multipart upload the gateway opened and registered (see [`ObjectWriter::register`])
/// before dispatching any of their chunks. The writer keeps no part receipts: it returns each
/// one, the sink reports it, and the gateway (which keeps them in its journal) completes the
/// object. A sink that dies therefore loses nothing but the chunks it had not yet written.
#[derive(Debug)]
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    manifest: Arc<Vec<ManifestObject>>,
    uploads: Mutex<HashMap<u32, MultipartUpload>>,
}

impl ObjectWriter {
    pub fn new(store: Arc<dyn ObjectStore>, manifest: Arc<Vec<ManifestObject>>) -> Self {
        ObjectWriter {
            store,
            manifest,
            uploads: Mutex::new(HashMap::new()),
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

    /// Object `index` is written as parts of `upload_id`.
    pub fn register(&self, index: u32, upload_id: String) -> Result<(), StoreError> {
        let key = self.object(index)?.dst_key.clone();
        self.uploads
            .lock()
            .expect("uploads lock")
            // Parts carry no properties: the gateway completes the upload with them.
            .insert(
                index,
                MultipartUpload::new(&key, &upload_id, skyx_store::Properties::default()),
            );
        Ok(())
    }

    /// The MD5 (hex) of `data` when it is the whole of object `index` (written with one put)
    /// to a store that may keep only an MD5 of it: Azure, and S3-compatible servers that keep
    /// no CRC32C (their ETag is the MD5). GCS keeps a CRC32C the gateway checks and a local
    /// file is read back, so there the hash would cost the data plane for nothing.
    pub fn whole_md5(&self, index: u32, data: &[u8]) -> Option<String> {
        use md5::Digest;
        let checked_by_md5 = matches!(
            self.store.location(),
            StoreLocation::Azure { .. } | StoreLocation::S3 { .. }
        );
        (checked_by_md5 && self.object(index).is_ok_and(|o| o.is_whole()))
            .then(|| hex::encode(md5::Md5::digest(data)))
    }

    /// Writes the verified chunk at `offset` of object `index`; returns the part's receipt, or
    /// `None` for a whole object. Writing the same chunk twice writes the same part twice
    /// (harmless: the later write wins with identical bytes).
    pub async fn write(
        &self,
        index: u32,
        offset: u64,
        data: Bytes,
    ) -> Result<Option<PartReceipt>, StoreError> {
        let object = self.object(index)?;
        if object.is_whole() {
            if data.len() as u64 != object.size || offset != 0 {
                return Err(self.store.error(
                    skyx_store::ErrorKind::InvalidInput,
                    "put",
                    &object.dst_key,
                    format!(
                        "chunk of {} bytes at {offset} is not the whole {}-byte object",
                        data.len(),
                        object.size
                    ),
                ));
            }
            self.store
                .put_with(&object.dst_key, data, &object.properties)
                .await?;
            return Ok(None);
        }
        let upload = self
            .uploads
            .lock()
            .expect("uploads lock")
            .get(&index)
            .cloned()
            .ok_or_else(|| {
                self.store.error(
                    skyx_store::ErrorKind::InvalidInput,
                    "put_part",
                    &object.dst_key,
                    format!("no multipart upload registered for object {index}"),
                )
            })?;
        let receipt = self
            .store
            .put_part(&upload, object.part_of(offset), data)
            .await?;
        Ok(Some(receipt))
    }
}
