//! Frame buffers written by a connection's writer, kept for the next
//! application sends.
//!
//! An application send allocates its frame on the caller's thread and the
//! writer frees it on another; with the system allocator each such pair
//! takes the allocator's locks (its per-thread caches only serve frees and
//! allocations on one thread). Writers hand their written buffers back here
//! a batch at a time, and `NodeHandle::send` takes one, so a stream of
//! messages reuses a few hundred buffers instead of allocating one each.

use std::sync::{Arc, Mutex};

/// Bytes of buffers kept at most, all together.
const POOL_BYTES: usize = 1 << 20;
/// Buffers larger than this are not kept.
const BUF_MAX: usize = 64 << 10;

/// A bounded pool of frame buffers.
#[derive(Debug, Default)]
pub(crate) struct FramePool {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    bufs: Vec<Vec<u8>>,
    /// Capacity of `bufs`, summed.
    bytes: usize,
}

impl FramePool {
    /// An empty buffer with room for `cap` bytes: a kept one if any (grown
    /// if it is too small), else a new one.
    pub(crate) fn take(&self, cap: usize) -> Vec<u8> {
        if cap <= BUF_MAX {
            let kept = match self.inner.lock() {
                Ok(mut p) => p.bufs.pop().inspect(|b| p.bytes -= b.capacity()),
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

    /// Keeps what fits of `spent` (emptied either way).
    pub(crate) fn give(&self, spent: &mut Vec<Vec<u8>>) {
        if let Ok(mut p) = self.inner.lock() {
            for b in spent.drain(..) {
                let c = b.capacity();
                if c == 0 || c > BUF_MAX || p.bytes + c > POOL_BYTES {
                    continue;
                }
                p.bytes += c;
                p.bufs.push(b);
            }
        }
        spent.clear();
    }
}

/// A writer's side of the pool: buffers are kept locally and handed to the
/// pool a batch at a time (one lock per batch).
#[derive(Debug)]
pub(crate) struct Recycler {
    pool: Arc<FramePool>,
    stash: Vec<Vec<u8>>,
}

/// Buffers a [`Recycler`] hands over at once.
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

    /// Keeps `buf` for the pool, unless it is larger than the pool keeps.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > BUF_MAX {
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
    fn buffers_are_reused_within_bounds() {
        let pool = FramePool::default();
        let mut spent = vec![Vec::with_capacity(1000), Vec::with_capacity(BUF_MAX + 1)];
        let first = spent[0].as_ptr();
        pool.give(&mut spent);
        assert!(spent.is_empty());
        // The oversized one was not kept; the other comes back, empty.
        let b = pool.take(500);
        assert_eq!(b.as_ptr(), first);
        assert!(b.is_empty() && b.capacity() >= 1000);
        assert_eq!(pool.take(500).capacity(), 500);
        // The pool holds at most POOL_BYTES.
        let mut many: Vec<Vec<u8>> = (0..POOL_BYTES / BUF_MAX + 5)
            .map(|_| Vec::with_capacity(BUF_MAX))
            .collect();
        pool.give(&mut many);
        assert!(pool.inner.lock().unwrap().bytes <= POOL_BYTES);
        // Asking for more than a kept buffer holds grows it.
        assert!(pool.take(BUF_MAX).capacity() >= BUF_MAX);
    }
}
