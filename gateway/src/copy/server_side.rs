//! Copies the provider runs itself (S3 CopyObject/UploadPartCopy, GCS rewrite, Azure Copy
//! Blob): no agents, and no byte passes through us. For each object: a HEAD of the source
//! (still the version listed?), the copy pinned to that version with the object's properties,
//! and verification at rest against the source's own stored checksum. Many objects at once;
//! one object's failure fails that object, not the copy.

use skyx_store::ObjectMeta;

use super::*;
use crate::core::tracker::Progress;

/// A copy the provider runs.
#[derive(Debug, Clone)]
pub struct ServerSideJob {
    pub items: Vec<CopyItem>,
    /// Objects copied at once.
    pub concurrency: usize,
    /// The source's and destination's regions and the price per GB between them, when known
    /// (the provider bills a copy across regions as transfer out of the source's).
    pub hop: Option<(String, String, Option<f64>)>,
}

impl ServerSideJob {
    pub const DEFAULT_CONCURRENCY: usize = 32;
}

/// Runs `job`. Setting `cancel` stops it between objects: copies under way finish (a
/// multipart copy dropped halfway would leave its upload open), no new one starts.
pub async fn run_server_side(
    job: &ServerSideJob,
    src: Arc<dyn ObjectStore>,
    dst: Arc<dyn ObjectStore>,
    progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
    mut cancel: watch::Receiver<bool>,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let mut state = Progress {
        objects_total: job.items.len() as u64,
        bytes_total: job.items.iter().map(|i| i.size).sum(),
        ..Progress::default()
    };
    let mut verified: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = Vec::new();
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut copies = futures::stream::iter(job.items.iter().cloned())
        .map(|item| {
            let (src, dst, stopped) = (src.clone(), dst.clone(), stopped.clone());
            async move {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return (
                        item,
                        Err("not started: the copy was interrupted".to_string()),
                    );
                }
                let outcome = copy_one(src.as_ref(), dst.as_ref(), &item).await;
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
                        stopped.store(true, std::sync::atomic::Ordering::Relaxed);
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
        progress(&ProgressSnapshot {
            progress: state,
            elapsed: started.elapsed(),
            wire_bytes: 0,
            // The provider copies from the listing, held whole.
            objects_held: state.objects_total,
        });
    }
    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
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
        // The provider copies from the listing, held whole.
        objects_held_peak: state.objects_total,
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
        corrupt_chunks_detected: 0,
        journal: None,
    })
}

/// Copies one object server-side and verifies it: the source must still be the version
/// listed, and the destination must hold its size and (where both keep one) its checksum.
async fn copy_one(
    src: &dyn ObjectStore,
    dst: &dyn ObjectStore,
    item: &CopyItem,
) -> Result<Verification, String> {
    let now: ObjectMeta = src
        .head(&item.src_key)
        .await
        .map_err(|e| format!("reading the source: {e}"))?;
    if !item.is_same_version(&now) {
        return Err(format!(
            "changed at the source since it was listed (listed as {} bytes, version {:?}; now {} bytes, version {:?})",
            item.size,
            item.version,
            now.size,
            version_of(&now)
        ));
    }
    dst.copy_from(&src.copy_source(&now), &item.dst_key, &item.properties)
        .await
        .map_err(|e| format!("server-side copy: {e}"))?;
    let stored = CopyItem {
        md5: now.md5,
        ..item.clone()
    };
    finalize::verify(dst, &stored, now.crc32c, false).await
}
