//! Ping at scale: 1,000 nodes, a random graph of average degree 8, 5% loss,
//! 50 nodes killed at once.

use plexus::ping;
use plexus::router::StaticRouter;
use plexus::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus::{Instant, Network, NodeId, Rng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const NODES: usize = 1000;
const KILLED: usize = 50;

#[test]
fn every_neighbour_of_a_killed_node_reports_it_and_live_links_rarely_fail() {
    let _ = env_logger::builder().is_test(true).try_init();
    let timeout = Duration::from_secs(5);
    let cfg = ping::Config::default()
        .with_interval(Duration::from_millis(500))
        .with_timeout(timeout)
        .with_emit_rtt(false);

    let mut sc = SimConfig::new(1000);
    sc.link = LinkConfig::default()
        .with_latency(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(10))
        .with_loss(0.05);
    let mut sim = Sim::with_config(sc);
    let ids: Vec<NodeId> = (1..=NODES as u64).map(NodeId).collect();
    for &id in &ids {
        let cfg = cfg.clone();
        sim.add_node(id, move |id, seed| {
            Network::builder(id, Arc::new(StaticRouter::new(id)))
                .seed(seed)
                .behavior(ping::Behaviour::new(cfg.clone()))
                .build()
                .unwrap()
        });
    }
    let mut rng = Rng::new(7);
    let edges = topology::random_connected(NODES, 8.0, &mut rng);
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }

    // Settle, with 5% loss on every link (reliable frames are retransmitted,
    // late), then kill 50 nodes at once.
    sim.run_until(Instant::from_secs(20)).unwrap();
    let links_up: usize = ids
        .iter()
        .map(|id| sim.node(*id).unwrap().connections().count())
        .sum();
    assert_eq!(links_up, edges.len() * 2, "all links up before the kill");
    let mut order: Vec<usize> = (0..NODES).collect();
    rng.shuffle(&mut order);
    let killed: BTreeSet<NodeId> = order[..KILLED].iter().map(|&i| ids[i]).collect();
    let kill_at = sim.now();
    for k in &killed {
        sim.kill(*k);
    }
    sim.run_until(Instant::from_secs(60)).unwrap();

    // Each handler checks at its pings, so a failure is reported up to one
    // ping interval after the timeout; an answer already in flight at the
    // kill (perhaps retransmitted once) lands up to a one-way delay plus one
    // retransmission timeout later.
    let link = sim.config().link;
    let slack = link.latency + link.jitter + link.retransmit_timeout + Duration::from_millis(500);
    let mut failures: BTreeMap<(NodeId, NodeId), Instant> = BTreeMap::new();
    let mut false_failures = 0usize;
    for e in sim.take_events() {
        let node = e.node;
        let Ok(ev) = e.event.downcast::<ping::Event>() else {
            continue;
        };
        if ev.result.is_err() {
            if killed.contains(&ev.peer) {
                failures.entry((node, ev.peer)).or_insert(e.at);
            } else {
                false_failures += 1;
            }
        }
    }

    let mut expected = 0usize;
    for &(a, b) in &edges {
        for (watcher, dead) in [(ids[a], ids[b]), (ids[b], ids[a])] {
            if killed.contains(&dead) && !killed.contains(&watcher) {
                expected += 1;
                let at = failures.get(&(watcher, dead)).unwrap_or_else(|| {
                    panic!("{watcher} never reported its dead neighbour {dead}")
                });
                let after = *at - kill_at;
                assert!(
                    after <= timeout + slack,
                    "{watcher} reported {dead} {after:?} after the kill"
                );
            }
        }
    }
    assert!(
        expected > 300,
        "a meaningful number of watched links: {expected}"
    );
    // False failures: under 0.1% of links over the 60 s run (measured: 0).
    let links = edges.len();
    assert!(
        false_failures * 1000 < links,
        "{false_failures} false failures over {links} links"
    );
    let r = sim.report();
    eprintln!(
        "ping scale: {links} links, {expected} watched links to killed nodes all reported; \
         {false_failures} false failures; frames sent {}, retransmissions {}",
        r.frames_sent, r.frames_retransmitted
    );
}
