//! Scenario helpers for the simulator (feature `sim`): overlays of
//! membership nodes joining through each other, their connectivity, and the
//! dissemination metrics the tests and the benchmark report.
//!
//! Metrics, as the Plumtree paper defines them:
//! - **RMR** (relative message redundancy): whole copies sent ÷ (nodes
//!   reached − 1) − 1; 0 means every node got exactly one copy.
//! - **LDH** (last delivery hop): the most hops any node's first copy took.

use crate::{broadcast, membership, ping, pubsub};
use plexus_network::sim::Sim;
use plexus_network::{
    Address, Network, NetworkBuilder, NodeId, RejectReason, Rng, RouteAction, RouterTable,
    ServiceId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Which behaviours an overlay node runs, besides membership and ping.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// Membership settings.
    pub membership: membership::Config,
    /// Ping settings (ping closes connections to dead peers).
    pub ping: Option<ping::Config>,
    /// Broadcast, if any.
    pub broadcast: Option<broadcast::Config>,
    /// Pubsub, if any.
    pub pubsub: Option<pubsub::Config>,
}

impl Stack {
    /// Membership with these settings, ping (500 ms interval, 3 s timeout,
    /// no RTT events), nothing else.
    pub fn new(membership: membership::Config) -> Self {
        Stack {
            membership,
            ping: Some(
                ping::Config::default()
                    .with_interval(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(3))
                    .with_emit_rtt(false),
            ),
            broadcast: None,
            pubsub: None,
        }
    }
    /// With broadcast.
    pub fn with_broadcast(mut self, c: broadcast::Config) -> Self {
        self.broadcast = Some(c);
        self
    }
    /// With pubsub.
    pub fn with_pubsub(mut self, c: pubsub::Config) -> Self {
        self.pubsub = Some(c);
        self
    }

    fn build(&self, b: NetworkBuilder) -> Network {
        let mut b = b.behavior(membership::Behaviour::new(self.membership.clone()));
        if let Some(p) = &self.ping {
            b = b.behavior(ping::Behaviour::new(p.clone()));
        }
        if let Some(c) = &self.broadcast {
            b = b.behavior(broadcast::Behaviour::new(c.clone()));
        }
        if let Some(c) = &self.pubsub {
            b = b.behavior(pubsub::Behaviour::new(c.clone()));
        }
        b.build().expect("distinct services")
    }
}

/// A router that knows only this node: overlay behaviours talk to their
/// neighbours one hop at a time and need no routes.
#[derive(Debug)]
pub struct NoRoutes(pub NodeId);

impl RouterTable for NoRoutes {
    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        if dest == self.0 {
            RouteAction::Local
        } else {
            RouteAction::Reject(RejectReason::NoRoute)
        }
    }
    fn path_to_key(&self, _: NodeId) -> RouteAction {
        RouteAction::Local
    }
    fn path_to_service(&self, _: ServiceId) -> RouteAction {
        RouteAction::Local
    }
}

/// Adds node `id` running `stack`, joining through `contact` (a bootstrap
/// peer) if given. Restarts rebuild it the same way (and rejoin).
pub fn add_node(sim: &mut Sim, id: NodeId, contact: Option<NodeId>, stack: &Stack) {
    let stack = stack.clone();
    sim.add_node(id, move |id, _| {
        let mut b = Network::builder(id, Arc::new(NoRoutes(id)));
        if let Some(c) = contact {
            b = b.bootstrap(c, Address::Memory(c.0));
        }
        stack.build(b)
    });
}

/// Adds `n` nodes with random ids to `ids`, each joining through a random
/// node of `ids` added before it, `batch` at a time with `pause` of virtual
/// time after each batch.
pub fn grow(
    sim: &mut Sim,
    rng: &mut Rng,
    ids: &mut Vec<NodeId>,
    n: usize,
    batch: usize,
    pause: Duration,
    stack: &Stack,
) {
    for i in 0..n {
        let id = NodeId(rng.next_u64());
        let contact = rng.choose(ids).copied();
        add_node(sim, id, contact, stack);
        ids.push(id);
        if (i + 1) % batch.max(1) == 0 {
            sim.run_for(pause).expect("step limit");
        }
    }
}

/// The live nodes' active views.
pub fn views(sim: &Sim) -> BTreeMap<NodeId, BTreeSet<NodeId>> {
    sim.node_ids()
        .filter_map(|id| {
            let b = sim.node(id)?.behavior::<membership::Behaviour>()?;
            Some((id, b.active_view().collect()))
        })
        .collect()
}

/// The connected components of the live nodes' active views, largest first.
pub fn components(views: &BTreeMap<NodeId, BTreeSet<NodeId>>) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut sizes = Vec::new();
    for &start in views.keys() {
        if !seen.insert(start) {
            continue;
        }
        let mut size = 1;
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for m in views.get(&n).into_iter().flatten() {
                if views.contains_key(m) && seen.insert(*m) {
                    size += 1;
                    stack.push(*m);
                }
            }
        }
        sizes.push(size);
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

/// Hops of the longest shortest path of the overlay (its diameter),
/// measured by breadth-first search from `samples` nodes.
pub fn diameter(views: &BTreeMap<NodeId, BTreeSet<NodeId>>, samples: usize) -> usize {
    let mut best = 0;
    for &start in views.keys().take(samples) {
        let mut dist = BTreeMap::from([(start, 0usize)]);
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            let d = dist[&n];
            for m in views.get(&n).into_iter().flatten() {
                if views.contains_key(m) && !dist.contains_key(m) {
                    dist.insert(*m, d + 1);
                    queue.push_back(*m);
                }
            }
        }
        best = best.max(dist.values().copied().max().unwrap_or(0));
    }
    best
}

/// Percentile `p` (0–100) of sorted values.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: usize) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
