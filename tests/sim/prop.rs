//! Property: over any seed and any small connected topology, with loss and
//! jitter on every link, every message sent by node rule or by key reaches
//! exactly the node it should, exactly once — and running the same case
//! twice gives the same trace, byte for byte, although every node draws
//! from its RNG (a wanderer behaviour walks random neighbours on random
//! timers) and no factory seeds its node.

use crate::common::*;
use plexus::router::StaticRouter;
use plexus::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus::{
    BehaviorAgent, ConnectionInfo, Incoming, Network, NetworkBehavior, NoHandler, NodeId, Rng,
    RouteRule, ServiceId,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Walks: on start and on each timer (random delay), sends a counter to a
/// random neighbour; forwards what it receives, counter + 1, to another.
struct Wanderer;

impl NetworkBehavior for Wanderer {
    type Msg = u32;
    type Handler = NoHandler<u32>;
    type Event = ();
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        ServiceId(50)
    }
    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let d = 1 + agent.rng().below(500);
        agent.schedule_after(Duration::from_millis(d), 0);
    }
    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, _: u64) {
        walk(agent, 0);
        let d = 100 + agent.rng().below(900);
        agent.schedule_after(Duration::from_millis(d), 0);
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<u32>) {
        if msg.msg < 5 {
            walk(agent, msg.msg + 1);
        }
    }
}

fn walk(agent: &mut BehaviorAgent<'_, Wanderer>, n: u32) {
    let conns: Vec<ConnectionInfo> = agent.connections().copied().collect();
    if let Some(c) = agent.rng().choose(&conns).copied() {
        agent.send_to_conn(c.conn, n);
    }
}

/// Runs one case; returns (trace hash, deliveries by tag as (node, count)).
fn run(
    seed: u64,
    n: usize,
    degree: f64,
    sends: &[(usize, usize, bool)],
) -> (u64, Vec<(NodeId, u32)>, Vec<NodeId>) {
    let mut config = SimConfig::new(seed);
    config.link = LinkConfig::default()
        .with_latency(Duration::from_millis(5))
        .with_jitter(Duration::from_millis(10))
        .with_loss(0.1);
    let mut sim = Sim::with_config(config);
    let ids: Vec<NodeId> = (0..n as u64)
        .map(|i| NodeId(Rng::new(seed ^ i).next_u64()))
        .collect();
    let mut rng = Rng::new(seed);
    let edges = topology::random_connected(n, degree, &mut rng);
    let routers = StaticRouter::from_graph(&ids, &topology::adjacency(n, &edges));
    for r in routers {
        sim.add_node(r.local(), move |id, _| {
            Network::builder(id, r.clone())
                .behavior(Probe)
                .behavior(Wanderer)
                .build()
                .unwrap()
        });
    }
    connect_edges(&mut sim, &ids, &edges);
    received(&mut sim);
    let mut expected = Vec::new();
    for (tag, &(from, to, by_key)) in sends.iter().enumerate() {
        let (rule, dest) = if by_key {
            let key = NodeId(Rng::new(seed.wrapping_add(tag as u64)).next_u64());
            let closest = *ids.iter().min_by_key(|id| id.distance(key)).unwrap();
            (RouteRule::Closest(key), closest)
        } else {
            (RouteRule::Node(ids[to % n]), ids[to % n])
        };
        sim.send(ids[from % n], PROBE, rule, &Tagged(tag as u64))
            .unwrap();
        expected.push(dest);
        sim.run_for(Duration::from_millis(50)).unwrap();
    }
    sim.run_for(Duration::from_secs(20)).unwrap();
    let mut got: BTreeMap<u64, (NodeId, u32)> = BTreeMap::new();
    for (node, r) in received(&mut sim) {
        let e = got.entry(r.tag).or_insert((node, 0));
        assert_eq!(e.0, node, "tag {} reached two nodes", r.tag);
        e.1 += 1;
    }
    let deliveries = (0..sends.len() as u64)
        .map(|t| got.get(&t).copied().unwrap_or((NodeId(0), 0)))
        .collect();
    (sim.report().trace_hash, deliveries, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_message_reaches_its_node_once_and_runs_replay(
        seed in any::<u64>(),
        n in 2usize..12,
        degree in 1.0f64..4.0,
        sends in proptest::collection::vec((0usize..64, 0usize..64, any::<bool>()), 1..20),
    ) {
        let (hash, deliveries, expected) = run(seed, n, degree, &sends);
        for (tag, ((node, count), want)) in deliveries.iter().zip(&expected).enumerate() {
            prop_assert_eq!(*count, 1, "tag {} delivered {} times", tag, count);
            prop_assert_eq!(node, want, "tag {} at the wrong node", tag);
        }
        let (again, _, _) = run(seed, n, degree, &sends);
        prop_assert_eq!(hash, again);
    }
}
