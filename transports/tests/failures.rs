//! Real nodes on 127.0.0.1 when something fails inside them: a behaviour
//! that panics (only it is disabled; the node keeps forwarding), a driver
//! that dies (listeners closed, handles say "failed"), and a connection the
//! core refuses after the handshake (never announced, never "disconnected").

use plexus_network::runtime::{
    Node, NodeError, NodeEvent, NodeEvents, NodeHandle, RuntimeConfig, Transport,
};
use plexus_network::{
    Answer, BehaviorAgent, ConnectionInfo, ConnectionRejectReason, Direction, Incoming, Network,
    NetworkBehavior, NoHandler, NodeId, OutgoingConnectionError, RejectReason, RouteAction,
    RouteRule, RouterTable, ServiceId,
};
use plexus_router::dv;
use plexus_transports::memory::{MemoryHub, MemoryTransport};
use plexus_transports::quic::QuicTransport;
use plexus_transports::{Identity, TransportConfig};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const FRAGILE: ServiceId = ServiceId(150);
const NOTES: ServiceId = ServiceId(151);

/// Panics on the message "poison"; answers its RPC with how many
/// messages it took.
#[derive(Default)]
struct Fragile {
    seen: u64,
}

impl NetworkBehavior for Fragile {
    type Msg = String;
    type Handler = NoHandler<String>;
    type Event = ();
    type Rpc = ((), u64);
    fn service_id(&self) -> ServiceId {
        FRAGILE
    }
    fn on_message(&mut self, _: &mut BehaviorAgent<'_, Self>, msg: Incoming<String>) {
        assert_ne!(msg.msg, "poison", "Fragile cannot digest poison");
        self.seen += 1;
    }
    fn on_rpc(&mut self, agent: &mut BehaviorAgent<'_, Self>, _: (), answer: Answer<u64>) {
        agent.answer(answer, self.seen);
    }
}

/// Tells the application every note that reaches it.
struct Notes;

impl NetworkBehavior for Notes {
    type Msg = String;
    type Handler = NoHandler<String>;
    type Event = (NodeId, String);
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        NOTES
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<String>) {
        agent.emit((msg.source, msg.msg));
    }
}

struct TestNode {
    handle: NodeHandle,
    events: NodeEvents,
    addr: plexus_network::Address,
}

impl TestNode {
    async fn wait_for<T>(&mut self, mut f: impl FnMut(NodeEvent) -> Option<T>) -> T {
        let fut = async {
            loop {
                let ev = self.events.next().await.expect("an event");
                if let Some(t) = f(ev) {
                    return t;
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("event within the timeout")
    }
}

/// A QUIC node with the distance-vector router, Fragile and Notes.
fn quic_node() -> TestNode {
    let id = Identity::generate().unwrap();
    let quic = QuicTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &id,
        TransportConfig::default(),
    )
    .unwrap();
    let addr = quic.listen_addrs()[0];
    let router = Arc::new(dv::DvRouter::new(id.node_id()));
    let net = Network::builder(id.node_id(), router.clone())
        .behavior(dv::Behaviour::new(router, dv::Config::default()))
        .behavior(Fragile::default())
        .behavior(Notes)
        .build()
        .unwrap();
    let (handle, events) = Node::spawn(net, vec![Arc::new(quic)], RuntimeConfig::default());
    TestNode {
        handle,
        events,
        addr,
    }
}

/// Waits for `node`'s router to announce a route to `dest`.
async fn routes_to(node: &mut TestNode, dest: NodeId) {
    node.wait_for(|ev| match ev {
        NodeEvent::RouteChanged(c) if c.dest == dest && c.next_hop.is_some() => Some(()),
        _ => None,
    })
    .await;
}

/// A–B–C over QUIC. A message makes B's behaviour panic: B reports it,
/// refuses that behaviour's messages and RPCs with an error, and keeps
/// its connections, its router and its other behaviours — A still reaches
/// C through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_behaviour_is_contained_and_the_node_keeps_forwarding() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (mut a, mut b, mut c) = (quic_node(), quic_node(), quic_node());
    let (aid, bid, cid) = (a.handle.node_id(), b.handle.node_id(), c.handle.node_id());
    a.handle.connect(bid, b.addr).await.unwrap();
    b.handle.connect(cid, c.addr).await.unwrap();
    routes_to(&mut a, cid).await;
    routes_to(&mut c, aid).await;

    a.handle
        .send(FRAGILE, RouteRule::Node(bid), &"poison".to_string())
        .await
        .unwrap();
    let failure = b
        .wait_for(|ev| match ev {
            NodeEvent::BehaviorFailed(f) => Some(f),
            _ => None,
        })
        .await;
    assert_eq!(failure.service, FRAGILE);
    assert_eq!(failure.callback, "on_message");
    assert!(
        failure.message.contains("cannot digest poison"),
        "{failure}"
    );
    assert!(failure.behavior.ends_with("Fragile"), "{failure}");

    // Its RPCs answer with an error; its messages are refused and counted.
    let err = b.handle.rpc::<Fragile>(()).await.unwrap_err();
    assert_eq!(
        err,
        NodeError::Rpc(plexus_network::RpcError::BehaviorFailed(FRAGILE))
    );
    a.handle
        .send(FRAGILE, RouteRule::Node(bid), &"more".to_string())
        .await
        .unwrap();
    b.wait_for(|ev| match ev {
        NodeEvent::Dropped(d) if d.reason == plexus_network::DropReason::BehaviorFailed => Some(()),
        _ => None,
    })
    .await;

    // B still forwards: A reaches C through it, and C answers back.
    a.handle
        .send(NOTES, RouteRule::Node(cid), &"through B".to_string())
        .await
        .unwrap();
    let got = c
        .wait_for(|ev| match ev {
            NodeEvent::Behaviour(e) => e.downcast::<(NodeId, String)>().ok(),
            _ => None,
        })
        .await;
    assert_eq!(got, (aid, "through B".to_string()));
    let status = b.handle.status().await.unwrap();
    assert_eq!(status.connections.len(), 2);
    assert_eq!(status.failed_services, vec![FRAGILE]);
    assert_eq!(status.stats.behavior_failures, 1);
    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
}

/// Routes everything locally, and panics when asked for node 666: a bug
/// outside any behaviour, which kills the driver.
struct TrapRouter;

impl RouterTable for TrapRouter {
    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        assert_ne!(dest, NodeId(666), "the router trips on 666");
        RouteAction::Local
    }
    fn path_to_key(&self, _: NodeId) -> RouteAction {
        RouteAction::Local
    }
    fn path_to_service(&self, _: ServiceId) -> RouteAction {
        RouteAction::Reject(RejectReason::NoService)
    }
}

/// When the driver dies, the runtime notices: the last event says so, every
/// handle call says the node failed (not that it was shut down), and the
/// QUIC port no longer completes handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_driver_closes_its_listeners_and_handles_say_it_failed() {
    let _ = env_logger::builder().is_test(true).try_init();
    let id = Identity::generate().unwrap();
    let quic = QuicTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &id,
        TransportConfig::default(),
    )
    .unwrap();
    let addr = quic.listen_addrs()[0];
    let net = Network::builder(id.node_id(), Arc::new(TrapRouter))
        .behavior(Notes)
        .build()
        .unwrap();
    let (handle, mut events) = Node::spawn(net, vec![Arc::new(quic)], RuntimeConfig::default());
    handle
        .send(NOTES, RouteRule::Node(NodeId(666)), &"trip".to_string())
        .await
        .unwrap();
    // A call queued behind the fatal send says "failed" at once, not
    // "closed", even before the supervisor has recorded why.
    let early = handle.status().await.unwrap_err();
    assert!(matches!(early, NodeError::Failed(_)), "{early:?}");
    let why = tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(NodeEvent::Failed(why)) => return why,
                Some(_) => continue,
                None => panic!("the event stream ended without saying why"),
            }
        }
    })
    .await
    .expect("the failure within the timeout");
    assert!(why.contains("the router trips on 666"), "{why}");
    assert!(events.next().await.is_none(), "Failed is the last event");
    let err = handle.status().await.unwrap_err();
    assert!(
        matches!(err, NodeError::Failed(ref w) if w.contains("666")),
        "{err:?}"
    );

    // No zombie: a dial to its port does not come up.
    let probe_id = Identity::generate().unwrap();
    let probe_quic = QuicTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &probe_id,
        TransportConfig::default(),
    )
    .unwrap();
    let probe_net = Network::builder(probe_id.node_id(), Arc::new(TrapRouter))
        .build()
        .unwrap();
    let quick = RuntimeConfig {
        handshake_timeout: Duration::from_millis(500),
        ..RuntimeConfig::default()
    };
    let (probe, mut probe_events) = Node::spawn(probe_net, vec![Arc::new(probe_quic)], quick);
    probe.connect(id.node_id(), addr).await.unwrap();
    let err = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(NodeEvent::DialFailed(f)) = probe_events.next().await {
                return f.error;
            }
        }
    })
    .await
    .expect("the dial fails within the timeout");
    assert!(
        matches!(
            err,
            OutgoingConnectionError::Timeout | OutgoingConnectionError::Transport(_)
        ),
        "{err:?}"
    );
    probe.shutdown().await.unwrap();
}

/// Refuses outgoing connections: the core closes them after the handshake.
struct NoDialOut;

impl NetworkBehavior for NoDialOut {
    type Msg = ();
    type Handler = NoHandler<()>;
    type Event = ();
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        ServiceId(152)
    }
    fn check_connection(&mut self, conn: &ConnectionInfo) -> Result<(), ConnectionRejectReason> {
        match conn.direction {
            Direction::Outgoing => Err(ConnectionRejectReason::Custom("no dialling out".into())),
            Direction::Incoming => Ok(()),
        }
    }
}

/// An outgoing connection the core refuses was never announced, so the
/// application hears a failed dial and no `Disconnected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_outgoing_connection_is_a_failed_dial_not_a_disconnection() {
    let hub = MemoryHub::new();
    let spawn = |addr: u64, refuse: bool| {
        let id = Identity::generate().unwrap();
        let t = MemoryTransport::new(&hub, addr, id.node_id(), TransportConfig::default());
        let mut b = Network::builder(id.node_id(), Arc::new(TrapRouter));
        if refuse {
            b = b.behavior(NoDialOut);
        }
        Node::spawn(
            b.build().unwrap(),
            vec![Arc::new(t)],
            RuntimeConfig::default(),
        )
    };
    let (a, mut a_events) = spawn(1, true);
    let (b, _b_events) = spawn(2, false);
    a.connect(b.node_id(), plexus_network::Address::Memory(2))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let failure = tokio::time::timeout(WAIT, async {
        loop {
            match a_events.next().await.expect("running") {
                NodeEvent::DialFailed(f) => return f,
                other => seen.push(format!("{other:?}")),
            }
        }
    })
    .await
    .expect("the refusal within the timeout");
    assert_eq!(
        failure.error,
        OutgoingConnectionError::Rejected(ConnectionRejectReason::Custom("no dialling out".into()))
    );
    // Anything that comes after the failure is not a disconnection either.
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), a_events.next()).await
    {
        seen.push(format!("{ev:?}"));
    }
    assert!(
        !seen
            .iter()
            .any(|e| e.starts_with("Connected") || e.starts_with("Disconnected")),
        "{seen:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Routes everything to one neighbour.
struct ToNeighbour(NodeId);

impl RouterTable for ToNeighbour {
    fn path_to_node(&self, dest: NodeId) -> RouteAction {
        if dest == self.0 {
            RouteAction::Next(dest)
        } else {
            RouteAction::Local
        }
    }
    fn path_to_key(&self, _: NodeId) -> RouteAction {
        RouteAction::Local
    }
    fn path_to_service(&self, _: ServiceId) -> RouteAction {
        RouteAction::Reject(RejectReason::NoService)
    }
}

/// An application send waiting for room in a connection's queue when that
/// connection dies is dropped (and reported), and the node goes on taking
/// commands: it used to stop taking them for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_blocked_on_a_connection_that_dies_does_not_wedge_the_node() {
    let _ = env_logger::builder().is_test(true).try_init();
    let hub = MemoryHub::new();
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let tiny = RuntimeConfig {
        send_queue: 2,
        ..RuntimeConfig::default()
    };
    let ta = MemoryTransport::new(&hub, 1, ia.node_id(), TransportConfig::default());
    let tb = MemoryTransport::new(&hub, 2, ib.node_id(), TransportConfig::default());
    let net_a = Network::builder(ia.node_id(), Arc::new(ToNeighbour(ib.node_id())))
        .build()
        .unwrap();
    let net_b = Network::builder(ib.node_id(), Arc::new(TrapRouter))
        .behavior(Notes)
        .build()
        .unwrap();
    let (a, mut a_events) = Node::spawn(net_a, vec![Arc::new(ta)], tiny);
    let (b, mut b_events) = Node::spawn(net_b, vec![Arc::new(tb)], RuntimeConfig::default());
    a.connect(ib.node_id(), plexus_network::Address::Memory(2))
        .await
        .unwrap();
    let sender = {
        let a = a.clone();
        let bid = ib.node_id();
        tokio::spawn(async move {
            let note = "x".repeat(1000);
            for _ in 0..100_000 {
                if a.send(NOTES, RouteRule::Node(bid), &note).await.is_err() {
                    break;
                }
            }
        })
    };
    // B hears the stream, then stops mid-way: A's connection dies with
    // frames (and a blocked send) in it.
    tokio::time::timeout(WAIT, async {
        while !matches!(b_events.next().await, Some(NodeEvent::Behaviour(_))) {}
    })
    .await
    .expect("the stream reaches B");
    b.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("the sender is never stuck")
        .unwrap();
    let status = tokio::time::timeout(WAIT, a.status())
        .await
        .expect("A still answers")
        .unwrap();
    assert!(status.connections.is_empty());
    assert!(
        status.stats.dropped > 0,
        "what could not be sent was reported"
    );
    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, a_events.next()).await {}
    a.shutdown().await.unwrap();
}
