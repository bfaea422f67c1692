//! What a caller asks the planner for.

use serde::Serialize;
use skyx_catalog::{Cloud, Continent, Gbps, RegionId, UsdPerGb, UsdPerHour, location_of};

/// What to optimise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Objective {
    /// Cheapest plan that moves data at least this fast (logical, uncompressed Gbps).
    MinCost { throughput_floor: Gbps },
    /// Fastest plan whose total bill stays within the cap.
    MaxThroughput { cost_cap: CostCap },
    /// Cheapest plan that moves the whole volume within this many seconds.
    Deadline { seconds: f64 },
}

/// A cost ceiling for [`Objective::MaxThroughput`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostCap {
    /// Total dollars for the whole transfer (egress plus VMs).
    TotalUsd(f64),
    /// Dollars per GB of logical (uncompressed) data.
    PerGb(UsdPerGb),
}

/// Which routes the planner may use.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteChoice {
    /// Any overlay over the allowed regions (the default).
    #[default]
    Auto,
    /// Only the direct source → destination link.
    Direct,
    /// Exactly this chain of relays, in order.
    Via(Vec<RegionId>),
}

/// Allow and deny lists on where data may go. A region is usable when every non-empty allow
/// list admits it and no deny list names it. A region whose location is unknown is refused by
/// any country or continent rule: "data may only touch the EU" must not be satisfied by luck.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RegionConstraints {
    pub allow_regions: Vec<RegionId>,
    pub deny_regions: Vec<RegionId>,
    pub allow_clouds: Vec<Cloud>,
    pub deny_clouds: Vec<Cloud>,
    /// ISO 3166-1 alpha-2 codes, upper case.
    pub allow_countries: Vec<String>,
    pub deny_countries: Vec<String>,
    pub allow_continents: Vec<Continent>,
    pub deny_continents: Vec<Continent>,
}

impl RegionConstraints {
    pub fn is_empty(&self) -> bool {
        *self == RegionConstraints::default()
    }

    /// `None` when `region` is allowed, else the rule that refuses it.
    pub fn refusal(&self, region: &RegionId) -> Option<String> {
        if !self.allow_regions.is_empty() && !self.allow_regions.contains(region) {
            return Some("it is not in the allowed regions".into());
        }
        if self.deny_regions.contains(region) {
            return Some("the region is denied".into());
        }
        let cloud = region.cloud();
        if !self.allow_clouds.is_empty() && !self.allow_clouds.contains(&cloud) {
            return Some(format!("cloud {cloud} is not allowed"));
        }
        if self.deny_clouds.contains(&cloud) {
            return Some(format!("cloud {cloud} is denied"));
        }
        let geo_rules = !(self.allow_countries.is_empty()
            && self.deny_countries.is_empty()
            && self.allow_continents.is_empty()
            && self.deny_continents.is_empty());
        if !geo_rules {
            return None;
        }
        let Some(loc) = location_of(region) else {
            return Some(
                "its location is unknown, so country/continent rules cannot admit it".into(),
            );
        };
        if !self.allow_countries.is_empty()
            && !self.allow_countries.iter().any(|c| c == loc.country)
        {
            return Some(format!("country {} is not allowed", loc.country));
        }
        if self.deny_countries.iter().any(|c| c == loc.country) {
            return Some(format!("country {} is denied", loc.country));
        }
        if !self.allow_continents.is_empty() && !self.allow_continents.contains(&loc.continent) {
            return Some(format!("continent {} is not allowed", loc.continent));
        }
        if self.deny_continents.contains(&loc.continent) {
            return Some(format!("continent {} is denied", loc.continent));
        }
        None
    }
}

/// Knobs with defaults; not part of what the user wants, but of how hard the planner tries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannerConfig {
    /// Upper bound on agent VMs in any one region (quota).
    pub max_vms_per_region: u32,
    /// Upper bound on outgoing (and incoming) data connections per VM.
    pub max_connections_per_vm: u32,
    /// Override the catalog's gateway VM price in every region (spot or negotiated prices).
    pub vm_price_override: Option<UsdPerHour>,
    /// Seconds each agent VM is billed beyond the transfer itself: the clouds bill a VM for at
    /// least a minute, and from boot. Without it a tiny copy would start many VMs whose
    /// transfer-time cost rounds to nothing.
    pub vm_overhead_s: f64,
    /// How many relay candidates (besides source and destination) the overlay MILP considers.
    /// Candidates are the best relays by two-hop bottleneck throughput and by two-hop price; the
    /// MILP then routes freely (any number of hops) among them. `None` uses every region.
    pub max_relay_candidates: Option<usize>,
    /// Seconds the whole-connection repair's branch and bound may search (`None`: until it
    /// proves its plan within 0.5 % of the optimum). It starts from the fastest plan and finds
    /// its best plan within milliseconds on the cases measured, then can spend tens of seconds
    /// proving it; this limit is the one place where a plan may depend on the machine's speed,
    /// and the plan still says how far it is above the fractional optimum.
    pub repair_search_s: Option<f64>,
}

/// Relay candidates by two-hop throughput and price the overlay program considers by default.
pub const DEFAULT_RELAY_CANDIDATES: usize = 16;

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            max_vms_per_region: 8,
            max_connections_per_vm: 64,
            vm_price_override: None,
            vm_overhead_s: 60.0,
            max_relay_candidates: Some(DEFAULT_RELAY_CANDIDATES),
            repair_search_s: Some(1.0),
        }
    }
}

/// A request to move `volume_bytes` from `src` to `dst`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferRequest {
    pub src: RegionId,
    pub dst: RegionId,
    /// Logical (uncompressed) bytes to move.
    pub volume_bytes: u64,
    pub objective: Objective,
    /// Expected logical/wire ratio (≥ 1): bytes on the wire are what egress charges for and
    /// what links carry.
    pub compression_ratio: f64,
    pub constraints: RegionConstraints,
    pub route: RouteChoice,
    pub config: PlannerConfig,
    /// Both ends are stores of one cloud that can copy between them themselves (the same
    /// service and an identity that reads the source): the provider's own copy is a route.
    pub server_side: bool,
}

impl TransferRequest {
    /// A request with default compression (none), no constraints and automatic routing.
    pub fn new(src: RegionId, dst: RegionId, volume_bytes: u64, objective: Objective) -> Self {
        TransferRequest {
            src,
            dst,
            volume_bytes,
            objective,
            compression_ratio: 1.0,
            constraints: RegionConstraints::default(),
            route: RouteChoice::Auto,
            config: PlannerConfig::default(),
            server_side: false,
        }
    }

    pub fn volume_gb(&self) -> f64 {
        self.volume_bytes as f64 / 1e9
    }

    pub fn wire_volume_gb(&self) -> f64 {
        self.volume_gb() / self.compression_ratio
    }
}
