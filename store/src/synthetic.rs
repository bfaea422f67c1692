//! A benchmark device, not a store: `synthetic://COUNTxSIZE/` lists COUNT objects of SIZE bytes
//! and serves their bytes without storing any, so a copy of ten million objects runs every
//! real code path of the gateway and the agents within one machine's disk.
//!
//! As a source, object `i` is key `o` + `i` in ten digits (sorted as numbered) and its bytes
//! are a deterministic function of `i` and the offset (SplitMix64 words): incompressible, like
//! most data worth moving, and the same on every machine. As a destination it *verifies and
//! discards*: every put and part is checked byte for byte against what the source would serve
//! for that key (a mismatch is refused as invalid input, so a copy that corrupts or misplaces
//! data fails), and a head answers from the generator, as if every object had been written.
//! It keeps nothing at all: a part's receipt carries its length and CRC32C, which completion
//! checks. It has never pretended to be a
//! cloud: it exists for `bench/` and the scale tests, and says so in every message.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{
    ByteStream, ErrorKind, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PartReceipt,
    Properties, Result, StoreLocation, Written,
};

/// Every synthetic object's modification time (fixed, so listings are the same every time).
const MTIME: Duration = Duration::from_secs(1_700_000_000);

/// Objects above this size are not checksummed in heads (it would mean generating them).
const HEAD_CRC_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct SyntheticStore {
    location: StoreLocation,
    objects: u64,
    size: u64,
}

/// The key of object `i`.
pub fn key_of(i: u64) -> String {
    format!("o{i:010}")
}

/// The bytes of object `i` at `range`.
pub fn content(i: u64, range: Range<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut word = range.start / 8;
    let mut skip = (range.start % 8) as usize;
    while (out.len() as u64) < range.end - range.start {
        let bytes = splitmix64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ word).to_le_bytes();
        let take = (8 - skip).min((range.end - range.start) as usize - out.len());
        out.extend_from_slice(&bytes[skip..skip + take]);
        skip = 0;
        word += 1;
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The CRC32C of object `i`'s bytes at `range`, generated a MiB at a time.
fn content_crc(i: u64, range: Range<u64>) -> u32 {
    let mut crc = 0;
    let mut at = range.start;
    while at < range.end {
        let end = (at + 1024 * 1024).min(range.end);
        crc = crc32c::crc32c_append(crc, &content(i, at..end));
        at = end;
    }
    crc
}

impl SyntheticStore {
    pub fn new(objects: u64, size: u64) -> Self {
        SyntheticStore {
            location: StoreLocation::Synthetic { objects, size },
            objects,
            size,
        }
    }

    /// The object number of `key`, if it names one of this device's objects.
    fn index(&self, op: &'static str, key: &str) -> Result<u64> {
        key.strip_prefix('o')
            .filter(|d| d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
            .filter(|&i| i < self.objects)
            .ok_or_else(|| {
                self.error(
                    ErrorKind::NotFound,
                    op,
                    key,
                    format!("not one of the {} synthetic objects", self.objects),
                )
            })
    }

    fn meta(&self, i: u64) -> ObjectMeta {
        ObjectMeta {
            key: key_of(i),
            size: self.size,
            last_modified: Some(SystemTime::UNIX_EPOCH + MTIME),
            etag: Some(format!("synthetic-{i}")),
            md5: None,
            crc32c: None,
        }
    }

    /// Refuses `data` unless it is object `key`'s bytes at `offset` (parts are checked at
    /// completion instead: a part does not know its offset).
    fn check(&self, op: &'static str, key: &str, offset: u64, data: &[u8]) -> Result<()> {
        let i = self.index(op, key)?;
        let end = offset + data.len() as u64;
        if end > self.size || content(i, offset..end) != data {
            return Err(self.error(
                ErrorKind::InvalidInput,
                op,
                key,
                format!(
                    "{} bytes at {offset} are not what the synthetic source serves there",
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    fn read_only(&self, op: &'static str, key: &str) -> crate::StoreError {
        self.error(
            ErrorKind::InvalidInput,
            op,
            key,
            "the synthetic benchmark device does not do this".into(),
        )
    }
}

#[async_trait]
impl ObjectStore for SyntheticStore {
    fn location(&self) -> &StoreLocation {
        &self.location
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let prefix = prefix.to_string();
        futures::stream::iter(0..self.objects)
            .map(move |i| self.meta(i))
            .filter(move |m| std::future::ready(m.key.starts_with(&prefix)))
            .map(Ok)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: &str) -> Result<ListResult> {
        if !prefix.is_empty() {
            return Ok(ListResult::default());
        }
        Ok(ListResult {
            objects: (0..self.objects).map(|i| self.meta(i)).collect(),
            common_prefixes: Vec::new(),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let i = self.index("head", key)?;
        let mut meta = self.meta(i);
        if self.size <= HEAD_CRC_LIMIT {
            meta.crc32c = Some(content_crc(i, 0..self.size));
        }
        Ok(meta)
    }

    async fn properties(&self, key: &str) -> Result<Properties> {
        self.index("properties", key)?;
        Ok(Properties {
            modified: Some(SystemTime::UNIX_EPOCH + MTIME),
            ..Properties::default()
        })
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<ByteStream> {
        let i = self.index("get", key)?;
        if let Some(v) = version
            && v != format!("synthetic-{i}")
        {
            return Err(self.error(ErrorKind::Changed, "get", key, format!("not version {v}")));
        }
        if range.end > self.size || range.start > range.end {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "get",
                key,
                format!("range {range:?} outside {} bytes", self.size),
            ));
        }
        let bytes = Bytes::from(content(i, range));
        Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
    }

    async fn put_with(&self, key: &str, data: Bytes, _properties: &Properties) -> Result<Written> {
        if data.len() as u64 != self.size {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "put",
                key,
                format!("{} bytes, not the object's {}", data.len(), self.size),
            ));
        }
        self.check("put", key, 0, &data)?;
        Ok(Written {
            size: self.size,
            crc32c: Some(crc32c::crc32c(&data)),
            md5: None,
        })
    }

    async fn create_multipart_with(
        &self,
        key: &str,
        properties: &Properties,
    ) -> Result<MultipartUpload> {
        self.index("create_multipart", key)?;
        Ok(MultipartUpload::client_side(key, properties))
    }

    async fn put_part(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        self.index("put_part", &upload.key)?;
        let crc = crc32c::crc32c(&data);
        Ok(PartReceipt {
            part_number,
            etag: format!("{}-{crc:08x}", data.len()),
            crc32c: Some(crc),
        })
    }

    /// Parts were put by the sink's process and are completed by the gateway's, so the
    /// receipts carry what completion checks: each part's length and CRC32C (its etag), which
    /// must be what the source serves at the part's place, every byte covered once.
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let i = self.index("complete_multipart", &upload.key)?;
        let mut parts = parts;
        parts.sort_by_key(|p| p.part_number);
        let mut start = 0;
        for (k, p) in parts.iter().enumerate() {
            let receipt = p
                .etag
                .split_once('-')
                .and_then(|(len, crc)| Some((len.parse::<u64>().ok()?, crc)));
            let last = k + 1 == parts.len();
            let ok = match receipt {
                Some((len, crc))
                    if p.part_number as usize == k + 1
                        && start + len <= self.size
                        && (last || len >= self.min_part_size()) =>
                {
                    let want = content_crc(i, start..start + len);
                    start += len;
                    crc == format!("{want:08x}")
                }
                _ => false,
            };
            if !ok {
                return Err(self.error(
                    ErrorKind::InvalidInput,
                    "complete_multipart",
                    &upload.key,
                    format!(
                        "part {} is not what the synthetic source serves at {start}",
                        p.part_number
                    ),
                ));
            }
        }
        if start != self.size {
            return Err(self.error(
                ErrorKind::InvalidInput,
                "complete_multipart",
                &upload.key,
                format!("the parts hold {start} of {} bytes", self.size),
            ));
        }
        Ok(())
    }

    async fn abort_multipart(&self, _upload: &MultipartUpload) -> Result<()> {
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        Err(self.read_only("delete", key))
    }

    async fn create_bucket(&self) -> Result<()> {
        Ok(())
    }

    /// Objects of any size fit in 1 MiB parts.
    fn min_part_size(&self) -> u64 {
        1024 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectStoreExt;

    #[tokio::test]
    async fn what_it_serves_it_accepts_back_and_nothing_else() {
        let s = SyntheticStore::new(3, 1000);
        let keys: Vec<String> = s.list("").map(|m| m.unwrap().key).collect().await;
        assert_eq!(keys, ["o0000000000", "o0000000001", "o0000000002"]);
        let data = s
            .get_range_bytes("o0000000001", 0..1000, None)
            .await
            .unwrap();
        assert_eq!(&data[..], &content(1, 0..1000)[..]);
        assert_eq!(&data[13..500], &content(1, 13..500)[..], "ranges agree");
        s.put("o0000000001", data.clone()).await.unwrap();
        let err = s.put("o0000000002", data.clone()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
        let mut flipped = data.to_vec();
        flipped[999] ^= 1;
        assert!(s.put("o0000000001", flipped.into()).await.is_err());
        assert!(s.head("o0000000003").await.is_err(), "past the count");
        assert!(s.head("../x").await.is_err());
        assert_eq!(
            s.head("o0000000001").await.unwrap().crc32c,
            Some(crc32c::crc32c(&data))
        );
    }
}
