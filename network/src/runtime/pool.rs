//! Frame buffers, kept for reuse: those of frames written by a
//! connection's writer go to the next application sends and forwarded
//! frames, those of frames the core has handled go to the next reads.
//!
//! An application send allocates its frame on the caller's thread and the
//! writer frees it on another (a reader and the driver likewise); with the
//! system allocator each such pair takes the allocator's locks, and large
//! buffers are mapped and unmapped each time (a page fault per 4 KiB
//! touched). Buffers handed back here are reused instead, within bounds: a
//! node keeps at most 1 MiB of small frame buffers, 4 MiB of large ones and
//! 4 MiB of read buffers (at most 1,024 of each kind, and none too small to
//! be worth keeping), and each writer holds at most 128 KiB on its way to
//! the pool. A frame buffer is reused only for a frame that fills at least
//! half of it, so a small message never pins a large buffer: a queue of
//! frames to send holds at most about twice the bytes it counts. A read
//! buffer holds a whole read (64 KiB or more) however small its frames, so
//! batches waiting for the core hold up to that much each.

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
/// Read buffers, of any size up to `LARGE_MAX`: this much in all.
const READ_BYTES: usize = 4 << 20;
/// Smallest capacity that is never too large for a request.
const FIT_MIN: usize = 128;
/// Frame buffers smaller than this are not kept (a link frame's few bytes
/// would take a place on the shelf and serve nothing)…
const FRAME_MIN: usize = 256;
/// … nor read buffers smaller than this (a datagram's copy).
const READ_MIN: usize = 16 << 10;
/// Buffers a shelf holds at most, whatever their size.
const SHELF_MAX: usize = 1024;

/// A bounded pool of frame buffers.
#[derive(Debug, Default)]
pub(crate) struct FramePool {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    small: Shelf,
    large: Shelf,
    read: Shelf,
}

/// Buffers of one kind, and their capacity summed.
#[derive(Debug, Default)]
struct Shelf {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Shelf {
    /// The last buffer kept, if it suits a request for `cap` bytes: not
    /// more than twice larger (a smaller one is grown).
    fn take(&mut self, cap: usize) -> Option<Vec<u8>> {
        let last = self.bufs.last()?;
        if last.capacity() > cap.saturating_mul(2).max(FIT_MIN) {
            return None;
        }
        let b = self.bufs.pop()?;
        self.bytes -= b.capacity();
        Some(b)
    }

    fn keep(&mut self, b: Vec<u8>, max: usize) {
        if self.bytes + b.capacity() <= max && self.bufs.len() < SHELF_MAX {
            self.bytes += b.capacity();
            self.bufs.push(b);
        }
    }
}

/// Empties `b` and makes room for `cap` bytes.
fn ready(mut b: Vec<u8>, cap: usize) -> Vec<u8> {
    b.clear();
    b.reserve(cap);
    b
}

impl FramePool {
    /// An empty buffer with room for `cap` bytes, to build a frame in: a
    /// kept one of its size class if one suits, else a new one.
    pub(crate) fn take(&self, cap: usize) -> Vec<u8> {
        if cap <= LARGE_MAX {
            let kept = match self.inner.lock() {
                Ok(mut p) if cap <= SMALL_MAX => p.small.take(cap),
                Ok(mut p) => p.large.take(cap),
                Err(_) => None,
            };
            if let Some(b) = kept {
                return ready(b, cap);
            }
        }
        Vec::with_capacity(cap)
    }

    /// An empty buffer with room for `cap` bytes, to read frames into.
    pub(crate) fn take_read(&self, cap: usize) -> Vec<u8> {
        if cap <= LARGE_MAX {
            if let Some(b) = self.inner.lock().ok().and_then(|mut p| p.read.take(cap)) {
                return ready(b, cap);
            }
        }
        Vec::with_capacity(cap)
    }

    /// Keeps a read buffer the core is done with, if it fits.
    pub(crate) fn give_read(&self, buf: Vec<u8>) {
        if buf.capacity() < READ_MIN || buf.capacity() > LARGE_MAX {
            return;
        }
        if let Ok(mut p) = self.inner.lock() {
            p.read.keep(buf, READ_BYTES);
        }
    }

    /// Keeps what fits of written frames' buffers `spent` (emptied either
    /// way).
    pub(crate) fn give(&self, spent: &mut Vec<Vec<u8>>) {
        if let Ok(mut p) = self.inner.lock() {
            for b in spent.drain(..) {
                match b.capacity() {
                    c if c < FRAME_MIN => {}
                    c if c <= SMALL_MAX => p.small.keep(b, SMALL_BYTES),
                    c if c <= LARGE_MAX => p.large.keep(b, LARGE_BYTES),
                    _ => {}
                }
            }
        }
        spent.clear();
    }
}

/// A writer's side of the pool: buffers are stashed and handed to the pool
/// a batch at a time (one lock per batch), at most [`STASH_BYTES`] held.
#[derive(Debug)]
pub(crate) struct Recycler {
    pool: Arc<FramePool>,
    stash: Vec<Vec<u8>>,
    stash_bytes: usize,
}

/// Buffers a [`Recycler`] hands over at once…
const STASH: usize = 64;
/// … or sooner, once they hold this much.
const STASH_BYTES: usize = 128 << 10;

impl Recycler {
    pub(crate) fn new(pool: Arc<FramePool>) -> Self {
        Recycler {
            pool,
            stash: Vec::new(),
            stash_bytes: 0,
        }
    }

    /// The pool it feeds.
    pub(crate) fn pool(&self) -> Arc<FramePool> {
        self.pool.clone()
    }

    /// Hands `buf` to the pool, with the next batch.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() < FRAME_MIN || buf.capacity() > LARGE_MAX {
            return;
        }
        self.stash_bytes += buf.capacity();
        self.stash.push(buf);
        if self.stash.len() >= STASH || self.stash_bytes >= STASH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.pool.give(&mut self.stash);
        self.stash_bytes = 0;
    }
}

impl Drop for Recycler {
    fn drop(&mut self) {
        self.flush();
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
        // A large buffer serves large frames only, and not much smaller ones.
        let big: Vec<u8> = Vec::with_capacity(1 << 20);
        let big_ptr = big.as_ptr();
        pool.give(&mut vec![big]);
        let small = pool.take(100);
        assert_ne!(small.as_ptr(), big_ptr);
        let too_small = pool.take(SMALL_MAX + 1);
        assert_ne!(too_small.as_ptr(), big_ptr, "over 2x too large");
        let fits = pool.take(600 << 10);
        assert_eq!(fits.as_ptr(), big_ptr);
        // Read buffers have their own shelf.
        let read: Vec<u8> = Vec::with_capacity(SMALL_MAX);
        let read_ptr = read.as_ptr();
        pool.give_read(read);
        let frame = pool.take(SMALL_MAX);
        assert_ne!(frame.as_ptr(), read_ptr);
        let for_reading = pool.take_read(SMALL_MAX);
        assert_eq!(for_reading.as_ptr(), read_ptr);
        // Each shelf holds at most its bound.
        let mut many: Vec<Vec<u8>> = (0..SMALL_BYTES / SMALL_MAX + 5)
            .map(|_| Vec::with_capacity(SMALL_MAX))
            .chain((0..LARGE_BYTES / LARGE_MAX + 5).map(|_| Vec::with_capacity(LARGE_MAX)))
            .collect();
        pool.give(&mut many);
        for _ in 0..READ_BYTES / LARGE_MAX + 5 {
            pool.give_read(Vec::with_capacity(LARGE_MAX));
        }
        let p = pool.inner.lock().unwrap();
        assert!(p.small.bytes <= SMALL_BYTES && p.small.bytes > 0);
        assert!(p.large.bytes <= LARGE_BYTES && p.large.bytes > 0);
        assert!(p.read.bytes <= READ_BYTES && p.read.bytes > 0);
    }

    #[test]
    fn tiny_buffers_are_not_kept_and_shelves_hold_a_bounded_count() {
        let pool = FramePool::default();
        pool.give(&mut vec![Vec::with_capacity(FRAME_MIN - 1)]);
        pool.give_read(Vec::with_capacity(READ_MIN - 1));
        let mut many: Vec<Vec<u8>> = (0..SHELF_MAX + 100)
            .map(|_| Vec::with_capacity(FRAME_MIN))
            .collect();
        pool.give(&mut many);
        let p = pool.inner.lock().unwrap();
        assert_eq!(p.read.bufs.len(), 0);
        assert_eq!(p.small.bufs.len(), SHELF_MAX);
        assert!(p.small.bufs.iter().all(|b| b.capacity() >= FRAME_MIN));
    }

    #[test]
    fn a_writer_holds_little_and_hands_it_over_when_dropped() {
        let pool = Arc::new(FramePool::default());
        let mut r = Recycler::new(pool.clone());
        r.recycle(Vec::with_capacity(100 << 10));
        assert_eq!(r.stash.len(), 1, "under the byte bound: stashed");
        r.recycle(Vec::with_capacity(100 << 10));
        assert!(r.stash.is_empty(), "past it: handed over");
        r.recycle(Vec::with_capacity(1000));
        drop(r);
        assert_eq!(pool.inner.lock().unwrap().small.bufs.len(), 1);
    }
}
