//! What a run reports: the summary of a copy (objects, bytes per hop, metered cost, how each
//! object was verified), progress snapshots, and the agents' final metrics.

use super::*;

pub use skyx_agent_api::wire::Verification;

/// One object that did not make it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedObject {
    pub key: String,
    pub why: String,
}

/// Bytes and dollars on one region pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HopReport {
    pub src_region: String,
    pub dst_region: String,
    pub wire_bytes: u64,
    /// Of `wire_bytes`, chunks the hop sent again because they were lost or corrupted on it.
    /// (Chunks the gateway dispatched again count in `wire_bytes` only.)
    pub resent_bytes: u64,
    pub usd_per_gb: Option<f64>,
    pub egress_usd: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentReport {
    pub name: String,
    pub region: String,
    pub seconds: f64,
    pub usd_per_hour: Option<f64>,
    pub usd: f64,
    /// CPU the agent used, and its peak memory (as it last reported them).
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// Bytes it put on the wire (all its routes' outgoing hops).
    pub wire_bytes_out: u64,
    /// (a sink) The most objects it held at once.
    pub objects_held_peak: u64,
}

/// What the planner predicted for a plan, on the volume it was made for.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub time_s: f64,
    pub throughput_gbps: f64,
    pub cost_usd: f64,
    pub egress_usd: f64,
    pub vm_usd: f64,
}

/// The route planned again at a milestone of the listing, or around regions out of capacity
/// as the copy started, and what that changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refinement {
    /// How far the listing had gone.
    pub listed_objects: u64,
    pub listed_bytes: u64,
    pub listing_ended: bool,
    /// The volume planned on: listed and not yet landed.
    pub to_go_bytes: u64,
    /// The new plan in a line; `None` when it could not be planned (the route stayed).
    pub plan: Option<String>,
    /// What the planner predicted for it, when it says.
    pub prediction: Option<Prediction>,
    pub agents_launched: Vec<String>,
    pub routes_built: usize,
    /// Routes that stopped taking chunks for the new ones.
    pub routes_drained: usize,
    /// What could not be done (the routes that could be are running).
    pub failures: Vec<String>,
    /// Why it planned again, when not for the listing: regions with no capacity for an agent
    /// as the copy started (then the new plan's agents are launched in its place, not listed
    /// here).
    pub cause: Option<String>,
}

/// What a copy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    pub job: u64,
    pub objects_total: u64,
    /// The most objects the gateway held in its window at once.
    pub objects_held_peak: u64,
    /// Completed and verified by this run.
    pub objects_copied: u64,
    /// Of those, copied by the provider itself (server-side), not through agents.
    pub objects_server_side: u64,
    /// Already complete from an earlier, interrupted run (`--resume`).
    pub objects_resumed: u64,
    pub objects_failed: Vec<FailedObject>,
    pub bytes_total: u64,
    /// Raw bytes sources read and sent in this run.
    pub bytes_sent: u64,
    /// Chunks that had landed before this run and were not sent again.
    pub chunks_skipped: u64,
    pub chunks_total: u64,
    pub elapsed_s: f64,
    /// Logical Gbps over this run.
    pub throughput_gbps: f64,
    /// Wire bytes leaving the sources / raw bytes sent.
    pub compression_ratio: f64,
    pub hops: Vec<HopReport>,
    pub agents: Vec<AgentReport>,
    pub egress_usd: f64,
    pub vm_usd: f64,
    pub total_usd: f64,
    pub verified: BTreeMap<String, u64>,
    pub agents_replaced: u32,
    /// Each time the route was planned again as the listing streamed (none for a listing
    /// that ended before the copy started).
    pub refinements: Vec<Refinement>,
    pub corrupt_chunks_detected: u64,
    pub journal: Option<String>,
}

/// What the progress callback sees.
#[derive(Debug, Clone, Copy)]
pub struct ProgressSnapshot {
    pub progress: Progress,
    pub elapsed: Duration,
    /// Bytes put on the wire by the sources in this run.
    pub wire_bytes: u64,
    /// Objects held in the run's window now.
    pub objects_held: u64,
}

impl Run<'_> {
    pub(super) fn snapshot(&self, tracker: &Tracker, started: Instant) -> ProgressSnapshot {
        let wire_bytes = self
            .routes
            .iter()
            .flat_map(|route| route.shape.children(0).map(|c| self.link_bytes(route, c).0))
            .sum();
        ProgressSnapshot {
            progress: tracker.progress(),
            elapsed: started.elapsed(),
            wire_bytes,
            objects_held: self.active.len() as u64,
        }
    }

    /// Wire bytes and resent bytes of the link into node `node` of `route`, as the agent
    /// sending on it counted them.
    pub(super) fn link_bytes(&self, route: &RouteRt, node: usize) -> (u64, u64) {
        let link = route.links[node - 1];
        let sender = route.shape.agents[route.shape.parents[node - 1]];
        self.agents[sender]
            .metrics
            .routes
            .iter()
            .filter(|m| m.route == link)
            .fold((0, 0), |(w, r), m| (w + m.wire_bytes, r + m.resent_bytes))
    }

    /// Reads every live agent's counters once more: the last poll may predate the last bytes.
    pub(super) async fn final_metrics(&mut self) {
        let reads = self
            .agents
            .iter()
            .map(|rt| {
                let (client, alive) = (rt.client.clone(), rt.alive);
                async move {
                    if alive {
                        client.metrics().await.ok()
                    } else {
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        for (rt, res) in self
            .agents
            .iter_mut()
            .zip(futures::future::join_all(reads).await)
        {
            if let Some(m) = res {
                rt.metrics = m;
            }
        }
    }

    pub(super) fn report(&self, tracker: &Tracker, started: Instant) -> CopyReport {
        let p = tracker.progress();
        let elapsed = started.elapsed().as_secs_f64();
        let mut hops: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut first_hop_wire = 0;
        for route in &self.routes {
            let shape = &route.shape;
            for node in 1..shape.agents.len() {
                let (bytes, resent) = self.link_bytes(route, node);
                let parent = shape.parents[node - 1];
                // (A source that forks sends the same chunks on each branch: one counts.)
                if parent == 0 && shape.children(0).next() == Some(node) {
                    first_hop_wire += bytes;
                }
                let hop = hops
                    .entry((
                        self.agents[shape.agents[parent]].slot.region.clone(),
                        self.agents[shape.agents[node]].slot.region.clone(),
                    ))
                    .or_default();
                hop.0 += bytes;
                hop.1 += resent;
            }
        }
        let hops: Vec<HopReport> = hops
            .into_iter()
            .map(|((a, b), (bytes, resent))| {
                let price = if a == b {
                    Some(0.0)
                } else {
                    self.pricing
                        .egress_usd_per_gb
                        .get(&(a.clone(), b.clone()))
                        .copied()
                };
                HopReport {
                    egress_usd: price.unwrap_or(0.0) * bytes as f64 / 1e9,
                    src_region: a,
                    dst_region: b,
                    wire_bytes: bytes,
                    resent_bytes: resent,
                    usd_per_gb: price,
                }
            })
            .collect();
        let agents: Vec<AgentReport> = self
            .agents
            .iter()
            .map(|rt| {
                let seconds = rt
                    .ended
                    .unwrap_or_else(Instant::now)
                    .duration_since(rt.started)
                    .as_secs_f64();
                let price = self.pricing.vm_usd_per_hour.get(&rt.slot.region).copied();
                AgentReport {
                    name: rt.slot.name(),
                    region: rt.slot.region.clone(),
                    seconds,
                    usd_per_hour: price,
                    usd: price.unwrap_or(0.0) * (seconds + self.pricing.vm_overhead_s) / 3600.0,
                    cpu_seconds: rt.metrics.cpu_seconds,
                    peak_rss_bytes: rt.metrics.peak_rss_bytes,
                    wire_bytes_out: rt.metrics.routes.iter().map(|r| r.wire_bytes).sum(),
                    objects_held_peak: rt.metrics.objects_held_peak,
                }
            })
            .collect();
        let bytes_sent: u64 = self.agents.iter().map(|a| a.metrics.raw_bytes_sent).sum();
        // (`+ 0.0`: an empty float sum is -0.0, which prints as "$-0.0000".)
        let egress_usd: f64 = hops.iter().map(|h| h.egress_usd).sum::<f64>() + 0.0;
        let vm_usd: f64 = agents.iter().map(|a| a.usd).sum::<f64>() + 0.0;
        let moved: u64 = p.bytes_landed;
        CopyReport {
            job: self.job_id.0,
            objects_total: p.objects_total + self.resumed.0 + self.failed_unadmitted,
            objects_held_peak: self.held_peak,
            objects_copied: p.objects_complete,
            objects_server_side: 0,
            objects_resumed: self.resumed.0,
            objects_failed: self.failed.clone(),
            bytes_total: p.bytes_total + self.resumed.1,
            bytes_sent,
            chunks_skipped: self.chunks_skipped,
            chunks_total: p.chunks_total + self.resumed.2,
            elapsed_s: elapsed,
            throughput_gbps: if elapsed > 0.0 {
                bytes_sent.min(moved) as f64 * 8.0 / 1e9 / elapsed
            } else {
                0.0
            },
            compression_ratio: if first_hop_wire > 0 {
                bytes_sent as f64 / first_hop_wire as f64
            } else {
                1.0
            },
            hops,
            agents,
            egress_usd,
            vm_usd,
            total_usd: egress_usd + vm_usd,
            verified: self.verified.clone(),
            agents_replaced: self.replaced,
            refinements: self.refinements.clone(),
            corrupt_chunks_detected: self
                .agents
                .iter()
                .map(|a| a.metrics.corrupt_chunks_received)
                .sum(),
            journal: self
                .journal
                .as_ref()
                .map(|j| j.path().display().to_string()),
        }
    }
}
