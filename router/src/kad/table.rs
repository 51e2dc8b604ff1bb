//! The shared table of the XOR router: the node's links, what each link
//! said about its own links, and the service vector.

use crate::ServiceSet;
use parking_lot::RwLock;
use plexus_network::{
    Address, NodeId, RejectReason, RouteAction, RouteInfo, RouterTable, ServiceId,
};
use std::collections::BTreeMap;

/// What this node knows of one link (a node it holds a connection to).
#[derive(Debug, Default, Clone)]
pub(crate) struct Link {
    /// The link's own links, ascending and without duplicates, from its
    /// last [`State`](super::Message::State) (empty until it arrives).
    pub(crate) links: Vec<u64>,
    /// Per service it can reach: its hop count to the nearest provider
    /// (0: it runs the service itself), ascending by service.
    pub(crate) services: Vec<(u8, u8)>,
    /// Where it listens, as it said.
    pub(crate) addrs: Vec<Address>,
}

/// The best node of the two-hop neighbourhood for a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Best {
    pub(crate) node: NodeId,
    /// The link to send through (the node itself when it is a link).
    pub(crate) via: NodeId,
    /// 1 or 2.
    pub(crate) hops: u8,
}

#[derive(Debug)]
pub(crate) struct Inner {
    local: NodeId,
    pub(crate) links: BTreeMap<NodeId, Link>,
    pub(crate) local_services: ServiceSet,
    /// Per service: (hops to the nearest provider, link to send through).
    pub(crate) services: BTreeMap<u8, (u8, NodeId)>,
    max_hops: u8,
}

impl Inner {
    /// The node of the two-hop neighbourhood (links and their links, not
    /// this node, none that `skip` names, none through a link it names)
    /// XOR-closest to `target`; on equal distance (the same node two ways)
    /// the shorter way, then the smaller link id. O(links × their links):
    /// a few thousand XORs at most.
    pub(crate) fn closest(&self, target: u64, skip: impl Fn(u64) -> bool) -> Option<(u64, Best)> {
        let mut best: Option<(u64, Best)> = None;
        // `skip` is asked only of a node that would be the new best: a
        // handful of times per call, not once per node of the neighbourhood.
        let mut consider = |id: u64, via: NodeId, hops: u8| {
            let d = id ^ target;
            let better = match &best {
                None => true,
                Some((bd, b)) => d < *bd || (d == *bd && (hops, via) < (b.hops, b.via)),
            };
            if better && (hops == 1 || !skip(id)) {
                best = Some((
                    d,
                    Best {
                        node: NodeId(id),
                        via,
                        hops,
                    },
                ));
            }
        };
        for (n, l) in &self.links {
            if skip(n.0) {
                continue;
            }
            consider(n.0, *n, 1);
            for &m in &l.links {
                if m != self.local.0 {
                    consider(m, *n, 2);
                }
            }
        }
        best
    }

    /// Recomputes the service vector from the links' adverts. Returns
    /// whether it changed.
    pub(crate) fn recompute_services(&mut self) -> bool {
        let mut next: BTreeMap<u8, (u8, NodeId)> = BTreeMap::new();
        for (n, l) in &self.links {
            for &(s, h) in &l.services {
                let hops = h.saturating_add(1);
                if hops > self.max_hops {
                    continue;
                }
                let e = next.entry(s).or_insert((hops, *n));
                if (hops, *n) < *e {
                    *e = (hops, *n);
                }
            }
        }
        let changed = next != self.services;
        self.services = next;
        changed
    }

    pub(crate) fn set_max_hops(&mut self, h: u8) {
        self.max_hops = h;
    }

    /// Entries held: links, their links, services.
    pub(crate) fn entries(&self) -> usize {
        self.links.len()
            + self.links.values().map(|l| l.links.len()).sum::<usize>()
            + self.services.len()
    }
}

/// The [`RouterTable`] half of the XOR router: next hops by greedy XOR
/// descent over the two-hop neighbourhood, services by a small distance
/// vector. Kept up to date by [`Behaviour`](super::Behaviour); see the
/// [module docs](super).
#[derive(Debug)]
pub struct KadRouter {
    local: NodeId,
    pub(crate) inner: RwLock<Inner>,
}

impl KadRouter {
    /// An empty table for node `local`, with the default service hop limit.
    pub fn new(local: NodeId) -> Self {
        Self::with_max_hops(local, super::Config::default().max_service_hops)
    }

    pub(crate) fn with_max_hops(local: NodeId, max_hops: u8) -> Self {
        KadRouter {
            local,
            inner: RwLock::new(Inner {
                local,
                links: BTreeMap::new(),
                local_services: ServiceSet::EMPTY,
                services: BTreeMap::new(),
                max_hops,
            }),
        }
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The links (nodes this node holds a connection to), ascending.
    pub fn links(&self) -> Vec<NodeId> {
        self.inner.read().links.keys().copied().collect()
    }

    /// Routing state held, in entries: one per link, one per node each
    /// link reported as its own link, one per reachable service: grows as
    /// log² N.
    pub fn state_entries(&self) -> usize {
        self.inner.read().entries()
    }

    /// Distinct nodes within two hops (links and their links).
    pub fn known_nodes(&self) -> usize {
        let inner = self.inner.read();
        let mut ids: Vec<u64> = inner.links.keys().map(|n| n.0).collect();
        for l in inner.links.values() {
            ids.extend(l.links.iter().copied().filter(|m| *m != self.local.0));
        }
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// The nearest provider of `service` as (hops, next link), if known.
    pub fn service_route(&self, service: ServiceId) -> Option<(u8, NodeId)> {
        self.inner.read().services.get(&service.0).copied()
    }

    fn next_towards(&self, target: u64) -> Option<(u64, Best)> {
        let inner = self.inner.read();
        let own = self.local.0 ^ target;
        inner.closest(target, |_| false).filter(|(d, _)| *d < own)
    }
}

impl RouterTable for KadRouter {
    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        if dest == self.local {
            return RouteAction::Local;
        }
        match self.next_towards(dest.0) {
            Some((_, b)) => RouteAction::Next(b.via),
            None => RouteAction::Reject(RejectReason::NoRoute),
        }
    }

    fn path_to_key(&self, key: NodeId) -> RouteAction {
        match self.next_towards(key.0) {
            Some((_, b)) => RouteAction::Next(b.via),
            None => RouteAction::Local,
        }
    }

    fn path_to_service(&self, service: ServiceId) -> RouteAction {
        let inner = self.inner.read();
        if inner.local_services.contains(service) {
            return RouteAction::Local;
        }
        match inner.services.get(&service.0) {
            Some(&(_, via)) => RouteAction::Next(via),
            None => RouteAction::Reject(RejectReason::NoService),
        }
    }

    /// Links (1 hop) and their links (2 hops, through the smallest link
    /// that reported them), by id. Metric: hops.
    fn routes(&self) -> Vec<RouteInfo> {
        let inner = self.inner.read();
        let mut rows: BTreeMap<NodeId, (NodeId, u8)> = BTreeMap::new();
        for (n, l) in &inner.links {
            rows.insert(*n, (*n, 1));
            for &m in &l.links {
                if m != self.local.0 {
                    let e = rows.entry(NodeId(m)).or_insert((*n, 2));
                    if (2, *n) < (e.1, e.0) {
                        *e = (*n, 2);
                    }
                }
            }
        }
        rows.into_iter()
            .map(|(dest, (next_hop, hops))| RouteInfo {
                dest,
                next_hop,
                metric: u32::from(hops),
                hops,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(local: u64, links: &[(u64, &[u64])]) -> KadRouter {
        let r = KadRouter::new(NodeId(local));
        {
            let mut inner = r.inner.write();
            for (n, ls) in links {
                inner.links.insert(
                    NodeId(*n),
                    Link {
                        links: ls.to_vec(),
                        ..Link::default()
                    },
                );
            }
        }
        r
    }

    #[test]
    fn greedy_descent_prefers_the_closest_node_within_two_hops() {
        // Local 0b1000; links 0b0100 (which knows 0b0001) and 0b1100.
        let r = router(0b1000, &[(0b0100, &[0b0001, 0b1000]), (0b1100, &[])]);
        // Direct link.
        assert_eq!(
            r.path_to_node(NodeId(0b1100)),
            RouteAction::Next(NodeId(0b1100))
        );
        // Two hops: through the link that reported it.
        assert_eq!(
            r.path_to_node(NodeId(0b0001)),
            RouteAction::Next(NodeId(0b0100))
        );
        // Unknown 0b0000: 0b0001 is closer than anything else, so go there.
        assert_eq!(r.path_to_node(NodeId(0)), RouteAction::Next(NodeId(0b0100)));
        // Unknown 0b1001: nothing known is closer than this node.
        assert_eq!(
            r.path_to_node(NodeId(0b1001)),
            RouteAction::Reject(RejectReason::NoRoute)
        );
        // The same target as a key: this node is the closest it knows.
        assert_eq!(r.path_to_key(NodeId(0b1001)), RouteAction::Local);
        assert_eq!(
            r.path_to_key(NodeId(0b0011)),
            RouteAction::Next(NodeId(0b0100))
        );
        assert_eq!(r.path_to_node(NodeId(0b1000)), RouteAction::Local);
    }

    #[test]
    fn a_node_reachable_directly_and_in_two_hops_is_sent_directly() {
        let r = router(1, &[(2, &[4]), (4, &[2])]);
        assert_eq!(r.path_to_node(NodeId(4)), RouteAction::Next(NodeId(4)));
        let routes = r.routes();
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|x| x.hops == 1));
        assert_eq!(r.state_entries(), 4);
        assert_eq!(r.known_nodes(), 2);
    }

    #[test]
    fn services_go_to_the_fewest_hops_then_the_smaller_link() {
        let r = router(1, &[(2, &[]), (3, &[])]);
        {
            let mut inner = r.inner.write();
            inner.links.get_mut(&NodeId(2)).unwrap().services = vec![(9, 2)];
            inner.links.get_mut(&NodeId(3)).unwrap().services = vec![(9, 1), (10, 15), (11, 16)];
            assert!(inner.recompute_services());
            assert!(!inner.recompute_services());
        }
        assert_eq!(
            r.path_to_service(ServiceId(9)),
            RouteAction::Next(NodeId(3))
        );
        assert_eq!(
            r.path_to_service(ServiceId(10)),
            RouteAction::Next(NodeId(3))
        );
        // Past the hop limit (16): unknown.
        assert_eq!(
            r.path_to_service(ServiceId(11)),
            RouteAction::Reject(RejectReason::NoService)
        );
        r.inner.write().local_services.insert(ServiceId(11));
        assert_eq!(r.path_to_service(ServiceId(11)), RouteAction::Local);
    }
}
