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

use crate::copy::ListedVolume;
use crate::core::filter::ObjectFilter;
use crate::listing::{
    CopyItem, CopyItems, ListError, Listed, Listing, SkippedObject, classify, dir_prefix,
    list_copy, owned_listing, unreadable,
};

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

impl Look {
    /// Only as far as the first object (or the end): what a copy with nothing to plan on a
    /// volume waits for before it starts.
    pub fn first_object() -> Self {
        Look {
            objects: 1,
            ..Look::default()
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
    let mut listing = {
        let (prefix, dst, filter) = (prefix.clone(), dst.clone(), filter.clone());
        owned_listing(src_store.clone(), prefix.clone()).map(move |entry| match entry {
            Ok(meta) => Ok(classify(meta, &prefix, &dst, &filter)),
            Err(e) => unreadable(e),
        })
    }
    .boxed();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut looked = Vec::new();
    let until = Instant::now() + look.time;
    while looked.len() < look.objects {
        let next = match tokio::time::timeout_at(until.into(), listing.next()).await {
            Ok(next) => next,
            Err(_) => break,
        };
        match next {
            None => {
                return ended(src_store.as_ref(), src, dst, filter, looked, &tally).await;
            }
            Some(entry) => {
                if let Some(item) = take(entry, &tally)? {
                    looked.push(item);
                }
            }
        }
    }
    let rest = {
        let tally = tally.clone();
        listing.try_filter_map(move |entry| futures::future::ready(take(Ok(entry), &tally)))
    };
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

/// The first objects of a stream of copies, looked at to plan the route on.
pub struct Looked {
    /// What the look saw, in the stream's order.
    pub items: Vec<CopyItem>,
    /// Whether the stream ended within the look (`items` is then everything).
    pub ended: bool,
    /// Everything after `items` (nothing once `ended`).
    pub rest: CopyItems,
}

impl std::fmt::Debug for Looked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Looked")
            .field("items", &self.items.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Takes from `items` up to `look`'s objects, or for up to its time from the first one (a
/// sync decides nothing until both its listings are sorted: the route must not be planned on
/// nothing because that took longer than the look).
pub async fn look_at(mut items: CopyItems, look: Look) -> Result<Looked, StoreError> {
    let mut seen = Vec::new();
    // Set at the first object: before it, the look waits as long as it takes.
    let mut until: Option<Instant> = None;
    while seen.len() < look.objects {
        let next = match until {
            None => Ok(items.try_next().await),
            Some(at) => tokio::time::timeout_at(at.into(), items.try_next()).await,
        };
        match next {
            Err(_) => break,
            Ok(next) => match next? {
                Some(item) => {
                    seen.push(item);
                    until.get_or_insert_with(|| Instant::now() + look.time);
                }
                None => {
                    return Ok(Looked {
                        items: seen,
                        ended: true,
                        rest: futures::stream::empty().boxed(),
                    });
                }
            },
        }
    }
    Ok(Looked {
        items: seen,
        ended: false,
        rest: items,
    })
}

/// A listing of the source that only counts what the copy will move, running ahead of the
/// copy's own (which runs only a queue's length ahead of what the copy took in), so that the
/// route is planned again on the volume as it is found (`copy::refine`). One more listing of
/// the source (a request per 1,000 objects on the clouds) and no memory per object; stopped
/// when dropped.
#[derive(Debug)]
pub struct VolumeProbe {
    pub volume: Arc<ListedVolume>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VolumeProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts counting what `cp -r src dst` under `filter` moves. A listing that fails stops
/// counting (the volume stays a lower bound; the copy's own listing reports the failure).
pub fn probe_volume(
    src_store: Arc<dyn ObjectStore>,
    src: &ObjectUrl,
    dst: &ObjectUrl,
    filter: &ObjectFilter,
) -> VolumeProbe {
    let prefix = dir_prefix(src.key.trim_end_matches('/'));
    let (dst, filter) = (dst.clone(), filter.clone());
    let volume = Arc::new(ListedVolume::default());
    let counts = volume.clone();
    let task = tokio::spawn(async move {
        let mut listing = owned_listing(src_store, prefix.clone()).boxed();
        while let Some(entry) = listing.next().await {
            match entry {
                Ok(meta) => {
                    if let Listed::Copy(item) = classify(meta, &prefix, &dst, &filter) {
                        counts.add(item.size);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "counting the source's volume stopped");
                    return;
                }
            }
        }
        counts.end();
    });
    VolumeProbe { volume, task }
}
