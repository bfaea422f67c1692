//! Compute for stages: the provider trait the driver provisions through, and local processes
//! (`sh -c`, in a region's namespace on the sky) as the default.

use super::*;

/// Why compute could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// Out of capacity or quota there: the stage can be placed elsewhere.
    #[error("no capacity in {region}: {why}")]
    Capacity { region: String, why: String },
    #[error("{0}")]
    Failed(String),
}

/// Why a stage did not run to success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageRunError {
    #[error("{0}")]
    Failed(String),
    /// Its compute could not schedule it (no node offered what it asks within the bound):
    /// the stage belongs elsewhere, as with a capacity error on provisioning.
    #[error("could not be scheduled: {0}")]
    Unschedulable(String),
}

/// Where a stage's run keeps its things on the gateway's side.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// The run's own name (its journal's): the same when the run resumes, another for a run
    /// started afresh.
    pub run_id: String,
    /// Scratch space when the stage runs on this machine.
    pub work: PathBuf,
    /// The region's store settings when the stage runs on this machine.
    pub config: StoreConfig,
    /// Where the stage's output and errors end up (copied back from a remote machine).
    pub log: PathBuf,
}

/// Compute for one stage, provisioned in its region.
#[async_trait]
pub trait Compute: Send + Sync {
    /// Runs the stage to its end: its inputs brought to its machine, its command, its output
    /// taken to its region's store. `Err` says what failed.
    async fn run(&mut self, stage: &StageRequest, ctx: &StageContext) -> Result<(), StageRunError>;
    /// Gives the compute back (terminates the VM).
    async fn release(&mut self);
}

#[async_trait]
pub trait ComputeProvider: Send + Sync {
    async fn provision(
        &self,
        stage: &str,
        region: &str,
        instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError>;
}

/// Stage commands as local processes (`sh -c`), inside a region's network namespace when one
/// is given. Provisioning in a region of `no_capacity_in` fails with a capacity error (for
/// testing re-planning; `skyx run` fills it from `SKYX_FAULT_NO_CAPACITY=REGION[,REGION]`).
#[derive(Debug, Clone, Default)]
pub struct LocalCompute {
    pub namespaces: BTreeMap<String, String>,
    /// Fault injection for tests: regions where provisioning answers "no capacity".
    pub no_capacity_in: BTreeSet<String>,
}

#[async_trait]
impl ComputeProvider for LocalCompute {
    async fn provision(
        &self,
        _stage: &str,
        region: &str,
        _instance: &str,
    ) -> Result<Box<dyn Compute>, ComputeError> {
        if self.no_capacity_in.contains(region) {
            return Err(ComputeError::Capacity {
                region: region.to_string(),
                why: "fault injection: no capacity here".into(),
            });
        }
        Ok(Box::new(LocalProcess {
            namespace: self.namespaces.get(region).cloned(),
        }))
    }
}

#[derive(Debug)]
struct LocalProcess {
    namespace: Option<String>,
}

#[async_trait]
impl Compute for LocalProcess {
    async fn run(&mut self, stage: &StageRequest, ctx: &StageContext) -> Result<(), StageRunError> {
        let wrapper: Vec<String> = match &self.namespace {
            Some(ns) => ["ip", "netns", "exec", ns].map(String::from).to_vec(),
            None => Vec::new(),
        };
        skyx_agent::stage::run_stage(stage, &ctx.work, &ctx.config, &wrapper, &ctx.log)
            .await
            .map_err(StageRunError::Failed)
    }

    async fn release(&mut self) {}
}
