//! Leaving nothing behind: uploads of failed objects aborted, and an abort that fails (the store
//! is down) journaled and retried at the end of the run and at the start of the next one; a
//! local destination's temp files whose writer died removed before and after.

use super::*;

impl Run<'_> {
    /// Aborts the upload `id` of `key` at destination `d`; one that cannot be aborted now is
    /// kept to retry (and journaled, so a later run retries it if this one cannot).
    pub(super) async fn abort_upload(
        &mut self,
        d: usize,
        key: &str,
        id: &str,
    ) -> Result<(), CopyError> {
        match abort(self.dsts[d].as_ref(), key, id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(key, error = %e, "aborting an upload failed; it will be retried");
                self.pending_aborts
                    .insert(id.to_string(), (key.to_string(), d));
                match &self.journal {
                    Some(j) if d == 0 => Ok(j.record(&JournalBatch {
                        abort_later: vec![(id.to_string(), key.to_string())],
                        ..Default::default()
                    })?),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Tries every pending abort once more; returns how many are still pending.
    pub(super) async fn retry_pending_aborts(&mut self) -> Result<usize, CopyError> {
        if self.pending_aborts.is_empty() {
            return Ok(0);
        }
        let pending: Vec<(String, (String, usize))> = self.pending_aborts.drain().collect();
        let dsts = self.dsts.clone();
        let results: Vec<(String, String, usize, bool)> =
            futures::stream::iter(pending.into_iter().map(|(id, (key, d))| {
                let dst = dsts[d].clone();
                async move {
                    let done = abort(dst.as_ref(), &key, &id).await.is_ok();
                    (id, key, d, done)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        // (The journal follows destination 0: a broadcast keeps none.)
        let mut batch = JournalBatch::default();
        for (id, key, d, done) in results {
            if done {
                tracing::info!(key, "an upload left open earlier is aborted");
                batch.aborted.push(id);
            } else {
                batch.abort_later.push((id.clone(), key.clone()));
                self.pending_aborts.insert(id, (key, d));
            }
        }
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        Ok(self.pending_aborts.len())
    }

    /// Removes the temp files whose writer died in the destination directories of `items`
    /// not swept yet (local destinations only; cloud stores keep none). Upload staging goes
    /// with its upload.
    pub(super) async fn sweep_staging(&mut self, items: &[CopyItem]) {
        for d in 0..self.dsts.len() {
            if !matches!(self.dsts[d].location(), StoreLocation::Local) {
                continue;
            }
            let mut keys = Vec::new();
            for i in items {
                let key = match (&self.job.broadcast, d) {
                    (_, 0) => i.dst_key.clone(),
                    (Some(b), d) => {
                        match crate::listing::rebase_key(
                            i,
                            &b.first,
                            &b.more[d - 1].url,
                            b.source_is_object,
                        ) {
                            Ok(key) => key,
                            Err(_) => continue,
                        }
                    }
                    (None, _) => unreachable!("one destination"),
                };
                let dir = key.rfind('/').map_or("", |at| &key[..=at]).to_string();
                if !self.swept_dirs.contains_key(&(d, dir.clone())) {
                    self.swept_dirs.insert((d, dir), key.clone());
                    keys.push(key);
                }
            }
            self.sweep_keys(d, &keys).await;
        }
    }

    /// After the run: every directory the copy wrote to is swept again (what its agents were
    /// writing when they died is no one's now).
    pub(super) async fn sweep_staging_again(&mut self) {
        for d in 0..self.dsts.len() {
            let keys: Vec<String> = self
                .swept_dirs
                .iter()
                .filter(|((at, _), _)| *at == d)
                .map(|(_, key)| key.clone())
                .collect();
            self.sweep_keys(d, &keys).await;
        }
    }

    async fn sweep_keys(&self, d: usize, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        match self.dsts[d].remove_abandoned_staging(keys).await {
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
