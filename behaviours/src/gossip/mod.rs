//! Gossip: a key → value map replicated on every node, whose values are
//! mergeable (CRDTs), so it converges without coordination under loss,
//! partitions, restarts and late joins.
//!
//! # How it spreads
//! - **Updates at once.** A local update, delete or merge is stamped,
//!   stored, and pushed to every node as the key's whole state over a
//!   Plumtree (the [`broadcast`](crate::broadcast) engine) on the node's
//!   neighbours.
//! - **Anti-entropy.** Every `interval` (1 s by default) a node sends one
//!   neighbour, in turn, the root [`Digest`](Message::Digest) of its map
//!   (16 bytes). Equal roots end the round. Otherwise the neighbour
//!   answers with its 256 [bucket digests](store#digests) (2 KB), the node
//!   with the (key hash, entry digest) pairs of the buckets that differ (up
//!   to `max_summary_keys`), and the neighbour with the entries the node
//!   lacks or holds differently and the key hashes it wants back. What a
//!   round sends grows with what differs, never with the number of nodes:
//!   there is no per-node version vector anywhere. Entries that
//!   anti-entropy brings and that had not changed at the sender for a
//!   period are likely new on this node's whole side too (after a
//!   partition, a late join), so they are pushed on over the tree (younger
//!   ones are likely still on their way through it), and the node syncs
//!   with its next neighbour at once instead of a period later.
//!
//! # Deletes
//! A delete writes a tombstone with a new *incarnation* (its stamp);
//! incarnations order whole states, so every update that did not see the
//! delete loses to it and the key cannot come back from a replica that was
//! cut off or restarted. Updates made after seeing it build on it.
//!
//! Tombstones are collected `tombstone_ttl` (24 h by default) after the
//! delete, by every node on its own clock, and a tombstone that old is not
//! taken in. A node cannot know that *every* live node has seen a
//! tombstone without a list of every node, which is what makes other
//! gossip protocols' digests grow with the cluster; plexus bounds the time
//! instead. The price: a partition that outlasts `tombstone_ttl` can bring
//! back keys deleted on the other side. Set it above the longest partition
//! you want to survive.
//!
//! # Restarts
//! A node that restarts comes back as itself: there is no member list to
//! join twice, and its neighbours (the same
//! [`NodeId`](plexus_network::NodeId) on a new
//! connection) sync with it at once. Counters and sets count each *life*
//! of a node apart ([`Replica`]), so a restarted node that has not yet
//! learnt its old counts cannot shadow them.
//!
//! # Values
//! [`Value`] holds a grow-only counter ([`GCounter`]), an up-down counter
//! ([`PnCounter`]), an observed-remove set ([`OrSet`]) or a
//! last-writer-wins register ([`LwwRegister`], hybrid-logical-clock
//! stamps). Any type implementing [`Crdt`] works in its place:
//! `gossip::Behaviour::<MyType>::new(..)`.
//!
//! # Application API
//! [`Request`]s through `NodeHandle::rpc::<gossip::Behaviour>`: `Update`
//! (an [`Op`] on a key), `Merge` (join a whole value in), `Delete`, `Get`,
//! `Watch` / `Unwatch` a key prefix (changes under a watched prefix arrive
//! as [`Event`]s), `Stats`.
//!
//! # Trust
//! Any neighbour can send any state; a replica takes it in. Run gossip
//! among nodes that share the network key, and sign values at the
//! application level where writers must be checked.
//!
//! ```
//! use plexus_behaviours::{gossip, membership};
//! # use plexus_network::{Network, NodeId};
//! # use std::sync::Arc;
//! # let router = Arc::new(plexus_router::StaticRouter::new(NodeId(1)));
//! let node = Network::builder(NodeId(1), router)
//!     .behavior(membership::Behaviour::new(membership::Config::default()))
//!     .behavior(gossip::Behaviour::<gossip::Value>::new(gossip::Config::default()))
//!     .build()
//!     .unwrap();
//! # let _ = node;
//! ```

mod behaviour;
pub mod crdt;
pub mod store;

pub use behaviour::Behaviour;
pub use crdt::{
    Crdt, GCounter, Hlc, HlcClock, LwwRegister, Op, OrSet, Origin, PnCounter, Replica, Value,
};
pub use store::{Delta, Entry, Store};

use crate::broadcast::{Neighbours, PlumtreeConfig, TreeMsg};
use plexus_network::ServiceId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Gossip's wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "V: Crdt")]
pub enum Message<V: Crdt> {
    /// An update on its way through the tree.
    Tree(TreeMsg<Delta<V>>),
    /// Anti-entropy, 1: the sender's root digest and key count.
    Digest {
        /// Root digest.
        root: u64,
        /// Keys held (tombstones included).
        keys: u64,
    },
    /// 2: the receiver's bucket digests (when the roots differ).
    Buckets(Vec<u64>),
    /// 3: the (key hash, entry digest) pairs of the buckets that differ.
    Summary {
        /// The buckets summarised.
        buckets: Vec<u16>,
        /// Their keys.
        keys: Vec<(u64, u64)>,
    },
    /// 4 and 5: entries the other lacks or holds differently, and the key
    /// hashes wanted back.
    Entries {
        /// Entries, each with how long ago (ms) it last changed at the
        /// sender.
        entries: Vec<(Delta<V>, u32)>,
        /// Key hashes to send back.
        want: Vec<u64>,
    },
}

/// Where the physical part of the clock comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system's wall clock, read once at start (then advanced with the
    /// node's monotonic time). For real nodes.
    System,
    /// The node's own time (the simulator's virtual clock): deterministic.
    Virtual,
}

impl Clock {
    /// Milliseconds to add to the node's time (`now`, read at start) to get
    /// physical time. The one wall-clock read: the hybrid logical clock's
    /// physical part needs wall time, read once at start and advanced with
    /// the node's `now` from then on. Simulations use `Clock::Virtual` and
    /// stay deterministic.
    pub(crate) fn offset_ms(self, now: plexus_network::Instant) -> i64 {
        match self {
            Clock::System => {
                #[allow(clippy::disallowed_methods)]
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                wall - now.as_millis() as i64
            }
            Clock::Virtual => 0,
        }
    }

    /// Physical milliseconds at `now`, given the offset from
    /// [`offset_ms`](Self::offset_ms).
    pub(crate) fn physical_ms(offset_ms: i64, now: plexus_network::Instant) -> u64 {
        (now.as_millis() as i64).saturating_add(offset_ms).max(0) as u64
    }
}

/// Gossip settings. `Config::default()` gives the values each setter
/// documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) neighbours: Neighbours,
    pub(crate) tree: PlumtreeConfig,
    pub(crate) interval: Duration,
    pub(crate) clock: Clock,
    pub(crate) max_drift: Duration,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) max_keys: usize,
    pub(crate) max_key_len: usize,
    pub(crate) max_entries: usize,
    pub(crate) max_summary_keys: usize,
    pub(crate) watch: Vec<String>,
    pub(crate) max_state_bytes: usize,
    pub(crate) max_message_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::GOSSIP,
            neighbours: Neighbours::Membership,
            tree: tree_defaults(),
            interval: Duration::from_secs(1),
            clock: Clock::System,
            max_drift: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(24 * 3600),
            max_keys: 1_000_000,
            max_key_len: 1024,
            max_entries: 256,
            max_summary_keys: 4096,
            watch: Vec::new(),
            max_state_bytes: 64 * 1024,
            max_message_bytes: 256 * 1024,
        }
    }
}

/// Gossip's tree keeps less than broadcast's: the store holds every
/// state and anti-entropy repairs what a tree misses, and merging a state
/// twice is harmless. So payloads are kept 10 s for grafts (at most 1024),
/// ids 20 s, and a new neighbour is sent the ids of the last 10 s only (at
/// most 256; anti-entropy covers the rest).
fn tree_defaults() -> PlumtreeConfig {
    PlumtreeConfig {
        cache_max: 1024,
        cache_ttl: Duration::from_secs(10),
        seen_max: 16_384,
        seen_ttl: Duration::from_secs(20),
        catch_up: Duration::from_secs(10),
        catch_up_max: 256,
        ..PlumtreeConfig::default()
    }
}

impl Config {
    /// The service id. Default [`crate::services::GOSSIP`] (5).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Where neighbours come from. Default [`Neighbours::Membership`].
    pub fn with_neighbours(mut self, n: Neighbours) -> Self {
        self.neighbours = n;
        self
    }
    /// The update tree's settings. Default: [`PlumtreeConfig::default`]
    /// with smaller caches (payloads 1024 for 10 s, ids 16,384 for 20 s)
    /// and a shorter catch-up for new neighbours (anti-entropy covers them).
    pub fn with_tree(mut self, tree: PlumtreeConfig) -> Self {
        self.tree = tree;
        self
    }
    /// Time between anti-entropy rounds (at least 10 ms). Default 1 s.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }
    /// Largest encoded state of one key; a local update that would make
    /// it larger is refused, a remote one dropped and counted. Default
    /// 64 KiB (it must fit a frame: the node's `max_payload`, 1 MiB).
    pub fn with_max_state_bytes(mut self, n: usize) -> Self {
        self.max_state_bytes = n;
        self
    }
    /// Most bytes of entries in one anti-entropy message (what does not
    /// fit goes in the next round). Default 256 KiB.
    pub fn with_max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n.max(1);
        self
    }
    /// The clock. Default [`Clock::System`]; the simulator wants
    /// [`Clock::Virtual`].
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    /// How far ahead of this node's clock a remote stamp may be and still
    /// move the clock. Default 60 s.
    pub fn with_max_drift(mut self, d: Duration) -> Self {
        self.max_drift = d;
        self
    }
    /// How long a tombstone is kept. Default 24 h.
    pub fn with_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }
    /// Most keys held, tombstones included; a local update past it is
    /// refused, a remote one dropped and counted. Default 1,000,000.
    pub fn with_max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }
    /// Longest key, bytes. Default 1024.
    pub fn with_max_key_len(mut self, n: usize) -> Self {
        self.max_key_len = n;
        self
    }
    /// Most entries (and wanted keys) in one anti-entropy message. Default 256.
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }
    /// Watch a key prefix from the start (as [`Request::Watch`] does
    /// later): no change is missed, however early state arrives. `""`
    /// watches every key. Repeatable; default none.
    pub fn with_watch(mut self, prefix: impl Into<String>) -> Self {
        self.watch.push(prefix.into());
        self
    }
    /// Most key summaries in one anti-entropy message. Default 4096.
    pub fn with_max_summary_keys(mut self, n: usize) -> Self {
        self.max_summary_keys = n.max(1);
        self
    }
}

/// A key under a watched prefix changed (its value here now; `None`:
/// deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<V: Crdt = Value> {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Option<V>,
}

/// Gossip's RPCs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request<V: Crdt = Value> {
    /// Apply an update to a key.
    Update {
        /// The key.
        key: String,
        /// The update.
        op: V::Op,
    },
    /// Join a whole value into a key.
    Merge {
        /// The key.
        key: String,
        /// The value.
        value: V,
    },
    /// Delete a key (a tombstone).
    Delete(String),
    /// A key's value here.
    Get(String),
    /// Emit an [`Event`] for every change of a key starting with this.
    Watch(String),
    /// Stop watching a prefix.
    Unwatch(String),
    /// Counters.
    Stats,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Response<V: Crdt = Value> {
    /// Done.
    Done,
    /// A value (`None`: missing or deleted).
    Value(Option<V>),
    /// Counters.
    Stats(GossipStats),
}

/// Gossip's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Neighbours now.
    pub neighbours: u64,
    /// Keys held, tombstones included.
    pub keys: u64,
    /// Tombstones held.
    pub tombstones: u64,
    /// Tombstones collected.
    pub tombstones_collected: u64,
    /// Changes to the store (local and remote).
    pub changes: u64,
    /// States pushed into the tree.
    pub updates_sent: u64,
    /// States the tree delivered.
    pub updates_received: u64,
    /// Anti-entropy rounds started.
    pub rounds: u64,
    /// Digests received that matched.
    pub in_sync: u64,
    /// Anti-entropy messages sent.
    pub entropy_messages: u64,
    /// Their encoded size, bytes (before the frame header).
    pub entropy_bytes: u64,
    /// The most hops any update took to reach this node through the tree.
    pub hops_max: u16,
    /// Entries sent by anti-entropy.
    pub entries_sent: u64,
    /// Entries received by anti-entropy.
    pub entries_received: u64,
    /// Whole states the tree sent.
    pub tree_gossip_sent: u64,
    /// Duplicate states the tree received.
    pub tree_duplicates: u64,
    /// Remote states not stored (store full, key too long).
    pub refused: u64,
}

#[cfg(test)]
mod tests;
