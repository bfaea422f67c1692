//! The catalog: what the clouds offer and charge, as data with provenance.
//!
//! - [`RegionId`] and [`location_of`]: regions as `cloud:region[-zone]`, with country/continent.
//! - [`ThroughputGrid`], [`RttGrid`], [`EgressPriceGrid`]: per ordered pair measurements/prices.
//! - [`VmPriceTable`] and [`GatewayVm`]: VM prices (SkyPilot's schema) and the transfer VM.
//!
//! A snapshot of public data is compiled in ([`Catalog::builtin`]), so skyx works with no files
//! around it; every piece can be replaced by a file in the same schema. The catalog does no
//! network IO: refreshing from measurements means writing a grid file (`skyx bench paths`) and
//! loading it here.

mod grid;
mod region;
pub mod units;
mod vm;

use std::collections::BTreeSet;

use serde::Serialize;

pub use grid::{EgressPriceGrid, GridColumn, LinkThroughput, RttGrid, ThroughputGrid};
pub use region::{Cloud, Continent, EU_COUNTRIES, Location, RegionId, location_of};
pub use units::{Gbps, Millis, UsdPerGb, UsdPerHour};
pub use vm::{
    GATEWAY_VM_TYPES, GatewayVm, GatewayVmType, VmOffer, VmPriceSource, VmPriceTable,
    gateway_vm_type,
};

/// What a plan that uses [`Catalog::server_side_gbps`] says about the figure.
pub const SERVER_SIDE_ESTIMATE: &str = "the provider's server-side copy speed is an estimate \
     (one VM's measured direct link; 10 Gbps within a region), not a measurement";

/// Errors from loading or querying the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A region id that does not have the `cloud:region` shape.
    #[error("bad region id '{id}': {why}")]
    BadRegionId { id: String, why: String },
    /// A well-formed region id that no loaded grid mentions.
    #[error("unknown region '{id}'{}", suggest(.suggestions))]
    UnknownRegion {
        id: String,
        suggestions: Vec<String>,
    },
    /// A cloud name other than aws, azure or gcp.
    #[error("unknown cloud '{0}' (expected aws, azure or gcp)")]
    UnknownCloud(String),
    /// A continent name not in the list.
    #[error(
        "unknown continent '{0}' (expected africa, asia, europe, north-america, oceania or \
         south-america)"
    )]
    UnknownContinent(String),
    /// A data file that does not follow its schema.
    #[error("{file}: line {line}: {why}")]
    BadFile {
        file: String,
        line: u64,
        why: String,
    },
}

fn suggest(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

impl CatalogError {
    fn csv(file: &str, e: csv::Error) -> Self {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        CatalogError::BadFile {
            file: file.to_string(),
            line,
            why: e.to_string(),
        }
    }
}

/// Where one piece of the catalog came from.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// Which piece: "throughput", "egress prices", "rtt", "vm prices".
    pub what: &'static str,
    pub source: String,
    /// When the numbers were measured or published, as the source states it.
    pub as_of: String,
}

/// Everything the planner knows about the clouds.
#[derive(Debug, Clone)]
pub struct Catalog {
    throughput: ThroughputGrid,
    egress: EgressPriceGrid,
    rtt: RttGrid,
    vms: VmPriceTable,
    regions: BTreeSet<RegionId>,
    provenance: Vec<Provenance>,
    /// Multiplies every agent VM's network caps: an emulated sky shapes links to a fraction of
    /// the measured throughput, and its VMs are that much smaller too.
    vm_network_scale: f64,
}

macro_rules! builtin_file {
    ($path:literal) => {
        (
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/", $path)),
            concat!("builtin:", $path),
        )
    };
}

/// Skyplane's complete 71-region grid of 2022-11-28 (iperf3, 64 connections, one VM per side).
pub const BUILTIN_THROUGHPUT: (&str, &str) = builtin_file!("skyplane/throughput_2022_11.csv");
/// Skyplane's 63-region grid of 2022-01-29 (the one its planner used until 2023).
pub const BUILTIN_THROUGHPUT_2022_01: (&str, &str) =
    builtin_file!("skyplane/throughput_2022_01.csv");
const BUILTIN_COST: (&str, &str) = builtin_file!("skyplane/cost_2023_02.csv");
const BUILTIN_COST_2022_05: (&str, &str) = builtin_file!("skyplane/cost_2022_05.csv");
const BUILTIN_RTT: (&str, &str) = builtin_file!("skyplane/latency_2022_04.csv");
const BUILTIN_VMS: [(Cloud, (&str, &str)); 3] = [
    (Cloud::Aws, builtin_file!("skypilot/aws_vms_subset.csv")),
    (Cloud::Azure, builtin_file!("skypilot/azure_vms_subset.csv")),
    (Cloud::Gcp, builtin_file!("skypilot/gcp_vms_subset.csv")),
];

impl Catalog {
    /// The compiled-in snapshot (see `catalog/data/SOURCE.md`).
    pub fn builtin() -> Catalog {
        Self::load_builtin().expect("the compiled-in catalog parses (checked by tests)")
    }

    fn load_builtin() -> Result<Catalog, CatalogError> {
        let (text, name) = BUILTIN_THROUGHPUT;
        let throughput = ThroughputGrid::from_csv(text.as_bytes(), name)?;
        let (text, name) = BUILTIN_COST;
        let mut egress = EgressPriceGrid::from_csv(text.as_bytes(), name)?;
        // The 2023 grid covers the 71 regions of the Nov-2022 throughput grid; the 2022-05 grid
        // adds the regions only the Jan-2022 throughput grid has, so either grid is priced.
        let (text, name) = BUILTIN_COST_2022_05;
        egress.fill_missing_from(&EgressPriceGrid::from_csv(text.as_bytes(), name)?);
        let (text, name) = BUILTIN_RTT;
        let rtt = RttGrid::from_csv(text.as_bytes(), name)?;
        let mut vms = VmPriceTable::default();
        for (cloud, (text, name)) in BUILTIN_VMS {
            vms.extend(VmPriceTable::from_csv(cloud, text.as_bytes(), name)?);
        }
        let provenance = vec![
            Provenance {
                what: "throughput",
                source: "Skyplane broadcast/profiles/whole_throughput_11_28.csv (iperf3 -P 64, \
                         m5.8xlarge / Standard_D32_v5 / n2-standard-32, receiver side)"
                    .into(),
                as_of: "2022-11-28".into(),
            },
            Provenance {
                what: "egress prices",
                source: "Skyplane broadcast/profiles/cost.csv, completed by profiles/cost.csv \
                         (first-tier list prices, no free tier or volume discounts)"
                    .into(),
                as_of: "2023-02 (2022-05 for regions only the older grid has)".into(),
            },
            Provenance {
                what: "rtt",
                source: "Skyplane profiles/latency.csv (ping -c 10, avg_rtt)".into(),
                as_of: "2022-04-16".into(),
            },
            Provenance {
                what: "vm prices",
                source: "SkyPilot catalog subset (aws v8, gcp v8, azure v6 vms.csv)".into(),
                as_of: "a 2024-2025 snapshot".into(),
            },
        ];
        Ok(Catalog::assemble(throughput, egress, rtt, vms, provenance))
    }

    fn assemble(
        throughput: ThroughputGrid,
        egress: EgressPriceGrid,
        rtt: RttGrid,
        vms: VmPriceTable,
        provenance: Vec<Provenance>,
    ) -> Catalog {
        let regions = throughput.regions();
        Catalog {
            throughput,
            egress,
            rtt,
            vms,
            regions,
            provenance,
            vm_network_scale: 1.0,
        }
    }

    /// Replaces the throughput grid (e.g. with `skyx bench paths` output). The set of plannable
    /// regions becomes that grid's regions.
    /// Scales every agent VM's egress and ingress caps by `factor` (for a scaled-down network
    /// such as the emulated sky).
    pub fn with_vm_network_scale(mut self, factor: f64, provenance: Provenance) -> Self {
        self.vm_network_scale = factor;
        self.provenance.push(provenance);
        self
    }

    pub fn with_throughput_grid(mut self, grid: ThroughputGrid, provenance: Provenance) -> Self {
        self.regions = grid.regions();
        self.throughput = grid;
        self.replace_provenance(provenance);
        self
    }

    /// Replaces the egress price grid.
    pub fn with_egress_prices(mut self, grid: EgressPriceGrid, provenance: Provenance) -> Self {
        self.egress = grid;
        self.replace_provenance(provenance);
        self
    }

    /// Replaces the VM price table.
    pub fn with_vm_prices(mut self, table: VmPriceTable, provenance: Provenance) -> Self {
        self.vms = table;
        self.replace_provenance(provenance);
        self
    }

    /// Replaces the RTT grid.
    pub fn with_rtt_grid(mut self, grid: RttGrid, provenance: Provenance) -> Self {
        self.rtt = grid;
        self.replace_provenance(provenance);
        self
    }

    fn replace_provenance(&mut self, p: Provenance) {
        self.provenance.retain(|old| old.what != p.what);
        self.provenance.push(p);
    }

    /// The regions the planner can use: those in the throughput grid.
    pub fn regions(&self) -> &BTreeSet<RegionId> {
        &self.regions
    }

    pub fn throughput(&self, src: &RegionId, dst: &RegionId) -> Option<LinkThroughput> {
        self.throughput.get(src, dst)
    }

    pub fn throughput_grid(&self) -> &ThroughputGrid {
        &self.throughput
    }

    pub fn egress_price(&self, src: &RegionId, dst: &RegionId) -> Option<UsdPerGb> {
        self.egress.get(src, dst)
    }

    /// What the provider's own copy between two buckets of one cloud moves with every object
    /// copying at once (S3 CopyObject, GCS rewrite, Azure Copy Blob); `None` across clouds.
    /// No public figure exists and none was measured from here, so this is an estimate, and
    /// plans that use it say so ([`SERVER_SIDE_ESTIMATE`]): across regions, the measured direct
    /// link of one VM (the provider's copy rides the same backbone); within one region, 10 Gbps.
    pub fn server_side_gbps(&self, src: &RegionId, dst: &RegionId) -> Option<Gbps> {
        if src.cloud() != dst.cloud() {
            return None;
        }
        if src == dst {
            return Some(Gbps(10.0));
        }
        self.throughput.get(src, dst).map(|l| l.gbps)
    }

    pub fn rtt(&self, src: &RegionId, dst: &RegionId) -> Option<Millis> {
        self.rtt.get(src, dst)
    }

    pub fn vm_prices(&self) -> &VmPriceTable {
        &self.vms
    }

    pub fn provenance(&self) -> &[Provenance] {
        &self.provenance
    }

    /// The transfer VM of `region` with its hourly price and where the price came from.
    pub fn gateway_vm(&self, region: &RegionId) -> Option<GatewayVm> {
        let ty = gateway_vm_type(region.cloud());
        let (base, source) = match self.vms.on_demand_price(region, ty.priced_as) {
            Some(p) => (
                p,
                VmPriceSource::Catalog {
                    priced_as: ty.priced_as.to_string(),
                    factor: ty.vcpu_factor,
                },
            ),
            None => (
                self.vms.median_price(region.cloud(), ty.priced_as)?,
                VmPriceSource::EstimatedCloudMedian {
                    priced_as: ty.priced_as.to_string(),
                    factor: ty.vcpu_factor,
                },
            ),
        };
        Some(GatewayVm {
            instance_type: ty.instance_type.to_string(),
            price: UsdPerHour(base.0 * ty.vcpu_factor),
            source,
            egress_cap: Gbps(ty.egress_cap.0 * self.vm_network_scale),
            ingress_cap: Gbps(ty.ingress_cap.0 * self.vm_network_scale),
        })
    }

    /// Parses `text` as a region id and checks that the catalog can plan with it.
    ///
    /// A GCP region without a zone (`gcp:us-central1`) is accepted when the grid measured
    /// exactly one zone of it. Unknown ids fail with the nearest known ids as suggestions.
    pub fn resolve_region(&self, text: &str) -> Result<RegionId, CatalogError> {
        let id: RegionId = text.parse()?;
        if self.regions.contains(&id) {
            return Ok(id);
        }
        let zones: Vec<&RegionId> = self
            .regions
            .iter()
            .filter(|r| r.cloud() == id.cloud() && r.region_name() == id.name())
            .collect();
        if let [only] = zones.as_slice() {
            return Ok((*only).clone());
        }
        let mut scored: Vec<(usize, &RegionId)> = self
            .regions
            .iter()
            .map(|r| (edit_distance(&r.to_string(), &id.to_string()), r))
            .collect();
        scored.sort();
        let suggestions = if zones.is_empty() {
            scored
                .iter()
                .take(3)
                .filter(|(d, _)| *d <= 6)
                .map(|(_, r)| r.to_string())
                .collect()
        } else {
            zones.iter().map(|r| r.to_string()).collect()
        };
        Err(CatalogError::UnknownRegion {
            id: id.to_string(),
            suggestions,
        })
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_snapshot_loads_the_full_71_region_grid() {
        let cat = Catalog::load_builtin().unwrap();
        assert_eq!(cat.regions().len(), 71);
        assert_eq!(cat.throughput_grid().len(), 71 * 70);
        for src in cat.regions() {
            for dst in cat.regions() {
                if src != dst {
                    assert!(
                        cat.egress_price(src, dst).is_some(),
                        "{src}->{dst} unpriced"
                    );
                }
            }
            let loc = location_of(src);
            assert!(loc.is_some(), "{src} has no location");
            assert!(
                cat.gateway_vm(src).is_some(),
                "{src} has no gateway VM price"
            );
        }
        assert!(
            cat.rtt(
                &"aws:us-east-1".parse().unwrap(),
                &"aws:us-west-2".parse().unwrap()
            )
            .is_some()
        );
    }

    #[test]
    fn older_grid_is_also_fully_priced_and_located() {
        let cat = Catalog::builtin();
        let (text, name) = BUILTIN_THROUGHPUT_2022_01;
        let grid = ThroughputGrid::from_csv(text.as_bytes(), name).unwrap();
        for (src, dst, _) in grid.iter() {
            assert!(
                cat.egress_price(src, dst).is_some(),
                "{src}->{dst} unpriced"
            );
            assert!(location_of(src).is_some(), "{src} has no location");
        }
    }

    #[test]
    fn gateway_price_is_derived_from_the_sibling_and_says_so() {
        let cat = Catalog::builtin();
        let vm = cat.gateway_vm(&"aws:us-east-1".parse().unwrap()).unwrap();
        assert_eq!(vm.instance_type, "m5.8xlarge");
        assert!((vm.price.0 - 4.0 * 0.384).abs() < 1e-9, "{:?}", vm.price);
        assert!(matches!(vm.source, VmPriceSource::Catalog { .. }));
        // The Azure subset covers US regions only: others are estimates, and say so.
        let eu = cat
            .gateway_vm(&"azure:westeurope".parse().unwrap())
            .unwrap();
        assert!(matches!(
            eu.source,
            VmPriceSource::EstimatedCloudMedian { .. }
        ));
    }

    #[test]
    fn unknown_regions_suggest_near_matches() {
        let cat = Catalog::builtin();
        let msg = cat.resolve_region("aws:us-east-7").unwrap_err().to_string();
        assert!(
            msg.contains("did you mean") && msg.contains("aws:us-east-1"),
            "{msg}"
        );
        assert_eq!(
            cat.resolve_region("gcp:us-central1").unwrap().to_string(),
            "gcp:us-central1-a"
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
