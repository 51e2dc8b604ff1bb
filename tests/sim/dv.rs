//! The distance-vector router on the simulator: convergence, near-shortest
//! paths, failure repair, partitions, key and service routing.

use crate::common::*;
use plexus::router::dv;
use plexus::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus::{DropReason, Instant, Network, NodeId, Rng, RouteAction, RouteRule, ServiceId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

struct Net {
    sim: Sim,
    ids: Vec<NodeId>,
    adj: Vec<Vec<usize>>,
}

/// `n` nodes with random ids on a random graph; every node runs the DV
/// router and the probe; links have equal latency unless `link` says otherwise.
fn dv_net(n: usize, degree: f64, seed: u64, providers: &BTreeSet<usize>) -> Net {
    let mut sc = SimConfig::new(seed);
    sc.link = LinkConfig::default().with_latency(Duration::from_millis(10));
    let mut sim = Sim::with_config(sc);
    let mut rng = Rng::new(seed);
    let mut ids: Vec<NodeId> = Vec::new();
    let mut seen = BTreeSet::new();
    while ids.len() < n {
        let id = NodeId(rng.next_u64());
        if seen.insert(id) {
            ids.push(id);
        }
    }
    let edges = topology::random_connected(n, degree, &mut rng);
    let adj = topology::adjacency(n, &edges);
    for (i, &id) in ids.iter().enumerate() {
        let with_probe = providers.is_empty() || providers.contains(&i);
        sim.add_node(id, move |id, seed| {
            let router = Arc::new(dv::DvRouter::new(id));
            let b = Network::builder(id, router.clone())
                .seed(seed)
                .behavior(dv::Behaviour::new(router, dv::Config::default()));
            let b = if with_probe { b.behavior(Probe) } else { b };
            b.build().unwrap()
        });
    }
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }
    Net { sim, ids, adj }
}

/// Follows next hops from `src` to `dst` through the live nodes' routers.
fn walk(sim: &Sim, src: NodeId, dst: NodeId) -> Result<u32, String> {
    let mut at = src;
    let mut visited = BTreeSet::new();
    for hops in 0..64 {
        if !visited.insert(at) {
            return Err(format!("loop at {at} after {hops} hops"));
        }
        let node = sim
            .node(at)
            .ok_or_else(|| format!("dead node {at} on the path"))?;
        match node.router().path_to_node(dst) {
            RouteAction::Local => return Ok(hops),
            RouteAction::Next(n) => at = n,
            RouteAction::Reject(r) => return Err(format!("{at} rejects: {r}")),
        }
    }
    Err("64 hops".into())
}

fn routes_len(sim: &Sim, id: NodeId) -> usize {
    sim.node(id).map_or(0, |n| n.router().routes().len())
}

/// Runs until every live node has `expect(node)` routes and no route has
/// changed for a second; returns when the last change happened.
fn converge(net: &mut Net, deadline: Instant, expect: impl Fn(NodeId) -> usize) -> Instant {
    let ids = net.ids.clone();
    let mut last = (net.sim.report().route_changes, net.sim.now());
    loop {
        let changes = net.sim.report().route_changes;
        if changes != last.0 {
            last = (changes, net.sim.now());
        }
        let complete = ids
            .iter()
            .filter(|id| net.sim.is_alive(**id))
            .all(|id| routes_len(&net.sim, *id) == expect(*id));
        if complete && net.sim.now() - last.1 >= Duration::from_secs(1) {
            return last.1;
        }
        assert!(net.sim.now() < deadline, "not converged by {deadline}");
        net.sim.run_for(Duration::from_millis(100)).unwrap();
    }
}

fn live_component(adj: &[Vec<usize>], alive: &[bool], src: usize) -> Vec<Option<u32>> {
    let pruned: Vec<Vec<usize>> = adj
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if alive[i] {
                l.iter().copied().filter(|j| alive[*j]).collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    topology::hops_from(&pruned, src)
}

fn dv_bytes(sim: &Sim) -> u64 {
    sim.report()
        .bytes_by_service
        .get(&dv::SERVICE)
        .copied()
        .unwrap_or(0)
}

#[test]
fn thousand_nodes_converge_to_near_shortest_paths_then_repair_after_killing_ten_percent() {
    let _ = env_logger::builder().is_test(true).try_init();
    let n = 1000;
    let mut net = dv_net(n, 6.0, 6, &BTreeSet::new());
    let converged = converge(&mut net, Instant::from_secs(60), |_| n - 1);
    eprintln!("dv: 1000 nodes converged at {converged}");

    // All pairs from 100 sampled sources: reachable, at most one hop over
    // the shortest path, no loops.
    let mut rng = Rng::new(60);
    let sources: Vec<usize> = (0..100).map(|_| rng.below(n as u64) as usize).collect();
    let mut worst_stretch = 0i64;
    for &s in &sources {
        let shortest = topology::hops_from(&net.adj, s);
        for (d, best) in shortest.iter().enumerate() {
            let hops = walk(&net.sim, net.ids[s], net.ids[d]).unwrap();
            let best = i64::from(best.unwrap());
            worst_stretch = worst_stretch.max(i64::from(hops) - best);
            assert!(
                i64::from(hops) <= best + 1,
                "{s}->{d}: {hops} hops, shortest {best}"
            );
        }
    }
    eprintln!("dv: worst stretch over 99,900 pairs: {worst_stretch} hop(s)");

    // Sync traffic over 60 s (informational; plexus-bench dv averages 300 s).
    let (b0, t0) = (dv_bytes(&net.sim), net.sim.now());
    net.sim.run_for(Duration::from_secs(60)).unwrap();
    let per_node_per_s =
        (dv_bytes(&net.sim) - b0) as f64 / n as f64 / (net.sim.now() - t0).as_secs_f64();
    eprintln!(
        "dv: sync traffic {per_node_per_s:.0} B/s per node over this 60 s window \
         (refreshes every 30 s make it phase-dependent; plexus-bench dv averages 300 s)"
    );
    assert!(
        net.sim.report().drops.is_empty(),
        "no drops in steady state"
    );

    // Kill 10% at once.
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let killed: BTreeSet<usize> = order[..n / 10].iter().copied().collect();
    let kill_at = net.sim.now();
    for &k in &killed {
        net.sim.kill(net.ids[k]);
    }
    let alive: Vec<bool> = (0..n).map(|i| !killed.contains(&i)).collect();
    // Each live node should reach exactly its component of the live graph.
    let reach: BTreeMap<NodeId, usize> = (0..n)
        .filter(|i| alive[*i])
        .map(|i| {
            let c = live_component(&net.adj, &alive, i)
                .iter()
                .filter(|h| h.is_some())
                .count();
            (net.ids[i], c - 1)
        })
        .collect();
    let repaired = converge(&mut net, kill_at + Duration::from_secs(30), |id| reach[&id]);
    eprintln!(
        "dv: repaired {:?} after killing 100 nodes",
        repaired - kill_at
    );
    // Bound: the neighbour timeout (5 s) plus 5 s of withdrawal and
    // counting to the 16-hop limit at one triggered update per 100 ms (the
    // trigger delay).
    assert!(repaired - kill_at <= Duration::from_secs(10));
    for &s in sources.iter().filter(|s| alive[**s]) {
        let comp = live_component(&net.adj, &alive, s);
        for d in (0..n).filter(|d| alive[*d] && comp[*d].is_some()) {
            walk(&net.sim, net.ids[s], net.ids[d]).unwrap();
        }
    }

    // Steady state again: no loops, so no TTL expiry.
    net.sim.run_for(Duration::from_secs(10)).unwrap();
    let drops_before = net.sim.report().drops.len();
    received(&mut net.sim);
    let biggest = (0..n)
        .filter(|i| alive[*i])
        .max_by_key(|i| reach[&net.ids[*i]])
        .unwrap();
    let comp = live_component(&net.adj, &alive, biggest);
    let in_main: Vec<NodeId> = (0..n)
        .filter(|i| comp[*i].is_some())
        .map(|i| net.ids[i])
        .collect();

    // Key routing: 1,000 random keys from random nodes of the main
    // component all end at the globally XOR-closest live node there.
    let mut expected = BTreeMap::new();
    for tag in 0..1000u64 {
        let key = NodeId(rng.next_u64());
        let from = in_main[rng.below(in_main.len() as u64) as usize];
        let closest = *in_main.iter().min_by_key(|id| id.distance(key)).unwrap();
        net.sim
            .send(from, PROBE, RouteRule::Closest(key), &Tagged(tag))
            .unwrap();
        expected.insert(tag, closest);
    }
    // And messages by node rule between random live pairs.
    for tag in 1000..2000u64 {
        let a = in_main[rng.below(in_main.len() as u64) as usize];
        let b = in_main[rng.below(in_main.len() as u64) as usize];
        net.sim
            .send(a, PROBE, RouteRule::Node(b), &Tagged(tag))
            .unwrap();
        expected.insert(tag, b);
    }
    net.sim.run_for(Duration::from_secs(2)).unwrap();
    let got: BTreeMap<u64, NodeId> = received(&mut net.sim)
        .into_iter()
        .map(|(at, r)| (r.tag, at))
        .collect();
    assert_eq!(got, expected);
    let drops = &net.sim.report().drops[drops_before..];
    assert!(
        !drops
            .iter()
            .any(|(_, _, d)| d.reason == DropReason::TtlExpired),
        "no TTL expiry in steady state: {drops:?}"
    );
    assert!(drops.is_empty(), "{drops:?}");
}

#[test]
fn a_partition_withdraws_routes_across_the_cut_and_healing_restores_them() {
    let n = 200;
    let mut net = dv_net(n, 6.0, 7, &BTreeSet::new());
    converge(&mut net, Instant::from_secs(30), |_| n - 1);
    let (left, right): (Vec<NodeId>, Vec<NodeId>) =
        (net.ids[..n / 2].to_vec(), net.ids[n / 2..].to_vec());
    net.sim.partition(&[left.clone(), right.clone()]);
    let cut_at = net.sim.now();
    // Withdrawn: no node keeps a route to the other half.
    let deadline = cut_at + Duration::from_secs(20);
    loop {
        let crossing: usize = left
            .iter()
            .map(|a| {
                right
                    .iter()
                    .filter(|b| walk(&net.sim, *a, **b).is_ok())
                    .count()
            })
            .sum();
        if crossing == 0 {
            break;
        }
        assert!(
            net.sim.now() < deadline,
            "{crossing} routes still cross the cut"
        );
        net.sim.run_for(Duration::from_millis(250)).unwrap();
    }
    eprintln!(
        "dv: routes across the cut withdrawn after {:?}",
        net.sim.now() - cut_at
    );
    net.sim.heal();
    let healed_at = net.sim.now();
    let restored = converge(&mut net, healed_at + Duration::from_secs(20), |_| n - 1);
    eprintln!("dv: restored {:?} after the heal", restored - healed_at);
    for a in left.iter().step_by(10) {
        for b in right.iter().step_by(10) {
            walk(&net.sim, *a, *b).unwrap();
        }
    }
}

#[test]
fn service_routing_picks_the_nearest_provider_and_fails_over() {
    let n = 300;
    let providers: BTreeSet<usize> = [10, 50, 120, 200, 280].into_iter().collect();
    let mut net = dv_net(n, 5.0, 8, &providers);
    converge(&mut net, Instant::from_secs(30), |_| n - 1);
    let probe = ServiceId(200);
    let source = (0..n).find(|i| !providers.contains(i)).unwrap();
    let hops = topology::hops_from(&net.adj, source);
    let nearest_of = |set: &BTreeSet<usize>| -> BTreeSet<usize> {
        let best = set.iter().map(|p| hops[*p].unwrap()).min().unwrap();
        set.iter()
            .copied()
            .filter(|p| hops[*p] == Some(best))
            .collect()
    };

    received(&mut net.sim);
    net.sim
        .send(net.ids[source], probe, RouteRule::Service, &Tagged(1))
        .unwrap();
    net.sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&mut net.sim);
    assert_eq!(got.len(), 1);
    let first = net.ids.iter().position(|id| *id == got[0].0).unwrap();
    assert!(
        nearest_of(&providers).contains(&first),
        "reached {first}, not a nearest provider"
    );

    // The provider dies: the next nearest takes over once routes repair.
    net.sim.kill(net.ids[first]);
    let rest: BTreeSet<usize> = providers.iter().copied().filter(|p| *p != first).collect();
    net.sim.run_for(Duration::from_secs(10)).unwrap();
    net.sim
        .send(net.ids[source], probe, RouteRule::Service, &Tagged(2))
        .unwrap();
    net.sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&mut net.sim);
    assert_eq!(got.len(), 1, "delivered after failover");
    let second = net.ids.iter().position(|id| *id == got[0].0).unwrap();
    // Hop distances without the dead provider.
    let alive: Vec<bool> = (0..n).map(|i| i != first).collect();
    let hops2 = live_component(&net.adj, &alive, source);
    let best2 = rest.iter().filter_map(|p| hops2[*p]).min().unwrap();
    assert!(rest.contains(&second));
    assert_eq!(hops2[second], Some(best2), "the next nearest provider");
}
