//! The exhaustive mode (`max_relay_candidates: None`, `--relay-candidates all`): every allowed
//! region is considered, and the plan says how far from the optimum it can at most be.
//!
//! The exact program over all 71 regions of the built-in grid runs for up to a minute in
//! microlp (55 s measured for one request) and met numerical trouble ("Singular matrix") on a
//! third of cases with a GCP end, so this mode does not solve it. Instead:
//! - the LP relaxation over every allowed region bounds the optimum from below (cost) or above
//!   (throughput) and names the relays it routes through;
//! - the exact program runs over those relays plus the best [`EXHAUSTIVE_TWO_HOP`] by two-hop
//!   throughput and price (twice the default), and the better of that plan and the default
//!   candidates' plan is kept, so any trouble in the wider program leaves the default answer;
//! - the plan reports its gap to the bound: 0.3 % means no plan through any of the regions is
//!   more than 0.3 % better.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::PlanError;
use crate::network::Network;
use crate::plan::{RouteKind, RoutePlan};
use crate::programs::Goal;
use crate::request::TransferRequest;
use crate::solve::{self, Vms};

/// Relays by two-hop throughput and by two-hop price in the exhaustive mode's exact program.
pub const EXHAUSTIVE_TWO_HOP: usize = 32;

/// What the bound of [`OptimalityGap`] bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundKind {
    /// No plan costs less than `bound` dollars.
    CostUsdAtLeast,
    /// No plan within the cost cap is faster than `bound` logical Gbps.
    ThroughputGbpsAtMost,
}

/// How far a plan can at most be from the best plan over every allowed region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OptimalityGap {
    pub bound_kind: BoundKind,
    /// From the LP relaxation over every allowed region (fractional VMs and connections): for
    /// cost, the least it charges over steps of rates from the floor up (`solve::
    /// min_cost_lower_bound`); for throughput, its fastest rate within the cap.
    pub bound: f64,
    /// `(cost − bound) / bound` for a cost objective (the plan costs at most this much more
    /// than the best plan), `(bound − throughput) / bound` for a throughput one (it is at most
    /// this much slower); 0 means proven optimal. Part of it is the relaxation's own slack (a
    /// third of a VM is not for sale), so a gap is an upper limit, not a loss.
    pub relative: f64,
}

/// Whether `req` asks for the exhaustive mode.
pub fn is_exhaustive(req: &TransferRequest) -> bool {
    req.config.max_relay_candidates.is_none()
}

/// The relays the exhaustive mode's exact program considers: the relaxation's `support` (as
/// the default candidates were widened with) and the best [`EXHAUSTIVE_TWO_HOP`] two-hop
/// relays.
pub(crate) fn wide_network(full: &Network, support: &BTreeSet<usize>) -> Network {
    let mut candidates = crate::relay_candidates(full, EXHAUSTIVE_TWO_HOP);
    candidates.extend(support);
    full.restricted_to(&candidates)
}

/// `chosen`'s gap to the LP relaxation over `full`, or `None` when no bound applies (the
/// provider's own copy is outside the relay model) or the relaxation could not be solved.
pub(crate) fn gap(
    full: &Network,
    req: &TransferRequest,
    chosen: &RoutePlan,
) -> Result<Option<OptimalityGap>, PlanError> {
    if chosen.kind == RouteKind::ServerSide {
        return Ok(None);
    }
    let wire_gb = req.wire_volume_gb();
    let gap = match Goal::of(req) {
        Goal::WireFloor(floor) => {
            solve::min_cost_lower_bound(full, floor, wire_gb)?.map(|bound| OptimalityGap {
                bound_kind: BoundKind::CostUsdAtLeast,
                bound,
                relative: relative(chosen.cost_usd.total - bound, bound),
            })
        }
        Goal::CostCap(cap) => solve::max_throughput(full, cap, wire_gb, Vms::Relaxed)?.map(|f| {
            let bound = f.wire_gbps * req.compression_ratio;
            OptimalityGap {
                bound_kind: BoundKind::ThroughputGbpsAtMost,
                bound,
                relative: relative(bound - chosen.throughput_gbps, bound),
            }
        }),
    };
    // A plan beyond its bound by more than rounding means a solver fault: no gap is reported
    // rather than a wrong one.
    Ok(gap.filter(|g| match g.bound_kind {
        BoundKind::CostUsdAtLeast => chosen.cost_usd.total >= g.bound * (1.0 - ROUNDING),
        BoundKind::ThroughputGbpsAtMost => chosen.throughput_gbps <= g.bound * (1.0 + ROUNDING),
    }))
}

/// `excess / of`; a plan a hair better than the bound (the solvers' rounding) is at 0.
fn relative(excess: f64, of: f64) -> f64 {
    if of > 0.0 {
        (excess / of).max(0.0)
    } else {
        0.0
    }
}

/// How much better than its bound a plan may look before the bound is taken for a fault
/// and not reported.
const ROUNDING: f64 = 1e-6;

impl OptimalityGap {
    /// One line for the plan's notes.
    pub fn describe(&self, regions: usize) -> String {
        let what = match self.bound_kind {
            BoundKind::CostUsdAtLeast => format!("no plan costs less than ${:.2}", self.bound),
            BoundKind::ThroughputGbpsAtMost => {
                format!("no plan within the cap beats {:.2} Gbps", self.bound)
            }
        };
        let how = match self.bound_kind {
            BoundKind::CostUsdAtLeast => "costs at most",
            BoundKind::ThroughputGbpsAtMost => "is at most",
        };
        let than = match self.bound_kind {
            BoundKind::CostUsdAtLeast => "more than the best plan",
            BoundKind::ThroughputGbpsAtMost => "slower than the fastest",
        };
        format!(
            "exhaustive: all {regions} allowed regions considered; {what} (LP relaxation over \
             all of them), so this plan {how} {:.2}% {than}",
            self.relative * 100.0
        )
    }
}
