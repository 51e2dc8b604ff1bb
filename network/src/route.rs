//! Where a message goes: route rules, route actions and the injectable
//! [`RouterTable`].

use crate::{NodeId, ServiceId};
use std::fmt;

/// Where a message is addressed. Every message carries one in its header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RouteRule {
    /// One hop: to whoever is on the other end of the connection it is sent
    /// on. Never forwarded.
    Direct,
    /// To one node, forwarded hop by hop.
    Node(NodeId),
    /// To the reachable node whose id is XOR-closest to the key (possibly
    /// this node).
    Closest(NodeId),
    /// To the nearest node running the message's service.
    Service,
}

impl fmt::Display for RouteRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteRule::Direct => write!(f, "direct"),
            RouteRule::Node(n) => write!(f, "node:{n}"),
            RouteRule::Closest(k) => write!(f, "closest:{k}"),
            RouteRule::Service => write!(f, "service"),
        }
    }
}

/// Why a router refused to route a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum RejectReason {
    /// The router knows no path to the destination.
    NoRoute,
    /// No known node runs the requested service.
    NoService,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::NoRoute => f.write_str("no route"),
            RejectReason::NoService => f.write_str("no node runs the service"),
        }
    }
}

/// What to do with a message, as decided by a [`RouterTable`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RouteAction {
    /// The message is for this node.
    Local,
    /// Forward to this neighbour (a node with a direct connection).
    Next(NodeId),
    /// Drop it.
    Reject(RejectReason),
}

/// One row of a router's table, for status displays.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RouteInfo {
    /// The destination.
    pub dest: NodeId,
    /// The neighbour to send through.
    pub next_hop: NodeId,
    /// The router's metric (lower is better; units are the router's).
    pub metric: u32,
    /// Hops to the destination.
    pub hops: u8,
}

/// The routing table the core asks for every message that is not
/// [`RouteRule::Direct`]. Injectable: the core holds it as
/// `Arc<dyn RouterTable>`, so a router may be shared with the behaviour that
/// keeps it up to date.
///
/// Implementations must be cheap: `path_to` sits on the per-message hot path.
/// They must also be deterministic given their state (no iteration over a
/// randomly seeded `HashMap` to break ties), or simulations stop replaying.
pub trait RouterTable: Send + Sync {
    /// Next hop towards `dest`, or [`RouteAction::Local`] when `dest` is this node.
    fn path_to_node(&self, dest: NodeId) -> RouteAction;
    /// Next hop towards the reachable node XOR-closest to `key`, or
    /// [`RouteAction::Local`] when this node is the closest.
    fn path_to_key(&self, key: NodeId) -> RouteAction;
    /// Next hop towards the nearest node running `service`, or
    /// [`RouteAction::Local`] when this node runs it.
    fn path_to_service(&self, service: ServiceId) -> RouteAction;
    /// A snapshot of the table, for status. The default is empty.
    fn routes(&self) -> Vec<RouteInfo> {
        Vec::new()
    }
    /// Dispatches on the rule. [`RouteRule::Direct`] is always local.
    fn path_to(&self, rule: &RouteRule, service: ServiceId) -> RouteAction {
        match rule {
            RouteRule::Direct => RouteAction::Local,
            RouteRule::Node(dest) => self.path_to_node(*dest),
            RouteRule::Closest(key) => self.path_to_key(*key),
            RouteRule::Service => self.path_to_service(service),
        }
    }
}
