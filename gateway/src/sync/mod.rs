//! What `sync` (and `cp --no-clobber`) decide against the destination: which objects are
//! already in place under the chosen comparison, which destination objects to delete, and
//! doing those deletions only when every copy happened.
//!
//! Comparisons (`Compare`), as rclone names them:
//! - default: same size, and the same checksum where both ends expose a comparable one, else
//!   the same modification time as the source's, as the destination recorded it when it was
//!   written (cloud objects carry it as metadata `mtime`, [`complete_recorded_times`] reads
//!   it; local files are given it as their mtime), else (a cloud object some other tool wrote) a
//!   destination at least as new as the source. So a destination written from a version the
//!   source no longer has never looks "unchanged";
//! - `--size-only`: same size;
//! - `--checksum`: same size and the same checksum; an object whose two ends share no checksum
//!   is an error naming it, never a silent fall back to times ([`complete_checksums`] gives
//!   local files an MD5 by reading them, as rclone does, and asks cloud objects listed without
//!   one);
//!
//! and modifiers: `--update` leaves an object whose destination is newer than its source;
//! `--no-clobber` never replaces an existing destination object.
//!
//! [`plan_sync`] decides over listings held whole (`cp --no-clobber`); [`stream`] decides as
//! the two listings stream in, sorted ([`crate::spill`]) and merged ([`merge`]), so a sync's
//! memory does not grow with the object count. Both decide each pair the same way
//! ([`merge::decide`]); the rest are thin drivers.

pub mod merge;
pub mod stream;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use md5::Digest;
use skyx_store::{ObjectMeta, ObjectStore, StoreError, StoreLocation};

use crate::core::filter::ObjectFilter;
use crate::listing::{CopyItem, dir_prefix, is_marker};

/// How a source object and its destination are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compare {
    #[default]
    Default,
    SizeOnly,
    Checksum,
}

/// The comparison and its modifiers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncRules {
    pub compare: Compare,
    /// Leave objects whose destination is newer than the source (`--update`).
    pub update: bool,
    /// Never replace an existing destination object (`--no-clobber`).
    pub no_clobber: bool,
}

/// What `sync` does: the objects to copy, how many are already in place, and (with
/// `--delete`) the destination objects the source no longer has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub copy: Vec<CopyItem>,
    pub unchanged: usize,
    /// Destination keys to delete.
    pub delete: Vec<String>,
}

/// Why a sync cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error(
        "--checksum: {src_key} and its destination {dst_key} share no checksum (the source has {src_has}, the destination {dst_has}); compare them with --size-only, or without --checksum"
    )]
    NoCommonChecksum {
        src_key: String,
        dst_key: String,
        src_has: &'static str,
        dst_has: &'static str,
    },
    #[error(
        "the {side} listing is not in key order ({after:?} came after {before:?}): a sync cannot pair its objects, so nothing was deleted"
    )]
    OutOfOrder {
        side: merge::Side,
        before: String,
        after: String,
    },
}

fn hashes(md5: Option<[u8; 16]>, crc32c: Option<u32>) -> &'static str {
    match (md5, crc32c) {
        (Some(_), Some(_)) => "MD5 and CRC32C",
        (Some(_), None) => "MD5",
        (None, Some(_)) => "CRC32C",
        (None, None) => "none",
    }
}

/// Destination key → the source modification time its object was written from, as the
/// destination recorded it (see [`complete_recorded_times`]).
pub type RecordedTimes = HashMap<String, SystemTime>;

/// Two modification times name the same version when within this (finer than any store's).
const SAME_TIME: Duration = Duration::from_millis(1);

fn same_time(a: SystemTime, b: SystemTime) -> bool {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .is_ok_and(|d| d < SAME_TIME)
}

/// The source's own modification time: what it carries (metadata `mtime`, once read), else
/// its store's.
fn source_time(src: &CopyItem) -> Option<SystemTime> {
    src.properties.modified.or(src.last_modified)
}

/// Whether `src` and `dst` have the same content by the best checksum both expose (MD5, else
/// CRC32C); `None` when they share none.
fn same_checksum(src: &CopyItem, dst: &ObjectMeta) -> Option<bool> {
    match (src.md5, dst.md5, src.crc32c, dst.crc32c) {
        (Some(a), Some(b), _, _) => Some(a == b),
        (_, _, Some(a), Some(b)) => Some(a == b),
        _ => None,
    }
}

/// (source index, destination index) of every item whose destination key is listed with the
/// same size: the pairs a comparison beyond sizes decides.
fn same_size_pairs(items: &[CopyItem], destination: &[ObjectMeta]) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = destination
        .iter()
        .enumerate()
        .map(|(n, m)| (m.key.as_str(), n))
        .collect();
    items
        .iter()
        .enumerate()
        .filter_map(|(n, i)| {
            let d = *index.get(i.dst_key.as_str())?;
            (destination[d].size == i.size).then_some((n, d))
        })
        .collect()
}

/// Whether `dst` already holds `src` under `rules` (`Err` when `--checksum` cannot tell).
/// `recorded` is the source time `dst` was written from, when it says.
pub fn is_in_place(
    src: &CopyItem,
    dst: &ObjectMeta,
    recorded: Option<SystemTime>,
    rules: &SyncRules,
) -> Result<bool, SyncError> {
    if rules.no_clobber {
        return Ok(true);
    }
    if rules.update
        && let (Some(s), Some(d)) = (src.last_modified, dst.last_modified)
        && d > s
    {
        return Ok(true);
    }
    if src.size != dst.size {
        return Ok(false);
    }
    let checksum = same_checksum(src, dst);
    Ok(match rules.compare {
        Compare::SizeOnly => true,
        Compare::Checksum => checksum.ok_or_else(|| SyncError::NoCommonChecksum {
            src_key: src.src_key.clone(),
            dst_key: dst.key.clone(),
            src_has: hashes(src.md5, src.crc32c),
            dst_has: hashes(dst.md5, dst.crc32c),
        })?,
        Compare::Default => match (checksum, recorded, source_time(src)) {
            (Some(same), _, _) => same,
            (None, Some(r), Some(s)) => same_time(r, s),
            _ => match (src.last_modified, dst.last_modified) {
                (Some(s), Some(d)) => d >= s,
                _ => false,
            },
        },
    })
}

/// Decides a sync from the source items (already filtered, with destination keys) and the
/// destination's listing under `dst_prefix` (its keys full, as listed). Deletion candidates are
/// destination objects that no source item maps to and that `filter` takes (by their key
/// relative to `dst_prefix`, size and time); objects the filter excludes are never deleted.
pub fn plan_sync(
    mut items: Vec<CopyItem>,
    destination: &[ObjectMeta],
    recorded: &RecordedTimes,
    dst_prefix: &str,
    filter: &ObjectFilter,
    rules: &SyncRules,
    delete: bool,
) -> Result<SyncPlan, SyncError> {
    items.sort_by(|a, b| a.dst_key.cmp(&b.dst_key));
    let mut destination = destination.to_vec();
    destination.sort_by(|a, b| a.key.cmp(&b.key));
    let prefix = dir_prefix(dst_prefix);
    let rule = delete.then_some(merge::DeleteRule {
        prefix: &prefix,
        filter,
    });
    let mut plan = SyncPlan::default();
    for pairing in merge::pair_sorted(items, destination) {
        let recorded = match &pairing {
            merge::Pairing::Both(_, meta) => recorded.get(&meta.key).copied(),
            _ => None,
        };
        match merge::decide(pairing, recorded, rules, rule)? {
            merge::Decision::Copy(item) => plan.copy.push(*item),
            merge::Decision::Unchanged => plan.unchanged += 1,
            merge::Decision::Delete(key) => plan.delete.push(key),
            merge::Decision::Kept => {}
        }
    }
    Ok(plan)
}

/// Objects hashed or asked at once by [`complete_checksums`].
const CHECKSUMS_AT_ONCE: usize = 8;

/// For `--checksum`: gives both ends of every same-size pair a checksum where it lacks one:
/// a local file the MD5 of its content, read from disk (as rclone does); a cloud object what a
/// HEAD reports (some servers list none).
pub async fn complete_checksums(
    src: &dyn ObjectStore,
    items: &mut [CopyItem],
    dst: &dyn ObjectStore,
    destination: &mut [ObjectMeta],
) -> Result<(), StoreError> {
    // Every pair --checksum must compare.
    let pairs = same_size_pairs(items, destination);
    let src_keys: Vec<(usize, String)> = pairs
        .iter()
        .filter(|(n, _)| items[*n].md5.is_none() && items[*n].crc32c.is_none())
        .map(|(n, _)| (*n, items[*n].src_key.clone()))
        .collect();
    for (n, (md5, crc32c)) in checksums_of(src, src_keys).await? {
        items[n].md5 = md5;
        items[n].crc32c = crc32c;
    }
    let dst_keys: Vec<(usize, String)> = pairs
        .iter()
        .filter(|(_, d)| destination[*d].md5.is_none() && destination[*d].crc32c.is_none())
        .map(|(_, d)| (*d, destination[*d].key.clone()))
        .collect();
    for (d, (md5, crc32c)) in checksums_of(dst, dst_keys).await? {
        destination[d].md5 = md5;
        destination[d].crc32c = crc32c;
    }
    Ok(())
}

/// For the default comparison of a same-size pair without a checksum in common: the source
/// time `dst` was written from. A cloud object says it in its metadata (one properties read;
/// an object without it records nothing); a local file's mtime is that time. Where the
/// recorded time differs from the source's listed time, the source's own properties are read
/// too (into `item`): it may carry an older origin's time in its metadata, which is what a
/// copy records. An object whose properties cannot be read records nothing (a warning says
/// why): the comparison falls back for it rather than failing the sync.
pub async fn recorded_time(
    src_store: &dyn ObjectStore,
    item: &mut CopyItem,
    dst_store: &dyn ObjectStore,
    dst: &ObjectMeta,
) -> Option<SystemTime> {
    let recorded = if *dst_store.location() == StoreLocation::Local {
        dst.last_modified?
    } else {
        modified_time(dst_store, &dst.key).await?
    };
    if !item.last_modified.is_some_and(|l| same_time(recorded, l))
        && let Some(own) = modified_time(src_store, &item.src_key).await
    {
        item.properties.modified = Some(own);
    }
    Some(recorded)
}

/// The modification time `key` carries in its properties (`None`: it carries none, or its
/// properties could not be read, which is logged).
async fn modified_time(store: &dyn ObjectStore, key: &str) -> Option<SystemTime> {
    match store.properties(key).await {
        Ok(p) => p.modified,
        Err(e) => {
            tracing::warn!(%key, error = %e, "reading the object's properties failed; comparing it by its store's time");
            None
        }
    }
}

/// For `--checksum`: gives each end of a same-size pair a checksum where it lacks one (see
/// [`complete_checksums`]).
pub async fn pair_checksums(
    src_store: &dyn ObjectStore,
    item: &mut CopyItem,
    dst_store: &dyn ObjectStore,
    dst: &mut ObjectMeta,
) -> Result<(), StoreError> {
    if item.md5.is_none() && item.crc32c.is_none() {
        (item.md5, item.crc32c) = checksum_of(src_store, &item.src_key).await?;
    }
    if dst.md5.is_none() && dst.crc32c.is_none() {
        (dst.md5, dst.crc32c) = checksum_of(dst_store, &dst.key).await?;
    }
    Ok(())
}

/// Whether `item`, a directory marker a sync would copy, is already at the destination: a
/// local destination lists files, not directories, so a marker copied before is not in its
/// listing; one head finds it.
pub async fn marker_in_place(dst_store: &dyn ObjectStore, item: &CopyItem) -> bool {
    is_marker(item) && dst_store.head(&item.dst_key).await.is_ok()
}

type Checksums = (Option<[u8; 16]>, Option<u32>);

async fn checksums_of(
    store: &dyn ObjectStore,
    keys: Vec<(usize, String)>,
) -> Result<Vec<(usize, Checksums)>, StoreError> {
    futures::stream::iter(keys)
        .map(|(n, key)| async move { Ok((n, checksum_of(store, &key).await?)) })
        .buffer_unordered(CHECKSUMS_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A local file's MD5, read from disk (as rclone does); a cloud object's checksums as a HEAD
/// reports them (some servers list none).
async fn checksum_of(store: &dyn ObjectStore, key: &str) -> Result<Checksums, StoreError> {
    if *store.location() == StoreLocation::Local {
        Ok((Some(md5_of(store, key).await?), None))
    } else {
        let meta = store.head(key).await?;
        Ok((meta.md5, meta.crc32c))
    }
}

async fn md5_of(store: &dyn ObjectStore, key: &str) -> Result<[u8; 16], StoreError> {
    let size = store.head(key).await?.size;
    let mut stream = store.get_range(key, 0..size, None).await?;
    let mut hasher = md5::Md5::new();
    while let Some(piece) = stream.next().await {
        hasher.update(&piece?);
    }
    Ok(hasher.finalize().into())
}

/// What a sync's deletions did.
#[derive(Debug, Default)]
pub struct Deletions {
    pub deleted: Vec<String>,
    /// (key, why) of deletions the store refused.
    pub failed: Vec<(String, String)>,
    /// Nothing was deleted because some copy did not happen.
    pub held_back: bool,
}

/// Deletes `keys` (a [`SyncPlan`]'s `delete`) from `dst`, 16 at a time, but only when
/// `copies_complete`: a sync whose copies did not all happen never leaves the destination
/// with less than it had.
pub async fn delete_extraneous(
    dst: &dyn ObjectStore,
    keys: &[String],
    copies_complete: bool,
) -> Deletions {
    let mut out = Deletions {
        held_back: !copies_complete && !keys.is_empty(),
        ..Deletions::default()
    };
    if !copies_complete {
        return out;
    }
    let results: Vec<(String, Result<(), StoreError>)> = futures::stream::iter(keys)
        .map(|k| async move { (k.clone(), dst.delete(k).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    for (k, r) in results {
        match r {
            Ok(()) => out.deleted.push(k),
            Err(e) => out.failed.push((k, e.to_string())),
        }
    }
    out.deleted.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::filter::{FilterRule, KeyFilter};
    use crate::listing::tests::src;

    fn dst(key: &str, size: u64, md5: Option<u8>, mtime: u64) -> ObjectMeta {
        ObjectMeta {
            key: format!("d/{key}"),
            size,
            last_modified: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime)),
            etag: None,
            md5: md5.map(|b| [b; 16]),
            crc32c: None,
        }
    }

    fn copied(plan: &SyncPlan) -> Vec<&str> {
        plan.copy.iter().map(|i| i.dst_key.as_str()).collect()
    }

    #[test]
    fn sync_copies_what_is_missing_or_different_and_deletes_only_extraneous_filtered_keys() {
        let items = vec![
            src("same-md5", 5, Some(1), 100),
            src("other-md5", 5, Some(1), 100),
            src("other-size", 5, None, 100),
            src("newer-dst", 5, None, 100),
            src("older-dst", 5, None, 100),
            src("missing", 5, None, 100),
        ];
        let destination = vec![
            dst("same-md5", 5, Some(1), 50),
            dst("other-md5", 5, Some(2), 500),
            dst("other-size", 6, None, 500),
            dst("newer-dst", 5, None, 200),
            dst("older-dst", 5, None, 50),
            dst("extra", 1, None, 1),
            dst("keep.tmp", 1, None, 1),
        ];
        let filter = ObjectFilter::keys(KeyFilter::new(&[FilterRule::Exclude("*.tmp".into())]));
        let rules = SyncRules::default();
        let plan = plan_sync(
            items,
            &destination,
            &RecordedTimes::new(),
            "d",
            &filter,
            &rules,
            true,
        )
        .unwrap();
        assert_eq!(
            copied(&plan),
            // In destination-key order, as the merge decides them.
            vec!["d/missing", "d/older-dst", "d/other-md5", "d/other-size"]
        );
        assert_eq!(plan.unchanged, 2);
        assert_eq!(plan.delete, vec!["d/extra".to_string()]);
        let plan = plan_sync(
            Vec::new(),
            &destination,
            &RecordedTimes::new(),
            "d",
            &filter,
            &rules,
            false,
        )
        .unwrap();
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn each_comparison_decides_as_documented() {
        let items = || {
            vec![
                src("same-size-older-dst", 5, None, 100),
                src("other-size-newer-dst", 5, None, 100),
                src("same-md5", 5, Some(1), 100),
                src("other-md5", 5, Some(1), 100),
            ]
        };
        let destination = vec![
            dst("same-size-older-dst", 5, None, 50),
            dst("other-size-newer-dst", 7, None, 500),
            dst("same-md5", 5, Some(1), 50),
            dst("other-md5", 5, Some(2), 500),
        ];
        let plan = |rules: SyncRules, items: Vec<CopyItem>| {
            plan_sync(
                items,
                &destination,
                &RecordedTimes::new(),
                "d",
                &ObjectFilter::default(),
                &rules,
                false,
            )
        };
        let size_only = SyncRules {
            compare: Compare::SizeOnly,
            ..SyncRules::default()
        };
        assert_eq!(
            copied(&plan(size_only, items()).unwrap()),
            vec!["d/other-size-newer-dst"]
        );
        let update = SyncRules {
            update: true,
            ..SyncRules::default()
        };
        // The newer destination stays though its size differs; the older one is replaced.
        assert_eq!(
            copied(&plan(update, items()).unwrap()),
            vec!["d/same-size-older-dst"]
        );
        let no_clobber = SyncRules {
            no_clobber: true,
            ..SyncRules::default()
        };
        assert!(copied(&plan(no_clobber, items()).unwrap()).is_empty());
        let checksum = SyncRules {
            compare: Compare::Checksum,
            ..SyncRules::default()
        };
        // No common checksum for a same-size pair: an error naming it, not a guess.
        let e = plan(checksum, items()).unwrap_err();
        assert!(e.to_string().contains("s/same-size-older-dst"), "{e}");
        let with_hashes: Vec<CopyItem> = items().into_iter().skip(1).collect();
        assert_eq!(
            copied(&plan(checksum, with_hashes).unwrap()),
            vec!["d/other-md5", "d/other-size-newer-dst"]
        );
    }

    #[test]
    fn recorded_source_times_decide_what_checksums_cannot() {
        let t = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let items = vec![
            src("recorded-same", 5, None, 100),
            // The destination was written from a version the source no longer has, later
            // than the source's current time: only the recorded time tells.
            src("recorded-other", 5, None, 100),
            src("not-recorded", 5, None, 100),
            CopyItem {
                properties: skyx_store::Properties {
                    modified: Some(t(42)),
                    ..Default::default()
                },
                ..src("own-time", 5, None, 100)
            },
        ];
        let destination = vec![
            dst("recorded-same", 5, None, 900),
            dst("recorded-other", 5, None, 900),
            dst("not-recorded", 5, None, 900),
            dst("own-time", 5, None, 900),
        ];
        let recorded: RecordedTimes = [
            ("d/recorded-same", 100),
            ("d/recorded-other", 90),
            ("d/own-time", 42),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_string(), t(s)))
        .collect();
        let plan = plan_sync(
            items,
            &destination,
            &recorded,
            "d",
            &ObjectFilter::default(),
            &SyncRules::default(),
            false,
        )
        .unwrap();
        assert_eq!(copied(&plan), vec!["d/recorded-other"]);
        assert_eq!(plan.unchanged, 3);
    }

    #[tokio::test]
    async fn local_ends_are_hashed_for_checksum_comparisons() {
        let dir = std::env::temp_dir().join(format!("skyx-sync-md5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = |name: &str| {
            format!("{}/{name}", dir.display())
                .trim_start_matches('/')
                .to_string()
        };
        for (name, body) in [
            ("src-a", &b"hello"[..]),
            ("dst-a", b"hello"),
            ("src-b", b"hi"),
        ] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let item = |name: &str, size| CopyItem {
            src_key: key(&format!("src-{name}")),
            dst_key: key(&format!("dst-{name}")),
            ..src(name, size, None, 1)
        };
        // `a` has a same-size counterpart, `b` none at the destination.
        let mut items = vec![item("a", 5), item("b", 2)];
        let mut destination = vec![ObjectMeta {
            key: key("dst-a"),
            ..dst("a", 5, None, 1)
        }];
        let store = skyx_store::local::LocalStore::new(skyx_store::RetryPolicy::default());
        complete_checksums(&store, &mut items, &store, &mut destination)
            .await
            .unwrap();
        let hello: [u8; 16] = hex::decode("5d41402abc4b2a76b9719d911017c592")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(items[0].md5, Some(hello));
        assert_eq!(destination[0].md5, Some(hello));
        assert_eq!(items[1].md5, None, "no counterpart: not read");
        let rules = SyncRules {
            compare: Compare::Checksum,
            ..SyncRules::default()
        };
        assert!(is_in_place(&items[0], &destination[0], None, &rules).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_sync_deletes_only_after_every_copy_happened() {
        let dir = std::env::temp_dir().join(format!("skyx-sync-delete-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("extra"), b"x").unwrap();
        let store = skyx_store::local::LocalStore::new(skyx_store::RetryPolicy::default());
        let keys = vec![
            format!("{}/extra", dir.display())
                .trim_start_matches('/')
                .to_string(),
        ];
        let held = delete_extraneous(&store, &keys, false).await;
        assert!(held.held_back && held.deleted.is_empty());
        assert!(dir.join("extra").exists());
        let done = delete_extraneous(&store, &keys, true).await;
        assert_eq!(done.deleted, keys);
        assert!(!dir.join("extra").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
