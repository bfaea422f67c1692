//! A sink checks an object it wrote whole against what the store answered, so the gateway
//! needs no request of its own: a store that says it holds other bytes is a failed write.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use skyx_agent::{ObjectWriter, Wrote};
use skyx_agent_api::wire::{SinkObject, SinkObjects, Verification};
use skyx_store::local::LocalStore;
use skyx_store::{
    ByteStream, ErrorKind, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PartReceipt,
    Properties, Result, RetryPolicy, StoreLocation, Written,
};

/// A local store whose put answers a CRC32C, flipped while `lie` is set.
#[derive(Debug)]
struct Answering {
    inner: LocalStore,
    location: StoreLocation,
    lie: AtomicBool,
}

#[async_trait]
impl ObjectStore for Answering {
    fn location(&self) -> &StoreLocation {
        &self.location
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: &str) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, r: Range<u64>, v: Option<&str>) -> Result<ByteStream> {
        self.inner.get_range(key, r, v).await
    }
    async fn properties(&self, key: &str) -> Result<Properties> {
        self.inner.properties(key).await
    }
    async fn put_with(&self, key: &str, data: Bytes, p: &Properties) -> Result<Written> {
        let crc = crc32c::crc32c(&data) ^ u32::from(self.lie.load(Ordering::Relaxed));
        let written = self.inner.put_with(key, data, p).await?;
        Ok(Written {
            crc32c: Some(crc),
            ..written
        })
    }
    async fn create_multipart_with(&self, key: &str, p: &Properties) -> Result<MultipartUpload> {
        self.inner.create_multipart_with(key, p).await
    }
    async fn put_part(&self, u: &MultipartUpload, n: u32, data: Bytes) -> Result<PartReceipt> {
        self.inner.put_part(u, n, data).await
    }
    async fn complete_multipart(&self, u: &MultipartUpload, parts: Vec<PartReceipt>) -> Result<()> {
        self.inner.complete_multipart(u, parts).await
    }
    async fn abort_multipart(&self, u: &MultipartUpload) -> Result<()> {
        self.inner.abort_multipart(u).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn create_bucket(&self) -> Result<()> {
        Ok(())
    }
}

fn writer(store: Arc<dyn ObjectStore>, dst_key: &str, size: u64) -> ObjectWriter {
    let w = ObjectWriter::new(store);
    w.update(SinkObjects {
        add: vec![SinkObject {
            object: 0,
            dst_key: dst_key.into(),
            size,
            chunk_size: 1 << 20,
            properties: Properties::default(),
            upload: None,
        }],
        forget: Vec::new(),
    });
    w
}

#[tokio::test]
async fn a_whole_object_is_checked_by_the_stores_answer_or_read_back() {
    let dir = std::env::temp_dir().join(format!("skyx-sink-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = |name: &str| {
        format!("{}/{name}", dir.display())
            .trim_start_matches('/')
            .to_string()
    };
    let data = Bytes::from_static(b"what the source read, checked end to end");
    let crc = crc32c::crc32c(&data);

    // A store answering a checksum: checked by it.
    let answering = Arc::new(Answering {
        inner: LocalStore::new(RetryPolicy::default()),
        location: StoreLocation::S3 {
            bucket: "pretend".into(),
        },
        lie: AtomicBool::new(false),
    });
    let w = writer(answering.clone(), &key("a"), data.len() as u64);
    let wrote = w.write(0, 0, data.clone(), crc).await.unwrap();
    assert_eq!(wrote, Wrote::Whole(Verification::Crc32c));
    // It says it holds other bytes: a failed write the sink retries, never "landed".
    answering.lie.store(true, Ordering::Relaxed);
    let err = w.write(0, 0, data.clone(), crc).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("other bytes"), "{err}");

    // A local file answers only its size: read back.
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(RetryPolicy::default()));
    let w = writer(local, &key("b"), data.len() as u64);
    let wrote = w.write(0, 0, data.clone(), crc).await.unwrap();
    assert_eq!(wrote, Wrote::Whole(Verification::ReadBack));
    // A CRC32C that is not the bytes' (as if they changed on their way to the disk) fails.
    let err = w.write(0, 0, data.clone(), crc ^ 1).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
