//! `skyx check SRC DST`: whether two trees hold the same objects, as `rclone check` says it.
//!
//! Objects are paired by their key relative to each prefix (the source side through the
//! same listing and filters a copy uses). A pair is compared by size, then by the best
//! checksum both ends have (local files are read to hash them, cloud objects listed without
//! one are asked: [`complete_checksums`]); with `download`, by reading both and comparing
//! their bytes' CRC32C, which needs no common checksum. A pair with the same size and no
//! common checksum is reported as not comparable, never as identical.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use skyx_store::{ObjectMeta, ObjectStore, ObjectUrl, StoreError};

use crate::core::filter::ObjectFilter;
use crate::listing::{CopyItem, ListError, SkippedObject, dir_prefix, list_copy, list_destination};
use crate::sync::complete_checksums;

/// What `check` found for one relative key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Same size and content, by `by` (`md5`, `crc32c`, `download`).
    Identical { by: &'static str },
    /// Different size or content.
    Differ { why: String },
    /// In the source, not at the destination.
    MissingAtDestination,
    /// At the destination, not in the source.
    ExtraAtDestination,
    /// Same size, and no checksum both ends have (rerun with `--download`).
    NotComparable { why: String },
    /// Reading one of the two failed.
    Error { why: String },
}

/// Everything `check` found, by relative key.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub objects: BTreeMap<String, Outcome>,
    /// Source objects whose key cannot name a file under a local destination.
    pub skipped: Vec<SkippedObject>,
}

impl CheckReport {
    /// How many objects had each outcome (`identical`, `differ`, ...).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for o in self.objects.values() {
            *out.entry(o.name()).or_insert(0) += 1;
        }
        out
    }

    /// Whether the trees hold the same objects.
    pub fn matches(&self) -> bool {
        self.skipped.is_empty()
            && self
                .objects
                .values()
                .all(|o| matches!(o, Outcome::Identical { .. }))
    }
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Identical { .. } => "identical",
            Outcome::Differ { .. } => "differ",
            Outcome::MissingAtDestination => "missing_at_destination",
            Outcome::ExtraAtDestination => "extra_at_destination",
            Outcome::NotComparable { .. } => "not_comparable",
            Outcome::Error { .. } => "error",
        }
    }
}

/// How `check` compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Compare bytes by reading both ends.
    pub download: bool,
    /// Only check that the source's objects are at the destination (extras are not reported).
    pub one_way: bool,
}

/// Pairs read at once with `download`.
const READS_AT_ONCE: usize = 8;

/// Compares the tree under `src` with the tree under `dst`.
pub async fn check(
    src_store: &dyn ObjectStore,
    src: &ObjectUrl,
    dst_store: &dyn ObjectStore,
    dst: &ObjectUrl,
    filter: &ObjectFilter,
    options: CheckOptions,
) -> Result<CheckReport, ListError> {
    let listing = list_copy(src_store, src, dst, true, filter).await?;
    let mut items = listing.items;
    let mut destination = list_destination(dst_store, dst).await?;
    let mut report = CheckReport {
        skipped: listing.skipped,
        ..CheckReport::default()
    };
    if !options.download {
        complete_checksums(src_store, &mut items, dst_store, &mut destination).await?;
    }
    let dst_prefix = dir_prefix(&dst.key);
    let relative = |dst_key: &str| {
        dst_key
            .strip_prefix(&dst_prefix)
            .unwrap_or(dst_key)
            .to_string()
    };
    let mut by_key: HashMap<String, ObjectMeta> = destination
        .into_iter()
        .map(|m| (m.key.clone(), m))
        .collect();
    let mut to_read: Vec<(CopyItem, ObjectMeta)> = Vec::new();
    for item in items {
        let rel = relative(&item.dst_key);
        let Some(meta) = by_key.remove(&item.dst_key) else {
            report.objects.insert(rel, Outcome::MissingAtDestination);
            continue;
        };
        if meta.size != item.size {
            let why = format!(
                "{} bytes at the source, {} at the destination",
                item.size, meta.size
            );
            report.objects.insert(rel, Outcome::Differ { why });
        } else if options.download {
            to_read.push((item, meta));
        } else {
            report.objects.insert(rel, by_checksum(&item, &meta));
        }
    }
    let read: Vec<(String, Outcome)> = futures::stream::iter(to_read)
        .map(|(item, meta)| async move {
            let outcome = match (
                crc_of(src_store, &item.src_key, item.size).await,
                crc_of(dst_store, &meta.key, meta.size).await,
            ) {
                (Ok(a), Ok(b)) if a == b => Outcome::Identical { by: "download" },
                (Ok(a), Ok(b)) => Outcome::Differ {
                    why: format!(
                        "content differs (CRC32C {a:08x} at the source, {b:08x} at the destination)"
                    ),
                },
                (Err(e), _) | (_, Err(e)) => Outcome::Error { why: e.to_string() },
            };
            (item.dst_key, outcome)
        })
        .buffer_unordered(READS_AT_ONCE)
        .collect()
        .await;
    for (dst_key, outcome) in read {
        report.objects.insert(relative(&dst_key), outcome);
    }
    if !options.one_way {
        for meta in by_key.into_values() {
            let rel = relative(&meta.key);
            if filter.accepts(&rel, meta.size, meta.last_modified) {
                report.objects.insert(rel, Outcome::ExtraAtDestination);
            }
        }
    }
    Ok(report)
}

/// Same-size objects compared by the best checksum both ends have.
fn by_checksum(item: &CopyItem, meta: &ObjectMeta) -> Outcome {
    let differ = |algo: &str, a: String, b: String| Outcome::Differ {
        why: format!("{algo} {a} at the source, {b} at the destination"),
    };
    match (item.md5, meta.md5, item.crc32c, meta.crc32c) {
        (Some(a), Some(b), _, _) if a == b => Outcome::Identical { by: "md5" },
        (Some(a), Some(b), _, _) => differ("MD5", hex::encode(a), hex::encode(b)),
        (_, _, Some(a), Some(b)) if a == b => Outcome::Identical { by: "crc32c" },
        (_, _, Some(a), Some(b)) => differ("CRC32C", format!("{a:08x}"), format!("{b:08x}")),
        _ => Outcome::NotComparable {
            why: "same size, and no checksum both ends have (compare with --download)".into(),
        },
    }
}

async fn crc_of(store: &dyn ObjectStore, key: &str, size: u64) -> Result<u32, StoreError> {
    let mut stream = store.get_range(key, 0..size, None).await?;
    let mut crc = 0u32;
    while let Some(piece) = stream.next().await {
        crc = crc32c::crc32c_append(crc, &piece?);
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::tests::src;

    fn meta(size: u64, md5: Option<u8>, crc: Option<u32>) -> ObjectMeta {
        ObjectMeta {
            key: "d/k".into(),
            size,
            last_modified: None,
            etag: None,
            md5: md5.map(|b| [b; 16]),
            crc32c: crc,
        }
    }

    #[test]
    fn pairs_are_compared_by_the_best_common_checksum_or_not_at_all() {
        let item = |md5, crc| CopyItem {
            crc32c: crc,
            ..src("k", 5, md5, 1)
        };
        assert_eq!(
            by_checksum(&item(Some(1), None), &meta(5, Some(1), None)),
            Outcome::Identical { by: "md5" }
        );
        assert!(matches!(
            by_checksum(&item(Some(1), None), &meta(5, Some(2), None)),
            Outcome::Differ { .. }
        ));
        assert_eq!(
            by_checksum(&item(None, Some(7)), &meta(5, Some(1), Some(7))),
            Outcome::Identical { by: "crc32c" }
        );
        assert!(matches!(
            by_checksum(&item(Some(1), None), &meta(5, None, Some(7))),
            Outcome::NotComparable { .. }
        ));
    }
}
