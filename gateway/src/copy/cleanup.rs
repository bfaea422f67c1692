//! Leaving nothing behind: uploads of failed objects aborted, and an abort that fails (the store
//! is down) journaled and retried at the end of the run and at the start of the next one; a
//! local destination's temp files whose writer died removed before and after.

use super::*;

impl Run<'_> {
    /// Aborts the upload `id` of `key`; one that cannot be aborted now is kept to retry (and
    /// journaled, so a later run retries it if this one cannot).
    pub(super) async fn abort_upload(&mut self, key: &str, id: &str) -> Result<(), CopyError> {
        match abort(self.dst.as_ref(), key, id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(key, error = %e, "aborting an upload failed; it will be retried");
                self.pending_aborts.insert(id.to_string(), key.to_string());
                match &self.journal {
                    Some(j) => Ok(j.record(&JournalBatch {
                        abort_later: vec![(id.to_string(), key.to_string())],
                        ..Default::default()
                    })?),
                    None => Ok(()),
                }
            }
        }
    }

    /// Tries every pending abort once more; returns how many are still pending.
    pub(super) async fn retry_pending_aborts(&mut self) -> Result<usize, CopyError> {
        if self.pending_aborts.is_empty() {
            return Ok(0);
        }
        let pending: Vec<(String, String)> = self.pending_aborts.drain().collect();
        let dst = self.dst.clone();
        let results: Vec<(String, String, bool)> =
            futures::stream::iter(pending.into_iter().map(|(id, key)| {
                let dst = dst.clone();
                async move {
                    let done = abort(dst.as_ref(), &key, &id).await.is_ok();
                    (id, key, done)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        let mut batch = JournalBatch::default();
        for (id, key, done) in results {
            if done {
                tracing::info!(key, "an upload left open earlier is aborted");
                batch.aborted.push(id);
            } else {
                batch.abort_later.push((id.clone(), key.clone()));
                self.pending_aborts.insert(id, key);
            }
        }
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        Ok(self.pending_aborts.len())
    }

    /// Removes the temp files whose writer died in the destination directories of `items`
    /// not swept yet (a local destination only; cloud stores keep none). Upload staging goes
    /// with its upload.
    pub(super) async fn sweep_staging(&mut self, items: &[CopyItem]) {
        if !matches!(self.dst.location(), StoreLocation::Local) {
            return;
        }
        let mut keys = Vec::new();
        for i in items {
            let dir = i.dst_key.rfind('/').map_or("", |at| &i.dst_key[..=at]);
            if !self.swept_dirs.contains_key(dir) {
                self.swept_dirs.insert(dir.to_string(), i.dst_key.clone());
                keys.push(i.dst_key.clone());
            }
        }
        self.sweep_keys(&keys).await;
    }

    /// After the run: every directory the copy wrote to is swept again (what its agents were
    /// writing when they died is no one's now).
    pub(super) async fn sweep_staging_again(&mut self) {
        let keys: Vec<String> = self.swept_dirs.values().cloned().collect();
        self.sweep_keys(&keys).await;
    }

    async fn sweep_keys(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        match self.dst.remove_abandoned_staging(keys).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "removed staging earlier runs left behind"),
            Err(e) => tracing::warn!(error = %e, "sweeping abandoned staging failed"),
        }
    }
}

/// Aborts upload `id` of `key`; one the store no longer has is as good as aborted.
async fn abort(dst: &dyn ObjectStore, key: &str, id: &str) -> Result<(), StoreError> {
    let upload = MultipartUpload::new(key, id, Properties::default());
    match dst.abort_multipart(&upload).await {
        Err(e) if e.kind == skyx_store::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
