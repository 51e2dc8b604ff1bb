//! An XOR router for large overlays: O(log N) links, greedy descent over
//! the two-hop neighbourhood, no route to every node.
//!
//! [`dv`](crate::dv) keeps a route to every node: right for clusters of
//! hundreds, linear in memory and sync traffic beyond. This router keeps
//! what Kademlia keeps — one link into each non-empty XOR bucket of the id
//! space, about log2 N of them — but as live connections, so the next hop
//! of a message is always a neighbour, and forwards greedily: each hop
//! goes to the known node XOR-closest to the destination.
//!
//! Two halves share one table: [`KadRouter`] is the
//! [`RouterTable`](plexus_network::RouterTable) the core asks, and
//! [`Behaviour`] keeps it up to date. Choose it in one builder call:
//!
//! ```
//! use plexus_network::{Network, NodeId};
//! use plexus_router::kad;
//! use std::sync::Arc;
//!
//! let id = NodeId(7);
//! let router = Arc::new(kad::KadRouter::new(id));
//! let node = Network::builder(id, router.clone())
//!     .behavior(kad::Behaviour::new(router, kad::Config::default()))
//!     .build()
//!     .unwrap();
//! # let _ = node;
//! ```
//!
//! # Why this design
//! The issue offered two: Kademlia buckets, or atm0s-sdn's layers (ids
//! split into zones, a table of at most 256 entries per layer). Layers
//! need the overlay to follow the zones — nodes of a zone connected to each
//! other, as atm0s-sdn's geographic zones are; on an overlay of random
//! links with random ids a zone's few hundred nodes are scattered and
//! not linked among themselves, so routes inside a zone would have to run
//! through nodes outside it that keep no table for it. XOR buckets need no
//! such structure: the router opens the links it needs. Learned from:
//! Maymounkov and Mazières, "Kademlia" (IPTPS 2002) for the buckets and
//! the lookup; Manku, Naor and Wieder, "Know thy Neighbor's Neighbor"
//! (STOC 2004) for greedy routing over the two-hop neighbourhood, which
//! takes O(log N / log log N) hops where plain greedy takes O(log N).
//!
//! # Protocol ([`Message`])
//! - **Links.** Every connection is a link, whoever opened it (membership,
//!   the application, a bootstrap peer, this router). Bucket `b` of a node
//!   holds the nodes whose id shares exactly `b` leading bits with its own.
//!   The router dials one link into every bucket that has none and is not
//!   known to be empty.
//! - **State.** Each node tells each link its own links' ids, its
//!   addresses and its service vector, when they change (batched over
//!   `trigger_delay`) and every `refresh_interval`. So a node knows its
//!   two-hop neighbourhood: with ~log2 N links of ~log2 N links each,
//!   O(log² N) ids.
//! - **Lookups.** To fill bucket `b` a node sends `Find` for a random id
//!   in that bucket's range; it walks hop by hop, each hop to the known node
//!   closest to the target, and the node where it ends (nothing it knows
//!   is closer) answers back along the path with itself and its links
//!   closest to the target, with addresses; the asker dials one in bucket
//!   `b`. If the bucket is non-empty, the closest node to the target is in
//!   it, so the answer is in it. While tables are young a walk can reach a
//!   dead end short of it: it may then detour a few times through a link
//!   near the target ([`Find::detours`]). Every node a walk crosses may
//!   link to the asker if the asker falls in one of its empty buckets
//!   (Kademlia's learning from traffic). A lookup for the node's own id
//!   passes by its closest nodes (the deepest buckets) when it joins, and
//!   again at growing intervals up to `self_lookup_interval`. A node seen
//!   two hops away in a bucket the node has no link in is looked up at
//!   once. Answers carry the lookup's random id; one not awaited is
//!   dropped.
//! - **Maintenance.** Every `period`: buckets without a link, down to two
//!   past the deepest bucket with one, are looked up again (at most
//!   `lookups_per_period` per round); a bucket a lookup found empty, or
//!   whose node could not be dialled, waits one period, then two, four…
//!   up to `empty_recheck`. A link that closes (the transport's idle
//!   timeout, ping, a graceful leave) leaves its bucket empty and triggers
//!   a lookup at once — a local repair, no global recomputation.
//!
//! # Routing
//! - `path_to_node(d)` and `path_to_key(k)`: the node of the two-hop
//!   neighbourhood XOR-closest to the target, if it is strictly closer
//!   than this node; the next hop is that node or the link that reported
//!   it. Else the key is local, and a node destination is unreachable
//!   (`NoRoute`). **Correctness**: if a node has a link in every non-empty
//!   bucket and is not the closest to a target, one of its links is
//!   strictly closer (the first bit where it differs from the target
//!   names a bucket whose every member is closer), so descent ends at the
//!   globally closest live node, the one every node would name.
//!   **No loops**: take as a message's potential the least XOR distance in
//!   the current node's two-hop neighbourhood; a hop towards the best node
//!   keeps it there (the next node knows it too), and each hop either
//!   lowers the potential or comes one hop nearer the node that holds it.
//!   That holds on consistent tables; while a state message is in flight
//!   a table can be stale by one change, and the header's TTL ends any
//!   loop that makes.
//! - `path_to_service(s)`: a distance vector over services only (at most
//!   256 entries): each state message carries the sender's hop count to
//!   the nearest provider of each service, with split horizon and a
//!   hop limit (`max_service_hops`). Nearest is in hops over the links.
//!   (Not the replicated gossip map: it would give the set of providers,
//!   not the nearest by path, and tie the router to a behaviour.)
//!
//! # State
//! Links ≈ log2 N out and as many in; state entries (links, their links,
//! services) grow as log² N. Measured with `plexus-bench route --router
//! kad --nodes N` on the simulator (README): at 1,000 nodes 16 links and
//! 293 entries per node (median), at 100,000 nodes 26 links and 720
//! entries (max 1,347); paths 1.11× and 1.27× the shortest; 563 and 726
//! bytes of sync traffic per node per second. A `path_to_*` call scans
//! the two-hop neighbourhood: 250 ns at 1,000 nodes, 700 ns at 100,000.
//! Against [`dv`](crate::dv): pick `dv` below about a thousand nodes (it
//! knows every node, so kv and anything that watches route changes works,
//! and paths are the shortest by RTT); pick this router when the overlay
//! is larger or its size unknown. This router does not report
//! [`RouteChange`](plexus_network::RouteChange)s (it has no route per
//! node).

mod behaviour;
mod protocol;
mod table;

pub use behaviour::Behaviour;
pub use protocol::{Contact, Find, Found, Message, MAX_ADDRS, MAX_FIND_HOPS};
pub use table::KadRouter;

use plexus_network::{NodeId, ServiceId};
use std::time::Duration;

/// The service id the router's messages use by default (the same as
/// [`dv::SERVICE`](crate::dv::SERVICE): a node runs one router).
pub const SERVICE: ServiceId = ServiceId(0);

/// Router settings. `Config::default()` gives the values each setter
/// documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) period: Duration,
    pub(crate) refresh_interval: Duration,
    pub(crate) empty_recheck: Duration,
    pub(crate) self_lookup_interval: Duration,
    pub(crate) trigger_delay: Duration,
    pub(crate) contacts: usize,
    pub(crate) max_advertised: usize,
    pub(crate) max_service_hops: u8,
    pub(crate) lookups_per_period: usize,
    pub(crate) detours: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: SERVICE,
            period: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(30),
            empty_recheck: Duration::from_secs(60),
            self_lookup_interval: Duration::from_secs(60),
            trigger_delay: Duration::from_millis(100),
            contacts: 8,
            max_advertised: 64,
            max_service_hops: 16,
            lookups_per_period: 8,
            detours: 6,
        }
    }
}

impl Config {
    /// The service id of the router's messages. Default [`SERVICE`] (0).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// The maintenance period: buckets without a link are looked up again.
    /// Default 5 s.
    pub fn with_period(mut self, d: Duration) -> Self {
        self.period = d.max(Duration::from_millis(10));
        self
    }
    /// Whole state to every link, to repair anything lost. Default 30 s.
    pub fn with_refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d.max(Duration::from_millis(10));
        self
    }
    /// The longest a bucket a lookup found empty (or whose node could not
    /// be dialled) is left before the next lookup: the wait starts at one
    /// period and doubles up to this. Default 60 s.
    pub fn with_empty_recheck(mut self, d: Duration) -> Self {
        self.empty_recheck = d;
        self
    }
    /// The longest interval between lookups of the node's own id (its
    /// closest nodes): one period after joining, doubling up to this.
    /// Default 60 s.
    pub fn with_self_lookup_interval(mut self, d: Duration) -> Self {
        self.self_lookup_interval = d;
        self
    }
    /// Delay of a state message after the first change it carries.
    /// Default 100 ms.
    pub fn with_trigger_delay(mut self, d: Duration) -> Self {
        self.trigger_delay = d;
        self
    }
    /// Contacts a lookup's answer carries. Default 8.
    pub fn with_contacts(mut self, n: usize) -> Self {
        self.contacts = n.max(1);
        self
    }
    /// Most links a state message lists (those nearest this node in XOR
    /// first): bounds the receiver's two-hop state. Default 64.
    pub fn with_max_advertised(mut self, n: usize) -> Self {
        self.max_advertised = n;
        self
    }
    /// Longest usable service route, in hops. Default 16.
    pub fn with_max_service_hops(mut self, h: u8) -> Self {
        self.max_service_hops = h.max(1);
        self
    }
    /// Sideways steps a lookup may take past dead ends (see
    /// [`Message::Find`]). Default 6.
    pub fn with_detours(mut self, n: u8) -> Self {
        self.detours = n;
        self
    }
    /// Most bucket lookups a maintenance round starts (a repair of a link
    /// that just closed, a lookup of a node seen two hops away and the
    /// self-lookup are not counted). Default 8.
    pub fn with_lookups_per_period(mut self, n: usize) -> Self {
        self.lookups_per_period = n.max(1);
        self
    }
}

/// The bucket of `other` as seen from `local`: the number of leading bits
/// their ids share (0..=63); `None` for the same id.
pub fn bucket_of(local: NodeId, other: NodeId) -> Option<usize> {
    let x = local.0 ^ other.0;
    (x != 0).then(|| x.leading_zeros() as usize)
}

/// The ids in bucket `b` (0..=63) of `local`, as an inclusive range: those
/// sharing exactly its first `b` bits.
pub fn bucket_range(local: NodeId, b: usize) -> (u64, u64) {
    let flip = 1u64 << (63 - b);
    let keep = if b == 0 { 0 } else { !0u64 << (64 - b) };
    let lo = (local.0 & keep) | (!local.0 & flip);
    (lo, lo | (flip - 1))
}

/// Counters of the router's protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// State messages sent.
    pub states_sent: u64,
    /// Lookups started.
    pub lookups: u64,
    /// Lookup walks this node forwarded or ended.
    pub finds_handled: u64,
    /// Answers that came back to this node.
    pub answers: u64,
    /// Answers or walks lost because a link on their path had closed.
    pub lost_walks: u64,
    /// Links dialled.
    pub dials: u64,
    /// Dials that failed.
    pub dial_failures: u64,
}

/// The router's RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// The two-hop table, as route rows.
    Routes,
    /// Links, buckets and counters.
    Status,
}

/// The router's state as [`Request::Status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Links, ascending, with their bucket.
    pub links: Vec<(NodeId, usize)>,
    /// Buckets with at least one link.
    pub filled_buckets: usize,
    /// Buckets a lookup last found empty.
    pub empty_buckets: Vec<usize>,
    /// State entries held ([`KadRouter::state_entries`]).
    pub entries: usize,
    /// Services reachable, with the hops to the nearest provider (0: this
    /// node runs it).
    pub services: Vec<(ServiceId, u8)>,
    /// Counters.
    pub stats: Stats,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// One row per node within two hops, by id.
    Routes(Vec<plexus_network::RouteInfo>),
    /// Links and counters.
    Status(Status),
}

#[cfg(test)]
mod tests;
