//! Splitting a copy into chunks that every destination store can assemble.
//!
//! A chunk is a byte range of one object and becomes one multipart part at the sink, so chunks
//! must respect the destination's part rules: every part but the last at least the store's
//! minimum (S3: 5 MiB), and no more parts than it allows (S3: 10,000). Objects no larger than
//! one chunk travel whole and are written with a single put. A copy cuts each object as the
//! listing streams in ([`object_chunks`]); [`plan_chunks`] cuts a whole list at once.

use skyx_protocol::ChunkId;

/// One object of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Key relative to the copy's source prefix (the same relative key at the destination).
    pub key: String,
    pub size: u64,
}

/// How large chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// Preferred chunk size.
    pub target: u64,
    /// The destination's smallest non-final part.
    pub min_part: u64,
    /// The destination's most parts per object.
    pub max_parts: u32,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        ChunkPolicy {
            target: 16 * 1024 * 1024,
            min_part: 5 * 1024 * 1024,
            max_parts: 10_000,
        }
    }
}

/// One chunk of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    pub id: ChunkId,
    /// Index into the object list.
    pub object: u32,
    /// 1-based part number within the object.
    pub part: u32,
    pub offset: u64,
    pub len: u64,
    /// True when the chunk is the whole object (written with one put, no multipart).
    pub whole_object: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error(
        "{key}: {size} bytes need more than {max_parts} parts even at the protocol's largest chunk"
    )]
    TooLarge {
        key: String,
        size: u64,
        max_parts: u32,
    },
    #[error("more than {} objects in one copy", u32::MAX)]
    TooManyObjects,
    #[error(
        "a chunk size of {chunk} bytes is above the largest chunk a frame carries ({MAX_CHUNK} bytes)"
    )]
    ChunkTooLarge { chunk: u64 },
}

/// The largest chunk the frame format carries (its payload limit).
pub const MAX_CHUNK: u64 = skyx_protocol::frame::MAX_PAYLOAD as u64;

/// The chunk size for an object of `size` bytes under `policy`.
pub fn chunk_size(size: u64, policy: &ChunkPolicy) -> u64 {
    let mut chunk = policy.target.max(policy.min_part).max(1);
    // Grow chunks (in MiB steps) until the object fits in the allowed number of parts.
    let needed = size.div_ceil(u64::from(policy.max_parts.max(1)));
    if needed > chunk {
        chunk = needed.div_ceil(1024 * 1024) * 1024 * 1024;
    }
    chunk
}

/// Splits `objects` into chunks, numbering them from 0 in object order.
pub fn plan_chunks(
    objects: &[ObjectEntry],
    policy: &ChunkPolicy,
) -> Result<Vec<ChunkSpec>, ChunkError> {
    if objects.len() > u32::MAX as usize {
        return Err(ChunkError::TooManyObjects);
    }
    let mut out = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let chunk = checked_chunk_size(&o.key, o.size, policy)?;
        out.extend(object_chunks(
            i as u32,
            ChunkId(out.len() as u64),
            o.size,
            chunk,
        ));
    }
    Ok(out)
}

/// The chunk size for object `key` of `size` bytes under `policy`, or why it cannot be
/// copied: it needs chunks larger than a frame carries.
pub fn checked_chunk_size(key: &str, size: u64, policy: &ChunkPolicy) -> Result<u64, ChunkError> {
    if policy.target > MAX_CHUNK {
        return Err(ChunkError::ChunkTooLarge {
            chunk: policy.target,
        });
    }
    let chunk = chunk_size(size, policy);
    if chunk > MAX_CHUNK {
        return Err(ChunkError::TooLarge {
            key: key.to_string(),
            size,
            max_parts: policy.max_parts,
        });
    }
    Ok(chunk)
}

/// The chunks of one object of `size` bytes cut at `chunk`, numbered from `first`: one whole
/// chunk when it fits (an empty object too), else parts covering every byte once.
pub fn object_chunks(object: u32, first: ChunkId, size: u64, chunk: u64) -> Vec<ChunkSpec> {
    if size <= chunk {
        return vec![ChunkSpec {
            id: first,
            object,
            part: 1,
            offset: 0,
            len: size,
            whole_object: true,
        }];
    }
    let mut out = Vec::with_capacity(size.div_ceil(chunk) as usize);
    let mut offset = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        out.push(ChunkSpec {
            id: ChunkId(first.0 + out.len() as u64),
            object,
            part: out.len() as u32 + 1,
            offset,
            len,
            whole_object: false,
        });
        offset += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn obj(size: u64) -> ObjectEntry {
        ObjectEntry {
            key: format!("k{size}"),
            size,
        }
    }

    #[test]
    fn small_and_empty_objects_travel_whole() {
        let chunks =
            plan_chunks(&[obj(0), obj(1), obj(16 * MIB)], &ChunkPolicy::default()).unwrap();
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks
                .iter()
                .all(|c| c.whole_object && c.part == 1 && c.offset == 0)
        );
        assert_eq!(
            chunks.iter().map(|c| c.len).collect::<Vec<_>>(),
            vec![0, 1, 16 * MIB]
        );
    }

    #[test]
    fn large_objects_are_covered_exactly_by_parts_within_the_store_rules() {
        let policy = ChunkPolicy::default();
        for size in [
            16 * MIB + 1,
            100 * MIB,
            5 * 1024 * MIB + 7,
            200 * 1024 * MIB,
        ] {
            let chunks = plan_chunks(&[obj(size)], &policy).unwrap();
            assert!(
                chunks.len() <= policy.max_parts as usize,
                "{size}: {} parts",
                chunks.len()
            );
            let mut next = 0;
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(c.offset, next, "{size}: contiguous");
                assert_eq!(c.part as usize, i + 1);
                assert!(!c.whole_object);
                if i + 1 < chunks.len() {
                    assert!(
                        c.len >= policy.min_part,
                        "{size}: non-final part below the minimum"
                    );
                }
                next += c.len;
            }
            assert_eq!(next, size, "{size}: every byte covered once");
        }
    }

    #[test]
    fn chunk_ids_are_dense_across_objects() {
        let chunks = plan_chunks(
            &[obj(40 * MIB), obj(3), obj(20 * MIB)],
            &ChunkPolicy::default(),
        )
        .unwrap();
        let ids: Vec<u64> = chunks.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, (0..chunks.len() as u64).collect::<Vec<_>>());
        assert_eq!(chunks.iter().filter(|c| c.object == 0).count(), 3);
    }

    #[test]
    fn objects_past_what_parts_can_hold_are_refused() {
        let policy = ChunkPolicy {
            max_parts: 2,
            ..Default::default()
        };
        let err = plan_chunks(&[obj(1024 * 1024 * MIB)], &policy).unwrap_err();
        assert!(matches!(err, ChunkError::TooLarge { .. }), "{err}");
    }
}
