//! A holder's records: last-writer-wins by hybrid logical clock, expiry,
//! bounds.

use crate::gossip::Hlc;
use bytes::Bytes;
use plexus_network::{Instant, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where a key lives: the stable 64-bit hash of its name, in the id space
/// of nodes, so "the k nodes closest to the key" is XOR distance.
pub fn key_id(key: &str) -> NodeId {
    NodeId(crate::gossip::crdt::stable_hash(key.as_bytes()))
}

/// A record as it travels: a value or a tombstone, its version, and how
/// long it has left (relative, so holders need no synchronised clocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<Bytes>,
    /// The write's version: the newest version wins everywhere.
    pub version: Hlc,
    /// Milliseconds left before it expires; `None`: it never does.
    pub ttl_ms: Option<u64>,
}

/// A record as a holder keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Its version.
    pub version: Hlc,
    /// When it expires here; `None`: never.
    pub expires: Option<Instant>,
}

impl Record {
    /// The record as it travels at `now`.
    pub fn to_wire(&self, now: Instant) -> WireRecord {
        WireRecord {
            value: self.value.clone(),
            version: self.version,
            ttl_ms: self
                .expires
                .map(|e| e.saturating_duration_since(now).as_millis() as u64),
        }
    }
    /// A received record, expiring relative to `now`.
    pub fn from_wire(w: WireRecord, now: Instant) -> Self {
        Record {
            value: w.value,
            version: w.version,
            expires: w.ttl_ms.map(|ms| now + Duration::from_millis(ms)),
        }
    }
    fn bytes(key: &str, value: &Option<Bytes>) -> usize {
        key.len() + value.as_ref().map_or(0, |v| v.len()) + 64
    }
}

/// What merging a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// It was new or newer: stored.
    Stored,
    /// The same version: kept, its expiry extended if the incoming one
    /// lives longer (an owner's republish).
    Same,
    /// This holder has a newer version (the sender is stale).
    Older,
    /// It could not be stored: the store is at its bound.
    Full,
}

/// One node's records, bounded by count and bytes.
#[derive(Debug, Default)]
pub struct Store {
    records: BTreeMap<String, Record>,
    /// Records by key id, for digests and replica sets.
    by_id: BTreeMap<NodeId, BTreeSet<String>>,
    expiries: BTreeSet<(Instant, String)>,
    bytes: usize,
    max_records: usize,
    max_bytes: usize,
}

impl Store {
    /// An empty store of at most `max_records` records and `max_bytes`
    /// bytes (keys, values and 64 bytes of overhead each).
    pub fn new(max_records: usize, max_bytes: usize) -> Self {
        Store {
            max_records,
            max_bytes,
            ..Store::default()
        }
    }

    /// Records held (tombstones too).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes held, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        self.records.values().filter(|r| r.value.is_none()).count()
    }

    /// A key's record, expired or not (see [`live`](Self::live)).
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.records.get(key)
    }

    /// A key's record unless it has expired by `now`.
    pub fn live(&self, key: &str, now: Instant) -> Option<&Record> {
        self.records
            .get(key)
            .filter(|r| r.expires.is_none_or(|e| e > now))
    }

    /// Every key and record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Record)> + '_ {
        self.records.iter()
    }

    /// The keys whose id is `id` (almost always one).
    pub fn keys_of(&self, id: NodeId) -> impl Iterator<Item = &String> + '_ {
        self.by_id.get(&id).into_iter().flatten()
    }

    /// Whether a new record of this size would fit.
    pub fn fits(&self, key: &str, value: &Option<Bytes>) -> bool {
        let old = self
            .records
            .get(key)
            .map_or(0, |r| Record::bytes(key, &r.value));
        let count_ok = self.records.contains_key(key) || self.records.len() < self.max_records;
        count_ok && self.bytes - old + Record::bytes(key, value) <= self.max_bytes
    }

    /// Merges `rec` into the store: the newer version wins; an equal one
    /// keeps the later expiry.
    pub fn merge(&mut self, key: &str, rec: Record) -> Merge {
        if let Some(cur) = self.records.get_mut(key) {
            if rec.version < cur.version {
                return Merge::Older;
            }
            if rec.version == cur.version {
                let later = match (cur.expires, rec.expires) {
                    (Some(a), Some(b)) if b > a => Some(b),
                    (Some(_), None) => None,
                    (a, _) => a,
                };
                if later != cur.expires {
                    let old = cur.expires;
                    cur.expires = later;
                    if let Some(e) = old {
                        self.expiries.remove(&(e, key.to_owned()));
                    }
                    if let Some(e) = later {
                        self.expiries.insert((e, key.to_owned()));
                    }
                }
                return Merge::Same;
            }
        }
        if !self.fits(key, &rec.value) {
            return Merge::Full;
        }
        self.remove(key);
        self.bytes += Record::bytes(key, &rec.value);
        if let Some(e) = rec.expires {
            self.expiries.insert((e, key.to_owned()));
        }
        self.by_id
            .entry(key_id(key))
            .or_default()
            .insert(key.to_owned());
        self.records.insert(key.to_owned(), rec);
        Merge::Stored
    }

    /// Drops a key.
    pub fn remove(&mut self, key: &str) -> Option<Record> {
        let r = self.records.remove(key)?;
        self.bytes -= Record::bytes(key, &r.value);
        if let Some(e) = r.expires {
            self.expiries.remove(&(e, key.to_owned()));
        }
        let id = key_id(key);
        if let Some(set) = self.by_id.get_mut(&id) {
            set.remove(key);
            if set.is_empty() {
                self.by_id.remove(&id);
            }
        }
        Some(r)
    }

    /// Drops every record that expired by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some((at, key)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.remove(&key);
            n += 1;
        }
        n
    }

    /// When the next record expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64, s: &str) -> Record {
        Record {
            value: Some(Bytes::copy_from_slice(s.as_bytes())),
            version: Hlc {
                millis: n,
                counter: 0,
                node: NodeId(1),
            },
            expires: None,
        }
    }

    #[test]
    fn newest_wins_in_any_order_and_a_republish_extends_the_expiry() {
        let mut a = Store::new(10, 1 << 20);
        let mut b = Store::new(10, 1 << 20);
        assert_eq!(a.merge("k", v(1, "one")), Merge::Stored);
        assert_eq!(a.merge("k", v(2, "two")), Merge::Stored);
        assert_eq!(b.merge("k", v(2, "two")), Merge::Stored);
        assert_eq!(b.merge("k", v(1, "one")), Merge::Older);
        assert_eq!(a.get("k"), b.get("k"));

        // The same version again with a later expiry: kept, extended (a
        // republish must not be dropped as a duplicate).
        let t = |s| Instant::from_secs(s);
        let mut r = v(3, "three");
        r.expires = Some(t(10));
        assert_eq!(a.merge("k", r.clone()), Merge::Stored);
        r.expires = Some(t(20));
        assert_eq!(a.merge("k", r.clone()), Merge::Same);
        assert_eq!(a.get("k").unwrap().expires, Some(t(20)));
        assert_eq!(a.expire(t(15)), 0);
        assert!(a.live("k", t(15)).is_some());
        assert_eq!(a.expire(t(20)), 1);
        assert!(a.get("k").is_none());
        assert_eq!(a.bytes(), 0);
    }

    #[test]
    fn bounds_refuse_new_keys_but_not_updates_that_fit() {
        let mut s = Store::new(2, 1 << 20);
        assert_eq!(s.merge("a", v(1, "x")), Merge::Stored);
        assert_eq!(s.merge("b", v(1, "x")), Merge::Stored);
        assert_eq!(s.merge("c", v(1, "x")), Merge::Full);
        assert_eq!(s.merge("a", v(2, "y")), Merge::Stored);
        let mut s = Store::new(100, 200);
        assert_eq!(s.merge("a", v(1, &"x".repeat(100))), Merge::Stored);
        assert_eq!(s.merge("b", v(1, &"x".repeat(100))), Merge::Full);
        assert_eq!(s.len(), 1);
    }
}
