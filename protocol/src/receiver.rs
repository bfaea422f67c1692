//! The receiving side of one hop: verify, deduplicate, deliver, acknowledge.
//!
//! A relay checks the wire checksum and forwards the payload as it came (it never decompresses);
//! a sink also decodes the payload and checks the end-to-end checksum of the raw bytes. Either
//! way a chunk is delivered to the driver at most once, and acknowledged only after the driver
//! says it has taken the chunk over (`handle_committed`): written to the store by a sink, queued
//! to the next hop by a relay. A duplicate of a committed chunk is acknowledged again (its first
//! acknowledgement may have been lost) but not delivered again.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{DecodeError, decode_chunk};
use crate::frame::{ChunkId, DataFrame, Frame, FrameError, JobId, NackReason};
use crate::seal::{ChunkKey, open_chunk};

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
    /// A new chunk: as received for a relay; for a sink, opened (when sealed) with `raw` set.
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
    /// A sink's key to open sealed chunks: with it, only sealed chunks are taken.
    key: Option<Arc<ChunkKey>>,
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
            key: None,
            pending: HashSet::new(),
            committed: HashSet::new(),
            committed_order: VecDeque::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// A sink that opens the job's sealed chunks with `key`, and takes no chunk in the clear.
    pub fn opening_with(mut self, key: Arc<ChunkKey>) -> Self {
        self.key = Some(key);
        self
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
        let (d, raw) = match self.role {
            Role::Relay => (d, None),
            Role::Sink => match self.open(d) {
                Ok((d, raw)) => (d, Some(raw)),
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

    /// A sink's view of a chunk: opened with the job's key when it has one, then decoded and
    /// checked end to end.
    fn open(&self, d: DataFrame) -> Result<(DataFrame, Bytes), DecodeError> {
        let d = match &self.key {
            Some(key) => open_chunk(&d, key)?,
            None => d,
        };
        let raw = decode_chunk(&d)?;
        Ok((d, raw))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Compression, encode_chunk};
    use crate::frame::{ChunkRef, Dests};
    use crate::seal::seal_chunk;

    const JOB: JobId = JobId(3);

    fn chunk(i: u64) -> DataFrame {
        let c = ChunkRef {
            job: JOB,
            chunk: ChunkId(i),
            object: 0,
            offset: i * 16,
            raw_len: 0,
            raw_crc32c: 0,
            dests: Dests::ALL,
        };
        encode_chunk(c, Bytes::from(vec![i as u8; 16]), Compression::Off)
    }

    #[test]
    fn a_sink_with_the_key_delivers_sealed_chunks_opened_and_refuses_clear_ones() {
        let key = Arc::new(ChunkKey::new(&[4; 32]));
        let mut sink = Receiver::new(JOB, Role::Sink).opening_with(key.clone());
        let plain = chunk(1);
        sink.handle_frame(Ok(Frame::Data(seal_chunk(plain.clone(), &key, [9; 12]))));
        let Some(ReceiverEvent::Deliver { frame, raw }) = sink.poll_event() else {
            panic!("the sealed chunk is delivered")
        };
        assert_eq!(frame, plain, "opened, its checksum back in the header");
        assert_eq!(raw, Some(plain.payload.clone()));
        assert_eq!(
            sink.poll_transmit(),
            Some(Frame::Received {
                job: JOB,
                chunk: ChunkId(1)
            })
        );

        sink.handle_frame(Ok(Frame::Data(chunk(2))));
        assert_eq!(sink.poll_event(), None);
        assert_eq!(
            sink.poll_transmit(),
            Some(Frame::Nack {
                job: JOB,
                chunk: ChunkId(2),
                reason: NackReason::Corrupt
            })
        );

        let mut relay = Receiver::new(JOB, Role::Relay);
        let sealed = seal_chunk(chunk(3), &key, [9; 12]);
        relay.handle_frame(Ok(Frame::Data(sealed.clone())));
        assert_eq!(
            relay.poll_event(),
            Some(ReceiverEvent::Deliver {
                frame: sealed,
                raw: None
            }),
            "a relay forwards the seal untouched"
        );
    }
}
