//! Membership's wire messages (postcard-encoded by the core). Every message
//! travels one hop, on a connection.

use plexus_network::{Address, NodeId};
use serde::{Deserialize, Serialize};

/// Most addresses kept or forwarded for one peer; more are ignored.
pub const MAX_ADDRS: usize = 4;

/// A peer and how to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer.
    pub node: NodeId,
    /// Where it listens (at most [`MAX_ADDRS`] are kept).
    pub addrs: Vec<Address>,
}

/// How a [`Message::Neighbor`] request is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// Accepted if the active view has room.
    Low,
    /// The sender has no active neighbour left, or ends a join walk: always
    /// accepted, making room if needed.
    High,
    /// Rewiring: the sender replaces one of its neighbours with this node;
    /// accepted if the active view has room, or by replacing one of its
    /// own (never leaving a neighbour of it alone). Keeps a full overlay
    /// mixing, so no group stays closed off.
    Swap,
}

/// A membership message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The sender joins the overlay through this node (its contact). The
    /// contact takes it into its active view and spreads the join; a
    /// sender with no address (nothing can dial it: a browser) becomes the
    /// contact's leaf instead, and is answered with a
    /// [`Message::NeighborReply`] (see [Leaves](super#leaves)).
    Join {
        /// Where the joining node listens.
        addrs: Vec<Address>,
    },
    /// A join walking the overlay: at the end of the walk (`ttl` 0, or a
    /// node with one active neighbour) `peer` is taken into the active
    /// view; where `ttl` equals the passive walk length, into the passive
    /// view.
    ForwardJoin {
        /// The joining node.
        peer: PeerInfo,
        /// Hops left.
        ttl: u8,
    },
    /// "Be my active neighbour".
    Neighbor {
        /// How hard to try: see [`Priority`].
        priority: Priority,
        /// Where the sender listens.
        addrs: Vec<Address>,
    },
    /// The answer to [`Message::Neighbor`], and to a leaf's [`Message::Join`].
    NeighborReply {
        /// Taken into the active view.
        accepted: bool,
    },
    /// The sender drops this node from its active view (and keeps it as a
    /// passive peer); the connection closes.
    Disconnect,
    /// A shuffle walking the overlay: `peers` from the origin's views, to
    /// trade for as many from the passive view of the node where it ends.
    Shuffle {
        /// Hops left.
        ttl: u8,
        /// The walk so far, origin first: the way back for the reply.
        path: Vec<NodeId>,
        /// What the origin offers (itself first).
        peers: Vec<PeerInfo>,
    },
    /// The answer to a shuffle, travelling back along `path`.
    ShuffleReply {
        /// The walk that is left to retrace.
        path: Vec<NodeId>,
        /// What the replier offers.
        peers: Vec<PeerInfo>,
    },
}
