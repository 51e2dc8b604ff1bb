//! Scenario helpers for the simulator (feature `sim`): overlays of
//! membership nodes joining through each other, their connectivity, and the
//! dissemination metrics the tests and the benchmark report.
//!
//! Metrics, as the Plumtree paper defines them:
//! - **RMR** (relative message redundancy): whole copies sent ÷ (nodes
//!   reached − 1) − 1; 0 means every node got exactly one copy.
//! - **LDH** (last delivery hop): the most hops any node's first copy took.

use crate::{broadcast, gossip, kv, membership, ping, pubsub};
use plexus_network::sim::Sim;
use plexus_network::{
    Address, Network, NodeId, RejectReason, Rng, RouteAction, RouterTable, ServiceId,
};
use plexus_router::dv;
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
    /// Gossip, if any.
    pub gossip: Option<gossip::Config>,
    /// The distance-vector router, if any (else [`NoRoutes`]).
    pub router: Option<dv::Config>,
    /// The key-value store, if any (it needs the router).
    pub kv: Option<kv::Config>,
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
            gossip: None,
            router: None,
            kv: None,
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
    /// With gossip (of [`gossip::Value`]s).
    pub fn with_gossip(mut self, c: gossip::Config) -> Self {
        self.gossip = Some(c);
        self
    }

    /// With the distance-vector router and the key-value store.
    pub fn with_kv(mut self, router: dv::Config, c: kv::Config) -> Self {
        self.router = Some(router);
        self.kv = Some(c);
        self
    }

    fn build(&self, id: NodeId, contact: Option<NodeId>) -> Network {
        let mut b = match &self.router {
            Some(c) => {
                let router = Arc::new(dv::DvRouter::new(id));
                Network::builder(id, router.clone()).behavior(dv::Behaviour::new(router, c.clone()))
            }
            None => Network::builder(id, Arc::new(NoRoutes(id))),
        };
        if let Some(c) = contact {
            b = b.bootstrap(c, Address::Memory(c.0));
        }
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
        if let Some(c) = &self.gossip {
            b = b.behavior(gossip::Behaviour::<gossip::Value>::new(c.clone()));
        }
        if let Some(c) = &self.kv {
            b = b.behavior(kv::Behaviour::new(c.clone()));
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
    sim.add_node(id, move |id, _| stack.build(id, contact));
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

/// A simulation with links of `latency` ± `jitter` and `loss`.
pub fn sim(seed: u64, latency: Duration, jitter: Duration, loss: f64) -> Sim {
    let mut sc = plexus_network::sim::SimConfig::new(seed);
    sc.link = plexus_network::sim::LinkConfig::default()
        .with_latency(latency)
        .with_jitter(jitter)
        .with_loss(loss);
    Sim::with_config(sc)
}

/// What [`membership_scenario`] measured.
#[derive(Debug, Clone, Default)]
pub struct MembershipReport {
    /// Nodes.
    pub nodes: usize,
    /// Samples of the steady state (one a second).
    pub samples: usize,
    /// The most components any steady-state sample had.
    pub max_components: usize,
    /// Active view sizes at the end of the steady state: min, median, max.
    pub view_min: usize,
    /// Median view size.
    pub view_median: usize,
    /// Largest view.
    pub view_max: usize,
    /// The overlay's diameter (hops), sampled.
    pub diameter: usize,
    /// After half the nodes were killed at once: virtual time until the
    /// survivors were one component again, with no dead neighbour in any
    /// view (`None`: not within the deadline).
    pub heal: Option<Duration>,
    /// The deadline: two shuffle periods.
    pub heal_deadline: Duration,
    /// Views within bounds throughout.
    pub bounded: bool,
}

/// `n` nodes join ten at a time, 100 a second, each through a random node
/// that joined before it; a minute of steady state is sampled every
/// second; then half are killed at once.
pub fn membership_scenario(n: usize, seed: u64) -> MembershipReport {
    let cfg = membership::Config::default();
    let stack = Stack::new(cfg.clone());
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(20),
        0.0,
    );
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        10,
        Duration::from_millis(100),
        &stack,
    );
    sim.run_for(Duration::from_secs(30)).expect("step limit");
    let mut r = MembershipReport {
        nodes: n,
        bounded: true,
        heal_deadline: cfg.shuffle_interval * 2,
        ..MembershipReport::default()
    };
    for _ in 0..60 {
        sim.run_for(Duration::from_secs(1)).expect("step limit");
        let v = views(&sim);
        r.samples += 1;
        r.max_components = r.max_components.max(components(&v).len());
        r.bounded &= v.values().all(|s| s.len() <= cfg.active_size);
    }
    let v = views(&sim);
    let mut sizes: Vec<usize> = v.values().map(|s| s.len()).collect();
    sizes.sort_unstable();
    r.view_min = sizes.first().copied().unwrap_or(0);
    r.view_median = percentile(&sizes, 50);
    r.view_max = sizes.last().copied().unwrap_or(0);
    r.diameter = diameter(&v, 10);
    rng.shuffle(&mut ids);
    for id in &ids[..n / 2] {
        sim.kill(*id);
    }
    let killed_at = sim.now();
    while sim.now() - killed_at < r.heal_deadline {
        sim.run_for(Duration::from_millis(100)).expect("step limit");
        let v = views(&sim);
        r.bounded &= v.values().all(|s| s.len() <= cfg.active_size);
        let clean = v
            .values()
            .all(|s| !s.is_empty() && s.iter().all(|m| sim.is_alive(*m)));
        if clean && components(&v).len() == 1 {
            r.heal = Some(sim.now() - killed_at);
            break;
        }
    }
    r
}

/// Figures of one phase of [`broadcast_scenario`].
#[derive(Debug, Clone, Default)]
pub struct BroadcastPhase {
    /// Messages measured.
    pub messages: usize,
    /// Deliveries ÷ (messages × nodes).
    pub delivery: f64,
    /// Relative message redundancy: whole copies sent ÷ (nodes − 1) − 1,
    /// per message.
    pub rmr: f64,
    /// Last delivery hop: the largest over the messages.
    pub ldh: u16,
    /// Last delivery hop, mean over the messages.
    pub ldh_mean: f64,
    /// Duplicates received per node per message: median over nodes.
    pub dup_median: f64,
    /// Duplicates per node per message: 99th percentile over nodes.
    pub dup_p99: f64,
    /// Delivery latency, median (virtual time).
    pub latency_p50: Duration,
    /// Delivery latency, 99th percentile.
    pub latency_p99: Duration,
    /// Bytes of broadcast frames (whole copies, ids, grafts, prunes) sent
    /// per node per message.
    pub bytes_per_node_msg: f64,
}

/// What [`broadcast_scenario`] measured.
#[derive(Debug, Clone, Default)]
pub struct BroadcastReport {
    /// Nodes.
    pub nodes: usize,
    /// The overlay's diameter (hops), sampled.
    pub diameter: usize,
    /// Nodes that send in the warm phase.
    pub senders: usize,
    /// Messages from senders whose trees have formed (each sent
    /// [`WARM_UP`] before): the steady state.
    pub warm: BroadcastPhase,
    /// Each node's first message: it travels the shared tree.
    pub cold: BroadcastPhase,
    /// With a tenth killed mid-stream: did every survivor deliver every
    /// message? (`None` when not run.)
    pub survivors_all_delivered: Option<bool>,
}

fn broadcast_bytes(sim: &Sim) -> u64 {
    sim.report()
        .bytes_by_service
        .get(&crate::services::BROADCAST)
        .copied()
        .unwrap_or(0)
}

fn send_broadcast(sim: &mut Sim, from: NodeId, i: u64) -> Option<broadcast::MsgId> {
    let payload = bytes::Bytes::from(i.to_be_bytes().to_vec());
    match sim.rpc::<broadcast::Behaviour>(from, broadcast::Request::Broadcast(payload)) {
        Ok(Some(broadcast::Response::Sent(id))) => Some(id),
        _ => None,
    }
}

/// Sends one message from each of `from`, `gap` apart, lets them settle
/// and measures them.
fn broadcast_phase(
    sim: &mut Sim,
    ids: &[NodeId],
    from: &[NodeId],
    gap: Duration,
) -> BroadcastPhase {
    let tree_stats = |sim: &Sim| -> BTreeMap<NodeId, broadcast::TreeStats> {
        ids.iter()
            .filter_map(|id| {
                let t = sim.node(*id)?.behavior::<broadcast::Behaviour>()?.tree()?;
                Some((*id, t.stats()))
            })
            .collect()
    };
    sim.take_events();
    let before = tree_stats(sim);
    let bytes0 = broadcast_bytes(sim);
    let mut sent: BTreeMap<broadcast::MsgId, plexus_network::Instant> = BTreeMap::new();
    for (i, node) in from.iter().enumerate() {
        let at = sim.now();
        if let Some(id) = send_broadcast(sim, *node, 1_000_000 + i as u64) {
            sent.insert(id, at);
        }
        sim.run_for(gap).expect("step limit");
    }
    sim.run_for(Duration::from_secs(10)).expect("step limit");
    let after = tree_stats(sim);
    let n = ids.len();
    let m = sent.len().max(1) as f64;
    let mut latencies = Vec::new();
    let mut ldh: BTreeMap<broadcast::MsgId, u16> = BTreeMap::new();
    let mut delivered = 0usize;
    for e in sim.take_events() {
        if let Ok(ev) = e.event.downcast::<broadcast::Event>() {
            if let Some(t0) = sent.get(&ev.id) {
                delivered += 1;
                latencies.push(e.at - *t0);
                let h = ldh.entry(ev.id).or_default();
                *h = (*h).max(ev.hops);
            }
        }
    }
    latencies.sort_unstable();
    let copies: u64 = ids
        .iter()
        .map(|id| after[id].gossip_sent - before[id].gossip_sent)
        .sum();
    let mut dups: Vec<f64> = ids
        .iter()
        .map(|id| (after[id].duplicates - before[id].duplicates) as f64 / m)
        .collect();
    dups.sort_by(f64::total_cmp);
    BroadcastPhase {
        messages: sent.len(),
        delivery: delivered as f64 / (sent.len() * n).max(1) as f64,
        rmr: copies as f64 / (m * (n as f64 - 1.0)) - 1.0,
        ldh: ldh.values().copied().max().unwrap_or(0),
        ldh_mean: ldh.values().map(|h| f64::from(*h)).sum::<f64>() / m,
        dup_median: percentile(&dups, 50),
        dup_p99: percentile(&dups, 99),
        latency_p50: percentile(&latencies, 50),
        latency_p99: percentile(&latencies, 99),
        bytes_per_node_msg: (broadcast_bytes(sim) - bytes0) as f64 / (n as f64 * m),
    }
}

/// Messages each warm sender sends before it is measured: an origin's
/// tree starts as the shared tree and moves to shortest paths by about a
/// level per message (measured: the fifth is at the origin's eccentricity
/// or one hop more).
pub const WARM_UP: u64 = 5;

/// `n` nodes with membership and broadcast, links of 10–30 ms. `senders`
/// random nodes each broadcast [`WARM_UP`] times (their trees form), then `messages`
/// from random senders, one every 100 ms, are measured (the warm phase);
/// then one message from each of 20 nodes that never sent (the cold
/// phase); then (if `kill`) twenty more with a tenth of the nodes killed
/// after the fifth.
pub fn broadcast_scenario(
    n: usize,
    seed: u64,
    senders: usize,
    messages: usize,
    kill: bool,
) -> BroadcastReport {
    let stack =
        Stack::new(membership::Config::default()).with_broadcast(broadcast::Config::default());
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(20),
        0.0,
    );
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        10,
        Duration::from_millis(10),
        &stack,
    );
    sim.run_for(Duration::from_secs(30)).expect("step limit");
    let mut order = ids.clone();
    rng.shuffle(&mut order);
    let senders = senders.clamp(1, n);
    let (warm_senders, others) = order.split_at(senders);
    for round in 0..WARM_UP {
        for s in warm_senders {
            send_broadcast(&mut sim, *s, round);
            sim.run_for(Duration::from_millis(100)).expect("step limit");
        }
    }
    sim.run_for(Duration::from_secs(5)).expect("step limit");
    let from: Vec<NodeId> = (0..messages)
        .map(|_| *rng.choose(warm_senders).expect("senders"))
        .collect();
    let warm = broadcast_phase(&mut sim, &ids, &from, Duration::from_millis(100));
    let cold_from: Vec<NodeId> = others.iter().take(20).copied().collect();
    let cold = broadcast_phase(&mut sim, &ids, &cold_from, Duration::from_millis(100));
    let mut r = BroadcastReport {
        nodes: n,
        diameter: diameter(&views(&sim), 10),
        senders,
        warm,
        cold,
        survivors_all_delivered: None,
    };
    if kill {
        rng.shuffle(&mut ids);
        let (dead, alive) = ids.split_at(n / 10);
        let mut stream = Vec::new();
        for i in 0..20u64 {
            let from = alive[rng.below(alive.len() as u64) as usize];
            stream.extend(send_broadcast(&mut sim, from, 10_000 + i));
            if i == 4 {
                for d in dead {
                    sim.kill(*d);
                }
            }
            sim.run_for(Duration::from_millis(20)).expect("step limit");
        }
        sim.run_for(Duration::from_secs(30)).expect("step limit");
        let mut got: BTreeSet<(NodeId, broadcast::MsgId)> = BTreeSet::new();
        for e in sim.take_events() {
            let node = e.node;
            if let Ok(ev) = e.event.downcast::<broadcast::Event>() {
                got.insert((node, ev.id));
            }
        }
        r.survivors_all_delivered = Some(
            alive
                .iter()
                .all(|a| stream.iter().all(|m| got.contains(&(*a, *m)))),
        );
    }
    r
}

/// What [`pubsub_scenario`] measured.
#[derive(Debug, Clone, Default)]
pub struct PubsubReport {
    /// Nodes.
    pub nodes: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Publications.
    pub publications: usize,
    /// Deliveries owed: each publication to each subscriber of its topic
    /// that was up throughout.
    pub expected: usize,
    /// Of those, delivered exactly once.
    pub exactly_once: usize,
    /// Deliveries beyond the first.
    pub duplicates: usize,
    /// Delivery latency, median.
    pub latency_p50: Duration,
    /// Delivery latency, 99th percentile.
    pub latency_p99: Duration,
    /// Nodes that carried any publication (a tree member at some time).
    pub carriers: usize,
}

/// `n` nodes, `topics` topics with `per_topic` subscribers each,
/// `publications` from random nodes (one every 50 ms) over links with
/// `loss`; with `churn`, that fraction of the other nodes is killed and
/// restarted in waves during the publications.
pub fn pubsub_scenario(
    n: usize,
    seed: u64,
    topics: usize,
    per_topic: usize,
    publications: usize,
    loss: f64,
    churn: f64,
) -> PubsubReport {
    let stack = Stack::new(membership::Config::default()).with_pubsub(pubsub::Config::default());
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(20),
        loss,
    );
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        10,
        Duration::from_millis(10),
        &stack,
    );
    sim.run_for(Duration::from_secs(20)).expect("step limit");
    let mut pool = ids.clone();
    rng.shuffle(&mut pool);
    let mut subscribers: BTreeMap<pubsub::Topic, Vec<NodeId>> = BTreeMap::new();
    for t in 0..topics {
        let topic = pubsub::Topic::new(&format!("topic-{t}"));
        let subs: Vec<NodeId> = pool.drain(..per_topic.min(pool.len())).collect();
        for s in &subs {
            let _ = sim.rpc::<pubsub::Behaviour>(*s, pubsub::Request::Subscribe(topic));
        }
        subscribers.insert(topic, subs);
    }
    sim.run_for(Duration::from_secs(5)).expect("step limit");
    sim.take_events();
    let churners: Vec<NodeId> = pool
        .iter()
        .copied()
        .take((churn * n as f64).round() as usize)
        .collect();
    let wave = churners.len().div_ceil(2);
    let topic_list: Vec<pubsub::Topic> = subscribers.keys().copied().collect();
    let mut sent: Vec<(broadcast::MsgId, pubsub::Topic, plexus_network::Instant)> = Vec::new();
    for i in 0..publications {
        if !churners.is_empty() {
            // Kill one half, later bring everyone back, alternating halves.
            let phase = i % 40;
            if phase == 5 {
                let half = (i / 40) % 2;
                for c in churners.iter().skip(half * wave).take(wave) {
                    sim.kill(*c);
                }
            } else if phase == 25 {
                for c in &churners {
                    sim.restart(*c);
                }
            }
        }
        let topic = *rng.choose(&topic_list).expect("topics");
        let alive: Vec<NodeId> = ids.iter().copied().filter(|x| sim.is_alive(*x)).collect();
        let from = *rng.choose(&alive).expect("live nodes");
        let at = sim.now();
        let payload = bytes::Bytes::from((i as u64).to_be_bytes().to_vec());
        if let Ok(Some(pubsub::Response::Published(id))) =
            sim.rpc::<pubsub::Behaviour>(from, pubsub::Request::Publish(topic, payload))
        {
            sent.push((id, topic, at));
        }
        sim.run_for(Duration::from_millis(50)).expect("step limit");
    }
    for c in &churners {
        sim.restart(*c);
    }
    sim.run_for(Duration::from_secs(30)).expect("step limit");
    let mut got: BTreeMap<(NodeId, broadcast::MsgId), (u32, plexus_network::Instant)> =
        BTreeMap::new();
    for e in sim.take_events() {
        let node = e.node;
        if let Ok(ev) = e.event.downcast::<pubsub::Event>() {
            let entry = got.entry((node, ev.id)).or_insert((0, e.at));
            entry.0 += 1;
        }
    }
    let mut r = PubsubReport {
        nodes: n,
        subscriptions: subscribers.values().map(Vec::len).sum(),
        publications: sent.len(),
        ..PubsubReport::default()
    };
    let mut latencies = Vec::new();
    for (id, topic, at) in &sent {
        for sub in &subscribers[topic] {
            r.expected += 1;
            if let Some((copies, when)) = got.get(&(*sub, *id)) {
                if *copies == 1 {
                    r.exactly_once += 1;
                }
                r.duplicates += (*copies as usize).saturating_sub(1);
                latencies.push(*when - *at);
            }
        }
    }
    latencies.sort_unstable();
    r.latency_p50 = percentile(&latencies, 50);
    r.latency_p99 = percentile(&latencies, 99);
    r.carriers = ids
        .iter()
        .filter(|id| {
            sim.node(**id)
                .and_then(|n| n.behavior::<pubsub::Behaviour>())
                .is_some_and(|b| b.stats().trees.gossip_sent > 0)
        })
        .count();
    r
}

/// `n` nodes joining one at a time in random order and timing (pauses up
/// to 2 s); then every node broadcasts once. Whether they all joined one
/// overlay and every node delivered every message.
pub fn swarm_scenario(n: usize, seed: u64) -> bool {
    let stack =
        Stack::new(membership::Config::default()).with_broadcast(broadcast::Config::default());
    let mut sim = sim(
        seed,
        Duration::from_millis(5),
        Duration::from_millis(20),
        0.0,
    );
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    for _ in 0..n {
        let pause = Duration::from_millis(rng.below(2000));
        grow(&mut sim, &mut rng, &mut ids, 1, 1, pause, &stack);
    }
    sim.run_for(Duration::from_secs(20)).expect("step limit");
    sim.take_events();
    let joined = components(&views(&sim)).len() == 1;
    let mut sent = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let payload = bytes::Bytes::from(vec![i as u8]);
        if let Ok(Some(broadcast::Response::Sent(m))) =
            sim.rpc::<broadcast::Behaviour>(*id, broadcast::Request::Broadcast(payload))
        {
            sent.push(m);
        }
    }
    sim.run_for(Duration::from_secs(5)).expect("step limit");
    let mut got = BTreeSet::new();
    for e in sim.take_events() {
        let node = e.node;
        if let Ok(ev) = e.event.downcast::<broadcast::Event>() {
            got.insert((node, ev.id));
        }
    }
    joined
        && sent.len() == n
        && ids
            .iter()
            .all(|a| sent.iter().all(|m| got.contains(&(*a, *m))))
}

/// The gossip settings the scenarios use: the simulator's clock.
pub fn gossip_config() -> gossip::Config {
    gossip::Config::default().with_clock(gossip::Clock::Virtual)
}

fn gossip_of(sim: &Sim, id: NodeId) -> Option<&gossip::Behaviour> {
    sim.node(id)?.behavior::<gossip::Behaviour>()
}

/// Applies an update on `node` as its application would.
pub fn gossip_update(sim: &mut Sim, node: NodeId, key: &str, op: gossip::Op) {
    let req = gossip::Request::Update {
        key: key.to_owned(),
        op,
    };
    match sim.rpc::<gossip::Behaviour>(node, req) {
        Ok(Some(gossip::Response::Done)) | Ok(None) => {}
        other => panic!("gossip update on {node}: {other:?}"),
    }
}

/// Deletes `key` on `node` as its application would.
pub fn gossip_delete(sim: &mut Sim, node: NodeId, key: &str) {
    match sim.rpc::<gossip::Behaviour>(node, gossip::Request::Delete(key.to_owned())) {
        Ok(Some(gossip::Response::Done)) | Ok(None) => {}
        other => panic!("gossip delete on {node}: {other:?}"),
    }
}

/// Whether every live node among `ids` holds the same map (equal roots).
pub fn gossip_converged(sim: &Sim, ids: &[NodeId]) -> bool {
    let mut roots = ids
        .iter()
        .filter_map(|id| gossip_of(sim, *id))
        .map(|g| g.store().root());
    match roots.next() {
        Some(first) => roots.all(|r| r == first),
        None => true,
    }
}

/// Sum of the live nodes' gossip counters.
pub fn gossip_totals(sim: &Sim, ids: &[NodeId]) -> gossip::GossipStats {
    let mut t = gossip::GossipStats::default();
    for g in ids.iter().filter_map(|id| gossip_of(sim, *id)) {
        let s = g.stats();
        t.keys += s.keys;
        t.changes += s.changes;
        t.updates_sent += s.updates_sent;
        t.updates_received += s.updates_received;
        t.rounds += s.rounds;
        t.in_sync += s.in_sync;
        t.entropy_messages += s.entropy_messages;
        t.entropy_bytes += s.entropy_bytes;
        t.hops_max = t.hops_max.max(s.hops_max);
        t.entries_sent += s.entries_sent;
        t.entries_received += s.entries_received;
        t.tree_gossip_sent += s.tree_gossip_sent;
        t.tree_duplicates += s.tree_duplicates;
        t.tombstones += s.tombstones;
        t.tombstones_collected += s.tombstones_collected;
        t.refused += s.refused;
    }
    t
}

/// What [`gossip_spread_scenario`] measured.
#[derive(Debug, Clone, Default)]
pub struct SpreadReport {
    /// Nodes.
    pub nodes: usize,
    /// Nodes holding the update at the end.
    pub converged: usize,
    /// Hops of the last node's first copy: the rounds of a push protocol.
    pub rounds: u16,
    /// Frames every kind sent from the update to the end, per node.
    pub messages_per_node: f64,
    /// Virtual time from the update to the last node holding it.
    pub spread_time: Duration,
    /// Wall time to build the nodes and connect them.
    pub setup_wall: Duration,
    /// Wall time from the update to the end.
    pub spread_wall: Duration,
}

/// The gossiper crate's published scenario: `n` nodes, each dialling
/// `fanout` random others (so about 2 × `fanout` neighbours each), links
/// 10–30 ms with `loss`; one update on one node; run until every node
/// holds it. Gossip alone (no membership, no ping): the update's cost.
// Wall time is what this scenario reports; the simulation itself reads
// only its virtual clock.
#[allow(clippy::disallowed_methods)]
pub fn gossip_spread_scenario(n: usize, fanout: usize, loss: f64, seed: u64) -> SpreadReport {
    let started = std::time::Instant::now();
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(20),
        loss,
    );
    let mut rng = Rng::new(seed ^ 0x0060_551b);
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId(rng.next_u64())).collect();
    let cfg = gossip_config()
        .with_neighbours(broadcast::Neighbours::Connections)
        .with_interval(Duration::from_secs(5));
    for id in &ids {
        let cfg = cfg.clone();
        sim.add_node(*id, move |id, _| {
            Network::builder(id, Arc::new(NoRoutes(id)))
                .behavior(gossip::Behaviour::<gossip::Value>::new(cfg.clone()))
                .build()
                .expect("one behaviour")
        });
    }
    for (i, a) in ids.iter().enumerate() {
        for _ in 0..fanout {
            let mut j = rng.below(n as u64 - 1) as usize;
            if j >= i {
                j += 1;
            }
            sim.connect(*a, ids[j]);
        }
    }
    sim.run_for(Duration::from_millis(500)).expect("step limit");
    let setup_wall = started.elapsed();
    let frames = |sim: &Sim| -> u64 {
        ids.iter()
            .filter_map(|id| sim.node(*id))
            .map(|net| net.stats().frames_out)
            .sum()
    };
    let before = frames(&sim);
    let spread = std::time::Instant::now();
    let start = sim.now();
    let writer = ids[rng.below(n as u64) as usize];
    gossip_update(&mut sim, writer, "k", gossip::Op::Increment(1));
    let has = |sim: &Sim| {
        ids.iter()
            .filter(|id| gossip_of(sim, **id).is_some_and(|g| g.get("k").is_some()))
            .count()
    };
    let mut converged = has(&sim);
    let mut last = sim.now();
    while converged < n && sim.now() < start + Duration::from_secs(30) {
        sim.run_for(Duration::from_millis(10)).expect("step limit");
        let c = has(&sim);
        if c > converged {
            last = sim.now();
        }
        converged = c;
    }
    // Let the tree's prunes and the round's last frames go out.
    sim.run_for(Duration::from_millis(200)).expect("step limit");
    SpreadReport {
        nodes: n,
        converged,
        rounds: gossip_totals(&sim, &ids).hops_max,
        messages_per_node: (frames(&sim) - before) as f64 / n as f64,
        spread_time: last.saturating_duration_since(start),
        setup_wall,
        spread_wall: spread.elapsed(),
    }
}

/// What [`gossip_load_scenario`] measured.
#[derive(Debug, Clone, Default)]
pub struct GossipLoadReport {
    /// Nodes.
    pub nodes: usize,
    /// Keys written.
    pub keys: usize,
    /// Whether every node held the same map at the end.
    pub converged: bool,
    /// Per sampled key, time from its write until every node held it:
    /// p50, p99, max.
    pub convergence: [Duration; 3],
    /// Anti-entropy bytes sent per node per period while writes went on.
    pub entropy_bytes_per_node_period: f64,
    /// The same once writes stopped and every node was in sync.
    pub idle_entropy_bytes_per_node_period: f64,
    /// Update bytes (tree frames and the rest) per node per key.
    pub bytes_per_node_per_key: f64,
    /// Wall time.
    pub wall: Duration,
}

/// `n` membership nodes with gossip; `keys` keys written from random
/// nodes at `rate` a second with `loss` on every link (reliable frames are
/// retransmitted, so loss costs time); every hundredth key is watched on
/// every node to time its convergence.
// Wall time is one of the figures reported; the simulation itself reads
// only its virtual clock.
#[allow(clippy::disallowed_methods)]
pub fn gossip_load_scenario(
    n: usize,
    keys: usize,
    rate: u32,
    loss: f64,
    seed: u64,
) -> GossipLoadReport {
    let started = std::time::Instant::now();
    let interval = Duration::from_secs(1);
    let stack = Stack::new(membership::Config::default())
        .with_gossip(gossip_config().with_interval(interval));
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(20),
        loss,
    );
    // A reliable frame's loss costs what QUIC's loss detection takes on
    // these links (about one round trip, 20–60 ms, plus the resend), not
    // the 200 ms default probe timeout.
    let link = sim.config().link;
    sim.set_default_link(link.with_retransmit_timeout(Duration::from_millis(60)));
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        10,
        Duration::from_millis(100),
        &stack,
    );
    sim.run_for(Duration::from_secs(10)).expect("step limit");
    for id in &ids {
        let _ = sim.rpc::<gossip::Behaviour>(*id, gossip::Request::Watch("s/".into()));
    }
    sim.take_events();
    let base = gossip_totals(&sim, &ids);
    let bytes_out = |sim: &Sim| -> u64 {
        ids.iter()
            .filter_map(|id| sim.node(*id))
            .map(|net| net.stats().bytes_out)
            .sum()
    };
    let bytes_before = bytes_out(&sim);
    let write_start = sim.now();
    let gap = Duration::from_secs(1) / rate.max(1);
    let mut written = BTreeMap::new();
    for k in 0..keys {
        let key = if k % 100 == 0 {
            format!("s/{k}")
        } else {
            format!("k/{k}")
        };
        let node = ids[rng.below(n as u64) as usize];
        if k % 100 == 0 {
            written.insert(key.clone(), sim.now());
        }
        gossip_update(
            &mut sim,
            node,
            &key,
            gossip::Op::Assign(bytes::Bytes::from(vec![k as u8; 32])),
        );
        sim.run_for(gap).expect("step limit");
    }
    let write_end = sim.now();
    let deadline = sim.now() + Duration::from_secs(60);
    let converged = sim
        .run_until_cond(deadline, |s| gossip_converged(s, &ids))
        .expect("step limit");
    let busy = gossip_totals(&sim, &ids);
    let periods = write_end
        .saturating_duration_since(write_start)
        .as_secs_f64()
        / interval.as_secs_f64();
    let entropy = (busy.entropy_bytes - base.entropy_bytes) as f64 / n as f64 / periods.max(1.0);
    let bytes_per_key = (bytes_out(&sim) - bytes_before) as f64 / n as f64 / keys.max(1) as f64;
    // Idle: ten periods in sync.
    sim.run_for(Duration::from_secs(1)).expect("step limit");
    let idle_base = gossip_totals(&sim, &ids).entropy_bytes;
    sim.run_for(interval * 10).expect("step limit");
    let idle = (gossip_totals(&sim, &ids).entropy_bytes - idle_base) as f64 / n as f64 / 10.0;
    // Last arrival of each sampled key.
    let mut last: BTreeMap<String, (usize, plexus_network::Instant)> = BTreeMap::new();
    for e in sim.take_events() {
        if let Ok(ev) = e.event.downcast::<gossip::Event>() {
            let l = last.entry(ev.key).or_insert((0, e.at));
            l.0 += 1;
            l.1 = l.1.max(e.at);
        }
    }
    let mut times: Vec<Duration> = written
        .iter()
        .map(|(k, at)| match last.get(k) {
            // Every node but the writer reports it (the writer's own
            // change is an event too).
            Some((count, t)) if *count >= n => t.saturating_duration_since(*at),
            _ => Duration::MAX,
        })
        .collect();
    times.sort();
    GossipLoadReport {
        nodes: n,
        keys,
        converged,
        convergence: [
            percentile(&times, 50),
            percentile(&times, 99),
            times.last().copied().unwrap_or_default(),
        ],
        entropy_bytes_per_node_period: entropy,
        idle_entropy_bytes_per_node_period: idle,
        bytes_per_node_per_key: bytes_per_key,
        wall: started.elapsed(),
    }
}

/// What [`gossip_partition_scenario`] found.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    /// Virtual time from the heal until the overlay was one component
    /// again (membership's part; `None`: not within the deadline).
    pub relink: Option<Duration>,
    /// Virtual time from then until every node held the same map
    /// (gossip's part; `None`: not within the deadline).
    pub heal: Option<Duration>,
    /// Keys that should be deleted but some node holds, as (node, key).
    pub resurrected: Vec<(NodeId, String)>,
    /// Keys that should exist but some node lacks, as (node, key).
    pub missing: Vec<(NodeId, String)>,
    /// Deletes made during the partition.
    pub deletes: usize,
}

/// `n` membership nodes with gossip; keys written; the nodes split into
/// halves for `split`, with writes and deletes on both sides every 500 ms;
/// then healed. Checks every node against what the deletes imply: a key
/// whose latest delete no update was made on top of (by a writer that
/// had seen it) is gone everywhere; every other key written is present.
pub fn gossip_partition_scenario(n: usize, split: Duration, seed: u64) -> PartitionReport {
    let interval = Duration::from_secs(1);
    let stack = Stack::new(membership::Config::default())
        .with_gossip(gossip_config().with_interval(interval));
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(10),
        0.0,
    );
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        5,
        Duration::from_millis(100),
        &stack,
    );
    sim.run_for(Duration::from_secs(5)).expect("step limit");
    let keys: Vec<String> = (0..16).map(|k| format!("k{k}")).collect();
    // Per key: the incarnation each write left on its writer, and whether
    // it was a delete. A key ends deleted iff its highest incarnation is a
    // delete's and no update was made on top of it.
    let mut ops: BTreeMap<String, Vec<(gossip::Hlc, bool)>> = BTreeMap::new();
    let incarnation = |sim: &Sim, node: NodeId, key: &str| {
        gossip_of(sim, node)
            .and_then(|g| g.store().entry(key))
            .map(|e| e.incarnation)
            .unwrap_or_default()
    };
    for k in &keys {
        let node = ids[rng.below(n as u64) as usize];
        gossip_update(&mut sim, node, k, gossip::Op::Add(1));
        ops.entry(k.clone())
            .or_default()
            .push((incarnation(&sim, node, k), false));
        sim.run_for(Duration::from_millis(20)).expect("step limit");
    }
    sim.run_for(Duration::from_secs(2)).expect("step limit");
    let mut shuffled = ids.clone();
    rng.shuffle(&mut shuffled);
    let (a, b) = shuffled.split_at(n / 2);
    let sides = [a.to_vec(), b.to_vec()];
    sim.partition(&sides);
    let end = sim.now() + split;
    let mut deletes = 0;
    while sim.now() < end {
        for members in &sides {
            let node = members[rng.below(members.len() as u64) as usize];
            let key = &keys[rng.below(keys.len() as u64) as usize];
            let delete = rng.below(3) == 0;
            if delete {
                gossip_delete(&mut sim, node, key);
                deletes += 1;
            } else {
                gossip_update(&mut sim, node, key, gossip::Op::Add(1));
            }
            ops.entry(key.clone())
                .or_default()
                .push((incarnation(&sim, node, key), delete));
            sim.run_for(Duration::from_millis(1)).expect("step limit");
        }
        sim.run_for(Duration::from_millis(500)).expect("step limit");
    }
    sim.heal();
    let healed_at = sim.now();
    let deadline = healed_at + Duration::from_secs(120);
    // The overlay first: membership makes the nodes one component again.
    let bridged = |s: &Sim| components(&views(s)).len() == 1;
    let linked = sim.run_until_cond(deadline, bridged).expect("step limit");
    let relinked_at = sim.now();
    let done = linked
        && sim
            .run_until_cond(deadline, |s| gossip_converged(s, &ids))
            .expect("step limit");
    let heal = done.then(|| sim.now().saturating_duration_since(relinked_at));
    let relink = linked.then(|| relinked_at.saturating_duration_since(healed_at));
    // A few more periods, then check every node.
    sim.run_for(interval * 3).expect("step limit");
    let mut report = PartitionReport {
        heal,
        relink,
        deletes,
        ..PartitionReport::default()
    };
    for (key, list) in &ops {
        let top = list.iter().map(|o| o.0).max().unwrap_or_default();
        let gone =
            list.iter().any(|o| o.1 && o.0 == top) && !list.iter().any(|o| !o.1 && o.0 == top);
        for id in &ids {
            let present = gossip_of(&sim, *id).is_some_and(|g| g.get(key).is_some());
            if gone && present {
                report.resurrected.push((*id, key.to_string()));
            }
            if !gone && !present {
                report.missing.push((*id, key.to_string()));
            }
        }
    }
    report
}

/// The kv settings the scenarios use: the simulator's clock, samples kept.
pub fn kv_config() -> kv::Config {
    kv::Config::default()
        .with_clock(kv::Clock::Virtual)
        .with_samples(1 << 20)
}

/// The overlay the kv scenarios run: membership, ping (1 s, 4 s timeout),
/// the distance-vector router and kv.
pub fn kv_stack(kv: kv::Config) -> Stack {
    let mut s = Stack::new(membership::Config::default()).with_kv(dv::Config::default(), kv);
    s.ping = Some(
        ping::Config::default()
            .with_interval(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(4))
            .with_emit_rtt(false),
    );
    s
}

/// `n` nodes of `stack` (links 10 ± 10 ms, no step limit: hours of a few
/// hundred nodes' routing traffic are billions of items), grown 20 at a
/// time, then run until every router reaches every node (at most 600 s;
/// the last value says whether they did).
pub fn kv_overlay(n: usize, seed: u64, stack: &Stack) -> (Sim, Vec<NodeId>, Rng, bool) {
    let mut sim = sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(10),
        0.0,
    );
    sim.set_step_limit(u64::MAX);
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        20,
        Duration::from_millis(200),
        stack,
    );
    let until = sim.now() + Duration::from_secs(600);
    let routed = sim
        .run_until_cond(until, |s| kv_routed(s, &ids))
        .expect("step limit");
    (sim, ids, rng, routed)
}

/// Whether every live node among `ids` has a route to every other.
pub fn kv_routed(sim: &Sim, ids: &[NodeId]) -> bool {
    let live = ids.iter().filter(|i| sim.is_alive(**i)).count();
    ids.iter()
        .filter_map(|i| sim.node(*i)?.behavior::<kv::Behaviour>())
        .all(|k| k.nodes().len() == live)
}

#[derive(Debug, Clone)]
enum KvOp {
    Put(bytes::Bytes),
    Get(Option<bytes::Bytes>),
    Delete,
}

/// Drives kv operations through a simulation as applications would, and
/// checks what they return.
#[derive(Debug, Default)]
pub struct KvDriver {
    pending: Vec<(NodeId, plexus_network::RpcId, String, KvOp, bool)>,
    /// Per key, the last acknowledged write: its value (`None`: deleted)
    /// and version.
    pub acked: BTreeMap<String, (Option<bytes::Bytes>, kv::Hlc)>,
    writing: BTreeMap<String, usize>,
    /// Writes acknowledged / failed.
    pub writes: [u64; 2],
    /// Gets checked against the last acknowledged write: right, wrong
    /// (another value, or none), failed (an error).
    pub gets: [u64; 3],
    /// The first few wrong gets: key, expected, got.
    pub wrong: Vec<(String, Option<bytes::Bytes>, Option<bytes::Bytes>)>,
    /// Wrong gets that returned a value where the last acknowledged write
    /// was a delete (a deleted key back), and the rest.
    pub wrong_kinds: [u64; 2],
    /// Keys whose last write failed: it may or may not have taken effect,
    /// so their gets are not checked until a write is acknowledged again.
    pub uncertain: BTreeSet<String>,
    /// Errors by text.
    pub errors: BTreeMap<String, u64>,
}

impl KvDriver {
    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A write of `key` starts: gets of it already in flight may see
    /// either value, so they are not checked.
    fn overlap(&mut self, key: &str) {
        for p in self.pending.iter_mut() {
            if p.2 == key && matches!(p.3, KvOp::Get(_)) {
                p.4 = false;
            }
        }
    }

    /// Starts a put on `node`.
    pub fn put(&mut self, sim: &mut Sim, node: NodeId, key: &str, value: bytes::Bytes) {
        self.overlap(key);
        let req = kv::Request::put(key, value.clone());
        if let Some(Ok(id)) = sim.rpc_start::<kv::Behaviour>(node, req) {
            *self.writing.entry(key.to_owned()).or_default() += 1;
            self.pending
                .push((node, id, key.to_owned(), KvOp::Put(value), true));
        }
    }

    /// Starts a delete on `node`.
    pub fn delete(&mut self, sim: &mut Sim, node: NodeId, key: &str) {
        self.overlap(key);
        if let Some(Ok(id)) = sim.rpc_start::<kv::Behaviour>(node, kv::Request::delete(key)) {
            *self.writing.entry(key.to_owned()).or_default() += 1;
            self.pending
                .push((node, id, key.to_owned(), KvOp::Delete, true));
        }
    }

    /// Starts a get on `node`; it is checked unless a write of the key is
    /// in flight.
    pub fn get(&mut self, sim: &mut Sim, node: NodeId, key: &str, quorum: bool) {
        let check =
            self.writing.get(key).copied().unwrap_or(0) == 0 && !self.uncertain.contains(key);
        let expect = self.acked.get(key).and_then(|(v, _)| v.clone());
        let req = kv::Request::Get {
            key: key.to_owned(),
            quorum,
        };
        if let Some(Ok(id)) = sim.rpc_start::<kv::Behaviour>(node, req) {
            self.pending
                .push((node, id, key.to_owned(), KvOp::Get(expect), check));
        }
    }

    /// Collects the answers that came; operations of dead nodes are
    /// dropped (their application died with them).
    pub fn poll(&mut self, sim: &mut Sim) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let (node, id, key, op, check) = p;
            if !sim.is_alive(node) {
                if !matches!(op, KvOp::Get(_)) {
                    self.end_write(&key);
                }
                continue;
            }
            let Some(answer) = sim.take_answer::<Result<kv::Reply, kv::KvError>>(node, id) else {
                self.pending.push((node, id, key, op, check));
                continue;
            };
            let result = answer.unwrap_or_else(|e| {
                Err(kv::KvError::Call(crate::rpc::CallError::Refused(
                    e.to_string(),
                )))
            });
            match (op, result) {
                // Superseded at once by a newer write (one that failed but
                // took effect somewhere): the key's value is not known.
                (KvOp::Put(_) | KvOp::Delete, Ok(kv::Reply::Written { newer: Some(_), .. })) => {
                    self.writes[0] += 1;
                    self.end_write(&key);
                    self.uncertain.insert(key.clone());
                }
                (KvOp::Put(v), Ok(kv::Reply::Written { version, .. })) => {
                    self.ack(&key, Some(v), version);
                }
                (KvOp::Delete, Ok(kv::Reply::Written { version, .. })) => {
                    self.ack(&key, None, version);
                }
                (KvOp::Put(_) | KvOp::Delete, r) => {
                    self.writes[1] += 1;
                    self.end_write(&key);
                    self.uncertain.insert(key.clone());
                    *self.errors.entry(format!("write: {r:?}")).or_default() += 1;
                }
                (KvOp::Get(expect), Ok(reply)) => {
                    if check {
                        let got = reply.value().cloned();
                        if got == expect {
                            self.gets[0] += 1;
                        } else {
                            self.gets[1] += 1;
                            self.wrong_kinds[usize::from(expect.is_some())] += 1;
                            if self.wrong.len() < 10 {
                                self.wrong.push((key, expect, got));
                            }
                        }
                    }
                }
                (KvOp::Get(_), Err(e)) => {
                    self.gets[2] += 1;
                    *self.errors.entry(format!("get: {e}")).or_default() += 1;
                }
            }
        }
    }

    fn ack(&mut self, key: &str, v: Option<bytes::Bytes>, version: kv::Hlc) {
        self.writes[0] += 1;
        self.end_write(key);
        self.uncertain.remove(key);
        let e = self
            .acked
            .entry(key.to_owned())
            .or_insert((None, kv::Hlc::default()));
        if version >= e.1 {
            *e = (v, version);
        }
    }

    fn end_write(&mut self, key: &str) {
        if let Some(n) = self.writing.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.writing.remove(key);
            }
        }
    }

    /// Runs the simulation in steps of `tick` until nothing is in flight
    /// (or `limit` passes).
    pub fn drain(&mut self, sim: &mut Sim, tick: Duration, limit: Duration) {
        let end = sim.now() + limit;
        while !self.pending.is_empty() && sim.now() < end {
            sim.run_for(tick).expect("step limit");
            self.poll(sim);
        }
    }
}

/// Per key with an acknowledged write: how many live nodes hold that
/// version or a newer one. Index i counts keys with i replicas (the last
/// bucket: that many or more).
pub fn kv_replicas(sim: &Sim, ids: &[NodeId], d: &KvDriver) -> [u64; 6] {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for k in ids
        .iter()
        .filter_map(|i| sim.node(*i)?.behavior::<kv::Behaviour>())
    {
        for (key, rec) in k.store().iter() {
            if let Some((_, v)) = d.acked.get(key) {
                if rec.version >= *v {
                    *count.entry(key.as_str()).or_default() += 1;
                }
            }
        }
    }
    let mut hist = [0u64; 6];
    for key in d.acked.keys() {
        let c = count.get(key.as_str()).copied().unwrap_or(0);
        hist[c.min(5)] += 1;
    }
    hist
}

/// Totals of the live nodes' kv counters.
pub fn kv_totals(sim: &Sim, ids: &[NodeId]) -> kv::KvStats {
    let mut t = kv::KvStats::default();
    for k in ids
        .iter()
        .filter_map(|i| sim.node(*i)?.behavior::<kv::Behaviour>())
    {
        let s = k.stats();
        t.records += s.records;
        t.coordinated_reads += s.coordinated_reads;
        t.coordinated_writes += s.coordinated_writes;
        t.reads_forwarded += s.reads_forwarded;
        t.read_repairs += s.read_repairs;
        t.digests_sent += s.digests_sent;
        t.records_repaired += s.records_repaired;
        t.repair_bytes += s.repair_bytes;
        t.handed_over += s.handed_over;
        t.refused_full += s.refused_full;
    }
    t
}

/// Moves the kv samples of `nodes` into `into`.
fn collect_samples(sim: &mut Sim, nodes: &[NodeId], into: &mut Vec<kv::Sample>) {
    for id in nodes {
        let got = sim.with_node(*id, |net, _| {
            net.behavior_mut::<kv::Behaviour>()
                .map(|k| k.take_samples())
        });
        into.extend(got.flatten().into_iter().flatten());
    }
}

/// What [`kv_churn_scenario`] measured.
#[derive(Debug, Clone, Default)]
pub struct KvChurnReport {
    /// Nodes at any time.
    pub nodes: usize,
    /// Keys.
    pub keys: usize,
    /// Nodes killed.
    pub kills: usize,
    /// Nodes joined.
    pub joins: usize,
    /// Per sample: virtual seconds since churn began, and the replicas
    /// histogram ([`kv_replicas`]).
    pub samples: Vec<(u64, [u64; 6])>,
    /// The lowest share of keys with at least two live replicas over all
    /// samples.
    pub min_two_replicas: f64,
    /// Writes acknowledged / failed.
    pub writes: [u64; 2],
    /// Gets right / wrong / failed.
    pub gets: [u64; 3],
    /// A few wrong gets.
    pub wrong: Vec<(String, Option<bytes::Bytes>, Option<bytes::Bytes>)>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Put latency p50, p99.
    pub put_latency: [Duration; 2],
    /// Get latency p50, p99.
    pub get_latency: [Duration; 2],
    /// Gets by hops beyond the router's path to the coordinator (index 0:
    /// none, 1: one more, 2: two or more) and by total hops (0..=15).
    pub extra_hops: [u64; 3],
    /// Gets by hops.
    pub hops: [u64; 16],
    /// Repair bytes sent per node per hour during churn.
    pub repair_bytes_per_node_hour: f64,
    /// Wall time.
    pub wall: Duration,
}

/// `n` nodes with kv; `keys` keys put from random nodes; then `hours` of
/// churn at `churn` × n nodes per hour (half killed, half joined, at
/// random), while gets (`gets_per_s`) and overwrites (`puts_per_s`) go on
/// from random live nodes; the replicas of every key counted every
/// `sample`.
// Wall time is one of the figures reported; the simulation itself reads
// only its virtual clock.
#[allow(clippy::disallowed_methods)]
#[allow(clippy::too_many_arguments)]
pub fn kv_churn_scenario(
    n: usize,
    keys: usize,
    hours: f64,
    churn: f64,
    gets_per_s: f64,
    puts_per_s: f64,
    sample: Duration,
    seed: u64,
) -> KvChurnReport {
    let started = std::time::Instant::now();
    let stack = kv_stack(kv_config());
    let (mut sim, mut ids, mut rng, routed) = kv_overlay(n, seed, &stack);
    log::info!("kv churn: {n} nodes routed={routed} at {}", sim.now());
    let mut d = KvDriver::default();
    let tick = Duration::from_millis(50);
    for k in 0..keys {
        while d.in_flight() >= 256 {
            sim.run_for(tick).expect("step limit");
            d.poll(&mut sim);
        }
        let node = ids[rng.below(ids.len() as u64) as usize];
        d.put(
            &mut sim,
            node,
            &format!("key-{k}"),
            bytes::Bytes::from(format!("v0-{k}")),
        );
    }
    d.drain(&mut sim, tick, Duration::from_secs(120));
    log::info!(
        "kv churn: {} keys put ({:?}) at {}",
        d.acked.len(),
        d.writes,
        sim.now()
    );
    for id in &ids {
        sim.with_node(*id, |net, _| {
            net.behavior_mut::<kv::Behaviour>()
                .map(|k| k.take_samples())
        });
    }
    let repair0 = kv_totals(&sim, &ids).repair_bytes;
    let mut repaired_by_dead = 0u64;
    let t0 = sim.now();
    let end = t0 + Duration::from_secs_f64(hours * 3600.0);
    let churn_gap = Duration::from_secs_f64(3600.0 / (churn * n as f64).max(1e-9));
    let mut next_churn = t0 + churn_gap;
    let mut next_sample = t0;
    let get_gap = Duration::from_secs_f64(1.0 / gets_per_s.max(1e-9));
    let put_gap = Duration::from_secs_f64(1.0 / puts_per_s.max(1e-9));
    let (mut next_get, mut next_put) = (t0, t0);
    let mut report = KvChurnReport {
        nodes: n,
        keys,
        ..KvChurnReport::default()
    };
    let mut samples = Vec::new();
    let mut kill = true;
    let mut ticks = 0u64;
    let mut live: Vec<NodeId> = ids.clone();
    let key_names: Vec<String> = d.acked.keys().cloned().collect();
    while sim.now() < end {
        let now = sim.now();
        if now >= next_sample {
            let h = kv_replicas(&sim, &live, &d);
            report
                .samples
                .push((now.saturating_duration_since(t0).as_secs(), h));
            next_sample = now + sample;
        }
        if now >= next_churn {
            if kill && live.len() > 4 {
                let i = rng.below(live.len() as u64) as usize;
                let id = live.swap_remove(i);
                if let Some(k) = sim.node(id).and_then(|n| n.behavior::<kv::Behaviour>()) {
                    repaired_by_dead += k.stats().repair_bytes;
                }
                collect_samples(&mut sim, &[id], &mut samples);
                sim.kill(id);
                report.kills += 1;
            } else {
                let id = NodeId(rng.next_u64());
                let contact = live[rng.below(live.len() as u64) as usize];
                add_node(&mut sim, id, Some(contact), &stack);
                live.push(id);
                ids.push(id);
                report.joins += 1;
            }
            kill = !kill;
            next_churn += churn_gap;
        }
        while next_get <= now && !key_names.is_empty() {
            let key = &key_names[rng.below(key_names.len() as u64) as usize];
            let node = live[rng.below(live.len() as u64) as usize];
            d.get(&mut sim, node, key, false);
            next_get += get_gap;
        }
        while next_put <= now && !key_names.is_empty() {
            let key = key_names[rng.below(key_names.len() as u64) as usize].clone();
            let node = live[rng.below(live.len() as u64) as usize];
            let v = bytes::Bytes::from(format!("v{}-{key}", now.as_millis()));
            d.put(&mut sim, node, &key, v);
            next_put += put_gap;
        }
        sim.run_for(tick).expect("step limit");
        d.poll(&mut sim);
        ticks += 1;
        if ticks % 200 == 0 {
            collect_samples(&mut sim, &live, &mut samples);
        }
    }
    collect_samples(&mut sim, &live, &mut samples);
    d.drain(&mut sim, tick, Duration::from_secs(60));
    let h = kv_replicas(&sim, &live, &d);
    report
        .samples
        .push((sim.now().saturating_duration_since(t0).as_secs(), h));
    report.min_two_replicas = report
        .samples
        .iter()
        .map(|(_, h)| {
            let total: u64 = h.iter().sum();
            (total - h[0] - h[1]) as f64 / total.max(1) as f64
        })
        .fold(1.0, f64::min);
    let mut put_l: Vec<Duration> = samples
        .iter()
        .filter(|s| s.op == kv::OpKind::Put && s.ok)
        .map(|s| s.latency)
        .collect();
    let mut get_l: Vec<Duration> = samples
        .iter()
        .filter(|s| s.op == kv::OpKind::Get && s.ok)
        .map(|s| s.latency)
        .collect();
    put_l.sort();
    get_l.sort();
    report.put_latency = [percentile(&put_l, 50), percentile(&put_l, 99)];
    report.get_latency = [percentile(&get_l, 50), percentile(&get_l, 99)];
    for s in samples.iter().filter(|s| s.op == kv::OpKind::Get && s.ok) {
        if let (Some(h), Some(p)) = (s.hops, s.path) {
            report.hops[usize::from(h).min(15)] += 1;
            report.extra_hops[usize::from(h.saturating_sub(p)).min(2)] += 1;
        }
    }
    let repair = kv_totals(&sim, &live).repair_bytes + repaired_by_dead - repair0;
    report.repair_bytes_per_node_hour = repair as f64 / n as f64 / hours.max(1e-9);
    report.writes = d.writes;
    report.gets = d.gets;
    report.wrong = d.wrong.clone();
    report.errors = d.errors.clone();
    report.wall = started.elapsed();
    report
}

/// What [`kv_partition_scenario`] found.
#[derive(Debug, Clone, Default)]
pub struct KvPartitionReport {
    /// Nodes.
    pub nodes: usize,
    /// Keys raced on.
    pub keys: usize,
    /// Writes acknowledged on side A and side B during the partition.
    pub acked: [u64; 2],
    /// Of the keys, those whose newest acknowledged write was a delete.
    pub deleted: usize,
    /// How long after the split each side's routers reached exactly their
    /// own side (the partition was real for routing).
    pub sides_apart: Option<Duration>,
    /// From the heal until every node's router reached every other.
    pub routes_whole: Option<Duration>,
    /// From then until every key's replica set held one version, the
    /// newest anywhere.
    pub agreed: Option<Duration>,
    /// The repair interval the nodes ran.
    pub repair_interval: Duration,
    /// Keys whose agreed version is not the newest acknowledged write.
    pub not_newest: usize,
    /// Keys whose newest acknowledged write is a delete but a get returned
    /// a value.
    pub resurrected: usize,
    /// Keys whose newest acknowledged write is a put but a get returned
    /// another value or none.
    pub lost: usize,
    /// Wall time.
    pub wall: Duration,
}

/// The version every member of `key`'s replica set (among `live`) holds,
/// if they agree and no other live node holds a newer one.
fn kv_agreed(sim: &Sim, live: &BTreeSet<NodeId>, key: &str) -> Option<kv::Hlc> {
    let set = kv::closest(live, kv::key_id(key), 3);
    let version = |id: &NodeId| {
        sim.node(*id)?
            .behavior::<kv::Behaviour>()?
            .store()
            .get(key)
            .map(|r| r.version)
    };
    let first = version(set.first()?)?;
    if !set.iter().all(|id| version(id) == Some(first)) {
        return None;
    }
    Some(first)
}

/// `n` nodes with kv; `keys` keys put; the network split into halves for
/// `split`; on each side one writer overwrites every key and deletes a
/// tenth of them (the two writers race: each key is written on both
/// sides); healed. Measures how long after the routes are whole every
/// key's replicas agree, and whether the newest write won everywhere (no
/// deleted key back, none lost).
// Wall time is one of the figures reported; the simulation itself reads
// only its virtual clock.
#[allow(clippy::disallowed_methods)]
pub fn kv_partition_scenario(
    n: usize,
    keys: usize,
    split: Duration,
    seed: u64,
) -> KvPartitionReport {
    let started = std::time::Instant::now();
    let config = kv_config();
    let repair_interval = Duration::from_secs(30);
    let stack = kv_stack(config.with_repair_interval(repair_interval));
    let (mut sim, ids, mut rng, _) = kv_overlay(n, seed, &stack);
    let names: Vec<String> = (0..keys).map(|k| format!("race-{k}")).collect();
    let mut d = KvDriver::default();
    let tick = Duration::from_millis(50);
    for key in &names {
        while d.in_flight() >= 256 {
            sim.run_for(tick).expect("step limit");
            d.poll(&mut sim);
        }
        let node = ids[rng.below(ids.len() as u64) as usize];
        d.put(&mut sim, node, key, bytes::Bytes::from_static(b"before"));
    }
    d.drain(&mut sim, tick, Duration::from_secs(60));
    // Split into random halves; wait until each side routes within itself.
    let mut shuffled = ids.clone();
    rng.shuffle(&mut shuffled);
    let (a, b) = shuffled.split_at(n / 2);
    let (a, b) = (a.to_vec(), b.to_vec());
    sim.partition(&[a.clone(), b.clone()]);
    let split_end = sim.now() + split;
    let side_routed = |s: &Sim, side: &[NodeId]| {
        side.iter()
            .filter_map(|i| s.node(*i)?.behavior::<kv::Behaviour>())
            .all(|k| k.nodes().len() == side.len())
    };
    let split_at = sim.now();
    let until = sim.now() + split / 2;
    let apart = sim
        .run_until_cond(until, |s| side_routed(s, &a) && side_routed(s, &b))
        .expect("step limit");
    let sides_apart = apart.then(|| sim.now().saturating_duration_since(split_at));
    // The race: both writers overwrite every key, alternating which side
    // goes first; each deletes a tenth of the keys after its write.
    let mut sides = [KvDriver::default(), KvDriver::default()];
    let writers = [a[0], b[0]];
    for (i, key) in names.iter().enumerate() {
        let first = i % 2;
        for s in [first, 1 - first] {
            while sides[s].in_flight() >= 128 {
                sim.run_for(tick).expect("step limit");
                sides[0].poll(&mut sim);
                sides[1].poll(&mut sim);
            }
            let v = bytes::Bytes::from(format!("{}-{i}", ["a", "b"][s]));
            sides[s].put(&mut sim, writers[s], key, v);
        }
        sim.run_for(Duration::from_millis(2)).expect("step limit");
    }
    for s in &mut sides {
        s.drain(&mut sim, tick, Duration::from_secs(60));
    }
    for (i, key) in names.iter().enumerate() {
        if i % 10 == 3 {
            sides[0].delete(&mut sim, writers[0], key);
        } else if i % 10 == 7 {
            sides[1].delete(&mut sim, writers[1], key);
        }
    }
    for s in &mut sides {
        s.drain(&mut sim, tick, Duration::from_secs(60));
    }
    if sim.now() < split_end {
        sim.run_until(split_end).expect("step limit");
    }
    sim.heal();
    let healed = sim.now();
    let until = healed + Duration::from_secs(600);
    let whole = sim
        .run_until_cond(until, |s| kv_routed(s, &ids))
        .expect("step limit");
    let whole_at = sim.now();
    // The newest acknowledged write of each key, either side.
    let mut newest: BTreeMap<&str, (Option<bytes::Bytes>, kv::Hlc)> = BTreeMap::new();
    for s in &sides {
        for (k, (v, ver)) in &s.acked {
            let e = newest
                .entry(k.as_str())
                .or_insert((None, kv::Hlc::default()));
            if *ver > e.1 {
                *e = (v.clone(), *ver);
            }
        }
    }
    let live: BTreeSet<NodeId> = ids.iter().copied().collect();
    let mut agreed = None;
    let deadline = whole_at + repair_interval * 4;
    while sim.now() < deadline {
        if names.iter().all(|k| kv_agreed(&sim, &live, k).is_some()) {
            agreed = Some(sim.now().saturating_duration_since(whole_at));
            break;
        }
        sim.run_for(Duration::from_millis(500)).expect("step limit");
    }
    let mut report = KvPartitionReport {
        nodes: n,
        keys,
        acked: [sides[0].writes[0], sides[1].writes[0]],
        sides_apart,
        routes_whole: whole.then(|| whole_at.saturating_duration_since(healed)),
        agreed,
        repair_interval,
        wall: Duration::ZERO,
        ..KvPartitionReport::default()
    };
    let mut check = KvDriver::default();
    for key in &names {
        let Some((value, version)) = newest.get(key.as_str()).cloned() else {
            continue;
        };
        if value.is_none() {
            report.deleted += 1;
        }
        if kv_agreed(&sim, &live, key) != Some(version) {
            report.not_newest += 1;
        }
        check.acked.insert(key.clone(), (value, version));
        let reader = ids[rng.below(ids.len() as u64) as usize];
        check.get(&mut sim, reader, key, false);
        while check.in_flight() >= 256 {
            sim.run_for(tick).expect("step limit");
            check.poll(&mut sim);
        }
    }
    check.drain(&mut sim, tick, Duration::from_secs(60));
    report.resurrected = check.wrong_kinds[0] as usize;
    report.lost = (check.wrong_kinds[1] + check.gets[2]) as usize;
    report.wall = started.elapsed();
    report
}
