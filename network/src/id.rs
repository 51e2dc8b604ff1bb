//! Identifiers: nodes, connections, services.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's 64-bit identity.
///
/// On authenticated transports it is derived from the node's ed25519 public
/// key, so no peer can claim another's id. Distances between ids (for
/// [`RouteRule::Closest`](crate::RouteRule::Closest)) are XOR distances.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// XOR distance between two ids, as used by closest-key routing.
    #[inline]
    pub fn distance(self, other: NodeId) -> u64 {
        self.0 ^ other.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:#018x})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<u64> for NodeId {
    fn from(v: u64) -> Self {
        NodeId(v)
    }
}

/// One connection of a node; unique within that node for its lifetime
/// (never reused), meaningless on any other node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Identifies a behaviour (a protocol); every message carries one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ServiceId(pub u8);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Which side opened a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    /// The remote node dialled us.
    Incoming,
    /// We dialled the remote node.
    Outgoing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_xor_and_symmetric() {
        let a = NodeId(0b1010);
        let b = NodeId(0b0110);
        assert_eq!(a.distance(b), 0b1100);
        assert_eq!(a.distance(b), b.distance(a));
        assert_eq!(a.distance(a), 0);
    }

    #[test]
    fn display_is_fixed_width_hex() {
        assert_eq!(NodeId(0xab).to_string(), "00000000000000ab");
        assert_eq!(ConnId(3).to_string(), "c3");
    }
}
