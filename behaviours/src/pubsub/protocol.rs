//! Pubsub's wire messages (postcard-encoded by the core); one hop each.

use crate::broadcast::TreeMsg;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A topic: the 64-bit FNV-1a hash of its name (stable across builds and
/// platforms, so every node derives the same id from the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Topic(pub u64);

impl Topic {
    /// The topic named `name`.
    pub fn new(name: &str) -> Topic {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Topic(h)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic:{:016x}", self.0)
    }
}

/// A distance that means "no route to the root" (and the most a distance
/// counts to, so a stale route to a root that is gone dies out).
pub const NO_ROOT: u8 = 16;

/// What a node tells a neighbour about one topic: the root it follows
/// (the smallest subscriber id it knows of), its hops to it, whether the
/// neighbour is its parent towards the root, and whether it takes part in
/// the topic's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// The root: the smallest id among the topic's subscribers.
    pub root: plexus_network::NodeId,
    /// Hops to the root ([`NO_ROOT`]: no route).
    pub dist: u8,
    /// The receiver is the sender's next hop to the root.
    pub parent: bool,
    /// The sender subscribes, or relays for a subscriber behind it.
    pub member: bool,
}

impl Advert {
    /// Nothing to say: no route to any root, not a member.
    pub const NONE: Advert = Advert {
        root: plexus_network::NodeId(0),
        dist: NO_ROOT,
        parent: false,
        member: false,
    };
}

/// A pubsub message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Per topic, the sender's [`Advert`] to the receiver. Only changes
    /// travel (batched), after a full table when a neighbour comes up.
    Interest(Vec<(Topic, Advert)>),
    /// A message of one topic's tree (among its members).
    Tree {
        /// The topic.
        topic: Topic,
        /// Plumtree's message, carrying the publication.
        msg: TreeMsg<Bytes>,
    },
    /// A publication by a node outside the topic's tree, travelling
    /// towards the root until a member takes it into the tree. Each hop
    /// keeps it until the next one acknowledges it ([`Message::UpAck`]), and
    /// sends it again (by its route at that time) if the next hop goes away
    /// or stays silent: a relay that dies does not lose it.
    Up {
        /// The topic.
        topic: Topic,
        /// Its id (author, sequence number).
        id: crate::broadcast::MsgId,
        /// Hops so far (a guard against loops: dropped at [`NO_ROOT`]).
        hops: u8,
        /// The publication.
        payload: Bytes,
    },
    /// "I have taken the `Up` with this id": the sender may forget it.
    UpAck(crate::broadcast::MsgId),
}
