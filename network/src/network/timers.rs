//! The core's timers: behaviours', handlers' and its own, in one heap.
//!
//! A timer is named by its key (owner and token); setting a key that is
//! pending moves it, cancelling forgets it. Moved and cancelled entries stay
//! in the heap until they surface (lazy deletion) and are skipped then; the
//! heap is rebuilt when stale entries outnumber live ones, so its size stays
//! within twice the number of pending timers.

use crate::vecmap::VecMap;
use crate::{ConnId, Instant};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The owner of timers that belong to the core itself.
pub(crate) const CORE: u16 = u16::MAX;

/// Who a timer is for and its token. Ordered by connection first, so the
/// timers of one connection's handlers form one range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    /// The handler's connection; `None` for a behaviour's (or the core's) own.
    pub(crate) conn: Option<ConnId>,
    /// The behaviour's slot, or [`CORE`].
    pub(crate) slot: u16,
    pub(crate) token: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    id: u64,
    key: TimerKey,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Pending timers: key → id of its live heap entry.
    index: VecMap<TimerKey, u64>,
    next_id: u64,
}

impl Timers {
    /// Sets (or moves) the timer `key` to fire at `at`.
    pub(crate) fn set(&mut self, key: TimerKey, at: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        self.index.insert(key, id);
        self.heap.push(Reverse(Entry { at, id, key }));
        if self.heap.len() > 64 && self.heap.len() > 2 * self.index.len() {
            self.compact();
        }
    }

    /// Forgets the timer `key`, if pending.
    pub(crate) fn cancel(&mut self, key: &TimerKey) {
        self.index.remove(key);
    }

    /// Forgets every handler timer of `conn`.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) {
        self.index.retain(|k, _| k.conn != Some(conn));
    }

    /// Forgets every timer of a behaviour slot and of its handlers.
    pub(crate) fn remove_slot(&mut self, slot: u16) {
        self.index.retain(|k, _| k.slot != slot);
    }

    /// The id the next timer set will get: timers set from now on have ids
    /// at or above it.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The next live timer due at or before `now` and set before `limit`
    /// (an id from [`next_id`](Self::next_id)), removed from the pending set.
    pub(crate) fn pop_due(&mut self, now: Instant, limit: u64) -> Option<(Instant, TimerKey)> {
        loop {
            let top = &self.heap.peek()?.0;
            if top.at > now || top.id >= limit {
                return None;
            }
            let Reverse(e) = self.heap.pop()?;
            if self.index.get(&e.key) == Some(&e.id) {
                self.index.remove(&e.key);
                return Some((e.at, e.key));
            }
        }
    }

    /// Drops stale entries from the top, so [`next`](Self::next) is exact.
    pub(crate) fn purge_top(&mut self) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if self.index.get(&e.key) == Some(&e.id) {
                return;
            }
            self.heap.pop();
        }
    }

    /// When the earliest pending timer is due (exact after [`purge_top`](Self::purge_top)).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Pending timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    fn compact(&mut self) {
        let heap = std::mem::take(&mut self.heap);
        self.heap = heap
            .into_iter()
            .filter(|Reverse(e)| self.index.get(&e.key) == Some(&e.id))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conn: Option<u64>, token: u64) -> TimerKey {
        TimerKey {
            conn: conn.map(ConnId),
            slot: 0,
            token,
        }
    }

    #[test]
    fn fires_in_time_order_and_moves_and_cancels() {
        let mut t = Timers::default();
        t.set(key(None, 1), Instant::from_millis(30));
        t.set(key(None, 2), Instant::from_millis(10));
        t.set(key(None, 3), Instant::from_millis(20));
        t.set(key(None, 1), Instant::from_millis(5)); // moved earlier
        t.cancel(&key(None, 3));
        let limit = t.next_id();
        let now = Instant::from_millis(100);
        let fired: Vec<u64> = std::iter::from_fn(|| t.pop_due(now, limit))
            .map(|(_, k)| k.token)
            .collect();
        assert_eq!(fired, vec![1, 2]);
        t.purge_top();
        assert_eq!(t.next(), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_connection_takes_its_timers_with_it_and_stale_entries_are_bounded() {
        let mut t = Timers::default();
        t.set(key(Some(1), 1), Instant::from_millis(10));
        t.set(key(Some(2), 1), Instant::from_millis(10));
        t.remove_conn(ConnId(1));
        assert_eq!(t.len(), 1);
        for i in 0..10_000 {
            t.set(key(None, 9), Instant::from_millis(i));
        }
        assert!(t.heap.len() <= 2 * t.len() + 64, "{}", t.heap.len());
        let due: Vec<_> = std::iter::from_fn(|| t.pop_due(Instant::from_secs(100), u64::MAX))
            .map(|(_, k)| k)
            .collect();
        assert_eq!(due, vec![key(Some(2), 1), key(None, 9)]);
    }
}
