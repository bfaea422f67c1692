//! Taking objects into the run as the listing streams in, and letting them go once finished.
//!
//! The window: an object is taken in (cut into chunks, its journaled progress looked up, handed
//! to the tracker) only while fewer than `window_objects` are held and the chunks waiting for a
//! route are fewer than about two rounds of every route's window. Objects leave once completed
//! and verified, or failed; the sinks are told to forget them with their next registration. So
//! the gateway holds a bounded number of objects whatever the size of the copy, and so does
//! every agent (a source gets objects with their chunks; a sink holds those it was told of).
//!
//! An object's journaled progress is taken over only when its record matches (same version,
//! size, destination key, chunk size and properties): an object completed by an earlier run is
//! skipped under `--resume` (copied again without it: `cp` always copies), an open upload's
//! landed parts are kept either way, and a record of another version has its upload aborted and
//! is forgotten. Uploads earlier runs left for objects the listing no longer has are aborted
//! once the listing has ended.

use super::*;
use crate::journal::{ObjectProgress, ObjectRecord};

/// Items the listing task may run ahead of the run by.
const FEED_BUFFER: usize = 1024;

/// The source listing, forwarded by a task through a bounded queue so that listing pages are
/// fetched while the run works, and never more than [`FEED_BUFFER`] items ahead of it.
pub(super) struct Feed {
    /// Items, then `None` once the listing has ended: a queue that closes without it means
    /// the listing task died, never that the listing is complete.
    rx: mpsc::Receiver<Option<Result<CopyItem, StoreError>>>,
    task: tokio::task::JoinHandle<()>,
    ended: bool,
    /// Items received so far.
    listed: u64,
    /// How far the listing has gone (at most the queue's length ahead of what was received).
    listed_volume: Arc<super::ListedVolume>,
}

impl Feed {
    pub(super) fn start(mut items: CopyItems) -> Feed {
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        let listed_volume = Arc::new(super::ListedVolume::default());
        let counts = listed_volume.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = items.next().await {
                let failed = item.is_err();
                if let Ok(item) = &item {
                    counts.add(item.size);
                }
                if tx.send(Some(item)).await.is_err() || failed {
                    return;
                }
            }
            counts.end();
            let _ = tx.send(None).await;
        });
        Feed {
            rx,
            task,
            ended: false,
            listed: 0,
            listed_volume,
        }
    }

    /// How far the listing has gone (a queue's length at most ahead of what was received).
    pub(super) fn listed(&self) -> &super::ListedVolume {
        &self.listed_volume
    }

    /// The listing has ended (every item was received).
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// The next item if one is waiting; `None` when none is (yet) or the listing ended.
    pub(super) fn try_next(&mut self) -> Result<Option<CopyItem>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        match self.rx.try_recv() {
            Ok(item) => self.take(Some(item)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => self.take(None),
        }
    }

    /// The next item, waiting for it; `None` when the listing ended.
    pub(super) async fn next(&mut self) -> Result<Option<CopyItem>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        let item = self.rx.recv().await;
        self.take(item)
    }

    fn take(
        &mut self,
        item: Option<Option<Result<CopyItem, StoreError>>>,
    ) -> Result<Option<CopyItem>, StoreError> {
        match item {
            Some(None) => {
                self.ended = true;
                Ok(None)
            }
            Some(Some(Ok(item))) => {
                self.listed += 1;
                Ok(Some(item))
            }
            Some(Some(Err(e))) => Err(e),
            None => Err(crate::listing::listing_stopped()),
        }
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

/// An object taken into the run: what it takes to dispatch, complete and verify it.
pub(super) struct ActiveObject {
    /// As listed (its `dst_key` is destination 0's).
    pub(super) item: CopyItem,
    /// Its chunks' ids, contiguous.
    pub(super) chunks: std::ops::Range<u64>,
    /// Where it goes at each destination, destination `i` at `i`.
    pub(super) at: Vec<AtDestination>,
    /// Chunk (index within the object) → (raw CRC32C, raw length), as the sinks checked them
    /// (what the source read: the same at every destination).
    pub(super) crcs: Vec<Option<(u32, u64)>>,
    /// What the journal says of it but its upload (`journal_record` adds destination 0's);
    /// written with its first progress.
    pub(super) record: ObjectRecord,
    pub(super) recorded: bool,
    /// Sinks (agent indices) told of it.
    pub(super) at_sinks: Vec<usize>,
}

/// An object at one destination.
pub(super) struct AtDestination {
    pub(super) key: String,
    /// The multipart upload opened for it there.
    pub(super) upload: Option<String>,
    /// Its upload could not be opened: the object fails, its chunks go nowhere.
    pub(super) refused_upload: bool,
    /// Part number → etag, from the sink.
    pub(super) receipts: BTreeMap<u32, String>,
    /// How the sink checked it, for an object written whole.
    pub(super) sink_verified: Option<Verification>,
}

impl AtDestination {
    fn new(key: String) -> AtDestination {
        AtDestination {
            key,
            upload: None,
            refused_upload: false,
            receipts: BTreeMap::new(),
            sink_verified: None,
        }
    }
}

impl ActiveObject {
    /// Its journal record: `record` with destination 0's upload (the journal follows
    /// destination 0; a broadcast keeps none).
    pub(super) fn journal_record(&self) -> ObjectRecord {
        ObjectRecord {
            upload: self.at[0].upload.clone(),
            ..self.record.clone()
        }
    }

    /// The item as destination `d` writes it.
    pub(super) fn item_at(&self, d: usize) -> CopyItem {
        CopyItem {
            dst_key: self.at[d].key.clone(),
            ..self.item.clone()
        }
    }

    pub(super) fn source_object(&self, object: u32) -> SourceObject {
        SourceObject {
            object,
            src_key: self.item.src_key.clone(),
            size: self.item.size,
            version: self.item.etag.clone(),
        }
    }

    /// What destination `d`'s sinks are told of it.
    pub(super) fn sink_object(&self, object: u32, d: usize) -> SinkObject {
        SinkObject {
            object,
            dst_key: self.at[d].key.clone(),
            size: self.item.size,
            chunk_size: self.record.chunk_size,
            properties: self.item.properties.clone(),
            upload: self.at[d].upload.clone(),
        }
    }
}

impl Run<'_> {
    /// Whether the window has room for another object, with `pending` objects of `chunks`
    /// chunks about to be taken in.
    pub(super) fn wants_items(&self, tracker: &Tracker, pending: usize, chunks: usize) -> bool {
        let rounds: usize = self
            .routes
            .iter()
            .filter(|r| r.taking())
            .map(|r| r.window)
            .sum();
        !self.feed.ended()
            && self.active.len() + pending < self.job.options.window_objects.max(1)
            && tracker.queued() + chunks < (2 * rounds).max(256)
    }

    /// Takes in the items the listing has ready, while the window has room.
    pub(super) async fn admit_ready(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        let mut items = Vec::new();
        let mut chunks = 0;
        while self.wants_items(tracker, items.len(), chunks) {
            match self.feed.try_next() {
                Ok(Some(item)) => {
                    let chunk = crate::core::chunker::chunk_size(item.size, &self.policy);
                    chunks += item.size.div_ceil(chunk.max(1)).max(1) as usize;
                    items.push(item);
                }
                Ok(None) => break,
                Err(e) => return Err(self.listing_failed(e)),
            }
            if items.len() >= 256 {
                self.admit(std::mem::take(&mut items), tracker).await?;
                chunks = 0;
            }
        }
        self.admit(items, tracker).await
    }

    /// Takes in `first` (an item the loop waited for) and whatever else is ready.
    pub(super) async fn admit_arrived(
        &mut self,
        first: Result<Option<CopyItem>, StoreError>,
        tracker: &mut Tracker,
    ) -> Result<(), CopyError> {
        match first {
            Ok(Some(item)) => self.admit(vec![item], tracker).await?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.listing_failed(e)),
        }
        self.admit_ready(tracker).await
    }

    /// Waits for the listing until there is something to send, or it ends (or the copy is
    /// cancelled: a listing of objects all done already can take a while).
    pub(super) async fn admit_until_work(
        &mut self,
        tracker: &mut Tracker,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), CopyError> {
        while tracker.is_done() && !self.feed.ended() {
            tokio::select! {
                next = self.feed.next() => self.admit_arrived(next, tracker).await?,
                _ = cancel.changed() => {
                    if *cancel.borrow() {
                        return Err(CopyError::Interrupted { resume: self.resume_hint() });
                    }
                }
            }
        }
        Ok(())
    }

    fn listing_failed(&self, source: StoreError) -> CopyError {
        CopyError::Listing {
            listed: self.feed.listed,
            source: Box::new(source),
            resume: self.resume_hint(),
        }
    }

    /// Takes `items` into the run, with what the journal says of each.
    async fn admit(
        &mut self,
        items: Vec<CopyItem>,
        tracker: &mut Tracker,
    ) -> Result<(), CopyError> {
        if items.is_empty() {
            return Ok(());
        }
        let progress: Vec<Option<ObjectProgress>> = match &self.journal {
            Some(j) => j.lookup(&items.iter().map(|i| i.src_key.as_str()).collect::<Vec<_>>())?,
            None => vec![None; items.len()],
        };
        let mut batch = JournalBatch::default();
        let mut aborts = Vec::new();
        self.sweep_staging(&items).await;
        for (item, progress) in items.into_iter().zip(progress) {
            self.admit_one(item, progress, tracker, &mut batch, &mut aborts)?;
        }
        // Uploads of versions the source no longer has: aborted (kept to retry if that fails)
        // before the journal forgets them.
        // (The journal follows destination 0.)
        for (key, id) in aborts {
            self.abort_upload(0, &key, &id).await?;
        }
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        Ok(())
    }

    fn admit_one(
        &mut self,
        item: CopyItem,
        progress: Option<ObjectProgress>,
        tracker: &mut Tracker,
        batch: &mut JournalBatch,
        aborts: &mut Vec<(String, String)>,
    ) -> Result<(), CopyError> {
        let chunk_size = match crate::core::chunker::checked_chunk_size(
            &item.src_key,
            item.size,
            &self.policy,
        ) {
            Ok(c) => c,
            Err(e) => {
                self.failed.push(FailedObject {
                    key: item.src_key.clone(),
                    why: e.to_string(),
                });
                self.failed_unadmitted += 1;
                return Ok(());
            }
        };
        let mut at = vec![AtDestination::new(item.dst_key.clone())];
        if let Some(b) = &self.job.broadcast {
            for (i, more) in b.more.iter().enumerate() {
                match crate::listing::rebase_key(&item, &b.first, &more.url, b.source_is_object) {
                    Ok(key) => at.push(AtDestination::new(key)),
                    Err(why) => {
                        self.failed.push(FailedObject {
                            key: item.src_key.clone(),
                            why: format!("not written at {}: {why}", more.url),
                        });
                        self.failed_unadmitted += 1;
                        return Ok(());
                    }
                }
                debug_assert_eq!(at.len(), i + 2);
            }
        }
        let record = ObjectRecord {
            dst_key: item.dst_key.clone(),
            size: item.size,
            version: item.version.clone(),
            chunk_size,
            properties: digest([serde_json::to_vec(&item.properties).expect("serializable")]),
            upload: None,
            complete: false,
        };
        self.earlier_uploads.remove(&item.src_key);
        let object = self.next_object;
        let first = ChunkId(self.next_chunk);
        let specs = crate::core::chunker::object_chunks(object, first, item.size, chunk_size);
        let mut active = ActiveObject {
            chunks: first.0..first.0 + specs.len() as u64,
            at,
            crcs: vec![None; specs.len()],
            record,
            recorded: false,
            at_sinks: Vec::new(),
            item,
        };
        let mut landed = Vec::new();
        let kept = match &progress {
            Some((earlier, parts)) if earlier.same_object(&active.record) => {
                if earlier.complete && self.job.options.resume {
                    // Counted as done, its chunks as not sent again.
                    self.resumed.0 += 1;
                    self.resumed.1 += active.item.size;
                    self.resumed.2 += specs.len() as u64;
                    self.chunks_skipped += specs.len() as u64;
                    return Ok(());
                }
                // (Complete, without `--resume`: `cp` copies it again.)
                earlier.complete || kept_parts(earlier, parts, &specs).is_some()
            }
            Some(_) => false,
            None => true,
        };
        match progress {
            Some((earlier, parts)) if kept && !earlier.complete => {
                let parts = kept_parts(&earlier, &parts, &specs).expect("checked above");
                active.at[0].upload = earlier.upload;
                active.recorded = true;
                for (i, part) in parts {
                    active.crcs[i] = Some((part.raw_crc32c, part.raw_len));
                    if let Some(etag) = &part.etag {
                        active.at[0].receipts.insert(specs[i].part, etag.clone());
                    }
                    landed.push(specs[i].id);
                }
            }
            Some((earlier, _)) if !kept => {
                if let (Some(id), false) = (&earlier.upload, earlier.complete) {
                    aborts.push((earlier.dst_key.clone(), id.clone()));
                }
                batch.forget.push(active.item.src_key.clone());
            }
            _ => {}
        }
        self.next_object = object.checked_add(1).ok_or(ChunkError::TooManyObjects)?;
        self.next_chunk += specs.len() as u64;
        self.chunks_skipped += landed.len() as u64;
        self.active.insert(object, active);
        self.held_peak = self.held_peak.max(self.active.len() as u64);
        tracker.admit(object, &specs, &landed);
        Ok(())
    }

    /// Lets go of a finished object: the tracker forgets it, and so will the sinks told of it.
    pub(super) fn release(&mut self, object: u32, tracker: &mut Tracker) {
        tracker.release(object);
        if let Some(a) = self.active.remove(&object) {
            for s in a.at_sinks {
                if let Some(rt) = self.agents.get_mut(s)
                    && rt.alive
                {
                    rt.sink_knows.remove(&object);
                    rt.sink_forget.push(object);
                }
            }
            for chunk in a.chunks {
                self.troubles.remove(&chunk);
            }
        }
    }

    /// Once the whole listing went through: uploads earlier runs left for objects it no longer
    /// has are aborted and forgotten.
    pub(super) async fn abort_unlisted_uploads(&mut self) -> Result<(), CopyError> {
        if !self.feed.ended() || self.earlier_uploads.is_empty() {
            return Ok(());
        }
        let mut batch = JournalBatch::default();
        for (src_key, (id, dst_key)) in std::mem::take(&mut self.earlier_uploads) {
            tracing::info!(key = %src_key, "an upload an earlier run left for an object no longer listed is aborted");
            self.abort_upload(0, &dst_key, &id).await?;
            batch.forget.push(src_key);
        }
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        Ok(())
    }
}

/// The journaled parts of `earlier` that can be kept, by chunk index: each must be a chunk of
/// the same length at the same place; an object in parts needs its upload. `None` when they
/// cannot be (the object starts over).
fn kept_parts<'p>(
    earlier: &ObjectRecord,
    parts: &'p BTreeMap<u32, crate::journal::PartRecord>,
    specs: &[ChunkSpec],
) -> Option<Vec<(usize, &'p crate::journal::PartRecord)>> {
    let whole = specs.len() == 1 && specs[0].whole_object;
    if !whole && earlier.upload.is_none() {
        return None;
    }
    parts
        .iter()
        .map(|(&n, part)| {
            let i = (n as usize).checked_sub(1)?;
            let spec = specs.get(i)?;
            (spec.len == part.raw_len && part.etag.is_some() != whole).then_some((i, part))
        })
        .collect()
}
