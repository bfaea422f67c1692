//! Matching stage candidates to the catalog's VM offers: where each candidate can run, at what
//! hourly price, under the stage's and the pipeline's placement rules.

use std::collections::BTreeMap;

use skyx_catalog::{Catalog, Cloud, Continent, RegionId, VmOffer};
use skyx_planner::RegionConstraints;

use crate::spec::{PipelineSpec, PlacementRules, Resource, SpecError};

/// Instance families that run confidential computing (memory encrypted by the CPU: Intel SGX
/// or TDX, AMD SEV-SNP). Only these satisfy `confidential = true`.
const CONFIDENTIAL_FAMILIES: [(Cloud, &str); 6] = [
    (Cloud::Azure, "Standard_DC"),
    (Cloud::Azure, "Standard_EC"),
    (Cloud::Gcp, "n2d-"),
    (Cloud::Gcp, "c2d-"),
    (Cloud::Gcp, "c3-"),
    (Cloud::Aws, "m6a."),
];

pub fn is_confidential(cloud: Cloud, instance_type: &str) -> bool {
    CONFIDENTIAL_FAMILIES
        .iter()
        .any(|(c, prefix)| *c == cloud && instance_type.starts_with(prefix))
}

/// One concrete way to run a stage: a candidate's resource in one region.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageOption {
    pub region: RegionId,
    /// The instance type (for GCP accelerators: `host + accelerator`).
    pub instance: String,
    pub usd_per_hour: f64,
    pub hours: f64,
    /// Index of the candidate in the stage's spec.
    pub candidate: usize,
}

impl StageOption {
    pub fn compute_usd(&self) -> f64 {
        self.usd_per_hour * self.hours
    }

    pub fn seconds(&self) -> f64 {
        self.hours * 3600.0
    }
}

/// Region rules as the planner's constraints; a name the catalog does not know is an error at
/// `line`.
pub fn constraints(
    rules: &PlacementRules,
    catalog: &Catalog,
    spec: &PipelineSpec,
    line: usize,
) -> Result<RegionConstraints, SpecError> {
    let err = |message: String| SpecError {
        file: spec.file.clone(),
        line,
        column: 1,
        message,
    };
    let regions = |names: &[String]| -> Result<Vec<RegionId>, SpecError> {
        names
            .iter()
            .map(|n| {
                catalog
                    .resolve_region(n)
                    .map_err(|e| err(format!("region {n:?}: {e}")))
            })
            .collect()
    };
    let clouds = |names: &[String]| -> Result<Vec<Cloud>, SpecError> {
        names
            .iter()
            .map(|n| {
                n.parse::<Cloud>()
                    .map_err(|e| err(format!("cloud {n:?}: {e}")))
            })
            .collect()
    };
    let continents = |names: &[String]| -> Result<Vec<Continent>, SpecError> {
        names
            .iter()
            .map(|n| {
                n.parse::<Continent>()
                    .map_err(|e| err(format!("continent {n:?}: {e}")))
            })
            .collect()
    };
    let countries = |names: &[String]| -> Vec<String> {
        let mut out = Vec::new();
        for n in names {
            if n.eq_ignore_ascii_case("eu") {
                out.extend(skyx_catalog::EU_COUNTRIES.iter().map(|c| c.to_string()));
            } else {
                out.push(n.to_ascii_uppercase());
            }
        }
        out
    };
    Ok(RegionConstraints {
        allow_regions: regions(&rules.regions)?,
        deny_regions: regions(&rules.deny_regions)?,
        allow_clouds: clouds(&rules.clouds)?,
        deny_clouds: clouds(&rules.deny_clouds)?,
        allow_countries: countries(&rules.countries),
        deny_countries: countries(&rules.deny_countries),
        allow_continents: continents(&rules.continents)?,
        deny_continents: continents(&rules.deny_continents)?,
    })
}

/// The grid region an offer runs in, if the catalog can plan transfers there.
fn grid_region(catalog: &Catalog, offer: &VmOffer) -> Option<RegionId> {
    let cloud = offer.cloud.as_str();
    if !offer.zone.is_empty()
        && offer.cloud == Cloud::Gcp
        && let Ok(id) = catalog.resolve_region(&format!("{cloud}:{}", offer.zone))
    {
        return Some(id);
    }
    catalog
        .resolve_region(&format!("{cloud}:{}", offer.region))
        .ok()
}

/// GCP prices GPUs apart from the VM they attach to; SkyPilot adds the host's price, and so do
/// we (TPU VMs include their host).
fn gcp_host(accelerator: &str) -> Option<&'static str> {
    if accelerator.to_ascii_lowercase().starts_with("tpu") {
        None
    } else if accelerator.starts_with("A100") {
        Some("a2-highgpu-1g")
    } else {
        Some("n1-highmem-8")
    }
}

fn matches(resource: &Resource, offer: &VmOffer) -> bool {
    match resource {
        Resource::Instance { name } => offer.instance_type == *name,
        Resource::Accelerator { name, count } => {
            offer.accelerator.as_ref().is_some_and(|(a, n)| {
                a.eq_ignore_ascii_case(name) && (*n - f64::from(*count)).abs() < 1e-9
            })
        }
    }
}

/// Every option of every stage: for each candidate and each region that offers it (cheapest
/// offer per region), allowed by the stage's and the pipeline's rules. A stage left with no
/// option is an error at its line that says why.
pub fn stage_options(
    catalog: &Catalog,
    spec: &PipelineSpec,
) -> Result<Vec<Vec<StageOption>>, SpecError> {
    let pipeline_rules = constraints(&spec.rules, catalog, spec, 1)?;
    let mut all = Vec::new();
    for stage in &spec.stages {
        let stage_rules = constraints(&stage.rules, catalog, spec, stage.line)?;
        let mut best: BTreeMap<(usize, RegionId), StageOption> = BTreeMap::new();
        let mut why: Vec<String> = Vec::new();
        for (ci, cand) in stage.candidates.iter().enumerate() {
            let (mut offered, mut refused) = (0usize, BTreeMap::<String, usize>::new());
            for offer in catalog.vm_prices().offers() {
                if !matches(&cand.resource, offer) {
                    continue;
                }
                let Some(price) = offer.price else { continue };
                offered += 1;
                let Some(region) = grid_region(catalog, offer) else {
                    *refused
                        .entry("no measured network there".into())
                        .or_default() += 1;
                    continue;
                };
                let (instance, usd) = match (offer.cloud, offer.instance_type.is_empty()) {
                    (Cloud::Gcp, true) => {
                        let acc = offer.accelerator.as_ref().map_or("", |(a, _)| a.as_str());
                        match gcp_host(acc) {
                            None => (acc.to_string(), price.0),
                            Some(host) => {
                                match catalog.vm_prices().on_demand_price(&region, host) {
                                    Some(h) => (format!("{host} + {acc}"), price.0 + h.0),
                                    None => {
                                        *refused
                                            .entry(format!("no {host} host listed"))
                                            .or_default() += 1;
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                    _ => (offer.instance_type.clone(), price.0),
                };
                if stage.rules.confidential && !is_confidential(offer.cloud, &offer.instance_type) {
                    *refused
                        .entry("not confidential computing".into())
                        .or_default() += 1;
                    continue;
                }
                if let Some(r) = stage_rules
                    .refusal(&region)
                    .or_else(|| pipeline_rules.refusal(&region))
                {
                    *refused.entry(r).or_default() += 1;
                    continue;
                }
                let option = StageOption {
                    region: region.clone(),
                    instance,
                    usd_per_hour: usd,
                    hours: cand.hours,
                    candidate: ci,
                };
                let slot = best.entry((ci, region)).or_insert_with(|| option.clone());
                if option.usd_per_hour < slot.usd_per_hour {
                    *slot = option;
                }
            }
            if offered == 0 {
                why.push(format!(
                    "{} (line {}): no offer in the catalog",
                    cand.resource, cand.line
                ));
            } else if !best.keys().any(|(c, _)| *c == ci) {
                let reasons: Vec<String> =
                    refused.iter().map(|(r, n)| format!("{n}× {r}")).collect();
                why.push(format!(
                    "{} (line {}): {offered} offers, all refused ({})",
                    cand.resource,
                    cand.line,
                    reasons.join(", ")
                ));
            }
        }
        let options: Vec<StageOption> = prune(best.into_values().collect());
        if options.is_empty() {
            return Err(SpecError {
                file: spec.file.clone(),
                line: stage.line,
                column: 1,
                message: format!(
                    "stage {} cannot run anywhere its rules allow: {}",
                    stage.name,
                    why.join("; ")
                ),
            });
        }
        all.push(options);
    }
    Ok(all)
}

/// In one region, an option that is both dearer and slower than another can never be chosen:
/// drop it (transfers depend only on the region, so this loses nothing).
fn prune(options: Vec<StageOption>) -> Vec<StageOption> {
    let dominated = |o: &StageOption| {
        options.iter().any(|p| {
            p.region == o.region
                && p.compute_usd() <= o.compute_usd()
                && p.hours <= o.hours
                && (p.compute_usd() < o.compute_usd() || p.hours < o.hours)
        })
    };
    options.iter().filter(|o| !dominated(o)).cloned().collect()
}
