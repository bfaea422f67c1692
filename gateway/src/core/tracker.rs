//! Tracking every chunk of a copy's window: queued, in flight on a route, landed, or failed.
//!
//! Sans-IO like the protocol: the gateway's async code reports what happened (`handle_*`, with
//! time passed in) and asks what to do (`poll_dispatch`, `poll_event`). A chunk is done only
//! when the sink reports it verified and written; acknowledgements between hops are not enough,
//! because a relay that acked and then died has lost the chunk. So when a route fails, or a
//! chunk has not landed within the timeout, the chunk is queued again and goes out on whatever
//! route asks next.
//!
//! The tracker holds only the objects the gateway has taken in and not yet let go: objects are
//! `admit`ted as the listing streams in (with what a journal says already landed) and
//! `release`d once finished, so its memory is bounded by the gateway's window, not by the
//! size of the copy. Its counts (`Progress`) cover everything ever admitted.
//!
//! A broadcast has several destinations, and a chunk is done only once every one reports it
//! landed (`handle_landed_at`); until then it goes out again, when it must, only to those that
//! have not (`dests_of`), so what crossed a link for a destination that has it is not paid
//! again. A copy to one destination is the case of one.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use skyx_protocol::{ChunkId, Dests};

use crate::core::chunker::ChunkSpec;

/// A way through the overlay: a source agent and the hops behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Dispatches of one chunk before its object is declared failed.
    pub max_attempts: u32,
    /// A chunk in flight longer than this without landing is sent again.
    pub landing_timeout: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_attempts: 5,
            landing_timeout: Duration::from_secs(300),
        }
    }
}

/// What the gateway must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerEvent {
    /// Every chunk of the object landed: complete its upload and verify it.
    ObjectComplete { object: u32 },
    /// A chunk of the object could not be delivered; the object will not be completed.
    ObjectFailed {
        object: u32,
        chunk: ChunkId,
        attempts: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued {
        attempts: u32,
    },
    InFlight {
        route: RouteId,
        attempts: u32,
        since: Instant,
    },
    Landed,
    Failed,
}

/// Counts for progress bars and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub chunks_total: u64,
    pub chunks_landed: u64,
    pub bytes_total: u64,
    pub bytes_landed: u64,
    pub objects_total: u64,
    pub objects_complete: u64,
    pub objects_failed: u64,
}

#[derive(Debug, Clone, Copy)]
struct ChunkRt {
    spec: ChunkSpec,
    state: State,
    /// The destinations that reported it landed (bit `i`: destination `i`).
    landed_at: u16,
}

#[derive(Debug, Clone)]
struct ObjectRt {
    /// Its chunks' ids (contiguous: an object's chunks are numbered together).
    chunks: Range<u64>,
    /// Chunks not yet landed.
    remaining: u32,
    failed: bool,
}

#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    /// Destinations each chunk must land at (1 but for a broadcast).
    destinations: usize,
    chunks: HashMap<u64, ChunkRt>,
    objects: HashMap<u32, ObjectRt>,
    /// Chunks waiting for a route; retries go first. May hold chunks that landed or were
    /// released meanwhile (skipped when popped).
    queue: VecDeque<ChunkId>,
    /// Chunks in the `Queued` state.
    queued: usize,
    /// Admitted objects neither complete nor failed.
    unfinished: usize,
    events: VecDeque<TrackerEvent>,
    progress: Progress,
    /// Chunks in flight per route (kept with every state change, so asking is O(1)).
    in_flight: HashMap<RouteId, usize>,
}

impl Tracker {
    /// An empty tracker: objects come in through [`Tracker::admit`].
    pub fn new(config: TrackerConfig) -> Self {
        Self::broadcast(config, 1)
    }

    /// An empty tracker for a copy to `destinations` destinations at once (1 to
    /// [`Dests::MAX`]).
    pub fn broadcast(config: TrackerConfig, destinations: usize) -> Self {
        assert!(
            (1..=Dests::MAX).contains(&destinations),
            "a copy has 1 to {} destinations",
            Dests::MAX
        );
        Tracker {
            config,
            destinations,
            chunks: HashMap::new(),
            objects: HashMap::new(),
            queue: VecDeque::new(),
            queued: 0,
            unfinished: 0,
            events: VecDeque::new(),
            progress: Progress::default(),
            in_flight: HashMap::new(),
        }
    }

    /// A tracker with every object of `specs` admitted (as `plan_chunks` makes them), none landed.
    pub fn with_chunks(specs: &[ChunkSpec], config: TrackerConfig) -> Self {
        Self::resume(specs, std::iter::empty(), config)
    }

    /// As [`Tracker::with_chunks`], with `landed` chunks already done.
    pub fn resume(
        specs: &[ChunkSpec],
        landed: impl IntoIterator<Item = ChunkId>,
        config: TrackerConfig,
    ) -> Self {
        let landed: std::collections::HashSet<ChunkId> = landed.into_iter().collect();
        let mut t = Tracker::new(config);
        let mut start = 0;
        while start < specs.len() {
            let object = specs[start].object;
            let end = start
                + specs[start..]
                    .iter()
                    .take_while(|s| s.object == object)
                    .count();
            let of_object = &specs[start..end];
            let done: Vec<ChunkId> = of_object
                .iter()
                .map(|s| s.id)
                .filter(|c| landed.contains(c))
                .collect();
            t.admit(object, of_object, &done);
            start = end;
        }
        t
    }

    /// Takes in object `object`, cut into `specs` (its chunks, ids contiguous and new to the
    /// tracker; an empty object travels as one empty chunk), of which `landed` already landed
    /// (a journal says so). An object whose chunks all landed is reported complete at once.
    pub fn admit(&mut self, object: u32, specs: &[ChunkSpec], landed: &[ChunkId]) {
        assert!(!specs.is_empty(), "every object has at least one chunk");
        assert!(
            !self.objects.contains_key(&object),
            "object {object} admitted twice"
        );
        let first = specs[0].id.0;
        assert!(
            specs
                .iter()
                .enumerate()
                .all(|(i, s)| s.id.0 == first + i as u64 && s.object == object),
            "an object's chunk ids are contiguous"
        );
        self.objects.insert(
            object,
            ObjectRt {
                chunks: first..first + specs.len() as u64,
                remaining: specs.len() as u32,
                failed: false,
            },
        );
        self.unfinished += 1;
        self.progress.objects_total += 1;
        self.progress.chunks_total += specs.len() as u64;
        for s in specs {
            self.progress.bytes_total += s.len;
            self.chunks.insert(
                s.id.0,
                ChunkRt {
                    spec: *s,
                    state: State::Queued { attempts: 0 },
                    landed_at: 0,
                },
            );
            self.queued += 1;
            self.queue.push_back(s.id);
        }
        for c in landed {
            self.handle_landed(*c);
        }
    }

    /// Lets go of a finished (complete or failed) object: its chunks are forgotten, and late
    /// reports about them are ignored.
    pub fn release(&mut self, object: u32) {
        let Some(o) = self.objects.remove(&object) else {
            return;
        };
        if o.remaining > 0 && !o.failed {
            // Released unfinished (the run is giving it up): it no longer counts as pending.
            self.unfinished -= 1;
        }
        for id in o.chunks {
            if let Some(c) = self.chunks.get(&id).copied() {
                self.set_state(id, c.state, State::Failed);
                self.chunks.remove(&id);
            }
        }
    }

    /// Up to `max` chunks for `route` to carry, marked in flight on it.
    pub fn poll_dispatch(&mut self, route: RouteId, max: usize, now: Instant) -> Vec<ChunkSpec> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(c) = self.queue.pop_front() else {
                break;
            };
            let Some(rt) = self.chunks.get(&c.0).copied() else {
                continue;
            };
            if let State::Queued { attempts } = rt.state {
                if self.objects.get(&rt.spec.object).is_none_or(|o| o.failed) {
                    continue;
                }
                self.set_state(
                    c.0,
                    rt.state,
                    State::InFlight {
                        route,
                        attempts: attempts + 1,
                        since: now,
                    },
                );
                out.push(rt.spec);
            }
        }
        out
    }

    /// Destination `dest`'s sink verified and wrote the chunk; it is done once every
    /// destination's has. Repeated or late reports are harmless.
    pub fn handle_landed_at(&mut self, chunk: ChunkId, dest: usize) {
        let all = self.all_destinations();
        let Some(rt) = self.chunks.get_mut(&chunk.0) else {
            return;
        };
        rt.landed_at |= 1 << dest;
        if rt.landed_at & all == all {
            self.handle_landed(chunk);
        }
    }

    /// The destinations the chunk has still to land at, as its next dispatch names them
    /// ([`Dests::ALL`] for a copy to one destination).
    pub fn dests_of(&self, chunk: ChunkId) -> Dests {
        if self.destinations == 1 {
            return Dests::ALL;
        }
        let landed = self.chunks.get(&chunk.0).map_or(0, |c| c.landed_at);
        Dests(self.all_destinations() & !landed)
    }

    /// Whether a landing of the chunk reported by destination `dest` is news.
    pub fn awaits_landing_at(&self, chunk: ChunkId, dest: usize) -> bool {
        self.awaits_landing(chunk)
            && self
                .chunks
                .get(&chunk.0)
                .is_some_and(|c| c.landed_at & (1 << dest) == 0)
    }

    fn all_destinations(&self) -> u16 {
        ((1u32 << self.destinations) - 1) as u16
    }

    /// Every destination's sink verified and wrote the chunk (a journal says so, or the only
    /// destination reported it). Repeated or late reports are harmless.
    pub fn handle_landed(&mut self, chunk: ChunkId) {
        let Some(rt) = self.chunks.get(&chunk.0).copied() else {
            return;
        };
        if matches!(rt.state, State::Landed | State::Failed) {
            return;
        }
        self.set_state(chunk.0, rt.state, State::Landed);
        self.progress.chunks_landed += 1;
        self.progress.bytes_landed += rt.spec.len;
        let object = rt.spec.object;
        let o = self
            .objects
            .get_mut(&object)
            .expect("a tracked chunk's object");
        o.remaining -= 1;
        if o.remaining == 0 && !o.failed {
            self.unfinished -= 1;
            self.progress.objects_complete += 1;
            self.events
                .push_back(TrackerEvent::ObjectComplete { object });
        }
    }

    /// The route is gone (an agent or link died): everything in flight on it goes out again.
    /// Returns those chunks (whose attempts may now be spent).
    pub fn handle_route_failed(&mut self, route: RouteId) -> Vec<ChunkId> {
        let mut lost: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, c)| matches!(c.state, State::InFlight { route: r, .. } if r == route))
            .map(|(&id, _)| id)
            .collect();
        // Highest first: each goes to the front of the queue, so the lowest leads.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        for &id in &lost {
            self.requeue(id);
        }
        lost.into_iter().map(ChunkId).collect()
    }

    /// The source of `route` could not deliver the chunk (its next hop gave it up). It goes out
    /// again unless it has meanwhile landed or been re-dispatched elsewhere.
    pub fn handle_chunk_lost(&mut self, chunk: ChunkId, route: RouteId) {
        if self.is_in_flight_on(chunk, route) {
            self.requeue(chunk.0);
        }
    }

    /// The sink could not write the chunk (its store refused it after the sink's own retries):
    /// it goes out again, on any route, unless its attempts are spent.
    pub fn handle_write_failed(&mut self, chunk: ChunkId) {
        if matches!(self.chunks.get(&chunk.0), Some(c) if matches!(c.state, State::InFlight { .. }))
        {
            self.requeue(chunk.0);
        }
    }

    /// Every chunk of the object landed, but completing or verifying it at the destination
    /// failed: it counts as failed, not complete.
    pub fn handle_object_failed_after_landing(&mut self, object: u32) {
        if let Some(o) = self.objects.get_mut(&object)
            && o.remaining == 0
            && !std::mem::replace(&mut o.failed, true)
        {
            self.progress.objects_complete -= 1;
            self.progress.objects_failed += 1;
        }
    }

    /// Which attempt the chunk is on (1 for its first dispatch), while it is in flight.
    pub fn attempt(&self, chunk: ChunkId) -> Option<u32> {
        match self.chunks.get(&chunk.0)?.state {
            State::InFlight { attempts, .. } => Some(attempts),
            _ => None,
        }
    }

    /// Whether the chunk is in flight on `route` (a report about it from that route is current).
    pub fn is_in_flight_on(&self, chunk: ChunkId, route: RouteId) -> bool {
        matches!(self.chunks.get(&chunk.0), Some(c) if matches!(c.state, State::InFlight { route: r, .. } if r == route))
    }

    /// Whether the chunk is tracked and not yet landed or failed: a landing reported for it is
    /// news (journal it); one for a landed chunk or a released object is not.
    pub fn awaits_landing(&self, chunk: ChunkId) -> bool {
        matches!(self.chunks.get(&chunk.0), Some(c) if matches!(c.state, State::Queued { .. } | State::InFlight { .. }))
    }

    /// The chunk, while its object is tracked.
    pub fn spec(&self, chunk: ChunkId) -> Option<ChunkSpec> {
        self.chunks.get(&chunk.0).map(|c| c.spec)
    }

    /// Sends again whatever has been in flight longer than the landing timeout; returns those
    /// chunks (whose attempts may now be spent).
    pub fn handle_tick(&mut self, now: Instant) -> Vec<ChunkId> {
        let timeout = self.config.landing_timeout;
        let mut late: Vec<u64> = self
            .chunks
            .iter()
            .filter(
                |(_, c)| matches!(c.state, State::InFlight { since, .. } if now >= since + timeout),
            )
            .map(|(&id, _)| id)
            .collect();
        late.sort_unstable_by(|a, b| b.cmp(a));
        for &id in &late {
            self.requeue(id);
        }
        late.into_iter().map(ChunkId).collect()
    }

    /// The sink refused the chunk for good (e.g. the destination rejected the part).
    pub fn handle_chunk_failed(&mut self, chunk: ChunkId) {
        if let Some(ChunkRt {
            state: State::InFlight { attempts, .. } | State::Queued { attempts },
            ..
        }) = self.chunks.get(&chunk.0).copied()
        {
            self.fail(chunk.0, attempts);
        }
    }

    fn requeue(&mut self, id: u64) {
        let Some(rt) = self.chunks.get(&id).copied() else {
            return;
        };
        if let State::InFlight { attempts, .. } = rt.state {
            if attempts >= self.config.max_attempts {
                self.fail(id, attempts);
            } else {
                self.set_state(id, rt.state, State::Queued { attempts });
                self.queue.push_front(ChunkId(id));
            }
        }
    }

    fn fail(&mut self, id: u64, attempts: u32) {
        let rt = self.chunks[&id];
        self.set_state(id, rt.state, State::Failed);
        let object = rt.spec.object;
        let o = self
            .objects
            .get_mut(&object)
            .expect("a tracked chunk's object");
        if !std::mem::replace(&mut o.failed, true) {
            if o.remaining > 0 {
                self.unfinished -= 1;
            }
            self.progress.objects_failed += 1;
            self.events.push_back(TrackerEvent::ObjectFailed {
                object,
                chunk: ChunkId(id),
                attempts,
            });
        }
    }

    /// Every state change goes through here, to keep the per-route and queued counts.
    fn set_state(&mut self, id: u64, old: State, new: State) {
        match old {
            State::InFlight { route, .. } => {
                if let Some(n) = self.in_flight.get_mut(&route) {
                    *n -= 1;
                }
            }
            State::Queued { .. } => self.queued -= 1,
            _ => {}
        }
        match new {
            State::InFlight { route, .. } => *self.in_flight.entry(route).or_default() += 1,
            State::Queued { .. } => self.queued += 1,
            _ => {}
        }
        if let Some(c) = self.chunks.get_mut(&id) {
            c.state = new;
        }
    }

    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop_front()
    }

    /// The earliest time `handle_tick` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.chunks
            .values()
            .filter_map(|c| match c.state {
                State::InFlight { since, .. } => Some(since + self.config.landing_timeout),
                _ => None,
            })
            .min()
    }

    /// Every admitted object is complete or failed.
    pub fn is_done(&self) -> bool {
        self.unfinished == 0
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Chunks in flight on `route`.
    pub fn in_flight_on(&self, route: RouteId) -> usize {
        self.in_flight.get(&route).copied().unwrap_or(0)
    }

    /// Chunks waiting for a route.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Objects admitted and not yet released.
    pub fn objects_held(&self) -> usize {
        self.objects.len()
    }
}
