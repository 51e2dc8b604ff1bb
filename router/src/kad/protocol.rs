//! The XOR router's messages (postcard-encoded by the core).

use plexus_network::Address;
use serde::{Deserialize, Serialize};

/// Most addresses a node advertises or a contact carries.
pub const MAX_ADDRS: usize = 4;
/// Most hops a [`Message::Find`] walks before it ends where it is.
pub const MAX_FIND_HOPS: usize = 32;

/// A node and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The node's id.
    pub node: u64,
    /// Its addresses (at most [`MAX_ADDRS`]).
    pub addrs: Vec<Address>,
}

/// What the router says to its links and along lookups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The sender's whole state, to one link: sent when it changes (after
    /// `trigger_delay`) and every `refresh_interval`. Replaces what the
    /// receiver knew from the sender.
    State {
        /// Where the sender listens.
        addrs: Vec<Address>,
        /// The sender's links, ascending (at most `max_advertised`).
        links: Vec<u64>,
        /// `(service, hops)`: the services the sender reaches, with its hop
        /// count to the nearest provider (0: it runs it). A service whose
        /// best route goes through the receiver is left out (split
        /// horizon: a full state replaces the last, so leaving it out
        /// withdraws it), so two nodes never count to infinity between
        /// them; longer loops stop at `max_service_hops`.
        services: Vec<(u8, u8)>,
    },
    /// A lookup, walking towards its target.
    Find(Find),
    /// The answer to a lookup, retracing its path.
    Found(Found),
}

/// A lookup: walks hop by hop to the node XOR-closest to `target` (never
/// counting `path[0]`, the node that asked, nor a node already walked),
/// which answers with [`Found`] back along `path`. Every node it crosses
/// may link to the asker if it has no link in the asker's bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Find {
    /// Chosen by the asker at random; the answer repeats it, and an answer
    /// the asker is not waiting for is dropped.
    pub id: u64,
    /// The node that asked, and where it listens.
    pub origin: Contact,
    /// The id sought.
    pub target: u64,
    /// The asker's bucket the lookup fills (64: its closest nodes).
    pub bucket: u8,
    /// The nodes walked, the asker first. The walk never revisits one.
    pub path: Vec<u64>,
    /// Sideways steps left: where no known node is closer to the target,
    /// the walk may still go on through one of the three links nearest it
    /// (not walked yet, chosen at random), whose view may reach further —
    /// while young tables are incomplete, a walk that stopped at the first
    /// dead end would miss nodes that exist. A bucket lookup stops
    /// detouring once it is in the bucket sought; a lookup of the asker's
    /// closest nodes spends them all, so that it passes by more of the
    /// nodes near the asker.
    pub detours: u8,
}

/// The answer to a [`Find`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// The lookup's id.
    pub id: u64,
    /// As in the lookup.
    pub bucket: u8,
    /// The node where the walk ended, then its links, by XOR distance to
    /// the target (at most `contacts`).
    pub contacts: Vec<Contact>,
    /// The rest of the way back (the asker first).
    pub path: Vec<u64>,
}
