//! A router whose routes are set by hand.

use crate::ServiceSet;
use parking_lot::RwLock;
use plexus_network::{NodeId, RejectReason, RouteAction, RouteInfo, RouterTable, ServiceId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
struct Route {
    next_hop: NodeId,
    cost: u32,
}

#[derive(Default, Debug)]
struct Table {
    routes: BTreeMap<NodeId, Route>,
    services: BTreeMap<NodeId, ServiceSet>,
    local_services: ServiceSet,
}

/// Routes set by hand: for each destination a next hop and a cost.
///
/// - `path_to_node`: the configured next hop, [`RouteAction::Local`] for this
///   node, a rejection otherwise.
/// - `path_to_key`: among this node and every destination it has a route to,
///   the XOR-closest to the key. Consistent across nodes when they all know
///   the same set of nodes.
/// - `path_to_service`: local if this node runs it, else the lowest-cost
///   node known to run it (ties broken by the smaller id).
///
/// Lookups of key and service are linear in the number of routes: this
/// router is for fixed topologies and tests, not for large overlays.
#[derive(Debug)]
pub struct StaticRouter {
    local: NodeId,
    table: RwLock<Table>,
}

impl StaticRouter {
    /// An empty table for node `local`.
    pub fn new(local: NodeId) -> Self {
        StaticRouter {
            local,
            table: RwLock::new(Table::default()),
        }
    }

    /// The node this table belongs to.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Routes `dest` through neighbour `next_hop` at `cost`.
    pub fn set_route(&self, dest: NodeId, next_hop: NodeId, cost: u32) {
        self.table
            .write()
            .routes
            .insert(dest, Route { next_hop, cost });
    }

    /// Forgets the route to `dest`.
    pub fn remove_route(&self, dest: NodeId) {
        self.table.write().routes.remove(&dest);
    }

    /// Declares that this node runs `service`.
    pub fn add_local_service(&self, service: ServiceId) {
        self.table.write().local_services.insert(service);
    }

    /// Declares the services `node` runs.
    pub fn set_services(&self, node: NodeId, services: ServiceSet) {
        let mut t = self.table.write();
        if node == self.local {
            t.local_services = services;
        } else {
            t.services.insert(node, services);
        }
    }

    /// Number of destinations with a route.
    pub fn len(&self) -> usize {
        self.table.read().routes.len()
    }

    /// Whether no destination has a route.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shortest-path (in hops) tables for every node of a known graph:
    /// `ids[i]` is node `i`, `adj[i]` its neighbours' indices. Ties go to the
    /// neighbour first reached by breadth-first search over sorted lists, so
    /// the result is deterministic.
    pub fn from_graph(ids: &[NodeId], adj: &[Vec<usize>]) -> Vec<Arc<StaticRouter>> {
        let n = ids.len();
        let mut out = Vec::with_capacity(n);
        let mut first = vec![usize::MAX; n];
        let mut dist = vec![u32::MAX; n];
        let mut q = VecDeque::new();
        for src in 0..n {
            first.iter_mut().for_each(|f| *f = usize::MAX);
            dist.iter_mut().for_each(|d| *d = u32::MAX);
            dist[src] = 0;
            q.push_back(src);
            while let Some(u) = q.pop_front() {
                for &v in &adj[u] {
                    if dist[v] == u32::MAX {
                        dist[v] = dist[u] + 1;
                        first[v] = if u == src { v } else { first[u] };
                        q.push_back(v);
                    }
                }
            }
            let r = StaticRouter::new(ids[src]);
            {
                let mut t = r.table.write();
                for dst in 0..n {
                    if dst != src && dist[dst] != u32::MAX {
                        t.routes.insert(
                            ids[dst],
                            Route {
                                next_hop: ids[first[dst]],
                                cost: dist[dst],
                            },
                        );
                    }
                }
            }
            out.push(Arc::new(r));
        }
        out
    }
}

impl RouterTable for StaticRouter {
    fn routes(&self) -> Vec<RouteInfo> {
        self.table
            .read()
            .routes
            .iter()
            .map(|(dest, r)| RouteInfo {
                dest: *dest,
                next_hop: r.next_hop,
                metric: r.cost,
                hops: u8::try_from(r.cost).unwrap_or(u8::MAX),
            })
            .collect()
    }

    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        if dest == self.local {
            return RouteAction::Local;
        }
        match self.table.read().routes.get(&dest) {
            Some(r) => RouteAction::Next(r.next_hop),
            None => RouteAction::Reject(RejectReason::NoRoute),
        }
    }

    fn path_to_key(&self, key: NodeId) -> RouteAction {
        let t = self.table.read();
        let mut best = (self.local.distance(key), None);
        for (dest, r) in &t.routes {
            let d = dest.distance(key);
            if d < best.0 {
                best = (d, Some(r.next_hop));
            }
        }
        match best.1 {
            None => RouteAction::Local,
            Some(hop) => RouteAction::Next(hop),
        }
    }

    fn path_to_service(&self, service: ServiceId) -> RouteAction {
        let t = self.table.read();
        if t.local_services.contains(service) {
            return RouteAction::Local;
        }
        let best = t
            .services
            .iter()
            .filter(|(_, s)| s.contains(service))
            .filter_map(|(n, _)| t.routes.get(n).map(|r| (r.cost, *n, r.next_hop)))
            .min();
        match best {
            Some((_, _, hop)) => RouteAction::Next(hop),
            None => RouteAction::Reject(RejectReason::NoService),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_and_service_lookups() {
        let r = StaticRouter::new(NodeId(0b0001));
        r.set_route(NodeId(0b1000), NodeId(0b0010), 2);
        r.set_route(NodeId(0b0010), NodeId(0b0010), 1);
        assert_eq!(r.path_to_node(NodeId(1)), RouteAction::Local);
        assert_eq!(r.path_to_node(NodeId(8)), RouteAction::Next(NodeId(2)));
        assert_eq!(
            r.path_to_node(NodeId(9)),
            RouteAction::Reject(RejectReason::NoRoute)
        );
        // 0b1001 is closest to 0b1000 (distance 1) vs local 0b0001 (distance 8).
        assert_eq!(r.path_to_key(NodeId(0b1001)), RouteAction::Next(NodeId(2)));
        assert_eq!(r.path_to_key(NodeId(0b0001)), RouteAction::Local);

        let s = ServiceId(5);
        assert_eq!(
            r.path_to_service(s),
            RouteAction::Reject(RejectReason::NoService)
        );
        r.set_services(NodeId(8), [s].into_iter().collect());
        assert_eq!(r.path_to_service(s), RouteAction::Next(NodeId(2)));
        r.add_local_service(s);
        assert_eq!(r.path_to_service(s), RouteAction::Local);
    }

    #[test]
    fn from_graph_routes_along_shortest_paths() {
        // 0 - 1 - 2 - 3, and 0 - 3 directly.
        let ids: Vec<NodeId> = (10..14).map(NodeId).collect();
        let adj = vec![vec![1, 3], vec![0, 2], vec![1, 3], vec![0, 2]];
        let t = StaticRouter::from_graph(&ids, &adj);
        assert_eq!(t[0].path_to_node(ids[3]), RouteAction::Next(ids[3]));
        assert_eq!(t[0].path_to_node(ids[2]), RouteAction::Next(ids[1]));
        assert_eq!(t[1].path_to_node(ids[3]), RouteAction::Next(ids[0]));
        assert_eq!(t[2].len(), 3);
    }
}
