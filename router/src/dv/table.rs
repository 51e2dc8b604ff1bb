//! The shared routing table of the distance-vector router.

use crate::ServiceSet;
use parking_lot::RwLock;
use plexus_network::{NodeId, RejectReason, RouteAction, RouteInfo, RouterTable, ServiceId};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One learnt route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The neighbour to send through.
    pub next_hop: NodeId,
    /// Sum of link costs along the path, in microseconds (see `dv::Config`).
    pub metric: u32,
    /// Links to cross.
    pub hops: u8,
    /// The services the destination runs.
    pub services: ServiceSet,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Lookup only: never iterated (iteration goes through `sorted`, so
    /// every order that reaches the wire is deterministic).
    routes: HashMap<NodeId, RouteEntry>,
    pub(crate) local_services: ServiceSet,
    /// Reachable ids and this node's, ascending: for closest-key lookups
    /// and ordered iteration.
    sorted: Vec<u64>,
    local: NodeId,
    /// Per service: its providers by (metric, id); the first is the nearest.
    by_service: BTreeMap<ServiceId, BTreeSet<(u32, NodeId)>>,
}

impl Inner {
    fn new(local: NodeId) -> Self {
        Inner {
            routes: HashMap::new(),
            local_services: ServiceSet::EMPTY,
            sorted: vec![local.0],
            local,
            by_service: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&self, dest: NodeId) -> Option<&RouteEntry> {
        self.routes.get(&dest)
    }

    /// Sets (or with `None` removes) the route to `dest`, keeping the
    /// indexes current: O(log n) plus a memmove of the id array when the
    /// destination appears or disappears. Returns the previous route.
    pub(crate) fn set(&mut self, dest: NodeId, new: Option<RouteEntry>) -> Option<RouteEntry> {
        let old = match new {
            Some(r) => self.routes.insert(dest, r),
            None => self.routes.remove(&dest),
        };
        if let Some(o) = old {
            for s in o.services.iter() {
                if let Some(set) = self.by_service.get_mut(&s) {
                    set.remove(&(o.metric, dest));
                    if set.is_empty() {
                        self.by_service.remove(&s);
                    }
                }
            }
        }
        if let Some(n) = new {
            for s in n.services.iter() {
                self.by_service
                    .entry(s)
                    .or_default()
                    .insert((n.metric, dest));
            }
        }
        match (old.is_some(), new.is_some()) {
            (false, true) => {
                if let Err(i) = self.sorted.binary_search(&dest.0) {
                    self.sorted.insert(i, dest.0);
                }
            }
            (true, false) => {
                if let Ok(i) = self.sorted.binary_search(&dest.0) {
                    self.sorted.remove(i);
                }
            }
            _ => {}
        }
        old
    }

    /// Routes in ascending destination order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, &RouteEntry)> + '_ {
        self.sorted
            .iter()
            .filter(move |id| **id != self.local.0)
            .filter_map(move |id| self.routes.get(&NodeId(*id)).map(|r| (NodeId(*id), r)))
    }

    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}

/// The XOR-closest id to `key` in an ascending slice, by walking the
/// implicit binary trie from the top bit: O(64 · log n), no allocation.
pub(crate) fn closest(sorted: &[u64], key: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // Invariant: every id in sorted[lo..hi] agrees on the bits above `bit`.
    let (mut lo, mut hi) = (0usize, sorted.len());
    for bit in (0..64).rev() {
        if hi - lo <= 1 {
            break;
        }
        let b = 1u64 << bit;
        let mid = lo + sorted[lo..hi].partition_point(|&x| x & b == 0);
        if key & b != 0 {
            if mid < hi {
                lo = mid;
            }
        } else if mid > lo {
            hi = mid;
        }
    }
    Some(sorted[lo])
}

/// The routing table a distance-vector [`Behaviour`](super::Behaviour)
/// keeps up to date. Give the same `Arc<DvRouter>` to the core (as its
/// router) and to the behaviour.
///
/// Lookups: `path_to_node` is one ordered-map lookup; `path_to_key` walks a
/// sorted array of reachable ids (no allocation); `path_to_service` reads a
/// per-service index of providers. Every index is kept current as each
/// route changes (O(log n)), never rebuilt.
#[derive(Debug)]
pub struct DvRouter {
    local: NodeId,
    pub(crate) inner: RwLock<Inner>,
}

impl DvRouter {
    /// An empty table for node `local`.
    pub fn new(local: NodeId) -> Self {
        DvRouter {
            local,
            inner: RwLock::new(Inner::new(local)),
        }
    }

    /// A table pre-filled with `routes` (for seeding and benchmarks; the
    /// behaviour replaces them as it learns).
    pub fn with_routes(
        local: NodeId,
        routes: impl IntoIterator<Item = (NodeId, RouteEntry)>,
    ) -> Self {
        let r = DvRouter::new(local);
        {
            let mut inner = r.inner.write();
            for (dest, entry) in routes {
                if dest != local {
                    inner.set(dest, Some(entry));
                }
            }
        }
        r
    }

    /// The node this table belongs to.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The route to one destination.
    pub fn route(&self, dest: NodeId) -> Option<RouteEntry> {
        self.inner.read().get(dest).copied()
    }

    /// Number of reachable destinations.
    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    /// Whether no destination is reachable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RouterTable for DvRouter {
    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        if dest == self.local {
            return RouteAction::Local;
        }
        match self.inner.read().get(dest) {
            Some(r) => RouteAction::Next(r.next_hop),
            None => RouteAction::Reject(RejectReason::NoRoute),
        }
    }

    fn path_to_key(&self, key: NodeId) -> RouteAction {
        let inner = self.inner.read();
        match closest(&inner.sorted, key.0) {
            Some(id) if id != self.local.0 => match inner.get(NodeId(id)) {
                Some(r) => RouteAction::Next(r.next_hop),
                None => RouteAction::Reject(RejectReason::NoRoute),
            },
            _ => RouteAction::Local,
        }
    }

    fn path_to_service(&self, service: ServiceId) -> RouteAction {
        let inner = self.inner.read();
        if inner.local_services.contains(service) {
            return RouteAction::Local;
        }
        let nearest = inner.by_service.get(&service).and_then(|set| set.first());
        match nearest.and_then(|(_, dest)| inner.get(*dest)) {
            Some(r) => RouteAction::Next(r.next_hop),
            None => RouteAction::Reject(RejectReason::NoService),
        }
    }

    fn routes(&self) -> Vec<RouteInfo> {
        self.inner
            .read()
            .iter()
            .map(|(dest, r)| RouteInfo {
                dest,
                next_hop: r.next_hop,
                metric: r.metric,
                hops: r.hops,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_network::Rng;

    #[test]
    fn closest_matches_brute_force() {
        let mut rng = Rng::new(3);
        for n in [1usize, 2, 3, 10, 257] {
            let mut ids: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
            // Clustered ids share long prefixes: the hard case.
            ids.extend((0..n as u64).map(|i| 0xABCD_0000_0000_0000 | i));
            ids.sort_unstable();
            ids.dedup();
            for _ in 0..500 {
                let key = if rng.chance(0.5) {
                    rng.next_u64()
                } else {
                    0xABCD_0000_0000_0000 | rng.below(4 * n as u64)
                };
                let brute = *ids.iter().min_by_key(|&&x| x ^ key).unwrap();
                assert_eq!(closest(&ids, key), Some(brute));
            }
        }
        assert_eq!(closest(&[], 5), None);
    }

    #[test]
    fn lookups_use_the_indexes() {
        let s: ServiceSet = [ServiceId(7)].into_iter().collect();
        let entry = |hop: u64, metric, services| RouteEntry {
            next_hop: NodeId(hop),
            metric,
            hops: 1,
            services,
        };
        let r = DvRouter::with_routes(
            NodeId(0b0001),
            [
                (NodeId(0b1000), entry(2, 30, s)),
                (NodeId(0b0010), entry(2, 10, ServiceSet::EMPTY)),
                (NodeId(0b1100), entry(3, 20, s)),
            ],
        );
        assert_eq!(r.path_to_node(NodeId(1)), RouteAction::Local);
        assert_eq!(r.path_to_node(NodeId(0b1100)), RouteAction::Next(NodeId(3)));
        assert_eq!(r.path_to_key(NodeId(0b1001)), RouteAction::Next(NodeId(2)));
        assert_eq!(r.path_to_key(NodeId(0b0000)), RouteAction::Local);
        assert_eq!(
            r.path_to_service(ServiceId(7)),
            RouteAction::Next(NodeId(3))
        );
        assert_eq!(
            r.path_to_service(ServiceId(8)),
            RouteAction::Reject(RejectReason::NoService)
        );
        assert_eq!(r.routes().len(), 3);
    }
}
