//! Frame buffers, kept for reuse: those of frames written by a
//! connection's writer go to the next application sends, those of frames
//! the core has handled go to the next reads.
//!
//! An application send allocates its frame on the caller's thread and the
//! writer frees it on another (a reader and the driver likewise); with the
//! system allocator each such pair takes the allocator's locks, and large
//! buffers are mapped and unmapped each time (a page fault per 4 KiB
//! touched). Buffers handed back here are reused instead, within bounds:
//! a node keeps at most 1 MiB of small buffers and 4 MiB of large ones.

use std::sync::{Arc, Mutex};

/// Small buffers: at most this large each…
const SMALL_MAX: usize = 64 << 10;
/// … and this much of them in all.
const SMALL_BYTES: usize = 1 << 20;
/// Large buffers (a frame near the 1 MiB payload limit): at most this
/// large each…
const LARGE_MAX: usize = 2 << 20;
/// … and this much of them in all.
const LARGE_BYTES: usize = 4 << 20;

/// A bounded pool of frame buffers.
#[derive(Debug, Default)]
pub(crate) struct FramePool {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    small: Shelf,
    large: Shelf,
}

/// Buffers of one size class, and their capacity summed.
#[derive(Debug, Default)]
struct Shelf {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Shelf {
    fn pop(&mut self) -> Option<Vec<u8>> {
        let b = self.bufs.pop()?;
        self.bytes -= b.capacity();
        Some(b)
    }

    fn keep(&mut self, b: Vec<u8>, max: usize) {
        if self.bytes + b.capacity() <= max {
            self.bytes += b.capacity();
            self.bufs.push(b);
        }
    }
}

impl Inner {
    fn keep(&mut self, b: Vec<u8>) {
        match b.capacity() {
            0 => {}
            c if c <= SMALL_MAX => self.small.keep(b, SMALL_BYTES),
            c if c <= LARGE_MAX => self.large.keep(b, LARGE_BYTES),
            _ => {}
        }
    }
}

impl FramePool {
    /// An empty buffer with room for `cap` bytes: a kept one of its size
    /// class if any (grown if too small), else a new one.
    pub(crate) fn take(&self, cap: usize) -> Vec<u8> {
        if cap <= LARGE_MAX {
            let kept = match self.inner.lock() {
                Ok(mut p) if cap <= SMALL_MAX => p.small.pop(),
                Ok(mut p) => p.large.pop(),
                Err(_) => None,
            };
            if let Some(mut b) = kept {
                b.clear();
                b.reserve(cap);
                return b;
            }
        }
        Vec::with_capacity(cap)
    }

    /// Keeps `buf` if it fits.
    pub(crate) fn give_one(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > LARGE_MAX {
            return;
        }
        if let Ok(mut p) = self.inner.lock() {
            p.keep(buf);
        }
    }

    /// Keeps what fits of `spent` (emptied either way).
    pub(crate) fn give(&self, spent: &mut Vec<Vec<u8>>) {
        if let Ok(mut p) = self.inner.lock() {
            for b in spent.drain(..) {
                p.keep(b);
            }
        }
        spent.clear();
    }
}

/// A writer's side of the pool: small buffers are stashed and handed to
/// the pool a batch at a time (one lock per batch), large ones at once.
#[derive(Debug)]
pub(crate) struct Recycler {
    pool: Arc<FramePool>,
    stash: Vec<Vec<u8>>,
}

/// Small buffers a [`Recycler`] hands over at once.
const STASH: usize = 64;

impl Recycler {
    pub(crate) fn new(pool: Arc<FramePool>) -> Self {
        Recycler {
            pool,
            stash: Vec::new(),
        }
    }

    /// The pool it feeds.
    pub(crate) fn pool(&self) -> Arc<FramePool> {
        self.pool.clone()
    }

    /// Hands `buf` to the pool, now or with the next batch.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > SMALL_MAX {
            self.pool.give_one(buf);
            return;
        }
        self.stash.push(buf);
        if self.stash.len() >= STASH {
            self.pool.give(&mut self.stash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_size_within_bounds() {
        let pool = FramePool::default();
        let mut spent = vec![Vec::with_capacity(1000), Vec::with_capacity(LARGE_MAX + 1)];
        let first = spent[0].as_ptr();
        pool.give(&mut spent);
        assert!(spent.is_empty());
        // The oversized one was not kept; the other comes back, empty.
        let b = pool.take(500);
        assert_eq!(b.as_ptr(), first);
        assert!(b.is_empty() && b.capacity() >= 1000);
        assert_eq!(pool.take(500).capacity(), 500);
        // A large buffer serves large frames only.
        let big: Vec<u8> = Vec::with_capacity(1 << 20);
        let big_ptr = big.as_ptr();
        pool.give_one(big);
        assert_ne!(pool.take(100).as_ptr(), big_ptr);
        assert_eq!(pool.take(SMALL_MAX + 1).as_ptr(), big_ptr);
        // Each class holds at most its bound.
        let mut many: Vec<Vec<u8>> = (0..SMALL_BYTES / SMALL_MAX + 5)
            .map(|_| Vec::with_capacity(SMALL_MAX))
            .chain((0..LARGE_BYTES / LARGE_MAX + 5).map(|_| Vec::with_capacity(LARGE_MAX)))
            .collect();
        pool.give(&mut many);
        let p = pool.inner.lock().unwrap();
        assert!(p.small.bytes <= SMALL_BYTES && p.small.bytes > 0);
        assert!(p.large.bytes <= LARGE_BYTES && p.large.bytes > 0);
    }
}
