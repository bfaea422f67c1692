//! Regression: a failing source must not leave parts that land after the abort.
//!
//! Parts are slow to land here; the source fails while they are in flight. `upload` must wait
//! for every part it sent before it aborts, or a late part would be orphaned (and billed).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use skyx_store::local::LocalStore;
use skyx_store::{
    ByteStream, ErrorKind, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PartReceipt, Properties, Result, RetryPolicy, StoreError, StoreLocation, UploadOptions,
};

#[derive(Debug)]
struct SlowParts {
    inner: LocalStore,
    log: Mutex<Vec<String>>,
}

#[async_trait]
impl ObjectStore for SlowParts {
    fn location(&self) -> &StoreLocation {
        self.inner.location()
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
    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<ByteStream> {
        self.inner.get_range(key, range, version).await
    }
    async fn properties(&self, key: &str) -> Result<Properties> {
        self.inner.properties(key).await
    }
    async fn put_with(
        &self,
        key: &str,
        data: Bytes,
        p: &Properties,
    ) -> Result<skyx_store::Written> {
        self.inner.put_with(key, data, p).await
    }
    async fn create_multipart_with(&self, key: &str, p: &Properties) -> Result<MultipartUpload> {
        self.inner.create_multipart_with(key, p).await
    }
    async fn put_part(&self, upload: &MultipartUpload, n: u32, data: Bytes) -> Result<PartReceipt> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = self.inner.put_part(upload, n, data).await;
        self.log.lock().unwrap().push(format!("part {n} landed"));
        r
    }
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: Vec<PartReceipt>,
    ) -> Result<()> {
        self.inner.complete_multipart(upload, parts).await
    }
    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<()> {
        self.log.lock().unwrap().push("abort".into());
        self.inner.abort_multipart(upload).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.copy(from, to).await
    }
    async fn create_bucket(&self) -> Result<()> {
        self.inner.create_bucket().await
    }
    fn min_part_size(&self) -> u64 {
        1
    }
}

#[tokio::test]
async fn abort_waits_for_parts_in_flight() {
    let dir = std::env::temp_dir().join(format!("skyx-abort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(SlowParts {
        inner: LocalStore::new(RetryPolicy::never()),
        log: Mutex::new(Vec::new()),
    });
    let key = format!("{}/obj", dir.to_str().unwrap().trim_start_matches('/'));
    // Three parts go out; the source fails while they are still landing.
    let source = stream::iter(vec![
        Ok(Bytes::from_static(b"aaaa")),
        Ok(Bytes::from_static(b"bbbb")),
        Ok(Bytes::from_static(b"cccc")),
        Ok(Bytes::from_static(b"dddd")),
        Err(StoreError::new(
            ErrorKind::Other,
            "source",
            "get",
            "x",
            "source died",
        )),
    ]);
    let err = store
        .upload(
            &key,
            source,
            UploadOptions {
                part_size: 4,
                concurrency: 8,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("source died"));
    let log = store.log.lock().unwrap().clone();
    assert_eq!(
        log.last().map(String::as_str),
        Some("abort"),
        "abort must come last: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.ends_with("landed")).count(),
        4,
        "{log:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "nothing may remain: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
