//! Completing an object once the tracker reports it whole, and verifying it at rest.

use skyx_store::retry::RideOut;

use super::*;

impl Run<'_> {
    /// Completes object `object` at every destination and verifies it there.
    pub(super) fn finalize(
        &self,
        object: u32,
    ) -> impl std::future::Future<Output = (u32, Result<Vec<Verification>, String>)> + Send + 'static
    {
        let a = &self.active[&object];
        // The object's CRC32C, combined from its chunks' in order (an empty object's is 0).
        let mut crc: Option<u32> = Some(0);
        for c in &a.crcs {
            crc = match (crc, c) {
                (Some(acc), Some((c, len))) => Some(crc32c::crc32c_combine(acc, *c, *len as usize)),
                _ => None,
            };
        }
        let completions: Vec<_> = (0..a.at.len())
            .map(|d| {
                let name = (self.dsts.len() > 1).then(|| self.destination_name(d));
                let done = self.complete_at(a, d, crc);
                async move {
                    done.await
                        .map_err(|why| name.map_or(why.clone(), |at| format!("at {at}: {why}")))
                }
            })
            .collect();
        async move {
            let res = futures::future::join_all(completions)
                .await
                .into_iter()
                .collect::<Result<Vec<Verification>, String>>();
            (object, res)
        }
    }

    /// Completes `a` at destination `d` (the object's CRC32C `crc`, when every chunk's is
    /// known) and verifies it.
    fn complete_at(
        &self,
        a: &ActiveObject,
        d: usize,
        crc: Option<u32>,
    ) -> impl std::future::Future<Output = Result<Verification, String>> + Send + 'static {
        let dst = self.dsts[d].clone();
        let src = self.src.clone();
        let item = a.item_at(d);
        let upload = a.at[d].upload.clone();
        let chunk_size = a.record.chunk_size;
        // Each part is one chunk, in order: its CRC32C is the chunk's, as the sink checked it.
        let parts: Vec<PartReceipt> = a.at[d]
            .receipts
            .iter()
            .map(|(&part_number, etag)| PartReceipt {
                part_number,
                etag: etag.clone(),
                crc32c: a
                    .crcs
                    .get(part_number as usize - 1)
                    .copied()
                    .flatten()
                    .map(|(crc, _)| crc),
            })
            .collect();
        let dst_is_local = matches!(dst.location(), StoreLocation::Local);
        // The destination's outage is ridden out here as the sink rides it out for the parts:
        // an object whose every part landed is not failed for a completion the store could
        // not take for a few seconds.
        let window = self.job.options.sink_retry;
        async move {
            if let Some(upload_id) = upload {
                let expected = item.size.div_ceil(chunk_size.max(1)) as usize;
                if parts.len() != expected {
                    return Err(format!(
                        "{} of {expected} parts recorded; cannot complete",
                        parts.len()
                    ));
                }
                let upload =
                    MultipartUpload::new(&item.dst_key, &upload_id, item.properties.clone())
                        .with_crc32c(crc);
                // A multi-chunk object was read in pieces. Each read was pinned to the
                // listed version where the store named one; either way the source must
                // still be that version before the pieces become visible as one object.
                // (A failed object's upload is aborted by the caller.)
                unchanged(src.as_ref(), &item).await?;
                let completed =
                    RideOut::run(window, || dst.complete_multipart(&upload, parts.clone())).await;
                if let Err(e) = completed {
                    // An earlier run (or an attempt above whose answer was lost) may have
                    // completed it (the upload is gone now): what is at the destination decides,
                    // by content only. A completion refused for any other reason fails,
                    // and an object of the same size is no proof.
                    if e.kind == skyx_store::ErrorKind::NotFound
                        && let Ok(v) = verify(dst.as_ref(), &item, crc, dst_is_local, window).await
                        && v != Verification::Size
                    {
                        tracing::info!(key = %item.dst_key, "already completed (by an earlier run, or by an attempt whose answer was lost)");
                        return Ok(v);
                    }
                    // (The caller aborts the upload, keeping it to retry if that fails.)
                    return Err(format!("completing the upload: {e}"));
                }
            }
            verify(dst.as_ref(), &item, crc, dst_is_local, window).await
        }
    }
}

/// Whether the source still holds the version of `item` that was listed.
async fn unchanged(src: &dyn ObjectStore, item: &CopyItem) -> Result<(), String> {
    match src.head(&item.src_key).await {
        Ok(m) if item.is_same_version(&m) => Ok(()),
        Ok(m) => Err(format!(
            "changed at the source during the copy (listed as {} bytes, version {:?}; now {} bytes, version {:?}); nothing was written",
            item.size,
            item.version,
            m.size,
            version_of(&m)
        )),
        Err(e) => Err(format!("re-checking the source: {e}")),
    }
}

/// What the source's checksums `want` and the destination's `got` (CRC32C, MD5) say: by
/// CRC32C where both have one, else by MD5; `None` where they share none.
pub(super) fn compare_checksums(
    (want_crc, want_md5): (Option<u32>, Option<[u8; 16]>),
    (got_crc, got_md5): (Option<u32>, Option<[u8; 16]>),
) -> Option<Result<Verification, String>> {
    if let (Some(want), Some(got)) = (want_crc, got_crc) {
        return Some(if want == got {
            Ok(Verification::Crc32c)
        } else {
            Err(format!(
                "destination CRC32C {got:08x} differs from the source's {want:08x}"
            ))
        });
    }
    let (want, got) = (want_md5?, got_md5?);
    Some(if want == got {
        Ok(Verification::Md5)
    } else {
        Err(format!(
            "destination MD5 {} differs from the source's {}",
            hex::encode(got),
            hex::encode(want)
        ))
    })
}

/// Checks a completed object at the destination: its size always; its content by the best
/// checksum both sides expose: the CRC32C of the bytes read at the source against the store's,
/// else the MD5 of the bytes written (whole objects) or the source's against the store's, else
/// (a local destination) by reading it back. A failure that may pass is ridden out for up to
/// `window`.
pub(super) async fn verify(
    dst: &dyn ObjectStore,
    item: &CopyItem,
    crc: Option<u32>,
    read_back: bool,
    window: Duration,
) -> Result<Verification, String> {
    let meta = RideOut::run(window, || dst.head(&item.dst_key))
        .await
        .map_err(|e| format!("not found at the destination after writing: {e}"))?;
    if meta.size != item.size {
        return Err(format!(
            "destination has {} bytes, the source {}",
            meta.size, item.size
        ));
    }
    if let Some(compared) = compare_checksums((crc, item.md5), (meta.crc32c, meta.md5)) {
        return compared;
    }
    if read_back && let Some(want) = crc {
        let mut stream = dst
            .get_range(&item.dst_key, 0..item.size, meta.etag.as_deref())
            .await
            .map_err(|e| format!("reading back: {e}"))?;
        let mut got = 0u32;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| format!("reading back: {e}"))?;
            got = crc32c::crc32c_append(got, &piece);
        }
        return if want == got {
            Ok(Verification::ReadBack)
        } else {
            Err(format!(
                "destination content (CRC32C {got:08x}) differs from the source's ({want:08x})"
            ))
        };
    }
    Ok(Verification::Size)
}
