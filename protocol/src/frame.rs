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

use bytes::{BufMut, Bytes, BytesMut};

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

    pub(crate) fn from_byte(b: u8) -> Option<Codec> {
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

    pub(crate) fn from_byte(b: u8) -> Option<NackReason> {
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
#[derive(Debug, Clone, Eq)]
pub struct DataFrame {
    pub chunk: ChunkRef,
    pub codec: Codec,
    /// Whether the payload is sealed end to end under the job's chunk key ([`crate::seal`]):
    /// then only the source and sink can read it, and the header's `raw_crc32c` is zero (the
    /// checksum travels inside the seal, so the header says nothing about the plaintext).
    pub sealed: bool,
    pub payload: Bytes,
    /// The payload's CRC32C when it is already known: the decoder's, computed as the bytes
    /// came off the wire and checked against the header. Sending the frame on reuses it, so a
    /// relay checksums each byte it forwards once, not twice. `None` has it computed when the
    /// header is encoded; whatever replaces `payload` resets it to `None` (debug builds check
    /// it on every header). A cache, not part of the frame: frames compare without it.
    pub payload_crc32c: Option<u32>,
}

impl DataFrame {
    /// A frame whose payload's checksum is computed when it is sent.
    pub fn new(chunk: ChunkRef, codec: Codec, sealed: bool, payload: Bytes) -> DataFrame {
        DataFrame {
            chunk,
            codec,
            sealed,
            payload,
            payload_crc32c: None,
        }
    }

    /// The payload's CRC32C: the one known, else computed now.
    fn payload_checksum(&self) -> u32 {
        let Some(known) = self.payload_crc32c else {
            return crc32c::crc32c(&self.payload);
        };
        debug_assert_eq!(
            known,
            crc32c::crc32c(&self.payload),
            "a frame's known checksum outlived its payload"
        );
        known
    }
}

impl PartialEq for DataFrame {
    fn eq(&self, other: &DataFrame) -> bool {
        (self.chunk, self.codec, self.sealed, &self.payload)
            == (other.chunk, other.codec, other.sealed, &other.payload)
    }
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

pub(crate) const KIND_DATA: u8 = 1;
/// Set in a data frame's codec byte when the payload is sealed.
pub(crate) const SEALED_BIT: u8 = 0x80;
pub(crate) const KIND_ACK: u8 = 2;
pub(crate) const KIND_NACK: u8 = 3;
pub(crate) const KIND_RECEIVED: u8 = 4;
pub(crate) const KIND_PROGRESS: u8 = 5;

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
        let (kind, code, dests, job, chunk, offset, raw_len, raw_crc, object): (
            u8,
            u8,
            u16,
            JobId,
            ChunkId,
            u64,
            u32,
            u32,
            u32,
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
            ),
            Frame::Ack { job, chunk } => (KIND_ACK, 0, 0, *job, *chunk, 0, 0, 0, 0),
            Frame::Received { job, chunk } => (KIND_RECEIVED, 0, 0, *job, *chunk, 0, 0, 0, 0),
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
            ),
            Frame::Nack { job, chunk, reason } => {
                (KIND_NACK, reason.to_byte(), 0, *job, *chunk, 0, 0, 0, 0)
            }
        };
        // The payload's length and CRC32C (no payload: 0 and 0, an empty one's CRC32C).
        let (wire_len, wire_crc) = match self {
            Frame::Data(d) => (d.payload.len() as u32, d.payload_checksum()),
            _ => (0, 0),
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
        out.put_u32_le(wire_len);
        out.put_u32_le(raw_crc);
        out.put_u32_le(wire_crc);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_for_some_destinations_meets_only_branches_behind_one_of_them() {
        let (first, third) = (Dests::one(0), Dests::one(2));
        assert!(first.with(third).meets(third));
        assert!(!first.meets(third));
        assert!(Dests::ALL.meets(third) && third.meets(Dests::ALL));
    }
}
