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
use skyx_agent_api::wire::{SinkObject, SinkObjects, SourceObject, Verification};
use skyx_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PartReceipt, StoreError, StoreLocation, Written,
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

    /// Writes the verified chunk at `offset` of object `index` (its bytes' CRC32C is
    /// `crc32c`, checked end to end): a part, with the store's receipt, or the whole object,
    /// checked against what the store says it holds. Writing the same chunk twice writes the
    /// same part twice (harmless: the later write wins with identical bytes).
    pub async fn write(
        &self,
        index: u32,
        offset: u64,
        data: Bytes,
        crc32c: u32,
    ) -> Result<Wrote, StoreError> {
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
            let written = self
                .store
                .put_with(&object.dst_key, data.clone(), &object.properties)
                .await?;
            return self
                .check_whole(&object.dst_key, &data, crc32c, written)
                .await
                .map(Wrote::Whole);
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
        Ok(Wrote::Part(receipt))
    }

    /// Checks the object just written whole as `key` from `data` (CRC32C `crc32c`) by what
    /// the store answered: its CRC32C, else its MD5, else (a local file, which answers only
    /// its size) by reading it back; size alone where nothing else is known. What differs is
    /// a passing failure: the sink writes it again.
    async fn check_whole(
        &self,
        key: &str,
        data: &[u8],
        crc32c: u32,
        written: Written,
    ) -> Result<Verification, StoreError> {
        let differs = |what: String| {
            self.store.error(
                skyx_store::ErrorKind::Transient,
                "put",
                key,
                format!("the store holds other bytes than were written: {what}"),
            )
        };
        if written.size != data.len() as u64 {
            return Err(differs(format!(
                "{} bytes, not {}",
                written.size,
                data.len()
            )));
        }
        if let Some(got) = written.crc32c {
            return if got == crc32c {
                Ok(Verification::Crc32c)
            } else {
                Err(differs(format!("CRC32C {got:08x}, not {crc32c:08x}")))
            };
        }
        if let Some(got) = written.md5 {
            use md5::Digest;
            let want: [u8; 16] = md5::Md5::digest(data).into();
            return if got == want {
                Ok(Verification::Md5)
            } else {
                Err(differs(format!("MD5 {}", hex::encode(got))))
            };
        }
        if matches!(self.store.location(), StoreLocation::Local) {
            let back = self
                .store
                .get_range_bytes(key, 0..data.len() as u64, None)
                .await?;
            let got = crc32c::crc32c(&back);
            return if got == crc32c {
                Ok(Verification::ReadBack)
            } else {
                Err(differs(format!("read back with CRC32C {got:08x}")))
            };
        }
        Ok(Verification::Size)
    }
}

/// What a sink's write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrote {
    /// A part, with the store's receipt (the gateway completes the upload).
    Part(PartReceipt),
    /// The whole object, checked as it says.
    Whole(Verification),
}
