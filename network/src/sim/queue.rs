//! The simulator's event queue: items ordered by virtual time, ties in the
//! order they were pushed, so a run is deterministic.
//!
//! A timing wheel: 4,096 slots of 1 ms cover the next 4 s, where nearly
//! every event of a simulation falls (link delays, timers); later events
//! wait in an overflow heap and move into the wheel as it turns. Only the
//! slot being processed is a heap (built in linear time when the wheel
//! reaches it), so pushing is O(1) and popping costs a heap of one
//! millisecond's events instead of one of every pending event — what made
//! a 100,000-node simulation bound by cache misses.

use crate::Instant;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Microseconds per slot.
const SLOT_US: u64 = 1000;
/// Slots in the wheel (a power of two).
const SLOTS: u64 = 4096;
const MASK: u64 = SLOTS - 1;

struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn slot(&self) -> u64 {
        self.at.as_micros() / SLOT_US
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    /// Reversed: `BinaryHeap` is a max-heap, the earliest must come first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Items due at virtual times.
pub(crate) struct EventQueue<T> {
    /// Slot `s` (absolute) lives at `slots[s & MASK]` while
    /// `cur < s < cur + SLOTS`.
    slots: Vec<Vec<Entry<T>>>,
    /// Items in `slots`.
    in_wheel: usize,
    /// The slot being processed (and anything pushed for it or earlier).
    current: BinaryHeap<Entry<T>>,
    /// Absolute number of the slot in `current`.
    cur: u64,
    /// Items past the wheel's reach.
    overflow: BinaryHeap<Entry<T>>,
    len: usize,
    seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            in_wheel: 0,
            current: BinaryHeap::new(),
            cur: 0,
            overflow: BinaryHeap::new(),
            len: 0,
            seq: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Queues `item` at `at`, after everything already queued for `at`.
    pub(crate) fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.len += 1;
        self.place(Entry {
            at,
            seq: self.seq,
            item,
        });
    }

    fn place(&mut self, e: Entry<T>) {
        let slot = e.slot();
        if slot <= self.cur {
            self.current.push(e);
        } else if slot < self.cur + SLOTS {
            self.slots[(slot & MASK) as usize].push(e);
            self.in_wheel += 1;
        } else {
            self.overflow.push(e);
        }
    }

    /// Turns the wheel until the current slot holds the next item (if any).
    fn advance(&mut self) {
        while self.current.is_empty() && self.len > 0 {
            if self.in_wheel == 0 {
                // Nothing in reach: jump to the first overflow item's slot.
                match self.overflow.peek() {
                    Some(e) => self.cur = e.slot().max(self.cur + 1) - 1,
                    None => return,
                }
            }
            self.cur += 1;
            while self
                .overflow
                .peek()
                .is_some_and(|e| e.slot() < self.cur + SLOTS)
            {
                if let Some(e) = self.overflow.pop() {
                    self.place(e);
                }
            }
            let i = (self.cur & MASK) as usize;
            if !self.slots[i].is_empty() {
                // The slot's buffer becomes the heap (no copy); the slot
                // starts over empty, so idle slots hold no memory.
                let items = std::mem::take(&mut self.slots[i]);
                self.in_wheel -= items.len();
                self.current = BinaryHeap::from(items);
            }
        }
    }

    /// When the next item is due.
    pub(crate) fn peek_time(&mut self) -> Option<Instant> {
        self.advance();
        self.current.peek().map(|e| e.at)
    }

    /// The next item and its time.
    pub(crate) fn pop(&mut self) -> Option<(Instant, T)> {
        self.advance();
        let e = self.current.pop()?;
        self.len -= 1;
        Some((e.at, e.item))
    }

    /// Items queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

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

    #[test]
    fn matches_a_sorted_list_across_the_wheel_and_the_overflow() {
        let mut rng = Rng::new(9);
        let mut q = EventQueue::default();
        let mut expect: Vec<(Instant, u64)> = Vec::new();
        let mut now = Instant::ZERO;
        let mut n = 0u64;
        for round in 0..200 {
            // Some near (the same slot, the next ones), some far (minutes).
            for _ in 0..50 {
                let ahead = match rng.below(4) {
                    0 => rng.below(1000),
                    1 => rng.below(50_000),
                    2 => rng.below(3_000_000),
                    _ => rng.below(600_000_000),
                };
                let at = now + std::time::Duration::from_micros(ahead);
                q.push(at, n);
                expect.push((at, n));
                n += 1;
            }
            expect.sort();
            let take = if round == 199 { expect.len() } else { 30 };
            for _ in 0..take {
                let want = expect.remove(0);
                let got = q.pop().expect("an item");
                assert_eq!(got, want);
                now = got.0;
            }
        }
        assert!(q.pop().is_none());
    }
}
