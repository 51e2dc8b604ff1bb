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

mod hostile {
    //! A neighbour that speaks the router's protocol badly, on purpose.
    use crate::kad::{self, Contact, Find, Found, Message};
    use plexus_network::sim::Sim;
    use plexus_network::{
        BehaviorAgent, Incoming, Network, NetworkBehavior, NoHandler, NodeId, RouteRule, ServiceId,
    };
    use std::sync::Arc;
    use std::time::Duration;

    /// Sends whatever the test queued to every neighbour once connected.
    struct Liar(Vec<Message>);

    impl NetworkBehavior for Liar {
        type Msg = Message;
        type Handler = NoHandler<Message>;
        type Event = ();
        type Rpc = ();
        fn service_id(&self) -> ServiceId {
            kad::SERVICE
        }
        fn on_connected(
            &mut self,
            agent: &mut BehaviorAgent<'_, Self>,
            info: plexus_network::ConnectionInfo,
        ) -> Option<NoHandler<Message>> {
            for m in self.0.drain(..) {
                agent.send_to_conn(info.conn, m);
            }
            None
        }
        fn on_message(&mut self, _: &mut BehaviorAgent<'_, Self>, _: Incoming<Message>) {}
    }

    fn status(sim: &mut Sim, id: NodeId) -> kad::Status {
        match sim.rpc::<kad::Behaviour>(id, kad::Request::Status) {
            Ok(Some(kad::Response::Status(s))) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_state_forged_answers_and_looping_lookups_change_nothing_they_should_not() {
        let honest = NodeId(0x8000_0000_0000_0000);
        let liar = NodeId(1);
        let lies = vec![
            // 10,000 links: only 64 (`max_advertised`) are kept.
            Message::State {
                addrs: vec![],
                links: (2..10_002).collect(),
                services: (0..=255u8).map(|s| (s, 0)).chain([(7, 200)]).collect(),
            },
            // An answer to a lookup the honest node never made.
            Message::Found(Found {
                id: 42,
                bucket: 3,
                contacts: vec![Contact {
                    node: 0x9000_0000_0000_0000,
                    addrs: vec![],
                }],
                path: vec![honest.0],
            }),
            // A lookup whose path already holds the honest node: a loop.
            Message::Find(Find {
                id: 1,
                origin: Contact {
                    node: liar.0,
                    addrs: vec![],
                },
                target: 5,
                bucket: 63,
                path: vec![liar.0, honest.0, liar.0],
                detours: 200,
            }),
            // A lookup that claims to come from a node that did not send it.
            Message::Find(Find {
                id: 2,
                origin: Contact {
                    node: 77,
                    addrs: vec![],
                },
                target: 5,
                bucket: 3,
                path: vec![77],
                detours: 1,
            }),
        ];
        let mut sim = Sim::new(3);
        sim.add_node(honest, |id, _| {
            let r = Arc::new(kad::KadRouter::new(id));
            Network::builder(id, r.clone())
                .behavior(kad::Behaviour::new(r, kad::Config::default()))
                .build()
                .unwrap()
        });
        let mut lies = Some(lies);
        sim.add_node(liar, move |id, _| {
            Network::builder(id, Arc::new(crate::StaticRouter::new(id)))
                .behavior(Liar(lies.take().unwrap_or_default()))
                .build()
                .unwrap()
        });
        sim.connect(liar, honest);
        sim.run_for(Duration::from_secs(2)).unwrap();
        let s = status(&mut sim, honest);
        // One link, its 64 kept ids, the services (each at most once).
        assert_eq!(s.links.len(), 1);
        assert!(s.entries <= 1 + 64 + 256, "{} entries", s.entries);
        assert!(s.services.len() <= 256);
        // The forged answer was not taken: no answer counted, no bucket
        // marked empty because of it.
        assert_eq!(s.stats.answers, 0);
        assert!(!s.empty_buckets.contains(&3), "{:?}", s.empty_buckets);
        // Both bad lookups were dropped, not walked on or answered.
        assert_eq!(s.stats.finds_handled, 2);
        assert_eq!(s.stats.lost_walks, 0);
        assert!(sim.is_alive(honest));
        // The honest node still routes to its one link.
        let node = sim.node(honest).unwrap();
        assert_eq!(
            node.router().path_to(&RouteRule::Node(liar), kad::SERVICE),
            plexus_network::RouteAction::Next(liar)
        );
    }
}
