//! Whether a connection to the next hop still works, judged from progress rather than from
//! a chunk's timeout.
//!
//! A link cut in the middle (packets dropped, no reset) or a frozen receiver leaves a TCP
//! connection open and silent for many minutes: the kernel retransmits for ~15 minutes, and a
//! chunk's own timeout must allow a slow link to drain megabytes. The receiver therefore
//! sends a [`Frame::Progress`](crate::Frame::Progress) heartbeat about every
//! [`HEARTBEAT_EVERY`], whatever else it is doing, with the bytes it has read off the
//! connection and whether it has stopped reading on purpose (backpressure). The sender calls
//! the connection stalled when, while it has chunks in flight on it,
//! - nothing at all came back for `silence` (the way back is cut, or the receiver is frozen), or
//! - the receiver, not paused, read nothing new for `silence` while bytes were on their way
//!   to it: more written than it read, or a write still under way (the way there is cut).
//!
//! A slow link is never stalled: its receiver's count keeps moving, however slowly, and its
//! heartbeats travel the other direction. A receiver whose store is slow says it is paused.

use std::time::{Duration, Instant};

/// How often a receiver sends its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// How long a busy connection may go without news or without progress before it is given up:
/// ten heartbeats, so a loaded machine's late timer is not a false alarm.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(10);

/// Why a connection was judged dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Nothing came back from the receiver for this long.
    Silent(Duration),
    /// The receiver said it read nothing new of what was sent for this long.
    NotReading(Duration),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::Silent(d) => write!(
                f,
                "nothing came back from the next hop for {} s (the link is cut or the agent is frozen)",
                d.as_secs()
            ),
            Stall::NotReading(d) => write!(
                f,
                "the next hop received none of the bytes sent for {} s (the link toward it is cut)",
                d.as_secs()
            ),
        }
    }
}

/// The liveness of one connection, as its sender sees it.
#[derive(Debug, Clone)]
pub struct Liveness {
    silence: Duration,
    /// Bytes the sender has put on the connection.
    written: u64,
    /// Bytes the receiver last said it read.
    received: u64,
    /// A write is under way (the bytes counted in `written` are whole frames; a frame being
    /// written may have reached the receiver in part).
    writing: bool,
    /// When anything last came back.
    heard_at: Instant,
    /// When the receiver was last seen keeping up: its count moved, it was paused, it had
    /// read everything written, or the sender had nothing in flight.
    progress_at: Instant,
}

impl Liveness {
    pub fn new(silence: Duration, now: Instant) -> Self {
        Liveness {
            silence,
            written: 0,
            received: 0,
            writing: false,
            heard_at: now,
            progress_at: now,
        }
    }

    /// The sender has now put `total` bytes (whole frames) on the connection, and is or is
    /// not in the middle of writing another.
    pub fn handle_written(&mut self, total: u64, writing: bool, now: Instant) {
        if !self.on_the_way() {
            // Caught up until now: new bytes start the clock.
            self.progress_at = now;
        }
        self.written = self.written.max(total);
        self.writing = writing;
    }

    /// Whether bytes are on their way to the receiver, as far as the sender knows.
    fn on_the_way(&self) -> bool {
        self.writing || self.received < self.written
    }

    /// A frame other than a heartbeat came back.
    pub fn handle_frame(&mut self, now: Instant) {
        self.heard_at = now;
    }

    /// A heartbeat came back.
    pub fn handle_progress(&mut self, received: u64, paused: bool, now: Instant) {
        self.heard_at = now;
        if received > self.received || paused {
            self.progress_at = now;
        }
        self.received = self.received.max(received);
    }

    /// Whether the connection is stalled at `now`, given whether the sender has chunks in
    /// flight on it (an idle connection is never judged: there is nothing to lose on it).
    pub fn stalled(&mut self, busy: bool, now: Instant) -> Option<Stall> {
        if !busy {
            // Judged from when it next has something to lose: a stream (QUIC) the receiver
            // has not even heard of before its first frame must not count as silent.
            self.heard_at = now;
            self.progress_at = now;
            return None;
        }
        let silent = now.saturating_duration_since(self.heard_at);
        if silent >= self.silence {
            return Some(Stall::Silent(silent));
        }
        let idle = now.saturating_duration_since(self.progress_at);
        (idle >= self.silence && self.on_the_way()).then_some(Stall::NotReading(idle))
    }

    /// When [`Liveness::stalled`] could next turn true without any new input.
    pub fn next_check(&self) -> Instant {
        self.heard_at.min(self.progress_at) + self.silence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(10);

    fn at(t: Instant, secs: u64) -> Instant {
        t + Duration::from_secs(secs)
    }

    #[test]
    fn a_slow_link_that_keeps_reading_is_never_stalled() {
        let t = Instant::now();
        let mut l = Liveness::new(S, t);
        l.handle_written(100 << 20, false, t);
        // A byte a second over a minute: slow, but moving.
        for s in 1..=60 {
            l.handle_progress(s, false, at(t, s));
            assert_eq!(l.stalled(true, at(t, s)), None, "at {s} s");
        }
    }

    #[test]
    fn a_receiver_that_stops_reading_unpaused_is_stalled_after_the_silence() {
        let t = Instant::now();
        let mut l = Liveness::new(S, t);
        l.handle_written(1000, false, t);
        l.handle_progress(400, false, at(t, 1));
        for s in 2..=10 {
            l.handle_progress(400, false, at(t, s));
            assert_eq!(l.stalled(true, at(t, s)), None, "at {s} s");
        }
        l.handle_progress(400, false, at(t, 11));
        assert_eq!(l.stalled(true, at(t, 11)), Some(Stall::NotReading(S)));
    }

    #[test]
    fn a_paused_receiver_is_alive_and_a_silent_one_is_not() {
        let t = Instant::now();
        let mut l = Liveness::new(S, t);
        l.handle_written(1000, false, t);
        for s in 1..=30 {
            l.handle_progress(10, true, at(t, s));
            assert_eq!(l.stalled(true, at(t, s)), None, "paused at {s} s");
        }
        // Then nothing at all.
        assert_eq!(l.stalled(true, at(t, 39)), None);
        assert_eq!(l.stalled(true, at(t, 40)), Some(Stall::Silent(S)));
        assert_eq!(l.next_check(), at(t, 40));
    }

    #[test]
    fn an_idle_connection_is_not_judged_and_new_bytes_start_the_clock() {
        let t = Instant::now();
        let mut l = Liveness::new(S, t);
        l.handle_written(500, false, t);
        l.handle_progress(500, false, at(t, 1));
        // Caught up, then idle for a minute with heartbeats.
        for s in 2..=60 {
            l.handle_progress(500, false, at(t, s));
            assert_eq!(l.stalled(false, at(t, s)), None);
        }
        l.handle_written(900, false, at(t, 60));
        l.handle_progress(500, false, at(t, 61));
        assert_eq!(l.stalled(true, at(t, 69)), None);
        assert_eq!(l.stalled(true, at(t, 70)), Some(Stall::NotReading(S)));
        // Acks count as news, but not as progress.
        l.handle_frame(at(t, 71));
        assert!(matches!(
            l.stalled(true, at(t, 71)),
            Some(Stall::NotReading(_))
        ));
    }

    #[test]
    fn a_write_stuck_mid_frame_is_stalled_though_the_receiver_read_more_than_whole_frames() {
        let t = Instant::now();
        let mut l = Liveness::new(S, t);
        // One whole 1000-byte frame written; the next, larger, is part-way out when the link
        // is cut: the receiver has read 1500 bytes and reads no more.
        l.handle_written(1000, true, t);
        l.handle_progress(1500, false, at(t, 1));
        for s in 2..=10 {
            l.handle_written(1000, true, at(t, s));
            l.handle_progress(1500, false, at(t, s));
            assert_eq!(l.stalled(true, at(t, s)), None, "at {s} s");
        }
        l.handle_progress(1500, false, at(t, 11));
        assert_eq!(l.stalled(true, at(t, 11)), Some(Stall::NotReading(S)));
    }

    #[test]
    fn a_connection_first_used_long_after_it_opened_is_not_silent_at_once() {
        let t = Instant::now();
        let mut l = Liveness::new(S, t);
        // A stream its receiver has not heard of sends no heartbeat until its first frame.
        assert_eq!(l.stalled(false, at(t, 60)), None);
        l.handle_written(0, true, at(t, 60));
        assert_eq!(l.stalled(true, at(t, 61)), None);
        assert_eq!(l.next_check(), at(t, 70));
    }
}
