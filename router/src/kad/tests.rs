//! The XOR router on the simulator: the scenario of
//! [`scenario`](crate::scenario), small.

use crate::scenario::{self, Options, Router};
use std::time::Duration;

fn small(router: Router, nodes: usize, seed: u64) -> Options {
    let mut o = Options::new(router, nodes, seed);
    o.messages = 2000;
    o.sources = 40;
    o.steady = Duration::from_secs(30);
    o
}

#[test]
fn a_thousand_nodes_route_every_message_to_its_node_key_and_nearest_provider() {
    let r = scenario::run(&small(Router::Kad, 1000, 1), |_| {});
    let converged = r.converged.expect("every node fills its buckets");
    assert!(
        converged <= Duration::from_secs(30),
        "converged after {converged:?}"
    );
    // Every node-rule message at its destination, every key message at the
    // live node XOR-closest to the key (the one every node names), every
    // service message at a provider with the fewest hops.
    for (what, d) in [("node", &r.node), ("key", &r.key), ("service", &r.service)] {
        assert_eq!(d.delivered, d.sent, "{what}: {d:?}");
        assert_eq!(d.misdelivered, 0, "{what}: {d:?}");
    }
    assert_eq!(
        r.service.mean_hops, r.service.mean_shortest,
        "{:?}",
        r.service
    );
    // Greedy descent over two hops stays close to the shortest path.
    assert!(r.node.stretch() <= 1.3, "stretch {}", r.node.stretch());
    assert!(r.key.stretch() <= 1.3, "stretch {}", r.key.stretch());
    // O(log N) links, O(log² N) entries: at 1,000 nodes a few hundred.
    assert!(r.links.max <= 64, "{:?}", r.links);
    assert!(r.entries.max <= 2000, "{:?}", r.entries);
    // Far less sync traffic than a route to every node would cost
    // (dv: ~2.9 KB per node per second at this size).
    assert!(
        r.sync_bytes_per_node_per_s < 1000.0,
        "{} B/s",
        r.sync_bytes_per_node_per_s
    );
    // A tenth crashed at once: within three maintenance periods the
    // survivors reach each other and agree on key owners again.
    assert_eq!(r.killed, 100);
    assert!(
        r.node_after_kill.ratio() >= 0.999,
        "{:?}",
        r.node_after_kill
    );
    assert!(r.key_after_kill.ratio() >= 0.999, "{:?}", r.key_after_kill);
}

#[test]
fn a_run_replays_from_its_seed() {
    let mut o = small(Router::Kad, 200, 7);
    o.messages = 400;
    o.sources = 10;
    o.steady = Duration::from_secs(5);
    let a = scenario::run(&o, |_| {});
    let b = scenario::run(&o, |_| {});
    assert_eq!(a, b);
    assert_eq!(a.node.delivered, a.node.sent);
}

#[test]
fn the_distance_vector_router_passes_the_same_scenario() {
    // The same overlay and measures with `dv`: the baseline the bench
    // compares against (shortest paths, a route to every node).
    let mut o = small(Router::Dv, 300, 3);
    o.messages = 600;
    o.sources = 12;
    let r = scenario::run(&o, |_| {});
    assert!(r.converged.is_some());
    assert_eq!(r.node.delivered, r.node.sent, "{:?}", r.node);
    assert_eq!(r.key.delivered, r.key.sent, "{:?}", r.key);
    assert!(r.node.stretch() <= 1.05, "{:?}", r.node);
    assert!(
        r.entries.median >= 299,
        "dv holds a route to every node: {:?}",
        r.entries
    );
}
