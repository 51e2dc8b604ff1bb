use super::*;
use crate::broadcast::MsgId;
use crate::membership;
use crate::sim_support::{grow, Stack};
use plexus_network::sim::{LinkConfig, Sim, SimConfig};
use plexus_network::{Network, NodeId, Rng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn stack() -> Stack {
    Stack::new(membership::Config::default().with_shuffle_interval(Duration::from_secs(10)))
        .with_pubsub(Config::default())
}

fn sim(seed: u64, loss: f64) -> Sim {
    let mut sc = SimConfig::new(seed);
    sc.link = LinkConfig::default()
        .with_latency(Duration::from_millis(10))
        .with_jitter(Duration::from_millis(10))
        .with_loss(loss);
    Sim::with_config(sc)
}

fn subscribe(sim: &mut Sim, node: NodeId, topic: Topic) {
    let r = sim
        .rpc::<Behaviour>(node, Request::Subscribe(topic))
        .unwrap();
    assert_eq!(r, Some(Response::Done));
}

fn publish(sim: &mut Sim, node: NodeId, topic: Topic, n: u64) -> MsgId {
    let payload = Bytes::from(n.to_be_bytes().to_vec());
    match sim
        .rpc::<Behaviour>(node, Request::Publish(topic, payload))
        .unwrap()
    {
        Some(Response::Published(id)) => id,
        other => panic!("{other:?}"),
    }
}

/// (node, message) → copies delivered, and every delivery's topic.
fn deliveries(sim: &mut Sim) -> (BTreeMap<(NodeId, MsgId), u32>, BTreeMap<MsgId, Topic>) {
    let mut m = BTreeMap::new();
    let mut topics = BTreeMap::new();
    for e in sim.take_events() {
        let node = e.node;
        if let Ok(ev) = e.event.downcast::<Event>() {
            *m.entry((node, ev.id)).or_default() += 1;
            topics.insert(ev.id, ev.topic);
        }
    }
    (m, topics)
}

struct Scenario {
    sim: Sim,
    ids: Vec<NodeId>,
    subscribers: BTreeMap<Topic, Vec<NodeId>>,
    rng: Rng,
}

/// `n` nodes; `topics` topics with `per_topic` distinct subscribers each.
fn scenario(seed: u64, n: usize, topics: usize, per_topic: usize, loss: f64) -> Scenario {
    let mut sim = sim(seed, loss);
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        n,
        10,
        Duration::from_millis(100),
        &stack(),
    );
    sim.run_for(Duration::from_secs(20)).unwrap();
    let mut pool = ids.clone();
    rng.shuffle(&mut pool);
    let mut subscribers = BTreeMap::new();
    for t in 0..topics {
        let topic = Topic::new(&format!("topic-{t}"));
        let subs: Vec<NodeId> = pool.drain(..per_topic).collect();
        for s in &subs {
            subscribe(&mut sim, *s, topic);
        }
        subscribers.insert(topic, subs);
    }
    sim.run_for(Duration::from_secs(5)).unwrap();
    sim.take_events();
    Scenario {
        sim,
        ids,
        subscribers,
        rng,
    }
}

#[test]
fn subscribers_get_each_publication_once_and_only_tree_members_carry_it() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut s = scenario(1, 300, 10, 6, 0.0);
    let topics: Vec<Topic> = s.subscribers.keys().copied().collect();
    let mut sent: Vec<(MsgId, Topic)> = Vec::new();
    for i in 0..100 {
        let topic = *s.rng.choose(&topics).unwrap();
        let from = *s.rng.choose(&s.ids).unwrap();
        sent.push((publish(&mut s.sim, from, topic, i), topic));
        s.sim.run_for(Duration::from_millis(50)).unwrap();
    }
    s.sim.run_for(Duration::from_secs(10)).unwrap();
    let (got, _) = deliveries(&mut s.sim);
    for (id, topic) in &sent {
        for sub in &s.subscribers[topic] {
            assert_eq!(got.get(&(*sub, *id)), Some(&1), "{sub} of {topic}: {id:?}");
        }
    }
    let subs: BTreeSet<NodeId> = s.subscribers.values().flatten().copied().collect();
    assert!(
        got.keys().all(|(n, _)| subs.contains(n)),
        "only subscribers deliver"
    );
    // Only the members of a topic's tree (its subscribers and the nodes on
    // their paths to its root) carry its publications: most nodes carry
    // none.
    let carriers = s
        .ids
        .iter()
        .filter(|id| {
            let b = s.sim.node(**id).unwrap().behavior::<Behaviour>().unwrap();
            b.stats().trees.gossip_sent > 0
        })
        .count();
    let relays: usize = topics
        .iter()
        .map(|t| {
            s.ids
                .iter()
                .filter(|id| {
                    let b = s.sim.node(**id).unwrap().behavior::<Behaviour>().unwrap();
                    b.is_member(*t) && !s.subscribers[t].contains(id)
                })
                .count()
        })
        .sum();
    eprintln!("pubsub: {carriers} of {} nodes carried publications; {relays} relay memberships for {} subscriptions", s.ids.len(), subs.len());
    assert!(
        carriers < s.ids.len() / 2,
        "{carriers} of {} nodes carried",
        s.ids.len()
    );
}

#[test]
fn under_loss_and_churn_every_steady_subscriber_gets_each_publication_once() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut s = scenario(2, 200, 4, 10, 0.05);
    let topics: Vec<Topic> = s.subscribers.keys().copied().collect();
    let subs: BTreeSet<NodeId> = s.subscribers.values().flatten().copied().collect();
    // 5% of the nodes (none of them subscribers) die and come back during
    // the publications.
    let mut others: Vec<NodeId> = s
        .ids
        .iter()
        .copied()
        .filter(|n| !subs.contains(n))
        .collect();
    s.rng.shuffle(&mut others);
    let churn: Vec<NodeId> = others[..10].to_vec();
    let mut sent: Vec<(MsgId, Topic)> = Vec::new();
    for i in 0..200u64 {
        if i % 20 == 5 {
            for c in &churn[(i as usize / 20) % 2 * 5..][..5] {
                s.sim.kill(*c);
            }
        }
        if i % 20 == 15 {
            for c in &churn {
                s.sim.restart(*c);
            }
        }
        let topic = *s.rng.choose(&topics).unwrap();
        let alive: Vec<NodeId> = s
            .ids
            .iter()
            .copied()
            .filter(|n| s.sim.is_alive(*n))
            .collect();
        let from = *s.rng.choose(&alive).unwrap();
        sent.push((publish(&mut s.sim, from, topic, i), topic));
        s.sim.run_for(Duration::from_millis(50)).unwrap();
    }
    for c in &churn {
        s.sim.restart(*c);
    }
    s.sim.run_for(Duration::from_secs(30)).unwrap();
    let (got, _) = deliveries(&mut s.sim);
    let mut missed = 0;
    for (i, (id, topic)) in sent.iter().enumerate() {
        for sub in &s.subscribers[topic] {
            if got.get(&(*sub, *id)) != Some(&1) {
                missed += 1;
                eprintln!(
                    "missed: publication #{i} {id:?} at {sub} ({topic}): {:?}",
                    got.get(&(*sub, *id))
                );
            }
        }
    }
    assert_eq!(missed, 0);
}

#[test]
fn a_publication_that_claims_another_author_at_its_first_hop_is_dropped() {
    let me = NodeId(1);
    let mut net = Network::builder(me, std::sync::Arc::new(crate::sim_support::NoRoutes(me)))
        .seed(1)
        .behavior(Behaviour::new(
            Config::default().with_neighbours(Neighbours::Connections),
        ))
        .build()
        .unwrap();
    let t = plexus_network::Instant::ZERO;
    let c = net.handle_incoming(t, NodeId(2), None).unwrap();
    let topic = Topic::new("t");
    net.rpc::<Behaviour>(t, Request::Subscribe(topic)).unwrap();
    let frame = |author: u64| {
        let msg = Message::Tree {
            topic,
            msg: crate::broadcast::TreeMsg::Gossip {
                id: MsgId {
                    author: NodeId(author),
                    seq: 1,
                },
                origin: NodeId(author),
                round: 0,
                payload: Bytes::from_static(b"hi"),
            },
        };
        let h = plexus_network::wire::Header {
            service: crate::services::PUBSUB,
            rule: plexus_network::RouteRule::Direct,
            ttl: 1,
            source: NodeId(2),
            unreliable: false,
        };
        plexus_network::wire::Frame::encode(&h, &postcard::to_allocvec(&msg).unwrap()).unwrap()
    };
    while net.poll_output().is_some() {}
    net.handle_frame(t, c, &frame(3));
    let events = std::iter::from_fn(|| net.poll_output())
        .filter(|o| matches!(o, plexus_network::Output::Event(_)))
        .count();
    assert_eq!(events, 0, "a forged first hop is not delivered");
    assert_eq!(net.behavior::<Behaviour>().unwrap().stats().forged, 1);
    net.handle_frame(t, c, &frame(2));
    let delivered: Vec<Event> = std::iter::from_fn(|| net.poll_output())
        .filter_map(|o| match o {
            plexus_network::Output::Event(e) => e.downcast::<Event>().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].verified, "straight from its author");
}

#[test]
fn every_subscriber_of_a_topic_follows_the_same_root_and_few_relay() {
    let s = scenario(3, 300, 10, 6, 0.0);
    for (topic, subs) in &s.subscribers {
        let root = *subs.iter().min().unwrap();
        for sub in subs {
            let b = s.sim.node(*sub).unwrap().behavior::<Behaviour>().unwrap();
            assert_eq!(b.root(*topic, *sub), Some(root), "{sub} of {topic}");
            assert!(b.is_member(*topic));
        }
        let members = s
            .ids
            .iter()
            .filter(|id| {
                s.sim
                    .node(**id)
                    .unwrap()
                    .behavior::<Behaviour>()
                    .unwrap()
                    .is_member(*topic)
            })
            .count();
        assert!(
            members < 40,
            "{topic}: {members} members for {} subscribers",
            subs.len()
        );
    }
}

/// A browser's part of membership: it joins its contact with no address
/// (nothing can dial it), emits the answer, and does nothing else.
#[derive(Debug)]
struct LeafJoin;

impl plexus_network::NetworkBehavior for LeafJoin {
    type Msg = membership::Message;
    type Handler = plexus_network::NoHandler<membership::Message>;
    type Event = bool;
    type Rpc = ();

    fn service_id(&self) -> plexus_network::ServiceId {
        crate::services::MEMBERSHIP
    }

    fn on_connected(
        &mut self,
        agent: &mut plexus_network::BehaviorAgent<'_, Self>,
        info: plexus_network::ConnectionInfo,
    ) -> Option<Self::Handler> {
        agent.send_to_conn(info.conn, membership::Message::Join { addrs: vec![] });
        None
    }

    fn on_message(
        &mut self,
        agent: &mut plexus_network::BehaviorAgent<'_, Self>,
        msg: plexus_network::Incoming<membership::Message>,
    ) {
        if let membership::Message::NeighborReply { accepted } = msg.msg {
            agent.emit(accepted);
        }
    }
}

/// A leaf: [`LeafJoin`], ping, and pubsub over its one connection, joined through
/// `contact`, as the browser page is.
fn add_leaf(sim: &mut Sim, id: NodeId, contact: NodeId) {
    sim.add_node(id, move |id, _| {
        Network::builder(id, Arc::new(crate::sim_support::NoRoutes(id)))
            .bootstrap(contact, plexus_network::Address::Memory(contact.0))
            .behavior(LeafJoin)
            .behavior(crate::ping::Behaviour::new(crate::ping::Config::default()))
            .behavior(Behaviour::new(
                Config::default().with_neighbours(crate::broadcast::Neighbours::Connections),
            ))
            .build()
            .unwrap()
    });
}

#[test]
fn a_leaf_with_no_address_publishes_and_receives_through_its_contact_alone() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut sim = sim(7, 0.0);
    let mut rng = Rng::new(7);
    let mut ids = Vec::new();
    let stack = Stack::new(
        membership::Config::default()
            .with_shuffle_interval(Duration::from_secs(10))
            .with_max_leaves(1),
    )
    .with_pubsub(Config::default());
    grow(
        &mut sim,
        &mut rng,
        &mut ids,
        20,
        5,
        Duration::from_millis(100),
        &stack,
    );
    sim.run_for(Duration::from_secs(20)).unwrap();
    let contact = ids[0];
    let (leaf, refused) = (NodeId(rng.next_u64()), NodeId(rng.next_u64()));
    add_leaf(&mut sim, leaf, contact);
    sim.run_for(Duration::from_secs(1)).unwrap();
    add_leaf(&mut sim, refused, contact);
    let chat = Topic::new("chat");
    let (a, b) = (ids[7], ids[13]);
    for n in [leaf, refused, a, b] {
        subscribe(&mut sim, n, chat);
    }
    sim.run_for(Duration::from_secs(5)).unwrap();
    let answers: BTreeMap<NodeId, bool> = sim
        .take_events()
        .into_iter()
        .filter_map(|e| Some((e.node, e.event.downcast::<bool>().ok()?)))
        .collect();
    assert_eq!(answers.get(&leaf), Some(&true), "{answers:?}");
    assert_eq!(answers.get(&refused), Some(&false), "max_leaves is 1");

    let from_a = publish(&mut sim, a, chat, 1);
    let from_leaf = publish(&mut sim, leaf, chat, 2);
    let from_refused = publish(&mut sim, refused, chat, 3);
    sim.run_for(Duration::from_secs(5)).unwrap();
    let (got, _) = deliveries(&mut sim);
    for n in [leaf, b] {
        assert_eq!(got.get(&(n, from_a)), Some(&1), "{n} gets a's publication");
    }
    for n in [a, b] {
        assert_eq!(got.get(&(n, from_leaf)), Some(&1), "{n} gets the leaf's");
        assert_eq!(
            got.get(&(n, from_refused)),
            None,
            "a refused leaf is no neighbour"
        );
    }
    assert_eq!(got.get(&(refused, from_a)), None);

    // The leaf is its contact's alone: in no view, so nobody tries to dial it.
    let m = |sim: &Sim, n: NodeId| {
        let net = sim.node(n).unwrap();
        let b = net.behavior::<membership::Behaviour>().unwrap();
        let views: BTreeSet<NodeId> = b.active_view().chain(b.passive_view()).collect();
        (b.leaves().collect::<Vec<_>>(), views)
    };
    assert_eq!(m(&sim, contact).0, vec![leaf]);
    for n in &ids {
        let (_, views) = m(&sim, *n);
        assert!(
            !views.contains(&leaf) && !views.contains(&refused),
            "{n}: {views:?}"
        );
        assert!(sim
            .node(*n)
            .unwrap()
            .connections()
            .all(|c| c.node != leaf || *n == contact));
    }

    // The root is one of the nodes, never the leaf, whatever its id.
    let root = |sim: &Sim, n: NodeId| {
        let b = sim.node(n).unwrap().behavior::<Behaviour>().unwrap();
        b.root(chat, n)
    };
    let r = root(&sim, a);
    assert!(
        r.is_some() && r != Some(leaf) && r != Some(refused),
        "{r:?}"
    );
    assert_eq!(root(&sim, b), r);
    assert_eq!(root(&sim, contact), r);

    // A leaf subscribes through its node to 4 topics at most.
    for i in 0..20 {
        subscribe(&mut sim, leaf, Topic::new(&format!("t{i}")));
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    let node = sim.node(contact).unwrap().behavior::<Behaviour>().unwrap();
    let taken = (0..20)
        .filter(|i| node.is_member(Topic::new(&format!("t{i}"))))
        .count();
    assert_eq!(taken, 3, "chat and 3 more");
    assert!(node.stats().leaf_topics_refused >= 17);

    // Gone when its connection closes.
    sim.kill(leaf);
    sim.run_for(Duration::from_secs(10)).unwrap();
    assert!(m(&sim, contact).0.is_empty());
}
