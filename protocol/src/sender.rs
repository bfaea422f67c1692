//! The sending side of one hop: which chunk goes on the wire next, and which are done.
//!
//! A chunk stays the sender's responsibility until the next hop acknowledges it. Chunks are sent
//! in the order they were queued, at most `window` unacknowledged at once (backpressure: a slow
//! receiver holds the window full and the sender stops pulling chunks from its source). A chunk
//! is sent again when it is nacked as corrupt, when neither its acknowledgement nor word that
//! the receiver holds it comes within the retransmission timeout (a held chunk awaiting its
//! commit is not timed: resending cannot help it), or when the connection it was on is lost;
//! after `max_attempts`
//! sends it is given up and reported, so the gateway can re-dispatch it another way.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::frame::{ChunkId, NackReason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Most chunks sent and not yet acknowledged.
    pub window: usize,
    /// How long to wait for an acknowledgement before sending again.
    pub retransmit_after: Duration,
    /// Sends of one chunk before it is given up.
    pub max_attempts: u32,
    /// The slowest a connection may drain and still count as working: a chunk's timeout
    /// grows by the time the bytes sent ahead of it (and its own) take at this rate. Without
    /// it, a chunk behind megabytes on a slow path (1-2 Mbit/s per connection happens between
    /// far regions) times out while still in the socket's buffer and is sent twice.
    pub min_rate_bytes_per_s: u64,
    /// How long to wait for the acknowledgement of a chunk the receiver said it holds (its
    /// commit pending) before sending it again: longer than a sink retries its store.
    pub held_timeout: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            window: 64,
            retransmit_after: Duration::from_secs(30),
            max_attempts: 5,
            // 256 kbit/s.
            min_rate_bytes_per_s: 32 * 1024,
            held_timeout: Duration::from_secs(600),
        }
    }
}

/// What the sender reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// The next hop took responsibility for the chunk; its buffer can be released.
    Acked(ChunkId),
    /// The chunk could not be delivered on this hop.
    GaveUp {
        chunk: ChunkId,
        attempts: u32,
        last: Failure,
    },
}

/// The most recent reason a chunk had to be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    ConnectionLost,
    /// Every connection was given up, the last for want of progress (see [`crate::liveness`]).
    Stalled(crate::liveness::Stall),
    Nack(NackReason),
}

#[derive(Debug, Clone)]
struct InFlight {
    sent_at: Instant,
    /// When to give up waiting for its acknowledgement.
    /// When to send it again if no acknowledgement came: after the retransmission timeout,
    /// or, once the receiver said it holds the chunk, after `held_timeout` (a frame lost on
    /// an unreliable link must still be recovered, but a commit that takes a while must not be
    /// answered with a resend).
    deadline: Instant,
    /// Its timeout as first set: the retransmission timeout and the time to drain the bytes
    /// ahead of it.
    timeout: Duration,
    attempts: u32,
}

#[derive(Debug)]
pub struct Sender {
    config: SenderConfig,
    /// Chunks waiting for (re)transmission, with how many times each was already sent.
    ready: VecDeque<(ChunkId, u32)>,
    in_flight: HashMap<ChunkId, InFlight>,
    /// Wire bytes of each chunk held (0 when the driver did not say).
    sizes: HashMap<ChunkId, u64>,
    events: VecDeque<SenderEvent>,
}

impl Sender {
    pub fn new(config: SenderConfig) -> Self {
        assert!(
            config.window > 0 && config.max_attempts > 0,
            "window and attempts must be positive"
        );
        Sender {
            config,
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            sizes: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Queues a chunk for its first transmission.
    pub fn enqueue(&mut self, chunk: ChunkId) {
        self.enqueue_sized(chunk, 0);
    }

    /// Queues a chunk of `wire_bytes` for its first transmission; its size stretches its
    /// timeout on slow connections (see [`SenderConfig::min_rate_bytes_per_s`]).
    pub fn enqueue_sized(&mut self, chunk: ChunkId, wire_bytes: u64) {
        self.sizes.insert(chunk, wire_bytes);
        self.ready.push_back((chunk, 0));
    }

    /// Whether the driver may hand the sender another chunk without exceeding the window.
    pub fn has_room(&self) -> bool {
        self.ready.len() + self.in_flight.len() < self.config.window
    }

    /// The next chunk to put on the wire now, if the window allows.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<ChunkId> {
        self.expire(now);
        if self.in_flight.len() >= self.config.window {
            return None;
        }
        let (chunk, attempts) = self.ready.pop_front()?;
        // Everything in flight is ahead of this chunk on the connection's byte stream.
        let ahead: u64 = self
            .in_flight
            .keys()
            .chain(std::iter::once(&chunk))
            .map(|c| self.sizes.get(c).copied().unwrap_or(0))
            .sum();
        let drain =
            Duration::from_secs_f64(ahead as f64 / self.config.min_rate_bytes_per_s.max(1) as f64);
        let timeout = self.config.retransmit_after + drain;
        self.in_flight.insert(
            chunk,
            InFlight {
                sent_at: now,
                deadline: now + timeout,
                timeout,
                attempts: attempts + 1,
            },
        );
        Some(chunk)
    }

    /// Whether a chunk waits that `poll_transmit` would put on the wire now (queued, with room
    /// in the window): the driver must not sleep on [`Sender::poll_timeout`] then.
    pub fn wants_transmit(&self) -> bool {
        !self.ready.is_empty() && self.in_flight.len() < self.config.window
    }

    /// When the driver must call `poll_transmit` again even if nothing arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.deadline).min()
    }

    /// The receiver holds the chunk and its commit is pending: its timeout becomes
    /// `held_timeout`, long enough for a sink's retries at its store.
    pub fn handle_received(&mut self, chunk: ChunkId, now: Instant) {
        if let Some(f) = self.in_flight.get_mut(&chunk) {
            f.deadline = now + self.config.held_timeout;
        }
    }

    /// The receiver is alive and holds off reading on purpose (its agent is busy): what is in
    /// flight waits in the connection, not lost, so no timeout runs out while it says so.
    /// Each chunk's timeout starts again from `now`.
    pub fn handle_receiver_paused(&mut self, now: Instant) {
        for f in self.in_flight.values_mut() {
            f.deadline = f.deadline.max(now + f.timeout);
        }
    }

    pub fn handle_ack(&mut self, chunk: ChunkId) {
        // An ack for a chunk not in flight is a duplicate (or for a resend): nothing to do,
        // unless the chunk sits in the ready queue after a timeout, in which case it is done.
        let was_flying = self.in_flight.remove(&chunk).is_some();
        self.sizes.remove(&chunk);
        let was_ready = if was_flying {
            false
        } else {
            let before = self.ready.len();
            self.ready.retain(|(c, _)| *c != chunk);
            self.ready.len() != before
        };
        if was_flying || was_ready {
            self.events.push_back(SenderEvent::Acked(chunk));
        }
    }

    pub fn handle_nack(&mut self, chunk: ChunkId, reason: NackReason) {
        if let Some(f) = self.in_flight.remove(&chunk) {
            match reason {
                NackReason::WrongJob | NackReason::Refused => {
                    self.give_up(chunk, f.attempts, Failure::Nack(reason))
                }
                _ => self.retry(chunk, f.attempts, Failure::Nack(reason)),
            }
        }
    }

    /// The connection died: nothing in flight on it will be acknowledged.
    pub fn handle_connection_lost(&mut self) {
        let mut flying: Vec<(ChunkId, InFlight)> = self.in_flight.drain().collect();
        // Resend in the original order of first transmission.
        flying.sort_by_key(|(_, f)| f.sent_at);
        for (chunk, f) in flying.into_iter().rev() {
            if f.attempts >= self.config.max_attempts {
                self.give_up(chunk, f.attempts, Failure::ConnectionLost);
            } else {
                self.ready.push_front((chunk, f.attempts));
            }
        }
    }

    /// Takes every chunk this sender still holds (queued or in flight), leaving it idle: the
    /// driver moves them to another connection when this one cannot be used any more.
    pub fn take_all(&mut self) -> Vec<ChunkId> {
        let mut flying: Vec<(ChunkId, InFlight)> = self.in_flight.drain().collect();
        flying.sort_by_key(|(_, f)| f.sent_at);
        let mut out: Vec<ChunkId> = flying.into_iter().map(|(c, _)| c).collect();
        out.extend(self.ready.drain(..).map(|(c, _)| c));
        self.sizes.clear();
        out
    }

    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// Nothing queued and nothing awaiting acknowledgement.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.in_flight.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Wire bytes of a held chunk, as the driver gave them.
    pub fn size_of(&self, chunk: ChunkId) -> u64 {
        self.sizes.get(&chunk).copied().unwrap_or(0)
    }

    fn expire(&mut self, now: Instant) {
        let mut expired: Vec<(ChunkId, InFlight)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.deadline)
            .map(|(c, f)| (*c, f.clone()))
            .collect();
        expired.sort_by_key(|(_, f)| f.sent_at);
        for (chunk, f) in expired {
            self.in_flight.remove(&chunk);
            self.retry(chunk, f.attempts, Failure::Timeout);
        }
    }

    fn retry(&mut self, chunk: ChunkId, attempts: u32, why: Failure) {
        if attempts >= self.config.max_attempts {
            self.give_up(chunk, attempts, why);
        } else {
            // Repairs go first: the receiver is waiting for them.
            self.ready.push_front((chunk, attempts));
        }
    }

    fn give_up(&mut self, chunk: ChunkId, attempts: u32, last: Failure) {
        self.sizes.remove(&chunk);
        self.events.push_back(SenderEvent::GaveUp {
            chunk,
            attempts,
            last,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(window: usize, attempts: u32) -> Sender {
        Sender::new(SenderConfig {
            window,
            retransmit_after: Duration::from_secs(1),
            max_attempts: attempts,
            min_rate_bytes_per_s: 1000,
            held_timeout: Duration::from_secs(100),
        })
    }

    #[test]
    fn a_chunk_behind_big_ones_waits_for_them_to_drain_before_timing_out() {
        let mut s = sender(4, 3);
        let t = Instant::now();
        // 2000 bytes at the 1000 B/s floor: 2 s to drain, on top of the 1 s timeout.
        s.enqueue_sized(ChunkId(1), 2000);
        s.enqueue_sized(ChunkId(2), 1000);
        assert_eq!(s.poll_transmit(t), Some(ChunkId(1)));
        assert_eq!(s.poll_transmit(t), Some(ChunkId(2)));
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(3)));
        // Chunk 2 has chunk 1's bytes ahead of it as well as its own: 1 + 3 = 4 s.
        assert_eq!(s.poll_transmit(t + Duration::from_millis(2999)), None);
        assert_eq!(
            s.poll_transmit(t + Duration::from_secs(3)),
            Some(ChunkId(1)),
            "chunk 1 is resent at 3 s"
        );
        s.handle_ack(ChunkId(1));
        assert_eq!(s.poll_transmit(t + Duration::from_millis(3999)), None);
        assert_eq!(
            s.poll_transmit(t + Duration::from_secs(4)),
            Some(ChunkId(2))
        );
        // Unsized chunks keep the plain timeout.
        let mut plain = sender(2, 3);
        plain.enqueue(ChunkId(7));
        assert_eq!(plain.poll_transmit(t), Some(ChunkId(7)));
        assert_eq!(plain.poll_timeout(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn a_queued_chunk_with_room_in_the_window_wants_transmitting() {
        let mut s = sender(1, 3);
        let t = Instant::now();
        assert!(!s.wants_transmit());
        s.enqueue(ChunkId(1));
        s.enqueue(ChunkId(2));
        assert!(s.wants_transmit());
        assert_eq!(s.poll_transmit(t), Some(ChunkId(1)));
        assert!(!s.wants_transmit(), "the window is full");
        s.handle_ack(ChunkId(1));
        assert!(s.wants_transmit());
    }

    #[test]
    fn no_timeout_runs_out_while_the_receiver_says_it_is_paused() {
        let mut s = sender(4, 3);
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        s.enqueue_sized(ChunkId(1), 1000);
        assert_eq!(s.poll_transmit(t), Some(ChunkId(1)));
        // 2 s timeout (1 s + 1000 B at 1000 B/s); paused heartbeats every second for 10 s.
        for ms in (1000..=10_000).step_by(1000) {
            s.handle_receiver_paused(at(ms));
            assert_eq!(s.poll_transmit(at(ms)), None, "resent at {ms} ms");
        }
        // It reads again and says nothing more: the timeout runs from the last pause.
        assert_eq!(s.poll_transmit(at(11_999)), None);
        assert_eq!(s.poll_transmit(at(12_000)), Some(ChunkId(1)));
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let t = Instant::now();
        let mut s = sender(2, 3);
        for i in 0..4 {
            s.enqueue(ChunkId(i));
        }
        assert_eq!(s.poll_transmit(t), Some(ChunkId(0)));
        assert_eq!(s.poll_transmit(t), Some(ChunkId(1)));
        assert_eq!(s.poll_transmit(t), None, "window full");
        s.handle_ack(ChunkId(0));
        assert_eq!(s.poll_event(), Some(SenderEvent::Acked(ChunkId(0))));
        assert_eq!(s.poll_transmit(t), Some(ChunkId(2)));
    }

    #[test]
    fn timeouts_and_nacks_resend_until_attempts_run_out() {
        let t = Instant::now();
        let mut s = sender(4, 2);
        s.enqueue(ChunkId(9));
        assert_eq!(s.poll_transmit(t), Some(ChunkId(9)));
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(1)));
        assert_eq!(s.poll_transmit(t + Duration::from_millis(999)), None);
        assert_eq!(
            s.poll_transmit(t + Duration::from_secs(1)),
            Some(ChunkId(9)),
            "resent after timeout"
        );
        s.handle_nack(ChunkId(9), NackReason::Corrupt);
        assert_eq!(
            s.poll_event(),
            Some(SenderEvent::GaveUp {
                chunk: ChunkId(9),
                attempts: 2,
                last: Failure::Nack(NackReason::Corrupt)
            })
        );
        assert!(s.is_idle());
    }

    #[test]
    fn a_lost_connection_requeues_in_flight_chunks_in_order() {
        let t = Instant::now();
        let mut s = sender(8, 5);
        for i in 0..3 {
            s.enqueue(ChunkId(i));
        }
        for i in 0..3 {
            assert_eq!(
                s.poll_transmit(t + Duration::from_millis(i)),
                Some(ChunkId(i))
            );
        }
        s.handle_connection_lost();
        let resent: Vec<_> = std::iter::from_fn(|| s.poll_transmit(t)).collect();
        assert_eq!(resent, vec![ChunkId(0), ChunkId(1), ChunkId(2)]);
    }

    #[test]
    fn take_all_empties_the_sender_oldest_first() {
        let t = Instant::now();
        let mut s = sender(2, 5);
        for i in 0..4 {
            s.enqueue(ChunkId(i));
        }
        s.poll_transmit(t);
        s.poll_transmit(t + Duration::from_millis(1));
        assert_eq!(
            s.take_all(),
            vec![ChunkId(0), ChunkId(1), ChunkId(2), ChunkId(3)]
        );
        assert!(s.is_idle());
    }

    #[test]
    fn duplicate_acks_are_reported_once_and_wrong_job_is_final() {
        let t = Instant::now();
        let mut s = sender(8, 5);
        s.enqueue(ChunkId(1));
        s.enqueue(ChunkId(2));
        s.poll_transmit(t);
        s.poll_transmit(t);
        s.handle_ack(ChunkId(1));
        s.handle_ack(ChunkId(1));
        assert_eq!(s.poll_event(), Some(SenderEvent::Acked(ChunkId(1))));
        assert_eq!(s.poll_event(), None);
        s.handle_nack(ChunkId(2), NackReason::WrongJob);
        assert!(matches!(
            s.poll_event(),
            Some(SenderEvent::GaveUp {
                chunk: ChunkId(2),
                attempts: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_refused_chunk_is_given_up_at_once_never_resent() {
        let t = Instant::now();
        let mut s = sender(8, 5);
        s.enqueue(ChunkId(7));
        s.poll_transmit(t);
        s.handle_nack(ChunkId(7), NackReason::Refused);
        assert_eq!(
            s.poll_event(),
            Some(SenderEvent::GaveUp {
                chunk: ChunkId(7),
                attempts: 1,
                last: Failure::Nack(NackReason::Refused),
            })
        );
        assert!(s.poll_transmit(t + Duration::from_secs(60)).is_none());
        assert!(s.is_idle());
    }

    #[test]
    fn a_chunk_the_receiver_holds_is_not_timed_out_only_a_lost_connection_resends_it() {
        let t = Instant::now();
        let mut s = sender(8, 5);
        s.enqueue(ChunkId(1));
        s.enqueue(ChunkId(2));
        assert_eq!(s.poll_transmit(t), Some(ChunkId(1)));
        assert_eq!(s.poll_transmit(t), Some(ChunkId(2)));
        s.handle_received(ChunkId(1), t);
        // Chunk 2 times out and goes again; chunk 1, held by the receiver, does not.
        let later = t + Duration::from_secs(50);
        assert_eq!(s.poll_transmit(later), Some(ChunkId(2)));
        assert_eq!(s.poll_transmit(later), None);
        s.handle_received(ChunkId(2), later);
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(100)));
        // A lost connection sends it again at once; so does the held timeout, for an
        // acknowledgement lost on an unreliable link.
        s.handle_connection_lost();
        assert_eq!(s.poll_transmit(later), Some(ChunkId(1)));
        assert_eq!(s.poll_transmit(later), Some(ChunkId(2)));
    }
}
