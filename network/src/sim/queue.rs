//! The simulator's event queue: items ordered by virtual time, ties in the
//! order they were pushed, so a run is deterministic.
//!
//! A binary heap of small keys (time, sequence, slot) over a slab of items:
//! sifting moves 24 bytes, never an item.

use crate::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: Instant,
    seq: u64,
    slot: u32,
}

/// Items due at virtual times.
pub(crate) struct EventQueue<T> {
    heap: BinaryHeap<Reverse<Key>>,
    slab: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Queues `item` at `at`, after everything already queued for `at`.
    pub(crate) fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(item);
                i
            }
            None => {
                self.slab.push(Some(item));
                // More than 4 billion queued items is far past memory.
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.heap.push(Reverse(Key {
            at,
            seq: self.seq,
            slot,
        }));
    }

    /// When the next item is due.
    pub(crate) fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(k)| k.at)
    }

    /// The next item and its time.
    pub(crate) fn pop(&mut self) -> Option<(Instant, T)> {
        let Reverse(k) = self.heap.pop()?;
        let item = self.slab.get_mut(k.slot as usize).and_then(Option::take);
        self.free.push(k.slot);
        item.map(|i| (k.at, i))
    }

    /// Items queued.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_push_order() {
        let mut q = EventQueue::default();
        q.push(Instant::from_millis(5), "b");
        q.push(Instant::from_millis(1), "a");
        q.push(Instant::from_millis(5), "c");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop()).map(|(_, i)| i).collect();
        assert_eq!(order, vec!["a", "b", "c"]);
        assert_eq!(q.len(), 0);
    }
}
