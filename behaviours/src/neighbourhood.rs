//! Which peers a tree-building behaviour treats as its neighbours, and the
//! connection each is reached on: from the membership behaviour's
//! [`NeighborEvent`]s or from every connection ([`Neighbours`]). Shared by
//! broadcast, pubsub and gossip so they read neighbour changes the same way.

use crate::broadcast::Neighbours;
use crate::membership::NeighborEvent;
use plexus_network::{ConnId, ConnectionInfo, NodeId};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

/// What a connection or membership event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing a neighbour-based behaviour cares about.
    None,
    /// A new neighbour.
    Up(NodeId, ConnId),
    /// A neighbour now on a new connection: it may have restarted and know
    /// nothing, so a behaviour starts over with it (down, then up).
    Replaced(NodeId, ConnId),
    /// A neighbour reached on another connection of the same peer: only
    /// the connection changed.
    Moved(NodeId, ConnId),
    /// A neighbour gone.
    Down(NodeId),
}

/// The neighbour table.
#[derive(Debug)]
pub(crate) struct Neighbourhood {
    source: Neighbours,
    map: BTreeMap<NodeId, ConnId>,
    /// Take membership's leaves as neighbours too.
    take_leaves: bool,
    /// The neighbours that are leaves.
    leaves: BTreeSet<NodeId>,
}

impl Neighbourhood {
    /// Neighbours from `source`, leaves left out (they speak only some
    /// protocols).
    pub(crate) fn new(source: Neighbours) -> Self {
        Neighbourhood {
            source,
            map: BTreeMap::new(),
            take_leaves: false,
            leaves: BTreeSet::new(),
        }
    }

    /// Neighbours from `source`, membership's leaves included.
    pub(crate) fn with_leaves(source: Neighbours) -> Self {
        Neighbourhood {
            take_leaves: true,
            ..Neighbourhood::new(source)
        }
    }

    /// Whether `node` is a neighbour as membership's leaf.
    pub(crate) fn is_leaf(&self, node: &NodeId) -> bool {
        self.leaves.contains(node)
    }

    /// The connection `node` is reached on, if it is a neighbour.
    pub(crate) fn conn(&self, node: &NodeId) -> Option<ConnId> {
        self.map.get(node).copied()
    }

    /// The neighbour reached on `conn`.
    pub(crate) fn node_of(&self, conn: ConnId) -> Option<NodeId> {
        self.map.iter().find(|(_, c)| **c == conn).map(|(n, _)| *n)
    }

    pub(crate) fn contains(&self, node: &NodeId) -> bool {
        self.map.contains_key(node)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Neighbours and their connections, ascending by node.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, ConnId)> + '_ {
        self.map.iter().map(|(n, c)| (*n, *c))
    }

    /// A connection came up.
    pub(crate) fn on_connected(&mut self, info: &ConnectionInfo) -> Change {
        if self.source != Neighbours::Connections {
            return Change::None;
        }
        self.set(info.node, info.conn)
    }

    /// A connection went down; `others` are the node's remaining connections.
    pub(crate) fn on_disconnected<'a>(
        &mut self,
        info: &ConnectionInfo,
        mut others: impl Iterator<Item = &'a ConnectionInfo>,
    ) -> Change {
        if self.source != Neighbours::Connections || self.conn(&info.node) != Some(info.conn) {
            return Change::None;
        }
        match others.find(|c| c.node == info.node && c.conn != info.conn) {
            Some(c) => {
                self.map.insert(info.node, c.conn);
                Change::Moved(info.node, c.conn)
            }
            None => {
                self.map.remove(&info.node);
                Change::Down(info.node)
            }
        }
    }

    /// Another behaviour's event: the membership's view changes.
    pub(crate) fn on_local_event(&mut self, event: &(dyn Any + Send + Sync)) -> Change {
        if self.source != Neighbours::Membership {
            return Change::None;
        }
        match event.downcast_ref::<NeighborEvent>() {
            Some(NeighborEvent::Up { node, conn, leaf }) => {
                if *leaf && !self.take_leaves {
                    return self.remove(node);
                }
                let was = if *leaf {
                    !self.leaves.insert(*node)
                } else {
                    self.leaves.remove(node)
                };
                match self.set(*node, *conn) {
                    // Same connection, but it changed between leaf and
                    // neighbour: a behaviour starts over with it.
                    Change::None if was != *leaf => Change::Replaced(*node, *conn),
                    change => change,
                }
            }
            Some(NeighborEvent::Down { node }) => self.remove(node),
            None => Change::None,
        }
    }

    fn remove(&mut self, node: &NodeId) -> Change {
        self.leaves.remove(node);
        match self.map.remove(node) {
            Some(_) => Change::Down(*node),
            None => Change::None,
        }
    }

    fn set(&mut self, node: NodeId, conn: ConnId) -> Change {
        match self.map.insert(node, conn) {
            None => Change::Up(node, conn),
            Some(old) if old == conn => Change::None,
            Some(_) => Change::Replaced(node, conn),
        }
    }
}
