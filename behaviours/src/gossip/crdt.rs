//! Mergeable values (state-based CRDTs) and hybrid logical clocks.
//!
//! A [`Crdt`] is a join-semilattice: [`merge`](Crdt::merge) is commutative,
//! associative and idempotent, so replicas that have merged the same
//! states hold the same value whatever the order, duplication or loss of
//! the messages that carried them. [`Value`] holds one of the four shipped
//! types; a user type implements [`Crdt`] and runs as
//! `gossip::Behaviour<MyType>`.

use bytes::Bytes;
use plexus_network::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;

/// A hybrid logical clock timestamp: milliseconds of physical time, a
/// counter for events within one millisecond (or ahead of the local
/// clock), and the node, so two stamps are never equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Physical part, milliseconds.
    pub millis: u64,
    /// Logical part.
    pub counter: u32,
    /// The stamping node (ties between nodes).
    pub node: NodeId,
}

impl Default for Hlc {
    /// Zero: before every stamp.
    fn default() -> Self {
        Hlc {
            millis: 0,
            counter: 0,
            node: NodeId(0),
        }
    }
}

impl Hlc {
    /// The next stamp after this one, by `node`.
    pub fn after(self, node: NodeId) -> Hlc {
        match self.counter.checked_add(1) {
            Some(counter) => Hlc {
                millis: self.millis,
                counter,
                node,
            },
            None => Hlc {
                millis: self.millis.saturating_add(1),
                counter: 0,
                node,
            },
        }
    }
}

/// A node's hybrid logical clock (Kulkarni et al., 2014): stamps increase
/// on every event and never fall behind a stamp the node has seen, so a
/// write made after seeing another is ordered after it, whatever the
/// clocks' skew.
#[derive(Debug, Clone)]
pub struct HlcClock {
    node: NodeId,
    last: (u64, u32),
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock for `node`. Remote stamps more than `max_drift_ms` ahead of
    /// the local physical time are not followed (a peer with a wrong clock
    /// cannot drag this one into the future).
    pub fn new(node: NodeId, max_drift_ms: u64) -> Self {
        HlcClock {
            node,
            last: (0, 0),
            max_drift_ms,
        }
    }

    /// A new stamp for a local event at physical time `physical_ms`.
    pub fn stamp(&mut self, physical_ms: u64) -> Hlc {
        self.last = if physical_ms > self.last.0 {
            (physical_ms, 0)
        } else if self.last.1 == u32::MAX {
            // The counter is spent (a remote stamp may set it there): move
            // on to the next millisecond rather than repeat a stamp.
            (self.last.0.saturating_add(1), 0)
        } else {
            (self.last.0, self.last.1 + 1)
        };
        Hlc {
            millis: self.last.0,
            counter: self.last.1,
            node: self.node,
        }
    }

    /// Takes in a stamp seen on a remote state.
    pub fn observe(&mut self, remote: Hlc, physical_ms: u64) {
        if remote.millis > physical_ms.saturating_add(self.max_drift_ms) {
            log::debug!(
                "gossip: stamp from {} is {} ms ahead; not followed",
                remote.node,
                remote.millis - physical_ms
            );
            return;
        }
        if (remote.millis, remote.counter) > self.last {
            self.last = (remote.millis, remote.counter);
        }
    }
}

/// One life of one node: counters and sets keep each life's contributions
/// apart, so a node that restarted with nothing cannot shadow what it
/// wrote before (its `life` is drawn from the node's RNG on every start,
/// which real nodes seed from the OS: a real node given a fixed
/// `NetworkConfig::seed` would draw the same life again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Replica {
    /// The node.
    pub node: NodeId,
    /// Which start of it.
    pub life: u64,
}

/// Who makes a local update, and when.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The writer.
    pub replica: Replica,
    /// A fresh stamp for this update.
    pub stamp: Hlc,
}

/// A mergeable value. `Default` is the bottom element (what a key holds
/// before its first update); [`merge`](Crdt::merge) must be commutative,
/// associative and idempotent, and `Hash` must depend only on the value
/// (anti-entropy compares hashes to find what differs).
pub trait Crdt:
    Clone + Debug + Default + PartialEq + Hash + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// A local update.
    type Op: Clone + Debug + Send + Sync + 'static;
    /// Applies a local update, or says why it does not apply.
    fn apply(&mut self, op: Self::Op, origin: &Origin) -> Result<(), String>;
    /// Joins another replica's state into this one.
    fn merge(&mut self, other: &Self);
    /// The latest clock stamp the value carries, if it carries any (a
    /// register's): the node's clock moves past it, so a later local write
    /// is ordered after it.
    fn max_stamp(&self) -> Option<Hlc> {
        None
    }
}

/// A grow-only counter: per replica, the count it added; the value is
/// the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GCounter {
    counts: BTreeMap<Replica, u64>,
}

impl GCounter {
    /// The count.
    pub fn value(&self) -> u64 {
        self.counts.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
    /// Adds `n` as `who`.
    pub fn increment(&mut self, who: Replica, n: u64) {
        let c = self.counts.entry(who).or_default();
        *c = c.saturating_add(n);
    }
    fn join(&mut self, other: &Self) {
        for (r, n) in &other.counts {
            let c = self.counts.entry(*r).or_default();
            *c = (*c).max(*n);
        }
    }
}

/// A counter that goes up and down: two grow-only counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PnCounter {
    up: GCounter,
    down: GCounter,
}

impl PnCounter {
    /// The count.
    pub fn value(&self) -> i64 {
        let v = i128::from(self.up.value()) - i128::from(self.down.value());
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
    /// Adds `n` (negative to subtract) as `who`.
    pub fn add(&mut self, who: Replica, n: i64) {
        if n >= 0 {
            self.up.increment(who, n.unsigned_abs());
        } else {
            self.down.increment(who, n.unsigned_abs());
        }
    }
    fn join(&mut self, other: &Self) {
        self.up.join(&other.up);
        self.down.join(&other.down);
    }
}

/// An observed-remove set (add wins): each add is tagged with a dot (a
/// replica and its sequence number); a remove drops the dots it has seen,
/// so an add concurrent with a remove survives. The causal context (per
/// replica, the highest sequence seen) replaces tombstones: a dot the
/// context covers but the set lacks was removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrSet {
    elems: BTreeMap<Bytes, BTreeSet<(Replica, u64)>>,
    context: BTreeMap<Replica, u64>,
}

impl OrSet {
    /// Whether `e` is in the set.
    pub fn contains(&self, e: &[u8]) -> bool {
        self.elems.contains_key(e)
    }
    /// The elements, ascending.
    pub fn elements(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.elems.keys()
    }
    /// How many elements.
    pub fn len(&self) -> usize {
        self.elems.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }
    /// Adds `e` as `who`.
    pub fn insert(&mut self, who: Replica, e: Bytes) {
        let seq = self.context.entry(who).or_default();
        *seq = seq.saturating_add(1);
        let dot = (who, *seq);
        self.elems.insert(e, BTreeSet::from([dot]));
    }
    /// Removes `e` (the adds seen so far).
    pub fn remove(&mut self, e: &[u8]) {
        self.elems.remove(e);
    }
    fn covers(context: &BTreeMap<Replica, u64>, (r, seq): &(Replica, u64)) -> bool {
        context.get(r).is_some_and(|s| s >= seq)
    }
    fn join(&mut self, other: &Self) {
        let mut keys: BTreeSet<Bytes> = self.elems.keys().cloned().collect();
        keys.extend(other.elems.keys().cloned());
        let empty = BTreeSet::new();
        for k in keys {
            let mine = self.elems.get(&k).unwrap_or(&empty);
            let theirs = other.elems.get(&k).unwrap_or(&empty);
            // Dots both have, and dots one has that the other has not
            // seen (not removed there).
            let dots: BTreeSet<(Replica, u64)> = mine
                .iter()
                .filter(|d| theirs.contains(d) || !Self::covers(&other.context, d))
                .chain(theirs.iter().filter(|d| !Self::covers(&self.context, d)))
                .copied()
                .collect();
            if dots.is_empty() {
                self.elems.remove(&k);
            } else {
                self.elems.insert(k, dots);
            }
        }
        for (r, s) in &other.context {
            let c = self.context.entry(*r).or_default();
            *c = (*c).max(*s);
        }
    }
}

/// A last-writer-wins register: the write with the highest hybrid logical
/// clock stamp wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LwwRegister {
    stamp: Hlc,
    value: Bytes,
}

impl LwwRegister {
    /// The value.
    pub fn get(&self) -> &Bytes {
        &self.value
    }
    /// When it was written.
    pub fn stamp(&self) -> Hlc {
        self.stamp
    }
    /// Writes `v` at `stamp` (ignored if a later write is already here;
    /// equal stamps are ordered by value, so replicas agree).
    pub fn set(&mut self, stamp: Hlc, v: Bytes) {
        if (stamp, &v) > (self.stamp, &self.value) {
            self.stamp = stamp;
            self.value = v;
        }
    }
    /// A local write: stamped `stamp`, or just after the stored write if
    /// that one is later (a peer's clock ahead of ours), so it always
    /// takes effect.
    fn assign(&mut self, stamp: Hlc, v: Bytes) {
        let stamp = if stamp > self.stamp {
            stamp
        } else {
            self.stamp.after(stamp.node)
        };
        self.stamp = stamp;
        self.value = v;
    }
    fn join(&mut self, other: &Self) {
        self.set(other.stamp, other.value.clone());
    }
}

/// The shipped value type: one of the four CRDTs, chosen by a key's first
/// update. Two nodes that concurrently start a key as different types
/// converge on the later variant in declaration order (the join of a
/// lexicographic order), losing the other's update; don't do that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Value {
    /// No update yet (the bottom).
    #[default]
    Empty,
    /// A grow-only counter.
    GCounter(GCounter),
    /// A counter that goes up and down.
    PnCounter(PnCounter),
    /// An observed-remove set.
    OrSet(OrSet),
    /// A last-writer-wins register.
    Lww(LwwRegister),
}

/// Updates of [`Value`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Grow-only counter: add.
    Increment(u64),
    /// Up-down counter: add (negative subtracts).
    Add(i64),
    /// Set: insert.
    Insert(Bytes),
    /// Set: remove.
    Remove(Bytes),
    /// Register: write.
    Assign(Bytes),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Empty => 0,
            Value::GCounter(_) => 1,
            Value::PnCounter(_) => 2,
            Value::OrSet(_) => 3,
            Value::Lww(_) => 4,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Value::Empty => "nothing",
            Value::GCounter(_) => "a grow-only counter",
            Value::PnCounter(_) => "an up-down counter",
            Value::OrSet(_) => "a set",
            Value::Lww(_) => "a register",
        }
    }
}

impl Crdt for Value {
    type Op = Op;

    fn max_stamp(&self) -> Option<Hlc> {
        match self {
            Value::Lww(r) => Some(r.stamp),
            _ => None,
        }
    }

    fn apply(&mut self, op: Op, origin: &Origin) -> Result<(), String> {
        if matches!(self, Value::Empty) {
            *self = match op {
                Op::Increment(_) => Value::GCounter(GCounter::default()),
                Op::Add(_) => Value::PnCounter(PnCounter::default()),
                Op::Insert(_) | Op::Remove(_) => Value::OrSet(OrSet::default()),
                Op::Assign(_) => Value::Lww(LwwRegister::default()),
            };
        }
        let who = origin.replica;
        match (self, op) {
            (Value::GCounter(c), Op::Increment(n)) => c.increment(who, n),
            (Value::PnCounter(c), Op::Add(n)) => c.add(who, n),
            (Value::OrSet(s), Op::Insert(e)) => s.insert(who, e),
            (Value::OrSet(s), Op::Remove(e)) => s.remove(&e),
            (Value::Lww(r), Op::Assign(v)) => r.assign(origin.stamp, v),
            (v, op) => return Err(format!("{op:?} does not apply: the key holds {}", v.kind())),
        }
        Ok(())
    }

    fn merge(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Value::GCounter(a), Value::GCounter(b)) => a.join(b),
            (Value::PnCounter(a), Value::PnCounter(b)) => a.join(b),
            (Value::OrSet(a), Value::OrSet(b)) => a.join(b),
            (Value::Lww(a), Value::Lww(b)) => a.join(b),
            (a, b) => {
                if b.rank() > a.rank() {
                    *a = b.clone();
                }
            }
        }
    }
}

/// A deterministic 64-bit hash (FNV-1a with a final mix): the same on
/// every node and every build, unlike `std`'s randomly keyed hasher.
#[derive(Debug, Clone)]
pub(crate) struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

/// Integers are hashed as fixed-width little-endian bytes (`usize` and
/// `isize`, such as lengths and enum tags, as 64-bit), so a digest is the
/// same on every platform.
impl std::hash::Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }
    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }
    fn write_i8(&mut self, i: i8) {
        self.write_u8(i as u8);
    }
    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as i64 as u64);
    }
    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// SplitMix64's finaliser: spreads every input bit over the output.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable hash of `t`.
pub(crate) fn stable_hash<T: Hash + ?Sized>(t: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = StableHasher::default();
    t.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_counter_moves_the_clock_to_the_next_millisecond() {
        let mut c = HlcClock::new(NodeId(1), 60_000);
        let far = Hlc {
            millis: 1_000,
            counter: u32::MAX,
            node: NodeId(2),
        };
        c.observe(far, 1_000);
        let a = c.stamp(1_000);
        let b = c.stamp(1_000);
        assert!(far < a && a < b, "{far:?} {a:?} {b:?}");
        assert_eq!((a.millis, a.counter), (1_001, 0));
    }

    fn origin(node: u64, life: u64, millis: u64) -> Origin {
        Origin {
            replica: Replica {
                node: NodeId(node),
                life,
            },
            stamp: Hlc {
                millis,
                counter: 0,
                node: NodeId(node),
            },
        }
    }

    fn applied(ops: &[(Op, Origin)]) -> Value {
        let mut v = Value::default();
        for (op, o) in ops {
            v.apply(op.clone(), o).unwrap();
        }
        v
    }

    /// Every merge order of three replicas gives the same value, and
    /// merging twice changes nothing.
    fn assert_lattice(states: &[Value]) {
        let orders = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]];
        let mut results = Vec::new();
        for o in orders {
            let mut v = states[o[0]].clone();
            for i in &o[1..] {
                v.merge(&states[*i]);
            }
            let again = v.clone();
            v.merge(&states[o[1]]);
            assert_eq!(v, again, "merge is not idempotent");
            results.push(v);
        }
        for r in &results[1..] {
            assert_eq!(r, &results[0], "merge order changed the value");
        }
    }

    #[test]
    fn counters_sum_every_replica_and_every_life() {
        let a = applied(&[(Op::Increment(2), origin(1, 1, 1))]);
        let b = applied(&[(Op::Increment(3), origin(2, 1, 1))]);
        // Node 1 again after a restart, before it learnt its old count.
        let c = applied(&[(Op::Increment(5), origin(1, 2, 9))]);
        assert_lattice(&[a.clone(), b.clone(), c.clone()]);
        let mut v = a;
        v.merge(&b);
        v.merge(&c);
        let Value::GCounter(g) = &v else { panic!() };
        assert_eq!(g.value(), 10);

        let p = applied(&[
            (Op::Add(7), origin(1, 1, 1)),
            (Op::Add(-2), origin(1, 1, 2)),
        ]);
        let q = applied(&[(Op::Add(-10), origin(2, 1, 1))]);
        let mut v = p;
        v.merge(&q);
        let Value::PnCounter(c) = &v else { panic!() };
        assert_eq!(c.value(), -5);
    }

    #[test]
    fn a_set_keeps_an_add_concurrent_with_a_remove() {
        let x = Bytes::from_static(b"x");
        let base = applied(&[(Op::Insert(x.clone()), origin(1, 1, 1))]);
        let mut removed = base.clone();
        removed
            .apply(Op::Remove(x.clone()), &origin(2, 1, 2))
            .unwrap();
        let mut readded = base.clone();
        readded
            .apply(Op::Insert(x.clone()), &origin(3, 1, 2))
            .unwrap();
        assert_lattice(&[base.clone(), removed.clone(), readded.clone()]);
        let mut v = removed.clone();
        v.merge(&readded);
        let Value::OrSet(s) = &v else { panic!() };
        assert!(s.contains(b"x"), "the concurrent add survives");
        // A remove that saw every add wins.
        let mut v = removed;
        v.merge(&base);
        let Value::OrSet(s) = &v else { panic!() };
        assert!(!s.contains(b"x"));
    }

    #[test]
    fn a_register_keeps_the_latest_stamp_and_types_do_not_mix() {
        let a = applied(&[(Op::Assign(Bytes::from_static(b"a")), origin(1, 1, 5))]);
        let b = applied(&[(Op::Assign(Bytes::from_static(b"b")), origin(2, 1, 6))]);
        let c = applied(&[(Op::Increment(1), origin(3, 1, 1))]);
        assert_lattice(&[a.clone(), b.clone(), c]);
        let mut v = b.clone();
        v.merge(&a);
        let Value::Lww(r) = &v else { panic!() };
        assert_eq!(r.get().as_ref(), b"b");
        assert!(v.clone().apply(Op::Increment(1), &origin(1, 1, 7)).is_err());
    }

    #[test]
    fn registers_with_equal_stamps_agree_and_local_writes_beat_future_stamps() {
        let o = origin(1, 1, 5);
        let a = applied(&[(Op::Assign(Bytes::from_static(b"a")), o)]);
        let b = applied(&[(Op::Assign(Bytes::from_static(b"b")), o)]);
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b);
        ba.merge(&a);
        assert_eq!(ab, ba, "a tie is broken by value");
        // A stored write stamped far ahead (a peer's clock): a local write
        // still takes effect, stamped just after it.
        let mut v = applied(&[(
            Op::Assign(Bytes::from_static(b"future")),
            origin(2, 1, 1_000_000),
        )]);
        v.apply(Op::Assign(Bytes::from_static(b"now")), &origin(1, 1, 10))
            .unwrap();
        let Value::Lww(r) = &v else { panic!() };
        assert_eq!(r.get().as_ref(), b"now");
        assert!(r.stamp().millis >= 1_000_000);
    }

    #[test]
    fn the_stable_hash_does_not_depend_on_the_platform_width() {
        use std::hash::Hasher;
        let mut a = StableHasher::default();
        a.write_usize(7);
        let mut b = StableHasher::default();
        b.write_u64(7);
        assert_eq!(a.finish(), b.finish());
        // Fixed values: a change of the hash breaks mixed-version clusters.
        assert_eq!(stable_hash("key"), stable_hash(&String::from("key")));
    }

    #[test]
    fn the_clock_orders_after_what_it_saw_and_ignores_stamps_from_the_future() {
        let mut c = HlcClock::new(NodeId(1), 1000);
        let s1 = c.stamp(100);
        let s2 = c.stamp(100);
        assert!(s2 > s1);
        c.observe(
            Hlc {
                millis: 500,
                counter: 3,
                node: NodeId(2),
            },
            120,
        );
        let s3 = c.stamp(130);
        assert!(s3.millis == 500 && s3.counter == 4);
        c.observe(
            Hlc {
                millis: 10_000_000,
                counter: 0,
                node: NodeId(2),
            },
            130,
        );
        assert!(c.stamp(140).millis < 10_000);
    }
}
