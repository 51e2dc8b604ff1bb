//! Membership: a random, connected overlay (HyParView).
//!
//! Each node keeps a small **active view** — the peers it holds connections
//! to, its overlay neighbours — and a larger **passive view** of peers it
//! knows how to dial. The active view is symmetric (if A has B, B has A)
//! and bounded; the passive view is refreshed by periodic **shuffles** that
//! trade peer samples (with their addresses) along random walks, so a node
//! learns how to dial peers it has never met, and the overlay stays a
//! well-mixed random graph rather than a tree shaped by join order. When
//! an active neighbour fails (its connection closes — ping closes silent
//! ones), a passive peer is promoted at once; a node left with no active
//! neighbour asks with high priority, which cannot be refused.
//!
//! Learned from: Leitão, Pereira, Rodrigues, "HyParView: a membership
//! protocol for reliable gossip-based broadcast" (DSN 2007); the
//! structure of iroh-gossip's sans-IO implementation.
//!
//! # Protocol ([`Message`])
//! - **Join**: a node joins through any peer: every outgoing connection
//!   that is not another behaviour's (a bootstrap peer the core dialled, an
//!   application's dial, a contact membership redials) is a contact — a
//!   link a router dials for itself is not —, and it sends `Join` on it — also when
//!   it already has neighbours, since those may be other joiners that used
//!   it as their contact. The contact
//!   takes it into its active view and sends `ForwardJoin` (TTL `arwl`) to
//!   each of its other active neighbours; each walks it on. The node where
//!   the walk ends (TTL 0, or only one active neighbour) takes the joiner
//!   into its active view (it dials it and sends a high-priority
//!   `Neighbor`); the node where the TTL equals `prwl` keeps it as passive.
//!   So a joiner gets several random neighbours at once, from 2 nodes up.
//! - **Neighbor** / **NeighborReply**: asks to become active neighbours;
//!   accepted when there is room, always when of high priority, and for a
//!   swap when the receiver keeps at least two neighbours. A full active view makes
//!   room by dropping a random neighbour with `Disconnect` (it becomes a
//!   passive peer).
//! - **Shuffle** / **ShuffleReply**: every `shuffle_interval` (±20%), a
//!   node sends itself, `shuffle_active` active and `shuffle_passive`
//!   passive peers on a random walk of `arwl` hops; the node where it ends
//!   answers with as many passive peers, back along the walk. Both merge
//!   what they got into their passive views, evicting first what they sent.
//!   Below its target, a node also promotes one passive peer each round
//!   (with high priority while it has at most one neighbour), and a node
//!   with at most one neighbour joins again through one of its contacts;
//!   at its target, with probability `rewire` it replaces a random
//!   neighbour with a random passive peer (a `Swap` request), so the
//!   overlay keeps mixing and no group whose views filled up among
//!   themselves stays closed off (plain HyParView can leave such islands).
//! - **Partitions**: a neighbour that failed (rather than left) is
//!   remembered (at most twice the active size, for 10 minutes) and dialled
//!   again on a backoff from 5 s to 60 s, asking to swap in; a node left
//!   with no neighbour at all tries them, and a contact, every second. The two sides
//!   of a healed partition know each other through little else: their
//!   failed dials during the split purged each other from the passive
//!   views. Measured: 16 nodes split for 60 s relink within 25 s of the
//!   heal over 100 seeds (`gossip` tests).
//!
//! # Leaves
//! A peer that joins with no address (a browser: nothing can dial it) is
//! a **leaf** of its contact: the contact answers `NeighborReply`
//! (accepted, or refused past `max_leaves`) and announces it as a
//! neighbour marked `leaf` (a [`NeighborEvent`]), which pubsub takes (a
//! member leaf counts as a subscription of its contact's) and broadcast
//! and gossip leave out; but it is in neither view and no walk or shuffle
//! passes it on: nobody else could dial it. It does not count towards
//! `active_size`, and it is forgotten when its connection closes. A leaf
//! also gets the sample of peers any joiner gets (a native node with no
//! listen address can dial them; a browser ignores it).
//!
//! # Neighbours for other behaviours
//! Every change of the active view (and of the leaves) is published to the node's other
//! behaviours as a [`NeighborEvent`] (`Up` with the connection, `Down`):
//! [`broadcast`](crate::broadcast) and [`pubsub`](crate::pubsub) build
//! their trees on it. It is also emitted to the application as [`Event`].
//!
//! # Bounds
//! Active view ≤ `active_size`, passive view ≤ `passive_size`, leaves ≤
//! `max_leaves`, addresses per
//! peer ≤ [`protocol::MAX_ADDRS`], peers per shuffle ≤ 1 + `shuffle_active`
//! + `shuffle_passive` (larger shuffles from a peer are truncated), dials in
//!   flight ≤ `active_size`.
//!
//! ```
//! use plexus_behaviours::membership;
//! let behaviour = membership::Behaviour::new(
//!     membership::Config::default().with_active_size(5).with_passive_size(30),
//! );
//! # let _ = behaviour;
//! ```

mod behaviour;
pub mod protocol;

pub use behaviour::Behaviour;
pub use protocol::{Message, PeerInfo, Priority};

use plexus_network::{ConnId, NodeId, ServiceId};
use std::time::Duration;

/// Membership settings. `Config::default()` gives the values each setter
/// documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) active_size: usize,
    pub(crate) passive_size: usize,
    pub(crate) arwl: u8,
    pub(crate) prwl: u8,
    pub(crate) shuffle_interval: Duration,
    pub(crate) shuffle_active: usize,
    pub(crate) shuffle_passive: usize,
    pub(crate) neighbor_timeout: Duration,
    pub(crate) rewire: f64,
    pub(crate) emit_events: bool,
    pub(crate) max_leaves: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::MEMBERSHIP,
            active_size: 5,
            passive_size: 30,
            arwl: 6,
            prwl: 3,
            shuffle_interval: Duration::from_secs(20),
            shuffle_active: 3,
            shuffle_passive: 4,
            neighbor_timeout: Duration::from_secs(5),
            rewire: 0.01,
            emit_events: true,
            max_leaves: 64,
        }
    }
}

impl Config {
    /// The service id. Default [`crate::services::MEMBERSHIP`] (2).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Most active neighbours. Default 5 (HyParView's setting for 10,000
    /// nodes, about log10 N + 1; raise it for much larger overlays or
    /// heavier failure).
    pub fn with_active_size(mut self, n: usize) -> Self {
        self.active_size = n.max(1);
        self
    }
    /// Most passive peers. Default 30 (6× the active view).
    pub fn with_passive_size(mut self, n: usize) -> Self {
        self.passive_size = n.max(1);
        self
    }
    /// Length of the active random walk (joins, shuffles). Default 6.
    pub fn with_active_walk(mut self, hops: u8) -> Self {
        self.arwl = hops;
        self
    }
    /// Where a join walk leaves the joiner in the passive view. Default 3.
    pub fn with_passive_walk(mut self, hops: u8) -> Self {
        self.prwl = hops;
        self
    }
    /// Time between shuffles (each ±20%). Default 20 s.
    pub fn with_shuffle_interval(mut self, d: Duration) -> Self {
        self.shuffle_interval = d;
        self
    }
    /// Active and passive peers a shuffle offers. Default 3 and 4.
    pub fn with_shuffle_sizes(mut self, active: usize, passive: usize) -> Self {
        self.shuffle_active = active;
        self.shuffle_passive = passive;
        self
    }
    /// Time to wait for an answer to a `Neighbor` request. Default 5 s.
    pub fn with_neighbor_timeout(mut self, d: Duration) -> Self {
        self.neighbor_timeout = d;
        self
    }
    /// Probability that a node with a full active view replaces one
    /// neighbour with a random passive peer in a shuffle round
    /// ([`Priority::Swap`]): the overlay keeps
    /// mixing slowly, and a group whose views filled up among themselves
    /// rejoins. Every swap changes four links, and every new link costs the
    /// broadcast trees built on the overlay a few duplicates, so it is
    /// rare: default 0.01 (at 20 s rounds, one swap per node every half
    /// hour or so; 0.2 measured 16 link changes a second in a 200-node
    /// overlay and kept the trees from settling).
    pub fn with_rewire(mut self, p: f64) -> Self {
        self.rewire = p.clamp(0.0, 1.0);
        self
    }
    /// Most leaves (peers that join with no address, such as browsers;
    /// see [Leaves](self#leaves)) this node takes; more are refused. Default 64.
    pub fn with_max_leaves(mut self, n: usize) -> Self {
        self.max_leaves = n;
        self
    }
    /// Emit [`Event`]s to the application. Default true.
    pub fn with_events(mut self, emit: bool) -> Self {
        self.emit_events = emit;
        self
    }
}

/// A change of the active view, published to the node's other behaviours
/// (downcast it in [`on_local_event`](plexus_network::NetworkBehavior::on_local_event)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborEvent {
    /// `node` is an active neighbour, reached on `conn` (sent again if the
    /// connection changes).
    Up {
        /// The neighbour.
        node: NodeId,
        /// Its connection.
        conn: ConnId,
        /// It is this node's leaf (see [Leaves](self#leaves)): a neighbour
        /// of this node alone that may speak only some protocols (the
        /// browser page speaks pubsub, not broadcast or gossip). Pubsub
        /// takes leaves as neighbours; broadcast and gossip do not.
        leaf: bool,
    },
    /// `node` left the active view.
    Down {
        /// The former neighbour.
        node: NodeId,
    },
}

/// What membership tells the application: the same as [`NeighborEvent`].
pub type Event = NeighborEvent;

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Joins handled as a contact (leaves not counted).
    pub joins: u64,
    /// Passive peers promoted to active.
    pub promotions: u64,
    /// Neighbor requests refused.
    pub refusals: u64,
    /// Shuffles started.
    pub shuffles: u64,
    /// Shuffle replies merged.
    pub shuffle_replies: u64,
    /// Rewiring requests sent (full view, replacing a neighbour).
    pub rewirings: u64,
    /// Joins again through a contact, by a node left with one neighbour.
    pub rejoins: u64,
    /// Active neighbours lost without a `Disconnect`.
    pub failures: u64,
    /// Lost neighbours dialled again (how partitions heal).
    pub recalls: u64,
    /// Leaves taken (peers that joined with no address).
    pub leaves: u64,
    /// Leaves refused (`max_leaves` reached).
    pub leaves_refused: u64,
}

/// Membership's RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// The active view.
    ActiveView,
    /// The passive view.
    PassiveView,
    /// The leaves.
    Leaves,
    /// Counters.
    Stats,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// Active neighbours, ascending.
    ActiveView(Vec<NodeId>),
    /// Passive peers with their addresses, ascending.
    PassiveView(Vec<PeerInfo>),
    /// Leaves, ascending.
    Leaves(Vec<NodeId>),
    /// Counters.
    Stats(Stats),
}

#[cfg(test)]
mod tests;
