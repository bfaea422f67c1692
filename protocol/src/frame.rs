//! The wire format of a chunk and of its acknowledgements.
//!
//! Every frame starts with a fixed 56-byte little-endian header protected by its own CRC32C,
//! followed by `wire_len` payload bytes protected by another:
//!
//! ```text
//! 0  magic "SKX1"      4   kind u8, codec-or-reason u8 (bit 7: sealed), dests u16 (data frames)
//! 8  job u64           16  chunk u64           24  offset u64 (byte offset in the object)
//! 32 raw_len u32       36  wire_len u32        40  raw_crc32c u32   44  wire_crc32c u32
//! 48 object u32        52  header_crc32c u32 (over bytes 0..52)
//! 56 payload (wire_len bytes; compressed when codec is zstd; sealed, see [`crate::seal`])
//! ```
//!
//! A corrupt payload behind an intact header is recoverable (the frame boundary is known, so the
//! receiver asks for that chunk again); a corrupt header is not (the stream position is lost, so
//! the connection must be reset and in-flight chunks resent).

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const MAGIC: [u8; 4] = *b"SKX1";
pub const HEADER_LEN: usize = 56;
/// Frames larger than this are refused: chunks are a few MiB, and a length past this is
/// corruption, not data.
pub const MAX_PAYLOAD: u32 = 256 * 1024 * 1024;
/// The most payload bytes a frame carries: a chunk of [`MAX_PAYLOAD`] (zstd is kept only when
/// it shrinks one) and its seal's overhead (`crate::seal::SEAL_OVERHEAD`).
pub const MAX_WIRE: u32 = MAX_PAYLOAD + 32;

/// A transfer job; every frame carries it, and agents drop frames of jobs they do not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// A chunk within a job (assigned by the gateway, unique in the job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub u64);

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw,
    Zstd,
}

impl Codec {
    fn to_byte(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Why a receiver refused a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackReason {
    /// The payload failed its checksum or did not decode: send it again.
    Corrupt,
    /// The receiver does not serve this job: do not send it here again.
    WrongJob,
    /// The receiver could not store or forward it: retry later or elsewhere.
    Unavailable,
    /// The receiver will not take it and has told the gateway why (a sink whose store refused
    /// the write after its own retries): do not send it again on this hop. Resending across a
    /// paid hop cannot fix trouble behind it; the gateway decides what happens next.
    Refused,
}

impl NackReason {
    fn to_byte(self) -> u8 {
        match self {
            NackReason::Corrupt => 1,
            NackReason::WrongJob => 2,
            NackReason::Unavailable => 3,
            NackReason::Refused => 4,
        }
    }

    fn from_byte(b: u8) -> Option<NackReason> {
        match b {
            1 => Some(NackReason::Corrupt),
            2 => Some(NackReason::WrongJob),
            3 => Some(NackReason::Unavailable),
            4 => Some(NackReason::Refused),
            _ => None,
        }
    }
}

/// Where a chunk's bytes belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub job: JobId,
    pub chunk: ChunkId,
    /// Index of the object in the job's manifest.
    pub object: u32,
    /// Byte offset of the chunk in the object.
    pub offset: u64,
    /// Length of the chunk before encoding.
    pub raw_len: u32,
    /// CRC32C of the raw (decoded) bytes; checked end to end by the sink.
    pub raw_crc32c: u32,
    /// The destinations it is for, in a broadcast: bit `i` is destination `i` (see
    /// [`Dests`]). A relay that forks sends it on only to the branches behind those
    /// destinations.
    pub dests: Dests,
}

/// A set of a broadcast's destinations (at most [`Dests::MAX`]); [`Dests::ALL`] (no bit set)
/// is every destination, which is what a copy to one destination sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Dests(pub u16);

impl Dests {
    /// Every destination.
    pub const ALL: Dests = Dests(0);
    /// Destinations a broadcast may have.
    pub const MAX: usize = 16;

    /// Destination `i` alone.
    pub fn one(i: usize) -> Dests {
        assert!(
            i < Self::MAX,
            "destination {i} past the most a broadcast has"
        );
        Dests(1 << i)
    }

    /// Whether a chunk for `self` is for any destination of `other`.
    pub fn meets(self, other: Dests) -> bool {
        self.0 == 0 || other.0 == 0 || self.0 & other.0 != 0
    }

    pub fn with(self, other: Dests) -> Dests {
        Dests(self.0 | other.0)
    }
}

/// A chunk on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    pub chunk: ChunkRef,
    pub codec: Codec,
    /// Whether the payload is sealed end to end under the job's chunk key ([`crate::seal`]):
    /// then only the source and sink can read it, and the header's `raw_crc32c` is zero (the
    /// checksum travels inside the seal, so the header says nothing about the plaintext).
    pub sealed: bool,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data(DataFrame),
    Ack {
        job: JobId,
        chunk: ChunkId,
    },
    Nack {
        job: JobId,
        chunk: ChunkId,
        reason: NackReason,
    },
    /// The chunk arrived intact and the receiver's agent holds it; its commit (written by a
    /// sink, queued onward by a relay) is pending. Nothing is lost on the link any more, so
    /// the sender stops timing it: sending it again could not help and would pay the hop twice.
    Received {
        job: JobId,
        chunk: ChunkId,
    },
    /// The receiver's heartbeat, sent on every connection about once a second whatever else
    /// it is doing: the bytes it has read off this connection so far, and whether it has
    /// stopped reading on purpose (its agent holds as many chunks as it may: backpressure).
    /// The sender judges the connection's liveness from it (see [`crate::liveness`]).
    Progress {
        job: JobId,
        received: u64,
        paused: bool,
    },
}

const KIND_DATA: u8 = 1;
/// Set in a data frame's codec byte when the payload is sealed.
const SEALED_BIT: u8 = 0x80;
const KIND_ACK: u8 = 2;
const KIND_NACK: u8 = 3;
const KIND_RECEIVED: u8 = 4;
const KIND_PROGRESS: u8 = 5;

/// Why bytes did not decode into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header is damaged: the stream has lost its framing and must be reset.
    #[error("frame header corrupt: {0}")]
    CorruptHeader(&'static str),
    /// The header is intact but the payload failed its checksum: ask for the chunk again.
    #[error("payload of job {} chunk {} failed its checksum", .job.0, .chunk.0)]
    CorruptPayload { job: JobId, chunk: ChunkId },
}

impl FrameError {
    /// Whether the byte stream can go on after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::CorruptHeader(_))
    }
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.payload().len());
        out.put_slice(&self.encode_header());
        out.put_slice(self.payload());
    }

    /// The payload that follows the header on the wire (empty for acknowledgements).
    pub fn payload(&self) -> &[u8] {
        match self {
            Frame::Data(d) => &d.payload,
            _ => &[],
        }
    }

    /// The header alone, so a large payload can be written from its own buffer without being
    /// copied next to it.
    pub fn encode_header(&self) -> [u8; HEADER_LEN] {
        let (kind, code, dests, job, chunk, offset, raw_len, raw_crc, object, payload): (
            u8,
            u8,
            u16,
            JobId,
            ChunkId,
            u64,
            u32,
            u32,
            u32,
            &[u8],
        ) = match self {
            Frame::Data(d) => (
                KIND_DATA,
                d.codec.to_byte() | if d.sealed { SEALED_BIT } else { 0 },
                d.chunk.dests.0,
                d.chunk.job,
                d.chunk.chunk,
                d.chunk.offset,
                d.chunk.raw_len,
                d.chunk.raw_crc32c,
                d.chunk.object,
                &d.payload,
            ),
            Frame::Ack { job, chunk } => (KIND_ACK, 0, 0, *job, *chunk, 0, 0, 0, 0, &[]),
            Frame::Received { job, chunk } => (KIND_RECEIVED, 0, 0, *job, *chunk, 0, 0, 0, 0, &[]),
            // The byte count rides in the offset field.
            Frame::Progress {
                job,
                received,
                paused,
            } => (
                KIND_PROGRESS,
                u8::from(*paused),
                0,
                *job,
                ChunkId(0),
                *received,
                0,
                0,
                0,
                &[],
            ),
            Frame::Nack { job, chunk, reason } => (
                KIND_NACK,
                reason.to_byte(),
                0,
                *job,
                *chunk,
                0,
                0,
                0,
                0,
                &[],
            ),
        };
        let mut out = BytesMut::with_capacity(HEADER_LEN);
        out.put_slice(&MAGIC);
        out.put_u8(kind);
        out.put_u8(code);
        out.put_u16_le(dests);
        out.put_u64_le(job.0);
        out.put_u64_le(chunk.0);
        out.put_u64_le(offset);
        out.put_u32_le(raw_len);
        out.put_u32_le(payload.len() as u32);
        out.put_u32_le(raw_crc);
        out.put_u32_le(crc32c::crc32c(payload));
        out.put_u32_le(object);
        let header_crc = crc32c::crc32c(&out[..52]);
        out.put_u32_le(header_crc);
        out[..].try_into().expect("header is HEADER_LEN bytes")
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// Incremental decoder for a byte stream of frames (sans-IO: feed bytes, take frames).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the next frame needs (at least 1 when nothing can be decoded).
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return HEADER_LEN - self.buf.len();
        }
        let wire_len = u32::from_le_bytes(self.buf[36..40].try_into().expect("4 bytes")) as usize;
        (HEADER_LEN + wire_len)
            .saturating_sub(self.buf.len())
            .max(1)
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After a fatal error the
    /// decoder's state is meaningless; drop it with the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[..HEADER_LEN];
        if h[..4] != MAGIC {
            return Err(FrameError::CorruptHeader("bad magic"));
        }
        let stored = u32::from_le_bytes(h[52..56].try_into().expect("4 bytes"));
        if crc32c::crc32c(&h[..52]) != stored {
            return Err(FrameError::CorruptHeader("header checksum mismatch"));
        }
        let wire_len = u32::from_le_bytes(h[36..40].try_into().expect("4 bytes"));
        if wire_len > MAX_WIRE {
            return Err(FrameError::CorruptHeader("payload length too large"));
        }
        if self.buf.len() < HEADER_LEN + wire_len as usize {
            return Ok(None);
        }
        let mut header = self.buf.split_to(HEADER_LEN);
        let payload = self.buf.split_to(wire_len as usize).freeze();
        header.advance(4);
        let kind = header.get_u8();
        let code = header.get_u8();
        let dests = Dests(header.get_u16_le());
        let job = JobId(header.get_u64_le());
        let chunk = ChunkId(header.get_u64_le());
        let offset = header.get_u64_le();
        let raw_len = header.get_u32_le();
        let _wire_len = header.get_u32_le();
        let raw_crc32c = header.get_u32_le();
        let wire_crc32c = header.get_u32_le();
        let object = header.get_u32_le();
        match kind {
            KIND_DATA => {
                if crc32c::crc32c(&payload) != wire_crc32c {
                    return Err(FrameError::CorruptPayload { job, chunk });
                }
                let codec = Codec::from_byte(code & !SEALED_BIT)
                    .ok_or(FrameError::CorruptHeader("unknown codec"))?;
                Ok(Some(Frame::Data(DataFrame {
                    chunk: ChunkRef {
                        job,
                        chunk,
                        object,
                        offset,
                        raw_len,
                        raw_crc32c,
                        dests,
                    },
                    codec,
                    sealed: code & SEALED_BIT != 0,
                    payload,
                })))
            }
            KIND_ACK => Ok(Some(Frame::Ack { job, chunk })),
            KIND_RECEIVED => Ok(Some(Frame::Received { job, chunk })),
            KIND_PROGRESS => Ok(Some(Frame::Progress {
                job,
                received: offset,
                paused: code != 0,
            })),
            KIND_NACK => {
                let reason = NackReason::from_byte(code)
                    .ok_or(FrameError::CorruptHeader("unknown nack reason"))?;
                Ok(Some(Frame::Nack { job, chunk, reason }))
            }
            _ => Err(FrameError::CorruptHeader("unknown frame kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Frame {
        Frame::Data(DataFrame {
            chunk: ChunkRef {
                job: JobId(7),
                chunk: ChunkId(42),
                object: 3,
                offset: 1 << 33,
                raw_len: 11,
                raw_crc32c: crc32c::crc32c(b"hello world"),
                dests: Dests(0b101),
            },
            codec: Codec::Raw,
            sealed: false,
            payload: Bytes::from_static(b"hello world"),
        })
    }

    fn sealed() -> Frame {
        let Frame::Data(mut d) = data() else {
            unreachable!()
        };
        d.sealed = true;
        d.codec = Codec::Zstd;
        Frame::Data(d)
    }

    #[test]
    fn a_chunk_for_some_destinations_meets_only_branches_behind_one_of_them() {
        let (first, third) = (Dests::one(0), Dests::one(2));
        assert!(first.with(third).meets(third));
        assert!(!first.meets(third));
        assert!(Dests::ALL.meets(third) && third.meets(Dests::ALL));
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream_split_anywhere() {
        let frames = vec![
            data(),
            sealed(),
            Frame::Ack {
                job: JobId(7),
                chunk: ChunkId(42),
            },
            Frame::Nack {
                job: JobId(7),
                chunk: ChunkId(43),
                reason: NackReason::Corrupt,
            },
            Frame::Progress {
                job: JobId(7),
                received: u64::MAX - 3,
                paused: true,
            },
            Frame::Progress {
                job: JobId(7),
                received: 12,
                paused: false,
            },
        ];
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        for split in 0..stream.len() {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in [&stream[..split], &stream[split..]] {
                dec.push(piece);
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split at {split}");
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn corrupt_payloads_are_recoverable_and_corrupt_headers_are_not() {
        let bytes = data().to_bytes();
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x40;
            let mut dec = FrameDecoder::new();
            dec.push(&damaged);
            match dec.next_frame() {
                Err(FrameError::CorruptPayload { chunk, .. }) => {
                    assert!(i >= HEADER_LEN, "byte {i}");
                    assert_eq!(chunk, ChunkId(42));
                    assert_eq!(
                        dec.buffered(),
                        0,
                        "the damaged frame is consumed; the stream goes on"
                    );
                }
                Err(e) => {
                    assert!(e.is_fatal());
                    assert!(i < HEADER_LEN, "byte {i}: {e}");
                }
                // A flipped bit in the wire length can make the decoder wait for more bytes;
                // the header checksum still catches it first.
                Ok(other) => panic!("byte {i}: damage not detected: {other:?}"),
            }
        }
    }

    #[test]
    fn absurd_lengths_are_refused_before_buffering() {
        let mut bytes = data().to_bytes().to_vec();
        bytes[36..40].copy_from_slice(&(MAX_WIRE + 1).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..52]);
        bytes[52..56].copy_from_slice(&crc.to_le_bytes());
        let mut dec = FrameDecoder::new();
        dec.push(&bytes[..HEADER_LEN]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::CorruptHeader("payload length too large"))
        );
        // A sealed chunk of the largest size is not absurd: the decoder waits for its bytes.
        bytes[36..40].copy_from_slice(&MAX_WIRE.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..52]);
        bytes[52..56].copy_from_slice(&crc.to_le_bytes());
        let mut dec = FrameDecoder::new();
        dec.push(&bytes[..HEADER_LEN]);
        assert_eq!(dec.next_frame(), Ok(None));
    }
}
