//! Tracking every chunk of a copy: queued, in flight on a route, landed, or failed.
//!
//! Sans-IO like the protocol: the gateway's async code reports what happened (`handle_*`, with
//! time passed in) and asks what to do (`poll_dispatch`, `poll_event`). A chunk is done only
//! when the sink reports it verified and written; acknowledgements between hops are not enough,
//! because a relay that acked and then died has lost the chunk. So when a route fails, or a
//! chunk has not landed within the timeout, the chunk is queued again and goes out on whatever
//! route asks next. Resuming from a journal of landed chunks re-sends none of them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use skyx_protocol::ChunkId;

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

#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    specs: Vec<ChunkSpec>,
    state: Vec<State>,
    /// Chunks waiting for a route; retries go first. May hold chunks that landed meanwhile
    /// (skipped when popped).
    queue: VecDeque<ChunkId>,
    remaining: Vec<u32>,
    object_failed: Vec<bool>,
    events: VecDeque<TrackerEvent>,
    progress: Progress,
    /// Chunks in flight per route (kept with every state change, so asking is O(1)).
    in_flight: std::collections::HashMap<RouteId, usize>,
}

impl Tracker {
    /// Tracks `specs` (ids dense from 0, as `plan_chunks` makes them) of `objects` objects.
    pub fn new(specs: Vec<ChunkSpec>, objects: usize, config: TrackerConfig) -> Self {
        Self::resume(specs, objects, std::iter::empty(), config)
    }

    /// As `new`, with the chunks a journal recorded as landed already done. Objects whose
    /// chunks all landed are reported complete at once (completing twice is harmless for the
    /// gateway: it checks the destination first).
    pub fn resume(
        specs: Vec<ChunkSpec>,
        objects: usize,
        landed: impl IntoIterator<Item = ChunkId>,
        config: TrackerConfig,
    ) -> Self {
        assert!(
            specs.iter().enumerate().all(|(i, s)| s.id.0 == i as u64),
            "chunk ids must be dense from 0"
        );
        let mut remaining = vec![0u32; objects];
        for s in &specs {
            remaining[s.object as usize] += 1;
        }
        let progress = Progress {
            chunks_total: specs.len() as u64,
            bytes_total: specs.iter().map(|s| s.len).sum(),
            objects_total: objects as u64,
            ..Default::default()
        };
        let mut t = Tracker {
            config,
            state: vec![State::Queued { attempts: 0 }; specs.len()],
            queue: (0..specs.len() as u64).map(ChunkId).collect(),
            specs,
            remaining,
            object_failed: vec![false; objects],
            events: VecDeque::new(),
            progress,
            in_flight: std::collections::HashMap::new(),
        };
        // Every object has at least one chunk (an empty object travels as one empty chunk), so
        // an object is complete exactly when its last chunk is reported here or later.
        for c in landed {
            t.handle_landed(c);
        }
        t
    }

    /// Up to `max` chunks for `route` to carry, marked in flight on it.
    pub fn poll_dispatch(&mut self, route: RouteId, max: usize, now: Instant) -> Vec<ChunkSpec> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(c) = self.queue.pop_front() else {
                break;
            };
            let i = c.0 as usize;
            if let State::Queued { attempts } = self.state[i] {
                if self.object_failed[self.specs[i].object as usize] {
                    continue;
                }
                self.set_state(
                    i,
                    State::InFlight {
                        route,
                        attempts: attempts + 1,
                        since: now,
                    },
                );
                out.push(self.specs[i]);
            }
        }
        out
    }

    /// The sink verified and wrote the chunk. Repeated or late reports are harmless.
    pub fn handle_landed(&mut self, chunk: ChunkId) {
        let i = chunk.0 as usize;
        let Some(state) = self.state.get(i).copied() else {
            return;
        };
        if matches!(state, State::Landed | State::Failed) {
            return;
        }
        self.set_state(i, State::Landed);
        let spec = self.specs[i];
        self.progress.chunks_landed += 1;
        self.progress.bytes_landed += spec.len;
        let o = spec.object as usize;
        self.remaining[o] -= 1;
        if self.remaining[o] == 0 && !self.object_failed[o] {
            self.progress.objects_complete += 1;
            self.events.push_back(TrackerEvent::ObjectComplete {
                object: spec.object,
            });
        }
    }

    /// The route is gone (an agent or link died): everything in flight on it goes out again.
    pub fn handle_route_failed(&mut self, route: RouteId) {
        let lost: Vec<usize> = (0..self.state.len())
            .filter(|&i| matches!(self.state[i], State::InFlight { route: r, .. } if r == route))
            .collect();
        for i in lost.into_iter().rev() {
            self.requeue(i);
        }
    }

    /// The source of `route` could not deliver the chunk (its next hop gave it up). It goes out
    /// again unless it has meanwhile landed or been re-dispatched elsewhere.
    pub fn handle_chunk_lost(&mut self, chunk: ChunkId, route: RouteId) {
        let i = chunk.0 as usize;
        if matches!(self.state.get(i), Some(State::InFlight { route: r, .. }) if *r == route) {
            self.requeue(i);
        }
    }

    /// The sink could not write the chunk (its store refused it after the sink's own retries):
    /// it goes out again, on any route, unless its attempts are spent.
    pub fn handle_write_failed(&mut self, chunk: ChunkId) {
        let i = chunk.0 as usize;
        if matches!(self.state.get(i), Some(State::InFlight { .. })) {
            self.requeue(i);
        }
    }

    /// Every chunk of the object landed, but completing or verifying it at the destination
    /// failed: it counts as failed, not complete.
    pub fn handle_object_failed_after_landing(&mut self, object: u32) {
        let o = object as usize;
        if o < self.object_failed.len()
            && self.remaining[o] == 0
            && !std::mem::replace(&mut self.object_failed[o], true)
        {
            self.progress.objects_complete -= 1;
            self.progress.objects_failed += 1;
        }
    }

    /// Whether the chunk is in flight on `route` (a report about it from that route is current).
    pub fn is_in_flight_on(&self, chunk: ChunkId, route: RouteId) -> bool {
        matches!(self.state.get(chunk.0 as usize), Some(State::InFlight { route: r, .. }) if *r == route)
    }

    /// The chunk's state, for callers that must not act twice (e.g. journal only new landings).
    pub fn is_landed(&self, chunk: ChunkId) -> bool {
        matches!(self.state.get(chunk.0 as usize), Some(State::Landed))
    }

    /// Sends again whatever has been in flight longer than the landing timeout.
    pub fn handle_tick(&mut self, now: Instant) {
        let timeout = self.config.landing_timeout;
        let late: Vec<usize> = (0..self.state.len())
            .filter(|&i| matches!(self.state[i], State::InFlight { since, .. } if now >= since + timeout))
            .collect();
        for i in late.into_iter().rev() {
            self.requeue(i);
        }
    }

    /// The sink refused the chunk for good (e.g. the destination rejected the part).
    pub fn handle_chunk_failed(&mut self, chunk: ChunkId) {
        let i = chunk.0 as usize;
        if let Some(State::InFlight { attempts, .. } | State::Queued { attempts }) =
            self.state.get(i).copied()
        {
            self.fail(i, attempts);
        }
    }

    fn requeue(&mut self, i: usize) {
        if let State::InFlight { attempts, .. } = self.state[i] {
            if attempts >= self.config.max_attempts {
                self.fail(i, attempts);
            } else {
                self.set_state(i, State::Queued { attempts });
                self.queue.push_front(ChunkId(i as u64));
            }
        }
    }

    fn fail(&mut self, i: usize, attempts: u32) {
        self.set_state(i, State::Failed);
        let object = self.specs[i].object;
        if !std::mem::replace(&mut self.object_failed[object as usize], true) {
            self.progress.objects_failed += 1;
            self.events.push_back(TrackerEvent::ObjectFailed {
                object,
                chunk: ChunkId(i as u64),
                attempts,
            });
        }
    }

    /// Every state change goes through here, to keep the per-route counts.
    fn set_state(&mut self, i: usize, new: State) {
        if let State::InFlight { route, .. } = self.state[i]
            && let Some(n) = self.in_flight.get_mut(&route)
        {
            *n -= 1;
        }
        if let State::InFlight { route, .. } = new {
            *self.in_flight.entry(route).or_default() += 1;
        }
        self.state[i] = new;
    }

    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop_front()
    }

    /// The earliest time `handle_tick` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.state
            .iter()
            .filter_map(|s| match s {
                State::InFlight { since, .. } => Some(*since + self.config.landing_timeout),
                _ => None,
            })
            .min()
    }

    /// Every object is complete or failed.
    pub fn is_done(&self) -> bool {
        self.progress.objects_complete + self.progress.objects_failed == self.progress.objects_total
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Chunks in flight on `route`.
    pub fn in_flight_on(&self, route: RouteId) -> usize {
        self.in_flight.get(&route).copied().unwrap_or(0)
    }
}
