use super::*;
use crate::membership;
use crate::sim_support::{kv_config, Stack};
use plexus_network::sim::Sim;
use plexus_network::{NodeId, Rng, RpcId};
use plexus_router::dv;
use std::collections::BTreeSet;

fn stack(cfg: Config) -> Stack {
    Stack::new(membership::Config::default()).with_kv(dv::Config::default(), cfg)
}

/// `n` nodes of `stack`, grown and run until every node's router reaches
/// every other.
fn net(n: usize, seed: u64, stack: &Stack) -> (Sim, Vec<NodeId>, Rng) {
    let (sim, ids, rng, routed) = crate::sim_support::kv_overlay(n, seed, stack);
    assert!(routed, "routers did not converge");
    (sim, ids, rng)
}

fn kv(sim: &Sim, id: NodeId) -> &Behaviour {
    sim.node(id).unwrap().behavior::<Behaviour>().unwrap()
}

fn converge(sim: &mut Sim, ids: &[NodeId]) {
    let until = sim.now() + Duration::from_secs(120);
    let ok = sim
        .run_until_cond(until, |s| crate::sim_support::kv_routed(s, ids))
        .unwrap();
    assert!(ok, "routers did not converge");
}

fn start(sim: &mut Sim, node: NodeId, req: Request) -> RpcId {
    sim.rpc_start::<Behaviour>(node, req).unwrap().unwrap()
}

/// Runs `req` on `node` and waits (virtual time) for its answer.
fn op(sim: &mut Sim, node: NodeId, req: Request) -> Result<Reply, KvError> {
    let id = start(sim, node, req);
    let until = sim.now() + Duration::from_secs(30);
    let ok = sim
        .run_until_cond(until, |s| s.has_answer(node, id))
        .unwrap();
    assert!(ok, "no answer on {node}");
    sim.take_answer::<Result<Reply, KvError>>(node, id)
        .unwrap()
        .expect("the behaviour answers")
}

/// The live nodes holding `key` (any version).
fn holders(sim: &Sim, ids: &[NodeId], key: &str) -> BTreeSet<NodeId> {
    ids.iter()
        .copied()
        .filter(|i| {
            sim.node(*i)
                .and_then(|n| n.behavior::<Behaviour>())
                .is_some_and(|k| k.store().get(key).is_some())
        })
        .collect()
}

/// The k live nodes XOR-closest to `key`, by the global view.
fn truly_closest(sim: &Sim, ids: &[NodeId], key: &str, k: usize) -> BTreeSet<NodeId> {
    let live: BTreeSet<NodeId> = ids.iter().copied().filter(|i| sim.is_alive(*i)).collect();
    closest(&live, key_id(key), k).into_iter().collect()
}

#[test]
fn closest_is_the_k_smallest_xor_distances() {
    let mut rng = Rng::new(3);
    for n in [1usize, 2, 5, 50, 500] {
        let nodes: BTreeSet<NodeId> = (0..n).map(|_| NodeId(rng.next_u64())).collect();
        for _ in 0..50 {
            let key = NodeId(rng.next_u64());
            let mut all: Vec<NodeId> = nodes.iter().copied().collect();
            all.sort_by_key(|x| x.0 ^ key.0);
            all.truncate(3);
            assert_eq!(closest(&nodes, key, 3), all);
        }
    }
}

#[test]
fn puts_land_on_the_k_closest_and_every_node_reads_and_deletes_them() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (mut sim, ids, _) = net(24, 1, &stack(kv_config()));
    for i in 0..20 {
        let key = format!("key-{i}");
        let w = op(
            &mut sim,
            ids[i % ids.len()],
            Request::put(key.clone(), format!("v{i}")),
        );
        assert!(
            matches!(w, Ok(Reply::Written { replicas: r, .. }) if r >= 2),
            "{w:?}"
        );
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    for i in 0..20 {
        let key = format!("key-{i}");
        assert_eq!(
            holders(&sim, &ids, &key),
            truly_closest(&sim, &ids, &key, 3),
            "{key}"
        );
        let reader = ids[(i * 7 + 3) % ids.len()];
        let r = op(&mut sim, reader, Request::get(key.clone())).unwrap();
        assert_eq!(
            r.value().map(|v| v.to_vec()),
            Some(format!("v{i}").into_bytes())
        );
    }
    let d = op(&mut sim, ids[5], Request::delete("key-3")).unwrap();
    assert!(matches!(d, Reply::Written { .. }));
    for reader in &ids {
        assert_eq!(
            op(&mut sim, *reader, Request::get("key-3")),
            Ok(Reply::NotFound)
        );
    }
    assert_eq!(
        op(&mut sim, ids[0], Request::get("never-written")),
        Ok(Reply::NotFound)
    );
    let st = kv(&sim, ids[0]).stats();
    eprintln!("{st:?} at {}", sim.now());
    assert_eq!(st.known_nodes, 23);
}

/// Waits until the live holders of `key` are exactly its `k` closest live
/// nodes; returns how long that took.
fn until_placed(sim: &mut Sim, ids: &[NodeId], key: &str, within: Duration) -> Duration {
    let t0 = sim.now();
    let ids = ids.to_vec();
    let key = key.to_owned();
    let ok = sim
        .run_until_cond(t0 + within, |s| {
            let h: BTreeSet<NodeId> = holders(s, &ids, &key)
                .into_iter()
                .filter(|i| s.is_alive(*i))
                .collect();
            h == truly_closest(s, &ids, &key, 3)
        })
        .unwrap();
    assert!(
        ok,
        "{key}: holders {:?}, closest {:?}",
        holders(sim, &ids, &key),
        truly_closest(sim, &ids, &key, 3)
    );
    sim.now().saturating_duration_since(t0)
}

#[test]
fn a_dead_holder_is_replaced_and_gets_go_on() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (mut sim, ids, _) = net(24, 2, &stack(kv_config()));
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for k in &keys {
        op(&mut sim, ids[0], Request::put(k.clone(), "v")).unwrap();
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    // Kill the coordinator of k0 and a second holder of k5.
    let k0 = truly_closest(&sim, &ids, "k0", 1)
        .into_iter()
        .next()
        .unwrap();
    sim.kill(k0);
    let k5: Vec<NodeId> = truly_closest(&sim, &ids, "k5", 3).into_iter().collect();
    sim.kill(k5[1]);
    let mut worst = Duration::ZERO;
    for k in &keys {
        worst = worst.max(until_placed(&mut sim, &ids, k, Duration::from_secs(30)));
    }
    // Ping declares a silent peer dead after 3 s, the router withdraws it,
    // and the repair follows one second later.
    assert!(
        worst <= Duration::from_secs(10),
        "re-replicated after {worst:?}"
    );
    let reader = ids.iter().copied().find(|i| sim.is_alive(*i)).unwrap();
    for k in &keys {
        let r = op(&mut sim, reader, Request::get(k.clone())).unwrap();
        assert_eq!(r.value().map(|v| &v[..]), Some(&b"v"[..]), "{k}");
    }
}

#[test]
fn a_closer_node_that_joins_takes_the_key_and_the_farthest_hands_it_over() {
    let _ = env_logger::builder().is_test(true).try_init();
    let s = stack(kv_config());
    let (mut sim, mut ids, _) = net(16, 3, &s);
    op(&mut sim, ids[2], Request::put("moving", "here")).unwrap();
    sim.run_for(Duration::from_secs(2)).unwrap();
    let before = holders(&sim, &ids, "moving");
    // A node whose id is next to the key's: the closest of all.
    let newcomer = NodeId(key_id("moving").0 ^ 1);
    crate::sim_support::add_node(&mut sim, newcomer, Some(ids[0]), &s);
    ids.push(newcomer);
    converge(&mut sim, &ids);
    until_placed(&mut sim, &ids, "moving", Duration::from_secs(60));
    let after = holders(&sim, &ids, "moving");
    assert!(after.contains(&newcomer));
    let dropped: Vec<_> = before.difference(&after).collect();
    assert_eq!(dropped.len(), 1, "before {before:?} after {after:?}");
    let handed: u64 = ids.iter().map(|i| kv(&sim, *i).stats().handed_over).sum();
    assert_eq!(handed, 1);
    let r = op(&mut sim, ids[9], Request::get("moving")).unwrap();
    assert_eq!(r.value().map(|v| &v[..]), Some(&b"here"[..]));
}

#[test]
fn a_record_with_a_ttl_lives_while_its_owner_republishes_and_lapses_after() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (mut sim, ids, _) = net(16, 4, &stack(kv_config()));
    let key = "leased";
    let set = truly_closest(&sim, &ids, key, 3);
    let owner = ids.iter().copied().find(|i| !set.contains(i)).unwrap();
    let ttl = Duration::from_secs(60);
    let put = Request::Put {
        key: key.into(),
        value: Bytes::from_static(b"lease"),
        ttl: Some(ttl),
    };
    op(&mut sim, owner, put).unwrap();
    // Ten TTLs later it is still there: each republish (same version)
    // extended the holders' expiry instead of being dropped as a duplicate.
    sim.run_for(ttl * 10).unwrap();
    let reader = *set.iter().next().unwrap();
    let r = op(&mut sim, reader, Request::get(key)).unwrap();
    assert_eq!(r.value().map(|v| &v[..]), Some(&b"lease"[..]));
    assert!(kv(&sim, owner).stats().republished >= 19);
    // The owner stops: the record lapses within one TTL.
    sim.kill(owner);
    sim.run_for(ttl + Duration::from_secs(1)).unwrap();
    assert_eq!(op(&mut sim, reader, Request::get(key)), Ok(Reply::NotFound));
    // The next repair pass drops it.
    sim.run_for(Duration::from_secs(31)).unwrap();
    let expired: u64 = ids
        .iter()
        .filter(|i| sim.is_alive(**i))
        .map(|i| kv(&sim, *i).stats().expired)
        .sum();
    assert!(expired >= 3, "{expired}");
}

#[test]
fn full_stores_and_large_values_are_refused_with_a_clear_error() {
    let cfg = kv_config().with_max_records(2).with_max_value_bytes(100);
    let (mut sim, ids, _) = net(3, 5, &stack(cfg));
    op(&mut sim, ids[0], Request::put("a", "1")).unwrap();
    op(&mut sim, ids[1], Request::put("b", "2")).unwrap();
    assert_eq!(
        op(&mut sim, ids[2], Request::put("c", "3")),
        Err(KvError::Full)
    );
    // Updates of held keys still fit.
    assert!(op(&mut sim, ids[2], Request::put("a", "4")).is_ok());
    let big = Bytes::from(vec![0u8; 101]);
    assert_eq!(
        op(&mut sim, ids[0], Request::put("big", big)),
        Err(KvError::TooLarge { len: 101, max: 100 })
    );
}

#[test]
fn racing_writers_converge_on_one_value_everywhere() {
    let (mut sim, ids, _) = net(16, 6, &stack(kv_config()));
    for round in 0..5 {
        let a = start(&mut sim, ids[1], Request::put("race", format!("a{round}")));
        let b = start(&mut sim, ids[9], Request::put("race", format!("b{round}")));
        sim.run_for(Duration::from_secs(2)).unwrap();
        assert!(matches!(
            sim.take_answer::<Result<Reply, KvError>>(ids[1], a),
            Some(Ok(Ok(_)))
        ));
        assert!(matches!(
            sim.take_answer::<Result<Reply, KvError>>(ids[9], b),
            Some(Ok(Ok(_)))
        ));
        let versions: BTreeSet<_> = holders(&sim, &ids, "race")
            .into_iter()
            .map(|h| kv(&sim, h).store().get("race").cloned().unwrap())
            .map(|r| (r.version, r.value))
            .collect();
        assert_eq!(versions.len(), 1, "round {round}: {versions:?}");
        let reads: BTreeSet<_> = ids
            .iter()
            .map(|i| op(&mut sim, *i, Request::get("race")).unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|r| r.value().cloned())
            .collect();
        assert_eq!(reads.len(), 1);
    }
}

#[test]
fn a_quorum_read_sees_the_newest_write_and_repairs_a_stale_replica() {
    let (mut sim, ids, _) = net(16, 7, &stack(kv_config()));
    op(&mut sim, ids[0], Request::put("q", "old")).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    let set: Vec<NodeId> = closest(&ids.iter().copied().collect(), key_id("q"), 3);
    // The coordinator holds a stale copy (as after a missed write): the
    // others hold the newer one.
    op(&mut sim, ids[0], Request::put("q", "new")).unwrap();
    let old = Record {
        value: Some(Bytes::from_static(b"old")),
        version: Hlc::default(),
        expires: None,
    };
    sim.with_node(set[0], |net, _| {
        let kv = net.behavior_mut::<Behaviour>().unwrap();
        kv.store_mut().remove("q");
        kv.store_mut().merge("q", old);
    });
    let r = op(
        &mut sim,
        ids[5],
        Request::Get {
            key: "q".into(),
            quorum: true,
        },
    )
    .unwrap();
    assert_eq!(r.value().map(|v| &v[..]), Some(&b"new"[..]));
    sim.run_for(Duration::from_secs(1)).unwrap();
    let healed = kv(&sim, set[0]).store().get("q").unwrap().value.clone();
    assert_eq!(healed.as_deref(), Some(&b"new"[..]));
    assert!(kv(&sim, set[0]).stats().read_repairs >= 1);
}

#[test]
fn under_churn_keys_keep_two_replicas_and_every_get_returns_the_last_acknowledged_write() {
    let _ = env_logger::builder().is_test(true).try_init();
    let r = crate::sim_support::kv_churn_scenario(
        100,
        1000,
        1.0,
        0.2,
        2.0,
        0.2,
        Duration::from_secs(60),
        1,
    );
    eprintln!("{r:?}");
    assert!(r.min_two_replicas >= 0.999, "{r:?}");
    assert_eq!(r.gets[1], 0, "wrong gets: {:?}", r.wrong);
    assert_eq!(r.gets[2], 0, "failed gets: {:?}", r.errors);
    assert!(r.gets[0] > 5000);
    assert!(r.kills >= 9);
}

#[test]
fn racing_writers_across_a_partition_agree_after_the_heal_and_no_deleted_key_returns() {
    let _ = env_logger::builder().is_test(true).try_init();
    let r = crate::sim_support::kv_partition_scenario(60, 300, Duration::from_secs(60), 1);
    eprintln!("{r:?}");
    assert!(r.acked[0] >= 300 && r.acked[1] >= 300, "{r:?}");
    assert!(r.deleted >= 50, "{r:?}");
    assert!(r.sides_apart.is_some() && r.routes_whole.is_some(), "{r:?}");
    let agreed = r.agreed.expect("replicas agreed");
    assert!(agreed <= r.repair_interval, "{r:?}");
    assert_eq!((r.not_newest, r.resurrected, r.lost), (0, 0, 0), "{r:?}");
}

#[test]
fn a_fifth_of_the_nodes_killed_at_once_loses_only_keys_whose_every_holder_died() {
    let _ = env_logger::builder().is_test(true).try_init();
    let s = crate::sim_support::kv_stack(kv_config());
    let (mut sim, ids, mut rng) = net(50, 8, &s);
    let mut d = crate::sim_support::KvDriver::default();
    for k in 0..1000 {
        let node = ids[rng.below(50) as usize];
        d.put(
            &mut sim,
            node,
            &format!("r{k}"),
            Bytes::from(format!("v{k}")),
        );
    }
    d.drain(&mut sim, Duration::from_millis(20), Duration::from_secs(60));
    assert_eq!(d.writes, [1000, 0]);
    let mut order = ids.clone();
    rng.shuffle(&mut order);
    let dead: BTreeSet<NodeId> = order[..10].iter().copied().collect();
    // Keys whose every holder dies cannot survive.
    let doomed: BTreeSet<String> = d
        .acked
        .keys()
        .filter(|k| holders(&sim, &ids, k).iter().all(|h| dead.contains(h)))
        .cloned()
        .collect();
    for id in &dead {
        sim.kill(*id);
    }
    let alive: Vec<NodeId> = ids.iter().copied().filter(|i| !dead.contains(i)).collect();
    let keys: Vec<String> = d.acked.keys().cloned().collect();
    for k in &keys {
        let node = alive[rng.below(alive.len() as u64) as usize];
        d.get(&mut sim, node, k, false);
    }
    d.drain(&mut sim, Duration::from_millis(20), Duration::from_secs(60));
    eprintln!(
        "doomed {} gets {:?} wrong {:?} errors {:?}",
        doomed.len(),
        d.gets,
        d.wrong,
        d.errors
    );
    let wrong_not_doomed: Vec<_> = d
        .wrong
        .iter()
        .filter(|(k, _, _)| !doomed.contains(k))
        .collect();
    assert!(wrong_not_doomed.is_empty(), "{wrong_not_doomed:?}");
    assert_eq!(d.gets[1] + d.gets[2], doomed.len() as u64, "{:?}", d.errors);
}

#[test]
fn a_deleted_record_stays_deleted_though_its_owner_had_been_republishing_it() {
    let (mut sim, ids, _) = net(16, 9, &stack(kv_config()));
    let put = Request::Put {
        key: "lease".into(),
        value: Bytes::from_static(b"mine"),
        ttl: Some(Duration::from_secs(60)),
    };
    op(&mut sim, ids[0], put).unwrap();
    op(&mut sim, ids[7], Request::delete("lease")).unwrap();
    // The owner's next republish learns of the newer tombstone and stops.
    sim.run_for(Duration::from_secs(120)).unwrap();
    let republished = kv(&sim, ids[0]).stats().republished;
    sim.run_for(Duration::from_secs(600)).unwrap();
    assert_eq!(kv(&sim, ids[0]).stats().republished, republished);
    assert!(republished <= 2, "{republished}");
    assert_eq!(
        op(&mut sim, ids[3], Request::get("lease")),
        Ok(Reply::NotFound)
    );
}
