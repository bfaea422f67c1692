//! Listing a large source while the copy runs.
//!
//! `cp -r` of a prefix with more objects than a quick look takes starts copying before the
//! listing ends: the first objects (up to a count, or for up to a time) are listed, their
//! bytes plan the route (a volume *estimate*, which the plan says it is), and the rest of the
//! listing streams into the copy behind them. A listing that ends within the look is a plain
//! [`Listing`], sorted, exactly as [`list_copy`] gives it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use skyx_store::{ObjectStore, ObjectUrl, StoreError};
use tokio::sync::mpsc;

use crate::core::filter::ObjectFilter;
use crate::listing::{
    CopyItem, CopyItems, ListError, Listed, Listing, SkippedObject, classify, dir_prefix,
    list_copy, listing_stopped, unreadable,
};

/// How far a listing may run ahead of the copy that takes it.
const LISTING_BUFFER: usize = 1024;

/// How long and how far to look at a listing before deciding it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub objects: usize,
    pub time: Duration,
}

impl Default for Look {
    fn default() -> Self {
        Look {
            objects: 10_000,
            time: Duration::from_secs(2),
        }
    }
}

/// What a streaming listing left out, complete once its items have ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub skipped: Vec<SkippedObject>,
    pub filtered_out: usize,
}

/// What `cp -r` copies.
pub enum CopySources {
    /// The whole listing, which ended within the look.
    Listed(Listing),
    /// A listing still under way.
    Streaming {
        /// How many objects, and bytes, the look saw (what the route is planned on).
        looked: (usize, u64),
        /// Every object to copy, those of the look first, as the listing goes on.
        items: CopyItems,
        /// What it left out so far; complete once `items` ended.
        tally: Arc<Mutex<Tally>>,
    },
}

impl std::fmt::Debug for CopySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopySources::Listed(l) => f.debug_tuple("Listed").field(l).finish(),
            CopySources::Streaming { looked, .. } => f
                .debug_struct("Streaming")
                .field("looked", looked)
                .finish_non_exhaustive(),
        }
    }
}

/// Lists what `cp -r src dst` copies, streaming past `look`.
pub async fn list_copy_streaming(
    src_store: Arc<dyn ObjectStore>,
    src: &ObjectUrl,
    dst: &ObjectUrl,
    filter: &ObjectFilter,
    look: Look,
) -> Result<CopySources, ListError> {
    let prefix = dir_prefix(src.key.trim_end_matches('/'));
    // Entries, then `None` at the listing's end: a queue that closes without it means the
    // listing task died, which is an error, never a complete listing.
    let (tx, mut rx) = mpsc::channel::<Option<Result<Listed, StoreError>>>(LISTING_BUFFER);
    {
        let (store, prefix, dst, filter) = (
            src_store.clone(),
            prefix.clone(),
            dst.clone(),
            filter.clone(),
        );
        tokio::spawn(async move {
            let mut listing = store.list(&prefix);
            loop {
                let entry = match listing.try_next().await {
                    Ok(Some(meta)) => Ok(classify(meta, &prefix, &dst, &filter)),
                    Ok(None) => {
                        let _ = tx.send(None).await;
                        return;
                    }
                    Err(e) => unreadable(e),
                };
                let last = entry.is_err();
                // A closed channel: the copy stopped taking the listing.
                if tx.send(Some(entry)).await.is_err() || last {
                    return;
                }
            }
        });
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut looked = Vec::new();
    let until = Instant::now() + look.time;
    while looked.len() < look.objects {
        let next = match tokio::time::timeout_at(until.into(), rx.recv()).await {
            Ok(next) => next,
            Err(_) => break,
        };
        match next {
            Some(None) => {
                return ended(src_store.as_ref(), src, dst, filter, looked, &tally).await;
            }
            Some(Some(entry)) => {
                if let Some(item) = take(entry, &tally)? {
                    looked.push(item);
                }
            }
            None => return Err(listing_stopped().into()),
        }
    }
    let rest = futures::stream::unfold((rx, tally.clone()), |(mut rx, tally)| async move {
        loop {
            let entry = match rx.recv().await {
                Some(Some(entry)) => entry,
                Some(None) => return None,
                None => Err(listing_stopped()),
            };
            match take(entry, &tally) {
                Ok(Some(item)) => return Some((Ok(item), (rx, tally))),
                Ok(None) => {}
                Err(e) => return Some((Err(e), (rx, tally))),
            }
        }
    });
    let seen = (looked.len(), looked.iter().map(|i| i.size).sum());
    let items = futures::stream::iter(looked.into_iter().map(Ok))
        .chain(rest)
        .boxed();
    Ok(CopySources::Streaming {
        looked: seen,
        items,
        tally,
    })
}

/// The object `entry` copies, if any; what it leaves out goes to the tally.
fn take(
    entry: Result<Listed, StoreError>,
    tally: &Mutex<Tally>,
) -> Result<Option<CopyItem>, StoreError> {
    match entry? {
        Listed::Copy(item) => return Ok(Some(*item)),
        Listed::Skipped(s) => tally.lock().expect("tally").skipped.push(s),
        Listed::FilteredOut => tally.lock().expect("tally").filtered_out += 1,
        Listed::Prefix => {}
    }
    Ok(None)
}

/// The listing ended within the look: a [`Listing`] as [`list_copy`] makes it (which, for a
/// listing of nothing, also says whether the source is one object or nothing at all).
async fn ended(
    src_store: &dyn ObjectStore,
    src: &ObjectUrl,
    dst: &ObjectUrl,
    filter: &ObjectFilter,
    mut items: Vec<CopyItem>,
    tally: &Mutex<Tally>,
) -> Result<CopySources, ListError> {
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    if items.is_empty() && tally.skipped.is_empty() && tally.filtered_out == 0 {
        return Ok(CopySources::Listed(
            list_copy(src_store, src, dst, true, filter).await?,
        ));
    }
    items.sort_by(|a, b| a.src_key.cmp(&b.src_key));
    Ok(CopySources::Listed(Listing {
        items,
        skipped: tally.skipped,
        filtered_out: tally.filtered_out,
        source_is_object: false,
    }))
}
