//! Transfers between regions: one skyx copy per edge over the route the hooks plan, listed
//! and journaled like any copy, with what the route's plan predicted for the bytes moved.

use super::*;

pub(super) struct CopyCtx {
    pub(super) hooks: Arc<dyn PipelineHooks>,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) options: CopyOptions,
    pub(super) journal: PathBuf,
    pub(super) progress: Arc<Mutex<BTreeMap<usize, (u64, u64)>>>,
    pub(super) transfer: usize,
    pub(super) src_config: StoreConfig,
    pub(super) dst_config: StoreConfig,
}

impl CopyCtx {
    /// Copies `src` into `dst` over the route the hooks plan, and returns what the route's
    /// plan predicted for it: (seconds, USD). `None`: `src` is a stage's output that holds
    /// nothing, which is a stage's right (a filter that keeps nothing), so nothing moves and
    /// the consumer finds an empty input.
    pub(super) async fn copy(
        &self,
        src: &str,
        src_region: &str,
        dst: &str,
        dst_region: &str,
        src_is_stage_output: bool,
        cancel: watch::Receiver<bool>,
    ) -> Result<Option<(CopyReport, (f64, f64))>, String> {
        let src_url = ObjectUrl::parse(src).map_err(|e| e.to_string())?;
        let dst_url = ObjectUrl::parse(dst).map_err(|e| e.to_string())?;
        let src_store = skyx_store::open(&src_url, &self.src_config)
            .await
            .map_err(|e| e.to_string())?;
        let dst_store = skyx_store::open(&dst_url, &self.dst_config)
            .await
            .map_err(|e| e.to_string())?;
        let items = match list_copy(
            src_store.as_ref(),
            &src_url,
            &dst_url,
            true,
            &ObjectFilter::default(),
        )
        .await
        {
            // A stage's data must arrive whole: an object that cannot be written where its key
            // says fails the transfer, naming it.
            Ok(listing) => match listing.skipped.first() {
                None => listing.items,
                Some(s) => {
                    return Err(format!(
                        "{} of the objects under {src} cannot be written under {dst}; first: {}: {}",
                        listing.skipped.len(),
                        s.src_key.escape_debug(),
                        s.why
                    ));
                }
            },
            Err(ListError::NotFound { .. }) if src_is_stage_output => {
                if let skyx_store::StoreLocation::Local = dst_url.location {
                    // Read in place by local compute: the directory must be there, empty.
                    std::fs::create_dir_all(format!("/{}", dst_url.key))
                        .map_err(|e| format!("{dst}: {e}"))?;
                }
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut items = items;
        skyx_gateway::attach_properties(
            src_store.as_ref(),
            &mut items,
            &skyx_gateway::MetadataPolicy::default(),
        )
        .await;
        let bytes: u64 = items.iter().map(|i| i.size).sum();
        let route = self.hooks.route(src_region, dst_region, bytes)?;
        if let Some(dir) = self.journal.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut options = self.options.clone();
        options.journal = Some(self.journal.clone());
        options.resume = self.journal.exists();
        let root = |u: &ObjectUrl| match &u.location {
            skyx_store::StoreLocation::Local => "file:///".to_string(),
            loc => format!("{loc}/"),
        };
        let job = CopyJob {
            src_store: root(&src_url),
            dst_store: root(&dst_url),
            // Agents reach each region's store as that region's environment says.
            src_settings: None,
            dst_settings: None,
            dst_write: Default::default(),
            broadcast: None,
            topology: route.topology,
            options,
            pricing: route.pricing,
        };
        let progress = self.progress.clone();
        let transfer = self.transfer;
        let report = run_copy(
            &job,
            skyx_gateway::items_of(items),
            self.provider.as_ref(),
            src_store,
            dst_store,
            &mut |p| {
                progress
                    .lock()
                    .expect("progress")
                    .insert(transfer, (p.progress.bytes_landed, p.progress.bytes_total));
            },
            cancel,
        )
        .await
        .map_err(|e| e.to_string())?;
        if !report.objects_failed.is_empty() {
            return Err(format!("{} objects failed", report.objects_failed.len()));
        }
        let _ = std::fs::remove_file(&self.journal);
        Ok(Some((report, (route.predicted_s, route.predicted_usd))))
    }
}
