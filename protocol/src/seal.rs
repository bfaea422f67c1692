//! End-to-end sealing of chunks, so a relay forwards ciphertext it can neither read nor alter.
//!
//! A source seals each encoded chunk with AES-256-GCM under the job's [`ChunkKey`], which only
//! the job's source and sink agents hold. The sealed payload is
//!
//! ```text
//! nonce (12 bytes) | ciphertext of (encoded payload | raw CRC32C, 4 bytes LE) | tag (16 bytes)
//! ```
//!
//! and everything the header says about the chunk is associated data: job, chunk, object,
//! offset, raw length, codec and destinations. So a chunk opens only as the chunk it was
//! sealed as: a relay that flips a byte, moves it to another offset or object, or replays it
//! under another chunk's header is caught by the sink. A replay under its own header writes
//! the same bytes to the same place again, which a copy tolerates by design (a chunk's bytes
//! are fixed by the object version it was listed at).
//!
//! Nonces are random (96 bits, drawn by the caller from a CSPRNG), never a counter: a source
//! agent replaced mid-job would restart a counter, and a nonce used twice with different bytes
//! breaks GCM. At 2^32 chunks per key the chance of a repeat stays below 2^-32; a job carries
//! far fewer.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use bytes::{Bytes, BytesMut};

use crate::codec::DecodeError;
use crate::frame::{ChunkRef, Codec, DataFrame};

/// Bytes a seal adds to a payload: nonce, the sealed checksum, tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 4 + TAG_LEN;
// A sealed chunk of the largest size still fits in a frame.
const _: () =
    assert!(crate::frame::MAX_WIRE as usize == crate::frame::MAX_PAYLOAD as usize + SEAL_OVERHEAD);
const TAG_LEN: usize = 16;
/// Names the format in the associated data, so a later format's chunks never open as these.
const DOMAIN: &[u8; 12] = b"skyx-seal-v1";

/// A job's key for sealing chunks end to end (AES-256-GCM). Only sources and sinks hold it.
pub struct ChunkKey(LessSafeKey);

impl ChunkKey {
    pub fn new(bytes: &[u8; 32]) -> ChunkKey {
        ChunkKey(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is an AES-256 key"),
        ))
    }
}

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

fn associated_data(chunk: &ChunkRef, codec: Codec) -> [u8; 47] {
    let mut ad = [0u8; 47];
    ad[..12].copy_from_slice(DOMAIN);
    ad[12..20].copy_from_slice(&chunk.job.0.to_le_bytes());
    ad[20..28].copy_from_slice(&chunk.chunk.0.to_le_bytes());
    ad[28..32].copy_from_slice(&chunk.object.to_le_bytes());
    ad[32..40].copy_from_slice(&chunk.offset.to_le_bytes());
    ad[40..44].copy_from_slice(&chunk.raw_len.to_le_bytes());
    ad[44] = codec as u8;
    ad[45..47].copy_from_slice(&chunk.dests.0.to_le_bytes());
    ad
}

/// Seals an encoded chunk under `key` with `nonce` (fresh random bytes for every call). The
/// raw checksum moves inside the seal; the header's is zeroed.
pub fn seal_chunk(mut frame: DataFrame, key: &ChunkKey, nonce: [u8; NONCE_LEN]) -> DataFrame {
    assert!(!frame.sealed, "a chunk is sealed once");
    let ad = associated_data(&frame.chunk, frame.codec);
    let mut out = BytesMut::with_capacity(frame.payload.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&frame.payload);
    out.extend_from_slice(&frame.chunk.raw_crc32c.to_le_bytes());
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&ad[..]),
            &mut out[NONCE_LEN..],
        )
        .expect("AES-GCM seals any chunk under MAX_PAYLOAD");
    out.extend_from_slice(tag.as_ref());
    frame.chunk.raw_crc32c = 0;
    frame.sealed = true;
    frame.payload = out.freeze();
    frame.payload_crc32c = None;
    frame
}

/// Opens a sealed chunk: the encoded payload and its raw checksum back in place, ready for
/// [`crate::decode_chunk`]. Fails, naming nothing of the contents, when the frame is not
/// sealed, or was sealed under another key or as another chunk, or was altered on the way.
pub fn open_chunk(frame: &DataFrame, key: &ChunkKey) -> Result<DataFrame, DecodeError> {
    if !frame.sealed {
        return Err(DecodeError::NotSealed);
    }
    if frame.payload.len() < SEAL_OVERHEAD {
        return Err(DecodeError::Unsealable);
    }
    let ad = associated_data(&frame.chunk, frame.codec);
    let nonce: [u8; NONCE_LEN] = frame.payload[..NONCE_LEN].try_into().expect("nonce");
    let mut body = BytesMut::from(&frame.payload[NONCE_LEN..]);
    let plain_len = key
        .0
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&ad[..]),
            &mut body,
        )
        .map_err(|_| DecodeError::Unsealable)?
        .len();
    body.truncate(plain_len);
    let crc = body.split_off(plain_len - 4);
    let mut chunk = frame.chunk;
    chunk.raw_crc32c = u32::from_le_bytes(crc[..].try_into().expect("4 bytes"));
    Ok(DataFrame::new(chunk, frame.codec, false, Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDecoder;
    use crate::codec::{Compression, decode_chunk, encode_chunk};
    use crate::frame::{ChunkId, Dests, Frame, JobId};

    const TEXT: &[u8] = b"id,region,value\n1,aws:us-east-1,42\n2,gcp:europe-west4,17\n";

    fn chunk() -> ChunkRef {
        ChunkRef {
            job: JobId(9),
            chunk: ChunkId(5),
            object: 2,
            offset: 8 << 20,
            raw_len: 0,
            raw_crc32c: 0,
            dests: Dests(0b11),
        }
    }

    fn sealed(compression: Compression) -> DataFrame {
        let frame = encode_chunk(chunk(), Bytes::from_static(TEXT), compression);
        seal_chunk(frame, &ChunkKey::new(&[7; 32]), [1; NONCE_LEN])
    }

    fn opens(frame: &DataFrame) -> Result<Bytes, DecodeError> {
        decode_chunk(&open_chunk(frame, &ChunkKey::new(&[7; 32]))?)
    }

    #[test]
    fn a_sealed_chunk_opens_to_its_bytes_and_shows_none_on_the_wire() {
        for compression in [Compression::Off, Compression::Zstd(1)] {
            let frame = sealed(compression);
            assert_eq!(
                frame.chunk.raw_crc32c, 0,
                "the header says nothing of the plaintext"
            );
            let wire = Frame::Data(frame.clone()).to_bytes();
            assert!(!wire.windows(12).any(|w| TEXT.windows(12).any(|t| t == w)));
            let mut dec = FrameDecoder::new();
            dec.push(&wire);
            let Some(Frame::Data(back)) = dec.next_frame().unwrap() else {
                panic!("a data frame")
            };
            assert!(back.sealed);
            assert_eq!(opens(&back).unwrap(), Bytes::from_static(TEXT));
        }
    }

    #[test]
    fn a_sealed_chunk_altered_anywhere_does_not_open() {
        let frame = sealed(Compression::Off);
        for i in 0..frame.payload.len() {
            let mut bad = frame.payload.to_vec();
            bad[i] ^= 1;
            let bad = DataFrame {
                payload: bad.into(),
                ..frame.clone()
            };
            assert_eq!(opens(&bad), Err(DecodeError::Unsealable), "byte {i}");
        }
    }

    #[test]
    fn a_sealed_chunk_opens_only_as_the_chunk_it_was_sealed_as() {
        let frame = sealed(Compression::Zstd(1));
        let moved: [fn(&mut DataFrame); 7] = [
            |f| f.chunk.job.0 += 1,
            |f| f.chunk.chunk.0 += 1,
            |f| f.chunk.object += 1,
            |f| f.chunk.offset += 1,
            |f| f.chunk.raw_len += 1,
            |f| f.chunk.dests = Dests::one(0),
            |f| {
                f.codec = match f.codec {
                    Codec::Raw => Codec::Zstd,
                    Codec::Zstd => Codec::Raw,
                }
            },
        ];
        for (i, change) in moved.iter().enumerate() {
            let mut replayed = frame.clone();
            change(&mut replayed);
            assert_eq!(opens(&replayed), Err(DecodeError::Unsealable), "change {i}");
        }
        let other_key = open_chunk(&frame, &ChunkKey::new(&[8; 32]));
        assert_eq!(other_key, Err(DecodeError::Unsealable));
    }

    #[test]
    fn a_sink_that_expects_seals_refuses_plaintext_and_plaintext_sinks_refuse_seals() {
        let plain = encode_chunk(chunk(), Bytes::from_static(TEXT), Compression::Off);
        assert_eq!(opens(&plain), Err(DecodeError::NotSealed));
        assert_eq!(
            decode_chunk(&sealed(Compression::Off)),
            Err(DecodeError::Sealed)
        );
        let mut stub = sealed(Compression::Off);
        stub.payload = stub.payload.slice(..SEAL_OVERHEAD - 1);
        assert_eq!(opens(&stub), Err(DecodeError::Unsealable));
    }
}
