//! Broadcast: every node delivers every message once, over a spanning tree
//! that forms and repairs itself (Plumtree) on the membership overlay.
//!
//! The engine is [`Plumtree`] (see its module for the algorithm and its
//! bounds); this behaviour runs one tree over the node's overlay
//! neighbours and hands each message to the application once, as an
//! [`Event`]. [`pubsub`](crate::pubsub) runs one tree per topic with the
//! same engine.
//!
//! # Neighbours
//! With [`Neighbours::Membership`] (the default) the tree's neighbours are
//! the [`membership`](crate::membership) behaviour's active view, learnt
//! from its [`NeighborEvent`](crate::membership::NeighborEvent)s: add
//! `membership::Behaviour` to the same node. With
//! [`Neighbours::Connections`] every connection is a neighbour (for fixed
//! topologies without membership).
//!
//! # Messages ([`Message`])
//! `Gossip` (a whole message with its id, origin, hop count and payload),
//! `IHave` (ids and hop counts, batched), `Graft`, `Prune`, `Route` (one
//! origin's tree moves) — one hop each, on connections. A message's id is
//! its author's [`NodeId`] and a sequence number that starts at a random
//! value on every start.
//!
//! # Trees
//! Each author's messages follow a tree of their own, which becomes the
//! shortest-path tree from that author within a few messages; an author's
//! first message follows a tree shared by all (see
//! [`plumtree`](plumtree#one-tree-per-origin)). Measured on the simulator
//! (`plexus-bench -- broadcast --nodes 10000`): 0.006 relative message
//! redundancy and last delivery 14 hops out on an overlay of diameter 12
//! once trees have formed; 0.037 and 33 hops for first messages.
//!
//! # Application API
//! [`Request::Broadcast`] through `NodeHandle::rpc::<broadcast::Behaviour>`
//! (answered with the message's id once it is sent); every node, the
//! author included, delivers it once as an [`Event`]. [`Request::Stats`]
//! and [`Request::Tree`] for inspection.
//!
//! # Trust
//! A message's author is what the `Gossip` says. The neighbour it came
//! from is authenticated by its connection, but a relay could forge an
//! author; sign payloads at the application level where that matters.
//!
//! ```
//! use plexus_behaviours::{broadcast, membership};
//! # use plexus_network::{Network, NodeId};
//! # use std::sync::Arc;
//! # let router = Arc::new(plexus_router::StaticRouter::new(NodeId(1)));
//! let node = Network::builder(NodeId(1), router)
//!     .behavior(membership::Behaviour::new(membership::Config::default()))
//!     .behavior(broadcast::Behaviour::new(broadcast::Config::default()))
//!     .build()
//!     .unwrap();
//! # let _ = node;
//! ```

mod behaviour;
pub mod plumtree;

pub use behaviour::Behaviour;
pub use plumtree::{MsgId, Plumtree, PlumtreeConfig, TreeMsg, TreeStats};

use bytes::Bytes;
use plexus_network::{NodeId, ServiceId};

/// Broadcast's wire message: Plumtree's, carrying bytes.
pub type Message = TreeMsg<Bytes>;

/// Where the tree's neighbours come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbours {
    /// The membership behaviour's active view (its `NeighborEvent`s).
    Membership,
    /// Every connection of the node.
    Connections,
}

/// Broadcast settings. `Config::default()` gives the values each setter
/// documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) neighbours: Neighbours,
    pub(crate) tree: PlumtreeConfig,
    pub(crate) max_payload: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::BROADCAST,
            neighbours: Neighbours::Membership,
            tree: PlumtreeConfig::default(),
            max_payload: 64 * 1024,
        }
    }
}

impl Config {
    /// The service id. Default [`crate::services::BROADCAST`] (3).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Where neighbours come from. Default [`Neighbours::Membership`].
    pub fn with_neighbours(mut self, n: Neighbours) -> Self {
        self.neighbours = n;
        self
    }
    /// The tree's settings. Default [`PlumtreeConfig::default`].
    pub fn with_tree(mut self, tree: PlumtreeConfig) -> Self {
        self.tree = tree;
        self
    }
    /// Largest payload accepted for broadcast. Default 64 KiB.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }
}

/// A message delivered to this node (once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id (author and sequence number).
    pub id: MsgId,
    /// Hops it took from its author (0 for this node's own).
    pub hops: u16,
    /// The neighbour it arrived from (this node for its own).
    pub from: NodeId,
    /// The message.
    pub payload: Bytes,
}

/// Broadcast's RPCs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Broadcast this payload to every node.
    Broadcast(Bytes),
    /// The tree's counters.
    Stats,
    /// The tree's eager and lazy neighbours.
    Tree,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// The broadcast message's id.
    Sent(MsgId),
    /// Counters.
    Stats(TreeStats),
    /// Eager and lazy neighbours, ascending.
    Tree {
        /// The tree's links.
        eager: Vec<NodeId>,
        /// The others.
        lazy: Vec<NodeId>,
    },
}

#[cfg(test)]
mod tests;
