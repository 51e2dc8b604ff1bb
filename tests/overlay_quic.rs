//! Membership, broadcast, pubsub, gossip and ping over real QUIC on 127.0.0.1:
//! five nodes join through one seed, form one overlay and deliver; one is
//! restarted (same identity, new port) and the overlay takes it back.
//! Tests wait on the nodes' events with a generous timeout that only fails
//! the test; nothing sleeps.

use bytes::Bytes;
use plexus::behaviours::pubsub::Topic;
use plexus::behaviours::{broadcast, gossip, membership, pubsub};
use plexus::ping;
use plexus::router::StaticRouter;
use plexus::runtime::{Node, NodeEvent, NodeHandle, RuntimeConfig, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::{Address, Identity, Network, NodeId, TransportConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const NODES: usize = 5;

/// What the nodes have told the test so far.
#[derive(Default)]
struct Seen {
    /// Each node's active view, from its membership events.
    views: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// (node, message author, payload) → deliveries, broadcast and pubsub.
    broadcast: BTreeMap<(NodeId, Bytes), u32>,
    published: BTreeMap<(NodeId, Bytes), u32>,
    /// Nodes that measured an RTT to `peer`.
    rtt: BTreeSet<(NodeId, NodeId)>,
    /// Each node's gossip map, from its change events (every key watched).
    maps: BTreeMap<NodeId, BTreeMap<String, Option<gossip::Value>>>,
}

impl Seen {
    /// The live nodes form one overlay: every view symmetric, nobody alone.
    fn one_overlay(&self, live: &BTreeSet<NodeId>) -> bool {
        let mut reached = BTreeSet::new();
        let Some(&start) = live.iter().next() else {
            return false;
        };
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if !reached.insert(n) {
                continue;
            }
            for m in self.views.get(&n).into_iter().flatten() {
                let back = self.views.get(m).is_some_and(|v| v.contains(&n));
                if live.contains(m) && back {
                    stack.push(*m);
                }
            }
        }
        reached == *live
            && live.iter().all(|n| {
                self.views
                    .get(n)
                    .is_some_and(|v| !v.is_empty() && v.is_subset(live))
            })
    }
}

struct Cluster {
    identities: Vec<Identity>,
    handles: Vec<Option<NodeHandle>>,
    seed: (NodeId, Address),
    /// Events tagged with the node and its instance (a restart is a new one).
    events: mpsc::UnboundedReceiver<(NodeId, u32, NodeEvent)>,
    tx: mpsc::UnboundedSender<(NodeId, u32, NodeEvent)>,
    instance: BTreeMap<NodeId, u32>,
    seen: Seen,
    topic: Topic,
}

impl Cluster {
    async fn start() -> Cluster {
        let (tx, events) = mpsc::unbounded_channel();
        let identities: Vec<Identity> = (0..NODES)
            .map(|_| Identity::generate().expect("a key"))
            .collect();
        let mut c = Cluster {
            identities,
            handles: (0..NODES).map(|_| None).collect(),
            seed: (NodeId(0), Address::Memory(0)),
            events,
            tx,
            instance: BTreeMap::new(),
            seen: Seen::default(),
            topic: Topic::new("t"),
        };
        let first = c.spawn(0, None).await;
        c.seed = (first.node_id(), first.listen_addrs()[0]);
        for i in 1..NODES {
            c.spawn(i, Some(c.seed)).await;
        }
        c
    }

    fn id(&self, i: usize) -> NodeId {
        self.identities[i].node_id()
    }

    fn live(&self) -> BTreeSet<NodeId> {
        (0..NODES)
            .filter(|i| self.handles[*i].is_some())
            .map(|i| self.id(i))
            .collect()
    }

    fn handle(&self, i: usize) -> &NodeHandle {
        self.handles[i].as_ref().expect("running")
    }

    /// Node `i` on a fresh QUIC port, joining through `seed`, subscribed
    /// to the topic; its events go to the test.
    async fn spawn(&mut self, i: usize, seed: Option<(NodeId, Address)>) -> NodeHandle {
        let identity = &self.identities[i];
        let id = identity.node_id();
        let quic = QuicTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            identity,
            TransportConfig::default(),
        )
        .expect("bind");
        let mut builder = Network::builder(id, Arc::new(StaticRouter::new(id)))
            .behavior(ping::Behaviour::new(ping::Config::default()))
            .behavior(membership::Behaviour::new(membership::Config::default()))
            .behavior(broadcast::Behaviour::new(broadcast::Config::default()))
            .behavior(pubsub::Behaviour::new(pubsub::Config::default()))
            .behavior(gossip::Behaviour::<gossip::Value>::new(
                gossip::Config::default().with_watch(""),
            ));
        if let Some((node, addr)) = seed {
            builder = builder.bootstrap(node, addr);
        }
        let transports: Vec<Arc<dyn Transport>> = vec![Arc::new(quic)];
        let (handle, mut events) = Node::spawn(
            builder.build().expect("build"),
            transports,
            RuntimeConfig::default(),
        );
        let tx = self.tx.clone();
        let instance = self.instance.entry(id).or_default();
        *instance += 1;
        let instance = *instance;
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if tx.send((id, instance, e)).is_err() {
                    break;
                }
            }
        });
        handle
            .rpc::<pubsub::Behaviour>(pubsub::Request::Subscribe(self.topic))
            .await
            .expect("subscribe");
        self.seen.views.insert(id, BTreeSet::new());
        self.handles[i] = Some(handle.clone());
        handle
    }

    /// Stops node `i` gracefully.
    async fn stop(&mut self, i: usize) {
        let h = self.handles[i].take().expect("running");
        h.shutdown().await.expect("shutdown");
        // A restarted node is a new instance: what it delivers (old
        // messages too, caught up from its neighbours) is counted afresh.
        let id = h.node_id();
        self.seen.views.remove(&id);
        self.seen.broadcast.retain(|(n, _), _| *n != id);
        self.seen.published.retain(|(n, _), _| *n != id);
        self.seen.maps.remove(&id);
    }

    /// Takes events until `done` holds; panics after [`WAIT`].
    async fn until(&mut self, what: &str, done: impl Fn(&Seen, &BTreeSet<NodeId>) -> bool) {
        let live = self.live();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.seen, &live) {
            let (node, instance, e) =
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Ok(Some(x)) => x,
                    Ok(None) => panic!("event stream ended waiting for {what}"),
                    Err(_) => panic!(
                        "timed out waiting for {what}; live {live:?}, views {:?}",
                        self.seen.views
                    ),
                };
            let NodeEvent::Behaviour(e) = e else {
                continue;
            };
            if !live.contains(&node) || self.instance.get(&node) != Some(&instance) {
                continue;
            }
            if let Some(m) = e.downcast_ref::<membership::Event>() {
                let view = self.seen.views.entry(node).or_default();
                match m {
                    membership::NeighborEvent::Up { node: peer, .. } => {
                        view.insert(*peer);
                    }
                    membership::NeighborEvent::Down { node: peer } => {
                        view.remove(peer);
                    }
                }
            } else if let Some(b) = e.downcast_ref::<broadcast::Event>() {
                *self
                    .seen
                    .broadcast
                    .entry((node, b.payload.clone()))
                    .or_default() += 1;
            } else if let Some(p) = e.downcast_ref::<pubsub::Event>() {
                *self
                    .seen
                    .published
                    .entry((node, p.payload.clone()))
                    .or_default() += 1;
            } else if let Some(g) = e.downcast_ref::<gossip::Event>() {
                self.seen
                    .maps
                    .entry(node)
                    .or_default()
                    .insert(g.key.clone(), g.value.clone());
            } else if let Some(p) = e.downcast_ref::<ping::Event>() {
                if p.result.is_ok() {
                    self.seen.rtt.insert((node, p.peer));
                }
            }
        }
    }

    async fn one_overlay(&mut self) {
        self.until("one overlay", |s, live| s.one_overlay(live))
            .await;
    }

    /// Restarts node `i`: stopped, its neighbours see it leave, started
    /// again with its identity on a new port through the seed (or node 1
    /// when it is the seed), and the overlay takes it back.
    async fn restart(&mut self, i: usize) {
        let id = self.id(i);
        self.stop(i).await;
        self.until("the neighbours to drop the stopped node", |s, _| {
            s.views.values().all(|v| !v.contains(&id))
        })
        .await;
        let seed = if i == 0 {
            (self.id(1), self.handle(1).listen_addrs()[0])
        } else {
            self.seed
        };
        self.spawn(i, Some(seed)).await;
        self.one_overlay().await;
    }
}

fn payload(tag: &str, i: usize) -> Bytes {
    Bytes::from(format!("{tag}-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_forms_one_overlay_and_takes_a_restarted_node_back() {
    let mut c = Cluster::start().await;
    c.one_overlay().await;
    // Ping measures every overlay link.
    c.until("an RTT on every overlay link", |s, _| {
        s.views
            .iter()
            .all(|(n, v)| v.iter().all(|m| s.rtt.contains(&(*n, *m))))
    })
    .await;
    c.restart(2).await;
    let id = c.id(2);
    let view = match c
        .handle(2)
        .rpc::<membership::Behaviour>(membership::Request::ActiveView)
        .await
        .unwrap()
    {
        membership::Response::ActiveView(v) => v,
        other => panic!("{other:?}"),
    };
    assert!(!view.is_empty(), "{id} has neighbours");
    for i in 0..NODES {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_node_once_across_a_restart() {
    let mut c = Cluster::start().await;
    c.one_overlay().await;
    let send_all = |c: &Cluster, tag: &'static str| {
        let handles: Vec<NodeHandle> = (0..NODES).map(|i| c.handle(i).clone()).collect();
        async move {
            for (i, h) in handles.iter().enumerate() {
                let req = broadcast::Request::Broadcast(payload(tag, i));
                h.rpc::<broadcast::Behaviour>(req).await.expect("broadcast");
            }
        }
    };
    send_all(&c, "before").await;
    c.until("every node to deliver every message", |s, live| {
        live.iter()
            .all(|n| (0..NODES).all(|i| s.broadcast.contains_key(&(*n, payload("before", i)))))
    })
    .await;
    c.restart(3).await;
    send_all(&c, "after").await;
    c.until(
        "every node, the restarted one too, to deliver",
        |s, live| {
            live.iter()
                .all(|n| (0..NODES).all(|i| s.broadcast.contains_key(&(*n, payload("after", i)))))
        },
    )
    .await;
    assert!(
        c.seen.broadcast.values().all(|n| *n == 1),
        "delivered more than once: {:?}",
        c.seen
            .broadcast
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect::<Vec<_>>()
    );
    for i in 0..NODES {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_delivers_to_every_subscriber_once_across_a_restart() {
    let mut c = Cluster::start().await;
    c.one_overlay().await;
    let topic = c.topic;
    let publish_all = |c: &Cluster, tag: &'static str| {
        let handles: Vec<NodeHandle> = (0..NODES).map(|i| c.handle(i).clone()).collect();
        async move {
            for (i, h) in handles.iter().enumerate() {
                let req = pubsub::Request::Publish(topic, payload(tag, i));
                h.rpc::<pubsub::Behaviour>(req).await.expect("publish");
            }
        }
    };
    publish_all(&c, "before").await;
    c.until(
        "every subscriber to deliver every publication",
        |s, live| {
            live.iter()
                .all(|n| (0..NODES).all(|i| s.published.contains_key(&(*n, payload("before", i)))))
        },
    )
    .await;
    // The root of the topic's tree (the smallest subscriber id) is the
    // node whose restart hurts most.
    let root = (0..NODES).min_by_key(|i| c.id(*i)).unwrap();
    c.restart(root).await;
    publish_all(&c, "after").await;
    c.until(
        "every subscriber, the restarted one too, to deliver",
        |s, live| {
            live.iter()
                .all(|n| (0..NODES).all(|i| s.published.contains_key(&(*n, payload("after", i)))))
        },
    )
    .await;
    assert!(
        c.seen.published.values().all(|n| *n == 1),
        "delivered more than once: {:?}",
        c.seen
            .published
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect::<Vec<_>>()
    );
    for i in 0..NODES {
        c.stop(i).await;
    }
}

fn count(v: Option<&Option<gossip::Value>>) -> i64 {
    match v {
        Some(Some(gossip::Value::PnCounter(c))) => c.value(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_converges_on_every_node_across_a_restart() {
    let mut c = Cluster::start().await;
    c.one_overlay().await;
    let write_all = |c: &Cluster, round: usize| {
        let handles: Vec<NodeHandle> = (0..NODES).map(|i| c.handle(i).clone()).collect();
        async move {
            for (i, h) in handles.iter().enumerate() {
                let add = gossip::Request::Update {
                    key: "hits".into(),
                    op: gossip::Op::Add(1),
                };
                h.rpc::<gossip::Behaviour>(add).await.expect("update");
                let set = gossip::Request::Update {
                    key: format!("r{round}-{i}"),
                    op: gossip::Op::Assign(payload("v", i)),
                };
                h.rpc::<gossip::Behaviour>(set).await.expect("update");
            }
            let del = gossip::Request::Delete(format!("r{round}-0"));
            handles[1]
                .rpc::<gossip::Behaviour>(del)
                .await
                .expect("delete");
        }
    };
    let converged = |round: usize, hits: i64| {
        move |s: &Seen, live: &BTreeSet<NodeId>| {
            live.iter().all(|n| {
                s.maps.get(n).is_some_and(|m| {
                    count(m.get("hits")) == hits
                        && (0..=round).all(|r| {
                            matches!(m.get(&format!("r{r}-0")), None | Some(None))
                                && (1..NODES)
                                    .all(|i| matches!(m.get(&format!("r{r}-{i}")), Some(Some(_))))
                        })
                })
            })
        }
    };
    write_all(&c, 0).await;
    c.until("every node to hold round 0", converged(0, NODES as i64))
        .await;
    // Node 4 goes away with what it wrote, comes back empty as itself,
    // and gets everything back (its own old increments included).
    c.restart(4).await;
    write_all(&c, 1).await;
    c.until(
        "every node, the restarted one too, to hold round 1",
        converged(1, 2 * NODES as i64),
    )
    .await;
    let mut values = BTreeSet::new();
    for i in 0..NODES {
        let get = gossip::Request::Get("hits".into());
        match c.handle(i).rpc::<gossip::Behaviour>(get).await.unwrap() {
            gossip::Response::Value(v) => values.insert(format!("{v:?}")),
            other => panic!("{other:?}"),
        };
    }
    assert_eq!(values.len(), 1, "one value everywhere: {values:?}");
    for i in 0..NODES {
        c.stop(i).await;
    }
}
