//! Reading chunks from the source store and assembling objects in the destination store.
//!
//! No agent holds the job's object list. A source gets each object with the dispatch of its
//! chunks; a sink is told of the objects it is about to write (key, size, the chunk size they
//! were cut with, their upload) and forgets them when the gateway is done with them, so a
//! chunk's `(object, offset)` is enough to know its key, its part number and whether it is the
//! whole object, and what an agent holds is bounded by the gateway's window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use skyx_agent_api::wire::{SinkObject, SinkObjects, SourceObject};
use skyx_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PartReceipt, StoreError, StoreLocation,
};

/// Reads one chunk of a source object, of the version the copy listed: a changed object is an
/// `ErrorKind::Changed` error, never bytes of another version.
pub async fn read_chunk(
    store: &dyn ObjectStore,
    object: &SourceObject,
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

/// An object a sink writes.
#[derive(Debug)]
struct Writing {
    object: SinkObject,
    /// Its upload, for an object written in parts (parts carry no properties: the gateway
    /// completes the upload with them).
    upload: Option<MultipartUpload>,
}

impl Writing {
    /// Whether the object travels as one chunk (written with a single put).
    fn is_whole(&self) -> bool {
        self.object.size <= self.object.chunk_size
    }

    /// The 1-based part number of the chunk at `offset`.
    fn part_of(&self, offset: u64) -> u32 {
        (offset / self.object.chunk_size.max(1)) as u32 + 1
    }
}

/// Writes verified chunks into the destination store. Whole objects are one put; other objects
/// are parts of a multipart upload the gateway opened and registered (see [`ObjectWriter::update`])
/// before dispatching any of their chunks. The writer keeps no part receipts: it returns each
/// one, the sink reports it, and the gateway (which keeps them in its journal) completes the
/// object. A sink that dies therefore loses nothing but the chunks it had not yet written.
#[derive(Debug)]
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    objects: Mutex<HashMap<u32, Arc<Writing>>>,
    /// The most objects registered at once.
    peak: std::sync::atomic::AtomicUsize,
}

impl ObjectWriter {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectWriter {
            store,
            objects: Mutex::new(HashMap::new()),
            peak: Default::default(),
        }
    }

    fn object(&self, index: u32) -> Result<Arc<Writing>, StoreError> {
        self.objects
            .lock()
            .expect("objects lock")
            .get(&index)
            .cloned()
            .ok_or_else(|| {
                self.store.error(
                    skyx_store::ErrorKind::InvalidInput,
                    "write",
                    "",
                    format!("object {index} is not registered with this sink"),
                )
            })
    }

    /// Objects to write from now on, and objects the gateway is done with.
    pub fn update(&self, req: SinkObjects) {
        let mut objects = self.objects.lock().expect("objects lock");
        for o in req.forget {
            objects.remove(&o);
        }
        for object in req.add {
            let upload = object.upload.as_ref().map(|id| {
                MultipartUpload::new(&object.dst_key, id, skyx_store::Properties::default())
            });
            objects.insert(object.object, Arc::new(Writing { object, upload }));
        }
        self.peak
            .fetch_max(objects.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The most objects this sink held registered at once.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
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
        let writing = self.object(index)?;
        let object = &writing.object;
        if writing.is_whole() {
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
        let Some(upload) = &writing.upload else {
            return Err(self.store.error(
                skyx_store::ErrorKind::InvalidInput,
                "put_part",
                &object.dst_key,
                format!("no multipart upload registered for object {index}"),
            ));
        };
        let receipt = self
            .store
            .put_part(upload, writing.part_of(offset), data)
            .await?;
        Ok(Some(receipt))
    }
}
