//! A replicated key-value store (a DHT): each key lives on the `k` nodes
//! XOR-closest to it, found through the router's closest-key rule.
//!
//! The application puts, gets and deletes through `NodeHandle::rpc` (or
//! `Sim::rpc`) from any node:
//!
//! ```ignore
//! let w = handle.rpc::<kv::Behaviour>(kv::Request::put("greeting", "hello")).await??;
//! let r = handle.rpc::<kv::Behaviour>(kv::Request::get("greeting")).await??;
//! assert_eq!(r.value().as_deref(), Some(&b"hello"[..]));
//! ```
//!
//! # How it works
//! - **Placement.** A key's id is the stable 64-bit hash of its name
//!   ([`key_id`]). A request goes by [`RouteRule::Closest`](plexus_network::RouteRule::Closest) to the node the
//!   router finds XOR-closest to the id: the *coordinator*. The replica set
//!   is the `k` closest nodes (default 3) among the coordinator and every
//!   node its router reaches, which this behaviour learns from the
//!   router's route changes. So `kv` needs a router that announces routes
//!   (`plexus_router::dv`); it works over any overlay the router runs on
//!   (the `membership` behaviour's, a static one).
//! - **Versions.** Each write is stamped by its writer's hybrid logical
//!   clock ([`Hlc`]: physical milliseconds, a counter, the writer's id), so
//!   versions are totally ordered, a write made after seeing another is
//!   newer, and every replica keeps the newest version it has seen: last
//!   writer wins, the same way everywhere, whatever the order of arrival.
//!   A delete writes a tombstone, kept `tombstone_ttl` (default 24 h) so a
//!   stale replica cannot bring the key back.
//! - **Writes.** The coordinator stores the record, sends it to the other
//!   replicas and answers once `write_quorum` of them (itself included;
//!   default 2) hold it; fewer is [`KvError::NotEnoughReplicas`], a full
//!   store [`KvError::Full`].
//! - **Reads.** The coordinator answers from its own copy (a one-holder
//!   read: the router's path, no more). When it has none — it just became
//!   the closest — it asks the other replicas (one hop more), keeps the
//!   newest and repairs the replicas that answered stale or empty (read
//!   repair). A quorum read ([`Request::Get`] with `quorum`) always asks
//!   them and answers once `read_quorum` (default 2) have, so with the
//!   default quorums (2 + 2 > 3) it sees every acknowledged write.
//! - **Retries and hedging.** An operation has `op_timeout` (10 s); each
//!   attempt `attempt_timeout` (2 s), after which it is retried (a write at
//!   the closest node again: it carries its version, so a retry is the same
//!   write). A get not answered within the smoothed get latency plus four
//!   deviations (RFC 6298's estimator, at least 5 ms) also goes to the next
//!   replica, and the first answer wins: a dead or slow coordinator costs
//!   milliseconds. A coordinator without a copy says "not found" only when
//!   every other replica said so; otherwise the caller tries another.
//! - **TTL.** A record may carry a TTL. The node that wrote it (its owner)
//!   republishes it every `ttl × republish_fraction` (default half the
//!   TTL) with the same version; a holder that already has that version
//!   keeps it and extends its expiry (a republish is not a duplicate to
//!   drop). If the owner stops, the record lapses after its TTL.
//! - **Repair.** Every `repair_interval` (default 30 s), and
//!   `repair_delay` (default 1 s) after a node it knows appears or goes,
//!   each node recomputes the replica set of each key it holds. To each
//!   other replica it sends a digest of the (key id, version) pairs they
//!   share, unless that digest is unchanged since the peer last confirmed
//!   it; the peer answers with the ids it lacks or holds older (and
//!   pushes back what it holds newer), and gets those records. A node no
//!   longer among a key's `k` closest (a closer node joined) hands the
//!   record to the replica set and drops it once they all hold it. So
//!   after a holder dies or a node joins, replicas are restored within
//!   `repair_delay` plus the router's convergence and a few round trips.
//! - **Bounds.** A node holds at most `max_records` records and
//!   `max_bytes` bytes (defaults 1,000,000 and 256 MiB), values at most
//!   `max_value_bytes` (64 KiB); calls in flight are bounded as in
//!   [`rpc`](crate::rpc) (`TooManyInFlight`), and the owner's republish
//!   table holds at most `max_published` records.

mod behaviour;
mod store;
#[cfg(test)]
mod tests;

pub use crate::gossip::{Clock, Hlc};
pub use behaviour::Behaviour;
pub use store::{key_id, Merge, Record, Store, WireRecord};

use crate::rpc::{CallError, Limits};
use bytes::Bytes;
use plexus_network::{NodeId, ServiceId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Settings. `Config::default()` gives the values each setter documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) replicas: usize,
    pub(crate) write_quorum: usize,
    pub(crate) read_quorum: usize,
    pub(crate) op_timeout: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) replica_timeout: Duration,
    pub(crate) repair_interval: Duration,
    pub(crate) repair_delay: Duration,
    pub(crate) full_sync_every: u32,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) republish_fraction: f64,
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_value_bytes: usize,
    pub(crate) max_published: usize,
    pub(crate) max_samples: usize,
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::KV,
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            op_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            replica_timeout: Duration::from_millis(1500),
            repair_interval: Duration::from_secs(30),
            repair_delay: Duration::from_secs(1),
            full_sync_every: 10,
            tombstone_ttl: Duration::from_secs(24 * 3600),
            republish_fraction: 0.5,
            max_records: 1_000_000,
            max_bytes: 256 << 20,
            max_value_bytes: 64 << 10,
            max_published: 100_000,
            max_samples: 0,
            limits: Limits {
                max_in_flight: 4096,
                max_per_peer: 256,
            },
            clock: Clock::System,
        }
    }
}

impl Config {
    /// The service id. Default [`crate::services::KV`] (7).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Replicas per key, `k`. Default 3.
    pub fn with_replicas(mut self, k: usize) -> Self {
        self.replicas = k.max(1);
        self
    }
    /// Replicas (coordinator included) that must hold a write before it is
    /// acknowledged. Default 2.
    pub fn with_write_quorum(mut self, w: usize) -> Self {
        self.write_quorum = w.max(1);
        self
    }
    /// Replicas (coordinator included) a quorum read hears before it
    /// answers. Default 2.
    pub fn with_read_quorum(mut self, r: usize) -> Self {
        self.read_quorum = r.max(1);
        self
    }
    /// How long an application's put, get or delete may take. Default 10 s.
    pub fn with_op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }
    /// How long one attempt of an operation waits before it is retried (a
    /// get at the next replica, a write at the closest node again), within
    /// the operation's timeout. Default 2 s.
    pub fn with_attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = d;
        self
    }
    /// How long a coordinator waits for one replica. Default 1.5 s.
    pub fn with_replica_timeout(mut self, d: Duration) -> Self {
        self.replica_timeout = d;
        self
    }
    /// Time between repair passes. Default 30 s.
    pub fn with_repair_interval(mut self, d: Duration) -> Self {
        self.repair_interval = d;
        self
    }
    /// Delay of the repair pass that follows a change of the known nodes
    /// (changes within it share the pass). Default 1 s.
    pub fn with_repair_delay(mut self, d: Duration) -> Self {
        self.repair_delay = d;
        self
    }
    /// How long a tombstone is kept. Default 24 h.
    pub fn with_tombstone_ttl(mut self, d: Duration) -> Self {
        self.tombstone_ttl = d;
        self
    }
    /// The owner republishes a record with a TTL every `ttl × f`. Default 0.5.
    pub fn with_republish_fraction(mut self, f: f64) -> Self {
        self.republish_fraction = f.clamp(0.05, 0.95);
        self
    }
    /// Most records held (tombstones included). Default 1,000,000.
    pub fn with_max_records(mut self, n: usize) -> Self {
        self.max_records = n;
        self
    }
    /// Most bytes held (keys, values, 64 bytes per record). Default 256 MiB.
    pub fn with_max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }
    /// Largest value. Default 64 KiB.
    pub fn with_max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }
    /// Most records the owner keeps to republish. Default 100,000.
    pub fn with_max_published(mut self, n: usize) -> Self {
        self.max_published = n;
        self
    }
    /// Keep the last `n` operations' [`Sample`]s for
    /// [`Behaviour::take_samples`] (benchmarks). Default 0.
    pub fn with_samples(mut self, n: usize) -> Self {
        self.max_samples = n;
        self
    }
    /// Bounds on calls in flight. Default 4,096 per node, 256 per peer.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Where the clock's physical time comes from. Default
    /// [`Clock::System`]; simulations use [`Clock::Virtual`].
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// What the application asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Write `value` under `key`, for `ttl` if given (the owner, this node,
    /// republishes it while it runs).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Its lifetime; `None`: until deleted.
        ttl: Option<Duration>,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: String,
        /// Ask `read_quorum` replicas, not one.
        quorum: bool,
    },
    /// Delete `key` (a tombstone).
    Delete {
        /// The key.
        key: String,
    },
    /// This node's counters ([`Reply::Stats`]).
    Stats,
}

impl Request {
    /// A put without TTL.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Request::Put {
            key: key.into(),
            value: value.into(),
            ttl: None,
        }
    }
    /// A one-holder get.
    pub fn get(key: impl Into<String>) -> Self {
        Request::Get {
            key: key.into(),
            quorum: false,
        }
    }
    /// A delete.
    pub fn delete(key: impl Into<String>) -> Self {
        Request::Delete { key: key.into() }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The write (put or delete) is held by `replicas` nodes.
    Written {
        /// Its version.
        version: Hlc,
        /// A newer version the coordinator already held: another write
        /// superseded this one (the newest write wins everywhere).
        newer: Option<Hlc>,
        /// Replicas that acknowledged it, the coordinator included.
        replicas: u8,
    },
    /// The key's value.
    Found {
        /// The value.
        value: Bytes,
        /// Its version.
        version: Hlc,
    },
    /// No value: never written, deleted, or expired.
    NotFound,
    /// The node's counters.
    Stats(KvStats),
}

impl Reply {
    /// The value of a `Found`.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Reply::Found { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// Why an operation failed. Timeouts, lost routes and busy coordinators
/// are retried within the operation's timeout first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// The call to the coordinator failed (timeout, no route, bounds).
    Call(CallError),
    /// The coordinator's store is at its bound: the write was not stored.
    Full,
    /// Fewer replicas than the write quorum acknowledged the write.
    NotEnoughReplicas {
        /// Replicas that hold it.
        stored: u8,
        /// Replicas needed.
        needed: u8,
    },
    /// The value is larger than `max_value_bytes`.
    TooLarge {
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The owner's republish table is full: a put with a TTL was refused.
    TooManyPublished(usize),
    /// No holder of the key could be reached (each coordinator tried
    /// lacked it and could not ask every other replica).
    Unavailable,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Call(e) => write!(f, "{e}"),
            KvError::Full => {
                f.write_str("the coordinator's store is full; the write was not stored")
            }
            KvError::NotEnoughReplicas { stored, needed } => write!(
                f,
                "only {stored} replica(s) acknowledged the write, {needed} needed"
            ),
            KvError::TooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds the maximum of {max}")
            }
            KvError::Unavailable => f.write_str("no holder of the key could be reached"),
            KvError::TooManyPublished(n) => {
                write!(f, "this node already republishes {n} records with a TTL")
            }
        }
    }
}

impl std::error::Error for KvError {}

/// A failure as it travels from coordinator to caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// See [`KvError::Full`].
    Full,
    /// See [`KvError::NotEnoughReplicas`].
    NotEnoughReplicas {
        /// Replicas that hold it.
        stored: u8,
        /// Replicas needed.
        needed: u8,
    },
    /// See [`KvError::TooLarge`].
    TooLarge {
        /// Its size.
        len: u64,
        /// The bound.
        max: u64,
    },
}

impl From<Failure> for KvError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Full => KvError::Full,
            Failure::NotEnoughReplicas { stored, needed } => {
                KvError::NotEnoughReplicas { stored, needed }
            }
            Failure::TooLarge { len, max } => KvError::TooLarge {
                len: len as usize,
                max: max as usize,
            },
        }
    }
}

/// A request between kv nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Req {
    /// Caller → coordinator: write this record (a value or a tombstone).
    Put {
        /// The key.
        key: String,
        /// The record.
        record: WireRecord,
    },
    /// Caller → coordinator: read a key.
    Get {
        /// The key.
        key: String,
        /// Ask a quorum.
        quorum: bool,
    },
    /// Holder → holder: keep these records.
    Store(Vec<(String, WireRecord)>),
    /// Coordinator → replica: your copy of a key.
    Read(String),
    /// Holder → replica: the (key id, version) pairs we should share.
    Digest(Vec<(NodeId, Hlc)>),
}

/// One replica's answer to one record of a [`Req::Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    /// Held now (stored, or that version already held).
    Held,
    /// A newer version is held here.
    Newer,
    /// Not stored: the store is full.
    Full,
}

/// An answer between kv nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    /// To [`Req::Put`].
    Put(Result<(Hlc, u8), Failure>),
    /// To [`Req::Get`]: the record (a tombstone reads as none) and the
    /// hops the read took to reach a holder.
    Get {
        /// The value and its version.
        found: Option<(Bytes, Hlc)>,
        /// Hops from the caller to the holder that answered.
        hops: u8,
    },
    /// To [`Req::Store`], one per record.
    Stored(Vec<Ack>),
    /// To [`Req::Read`].
    Read(Option<WireRecord>),
    /// To [`Req::Get`]: the coordinator has no copy and could not ask
    /// every other replica (the caller tries another).
    Unavailable,
    /// To [`Req::Digest`]: the key ids to send.
    Want(Vec<NodeId>),
}

/// The wire message: [`Req`] and [`Resp`] in an [`rpc::Envelope`](crate::rpc::Envelope).
pub type Message = crate::rpc::Envelope<Req, Resp>;

/// Which operation a [`Sample`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A put.
    Put,
    /// A get.
    Get,
    /// A delete.
    Delete,
}

/// One finished application operation (kept when `with_samples` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The operation.
    pub op: OpKind,
    /// It succeeded.
    pub ok: bool,
    /// From the request to the answer.
    pub latency: Duration,
    /// For gets: hops from the caller to the holder that answered.
    pub hops: Option<u8>,
    /// For gets: the router's path length, when the get was sent, from the
    /// caller to the node it took for the key's closest (the coordinator).
    pub path: Option<u8>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Records held (tombstones included).
    pub records: u64,
    /// Tombstones held.
    pub tombstones: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Nodes this node knows (its router reaches).
    pub known_nodes: u64,
    /// Requests coordinated: puts and deletes, gets.
    pub coordinated_writes: u64,
    /// Gets coordinated.
    pub coordinated_reads: u64,
    /// Gets that had to ask other replicas (the coordinator had no copy).
    pub reads_forwarded: u64,
    /// Records pushed to repair a stale or empty replica after a read.
    pub read_repairs: u64,
    /// Repair passes.
    pub repair_passes: u64,
    /// Digests sent.
    pub digests_sent: u64,
    /// Records sent by repair (answers to digests, handovers, pushes back).
    pub records_repaired: u64,
    /// Bytes of repair messages sent (digests, their records).
    pub repair_bytes: u64,
    /// Records handed over and dropped (this node stopped being a replica).
    pub handed_over: u64,
    /// Records refused because the store was full.
    pub refused_full: u64,
    /// Records expired.
    pub expired: u64,
    /// Republishes sent by this node as an owner.
    pub republished: u64,
    /// The calls' counters.
    pub calls: crate::rpc::CallStats,
}

/// The id space: the `k` nodes XOR-closest to `key` among `nodes`.
pub fn closest(nodes: &std::collections::BTreeSet<NodeId>, key: NodeId, k: usize) -> Vec<NodeId> {
    // Nodes sharing the longest prefix with the key are closer than any
    // other: widen the prefix until the range holds k, then sort it.
    let k = k.min(nodes.len());
    if k == 0 {
        return Vec::new();
    }
    for free in 0..64u32 {
        let mask = u64::MAX << free;
        let lo = key.0 & mask;
        let hi = lo | !mask;
        if nodes.range(NodeId(lo)..=NodeId(hi)).take(k).count() >= k {
            return sorted_by_distance(nodes.range(NodeId(lo)..=NodeId(hi)).copied(), key, k);
        }
    }
    sorted_by_distance(nodes.iter().copied(), key, k)
}

fn sorted_by_distance(nodes: impl Iterator<Item = NodeId>, key: NodeId, k: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = nodes.collect();
    v.sort_by_key(|n| n.0 ^ key.0);
    v.truncate(k);
    v
}
