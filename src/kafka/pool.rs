//! Large response bodies, reused. A fetch response is sliced into chunks
//! that encoder threads hold for a while, so its memory is freed by
//! whichever thread drops the last chunk. Handed back to the allocator
//! every time, each response costs fresh pages (a page fault per 4 KiB)
//! and, with musl's allocator, an `munmap` that interrupts every core.
//! Here the last chunk's drop puts the buffer back in a small pool and the
//! connection reads its next large response into it.
//!
//! Owns buffers only: never reads a socket, never decodes.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Bodies at least this large come from the pool (fetch responses); the
/// small answers of other requests do not.
const POOLED: usize = 1 << 20;
/// Buffers the pool keeps while nobody uses them: one per connection, so
/// idle memory stays one response per broker.
const KEEP: usize = 1;
/// A buffer larger than this (one response to an unusually large batch)
/// goes back to the allocator.
const KEEP_BYTES: usize = 32 << 20;

/// The buffers of one connection, shared with the chunks it handed out.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// A buffer of exactly `len` bytes (a reused buffer's old bytes are
    /// left in it: the caller overwrites them all).
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len < POOLED {
            return vec![0; len];
        }
        let spare = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buf = spare.unwrap_or_default();
        // Only bytes past the old length are zeroed.
        buf.resize(len, 0);
        buf
    }

    /// `buf` as `Bytes`; for a large one, the last drop gives it back.
    pub fn share(&self, buf: Vec<u8>) -> Bytes {
        if buf.len() < POOLED {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() > KEEP_BYTES {
            return;
        }
        let mut spare = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < KEEP {
            spare.push(buf);
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare(pool: &Pool) -> Vec<usize> {
        pool.0.lock().unwrap().iter().map(Vec::capacity).collect()
    }

    #[test]
    fn the_last_chunk_dropped_gives_the_buffer_back() {
        let pool = Pool::default();
        let mut buf = pool.take(3 * POOLED);
        buf.fill(7);
        let ptr = buf.as_ptr();
        let body = pool.share(buf);
        let (a, b) = (body.slice(..10), body.slice(POOLED..));
        drop(body);
        drop(a);
        assert!(spare(&pool).is_empty(), "a chunk is still held");
        assert_eq!(b[0], 7);
        drop(b);
        assert_eq!(spare(&pool).len(), 1);
        // The next response reads into the same memory, at its own length.
        let again = pool.take(POOLED);
        assert_eq!((again.as_ptr(), again.len()), (ptr, POOLED));
        assert!(spare(&pool).is_empty());
    }

    #[test]
    fn the_pool_keeps_few_buffers_and_no_huge_one() {
        let pool = Pool::default();
        let bodies: Vec<_> = (0..4).map(|_| pool.share(pool.take(POOLED))).collect();
        drop(bodies);
        assert_eq!(spare(&pool).len(), KEEP);
        // Small answers neither come from nor go to the pool.
        let small = pool.take(POOLED - 1);
        assert_eq!(spare(&pool).len(), KEEP);
        drop(pool.share(small));
        assert_eq!(spare(&pool).len(), KEEP);
        let pool = Pool::default();
        drop(pool.share(pool.take(KEEP_BYTES + 1)));
        assert!(spare(&pool).is_empty());
    }
}
