//! Refining the plan while the listing streams: at each milestone of the bytes listed
//! ([`Milestones`]), the caller's planner plans again on the volume still to go, and what the
//! new plan changes ([`changes`]) is applied to the running copy: agents launched, routes
//! built, routes drained (they stop taking chunks; what they carry lands). Every refinement is
//! reported, whether or not it changed anything.
//!
//! The volume comes from a [`ListedVolume`]: the caller's, filled by a listing that only
//! counts and runs ahead of the copy (`streamed::probe_volume`), or else the copy's own
//! listing, which runs only a queue's length ahead of what the copy took in. Launching agents
//! can take minutes on a cloud: the launches run beside the copy (the run loop polls them
//! with its other work) and their routes are built once all have answered. A run that ends
//! with launches under way waits for them, so that every agent launched is torn down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::FutureExt;

use super::wiring::launch_and_install;
use super::*;
use crate::core::replan::{Changes, Milestones, NewAgent, RunningRoute, changes};

/// How far a listing has gone: objects and bytes listed, and whether it ended. Shared between
/// the task that lists and the run that reads it.
#[derive(Debug, Default)]
pub struct ListedVolume {
    objects: AtomicU64,
    bytes: AtomicU64,
    ended: AtomicBool,
}

impl ListedVolume {
    /// One more object of `size` bytes listed.
    pub fn add(&self, size: u64) {
        self.objects.fetch_add(1, Ordering::Release);
        self.bytes.fetch_add(size, Ordering::Release);
    }

    /// The listing ended: the counts are final.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }

    /// Objects and bytes listed so far, and whether the listing ended.
    pub fn read(&self) -> (u64, u64, bool) {
        // `ended` first: once it reads true, the counts read after it are final.
        let ended = self.ended.load(Ordering::Acquire);
        (
            self.objects.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
            ended,
        )
    }
}

/// What the volume looks like when the route is planned again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeEstimate {
    /// Objects and bytes listed so far.
    pub listed_objects: u64,
    pub listed_bytes: u64,
    /// The listing has ended: `listed_bytes` is the copy's whole volume.
    pub listing_ended: bool,
    /// Bytes landed so far (in this run, and by earlier runs it resumed).
    pub landed_bytes: u64,
}

impl VolumeEstimate {
    /// The bytes still to move, at least: listed and not landed.
    pub fn to_go(&self) -> u64 {
        self.listed_bytes.saturating_sub(self.landed_bytes)
    }
}

/// A plan made again.
#[derive(Debug, Clone)]
pub struct Replanned {
    pub topology: Topology,
    /// Prices of its regions and hops (merged into the run's, for metering).
    pub pricing: Pricing,
    /// The plan in a line, for the report.
    pub summary: String,
    /// What the planner predicts for it, when it says.
    pub prediction: Option<Prediction>,
}

/// Plans the route again on a refined volume, or around regions out of capacity (the caller
/// owns the planner and its request).
pub trait Replanner: Send + Sync + std::fmt::Debug {
    /// The plan for `estimate`'s volume to go, through none of the `refused` regions (found
    /// out of capacity); `None` when it cannot be planned (the running plan stays; say why in
    /// the log).
    fn replan(&self, estimate: &VolumeEstimate, refused: &[String]) -> Option<Replanned>;
}

/// How a run plans again: the bytes its first plan was made on, the planner, and where the
/// listing's volume is counted (`None`: the copy's own listing).
#[derive(Debug, Clone)]
pub struct Replan {
    pub planned_on: u64,
    pub planner: Arc<dyn Replanner>,
    pub volume: Option<Arc<ListedVolume>>,
}

type Launched = Vec<(NewAgent, Result<AgentSession, CopyError>)>;

/// A refinement whose agents are being launched.
pub(super) struct PendingRefinement<'a> {
    refinement: Refinement,
    changes: Changes,
    /// (In a mutex, never locked, only so that the run stays `Sync` while it holds it.)
    launching: std::sync::Mutex<Pin<Box<dyn Future<Output = Launched> + Send + 'a>>>,
}

impl<'a> PendingRefinement<'a> {
    fn launching(&mut self) -> &mut Pin<Box<dyn Future<Output = Launched> + Send + 'a>> {
        self.launching
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<'a> Run<'a> {
    /// On a tick: plans again if the listing reached a milestone (and no refinement is under
    /// way). Never fails the copy: what cannot be done is reported.
    pub(super) async fn refine(&mut self, tracker: &Tracker) {
        if self.refining.is_some() {
            return;
        }
        let Some(replan) = self.job.options.replan.clone() else {
            return;
        };
        // A paced copy (requests or bytes per second, shared among its agents as planned)
        // gains nothing from more agents and would exceed its limits with them.
        if self.job.options.tps_limit.is_some() || self.job.options.bw_limit.is_some() {
            return;
        }
        let (objects, bytes, ended) = match &replan.volume {
            Some(v) => v.read(),
            None => self.feed.listed().read(),
        };
        let milestones = self
            .milestones
            .get_or_insert_with(|| Milestones::new(replan.planned_on));
        if !milestones.due(bytes, ended) {
            return;
        }
        let estimate = VolumeEstimate {
            listed_objects: objects,
            listed_bytes: bytes,
            listing_ended: ended,
            landed_bytes: tracker.progress().bytes_landed + self.resumed.1,
        };
        let planned = self.plan(replan.planner.clone(), estimate).await;
        let mut refinement = Refinement {
            listed_objects: objects,
            listed_bytes: bytes,
            listing_ended: ended,
            to_go_bytes: estimate.to_go(),
            plan: None,
            prediction: None,
            agents_launched: Vec::new(),
            routes_built: 0,
            routes_drained: 0,
            failures: Vec::new(),
            cause: None,
        };
        let Some(new) = planned else {
            self.record(refinement);
            return;
        };
        refinement.plan = Some(new.summary.clone());
        refinement.prediction = new.prediction;
        let changes = self.changes_for(&new.topology);
        if changes.is_empty() {
            self.record(refinement);
            return;
        }
        self.add_prices(new.pricing);
        let mut launches = Vec::new();
        for a in &changes.launch {
            // A slot whose agent died is the replacements' (`--max-replacements`), not ours.
            if self.agents.iter().any(|rt| rt.stands_for == a.slot) {
                refinement.failures.push(format!(
                    "{} died earlier; not launched again",
                    a.slot.name()
                ));
                continue;
            }
            match self.job_spec(&a.slot.name(), a.source, a.sink.then_some(0)) {
                Ok(spec) => launches.push((a.clone(), spec)),
                Err(e) => refinement.failures.push(e.to_string()),
            }
        }
        let (provider, gateway) = (self.provider, self.gateway.clone());
        let launching = async move {
            let results = futures::future::join_all(
                launches
                    .iter()
                    .map(|(a, spec)| launch_and_install(provider, &a.slot, &gateway, spec)),
            )
            .await;
            launches.into_iter().map(|(a, _)| a).zip(results).collect()
        }
        .boxed();
        self.refining = Some(PendingRefinement {
            refinement,
            changes,
            launching: std::sync::Mutex::new(launching),
        });
    }

    /// The launches of the refinement under way, once they all answered (pending forever when
    /// there is none: the run loop polls it beside its other work).
    pub(super) async fn launches(refining: &mut Option<PendingRefinement<'a>>) -> Launched {
        match refining {
            Some(p) => p.launching().await,
            None => std::future::pending().await,
        }
    }

    /// The refinement under way launched its agents: builds its routes, drains the old ones.
    pub(super) async fn launched(&mut self, launched: Launched) {
        if let Some(pending) = self.refining.take() {
            self.finish(pending, launched).await;
        }
    }

    /// Waits for the launches of a refinement under way and takes their agents in (so the
    /// teardown reaches them), building no route: the copy is over.
    pub(super) async fn settle_refinement(&mut self) {
        if let Some(mut pending) = self.refining.take() {
            let launched = pending.launching().await;
            self.take_in(launched, &mut pending.refinement);
            pending
                .refinement
                .failures
                .push("the copy ended before the new routes were built".into());
            self.record(pending.refinement);
        }
    }

    /// What moving to `topology` changes, from the routes and live agents running.
    fn changes_for(&self, topology: &Topology) -> Changes {
        let running: Vec<RunningRoute> = self
            .routes
            .iter()
            .map(|r| RunningRoute {
                slots: r
                    .shape
                    .agents
                    .iter()
                    .map(|&a| self.agents[a].stands_for.clone())
                    .collect(),
                alive: r.alive,
                drained: r.drained,
            })
            .collect();
        let live: Vec<AgentSlot> = self
            .agents
            .iter()
            .filter(|a| a.alive)
            .map(|a| a.stands_for.clone())
            .collect();
        changes(&running, &live, topology)
    }

    /// Takes the launched agents in, builds the new routes and drains the old ones: only
    /// when every planned route was built or given chunks again, so a plan carried out in
    /// part never leaves the copy with less than it had.
    async fn finish(&mut self, pending: PendingRefinement<'a>, launched: Launched) {
        let PendingRefinement {
            mut refinement,
            changes,
            ..
        } = pending;
        self.take_in(launched, &mut refinement);
        let mut complete = true;
        for &r in &changes.undrain {
            if self.routes[r].alive {
                self.routes[r].drained = false;
            } else {
                complete = false;
            }
        }
        for (slots, connections) in changes.build {
            let Some(agents) = self.agents_for(&slots) else {
                complete = false;
                refinement.failures.push(format!(
                    "no agent can carry the route {}",
                    slot_names(&slots)
                ));
                continue;
            };
            match self
                .build_route(RouteSpec::chain(agents, connections, 0.0))
                .await
            {
                Ok(_) => refinement.routes_built += 1,
                Err(e) => {
                    complete = false;
                    refinement
                        .failures
                        .push(format!("building the route {}: {e}", slot_names(&slots)));
                }
            }
        }
        if complete {
            for r in changes.drain {
                if self.routes[r].taking() {
                    self.routes[r].drained = true;
                    refinement.routes_drained += 1;
                }
            }
        }
        self.record(refinement);
    }

    /// Takes the agents that launched into the run; those that did not are reported.
    fn take_in(&mut self, launched: Launched, refinement: &mut Refinement) {
        for (a, res) in launched {
            match res {
                Ok(l) => {
                    self.adopt(a.slot.clone(), l, a.source, a.sink.then_some(0));
                    refinement.agents_launched.push(a.slot.name());
                }
                Err(e) => refinement
                    .failures
                    .push(format!("launching {}: {e}", a.slot.name())),
            }
        }
    }

    /// A plan without the `full` regions, which had no capacity for an agent as the copy
    /// started (each with the cloud's words), nor any region refused before; recorded as a
    /// refinement. `None` when there is none: no planner, every one refused already, or no
    /// plan avoids them (an end's own region, or a route pinned through one).
    pub(super) async fn plan_around(&mut self, full: &[(String, String)]) -> Option<Replanned> {
        let replan = self.job.options.capacity_replan.clone()?;
        let new: Vec<&(String, String)> = full
            .iter()
            .filter(|(r, _)| !self.refused.contains(r))
            .collect();
        if new.is_empty() {
            return None;
        }
        self.refused.extend(new.iter().map(|(r, _)| r.clone()));
        let (objects, bytes, ended) = match &replan.volume {
            Some(v) => v.read(),
            None => self.feed.listed().read(),
        };
        // The copy's own listing runs only a queue's length ahead: at least what the first
        // plan was made on is to go.
        let bytes = bytes.max(replan.planned_on);
        let estimate = VolumeEstimate {
            listed_objects: objects,
            listed_bytes: bytes,
            listing_ended: ended,
            landed_bytes: self.resumed.1,
        };
        let planned = self.plan(replan.planner, estimate).await?;
        let cause = (new.iter())
            .map(|(r, why)| format!("{r} had no capacity ({why})"))
            .collect::<Vec<_>>()
            .join("; ");
        self.record(Refinement {
            listed_objects: objects,
            listed_bytes: bytes,
            listing_ended: ended,
            to_go_bytes: estimate.to_go(),
            plan: Some(planned.summary.clone()),
            prediction: planned.prediction,
            agents_launched: Vec::new(),
            routes_built: 0,
            routes_drained: 0,
            failures: Vec::new(),
            cause: Some(cause),
        });
        self.add_prices(planned.pricing.clone());
        Some(planned)
    }

    /// Plans for `estimate` around the regions refused so far. The planner is CPU work of up
    /// to a second: off the runtime's threads. A plan through a refused region (it would only
    /// meet the same answer there), or one that does not hold together, is no plan.
    async fn plan(
        &self,
        planner: Arc<dyn Replanner>,
        estimate: VolumeEstimate,
    ) -> Option<Replanned> {
        let refused = self.refused.clone();
        let planned = tokio::task::spawn_blocking(move || planner.replan(&estimate, &refused))
            .await
            .ok()
            .flatten()?;
        let avoids = |a: &AgentSlot| !self.refused.contains(&a.region);
        if !planned.topology.agents.iter().all(avoids) {
            tracing::warn!(plan = %planned.summary, "a plan through a refused region; not taken");
            return None;
        }
        if let Err(e) = planned.topology.check() {
            tracing::warn!(plan = %planned.summary, error = %e, "a plan that does not hold together");
            return None;
        }
        Some(planned)
    }

    /// Prices of a new plan's regions and hops, for metering.
    fn add_prices(&mut self, pricing: Pricing) {
        self.pricing
            .egress_usd_per_gb
            .extend(pricing.egress_usd_per_gb);
        self.pricing.vm_usd_per_hour.extend(pricing.vm_usd_per_hour);
    }

    fn record(&mut self, refinement: Refinement) {
        tracing::info!(?refinement, "the route was planned again");
        self.refinements.push(refinement);
    }

    /// The live agents that stand for `slots`, each able to play its part on the route (the
    /// first reads the source, the last writes the destination).
    fn agents_for(&self, slots: &[AgentSlot]) -> Option<Vec<usize>> {
        let last = slots.len().checked_sub(1)?;
        slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                self.agents.iter().rposition(|a| {
                    a.alive
                        && &a.stands_for == slot
                        && (i != 0 || a.source)
                        && (i != last || a.sink.is_some())
                })
            })
            .collect()
    }
}

fn slot_names(slots: &[AgentSlot]) -> String {
    slots
        .iter()
        .map(AgentSlot::name)
        .collect::<Vec<_>>()
        .join(" -> ")
}
