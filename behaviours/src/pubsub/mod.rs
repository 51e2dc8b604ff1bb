//! Pubsub: publish by topic; every subscriber delivers each publication of
//! its topics once, and nodes forward only where a topic's tree needs them.
//!
//! # How
//! Per topic, nodes agree on a **root** — the smallest id among its
//! subscribers — by a distance vector over the membership overlay, as the
//! spanning-tree protocol does: each node tells each neighbour the root it
//! follows, its hops to it, and whether that neighbour is its next hop
//! ("parent"); a node never takes a route through the neighbour it would
//! send it to (split horizon), and distances stop at
//! [`protocol::NO_ROOT`], so a route to a root that left dies out. A node
//! is a **member** of the topic's tree if it subscribes or is the parent
//! of a member: the members are the subscribers and the nodes on their
//! paths to the root, one connected set, and nobody else. Non-members
//! never see the topic's publications; a non-member that publishes sends
//! its publication `Up`, parent by parent, to the first member.
//!
//! Among members each topic has its own Plumtree
//! ([`broadcast::Plumtree`](crate::broadcast::Plumtree)) over the member
//! neighbours: whole copies on a self-forming tree, ids (`IHave`) on the
//! other member links, `Graft` to repair a broken branch — so a subscriber
//! gets each publication once, under loss (links retransmit) and churn (the
//! overlay heals, the vector re-converges, branches are grafted).
//!
//! Neighbours come from [`membership`](crate::membership) by default (see
//! [`broadcast::Neighbours`](crate::broadcast::Neighbours)), its leaves
//! (browsers) included. A leaf takes no part in choosing a topic's root:
//! of its advert only `member` counts, and a node with a member leaf
//! subscribes for it (roots stay among the nodes that can be dialled, and
//! a page that comes and goes, or claims a small id, cannot move one). A
//! leaf routes through its node, and the tree reaches it on that link.
//!
//! # Messages ([`Message`])
//! `Interest` (per-topic adverts, only what changed, batched for
//! `interest_delay`), `Tree` (a topic's Plumtree message carrying the
//! publication's bytes), `Up` (a non-member's publication on its way to
//! the tree, hop by hop, each hop keeping it until the next acknowledges
//! it with `UpAck`: a relay that dies does not lose it).
//!
//! # Trust
//! A publication's id names its author ([`MsgId::author`](crate::broadcast::MsgId)).
//! At the first hop it is authenticated: a publication with hop count 0
//! must come from its author's own connection, else it is dropped, and
//! the receiver's [`Event::verified`] is true. A later hop can trust only
//! that its neighbour relayed it: a relay could forge an author or alter a
//! payload. Applications that need end-to-end authenticity sign payloads.
//!
//! # Bounds
//! Topics tracked ≤ `max_topics` (interest in more is ignored, with a
//! log line), payload ≤ `max_payload`, and each topic's tree is bounded as
//! Plumtree documents.
//!
//! ```
//! use plexus_behaviours::pubsub::{self, Topic};
//! let behaviour = pubsub::Behaviour::new(pubsub::Config::default());
//! let chat = Topic::new("chat");
//! let subscribe = pubsub::Request::Subscribe(chat);
//! # let _ = (behaviour, subscribe);
//! ```

mod behaviour;
pub mod protocol;

pub use behaviour::Behaviour;
pub use protocol::{Message, Topic};

use crate::broadcast::{MsgId, Neighbours, PlumtreeConfig, TreeStats};
use bytes::Bytes;
use plexus_network::ServiceId;
use std::time::Duration;

/// Pubsub settings. `Config::default()` gives the values each setter
/// documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) neighbours: Neighbours,
    pub(crate) tree: PlumtreeConfig,
    pub(crate) interest_delay: Duration,
    pub(crate) max_topics: usize,
    pub(crate) max_payload: usize,
    pub(crate) up_retry: Duration,
    pub(crate) max_pending_up: usize,
    pub(crate) max_leaf_topics: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::PUBSUB,
            neighbours: Neighbours::Membership,
            tree: PlumtreeConfig::default(),
            interest_delay: Duration::from_millis(20),
            max_topics: 1024,
            max_payload: 64 * 1024,
            up_retry: Duration::from_secs(2),
            max_pending_up: 4096,
            max_leaf_topics: 4,
        }
    }
}

impl Config {
    /// The service id. Default [`crate::services::PUBSUB`] (4).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Where neighbours come from. Default [`Neighbours::Membership`].
    pub fn with_neighbours(mut self, n: Neighbours) -> Self {
        self.neighbours = n;
        self
    }
    /// Each topic tree's settings. Default [`PlumtreeConfig::default`].
    pub fn with_tree(mut self, tree: PlumtreeConfig) -> Self {
        self.tree = tree;
        self
    }
    /// Interest changes are batched for this long. Default 20 ms.
    pub fn with_interest_delay(mut self, d: Duration) -> Self {
        self.interest_delay = d;
        self
    }
    /// Most topics tracked (subscribed, or forwarded for). Default 1,024.
    pub fn with_max_topics(mut self, n: usize) -> Self {
        self.max_topics = n;
        self
    }
    /// An `Up` not acknowledged in this long is sent again (ten times at
    /// most). Default 2 s.
    pub fn with_up_retry(mut self, d: Duration) -> Self {
        self.up_retry = d;
        self
    }
    /// Most `Up`s kept awaiting acknowledgement; past it the oldest is given
    /// up (counted in [`Stats::ups_given_up`], logged). Default 4,096.
    pub fn with_max_pending_up(mut self, n: usize) -> Self {
        self.max_pending_up = n.max(1);
        self
    }
    /// Most topics one of membership's leaves (a browser) may subscribe to
    /// through this node; more are ignored (counted in
    /// [`Stats::leaf_topics_refused`], logged). Default 4 (the page uses
    /// one; with membership's 64 leaves, 256 of `max_topics`' 1,024).
    pub fn with_max_leaf_topics(mut self, n: usize) -> Self {
        self.max_leaf_topics = n;
        self
    }
    /// Largest payload accepted for publication. Default 64 KiB.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }
}

/// A publication delivered to this subscriber (once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The topic.
    pub topic: Topic,
    /// Its id: the author and the author's sequence number.
    pub id: MsgId,
    /// Hops from the author (0: this node's own).
    pub hops: u16,
    /// It came straight from its author's connection (or is this node's
    /// own): the author is authenticated. Otherwise the author is what the
    /// relays say.
    pub verified: bool,
    /// The publication.
    pub payload: Bytes,
}

/// Pubsub's RPCs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Deliver this topic's publications to this node.
    Subscribe(Topic),
    /// Stop delivering them.
    Unsubscribe(Topic),
    /// Publish to a topic (subscribed or not).
    Publish(Topic, Bytes),
    /// Topics this node subscribes to.
    Subscriptions,
    /// Counters, summed over every topic's tree.
    Stats,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// Done.
    Done,
    /// The publication's id.
    Published(MsgId),
    /// Subscribed topics, ascending.
    Subscriptions(Vec<Topic>),
    /// Counters.
    Stats(Stats),
}

/// Pubsub's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Topics tracked (subscribed, or forwarded for).
    pub topics: usize,
    /// All topic trees' counters, summed.
    pub trees: TreeStats,
    /// Publications dropped at the first hop for claiming another author.
    pub forged: u64,
    /// Topics this node is a member of the tree of without subscribing
    /// (it relays for subscribers behind it).
    pub relaying: usize,
    /// Interest entries ignored past `max_topics`.
    pub topics_refused: u64,
    /// Leaves' subscriptions ignored past `max_leaf_topics`.
    pub leaf_topics_refused: u64,
    /// `Up`s (publications on their way to a topic's tree) awaiting
    /// acknowledgement.
    pub ups_pending: usize,
    /// `Up`s given up: unacknowledged after ten attempts, or evicted.
    pub ups_given_up: u64,
}

#[cfg(test)]
mod tests;
