//! `skyx run --compute ray`: each region's Ray cluster and how stages run on them, checked
//! before anything starts.

use std::collections::BTreeMap;
use std::time::Duration;

use skyx_catalog::{Catalog, RegionId};
use skyx_pipeline_run::PipelineRun;
use skyx_pipeline_run::ray::{RayCompute, RayHead, StageResources};

use crate::error::BadInput;

#[derive(Debug, Clone, clap::Args)]
pub struct RayArgs {
    /// With --compute ray: a region's Ray cluster, as REGION=URL of its head's dashboard
    /// (`gcp:us-central1-a=http://10.0.0.5:8265`); once per region stages may run in.
    #[arg(long = "ray-cluster", value_name = "REGION=URL")]
    pub clusters: Vec<String>,
    /// With --compute ray: the skyx program as the clusters' nodes run it (each node needs
    /// skyx: `skyx stage-run` is every stage job's entrypoint).
    #[arg(long = "ray-skyx", value_name = "PATH", default_value = "skyx")]
    pub skyx: String,
    /// With --compute ray: how long a stage's job may wait for a node that has what it asks
    /// before the stage is placed in another region.
    #[arg(
        long = "ray-start-timeout",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub start_timeout: String,
}

impl RayArgs {
    /// Settings given without `--compute ray` are a mistake, said now.
    pub fn check_unused(&self) -> Result<(), BadInput> {
        if self.clusters.is_empty() {
            Ok(())
        } else {
            Err(BadInput("--ray-cluster is for --compute ray".into()))
        }
    }

    /// The compute of `run` on the clusters given: every region a stage is planned in must
    /// have one (a stage moved by a re-plan to a region without one is a capacity error there,
    /// and moves on).
    pub fn compute(
        &self,
        run: &PipelineRun,
        catalog: &Catalog,
        in_sky: bool,
    ) -> Result<RayCompute, BadInput> {
        if in_sky {
            return Err(BadInput(
                "--compute ray runs stages on the Ray clusters given, outside an emulated sky: \
                 leave out --sky"
                    .into(),
            ));
        }
        let mut heads = BTreeMap::new();
        for given in &self.clusters {
            let Some((region, url)) = given.split_once('=') else {
                return Err(BadInput(format!(
                    "--ray-cluster {given}: expected REGION=URL of the head's dashboard"
                )));
            };
            let region: RegionId = region
                .trim()
                .parse()
                .map_err(|e| BadInput(format!("--ray-cluster {given}: {e}")))?;
            let head = RayHead::new(url.trim())
                .map_err(|e| BadInput(format!("--ray-cluster {given}: {e}")))?;
            if heads.insert(region.to_string(), head).is_some() {
                return Err(BadInput(format!("--ray-cluster: {region} is given twice")));
            }
        }
        for stage in &run.stages {
            if !heads.contains_key(&stage.region) {
                let given: Vec<&String> = heads.keys().collect();
                return Err(BadInput(format!(
                    "stage {} is planned in {}, which no --ray-cluster names (given: {given:?})",
                    stage.name, stage.region
                )));
            }
        }
        let start_bound = skyx_catalog::units::parse_duration_s(&self.start_timeout)
            .map_err(|e| BadInput(format!("--ray-start-timeout: {e}")))?;
        if self.skyx.trim().is_empty() {
            return Err(BadInput("--ray-skyx: empty".into()));
        }
        Ok(RayCompute {
            heads,
            resources: resources(catalog),
            skyx: self.skyx.clone(),
            start_bound: Duration::from_secs_f64(start_bound),
            poll: Duration::from_secs(1),
        })
    }
}

/// What each instance type of the catalog asks of a Ray cluster: its vCPUs, and its GPUs as
/// Ray's `GPU`. (Not the accelerators' kind: the catalog's names, SkyPilot's, are not Ray's
/// `accelerator_type` values, and a wrong one would fit no node anywhere.)
fn resources(catalog: &Catalog) -> BTreeMap<String, StageResources> {
    let is_gpu = |kind: &str| {
        let k = kind.to_ascii_lowercase();
        !(k.starts_with("tpu") || k.starts_with("inferentia") || k.starts_with("trainium"))
    };
    let mut out = BTreeMap::new();
    for offer in catalog.vm_prices().offers() {
        if offer.instance_type.is_empty() {
            continue;
        }
        out.entry(offer.instance_type.clone())
            .or_insert_with(|| StageResources {
                cpus: offer.vcpus,
                gpus: offer
                    .accelerator
                    .as_ref()
                    .filter(|(kind, _)| is_gpu(kind))
                    .map(|(_, n)| *n),
            });
    }
    out
}
