//! Copies the provider runs itself (S3 CopyObject/UploadPartCopy, GCS rewrite, Azure Copy
//! Blob): no agents, and no byte passes through us. For each object: the copy pinned to the
//! version listed, with the object's properties (read and written, or carried by the service
//! itself where it can and nothing overrides them), verified by the service's answer where it
//! states the copy's checksum (one request per object), else at rest against the source's own
//! stored checksum. Many objects at once; one object's failure fails that object, not the
//! copy.

use skyx_store::{Copied, CopyProof, ErrorKind, ObjectMeta};

use super::*;
use crate::core::tracker::Progress;

/// A copy the provider runs.
#[derive(Debug, Clone)]
pub struct ServerSideJob {
    /// Objects copied at once (the destination store's `copies_at_once`).
    pub concurrency: usize,
    /// The service carries each source's own properties (`copy_keeping`): the items hold none
    /// to write.
    pub keep_source_properties: bool,
    /// The source's and destination's regions and the price per GB between them, when known
    /// (the provider bills a copy across regions as transfer out of the source's).
    pub hop: Option<(String, String, Option<f64>)>,
}

/// What the listing fed the copy so far, and how it ended if it failed.
#[derive(Default)]
struct Fed {
    objects: u64,
    bytes: u64,
    error: Option<StoreError>,
}

/// Runs `job` over `items`, taken as the listing yields them: memory holds the copies under
/// way, not the listing. Setting `cancel` stops it between objects: copies under way finish
/// (a multipart copy dropped halfway would leave its upload open), no new one starts. A
/// listing that fails stops the copy the same way, and the error says how far it got.
pub async fn run_server_side(
    job: &ServerSideJob,
    items: CopyItems,
    src: Arc<dyn ObjectStore>,
    dst: Arc<dyn ObjectStore>,
    progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
    mut cancel: watch::Receiver<bool>,
) -> Result<CopyReport, CopyError> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let started = Instant::now();
    let mut state = Progress::default();
    let mut verified: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = Vec::new();
    let stopped = Arc::new(AtomicBool::new(false));
    let fed = Arc::new(std::sync::Mutex::new(Fed::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut held_peak = 0u64;
    let (feeding, still, stopping) = (fed.clone(), stopped.clone(), stopped.clone());
    let mut copies = items
        .take_while(move |_| futures::future::ready(!still.load(Ordering::Relaxed)))
        .filter_map(move |item| {
            let mut fed = feeding.lock().unwrap_or_else(|e| e.into_inner());
            futures::future::ready(match item {
                Ok(item) => {
                    fed.objects += 1;
                    fed.bytes += item.size;
                    Some(item)
                }
                Err(e) => {
                    // No object past a failed listing is started.
                    fed.error.get_or_insert(e);
                    stopping.store(true, Ordering::Relaxed);
                    None
                }
            })
        })
        .map(|item| {
            let (src, dst, in_flight) = (src.clone(), dst.clone(), in_flight.clone());
            in_flight.fetch_add(1, Ordering::Relaxed);
            let keep = job.keep_source_properties;
            async move {
                let outcome = copy_one(src.as_ref(), dst.as_ref(), &item, keep).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                (item, outcome)
            }
        })
        .buffer_unordered(job.concurrency.max(1));
    let mut watching = true;
    loop {
        let next = tokio::select! {
            next = copies.next() => next,
            changed = cancel.changed(), if watching => {
                match changed {
                    // No one can cancel any more.
                    Err(_) => watching = false,
                    Ok(()) if *cancel.borrow() => {
                        stopped.store(true, Ordering::Relaxed);
                        watching = false;
                    }
                    Ok(()) => {}
                }
                continue;
            }
        };
        let Some((item, outcome)) = next else { break };
        match outcome {
            Ok(v) => {
                state.objects_complete += 1;
                state.bytes_landed += item.size;
                *verified.entry(format!("{v:?}").to_lowercase()).or_default() += 1;
            }
            Err(why) => {
                state.objects_failed += 1;
                tracing::warn!(key = %item.src_key, %why, "server-side copy failed");
                failed.push(FailedObject {
                    key: item.src_key.clone(),
                    why,
                });
            }
        }
        {
            let fed = fed.lock().unwrap_or_else(|e| e.into_inner());
            (state.objects_total, state.bytes_total) = (fed.objects, fed.bytes);
        }
        let held = in_flight.load(Ordering::Relaxed) + 1;
        held_peak = held_peak.max(held);
        progress(&ProgressSnapshot {
            progress: state,
            elapsed: started.elapsed(),
            wire_bytes: 0,
            objects_held: held,
        });
    }
    drop(copies);
    // What the store left to a cache reaches the disk before the copy says it landed.
    dst.sync_written().await?;
    let listing_error = fed.lock().unwrap_or_else(|e| e.into_inner()).error.take();
    if let Some(source) = listing_error {
        return Err(CopyError::Listing {
            listed: state.objects_total,
            source: Box::new(source),
            resume: "objects copied so far are complete; run the same command again".into(),
        });
    }
    if stopped.load(Ordering::Relaxed) {
        return Err(CopyError::Interrupted {
            resume: "objects copied so far are complete; run the same command again".into(),
        });
    }
    let elapsed = started.elapsed().as_secs_f64();
    let moved = state.bytes_landed;
    let hops: Vec<HopReport> = job
        .hop
        .iter()
        .map(|(a, b, price)| {
            let price = if a == b { Some(0.0) } else { *price };
            HopReport {
                src_region: a.clone(),
                dst_region: b.clone(),
                wire_bytes: moved,
                resent_bytes: 0,
                usd_per_gb: price,
                egress_usd: price.unwrap_or(0.0) * moved as f64 / 1e9,
            }
        })
        .collect();
    let egress_usd = hops.iter().map(|h| h.egress_usd).sum::<f64>() + 0.0;
    Ok(CopyReport {
        job: 0,
        objects_total: state.objects_total,
        objects_held_peak: held_peak,
        objects_copied: state.objects_complete,
        objects_server_side: state.objects_complete,
        objects_resumed: 0,
        objects_failed: failed,
        bytes_total: state.bytes_total,
        bytes_sent: 0,
        chunks_skipped: 0,
        chunks_total: 0,
        elapsed_s: elapsed,
        throughput_gbps: if elapsed > 0.0 {
            moved as f64 * 8.0 / 1e9 / elapsed
        } else {
            0.0
        },
        compression_ratio: 1.0,
        hops,
        agents: Vec::new(),
        egress_usd,
        vm_usd: 0.0,
        total_usd: egress_usd,
        verified,
        agents_replaced: 0,
        refinements: Vec::new(),
        corrupt_chunks_detected: 0,
        journal: None,
    })
}

/// Copies one object server-side and verifies it: the copy takes exactly the version listed
/// (pinned by its ETag or generation; a source that changed since is refused), and the
/// destination must hold its size and (where both keep one) its checksum.
///
/// A listed version is copied with no request but the copy: its answer verifies it where the
/// service states the copy's checksum (S3, GCS). Otherwise, and for a source listed with no
/// version to pin, the source is read (HEAD) for its stored checksums and the destination
/// checked at rest against them.
async fn copy_one(
    src: &dyn ObjectStore,
    dst: &dyn ObjectStore,
    item: &CopyItem,
    keep_source_properties: bool,
) -> Result<Verification, String> {
    let listed = item.etag.is_some().then(|| item.listed_meta());
    let now = match listed {
        Some(listed) => listed,
        None => {
            let now = head_source(src, item).await?;
            if !item.is_same_version(&now) {
                return Err(changed(item, &now));
            }
            now
        }
    };
    let source = src.copy_source(&now);
    let copied = if keep_source_properties {
        match dst.copy_keeping(&source, &item.dst_key).await {
            // This copy cannot carry them: read through the source's own store.
            Ok(None) => {
                let properties = crate::listing::source_properties(src, item).await;
                dst.copy_from(&source, &item.dst_key, &properties).await
            }
            other => other.map(|c| c.expect("Some: matched above")),
        }
    } else {
        dst.copy_from(&source, &item.dst_key, &item.properties)
            .await
    };
    let copied = copied.map_err(|e| match e.kind {
        ErrorKind::Changed => format!("changed at the source since it was listed: {e}"),
        // The destination's service found no such source (version) to copy.
        ErrorKind::NotFound => format!("gone from the source since it was listed: {e}"),
        _ => format!("server-side copy: {e}"),
    })?;
    if let Some(verified) = verified_by_answer(&now, &copied)? {
        return Ok(verified);
    }
    // The answer proves nothing: the source's stored checksums, of the version copied.
    let stored = if item.etag.is_some() {
        let at_rest = head_source(src, item).await?;
        if item.is_same_version(&at_rest) {
            at_rest
        } else {
            // Replaced after the copy took the listed version: only its size can be checked.
            now
        }
    } else {
        now
    };
    let item = CopyItem {
        md5: stored.md5,
        ..item.clone()
    };
    // (A server-side copy's own failures are not ridden out, so neither is its check.)
    finalize::verify(dst, &item, stored.crc32c, false, Duration::ZERO).await
}

async fn head_source(src: &dyn ObjectStore, item: &CopyItem) -> Result<ObjectMeta, String> {
    src.head(&item.src_key)
        .await
        .map_err(|e| format!("reading the source: {e}"))
}

fn changed(item: &CopyItem, now: &ObjectMeta) -> String {
    format!(
        "changed at the source since it was listed (listed as {} bytes, version {:?}; now {} bytes, version {:?})",
        item.size,
        item.version,
        now.size,
        version_of(now)
    )
}

/// The verification a copy's answer gives against the source version `source`: `None` where
/// it states nothing comparable, an error where it states other bytes.
fn verified_by_answer(
    source: &ObjectMeta,
    copied: &Copied,
) -> Result<Option<Verification>, String> {
    match copied.same_as_source {
        Some(CopyProof::Md5) => return Ok(Some(Verification::Md5)),
        Some(CopyProof::ReadBack) => return Ok(Some(Verification::ReadBack)),
        None => {}
    }
    finalize::compare_checksums((source.crc32c, source.md5), (copied.crc32c, copied.md5))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(crc32c: Option<u32>, md5: Option<[u8; 16]>) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size: 3,
            last_modified: None,
            etag: Some("e".into()),
            md5,
            crc32c,
        }
    }

    #[test]
    fn a_copys_answer_verifies_it_only_where_it_states_comparable_checksums() {
        let copied = |crc32c, md5, same_as_source: bool| Copied {
            crc32c,
            md5,
            same_as_source: same_as_source.then_some(CopyProof::Md5),
        };
        let none = source(None, None);
        assert_eq!(verified_by_answer(&none, &Copied::default()), Ok(None));
        // S3: the copy's ETag is its MD5 and the source version's.
        assert_eq!(
            verified_by_answer(&none, &copied(Some(1), Some([1; 16]), true)),
            Ok(Some(Verification::Md5))
        );
        // A stated checksum with nothing to compare it to proves nothing.
        assert_eq!(
            verified_by_answer(&none, &copied(Some(1), Some([1; 16]), false)),
            Ok(None)
        );
        // GCS: the listing's checksums against the new object's.
        let listed = source(Some(7), Some([2; 16]));
        assert_eq!(
            verified_by_answer(&listed, &copied(Some(7), None, false)),
            Ok(Some(Verification::Crc32c))
        );
        assert_eq!(
            verified_by_answer(&listed, &copied(None, Some([2; 16]), false)),
            Ok(Some(Verification::Md5))
        );
        let e = verified_by_answer(&listed, &copied(Some(8), None, false)).unwrap_err();
        assert!(e.contains("CRC32C 00000008 differs"), "{e}");
        let e = verified_by_answer(&listed, &copied(None, Some([3; 16]), false)).unwrap_err();
        assert!(e.contains("MD5"), "{e}");
    }
}
