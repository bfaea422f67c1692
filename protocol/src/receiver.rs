//! The receiving side of one hop: verify, deduplicate, deliver, acknowledge.
//!
//! A relay checks the wire checksum and forwards the payload as it came (it never decompresses);
//! a sink also decodes the payload and checks the end-to-end checksum of the raw bytes. Either
//! way a chunk is delivered to the driver at most once, and acknowledged only after the driver
//! says it has taken the chunk over (`handle_committed`): written to the store by a sink, queued
//! to the next hop by a relay. A duplicate of a committed chunk is acknowledged again (its first
//! acknowledgement may have been lost) but not delivered again.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use crate::codec::decode_chunk;
use crate::frame::{ChunkId, DataFrame, Frame, FrameError, JobId, NackReason};

/// What this hop does with the chunks it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Forwards payloads unchanged.
    Relay,
    /// Decodes payloads and checks them end to end.
    Sink,
}

/// What the receiver hands to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// A new chunk: as received for a relay, with `raw` set for a sink.
    Deliver {
        frame: DataFrame,
        raw: Option<Bytes>,
    },
}

/// Committed chunks a receiver remembers. A sender resends only chunks of its window (a few
/// hundred at most) that it has not seen acknowledged, so a duplicate of a chunk committed this
/// long ago does not come; if one did, it would be delivered again, which a sink (same bytes
/// written again) and a relay (a duplicate the next hop acknowledges) both tolerate. Without
/// the bound, a connection's memory would grow with every chunk it ever carried.
pub const COMMITTED_REMEMBERED: usize = 1 << 14;

#[derive(Debug)]
pub struct Receiver {
    job: JobId,
    role: Role,
    /// Delivered, awaiting the driver's commit.
    pending: HashSet<ChunkId>,
    /// The last [`COMMITTED_REMEMBERED`] chunks committed (a set, and their order to forget
    /// the oldest): a duplicate of one is acknowledged, not delivered again.
    committed: HashSet<ChunkId>,
    committed_order: VecDeque<ChunkId>,
    outgoing: VecDeque<Frame>,
    events: VecDeque<ReceiverEvent>,
    /// Counters for metrics.
    pub stats: ReceiverStats,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceiverStats {
    pub delivered: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    pub wrong_job: u64,
}

impl Receiver {
    pub fn new(job: JobId, role: Role) -> Self {
        Receiver {
            job,
            role,
            pending: HashSet::new(),
            committed: HashSet::new(),
            committed_order: VecDeque::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// Feeds one decoded frame (or the decoder's error). Fatal decoder errors are the driver's
    /// to act on (reset the connection); they are ignored here.
    pub fn handle_frame(&mut self, frame: Result<Frame, FrameError>) {
        match frame {
            Ok(Frame::Data(d)) => self.handle_data(d),
            Ok(
                Frame::Ack { .. }
                | Frame::Nack { .. }
                | Frame::Received { .. }
                | Frame::Progress { .. },
            ) => {}
            Err(FrameError::CorruptPayload { job, chunk }) if job == self.job => {
                self.stats.corrupt += 1;
                self.outgoing.push_back(Frame::Nack {
                    job,
                    chunk,
                    reason: NackReason::Corrupt,
                });
            }
            Err(_) => {}
        }
    }

    fn handle_data(&mut self, d: DataFrame) {
        let (job, chunk) = (d.chunk.job, d.chunk.chunk);
        if job != self.job {
            self.stats.wrong_job += 1;
            self.outgoing.push_back(Frame::Nack {
                job,
                chunk,
                reason: NackReason::WrongJob,
            });
            return;
        }
        if self.committed.contains(&chunk) {
            self.stats.duplicates += 1;
            self.outgoing.push_back(Frame::Ack { job, chunk });
            return;
        }
        if self.pending.contains(&chunk) {
            // Already handed to the driver; its commit will acknowledge. Say again that it is
            // held (the first word may have crossed this resend).
            self.stats.duplicates += 1;
            self.outgoing.push_back(Frame::Received { job, chunk });
            return;
        }
        let raw = match self.role {
            Role::Relay => None,
            Role::Sink => match decode_chunk(&d) {
                Ok(raw) => Some(raw),
                Err(_) => {
                    self.stats.corrupt += 1;
                    self.outgoing.push_back(Frame::Nack {
                        job,
                        chunk,
                        reason: NackReason::Corrupt,
                    });
                    return;
                }
            },
        };
        self.pending.insert(chunk);
        self.outgoing.push_back(Frame::Received { job, chunk });
        self.stats.delivered += 1;
        self.events
            .push_back(ReceiverEvent::Deliver { frame: d, raw });
    }

    /// The driver has durably taken the chunk over: acknowledge it.
    pub fn handle_committed(&mut self, chunk: ChunkId) {
        if self.pending.remove(&chunk) {
            if self.committed.insert(chunk) {
                self.committed_order.push_back(chunk);
            }
            if self.committed_order.len() > COMMITTED_REMEMBERED
                && let Some(old) = self.committed_order.pop_front()
            {
                self.committed.remove(&old);
            }
            self.outgoing.push_back(Frame::Ack {
                job: self.job,
                chunk,
            });
        }
    }

    /// The driver could not take the chunk over (store or next hop unavailable): refuse it so
    /// the sender tries again.
    pub fn handle_failed(&mut self, chunk: ChunkId) {
        self.nack(chunk, NackReason::Unavailable);
    }

    /// The driver will not take the chunk and has reported why elsewhere (to the gateway):
    /// refuse it so the sender gives it up instead of resending it. It is not remembered as
    /// delivered, so the same chunk dispatched again later is delivered again.
    pub fn handle_refused(&mut self, chunk: ChunkId) {
        self.nack(chunk, NackReason::Refused);
    }

    fn nack(&mut self, chunk: ChunkId, reason: NackReason) {
        if self.pending.remove(&chunk) {
            self.outgoing.push_back(Frame::Nack {
                job: self.job,
                chunk,
                reason,
            });
        }
    }

    /// A frame to send back to the sender.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.outgoing.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    pub fn committed(&self) -> usize {
        self.committed.len()
    }
}
