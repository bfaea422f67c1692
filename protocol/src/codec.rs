//! Chunk encoding: zstd when it pays, raw otherwise.

use bytes::Bytes;

use crate::frame::{ChunkRef, Codec, DataFrame};

/// How to encode chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Off,
    /// zstd at this level (1 is the fast default; negative levels are faster still).
    Zstd(i32),
}

/// Why a payload did not decode to the chunk it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("zstd payload did not decompress: {0}")]
    Zstd(String),
    #[error("decoded {got} bytes, the header says {want}")]
    Length { got: usize, want: u32 },
    #[error("decoded bytes fail the end-to-end checksum")]
    Checksum,
    /// A sealed chunk reached a receiver without the job's chunk key.
    #[error("the chunk is sealed and this receiver holds no key to open it")]
    Sealed,
    /// A receiver that holds the key got a chunk in the clear (someone on the way unsealed or
    /// forged it).
    #[error("the chunk is not sealed, and this job's chunks must be")]
    NotSealed,
    /// The seal did not open: altered on the way, sealed as another chunk, or under another key.
    #[error("the sealed chunk did not open under the job's key")]
    Unsealable,
}

/// Encodes `raw` as the chunk `chunk` (whose `raw_len` and `raw_crc32c` are set here). A chunk
/// that does not shrink under zstd is sent raw: compressing incompressible data only costs CPU
/// on both ends and bytes on the wire.
pub fn encode_chunk(mut chunk: ChunkRef, raw: Bytes, compression: Compression) -> DataFrame {
    chunk.raw_len = raw.len() as u32;
    chunk.raw_crc32c = crc32c::crc32c(&raw);
    if let Compression::Zstd(level) = compression
        && let Ok(packed) = zstd::bulk::compress(&raw, level)
        && packed.len() < raw.len()
    {
        return DataFrame::new(chunk, Codec::Zstd, false, Bytes::from(packed));
    }
    DataFrame::new(chunk, Codec::Raw, false, raw)
}

/// Decodes a frame's payload to the raw chunk and checks it end to end.
pub fn decode_chunk(frame: &DataFrame) -> Result<Bytes, DecodeError> {
    if frame.sealed {
        return Err(DecodeError::Sealed);
    }
    let raw = match frame.codec {
        Codec::Raw => frame.payload.clone(),
        Codec::Zstd => Bytes::from(
            zstd::bulk::decompress(&frame.payload, frame.chunk.raw_len as usize)
                .map_err(|e| DecodeError::Zstd(e.to_string()))?,
        ),
    };
    if raw.len() != frame.chunk.raw_len as usize {
        return Err(DecodeError::Length {
            got: raw.len(),
            want: frame.chunk.raw_len,
        });
    }
    if crc32c::crc32c(&raw) != frame.chunk.raw_crc32c {
        return Err(DecodeError::Checksum);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ChunkId, JobId};

    fn chunk() -> ChunkRef {
        ChunkRef {
            job: JobId(1),
            chunk: ChunkId(1),
            object: 0,
            offset: 0,
            raw_len: 0,
            raw_crc32c: 0,
            dests: crate::Dests::ALL,
        }
    }

    #[test]
    fn text_is_compressed_and_round_trips() {
        let text: Bytes = "id,region,value\n1,aws:us-east-1,42\n".repeat(2000).into();
        let f = encode_chunk(chunk(), text.clone(), Compression::Zstd(1));
        assert_eq!(f.codec, Codec::Zstd);
        assert!(f.payload.len() * 10 < text.len());
        assert_eq!(decode_chunk(&f).unwrap(), text);
    }

    #[test]
    fn incompressible_chunks_go_raw() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let f = encode_chunk(chunk(), Bytes::from(noise.clone()), Compression::Zstd(3));
        assert_eq!(f.codec, Codec::Raw);
        assert_eq!(decode_chunk(&f).unwrap(), Bytes::from(noise));
        assert_eq!(
            encode_chunk(chunk(), Bytes::new(), Compression::Zstd(1)).codec,
            Codec::Raw
        );
    }

    #[test]
    fn a_payload_that_decodes_to_other_bytes_is_caught() {
        let mut f = encode_chunk(
            chunk(),
            Bytes::from_static(b"the right bytes"),
            Compression::Off,
        );
        f.payload = Bytes::from_static(b"the wrong bytes");
        assert_eq!(decode_chunk(&f), Err(DecodeError::Checksum));
        f.payload = Bytes::from_static(b"short");
        assert!(matches!(decode_chunk(&f), Err(DecodeError::Length { .. })));
    }
}
