//! VM offers in SkyPilot's catalog schema, and the transfer-gateway VM of each region.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;

use crate::CatalogError;
use crate::region::{Cloud, RegionId};
use crate::units::{Gbps, UsdPerHour};

/// One row of a SkyPilot `vms.csv`: an instance type (or, for GCP, an accelerator priced on its
/// own) in one region or zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmOffer {
    pub cloud: Cloud,
    /// Empty for GCP accelerator rows, which are priced separately from their host VM.
    pub instance_type: String,
    pub accelerator: Option<(String, f64)>,
    pub vcpus: Option<f64>,
    pub memory_gib: Option<f64>,
    pub region: String,
    /// GCP zone name or AWS availability-zone id; empty for Azure.
    pub zone: String,
    pub price: Option<UsdPerHour>,
    pub spot_price: Option<UsdPerHour>,
}

/// All VM offers the catalog knows.
#[derive(Debug, Clone, Default)]
pub struct VmPriceTable {
    offers: Vec<VmOffer>,
}

impl VmPriceTable {
    /// Reads one of SkyPilot's per-cloud `vms.csv` files; columns are found by name because the
    /// three clouds order them differently.
    pub fn from_csv(cloud: Cloud, reader: impl Read, file: &str) -> Result<Self, CatalogError> {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers = rdr
            .headers()
            .map_err(|e| CatalogError::csv(file, e))?
            .clone();
        let col = |name: &str| headers.iter().position(|h| h.trim() == name);
        let need = |name: &str| {
            col(name).ok_or_else(|| CatalogError::BadFile {
                file: file.to_string(),
                line: 1,
                why: format!("missing column {name}"),
            })
        };
        let (type_i, region_i, price_i) = (need("InstanceType")?, need("Region")?, need("Price")?);
        let (acc_i, acc_n_i, vcpu_i, mem_i, spot_i, zone_i) = (
            col("AcceleratorName"),
            col("AcceleratorCount"),
            col("vCPUs"),
            col("MemoryGiB"),
            col("SpotPrice"),
            col("AvailabilityZone"),
        );
        let mut offers = Vec::new();
        for record in rdr.records() {
            let record = record.map_err(|e| CatalogError::csv(file, e))?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let text = |i: Option<usize>| {
                i.and_then(|i| record.get(i))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            let number = |i: Option<usize>, name: &str| -> Result<Option<f64>, CatalogError> {
                let t = text(i);
                if t.is_empty() {
                    return Ok(None);
                }
                t.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(Some)
                    .ok_or_else(|| CatalogError::BadFile {
                        file: file.to_string(),
                        line,
                        why: format!("column {name}: '{t}' is not a non-negative number"),
                    })
            };
            let accelerator = match text(acc_i) {
                a if a.is_empty() => None,
                a => Some((a, number(acc_n_i, "AcceleratorCount")?.unwrap_or(1.0))),
            };
            offers.push(VmOffer {
                cloud,
                instance_type: text(Some(type_i)),
                accelerator,
                vcpus: number(vcpu_i, "vCPUs")?,
                memory_gib: number(mem_i, "MemoryGiB")?,
                region: text(Some(region_i)),
                zone: text(zone_i),
                price: number(Some(price_i), "Price")?.map(UsdPerHour),
                spot_price: number(spot_i, "SpotPrice")?.map(UsdPerHour),
            });
        }
        Ok(VmPriceTable { offers })
    }

    pub fn extend(&mut self, other: VmPriceTable) {
        self.offers.extend(other.offers);
    }

    pub fn push(&mut self, offer: VmOffer) {
        self.offers.push(offer);
    }

    pub fn offers(&self) -> &[VmOffer] {
        &self.offers
    }

    /// The on-demand price of `instance_type` where `region` runs: the exact GCP zone if listed,
    /// else the cheapest row of the same region.
    pub fn on_demand_price(&self, region: &RegionId, instance_type: &str) -> Option<UsdPerHour> {
        let rows = || {
            self.offers.iter().filter(|o| {
                o.cloud == region.cloud()
                    && o.instance_type == instance_type
                    && o.region == region.region_name()
            })
        };
        let exact_zone = rows()
            .filter(|o| o.zone == region.name())
            .filter_map(|o| o.price)
            .next();
        exact_zone.or_else(|| {
            rows()
                .filter_map(|o| o.price)
                .min_by(|a, b| a.0.total_cmp(&b.0))
        })
    }

    /// The median on-demand price of `instance_type` across every region that lists it.
    pub fn median_price(&self, cloud: Cloud, instance_type: &str) -> Option<UsdPerHour> {
        let mut per_region: BTreeMap<&str, f64> = BTreeMap::new();
        for o in &self.offers {
            if o.cloud == cloud
                && o.instance_type == instance_type
                && let Some(p) = o.price
            {
                let e = per_region.entry(&o.region).or_insert(f64::INFINITY);
                *e = e.min(p.0);
            }
        }
        let mut prices: Vec<f64> = per_region.into_values().collect();
        if prices.is_empty() {
            return None;
        }
        prices.sort_by(f64::total_cmp);
        Some(UsdPerHour(prices[prices.len() / 2]))
    }
}

/// The VM the transfer agents run on in each cloud, and its network limits.
///
/// The throughput grids were measured between these 32-vCPU types (Skyplane's defaults), so the
/// per-VM caps and the grid describe the same machine. SkyPilot's catalog subset prices their
/// 8-vCPU siblings; each family is priced linearly in vCPUs, so the gateway costs
/// `vcpu_factor` × the sibling's price (reported as a derived price).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayVmType {
    pub cloud: Cloud,
    pub instance_type: &'static str,
    pub priced_as: &'static str,
    pub vcpu_factor: f64,
    /// Per-VM egress limit for traffic leaving the region (Skyplane's measurements).
    pub egress_cap: Gbps,
    /// Per-VM ingress limit.
    pub ingress_cap: Gbps,
}

pub const GATEWAY_VM_TYPES: [GatewayVmType; 3] = [
    GatewayVmType {
        cloud: Cloud::Aws,
        instance_type: "m5.8xlarge",
        priced_as: "m6i.2xlarge",
        vcpu_factor: 4.0,
        egress_cap: Gbps(5.0),
        ingress_cap: Gbps(10.0),
    },
    GatewayVmType {
        cloud: Cloud::Azure,
        instance_type: "Standard_D32_v5",
        priced_as: "Standard_D8s_v5",
        vcpu_factor: 4.0,
        egress_cap: Gbps(16.0),
        ingress_cap: Gbps(16.0),
    },
    GatewayVmType {
        cloud: Cloud::Gcp,
        instance_type: "n2-standard-32",
        priced_as: "n2-standard-8",
        vcpu_factor: 4.0,
        egress_cap: Gbps(7.0),
        ingress_cap: Gbps(16.0),
    },
];

pub fn gateway_vm_type(cloud: Cloud) -> &'static GatewayVmType {
    GATEWAY_VM_TYPES
        .iter()
        .find(|g| g.cloud == cloud)
        .expect("every cloud has a gateway type")
}

/// Where a gateway VM's hourly price came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VmPriceSource {
    /// The sibling type's listed price in this region, times the vCPU factor.
    Catalog { priced_as: String, factor: f64 },
    /// The region has no row for the sibling; the cloud-wide median is used instead.
    EstimatedCloudMedian { priced_as: String, factor: f64 },
    /// The user overrode the price for every region.
    UserOverride,
}

/// The gateway VM for one region, priced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayVm {
    pub instance_type: String,
    pub price: UsdPerHour,
    pub source: VmPriceSource,
    pub egress_cap: Gbps,
    pub ingress_cap: Gbps,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCP: &str = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice\n\
n2-standard-8,8.0,32.0,,,,us-central1,us-central1-a,0.388,0.08\n\
n2-standard-8,8.0,32.0,,,,us-central1,us-central1-b,0.400,0.08\n\
n2-standard-8,8.0,32.0,,,,europe-west4,europe-west4-a,0.42,0.09\n\
,,,tpu-v3-8,1,,us-central1,us-central1-a,8.0,2.4\n";

    #[test]
    fn gcp_zone_price_prefers_the_exact_zone() {
        let t = VmPriceTable::from_csv(Cloud::Gcp, GCP.as_bytes(), "gcp.csv").unwrap();
        let b: RegionId = "gcp:us-central1-b".parse().unwrap();
        assert_eq!(
            t.on_demand_price(&b, "n2-standard-8"),
            Some(UsdPerHour(0.4))
        );
        let f: RegionId = "gcp:us-central1-f".parse().unwrap();
        assert_eq!(
            t.on_demand_price(&f, "n2-standard-8"),
            Some(UsdPerHour(0.388))
        );
        assert_eq!(
            t.median_price(Cloud::Gcp, "n2-standard-8"),
            Some(UsdPerHour(0.42))
        );
        let tpu = t.offers().iter().find(|o| o.accelerator.is_some()).unwrap();
        assert_eq!(tpu.accelerator, Some(("tpu-v3-8".to_string(), 1.0)));
    }

    #[test]
    fn negative_prices_are_rejected_with_their_line() {
        let bad = "InstanceType,Region,Price\nm6i.2xlarge,us-east-1,-1\n";
        let msg = VmPriceTable::from_csv(Cloud::Aws, bad.as_bytes(), "aws.csv")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("aws.csv") && msg.contains("line 2") && msg.contains("Price"));
    }
}
