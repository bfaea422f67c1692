//! A sender and a receiver connected by simulated links that lose, duplicate, reorder and
//! corrupt frames, driven by a virtual clock. Whatever the link does, every chunk must reach the
//! sink exactly once, byte-identical, and every chunk must be acknowledged to the sender.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_protocol::{
    ChunkId, ChunkRef, Compression, DataFrame, Frame, FrameDecoder, JobId, NackReason, Receiver,
    ReceiverEvent, Role, Sender, SenderConfig, SenderEvent, encode_chunk,
};

const JOB: JobId = JobId(77);
const TICK: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
struct Faults {
    loss: f64,
    duplicate: f64,
    corrupt: f64,
    max_delay_ms: u64,
    /// Chance per tick that the connection resets (everything on the wire is lost).
    reset: f64,
}

/// One direction of a link: frames are datagrams with a delivery time.
struct Link {
    rng: SmallRng,
    faults: Faults,
    queue: Vec<(Instant, Vec<u8>)>,
}

impl Link {
    fn send(&mut self, now: Instant, frame: &Frame) {
        if self.rng.random_bool(self.faults.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut bytes = frame.to_bytes().to_vec();
            if self.rng.random_bool(self.faults.corrupt) {
                let i = self.rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << self.rng.random_range(0..8);
            }
            let delay = Duration::from_millis(self.rng.random_range(0..=self.faults.max_delay_ms));
            self.queue.push((now + delay, bytes));
        }
    }

    /// Frames due by `now`, in delivery-time order (so reordering comes from the delays). A frame
    /// whose header is damaged cannot be framed and is dropped, as a reset stream would drop it.
    fn deliver(&mut self, now: Instant) -> Vec<Result<Frame, skyx_protocol::FrameError>> {
        self.queue.sort_by_key(|(t, _)| *t);
        let due = self.queue.iter().take_while(|(t, _)| *t <= now).count();
        self.queue
            .drain(..due)
            .filter_map(|(_, bytes)| {
                let mut dec = FrameDecoder::new();
                dec.push(&bytes);
                match dec.next_frame() {
                    Ok(Some(f)) => Some(Ok(f)),
                    Ok(None) => None,
                    Err(e) if e.is_fatal() => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .collect()
    }
}

fn chunks(rng: &mut SmallRng, n: u64) -> HashMap<ChunkId, (DataFrame, Bytes)> {
    (0..n)
        .map(|i| {
            let len = rng.random_range(0..20_000);
            let raw: Bytes = if i % 2 == 0 {
                let line = format!("{i},aws:us-east-1,{}\n", i * 7);
                line.repeat(len / line.len() + 1).as_bytes()[..len]
                    .to_vec()
                    .into()
            } else {
                (0..len)
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>()
                    .into()
            };
            let chunk = ChunkRef {
                job: JOB,
                chunk: ChunkId(i),
                object: (i % 5) as u32,
                offset: i * 20_000,
                raw_len: 0,
                raw_crc32c: 0,
                dests: skyx_protocol::Dests::ALL,
            };
            (
                ChunkId(i),
                (encode_chunk(chunk, raw.clone(), Compression::Zstd(1)), raw),
            )
        })
        .collect()
}

/// Runs a transfer of `n` chunks; returns (virtual seconds taken, receiver duplicates seen).
fn run(seed: u64, n: u64, faults: Faults) -> (f64, u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let data = chunks(&mut rng, n);
    let mut sender = Sender::new(SenderConfig {
        window: 16,
        retransmit_after: Duration::from_millis(500),
        max_attempts: 1000,
        min_rate_bytes_per_s: 1 << 20,
        // A lost acknowledgement of a held chunk is recovered after this.
        held_timeout: Duration::from_secs(5),
    });
    let mut receiver = Receiver::new(JOB, Role::Sink);
    let mut forward = Link {
        rng: SmallRng::seed_from_u64(seed ^ 1),
        faults,
        queue: Vec::new(),
    };
    let mut backward = Link {
        rng: SmallRng::seed_from_u64(seed ^ 2),
        faults,
        queue: Vec::new(),
    };
    let mut next_to_queue = 0u64;
    let mut delivered: HashMap<ChunkId, u32> = HashMap::new();
    let mut acked = 0u64;
    let start = Instant::now();
    let mut now = start;
    for _ in 0..2_000_000 {
        // The driver feeds the sender only while its window has room (backpressure).
        while next_to_queue < n && sender.has_room() {
            sender.enqueue(ChunkId(next_to_queue));
            next_to_queue += 1;
        }
        while let Some(c) = sender.poll_transmit(now) {
            forward.send(now, &Frame::Data(data[&c].0.clone()));
        }
        for f in forward.deliver(now) {
            receiver.handle_frame(f);
        }
        while let Some(ReceiverEvent::Deliver { frame, raw }) = receiver.poll_event() {
            let c = frame.chunk.chunk;
            assert_eq!(
                raw.as_ref(),
                Some(&data[&c].1),
                "chunk {c:?} delivered with wrong bytes"
            );
            *delivered.entry(c).or_default() += 1;
            receiver.handle_committed(c);
        }
        while let Some(f) = receiver.poll_transmit() {
            backward.send(now, &f);
        }
        for f in backward.deliver(now) {
            match f {
                Ok(Frame::Ack { chunk, .. }) => sender.handle_ack(chunk),
                Ok(Frame::Received { chunk, .. }) => sender.handle_received(chunk, now),
                Ok(Frame::Nack { chunk, reason, .. }) => sender.handle_nack(chunk, reason),
                _ => {}
            }
        }
        while let Some(e) = sender.poll_event() {
            match e {
                SenderEvent::Acked(_) => acked += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        if acked == n {
            assert!(
                delivered.values().all(|&k| k == 1),
                "seed {seed}: a chunk was delivered twice"
            );
            assert_eq!(delivered.len() as u64, n);
            assert!(sender.is_idle());
            return ((now - start).as_secs_f64(), receiver.stats.duplicates);
        }
        if rng.random_bool(faults.reset) {
            forward.queue.clear();
            backward.queue.clear();
            sender.handle_connection_lost();
        }
        now += TICK;
    }
    panic!("seed {seed}: transfer did not finish ({acked}/{n} acked)");
}

#[test]
fn a_clean_link_delivers_everything_once() {
    let clean = Faults {
        loss: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        max_delay_ms: 0,
        reset: 0.0,
    };
    let (_, dups) = run(1, 300, clean);
    assert_eq!(dups, 0);
}

#[test]
fn loss_duplication_reordering_and_corruption_are_survived() {
    let bad = Faults {
        loss: 0.15,
        duplicate: 0.1,
        corrupt: 0.1,
        max_delay_ms: 300,
        reset: 0.0,
    };
    for seed in 0..8 {
        run(seed, 300, bad);
    }
}

#[test]
fn connection_resets_resend_what_was_in_flight() {
    let resets = Faults {
        loss: 0.05,
        duplicate: 0.05,
        corrupt: 0.05,
        max_delay_ms: 100,
        reset: 0.02,
    };
    for seed in 100..104 {
        run(seed, 300, resets);
    }
}

#[test]
fn frames_of_another_job_are_refused_not_delivered() {
    let mut receiver = Receiver::new(JOB, Role::Relay);
    let other = ChunkRef {
        job: JobId(1),
        chunk: ChunkId(5),
        object: 0,
        offset: 0,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    receiver.handle_frame(Ok(Frame::Data(encode_chunk(
        other,
        Bytes::from_static(b"x"),
        Compression::Off,
    ))));
    assert_eq!(receiver.poll_event(), None);
    assert_eq!(
        receiver.poll_transmit(),
        Some(Frame::Nack {
            job: JobId(1),
            chunk: ChunkId(5),
            reason: NackReason::WrongJob
        })
    );
}

#[test]
fn a_relay_forwards_payloads_without_decoding_them() {
    let mut relay = Receiver::new(JOB, Role::Relay);
    let c = ChunkRef {
        job: JOB,
        chunk: ChunkId(3),
        object: 0,
        offset: 0,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    let text: Bytes = "abc".repeat(1000).into();
    let frame = encode_chunk(c, text, Compression::Zstd(1));
    relay.handle_frame(Ok(Frame::Data(frame.clone())));
    match relay.poll_event() {
        Some(ReceiverEvent::Deliver { frame: got, raw }) => {
            assert_eq!(
                got, frame,
                "forwarded exactly as received (still compressed)"
            );
            assert_eq!(raw, None);
        }
        other => panic!("{other:?}"),
    }
    // Held, not acknowledged, until the next hop has it.
    assert_eq!(
        relay.poll_transmit(),
        Some(Frame::Received {
            job: JOB,
            chunk: ChunkId(3)
        })
    );
    assert_eq!(relay.poll_transmit(), None);
    relay.handle_committed(ChunkId(3));
    assert_eq!(
        relay.poll_transmit(),
        Some(Frame::Ack {
            job: JOB,
            chunk: ChunkId(3)
        })
    );
}

#[test]
fn a_receiver_remembers_a_bounded_number_of_committed_chunks() {
    use skyx_protocol::receiver::COMMITTED_REMEMBERED;
    let mut receiver = Receiver::new(JOB, Role::Sink);
    let data = |c: u64| {
        let chunk = ChunkRef {
            job: JOB,
            chunk: ChunkId(c),
            object: 0,
            offset: 0,
            raw_len: 0,
            raw_crc32c: 0,
            dests: skyx_protocol::Dests::ALL,
        };
        Ok(Frame::Data(encode_chunk(
            chunk,
            Bytes::from_static(b"x"),
            Compression::Off,
        )))
    };
    let n = COMMITTED_REMEMBERED as u64 + 1000;
    for c in 0..n {
        receiver.handle_frame(data(c));
        assert!(matches!(
            receiver.poll_event(),
            Some(ReceiverEvent::Deliver { .. })
        ));
        receiver.handle_committed(ChunkId(c));
        while receiver.poll_transmit().is_some() {}
    }
    assert_eq!(
        receiver.committed(),
        COMMITTED_REMEMBERED,
        "memory grows with chunks carried"
    );
    // A duplicate of a recent chunk is acknowledged again, not delivered again.
    receiver.handle_frame(data(n - 1));
    assert_eq!(receiver.poll_event(), None);
    assert!(matches!(receiver.poll_transmit(), Some(Frame::Ack { .. })));
}
