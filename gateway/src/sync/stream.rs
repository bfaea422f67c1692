//! A sync decided as its listings stream in.
//!
//! The source listing (already filtered, with destination keys) and the destination listing
//! are each sorted by destination key ([`sort_spilling`]: in memory up to a run, on disk
//! beyond), merged ([`merge::next_pairing`], each side checked to be in order), completed
//! where a pair needs more than its listings say (checksums for `--checksum`, the recorded
//! source time for the default comparison, a head for a directory marker), and decided
//! ([`merge::decide`]). What comes out is a stream of decisions, in key order; [`copies`]
//! turns it into the stream of objects a copy takes, counting the rest in a [`SyncTally`].
//! The memory held is two sort runs and the pairs being completed, whatever the object count.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use skyx_store::{ErrorKind, ObjectMeta, ObjectStore, StoreError};

use super::merge::{self, Decision, DeleteRule, InOrder, Pairing, Side};
use super::{Compare, SyncError, SyncRules, marker_in_place, pair_checksums, recorded_time};
use crate::core::filter::ObjectFilter;
use crate::listing::{CopyItem, CopyItems, dir_prefix, is_marker, owned_listing};
use crate::spill::{DEFAULT_RUN, KeyLog, sort_spilling};

/// Pairs completed at once (each may read properties, a checksum or a head).
const PAIRS_AT_ONCE: usize = 32;

/// The destination's listing, as it streams in.
pub type DestinationListing = BoxStream<'static, Result<ObjectMeta, StoreError>>;

/// A sync's decisions, in destination-key order.
pub type Decisions = BoxStream<'static, Result<Decision, StoreError>>;

/// How a streamed sync decides.
#[derive(Debug, Clone)]
pub struct StreamedSync {
    pub rules: SyncRules,
    /// Delete destination objects the source does not have (those the filter takes).
    pub delete: bool,
    /// The source prefix, as given: where a destination object's source would be.
    pub src_prefix: String,
    /// The destination prefix, as given (its key; the sync covers it as a directory).
    pub dst_prefix: String,
    pub filter: ObjectFilter,
    /// Where listings too long for memory are sorted.
    pub spill_dir: PathBuf,
    /// Listing entries held in memory per sort run.
    pub run: usize,
}

impl StreamedSync {
    pub fn new(
        rules: SyncRules,
        dst_prefix: &str,
        filter: ObjectFilter,
        spill_dir: PathBuf,
    ) -> Self {
        StreamedSync {
            rules,
            delete: false,
            src_prefix: String::new(),
            dst_prefix: dst_prefix.to_string(),
            filter,
            spill_dir,
            run: DEFAULT_RUN,
        }
    }
}

/// The destination's listing under `dst_prefix` as a directory; a local directory that does
/// not exist yet lists nothing.
pub fn list_destination_streaming(
    dst: Arc<dyn ObjectStore>,
    dst_prefix: &str,
) -> DestinationListing {
    owned_listing(dst, dir_prefix(dst_prefix))
        .take_while(|r| {
            let missing = matches!(r, Err(e) if e.kind == ErrorKind::NotFound);
            futures::future::ready(!missing)
        })
        .boxed()
}

/// A merge error as the listing streams carry it.
fn sync_error(e: SyncError) -> StoreError {
    StoreError::new(
        ErrorKind::InvalidInput,
        "sync",
        "compare",
        "",
        e.to_string(),
    )
}

/// The decisions of a sync of `items` (from `src_store`) onto `destination` (of
/// `dst_store`), as both stream in.
pub fn sync_decisions(
    src_store: Arc<dyn ObjectStore>,
    dst_store: Arc<dyn ObjectStore>,
    items: CopyItems,
    destination: DestinationListing,
    how: StreamedSync,
) -> Decisions {
    let src = sort_spilling(
        items,
        |i: &CopyItem| &i.dst_key,
        how.run,
        how.spill_dir.clone(),
    );
    let dst = sort_spilling(
        destination,
        |m: &ObjectMeta| &m.key,
        how.run,
        how.spill_dir.clone(),
    );
    // The deletion rule's prefix, made once rather than per pair.
    let prefix: Arc<str> = dir_prefix(&how.dst_prefix).into();
    let how = Arc::new(how);
    pairings(src, dst)
        .map(move |pairing| {
            let prefix = prefix.clone();
            let (src_store, dst_store, how) = (src_store.clone(), dst_store.clone(), how.clone());
            async move {
                let stores = (src_store.as_ref(), dst_store.as_ref());
                resolve(pairing?, stores, &how, &prefix).await
            }
        })
        .buffered(PAIRS_AT_ONCE)
        .boxed()
}

/// The merge of two sorted listings, each checked to be strictly ascending.
fn pairings(
    src: CopyItems,
    dst: DestinationListing,
) -> BoxStream<'static, Result<Pairing, StoreError>> {
    // Fused: a side that ended is asked again at every step, and answers nothing.
    struct Merge {
        src: futures::stream::Fuse<CopyItems>,
        dst: futures::stream::Fuse<DestinationListing>,
        src_head: Option<CopyItem>,
        dst_head: Option<ObjectMeta>,
        src_order: InOrder,
        dst_order: InOrder,
    }
    impl Merge {
        async fn refill(&mut self) -> Result<(), StoreError> {
            if self.src_head.is_none()
                && let Some(item) = self.src.try_next().await?
            {
                self.src_order.check(&item.dst_key).map_err(sync_error)?;
                self.src_head = Some(item);
            }
            if self.dst_head.is_none()
                && let Some(meta) = self.dst.try_next().await?
            {
                self.dst_order.check(&meta.key).map_err(sync_error)?;
                self.dst_head = Some(meta);
            }
            Ok(())
        }
    }
    let merge = Merge {
        src: src.fuse(),
        dst: dst.fuse(),
        src_head: None,
        dst_head: None,
        src_order: InOrder::new(Side::Source),
        dst_order: InOrder::new(Side::Destination),
    };
    futures::stream::unfold(Some(merge), |state| async move {
        let mut m = state?;
        if let Err(e) = m.refill().await {
            return Some((Err(e), None));
        }
        let pairing = merge::next_pairing(&mut m.src_head, &mut m.dst_head)?;
        Some((Ok(pairing), Some(m)))
    })
    .boxed()
}

/// Completes what `pairing` needs beyond its listings and decides it; `prefix` is the
/// destination prefix as a directory.
async fn resolve(
    pairing: Pairing,
    (src_store, dst_store): (&dyn ObjectStore, &dyn ObjectStore),
    how: &StreamedSync,
    prefix: &str,
) -> Result<Decision, StoreError> {
    let rules = &how.rules;
    let (pairing, recorded) = match pairing {
        Pairing::Both(mut item, mut meta) if item.size == meta.size => {
            if rules.compare == Compare::Checksum {
                pair_checksums(src_store, &mut item, dst_store, &mut meta).await?;
            }
            // Without --update or --no-clobber (which decide by the stores' own times, or not
            // at all), the time the destination recorded decides what checksums cannot.
            let by_time = rules.compare == Compare::Default
                && !rules.update
                && !rules.no_clobber
                && super::same_checksum(&item, &meta).is_none()
                && !is_marker(&item);
            let recorded = if by_time {
                recorded_time(src_store, &mut item, dst_store, &meta).await
            } else {
                None
            };
            (Pairing::Both(item, meta), recorded)
        }
        Pairing::Destination(meta) if how.delete && how.filter.judges_by_object() => {
            if source_still_has(src_store, how, prefix, &meta.key).await? {
                return Ok(Decision::Kept);
            }
            (Pairing::Destination(meta), None)
        }
        other => (other, None),
    };
    let rule = how.delete.then_some(DeleteRule {
        prefix,
        filter: &how.filter,
    });
    match merge::decide(pairing, recorded, rules, rule).map_err(sync_error)? {
        Decision::Copy(item) if marker_in_place(dst_store, &item).await => Ok(Decision::Unchanged),
        decision => Ok(decision),
    }
}

/// Whether the source still has the object destination key `dst_key` was copied from. A size
/// or age filter leaves out source objects by their own size and time, and a destination
/// object by its own, which may differ (a cloud copy's time is when it was written): the
/// filter alone could take a copy whose source it left out for deletion. A copy whose source
/// is still there is never deleted.
async fn source_still_has(
    src_store: &dyn ObjectStore,
    how: &StreamedSync,
    dst_prefix: &str,
    dst_key: &str,
) -> Result<bool, StoreError> {
    let Some(relative) = dst_key.strip_prefix(dst_prefix) else {
        return Ok(false);
    };
    let src_key = format!("{}{relative}", dir_prefix(&how.src_prefix));
    match src_store.head(&src_key).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a sync decided besides its copies; complete once the copies' stream has ended.
#[derive(Debug)]
pub struct SyncTally {
    pub unchanged: usize,
    /// Destination keys to delete, kept on disk.
    pub delete: KeyLog,
}

impl SyncTally {
    pub fn new(spill_dir: PathBuf) -> SyncTally {
        SyncTally {
            unchanged: 0,
            delete: KeyLog::new(spill_dir),
        }
    }

    /// Counts a decision that is not a copy; gives a copy back.
    pub fn take(&mut self, decision: Decision) -> Result<Option<CopyItem>, StoreError> {
        match decision {
            Decision::Copy(item) => return Ok(Some(*item)),
            Decision::Unchanged => self.unchanged += 1,
            Decision::Delete(key) => self.delete.push(&key)?,
            Decision::Kept => {}
        }
        Ok(None)
    }
}

/// The objects `decisions` copies, the rest counted in `tally`.
pub fn copies(decisions: Decisions, tally: Arc<Mutex<SyncTally>>) -> CopyItems {
    decisions
        .try_filter_map(move |d| {
            let taken = tally.lock().expect("sync tally").take(d);
            futures::future::ready(taken)
        })
        .boxed()
}
