//! Decoding a byte stream into frames ([`FrameDecoder`], sans-IO: the caller reads into the
//! buffer it is given, then takes frames). A large data payload is read straight into a
//! buffer of its own — from a [`BufferPool`] when the decoder has one — where it stays until
//! it is written or sent on: copied through a smaller buffer and then into a growing one, every
//! byte was copied twice more, and the growth faulted in fresh pages each time. Its checksum
//! is computed a read at a time, while the bytes just read are still in the cache (at most
//! [`PAYLOAD_READ`] each), and stays with the frame for whoever sends it on.

use std::sync::Arc;

use bytes::buf::Limit;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::buffers::{BufferPool, POOLED_FROM};
use crate::frame::{
    ChunkId, ChunkRef, Codec, DataFrame, Dests, Frame, FrameError, HEADER_LEN, JobId, KIND_ACK,
    KIND_DATA, KIND_NACK, KIND_PROGRESS, KIND_RECEIVED, MAGIC, MAX_WIRE, NackReason, SEALED_BIT,
};

/// The most of a large payload one read takes: a read's bytes are checksummed right after it,
/// while they are still in the CPU's cache (a core's L2 holds this many easily; a whole
/// multi-MiB chunk it does not).
pub const PAYLOAD_READ: usize = 256 * 1024;

/// Incremental decoder for a byte stream of frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    pool: Option<Arc<BufferPool>>,
    /// A data frame whose payload is being read into a buffer of its own.
    partial: Option<Partial>,
}

/// A payload being read into a buffer of its own: its header, the payload so far, and the
/// CRC32C of the bytes of it already checksummed.
#[derive(Debug)]
struct Partial {
    header: Header,
    payload: Vec<u8>,
    crc: u32,
    checked: usize,
}

impl Partial {
    /// Checksums the bytes read since the last call.
    fn check_new_bytes(&mut self) {
        self.crc = crc32c::crc32c_append(self.crc, &self.payload[self.checked..]);
        self.checked = self.payload.len();
    }
}

/// Where the next read goes ([`FrameDecoder::read_buffer`]); read into either with
/// `read_buf`.
#[derive(Debug)]
pub enum ReadInto<'a> {
    /// The stream's buffer: headers, small frames, the start of a payload.
    Stream(&'a mut BytesMut),
    /// The rest of a large payload, into its own buffer (limited to what it lacks, and to
    /// [`PAYLOAD_READ`]).
    Payload(Limit<&'a mut Vec<u8>>),
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// A decoder whose large data payloads are read into buffers of `pool`.
    pub fn pooled(pool: Arc<BufferPool>) -> Self {
        FrameDecoder {
            pool: Some(pool),
            ..FrameDecoder::default()
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Where the next read should go: the rest of the payload being read, or the stream's
    /// buffer with room for the rest of the frame being read (a payload so lands once, where
    /// it stays) or, between frames, for at least `min` bytes.
    pub fn read_buffer(&mut self, min: usize) -> ReadInto<'_> {
        if let Some(p) = &mut self.partial {
            let lacks = p.header.wire_len - p.payload.len();
            return ReadInto::Payload((&mut p.payload).limit(lacks.min(PAYLOAD_READ)));
        }
        let room = stream_wanted(&self.buf)
            .min(HEADER_LEN + MAX_WIRE as usize)
            .max(min);
        self.buf.reserve(room);
        ReadInto::Stream(&mut self.buf)
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
            + self
                .partial
                .as_ref()
                .map_or(0, |p| HEADER_LEN + p.payload.len())
    }

    /// How many more bytes the next frame needs (at least 1 when nothing can be decoded).
    pub fn wanted(&self) -> usize {
        if let Some(p) = &self.partial {
            return (p.header.wire_len - p.payload.len()).max(1);
        }
        stream_wanted(&self.buf)
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After a fatal error the
    /// decoder's state is meaningless; drop it with the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(mut p) = self.partial.take() {
            let n = (p.header.wire_len - p.payload.len()).min(self.buf.len());
            p.payload.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            p.check_new_bytes();
            if p.payload.len() < p.header.wire_len {
                self.partial = Some(p);
                return Ok(None);
            }
            let pool = self
                .pool
                .as_ref()
                .expect("payloads are read apart only when pooled");
            return p
                .header
                .frame(pool.freeze(p.payload), Some(p.crc))
                .map(Some);
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::parse(&self.buf[..HEADER_LEN])?;
        if let Some(pool) = &self.pool
            && header.kind == KIND_DATA
            && header.wire_len >= POOLED_FROM
        {
            self.buf.advance(HEADER_LEN);
            self.partial = Some(Partial {
                header,
                payload: pool.take(header.wire_len),
                crc: 0,
                checked: 0,
            });
            return self.next_frame();
        }
        if self.buf.len() < HEADER_LEN + header.wire_len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(header.wire_len).freeze();
        header.frame(payload, None).map(Some)
    }
}

/// How many more bytes the frame at the start of `buf` needs (at least 1).
fn stream_wanted(buf: &BytesMut) -> usize {
    if buf.len() < HEADER_LEN {
        return HEADER_LEN - buf.len();
    }
    let wire_len = u32::from_le_bytes(buf[36..40].try_into().expect("4 bytes")) as usize;
    (HEADER_LEN + wire_len).saturating_sub(buf.len()).max(1)
}

/// A frame's header, checked.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    code: u8,
    dests: Dests,
    job: JobId,
    chunk: ChunkId,
    offset: u64,
    raw_len: u32,
    wire_len: usize,
    raw_crc32c: u32,
    wire_crc32c: u32,
    object: u32,
}

impl Header {
    /// The header in `h` (`HEADER_LEN` bytes), refused when damaged or absurd.
    fn parse(mut h: &[u8]) -> Result<Header, FrameError> {
        if h[..4] != MAGIC {
            return Err(FrameError::CorruptHeader("bad magic"));
        }
        let stored = u32::from_le_bytes(h[52..56].try_into().expect("4 bytes"));
        if crc32c::crc32c(&h[..52]) != stored {
            return Err(FrameError::CorruptHeader("header checksum mismatch"));
        }
        h.advance(4);
        let (kind, code, dests) = (h.get_u8(), h.get_u8(), Dests(h.get_u16_le()));
        let (job, chunk, offset) = (
            JobId(h.get_u64_le()),
            ChunkId(h.get_u64_le()),
            h.get_u64_le(),
        );
        let (raw_len, wire_len) = (h.get_u32_le(), h.get_u32_le());
        if wire_len > MAX_WIRE {
            return Err(FrameError::CorruptHeader("payload length too large"));
        }
        Ok(Header {
            kind,
            code,
            dests,
            job,
            chunk,
            offset,
            raw_len,
            wire_len: wire_len as usize,
            raw_crc32c: h.get_u32_le(),
            wire_crc32c: h.get_u32_le(),
            object: h.get_u32_le(),
        })
    }

    /// The frame this header heads, with its `payload` (checked against the header's CRC:
    /// `crc` when the caller computed it already).
    fn frame(self, payload: Bytes, crc: Option<u32>) -> Result<Frame, FrameError> {
        let Header { job, chunk, .. } = self;
        match self.kind {
            KIND_DATA => {
                let crc = crc.unwrap_or_else(|| crc32c::crc32c(&payload));
                if crc != self.wire_crc32c {
                    return Err(FrameError::CorruptPayload { job, chunk });
                }
                let codec = Codec::from_byte(self.code & !SEALED_BIT)
                    .ok_or(FrameError::CorruptHeader("unknown codec"))?;
                Ok(Frame::Data(DataFrame {
                    chunk: ChunkRef {
                        job,
                        chunk,
                        object: self.object,
                        offset: self.offset,
                        raw_len: self.raw_len,
                        raw_crc32c: self.raw_crc32c,
                        dests: self.dests,
                    },
                    codec,
                    sealed: self.code & SEALED_BIT != 0,
                    payload,
                    payload_crc32c: Some(crc),
                }))
            }
            KIND_ACK => Ok(Frame::Ack { job, chunk }),
            KIND_RECEIVED => Ok(Frame::Received { job, chunk }),
            KIND_PROGRESS => Ok(Frame::Progress {
                job,
                received: self.offset,
                paused: self.code != 0,
            }),
            KIND_NACK => {
                let reason = NackReason::from_byte(self.code)
                    .ok_or(FrameError::CorruptHeader("unknown nack reason"))?;
                Ok(Frame::Nack { job, chunk, reason })
            }
            _ => Err(FrameError::CorruptHeader("unknown frame kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Frame {
        let chunk = ChunkRef {
            job: JobId(7),
            chunk: ChunkId(42),
            object: 3,
            offset: 1 << 33,
            raw_len: 11,
            raw_crc32c: crc32c::crc32c(b"hello world"),
            dests: Dests(0b101),
        };
        let payload = Bytes::from_static(b"hello world");
        Frame::Data(DataFrame::new(chunk, Codec::Raw, false, payload))
    }

    fn sealed() -> Frame {
        let Frame::Data(mut d) = data() else {
            unreachable!()
        };
        d.sealed = true;
        d.codec = Codec::Zstd;
        Frame::Data(d)
    }

    /// A data frame with a payload of `len` bytes, large enough to be read apart.
    fn large(len: usize) -> Frame {
        let Frame::Data(mut d) = data() else {
            unreachable!()
        };
        d.payload = (0..len)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        d.chunk.raw_len = len as u32;
        Frame::Data(d)
    }

    /// The frames `dec` decodes from `stream` read as a socket would: at most `piece` bytes
    /// at a time, into where the decoder says.
    fn read_in_pieces(dec: &mut FrameDecoder, stream: &[u8], piece: usize) -> Vec<Frame> {
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = piece.min(stream.len() - at);
            let chunk = &stream[at..at + n];
            let n = match dec.read_buffer(4096) {
                ReadInto::Stream(b) => {
                    b.put_slice(chunk);
                    n
                }
                ReadInto::Payload(mut p) => {
                    let n = n.min(p.remaining_mut());
                    p.put_slice(&chunk[..n]);
                    n
                }
            };
            at += n;
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        got
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

    #[test]
    fn pooled_payloads_round_trip_read_in_any_pieces_and_go_back_to_the_pool() {
        let frames = vec![
            data(),
            large(POOLED_FROM + 5),
            Frame::Ack {
                job: JobId(7),
                chunk: ChunkId(42),
            },
            large(3 * POOLED_FROM),
            sealed(),
        ];
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        for piece in [1, 55, 56, 57, 4096, POOLED_FROM, stream.len()] {
            let pool = BufferPool::new(4);
            let mut dec = FrameDecoder::pooled(pool.clone());
            let got = read_in_pieces(&mut dec, &stream, piece);
            assert_eq!(got, frames, "read {piece} bytes at a time");
            assert_eq!(dec.buffered(), 0);
            drop(got);
            assert_eq!(pool.idle(), 2, "both large payloads' buffers are back");
        }
    }

    #[test]
    fn a_decoded_payload_keeps_the_checksum_it_was_checked_with() {
        // Small (checksummed whole) and large (a read at a time, as each lands).
        for frame in [data(), large(3 * POOLED_FROM)] {
            let bytes = frame.to_bytes();
            let mut dec = FrameDecoder::pooled(BufferPool::new(1));
            let got = read_in_pieces(&mut dec, &bytes, POOLED_FROM / 2);
            let [Frame::Data(d)] = &got[..] else {
                panic!("not one data frame: {got:?}")
            };
            assert_eq!(d.payload_crc32c, Some(crc32c::crc32c(&d.payload)));
            // Sent on, the frame's header is the one it came with.
            assert_eq!(
                Frame::Data(d.clone()).encode_header()[..],
                bytes[..HEADER_LEN]
            );
        }
    }

    #[test]
    fn a_damaged_pooled_payload_is_refused_and_the_stream_goes_on() {
        let mut bytes = large(POOLED_FROM).to_bytes().to_vec();
        bytes[HEADER_LEN + 100] ^= 1;
        let ack = Frame::Ack {
            job: JobId(7),
            chunk: ChunkId(1),
        };
        bytes.extend_from_slice(&ack.to_bytes());
        let mut dec = FrameDecoder::pooled(BufferPool::new(1));
        dec.push(&bytes);
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::CorruptPayload {
                chunk: ChunkId(42),
                ..
            })
        ));
        assert_eq!(dec.next_frame(), Ok(Some(ack)));
    }
}
