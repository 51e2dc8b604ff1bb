//! Multi-hop forwarding by every route rule, and TTL.

use crate::common::*;
use plexus::router::{ServiceSet, StaticRouter};
use plexus::sim::{topology, Sim};
use plexus::{DropReason, NodeId, Rng, RouteRule, SendOptions};
use std::sync::Arc;
use std::time::Duration;

/// Nodes 1..=10 in a line, each routing towards the destination's side.
fn line_of_ten() -> (Sim, Vec<NodeId>) {
    let ids: Vec<NodeId> = (1..=10).map(NodeId).collect();
    let routers: Vec<Arc<StaticRouter>> = ids
        .iter()
        .map(|&me| {
            let r = StaticRouter::new(me);
            for &dest in &ids {
                if dest != me {
                    let hop = if dest > me { me.0 + 1 } else { me.0 - 1 };
                    r.set_route(dest, NodeId(hop), me.0.abs_diff(dest.0) as u32);
                }
            }
            Arc::new(r)
        })
        .collect();
    let mut sim = Sim::new(10);
    add_nodes(&mut sim, &routers, |_| true);
    connect_edges(&mut sim, &ids, &topology::line(10));
    (sim, ids)
}

#[test]
fn a_message_crosses_eight_intermediate_nodes() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (mut sim, ids) = line_of_ten();
    received(&mut sim);
    sim.send(ids[0], PROBE, RouteRule::Node(ids[9]), &Tagged(7))
        .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();

    let got = received(&mut sim);
    assert_eq!(
        got,
        vec![(
            ids[9],
            Received {
                source: ids[0],
                rule: RouteRule::Node(ids[9]),
                tag: 7
            }
        )]
    );
    for (i, id) in ids.iter().enumerate() {
        let forwarded = sim.node(*id).unwrap().stats().forwarded;
        let expected = u64::from((1..9).contains(&i));
        assert_eq!(forwarded, expected, "node {} forwarded {forwarded}", i + 1);
    }
    assert!(sim.report().drops.is_empty());
}

#[test]
fn ttl_five_is_dropped_and_the_drop_is_reported() {
    let (mut sim, ids) = line_of_ten();
    received(&mut sim);
    let opts = SendOptions {
        ttl: Some(5),
        ..Default::default()
    };
    sim.with_node(ids[0], |net, now| {
        net.send_with(now, PROBE, RouteRule::Node(ids[9]), &Tagged(1), opts)
    })
    .unwrap()
    .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();

    assert!(received(&mut sim).is_empty(), "never delivered");
    let drops = sim.report().drops;
    assert_eq!(drops.len(), 2, "{drops:?}");
    let (_, at, report) = drops[0];
    // TTL 5 allows five hops: 1→2→3→4→5→6; node 6 cannot forward.
    assert_eq!(at, ids[5]);
    assert_eq!(report.reason, DropReason::TtlExpired);
    assert_eq!(report.source, ids[0]);
    assert_eq!(sim.node(ids[5]).unwrap().stats().dropped, 1);
    // Node 6 sent a drop notice back over the five hops: the source hears
    // where and why its message died.
    let (_, at, report) = drops[1];
    assert_eq!(at, ids[0]);
    assert_eq!(
        report.reason,
        DropReason::Remote {
            at: ids[5],
            why: plexus::RemoteDrop::TtlExpired
        }
    );
    assert_eq!(sim.node(ids[0]).unwrap().stats().drop_notices_received, 1);

    // TTL 9 is exactly enough for the nine hops.
    let opts = SendOptions {
        ttl: Some(9),
        ..Default::default()
    };
    sim.with_node(ids[0], |net, now| {
        net.send_with(now, PROBE, RouteRule::Node(ids[9]), &Tagged(2), opts)
    })
    .unwrap()
    .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(received(&mut sim).len(), 1);
}

/// 50 nodes with random ids on a random graph, with shortest-path tables.
struct Fifty {
    sim: Sim,
    ids: Vec<NodeId>,
    adj: Vec<Vec<usize>>,
    routers: Vec<Arc<StaticRouter>>,
}

fn fifty(seed: u64) -> Fifty {
    let mut rng = Rng::new(seed);
    let mut ids: Vec<NodeId> = Vec::new();
    while ids.len() < 50 {
        let id = NodeId(rng.next_u64());
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let edges = topology::random_connected(50, 3.0, &mut rng);
    let adj = topology::adjacency(50, &edges);
    let routers = StaticRouter::from_graph(&ids, &adj);
    let mut sim = Sim::new(seed);
    add_nodes(&mut sim, &routers, |_| true);
    connect_edges(&mut sim, &ids, &edges);
    Fifty {
        sim,
        ids,
        adj,
        routers,
    }
}

#[test]
fn closest_key_reaches_the_xor_closest_node_of_fifty() {
    let Fifty { mut sim, ids, .. } = fifty(50);
    received(&mut sim);
    let mut rng = Rng::new(99);
    let mut expected = Vec::new();
    for tag in 0..200u64 {
        let key = NodeId(rng.next_u64());
        let from = ids[rng.below(50) as usize];
        let closest = *ids.iter().min_by_key(|id| id.distance(key)).unwrap();
        sim.send(from, PROBE, RouteRule::Closest(key), &Tagged(tag))
            .unwrap();
        expected.push((closest, tag));
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    let mut got: Vec<(NodeId, u64)> = received(&mut sim)
        .into_iter()
        .map(|(n, r)| (n, r.tag))
        .collect();
    got.sort_by_key(|(_, t)| *t);
    assert_eq!(got, expected);
    assert!(sim.report().drops.is_empty());
    let forwarded: u64 = ids
        .iter()
        .map(|id| sim.node(*id).unwrap().stats().forwarded)
        .sum();
    assert!(
        forwarded > 200,
        "multi-hop: {forwarded} forwards for 200 messages"
    );
}

#[test]
fn service_routing_reaches_a_nearest_provider_of_fifty() {
    let Fifty {
        mut sim,
        ids,
        adj,
        routers,
    } = fifty(51);
    // Every node runs the probe, but the routers know only five providers
    // of its service (and each provider's own router says it runs it).
    let providers: Vec<usize> = vec![3, 11, 25, 38, 47];
    let set: ServiceSet = [PROBE].into_iter().collect();
    for r in &routers {
        for &p in &providers {
            r.set_services(ids[p], set);
        }
    }
    received(&mut sim);
    for (from, _) in ids.iter().enumerate() {
        sim.send(ids[from], PROBE, RouteRule::Service, &Tagged(from as u64))
            .unwrap();
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    let got = received(&mut sim);
    assert_eq!(got.len(), 50);
    for (at, r) in got {
        let from = r.tag as usize;
        let hops = topology::hops_from(&adj, from);
        let nearest = providers.iter().map(|&p| hops[p].unwrap()).min().unwrap();
        let at_idx = ids.iter().position(|id| *id == at).unwrap();
        assert!(
            providers.contains(&at_idx),
            "node {from}'s message ended at a non-provider"
        );
        assert_eq!(
            hops[at_idx].unwrap(),
            nearest,
            "node {from}'s message is at a nearest provider"
        );
    }
}
