//! `skyx run --compute ray`: each region's Ray cluster and how stages run on them, checked
//! before anything starts.

use std::collections::BTreeMap;
use std::time::Duration;

use skyx_catalog::{Catalog, RegionId};
use skyx_pipeline_run::PipelineRun;
use skyx_pipeline_run::ray::{RayCompute, RayHead, RayLauncher, StageResources};

use crate::error::BadInput;

#[derive(Debug, Clone, clap::Args)]
pub struct RayArgs {
    /// With --compute ray: a region's Ray cluster, as REGION=URL of its head's dashboard
    /// (`gcp:us-central1-a=http://10.0.0.5:8265`); once per region stages may run in.
    #[arg(long = "ray-cluster", value_name = "REGION=URL")]
    pub clusters: Vec<String>,
    /// With --compute ray: the skyx program as the clusters' nodes run it (each node needs
    /// skyx: `skyx stage-run` is every stage job's entrypoint). On a cluster of --ray-launch,
    /// where this program is put (a path; default ~/skyx).
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
    /// With --compute ray: a stage planned in a region no --ray-cluster names gets a Ray cluster
    /// of its own, one node of the planned instance type, brought up with Ray's cluster
    /// launcher (`ray up`, then `ray dashboard` as the tunnel to its head) and torn down
    /// (`ray down`) when the stage ends. Needs the `ray` program with the cloud's SDK and
    /// credentials; the nodes get this skyx program (a Linux x86_64 build) as a file.
    #[arg(long = "ray-launch")]
    pub launch: bool,
    /// With --ray-launch: Ray's CLI.
    #[arg(long = "ray-program", value_name = "PATH", default_value = "ray")]
    pub program: String,
}

/// What launched clusters need beyond the flags: where their configs go and the clouds'
/// accounts.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    /// The pipeline's name (part of each cluster's name).
    pub pipeline: String,
    /// Where the clusters' configs and the logs of the `ray` commands go.
    pub dir: std::path::PathBuf,
    pub gcp_project: Option<String>,
    pub azure_subscription: Option<String>,
}

impl RayArgs {
    /// Settings given without `--compute ray` are a mistake, said now.
    pub fn check_unused(&self) -> Result<(), BadInput> {
        if !self.clusters.is_empty() {
            Err(BadInput("--ray-cluster is for --compute ray".into()))
        } else if self.launch {
            Err(BadInput("--ray-launch is for --compute ray".into()))
        } else {
            Ok(())
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
        launch: LaunchSettings,
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
            let launched = self.launch && !heads.contains_key(&stage.region);
            if launched
                && stage.region.starts_with("gcp:")
                && launch
                    .gcp_project
                    .as_deref()
                    .is_none_or(|p| p.trim().is_empty())
            {
                return Err(BadInput(format!(
                    "--ray-launch: stage {} is planned in {}, and a Ray cluster in GCP needs the \
                     project to make it in (--gcp-project)",
                    stage.name, stage.region
                )));
            }
            if !heads.contains_key(&stage.region) && !self.launch {
                let given: Vec<&String> = heads.keys().collect();
                return Err(BadInput(format!(
                    "stage {} is planned in {}, which no --ray-cluster names (given: {given:?}; \
                     --ray-launch brings up a cluster where there is none)",
                    stage.name, stage.region
                )));
            }
        }
        let start_bound = skyx_catalog::units::parse_duration_s(&self.start_timeout)
            .map_err(|e| BadInput(format!("--ray-start-timeout: {e}")))?;
        if self.skyx.trim().is_empty() {
            return Err(BadInput("--ray-skyx: empty".into()));
        }
        let launcher = if self.launch {
            Some(self.launcher(launch)?)
        } else {
            None
        };
        Ok(RayCompute {
            heads,
            resources: resources(catalog),
            skyx: self.skyx.clone(),
            start_bound: Duration::from_secs_f64(start_bound),
            poll: Duration::from_secs(1),
            launcher,
        })
    }

    /// The launcher of --ray-launch: Ray's CLI answers, and says its version (the nodes get the
    /// same).
    fn launcher(&self, launch: LaunchSettings) -> Result<RayLauncher, BadInput> {
        let out = std::process::Command::new(&self.program)
            .arg("--version")
            .output()
            .map_err(|e| BadInput(format!("--ray-program {}: {e}", self.program)))?;
        let said = String::from_utf8_lossy(&out.stdout);
        // `ray, version 2.60.0`
        let version = said
            .trim()
            .rsplit_once("version ")
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| out.status.success() && !v.is_empty())
            .ok_or_else(|| {
                BadInput(format!(
                    "--ray-program {}: `--version` said {:?}, not Ray's version",
                    self.program,
                    said.trim()
                ))
            })?;
        let skyx = std::env::current_exe()
            .map_err(|e| BadInput(format!("--ray-launch: this program's path: {e}")))?;
        Ok(RayLauncher {
            program: self.program.clone(),
            dir: launch.dir,
            pipeline: launch.pipeline,
            ray_version: version,
            skyx: skyx.display().to_string(),
            // A bare name is a program on the nodes' PATH, which a launched node has not.
            node_skyx: self.skyx.contains('/').then(|| self.skyx.clone()),
            gcp_project: launch.gcp_project,
            azure_subscription: launch.azure_subscription,
            head_timeout: Duration::from_secs(120),
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
