//! What the driver is given to run (stages at their places, inputs, edges, region stores) and
//! what it reports back.

use super::*;

/// One stage as it will run.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub name: String,
    pub region: String,
    pub instance: String,
    pub usd_per_hour: f64,
    /// The spec's runtime estimate on this instance.
    pub predicted_s: f64,
    pub command: String,
}

impl StageRun {
    pub fn placement(&self) -> Placement {
        Placement {
            region: self.region.clone(),
            instance: self.instance.clone(),
            usd_per_hour: self.usd_per_hour,
            predicted_s: self.predicted_s,
        }
    }

    pub(super) fn place(&mut self, p: &Placement) {
        self.region = p.region.clone();
        self.instance = p.instance.clone();
        self.usd_per_hour = p.usd_per_hour;
        self.predicted_s = p.predicted_s;
    }
}

/// One pipeline input.
#[derive(Debug, Clone)]
pub struct InputRun {
    pub name: String,
    pub url: String,
    pub region: String,
}

/// An edge: data `source` read by stage `to_stage`, under the name `name`.
#[derive(Debug, Clone)]
pub struct EdgeRun {
    pub source: DataSource,
    pub name: String,
    pub to_stage: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineRun {
    pub name: String,
    pub stages: Vec<StageRun>,
    pub inputs: Vec<InputRun>,
    pub edges: Vec<EdgeRun>,
    /// `<state dir>/pipelines/<name>`.
    pub root: PathBuf,
    /// Identifies the spec and plan: a journal with another fingerprint is not resumed.
    pub fingerprint: String,
    pub copy_options: CopyOptions,
    /// How often `on_status` hears a line on every stage and transfer (none: only events).
    pub status_every: Option<Duration>,
    /// Regions whose data lives in an object store; the others keep it in a local directory
    /// under `root`.
    pub region_stores: BTreeMap<String, RegionStore>,
}

/// A region whose data lives in an object store (on the emulated sky: the region's own S3,
/// GCS or Azure server).
#[derive(Debug, Clone)]
pub struct RegionStore {
    /// The bucket (container) the pipeline's data goes under, as a URL ending in `/`.
    pub url: String,
    /// How to reach the region's store.
    pub config: StoreConfig,
}

/// What happened to one stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    pub name: String,
    pub region: String,
    pub instance: String,
    pub started_s: Option<f64>,
    pub finished_s: Option<f64>,
    /// Done by an earlier run of the pipeline.
    pub resumed: bool,
    /// The spec's runtime estimate and the instance's price.
    pub predicted_s: f64,
    pub usd_per_hour: f64,
    /// The instance's price for the time the stage ran.
    pub metered_usd: Option<f64>,
}

/// What happened to one transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransferReport {
    pub data: String,
    pub to_stage: String,
    pub src_region: String,
    pub dst_region: String,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub egress_usd: f64,
    pub vm_usd: f64,
    pub started_s: f64,
    pub finished_s: f64,
    /// What the route's plan predicted for these bytes: seconds, and USD (egress + agents).
    pub predicted_s: Option<f64>,
    pub predicted_usd: Option<f64>,
    /// Already in the destination region: nothing moved.
    pub local: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineReport {
    pub stages: Vec<StageReport>,
    pub transfers: Vec<TransferReport>,
    pub elapsed_s: f64,
    pub replans: Vec<String>,
}
