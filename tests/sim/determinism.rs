//! Same seed and scenario, same trace; another seed, another trace.

use crate::common::*;
use plexus::ping;
use plexus::router::StaticRouter;
use plexus::sim::{topology, LinkConfig, Sim, SimAction, SimConfig};
use plexus::{Instant, Network, NodeId, Rng, RouteRule};
use std::time::Duration;

fn scenario(seed: u64) -> (u64, u64) {
    let mut sc = SimConfig::new(seed);
    sc.link = LinkConfig::default()
        .with_jitter(Duration::from_millis(15))
        .with_loss(0.05)
        .with_duplicate(0.02)
        .with_reorder(0.05);
    let mut sim = Sim::with_config(sc);
    let n = 60;
    let ids: Vec<NodeId> = (1..=n as u64).map(|i| NodeId(i * 0x9E37_79B9)).collect();
    let mut rng = Rng::new(seed);
    let edges = topology::random_connected(n, 4.0, &mut rng);
    let adj = topology::adjacency(n, &edges);
    let routers = StaticRouter::from_graph(&ids, &adj);
    for r in routers {
        sim.add_node(r.local(), move |id, s| {
            Network::builder(id, r.clone())
                .seed(s)
                .behavior(ping::Behaviour::new(
                    ping::Config::default().with_timeout(Duration::from_secs(3)),
                ))
                .behavior(Probe)
                .build()
                .unwrap()
        });
    }
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }
    let half: Vec<NodeId> = ids[..n / 2].to_vec();
    sim.schedule(Instant::from_secs(5), SimAction::Partition(vec![half]));
    sim.schedule(Instant::from_secs(12), SimAction::Heal);
    sim.schedule(Instant::from_secs(8), SimAction::Kill(ids[3]));
    sim.schedule(Instant::from_secs(15), SimAction::Restart(ids[3]));
    sim.schedule(Instant::from_secs(15), SimAction::Connect(ids[3], ids[4]));
    for t in 0..20u64 {
        sim.run_until(Instant::from_secs(t)).unwrap();
        let from = ids[rng.below(n as u64) as usize];
        let key = NodeId(rng.next_u64());
        let _ = sim.send(from, PROBE, RouteRule::Closest(key), &Tagged(t));
    }
    sim.run_until(Instant::from_secs(20)).unwrap();
    let r = sim.report();
    (r.trace_hash, r.frames_sent)
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let (h1, sent1) = scenario(77);
    let (h2, sent2) = scenario(77);
    let (h3, _) = scenario(78);
    assert!(sent1 > 1000, "the scenario does something: {sent1} frames");
    assert_eq!((h1, sent1), (h2, sent2));
    assert_ne!(h1, h3);
}
