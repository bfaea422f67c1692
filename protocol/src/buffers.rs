//! Payload buffers used again ([`BufferPool`]). A receiver reads each chunk's payload into a
//! buffer of its own, which lives until the chunk is written or sent on. Taken from the
//! allocator afresh, every such buffer's pages were faulted in and zeroed by the kernel — a
//! third of a relay's CPU in the data-plane benchmark — since the buffer is freed on another
//! thread than the one that takes the next, and the allocator hands out new memory. A pooled
//! buffer goes back to its pool when the last [`Bytes`] of its payload is dropped.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Payloads smaller than this are not pooled: they are read with their neighbours.
pub const POOLED_FROM: usize = 64 * 1024;
/// New buffers are rounded up to this, so chunks of about one size share buffers.
const ROUND_TO: usize = 256 * 1024;

/// Idle payload buffers, at most `max_idle` of them kept.
#[derive(Debug)]
pub struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle: usize,
}

impl BufferPool {
    /// A pool keeping up to `max_idle` idle buffers (what a receiver holds at most at once is
    /// a good bound: more would only ever be idle).
    pub fn new(max_idle: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    /// An empty buffer with room for `len` bytes: the smallest idle one that fits without
    /// wasting more than `len` (or one rounding) besides, else a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().expect("buffer pool lock");
        let most = len.saturating_mul(2).max(ROUND_TO);
        let fits = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len && b.capacity() <= most)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match fits {
            Some(i) => {
                let mut buf = idle.swap_remove(i);
                buf.clear();
                buf
            }
            None => Vec::with_capacity(len.div_ceil(ROUND_TO) * ROUND_TO),
        }
    }

    /// `buf` as a payload's bytes, back in this pool once the last of them is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    /// Idle buffers held.
    pub fn idle(&self) -> usize {
        self.idle.lock().expect("buffer pool lock").len()
    }

    /// Keeps `buf`, in place of the one idle longest when the pool is full: as the sizes of
    /// chunks change, buffers no chunk fits any more leave.
    fn give(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().expect("buffer pool lock");
        if idle.len() >= self.max_idle.max(1) {
            idle.remove(0);
        }
        idle.push(buf);
    }
}

/// A payload's buffer, which goes back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_bytes_go_and_is_taken_again() {
        let pool = BufferPool::new(2);
        let mut buf = pool.take(1_000_000);
        buf.extend_from_slice(&[7; 1_000_000]);
        let at = buf.as_ptr();
        let payload = pool.freeze(buf);
        let part = payload.slice(10..20);
        drop(payload);
        assert_eq!(pool.idle(), 0, "a slice still holds it");
        assert_eq!(&part[..], &[7; 10]);
        drop(part);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(900_000);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        // Too small for a larger payload, too large for a much smaller one: new buffers.
        pool.give(again);
        let (larger, smaller) = (pool.take(2_000_000), pool.take(100_000));
        assert_eq!(pool.idle(), 1, "left idle");
        assert!(larger.capacity() >= 2_000_000 && smaller.capacity() < 900_000);
    }

    #[test]
    fn no_more_than_max_idle_buffers_are_kept_the_newest_staying() {
        let pool = BufferPool::new(2);
        let small = pool.take(POOLED_FROM);
        let at = small.as_ptr();
        drop(pool.freeze(small));
        let again = pool.take(100_000);
        assert_eq!(again.as_ptr(), at, "a small payload's buffer is used again");
        let payloads: Vec<Bytes> = [1, 2, 3]
            .map(|n| pool.freeze(pool.take(n * ROUND_TO)))
            .into();
        drop(payloads);
        assert_eq!(pool.idle(), 2);
        // The first (the smallest) left; the newest stay.
        assert!(pool.take(ROUND_TO).capacity() >= 2 * ROUND_TO);
    }
}
