use super::*;
use crate::ping;
use plexus_network::sim::{LinkConfig, Sim, SimConfig};
use plexus_network::{Address, Instant, Network, NodeId, Rng};
use plexus_router::StaticRouter;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn config() -> Config {
    Config::default().with_shuffle_interval(Duration::from_secs(10))
}

/// Adds a node running membership (and ping, which closes connections to
/// dead peers) that joins through `contact`.
fn add(sim: &mut Sim, id: NodeId, contact: Option<NodeId>, cfg: &Config) {
    let cfg = cfg.clone();
    sim.add_node(id, move |id, _| {
        let mut b = Network::builder(id, Arc::new(StaticRouter::new(id)))
            .behavior(Behaviour::new(cfg.clone()))
            .behavior(ping::Behaviour::new(
                ping::Config::default()
                    .with_interval(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(3))
                    .with_emit_rtt(false),
            ));
        if let Some(c) = contact {
            b = b.bootstrap(c, Address::Memory(c.0));
        }
        b.build().unwrap()
    });
}

fn views(sim: &Sim) -> BTreeMap<NodeId, BTreeSet<NodeId>> {
    sim.node_ids()
        .filter_map(|id| {
            let b = sim.node(id)?.behavior::<Behaviour>()?;
            Some((id, b.active_view().collect()))
        })
        .collect()
}

/// Number of connected components of the live nodes' active views.
fn components(views: &BTreeMap<NodeId, BTreeSet<NodeId>>) -> usize {
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for &start in views.keys() {
        if !seen.insert(start) {
            continue;
        }
        count += 1;
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for m in views.get(&n).into_iter().flatten() {
                if views.contains_key(m) && seen.insert(*m) {
                    stack.push(*m);
                }
            }
        }
    }
    count
}

/// Every active view within its bound and backed by a connection; views
/// symmetric but for links in the middle of a change (a reply in flight).
fn check_views(sim: &Sim, views: &BTreeMap<NodeId, BTreeSet<NodeId>>, bound: usize) {
    let mut one_sided = 0;
    let mut links = 0;
    for (n, v) in views {
        assert!(v.len() <= bound, "{n} has {} active neighbours", v.len());
        assert!(!v.is_empty(), "{n} has no active neighbour");
        let conns: BTreeSet<NodeId> = sim
            .node(*n)
            .unwrap()
            .connections()
            .map(|c| c.node)
            .collect();
        for m in v {
            links += 1;
            assert!(conns.contains(m), "{n} has {m} active without a connection");
            if views.get(m).is_some_and(|w| !w.contains(n)) {
                one_sided += 1;
            }
        }
    }
    assert!(
        one_sided * 100 <= links,
        "{one_sided} of {links} links one-sided"
    );
}

/// A swarm of `n` nodes, each joining through a random earlier one at a
/// random moment: one component, every view bounded and symmetric.
fn small_swarm(n: usize, seed: u64) {
    let mut sc = SimConfig::new(seed);
    sc.link = LinkConfig::default()
        .with_latency(Duration::from_millis(5))
        .with_jitter(Duration::from_millis(20));
    let mut sim = Sim::with_config(sc);
    let mut rng = Rng::new(seed);
    let mut ids: Vec<NodeId> = Vec::new();
    let cfg = config();
    for _ in 0..n {
        let id = NodeId(rng.next_u64());
        let contact = rng.choose(&ids).copied();
        add(&mut sim, id, contact, &cfg);
        ids.push(id);
        let pause = Duration::from_millis(rng.below(2000));
        sim.run_for(pause).unwrap();
    }
    sim.run_for(Duration::from_secs(30)).unwrap();
    let v = views(&sim);
    assert_eq!(components(&v), 1, "n={n} seed={seed}: {v:?}");
    check_views(&sim, &v, cfg.active_size);
    // Nobody is left with a single link when more are possible.
    if n >= 3 {
        for (node, view) in &v {
            assert!(view.len() >= 2, "n={n} seed={seed}: {node} sees {view:?}");
        }
    }
}

#[test]
fn small_swarms_all_join_whatever_the_order_and_timing() {
    let _ = env_logger::builder().is_test(true).try_init();
    for n in [2, 3, 5, 10] {
        for seed in 0..20 {
            small_swarm(n, seed);
        }
    }
}

#[test]
fn a_thousand_nodes_form_one_random_overlay_and_heal_after_half_die() {
    let _ = env_logger::builder().is_test(true).try_init();
    let n = 1000;
    let cfg = config();
    let mut sc = SimConfig::new(42);
    sc.capture_events = false;
    sc.link = LinkConfig::default()
        .with_latency(Duration::from_millis(10))
        .with_jitter(Duration::from_millis(20));
    let mut sim = Sim::with_config(sc);
    let mut rng = Rng::new(42);
    let mut ids: Vec<NodeId> = Vec::new();
    for i in 0..n {
        let id = NodeId(rng.next_u64());
        let contact = rng.choose(&ids).copied();
        add(&mut sim, id, contact, &cfg);
        ids.push(id);
        // Ten joins at a time: concurrent joins through each other.
        if i % 10 == 9 {
            sim.run_for(Duration::from_millis(100)).unwrap();
        }
    }
    sim.run_for(Duration::from_secs(60)).unwrap();
    let v = views(&sim);
    assert_eq!(components(&v), 1);
    check_views(&sim, &v, cfg.active_size);
    // Well mixed: most nodes use most of their view.
    let mean = v.values().map(|s| s.len()).sum::<usize>() as f64 / n as f64;
    assert!(mean > 0.7 * cfg.active_size as f64, "mean degree {mean}");

    // Half die at once; within two shuffle periods the rest are one again.
    rng.shuffle(&mut ids);
    for id in &ids[..n / 2] {
        sim.kill(*id);
    }
    let killed_at = sim.now();
    let deadline = killed_at + cfg.shuffle_interval * 2;
    let mut healed = false;
    while !healed && sim.now() < deadline {
        sim.run_for(Duration::from_millis(100)).unwrap();
        let v = views(&sim);
        healed = components(&v) == 1
            && v.values()
                .all(|s| !s.is_empty() && s.iter().all(|m| sim.is_alive(*m)));
    }
    let v = views(&sim);
    assert!(
        healed,
        "{} components after two shuffle periods",
        components(&v)
    );
    let healed_after = sim.now() - killed_at;
    // Replies still in flight at that moment leave links one-sided; two
    // seconds later the views are symmetric again.
    sim.run_for(Duration::from_secs(2)).unwrap();
    check_views(&sim, &views(&sim), cfg.active_size);
    eprintln!("membership: 1,000 nodes, half killed, one component again after {healed_after:?}");
}

#[test]
fn a_shuffle_teaches_addresses_of_peers_never_met() {
    let cfg = config();
    let mut sim = Sim::new(7);
    let ids: Vec<NodeId> = (1..=8).map(NodeId).collect();
    add(&mut sim, ids[0], None, &cfg);
    for &id in &ids[1..] {
        add(&mut sim, id, Some(ids[0]), &cfg);
        sim.run_for(Duration::from_millis(300)).unwrap();
    }
    sim.run_until(Instant::from_secs(60)).unwrap();
    // Somebody knows a passive peer it was never connected to, with the
    // address to dial it.
    let mut learnt = 0;
    for &id in &ids {
        let Some(Response::PassiveView(p)) =
            sim.rpc::<Behaviour>(id, Request::PassiveView).unwrap()
        else {
            panic!("answered at once")
        };
        for peer in p {
            assert_eq!(peer.addrs, vec![Address::Memory(peer.node.0)]);
            learnt += 1;
        }
    }
    assert!(learnt > 0, "passive views filled by joins and shuffles");
    let Some(Response::Stats(s)) = sim.rpc::<Behaviour>(ids[3], Request::Stats).unwrap() else {
        panic!()
    };
    assert!(s.shuffles >= 3, "{s:?}");
}

/// With a router that dials links of its own (the XOR router), membership
/// joins only through the bootstrap connections: the router's links are
/// not contacts, so they neither trigger joins nor enter the active views.
#[test]
fn links_a_router_dials_are_not_joins() {
    use plexus_router::kad;
    let mut sim = Sim::with_config({
        let mut sc = SimConfig::new(5);
        sc.link = LinkConfig::default().with_latency(Duration::from_millis(5));
        sc
    });
    let mut rng = Rng::new(5);
    let mut ids: Vec<NodeId> = Vec::new();
    let cfg = config();
    let n = 60;
    for _ in 0..n {
        let id = NodeId(rng.next_u64());
        let contact = rng.choose(&ids).copied();
        let cfg = cfg.clone();
        sim.add_node(id, move |id, _| {
            let router = Arc::new(kad::KadRouter::new(id));
            let mut b = Network::builder(id, router.clone())
                .behavior(kad::Behaviour::new(router, kad::Config::default()))
                .behavior(Behaviour::new(cfg.clone()));
            if let Some(c) = contact {
                b = b.bootstrap(c, Address::Memory(c.0));
            }
            b.build().unwrap()
        });
        ids.push(id);
        sim.run_for(Duration::from_millis(100)).unwrap();
    }
    sim.run_for(Duration::from_secs(30)).unwrap();
    let v = views(&sim);
    assert_eq!(components(&v), 1);
    check_views(&sim, &v, cfg.active_size);
    let (mut joins, mut rejoins, mut dials, mut extra) = (0, 0, 0, 0);
    for id in &ids {
        let node = sim.node(*id).unwrap();
        let m = node.behavior::<Behaviour>().unwrap().stats();
        joins += m.joins;
        rejoins += m.rejoins;
        dials += node.behavior::<kad::Behaviour>().unwrap().stats().dials;
        extra += node.connections().count() - v[id].len();
    }
    assert!(dials >= n as u64, "the router dialled {dials} links");
    assert!(extra > 0, "router links beside the views");
    // One join per bootstrap connection (n - 1) and per rejoin; none for
    // the router's dials.
    assert!(
        joins <= (n as u64 - 1) + rejoins,
        "{joins} joins for {n} nodes, {rejoins} rejoins and {dials} router dials"
    );
}
