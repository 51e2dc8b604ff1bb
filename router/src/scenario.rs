//! Routing scenarios on the simulator (feature `sim`): a router of each
//! kind over the same random overlay and seed, measured the same way —
//! state per node, sync traffic, convergence, delivery and stretch of
//! node, key and service messages, and delivery between survivors after a
//! share of the nodes crash at once. `plexus-bench route` prints them; the
//! tests run them small.
//!
//! The overlay is a random connected graph of the given mean degree (what
//! membership builds: random links, ~6 each), dialled at the start; the
//! XOR router adds the links it wants on top. The simulator's idle timeout
//! is 3 s here, standing for a transport with keep-alives that notices a
//! crashed peer within seconds (the QUIC transport's is configurable).

use crate::{dv, kad};
use plexus_network::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus_network::{
    BehaviorAgent, Incoming, Instant, Network, NetworkBehavior, NetworkConfig, NoHandler, NodeId,
    RejectReason, Rng, RouteAction, RouteRule, ServiceId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The service every node's probe listens on.
pub const PROBE: ServiceId = ServiceId(250);
/// The service only the providers run.
pub const PROVIDED: ServiceId = ServiceId(251);

/// A probe message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Tag(u64);

/// What a probe emits: the tag and the links the message crossed.
#[derive(Debug, Clone, Copy)]
struct Got(u64, usize);

/// Emits every message that reaches it.
struct Probe(ServiceId);

impl NetworkBehavior for Probe {
    type Msg = Tag;
    type Handler = NoHandler<Tag>;
    type Event = Got;
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        self.0
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Tag>) {
        let hops = match msg.conn {
            None => 0,
            Some(_) => {
                let t = NetworkConfig::default().default_ttl as usize;
                (t + 1).saturating_sub(msg.ttl as usize)
            }
        };
        agent.emit(Got(msg.msg.0, hops));
    }
}

/// Which router the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// [`dv`]: a route to every node.
    Dv,
    /// [`kad`]: XOR buckets, two-hop greedy.
    Kad,
}

/// What a scenario does. [`Options::new`] gives the values each field
/// documents.
#[derive(Debug, Clone)]
pub struct Options {
    /// The router.
    pub router: Router,
    /// Nodes (random ids).
    pub nodes: usize,
    /// Mean degree of the random overlay dialled at the start. Default 6.
    pub degree: f64,
    /// Seed of the ids, the overlay and the simulation.
    pub seed: u64,
    /// Messages of each rule (node, key) per phase. Default 10,000.
    pub messages: usize,
    /// Senders the messages come from (each one's shortest paths are
    /// computed). Default 100.
    pub sources: usize,
    /// Nodes running [`PROVIDED`]. Default 10.
    pub providers: usize,
    /// Share of nodes crashed at once after convergence (0: none). Default 0.1.
    pub kill: f64,
    /// Sent to survivors this long after the crash. Default 15 s (three of
    /// the XOR router's maintenance periods).
    pub after_kill: Duration,
    /// Longest wait for convergence, virtual. Default 120 s.
    pub settle: Duration,
    /// Window over which sync traffic is measured, starting a minute after
    /// convergence (when the start-up lookups have backed off). Default
    /// 120 s: four of either router's 30 s full refreshes.
    pub steady: Duration,
    /// XOR router settings.
    pub kad: kad::Config,
    /// Distance-vector settings.
    pub dv: dv::Config,
}

impl Options {
    /// The defaults above for `nodes` nodes of `router` with `seed`.
    pub fn new(router: Router, nodes: usize, seed: u64) -> Self {
        Options {
            router,
            nodes,
            degree: 6.0,
            seed,
            messages: 10_000,
            sources: 100,
            providers: 10,
            kill: 0.1,
            after_kill: Duration::from_secs(15),
            settle: Duration::from_secs(120),
            steady: Duration::from_secs(120),
            kad: kad::Config::default(),
            dv: dv::Config::default(),
        }
    }
}

/// Least, median, greatest and mean of a per-node figure.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dist {
    /// Least.
    pub min: usize,
    /// Median.
    pub median: usize,
    /// Greatest.
    pub max: usize,
    /// Mean.
    pub mean: f64,
}

impl Dist {
    fn of(mut v: Vec<usize>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_unstable();
        Dist {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
            mean: v.iter().sum::<usize>() as f64 / v.len() as f64,
        }
    }
}

/// How one batch of messages fared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Sent.
    pub sent: usize,
    /// Arrived at the node they were for (the destination, the live node
    /// XOR-closest to the key, a provider at the least hop distance).
    pub delivered: usize,
    /// Arrived somewhere else.
    pub misdelivered: usize,
    /// Delivered messages by links crossed (index = hops).
    pub hops: Vec<usize>,
    /// Mean links crossed by the delivered ones.
    pub mean_hops: f64,
    /// Mean shortest path, in links, of the same messages over the links
    /// that existed when they were sent.
    pub mean_shortest: f64,
}

impl Delivery {
    /// Mean path ÷ mean shortest path.
    pub fn stretch(&self) -> f64 {
        if self.mean_shortest > 0.0 {
            self.mean_hops / self.mean_shortest
        } else {
            1.0
        }
    }
    /// Delivered ÷ sent.
    pub fn ratio(&self) -> f64 {
        self.delivered as f64 / self.sent.max(1) as f64
    }
}

/// What a scenario measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Edges of the random overlay.
    pub overlay_edges: usize,
    /// Links (connections) per node once converged.
    pub links: Dist,
    /// Routing state entries per node once converged: for `dv`, its routes
    /// plus every route its neighbours advertised to it (what it stores);
    /// for `kad`, [`KadRouter::state_entries`](kad::KadRouter::state_entries).
    pub entries: Dist,
    /// Virtual time from the start until every node routes correctly
    /// (`dv`: a route to every node; `kad`: a link in every non-empty bucket)
    /// and knows a provider. `None`: not within `settle`.
    pub converged: Option<Duration>,
    /// Router bytes per node per second once converged.
    pub sync_bytes_per_node_per_s: f64,
    /// Node-rule messages between random nodes.
    pub node: Delivery,
    /// Closest-key messages to random keys.
    pub key: Delivery,
    /// Service messages (to [`PROVIDED`]), one per source.
    pub service: Delivery,
    /// Nodes crashed.
    pub killed: usize,
    /// Node-rule messages between survivors, sent `after_kill` after the crash.
    pub node_after_kill: Delivery,
    /// Key messages from survivors, sent `after_kill` after the crash.
    pub key_after_kill: Delivery,
}

/// Live nodes, their ids sorted, and the link graph as index lists.
struct Graph {
    ids: Vec<NodeId>,
    adj: Vec<Vec<u32>>,
}

impl Graph {
    fn of(sim: &Sim) -> Graph {
        let ids: Vec<NodeId> = sim.node_ids().filter(|n| sim.is_alive(*n)).collect();
        let index = |n: NodeId| ids.binary_search(&n).ok().map(|i| i as u32);
        let adj = ids
            .iter()
            .map(|id| {
                let mut v: Vec<u32> = sim
                    .node(*id)
                    .map(|n| n.connections().filter_map(|c| index(c.node)).collect())
                    .unwrap_or_default();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        Graph { ids, adj }
    }

    fn index(&self, n: NodeId) -> Option<usize> {
        self.ids.binary_search(&n).ok()
    }

    fn bfs(&self, src: usize) -> Vec<u32> {
        let mut dist = vec![u32::MAX; self.ids.len()];
        dist[src] = 0;
        let mut q = VecDeque::from([src as u32]);
        while let Some(u) = q.pop_front() {
            let d = dist[u as usize] + 1;
            for &v in &self.adj[u as usize] {
                if dist[v as usize] == u32::MAX {
                    dist[v as usize] = d;
                    q.push_back(v);
                }
            }
        }
        dist
    }

    /// The live node XOR-closest to `key`: descend bit by bit through the
    /// sorted ids (those sharing the bits chosen so far are contiguous).
    fn closest(&self, key: u64) -> NodeId {
        let (mut lo, mut hi) = (0, self.ids.len());
        for bit in (0..64).rev() {
            if hi - lo <= 1 {
                break;
            }
            let mask = 1u64 << bit;
            let split = lo + self.ids[lo..hi].partition_point(|n| n.0 & mask == 0);
            if key & mask != 0 {
                if split < hi {
                    lo = split;
                }
            } else if split > lo {
                hi = split;
            }
        }
        self.ids[lo]
    }

    /// The buckets of node `i` that hold live nodes but none of its links.
    fn missing(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let id = self.ids[i];
        let mut have = [false; 64];
        for &j in &self.adj[i] {
            if let Some(b) = kad::bucket_of(id, self.ids[j as usize]) {
                have[b] = true;
            }
        }
        (0..64).filter(move |b| !have[*b] && self.bucket_nonempty(id.0, *b))
    }

    /// Whether some live node other than `x` lies in bucket `b` of `x`.
    fn bucket_nonempty(&self, x: u64, b: usize) -> bool {
        let (lo, hi) = kad::bucket_range(NodeId(x), b);
        let i = self.ids.partition_point(|n| n.0 < lo);
        i < self.ids.len() && self.ids[i].0 <= hi
    }
}

fn build(o: &Options, id: NodeId, provider: bool) -> Network {
    let b = match o.router {
        Router::Dv => {
            let r = Arc::new(dv::DvRouter::new(id));
            Network::builder(id, r.clone()).behavior(dv::Behaviour::new(r, o.dv.clone()))
        }
        Router::Kad => {
            let r = Arc::new(kad::KadRouter::new(id));
            Network::builder(id, r.clone()).behavior(kad::Behaviour::new(r, o.kad.clone()))
        }
    };
    let b = b.behavior(Probe(PROBE));
    let b = if provider {
        b.behavior(Probe(PROVIDED))
    } else {
        b
    };
    b.build().expect("distinct services")
}

/// How many live nodes do not route correctly yet (see [`Report::converged`]).
fn unconverged(sim: &Sim, o: &Options, g: &Graph) -> usize {
    g.ids
        .iter()
        .enumerate()
        .filter(|(i, id)| {
            let (i, id) = (*i, *id);
            let Some(node) = sim.node(*id) else {
                return false;
            };
            if node.router().path_to_service(PROVIDED)
                == RouteAction::Reject(RejectReason::NoService)
            {
                return true;
            }
            match o.router {
                Router::Dv => node.router().routes().len() + 1 < g.ids.len(),
                Router::Kad => g.missing(i).next().is_some(),
            }
        })
        .count()
}

fn entries(sim: &mut Sim, o: &Options, ids: &[NodeId]) -> Dist {
    let mut v = Vec::with_capacity(ids.len());
    for id in ids {
        let n = match o.router {
            Router::Dv => {
                let own = sim.node(*id).map_or(0, |n| n.router().routes().len());
                let adverts = match sim.rpc::<dv::Behaviour>(*id, dv::Request::Neighbours) {
                    Ok(Some(dv::Response::Neighbours(ns))) => {
                        ns.iter().map(|n| n.advertised).sum::<usize>()
                    }
                    _ => 0,
                };
                own + adverts
            }
            Router::Kad => match sim.rpc::<kad::Behaviour>(*id, kad::Request::Status) {
                Ok(Some(kad::Response::Status(s))) => s.entries,
                _ => 0,
            },
        };
        v.push(n);
    }
    Dist::of(v)
}

/// Messages of one rule in flight: tag → (where it must arrive, shortest path).
type Expect = BTreeMap<u64, (Vec<NodeId>, u32)>;

/// Sends `o.messages` node-rule and key messages from `o.sources` random
/// live senders, and one service message per sender; runs 10 s; scores.
fn probe_round(sim: &mut Sim, o: &Options, rng: &mut Rng, next_tag: &mut u64) -> [Delivery; 3] {
    let g = Graph::of(sim);
    let providers: Vec<usize> = g
        .ids
        .iter()
        .enumerate()
        .filter(|(_, id)| {
            sim.node(**id)
                .is_some_and(|n| n.router().path_to_service(PROVIDED) == RouteAction::Local)
        })
        .map(|(i, _)| i)
        .collect();
    let n = g.ids.len();
    if n < 2 {
        return Default::default(); // nobody to send between
    }
    let sources = o.sources.clamp(1, n);
    let per = o.messages.div_ceil(sources);
    let mut expects: [Expect; 3] = Default::default();
    let mut sent = [0usize; 3];
    for _ in 0..sources {
        let s = rng.below(n as u64) as usize;
        let dist = g.bfs(s);
        let src = g.ids[s];
        for _ in 0..per {
            // Node rule: another live node.
            let d = loop {
                let d = rng.below(n as u64) as usize;
                if d != s || n == 1 {
                    break d;
                }
            };
            let tag = *next_tag;
            *next_tag += 1;
            if sim
                .send(src, PROBE, RouteRule::Node(g.ids[d]), &Tag(tag))
                .is_ok()
            {
                expects[0].insert(tag, (vec![g.ids[d]], dist[d]));
            }
            sent[0] += 1;
            // Key rule: a random key.
            let key = rng.next_u64();
            let at = g.closest(key);
            let tag = *next_tag;
            *next_tag += 1;
            if sim
                .send(src, PROBE, RouteRule::Closest(NodeId(key)), &Tag(tag))
                .is_ok()
            {
                let i = g.index(at).expect("live");
                expects[1].insert(tag, (vec![at], dist[i]));
            }
            sent[1] += 1;
        }
        if !providers.is_empty() {
            let best = providers.iter().map(|p| dist[*p]).min().unwrap_or(u32::MAX);
            let nearest: Vec<NodeId> = providers
                .iter()
                .filter(|p| dist[**p] == best)
                .map(|p| g.ids[*p])
                .collect();
            let tag = *next_tag;
            *next_tag += 1;
            if sim
                .send(src, PROVIDED, RouteRule::Service, &Tag(tag))
                .is_ok()
            {
                expects[2].insert(tag, (nearest, best));
            }
            sent[2] += 1;
        }
    }
    sim.run_for(Duration::from_secs(10)).expect("step limit");
    let mut out: [Delivery; 3] = Default::default();
    let mut sums = [(0usize, 0u64); 3];
    for e in sim.take_events() {
        let Some(Got(tag, hops)) = e.event.downcast_ref::<Got>().copied() else {
            continue;
        };
        for k in 0..3 {
            if let Some((at, shortest)) = expects[k].remove(&tag) {
                let d = &mut out[k];
                if at.contains(&e.node) {
                    d.delivered += 1;
                    if d.hops.len() <= hops {
                        d.hops.resize(hops + 1, 0);
                    }
                    d.hops[hops] += 1;
                    sums[k].0 += hops;
                    sums[k].1 += u64::from(shortest);
                } else {
                    d.misdelivered += 1;
                }
            }
        }
    }
    for k in 0..3 {
        out[k].sent = sent[k];
        if out[k].delivered > 0 {
            out[k].mean_hops = sums[k].0 as f64 / out[k].delivered as f64;
            out[k].mean_shortest = sums[k].1 as f64 / out[k].delivered as f64;
        }
    }
    out
}

/// Runs the scenario. `progress` hears each phase as it ends.
pub fn run(o: &Options, progress: impl FnMut(&str)) -> Report {
    run_with(o, progress, |_| {})
}

/// [`run`], and `inspect` sees the converged simulation (before any
/// message is sent): to time the routers' lookups, say.
pub fn run_with(
    o: &Options,
    mut progress: impl FnMut(&str),
    mut inspect: impl FnMut(&Sim),
) -> Report {
    let mut sc = SimConfig::new(o.seed);
    sc.link = LinkConfig::default().with_latency(Duration::from_millis(10));
    sc.idle_timeout = Duration::from_secs(3);
    let mut sim = Sim::with_config(sc);
    sim.set_step_limit(u64::MAX);
    let mut rng = Rng::new(o.seed);
    let mut ids: Vec<NodeId> = (0..o.nodes).map(|_| NodeId(rng.next_u64())).collect();
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len();
    let edges = topology::random_connected(n, o.degree, &mut rng);
    let mut providers = vec![false; n];
    for _ in 0..o.providers.min(n) {
        providers[rng.below(n as u64) as usize] = true;
    }
    for (i, &id) in ids.iter().enumerate() {
        let o2 = o.clone();
        let p = providers[i];
        sim.add_node(id, move |id, _| build(&o2, id, p));
    }
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }
    let mut report = Report {
        nodes: n,
        overlay_edges: edges.len(),
        ..Report::default()
    };
    // Converge.
    // Checking costs a pass over every node: every 500 ms of virtual time
    // up to 20,000 nodes, every 2 s beyond (the convergence time is then
    // known to 2 s).
    let check = if n <= 20_000 {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    };
    while sim.now() < Instant::ZERO + o.settle {
        sim.run_for(check).expect("step limit");
        let g = Graph::of(&sim);
        let left = unconverged(&sim, o, &g);
        log::debug!(
            "route scenario: {left} nodes not converged at {}",
            sim.now()
        );
        if left == 0 {
            report.converged = Some(sim.now().saturating_duration_since(Instant::ZERO));
            break;
        }
    }
    progress("converged");
    inspect(&sim);
    let g = Graph::of(&sim);
    report.links = Dist::of(g.adj.iter().map(Vec::len).collect());
    report.entries = entries(&mut sim, o, &g.ids);
    // Sync traffic, steady state.
    let bytes = |sim: &Sim| {
        let svc = match o.router {
            Router::Dv => dv::SERVICE,
            Router::Kad => kad::SERVICE,
        };
        sim.report()
            .bytes_by_service
            .get(&svc)
            .copied()
            .unwrap_or(0)
    };
    sim.run_for(Duration::from_secs(60)).expect("step limit");
    let (b0, t0) = (bytes(&sim), sim.now());
    sim.run_for(o.steady).expect("step limit");
    let secs = sim.now().saturating_duration_since(t0).as_secs_f64();
    report.sync_bytes_per_node_per_s = (bytes(&sim) - b0) as f64 / n as f64 / secs.max(1e-9);
    progress("steady");
    sim.take_events();
    let mut tag = 0;
    let [node, key, service] = probe_round(&mut sim, o, &mut rng, &mut tag);
    report.node = node;
    report.key = key;
    report.service = service;
    progress("delivered");
    if o.kill > 0.0 {
        let mut order = ids.clone();
        rng.shuffle(&mut order);
        let k = ((n as f64) * o.kill).round() as usize;
        for id in order.iter().take(k) {
            sim.kill(*id);
        }
        report.killed = k;
        sim.run_for(o.after_kill).expect("step limit");
        sim.take_events();
        let [node, key, _] = probe_round(&mut sim, o, &mut rng, &mut tag);
        report.node_after_kill = node;
        report.key_after_kill = key;
        progress("after kill");
    }
    report
}
