//! Real sockets on 127.0.0.1: every scenario over QUIC and over TCP (and
//! the in-memory transport where it applies). Tests wait on events with a
//! generous timeout that only fails the test; nothing sleeps.

use plexus_behaviours::ping;
use plexus_network::runtime::{Node, NodeEvent, NodeEvents, NodeHandle, RuntimeConfig, Transport};
use plexus_network::{
    BehaviorAgent, ConnId, ConnectionHandler, ConnectionInfo, Incoming, Network, NetworkBehavior,
    NodeId, OutgoingConnectionError, RouteRule, ServiceId,
};
use plexus_router::StaticRouter;
use plexus_transports::memory::{MemoryHub, MemoryTransport};
use plexus_transports::quic::QuicTransport;
use plexus_transports::tcp::TcpTransport;
use plexus_transports::{Identity, TransportConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const PROBE: ServiceId = ServiceId(200);
const WAIT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Tagged {
    tag: u64,
    body: Vec<u8>,
}

/// What the probe reports: messages that reach it, and every connection
/// callback (so a test can prove none fired).
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Received {
        source: NodeId,
        tag: u64,
        len: usize,
    },
    Connected(NodeId),
    DialFailed(NodeId, OutgoingConnectionError),
}

struct Probe;

impl NetworkBehavior for Probe {
    type Msg = Tagged;
    type HandlerEvent = ();
    type BehaviorEvent = ();
    type Event = Seen;
    type Request = ();
    type Response = ();

    fn service_id(&self) -> ServiceId {
        PROBE
    }
    fn on_incoming_connection_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Box<dyn ConnectionHandler<Self>>> {
        agent.emit(Seen::Connected(conn.node));
        None
    }
    fn on_outgoing_connection_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Box<dyn ConnectionHandler<Self>>> {
        agent.emit(Seen::Connected(conn.node));
        None
    }
    fn on_outgoing_connection_error(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        node: NodeId,
        _conn: ConnId,
        err: &OutgoingConnectionError,
    ) {
        agent.emit(Seen::DialFailed(node, err.clone()));
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Tagged>) {
        agent.emit(Seen::Received {
            source: msg.source,
            tag: msg.msg.tag,
            len: msg.msg.body.len(),
        });
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Quic,
    Tcp,
    Mem,
}

struct TestNode {
    handle: NodeHandle,
    events: NodeEvents,
    router: Arc<StaticRouter>,
    addr: plexus_network::Address,
}

impl TestNode {
    fn id(&self) -> NodeId {
        self.handle.node_id()
    }

    /// Waits until `f` picks an event out, or fails the test after WAIT.
    async fn wait_for<T>(&mut self, mut f: impl FnMut(&NodeEvent) -> Option<T>) -> T {
        let fut = async {
            loop {
                let ev = self.events.next().await.expect("node running");
                if let Some(t) = f(&ev) {
                    return t;
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("event within the timeout")
    }

    async fn seen(&mut self, mut f: impl FnMut(&Seen) -> bool) -> Seen {
        self.wait_for(|ev| match ev {
            NodeEvent::Behaviour(e) => e.downcast_ref::<Seen>().filter(|s| f(s)).cloned(),
            _ => None,
        })
        .await
    }
}

async fn spawn(kind: Kind, cfg: TransportConfig, hub: &MemoryHub, mem_addr: u64) -> TestNode {
    let id = Identity::generate().unwrap();
    let local = "127.0.0.1:0".parse().unwrap();
    let transport: Arc<dyn Transport> = match kind {
        Kind::Quic => Arc::new(QuicTransport::bind(local, &id, cfg).unwrap()),
        Kind::Tcp => Arc::new(TcpTransport::bind(local, &id, cfg).await.unwrap()),
        Kind::Mem => Arc::new(MemoryTransport::new(hub, mem_addr, id.node_id(), cfg)),
    };
    let addr = transport.listen_addrs()[0];
    let router = Arc::new(StaticRouter::new(id.node_id()));
    let net = Network::builder(id.node_id(), router.clone())
        .seed(mem_addr)
        .behavior(ping::Behaviour::new(
            ping::Config::default().with_interval(Duration::from_millis(200)),
        ))
        .behavior(Probe)
        .build()
        .unwrap();
    let (handle, events) = Node::spawn(net, vec![transport], RuntimeConfig::default());
    TestNode {
        handle,
        events,
        router,
        addr,
    }
}

async fn nodes(kind: Kind, n: usize) -> Vec<TestNode> {
    let hub = MemoryHub::new();
    let mut v = Vec::new();
    for i in 0..n {
        v.push(spawn(kind, TransportConfig::default(), &hub, i as u64 + 1).await);
    }
    v
}

/// `a` dials `b`; returns once both ends report the connection.
async fn link(a: &mut TestNode, b: &mut TestNode) {
    let (bid, aid) = (b.id(), a.id());
    a.handle.connect(bid, b.addr).await.unwrap();
    a.seen(|s| *s == Seen::Connected(bid)).await;
    b.seen(|s| *s == Seen::Connected(aid)).await;
}

async fn ping_measures_rtt(kind: Kind) {
    let mut v = nodes(kind, 2).await;
    let (a, b) = v.split_at_mut(1);
    link(&mut a[0], &mut b[0]).await;
    let bid = b[0].id();
    let rtt = a[0]
        .wait_for(|ev| match ev {
            NodeEvent::Behaviour(e) => e
                .downcast_ref::<ping::Event>()
                .filter(|p| p.peer == bid)
                .and_then(|p| p.result.ok()),
            _ => None,
        })
        .await;
    assert!(
        rtt > Duration::ZERO && rtt < Duration::from_secs(1),
        "{rtt:?}"
    );
    let status = a[0].handle.status().await.unwrap();
    assert_eq!(status.connections.len(), 1);
    assert!(status.connections[0].rtt.is_some(), "status shows the RTT");
    for n in &v {
        n.handle.shutdown().await.unwrap();
    }
}

async fn message_crosses_a_four_node_chain(kind: Kind) {
    let mut v = nodes(kind, 4).await;
    let ids: Vec<NodeId> = v.iter().map(|n| n.id()).collect();
    for (i, n) in v.iter().enumerate() {
        for (j, dest) in ids.iter().enumerate() {
            if i != j {
                let hop = if j > i { ids[i + 1] } else { ids[i - 1] };
                n.router.set_route(*dest, hop, i.abs_diff(j) as u32);
            }
        }
    }
    for i in 0..3 {
        let (l, r) = v.split_at_mut(i + 1);
        link(&mut l[i], &mut r[0]).await;
    }
    v[0].handle
        .send(
            PROBE,
            RouteRule::Node(ids[3]),
            &Tagged {
                tag: 42,
                body: vec![1; 100],
            },
        )
        .await
        .unwrap();
    let got = v[3].seen(|s| matches!(s, Seen::Received { .. })).await;
    assert_eq!(
        got,
        Seen::Received {
            source: ids[0],
            tag: 42,
            len: 100
        }
    );
    for i in [1, 2] {
        assert_eq!(
            v[i].handle.status().await.unwrap().stats.forwarded,
            1,
            "node {i} forwarded"
        );
    }
    for n in &v {
        n.handle.shutdown().await.unwrap();
    }
}

async fn wrong_expected_id_is_refused(kind: Kind) {
    let mut v = nodes(kind, 2).await;
    let wrong = NodeId(v[1].id().0 ^ 1);
    let addr = v[1].addr;
    v[0].handle.connect(wrong, addr).await.unwrap();
    let failed = v[0].seen(|s| matches!(s, Seen::DialFailed(..))).await;
    let actual = v[1].id();
    assert_eq!(
        failed,
        Seen::DialFailed(
            wrong,
            OutgoingConnectionError::IdentityMismatch {
                expected: wrong,
                actual
            }
        )
    );
    assert!(v[0].handle.status().await.unwrap().connections.is_empty());
    for n in &v {
        n.handle.shutdown().await.unwrap();
    }
}

async fn other_network_key_is_refused_before_any_behaviour(kind: Kind) {
    let hub = MemoryHub::new();
    let keyed = || TransportConfig::default().with_network_secret("alpha");
    let mut b = spawn(kind, keyed(), &hub, 1).await;
    let mut a = spawn(
        kind,
        TransportConfig::default().with_network_secret("beta"),
        &hub,
        2,
    )
    .await;
    let mut c = spawn(kind, keyed(), &hub, 3).await;
    a.handle.connect(b.id(), b.addr).await.unwrap();
    let failed = a.seen(|s| matches!(s, Seen::DialFailed(..))).await;
    assert!(
        matches!(failed, Seen::DialFailed(_, OutgoingConnectionError::Transport(ref e)) if e.contains("network key mismatch")),
        "{failed:?}"
    );
    // A node with the right key gets in; B's behaviours saw only that one.
    link(&mut c, &mut b).await;
    let status = b.handle.status().await.unwrap();
    assert_eq!(status.connections.len(), 1);
    assert_eq!(status.connections[0].node, c.id());
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::ZERO, b.events.next()).await {
        if let NodeEvent::Behaviour(e) = &ev {
            if let Some(Seen::Connected(n)) = e.downcast_ref::<Seen>() {
                assert_ne!(*n, a.id(), "no behaviour saw the node with the other key");
            }
        }
        if let NodeEvent::Connected { node, .. } = ev {
            assert_ne!(node, a.id());
        }
    }
    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
}

async fn oversized_frame_closes_only_that_connection(kind: Kind) {
    let hub = MemoryHub::new();
    let small = TransportConfig::default().with_max_frame_size(1024);
    let mut b = spawn(kind, small, &hub, 1).await;
    let mut a = spawn(kind, TransportConfig::default(), &hub, 2).await;
    let mut c = spawn(kind, TransportConfig::default(), &hub, 3).await;
    link(&mut a, &mut b).await;
    link(&mut c, &mut b).await;
    let (aid, bid, cid) = (a.id(), b.id(), c.id());
    a.router.set_route(bid, bid, 1);
    c.router.set_route(bid, bid, 1);
    a.handle
        .send(
            PROBE,
            RouteRule::Node(bid),
            &Tagged {
                tag: 1,
                body: vec![0; 10_000],
            },
        )
        .await
        .unwrap();
    b.wait_for(|ev| {
        matches!(ev, NodeEvent::Disconnected { node, .. } if *node == aid).then_some(())
    })
    .await;
    c.handle
        .send(
            PROBE,
            RouteRule::Node(bid),
            &Tagged {
                tag: 2,
                body: vec![0; 100],
            },
        )
        .await
        .unwrap();
    let got = b.seen(|s| matches!(s, Seen::Received { .. })).await;
    assert_eq!(
        got,
        Seen::Received {
            source: cid,
            tag: 2,
            len: 100
        },
        "the big one never arrived"
    );
    let status = b.handle.status().await.unwrap();
    assert_eq!(
        status
            .connections
            .iter()
            .map(|c| c.node)
            .collect::<Vec<_>>(),
        vec![cid]
    );
    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
}

async fn ten_thousand_messages_arrive_in_order(kind: Kind) {
    let mut v = nodes(kind, 2).await;
    let (l, r) = v.split_at_mut(1);
    let (a, b) = (&mut l[0], &mut r[0]);
    link(a, b).await;
    let bid = b.id();
    a.router.set_route(bid, bid, 1);
    let aid = a.id();
    let sender = a.handle.clone();
    let send = tokio::spawn(async move {
        for tag in 0..10_000u64 {
            sender
                .send(
                    PROBE,
                    RouteRule::Node(bid),
                    &Tagged {
                        tag,
                        body: vec![7; 64],
                    },
                )
                .await
                .unwrap();
        }
    });
    let mut next = 0u64;
    while next < 10_000 {
        let got = b.seen(|s| matches!(s, Seen::Received { .. })).await;
        assert_eq!(
            got,
            Seen::Received {
                source: aid,
                tag: next,
                len: 64
            }
        );
        next += 1;
    }
    send.await.unwrap();
    let status = b.handle.status().await.unwrap();
    assert_eq!(status.app_events_dropped, 0);
    for n in &v {
        n.handle.shutdown().await.unwrap();
    }
}

macro_rules! over {
    ($($name:ident: $kinds:expr;)*) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn quic() {
                    let _ = env_logger::builder().is_test(true).try_init();
                    super::$name(Kind::Quic).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tcp() {
                    let _ = env_logger::builder().is_test(true).try_init();
                    super::$name(Kind::Tcp).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mem() {
                    if $kinds { super::$name(Kind::Mem).await }
                }
            }
        )*
    };
}

over! {
    ping_measures_rtt: true;
    message_crosses_a_four_node_chain: true;
    wrong_expected_id_is_refused: true;
    other_network_key_is_refused_before_any_behaviour: true;
    oversized_frame_closes_only_that_connection: true;
    ten_thousand_messages_arrive_in_order: true;
}
