//! The replicated map and its digests.
//!
//! Each key holds an [`Entry`]: an *incarnation* (the stamp of the delete
//! that last reset the key, zero before any) and a value, `None` being a
//! tombstone. Entries form a lattice: the higher incarnation wins whole;
//! within one, values merge, a tombstone being the bottom. So a delete
//! discards every update that did not see it (a replica cut off during the
//! delete cannot bring the key back), and an update made after seeing the
//! delete builds on the tombstone.
//!
//! # Digests
//! Keys fall into [`BUCKETS`] buckets by the top bits of their hash. A
//! bucket's digest is the XOR of its keys' mixed (key, entry) hashes,
//! updated in O(1) on every change; the root is the XOR of the buckets'.
//! Anti-entropy compares roots, then the buckets of the roots that
//! differ, then the key hashes in the buckets that differ: what a round
//! sends depends on how much differs, never on how many nodes there are.

use super::crdt::{mix, stable_hash, Crdt, Hlc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many buckets the keys are hashed into.
pub const BUCKETS: usize = 256;

/// One key's replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound = "V: Crdt")]
pub struct Entry<V: Crdt> {
    /// The stamp of the delete this state builds on (zero: none).
    pub incarnation: Hlc,
    /// The value; `None` is a tombstone.
    pub value: Option<V>,
}

impl<V: Crdt> Entry<V> {
    /// Joins `other` in; true if this entry changed.
    pub fn join(&mut self, other: &Entry<V>) -> bool {
        if other.incarnation > self.incarnation {
            *self = other.clone();
            return true;
        }
        if other.incarnation < self.incarnation {
            return false;
        }
        match (&mut self.value, &other.value) {
            (_, None) => false,
            (None, Some(v)) => {
                self.value = Some(v.clone());
                true
            }
            (Some(a), Some(b)) => {
                let before = a.clone();
                a.merge(b);
                *a != before
            }
        }
    }
}

/// A key and its state, as updates and anti-entropy carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "V: Crdt")]
pub struct Delta<V: Crdt> {
    /// The key.
    pub key: String,
    /// Its whole state.
    pub entry: Entry<V>,
}

#[derive(Debug, Clone)]
struct Slot<V: Crdt> {
    entry: Entry<V>,
    /// `mix(key hash ^ entry hash)`: what the bucket digest XORs in.
    digest: u64,
    /// When it last changed here (the caller's milliseconds).
    changed_ms: u64,
}

/// Why the store refused an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store holds `max_keys` keys.
    Full(usize),
}

/// The map: keys, their entries, and the digests kept up to date.
#[derive(Debug)]
pub struct Store<V: Crdt> {
    entries: BTreeMap<String, Slot<V>>,
    /// Key hash → key: buckets are ranges of it.
    by_hash: BTreeMap<u64, String>,
    buckets: Vec<u64>,
    root: u64,
    max_keys: usize,
}

/// The bucket of a key hash: its top bits.
pub fn bucket_of(key_hash: u64) -> usize {
    (key_hash >> 56) as usize
}

/// The hash anti-entropy identifies a key by.
pub fn key_hash(key: &str) -> u64 {
    stable_hash(key)
}

impl<V: Crdt> Store<V> {
    /// An empty store of at most `max_keys` keys (tombstones included).
    pub fn new(max_keys: usize) -> Self {
        Store {
            entries: BTreeMap::new(),
            by_hash: BTreeMap::new(),
            buckets: vec![0; BUCKETS],
            root: 0,
            max_keys,
        }
    }

    /// Keys held, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A key's entry (a tombstone included).
    pub fn entry(&self, key: &str) -> Option<&Entry<V>> {
        self.entries.get(key).map(|s| &s.entry)
    }

    /// A key's value (`None` for a missing or deleted key).
    pub fn get(&self, key: &str) -> Option<&V> {
        self.entry(key)?.value.as_ref()
    }

    /// Every live key and value, ascending by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.entries
            .iter()
            .filter_map(|(k, s)| Some((k.as_str(), s.entry.value.as_ref()?)))
    }

    /// The root digest: equal roots mean (but for a 2⁻⁶⁴ chance) equal maps.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The bucket digests.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// (key hash, entry digest) of every key in `bucket`.
    pub fn summary(&self, bucket: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let lo = (bucket as u64) << 56;
        let hi = lo | ((1u64 << 56) - 1);
        self.by_hash
            .range(lo..=hi)
            .filter_map(|(h, k)| Some((*h, self.entries.get(k)?.digest)))
    }

    /// How many keys are in `bucket`.
    pub fn bucket_len(&self, bucket: usize) -> usize {
        self.summary(bucket).count()
    }

    /// The key with this hash, and its entry.
    pub fn by_hash(&self, h: u64) -> Option<(&str, &Entry<V>)> {
        let k = self.by_hash.get(&h)?;
        Some((k.as_str(), &self.entries.get(k)?.entry))
    }

    /// When `key` last changed here (as `now_ms` said at the time).
    pub fn changed_ms(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|s| s.changed_ms)
    }

    /// Joins `entry` into `key` at `now_ms`. `Ok(true)` if the key
    /// changed; a new key when `max_keys` are held is refused.
    pub fn join(&mut self, key: &str, entry: &Entry<V>, now_ms: u64) -> Result<bool, StoreError> {
        let kh = key_hash(key);
        match self.entries.get_mut(key) {
            Some(slot) => {
                if !slot.entry.join(entry) {
                    return Ok(false);
                }
                let old = slot.digest;
                slot.changed_ms = now_ms;
                slot.digest = mix(kh ^ stable_hash(&slot.entry));
                let new = slot.digest;
                self.flip(kh, old ^ new);
                Ok(true)
            }
            None => {
                if self.entries.len() >= self.max_keys {
                    return Err(StoreError::Full(self.max_keys));
                }
                let digest = mix(kh ^ stable_hash(entry));
                self.entries.insert(
                    key.to_owned(),
                    Slot {
                        entry: entry.clone(),
                        digest,
                        changed_ms: now_ms,
                    },
                );
                if let Some(other) = self.by_hash.insert(kh, key.to_owned()) {
                    // 64-bit collision: both keys stay stored; anti-entropy
                    // finds only the later by hash (the other still
                    // travels with updates).
                    log::warn!("gossip: keys {other:?} and {key:?} share a hash");
                }
                self.flip(kh, digest);
                Ok(true)
            }
        }
    }

    /// Removes a key outright (a collected tombstone).
    pub fn remove(&mut self, key: &str) {
        if let Some(slot) = self.entries.remove(key) {
            let kh = key_hash(key);
            if self.by_hash.get(&kh).map(String::as_str) == Some(key) {
                self.by_hash.remove(&kh);
            }
            self.flip(kh, slot.digest);
        }
    }

    /// Tombstones whose delete is older than `before` (HLC milliseconds).
    pub fn expired_tombstones(&self, before: u64) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, s)| s.entry.value.is_none() && s.entry.incarnation.millis < before)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How many tombstones are held.
    pub fn tombstones(&self) -> usize {
        self.entries
            .values()
            .filter(|s| s.entry.value.is_none())
            .count()
    }

    fn flip(&mut self, kh: u64, d: u64) {
        let b = bucket_of(kh);
        // The root XORs mixed (bucket, digest) pairs, so two buckets
        // swapping digests still changes it.
        self.root ^= mix(self.buckets[b] ^ (b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.buckets[b] ^= d;
        self.root ^= mix(self.buckets[b] ^ (b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

#[cfg(test)]
mod tests {
    use super::super::crdt::{Op, Origin, Replica, Value};
    use super::*;
    use plexus_network::NodeId;

    fn stamp(millis: u64) -> Hlc {
        Hlc {
            millis,
            counter: 0,
            node: NodeId(1),
        }
    }

    fn counter(n: u64) -> Entry<Value> {
        let mut v = Value::default();
        let origin = Origin {
            replica: Replica {
                node: NodeId(1),
                life: 0,
            },
            stamp: stamp(1),
        };
        v.apply(Op::Increment(n), &origin).unwrap();
        Entry {
            incarnation: Hlc::default(),
            value: Some(v),
        }
    }

    #[test]
    fn digests_follow_the_contents_not_the_order_of_updates() {
        let mut a = Store::new(100);
        let mut b = Store::new(100);
        let tomb = Entry {
            incarnation: stamp(5),
            value: None,
        };
        a.join("x", &counter(1), 0).unwrap();
        a.join("y", &counter(2), 0).unwrap();
        a.join("x", &tomb, 0).unwrap();
        b.join("x", &tomb, 0).unwrap();
        b.join("y", &counter(2), 0).unwrap();
        assert!(!b.join("x", &counter(1), 0).unwrap(), "the delete wins");
        assert_eq!(a.root(), b.root());
        assert_eq!(a.buckets(), b.buckets());
        b.remove("y");
        assert_ne!(a.root(), b.root());
        b.join("y", &counter(2), 0).unwrap();
        assert_eq!(a.root(), b.root());
        let mut c = Store::<Value>::new(1);
        c.join("x", &tomb, 0).unwrap();
        assert_eq!(c.join("y", &tomb, 0), Err(StoreError::Full(1)));
    }
}
