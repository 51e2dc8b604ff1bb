use super::*;
use crate::membership;
use crate::sim_support::{
    gossip_config, gossip_converged, gossip_delete, gossip_partition_scenario,
    gossip_spread_scenario, gossip_update, grow, Stack,
};
use bytes::Bytes;
use plexus_network::sim::Sim;
use plexus_network::{Network, NodeId, Rng};
use std::collections::BTreeSet;
use std::sync::Arc;

fn sim(seed: u64) -> Sim {
    crate::sim_support::sim(
        seed,
        Duration::from_millis(10),
        Duration::from_millis(10),
        0.0,
    )
}

fn stack(cfg: Config) -> Stack {
    Stack::new(membership::Config::default()).with_gossip(cfg)
}

fn value(sim: &Sim, node: NodeId, key: &str) -> Option<Value> {
    sim.node(node)?.behavior::<Behaviour>()?.get(key).cloned()
}

fn counter(v: Option<Value>) -> i64 {
    match v {
        Some(Value::PnCounter(c)) => c.value(),
        Some(Value::GCounter(c)) => c.value() as i64,
        other => panic!("not a counter: {other:?}"),
    }
}

#[test]
fn one_update_reaches_a_thousand_nodes_in_few_rounds_and_messages() {
    let r = gossip_spread_scenario(1000, 3, 0.1, 1);
    assert_eq!(r.converged, 1000, "{r:?}");
    assert!(r.rounds <= 12, "{r:?}");
    assert!(r.messages_per_node <= 12.0, "{r:?}");
}

#[test]
fn partitions_heal_within_three_periods_and_no_deleted_key_comes_back() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (mut worst, mut relink) = (Duration::ZERO, Duration::ZERO);
    for seed in 1..=100 {
        let r = gossip_partition_scenario(16, Duration::from_secs(60), seed);
        assert!(r.deletes > 0, "seed {seed}: the scenario deleted nothing");
        assert!(
            r.resurrected.is_empty(),
            "seed {seed}: deleted keys back: {:?}",
            r.resurrected
        );
        assert!(
            r.missing.is_empty(),
            "seed {seed}: keys lost: {:?}",
            r.missing
        );
        let heal = r
            .heal
            .unwrap_or_else(|| panic!("seed {seed}: never converged {r:?}"));
        assert!(heal <= Duration::from_secs(3), "seed {seed}: {r:?}");
        worst = worst.max(heal);
        relink = relink.max(r.relink.unwrap_or_default());
    }
    println!("100 seeds: overlay relinked within {relink:?}, then converged within {worst:?}");
}

#[test]
fn restarted_nodes_come_back_as_themselves_and_converge() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut sim = sim(3);
    let mut rng = Rng::new(3);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        40,
        5,
        Duration::from_millis(100),
        &stack(gossip_config()),
    );
    sim.run_for(Duration::from_secs(5)).unwrap();
    let mut victims = ids.clone();
    rng.shuffle(&mut victims);
    victims.truncate(8);
    let victims: BTreeSet<NodeId> = victims.into_iter().collect();
    // Writes every 50 ms; a fifth of the nodes die during them and come
    // back (empty, same ids) a few seconds later.
    let mut total = 0i64;
    for i in 0..200u32 {
        let node = ids[rng.below(ids.len() as u64) as usize];
        if sim.is_alive(node) {
            gossip_update(&mut sim, node, "count", Op::Add(1));
            gossip_update(&mut sim, node, &format!("k{}", i % 30), Op::Increment(1));
            total += 1;
        }
        if i == 50 {
            sim.run_for(Duration::from_millis(200)).unwrap();
            for v in &victims {
                sim.kill(*v);
            }
        }
        if i == 120 {
            for v in &victims {
                sim.restart(*v);
            }
        }
        sim.run_for(Duration::from_millis(50)).unwrap();
    }
    let deadline = sim.now() + Duration::from_secs(20);
    assert!(sim
        .run_until_cond(deadline, |s| gossip_converged(s, &ids))
        .unwrap());
    for id in &ids {
        assert_eq!(counter(value(&sim, *id, "count")), total, "{id}");
        // One neighbour entry per peer: a restarted node is the same member.
        let net = sim.node(*id).unwrap();
        let peers: Vec<NodeId> = net.connections().map(|c| c.node).collect();
        let distinct: BTreeSet<NodeId> = peers.iter().copied().collect();
        assert!(peers.len() <= distinct.len() + 1, "{id}: {peers:?}");
    }
}

#[test]
fn tombstones_are_collected_after_their_time_and_the_key_stays_deleted() {
    let mut sim = sim(4);
    let mut rng = Rng::new(4);
    let mut ids = Vec::new();
    let cfg = gossip_config().with_tombstone_ttl(Duration::from_secs(10));
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        20,
        5,
        Duration::from_millis(100),
        &stack(cfg),
    );
    sim.run_for(Duration::from_secs(3)).unwrap();
    gossip_update(
        &mut sim,
        ids[0],
        "gone",
        Op::Assign(Bytes::from_static(b"x")),
    );
    gossip_update(
        &mut sim,
        ids[1],
        "kept",
        Op::Assign(Bytes::from_static(b"y")),
    );
    sim.run_for(Duration::from_secs(1)).unwrap();
    gossip_delete(&mut sim, ids[2], "gone");
    sim.run_for(Duration::from_secs(2)).unwrap();
    for id in &ids {
        let g = sim.node(*id).unwrap().behavior::<Behaviour>().unwrap();
        assert!(g.get("gone").is_none());
        assert_eq!(g.stats().tombstones, 1, "{id}");
    }
    sim.run_for(Duration::from_secs(12)).unwrap();
    for id in &ids {
        let g = sim.node(*id).unwrap().behavior::<Behaviour>().unwrap();
        assert!(g.store().entry("gone").is_none(), "{id} still holds it");
        assert!(g.get("kept").is_some());
        assert_eq!(g.stats().tombstones_collected, 1, "{id}");
    }
    assert!(gossip_converged(&sim, &ids));
}

#[test]
fn watchers_see_changes_under_their_prefix_and_bad_updates_are_refused() {
    let mut sim = sim(5);
    let mut rng = Rng::new(5);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        5,
        5,
        Duration::from_millis(100),
        &stack(gossip_config().with_max_keys(3)),
    );
    sim.run_for(Duration::from_secs(2)).unwrap();
    sim.rpc::<Behaviour>(ids[4], Request::Watch("app/".into()))
        .unwrap();
    sim.take_events();
    gossip_update(
        &mut sim,
        ids[0],
        "app/x",
        Op::Insert(Bytes::from_static(b"a")),
    );
    gossip_update(&mut sim, ids[0], "other", Op::Increment(1));
    sim.run_for(Duration::from_secs(1)).unwrap();
    let events: Vec<(NodeId, Event)> = sim
        .take_events()
        .into_iter()
        .filter_map(|e| Some((e.node, *e.event.event.downcast::<Event>().ok()?)))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, ids[4]);
    assert_eq!(events[0].1.key, "app/x");
    let Some(Value::OrSet(s)) = &events[0].1.value else {
        panic!("{events:?}")
    };
    assert!(s.contains(b"a"));

    let refused = |sim: &mut Sim, req: Request| sim.rpc::<Behaviour>(ids[1], req).is_err();
    assert!(refused(
        &mut sim,
        Request::Update {
            key: "other".into(),
            op: Op::Assign(Bytes::new()),
        }
    ));
    assert!(refused(
        &mut sim,
        Request::Update {
            key: "k".repeat(2000),
            op: Op::Increment(1),
        }
    ));
    assert!(refused(
        &mut sim,
        Request::Update {
            key: "big".into(),
            op: Op::Assign(Bytes::from(vec![0u8; 100_000])),
        }
    ));
    gossip_update(&mut sim, ids[1], "third", Op::Increment(1));
    assert!(refused(
        &mut sim,
        Request::Update {
            key: "fourth".into(),
            op: Op::Increment(1),
        }
    ));
}

/// A user's own mergeable type: the largest number anyone wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Max(u64);

impl Crdt for Max {
    type Op = u64;
    fn apply(&mut self, op: u64, _: &Origin) -> Result<(), String> {
        self.0 = self.0.max(op);
        Ok(())
    }
    fn merge(&mut self, other: &Self) {
        self.0 = self.0.max(other.0);
    }
}

#[test]
fn a_user_type_replicates_like_the_shipped_ones() {
    let mut sim = sim(6);
    let ids: Vec<NodeId> = (1..=6).map(NodeId).collect();
    for id in &ids {
        sim.add_node(*id, |id, _| {
            Network::builder(id, Arc::new(crate::sim_support::NoRoutes(id)))
                .behavior(Behaviour::<Max>::new(
                    gossip_config().with_neighbours(crate::broadcast::Neighbours::Connections),
                ))
                .build()
                .unwrap()
        });
    }
    for w in ids.windows(2) {
        sim.connect(w[0], w[1]);
    }
    sim.run_for(Duration::from_millis(500)).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let req = Request::<Max>::Update {
            key: "max".into(),
            op: (i as u64 * 7) % 5,
        };
        sim.rpc::<Behaviour<Max>>(*id, req).unwrap();
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    for id in &ids {
        let g = sim.node(*id).unwrap().behavior::<Behaviour<Max>>().unwrap();
        assert_eq!(g.get("max"), Some(&Max(4)), "{id}");
    }
}
