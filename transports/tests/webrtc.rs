//! WebRTC between native nodes, signalled over the overlay: real UDP
//! sockets, DTLS and SCTP on 127.0.0.1. Tests wait on events with a
//! generous timeout that only fails the test; nothing sleeps.

use plexus_network::runtime::{Node, NodeEvent, NodeEvents, NodeHandle, RuntimeConfig, Transport};
use plexus_network::{
    Address, Answer, BehaviorAgent, Incoming, Network, NetworkBehavior, NoHandler, NodeId,
    OutgoingConnectionError, RouteRule, SendOptions, ServiceId,
};
use plexus_router::StaticRouter;
use plexus_transports::memory::{MemoryHub, MemoryTransport};
use plexus_transports::quic::QuicTransport;
use plexus_transports::webrtc::{WebRtcConfig, WebRtcTransport};
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

/// Counts probes: whether they came in order with no gap, and how many;
/// tells the application once `target` have come.
#[derive(Default)]
struct Probe {
    count: u64,
    in_order: bool,
    target: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Count {
    count: u64,
    in_order: bool,
}

impl NetworkBehavior for Probe {
    type Msg = Tagged;
    type Handler = NoHandler<Tagged>;
    type Event = Count;
    type Rpc = (u64, ());

    fn service_id(&self) -> ServiceId {
        PROBE
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Tagged>) {
        self.in_order &= msg.msg.tag == self.count;
        self.count += 1;
        if self.count == self.target {
            agent.emit(Count {
                count: self.count,
                in_order: self.in_order,
            });
        }
    }
    /// Starts counting afresh, to `target`.
    fn on_rpc(&mut self, agent: &mut BehaviorAgent<'_, Self>, target: u64, answer: Answer<()>) {
        *self = Probe {
            count: 0,
            in_order: true,
            target,
        };
        agent.answer(answer, ());
    }
}

struct TestNode {
    handle: NodeHandle,
    events: NodeEvents,
    router: Arc<StaticRouter>,
    rtc: WebRtcTransport,
    addr: Address,
}

impl TestNode {
    fn id(&self) -> NodeId {
        self.handle.node_id()
    }

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

    async fn connected(&mut self, node: NodeId) {
        self.wait_for(|ev| {
            matches!(ev, NodeEvent::Connected { node: n, .. } if *n == node).then_some(())
        })
        .await
    }

    async fn dial_failed(&mut self, node: NodeId) -> OutgoingConnectionError {
        self.wait_for(|ev| match ev {
            NodeEvent::DialFailed(f) if f.node == node => Some(f.error.clone()),
            _ => None,
        })
        .await
    }

    /// Waits until the probe has counted to its target.
    async fn counted(&mut self) -> Count {
        self.wait_for(|ev| match ev {
            NodeEvent::Behaviour(e) => e.downcast_ref::<Count>().copied(),
            _ => None,
        })
        .await
    }
}

/// How a node joins the overlay that carries the signals.
enum Link<'a> {
    Quic,
    /// The memory transport at `mem://addr`, as the node's own id or, for
    /// an impostor, as the id given (the hub vouches for either).
    Mem(&'a MemoryHub, u64, Option<NodeId>),
}

async fn spawn(link: Link<'_>, rtc_cfg: TransportConfig) -> TestNode {
    let id = Identity::generate().unwrap();
    let (overlay, node): (Arc<dyn Transport>, NodeId) = match link {
        Link::Quic => (
            Arc::new(
                QuicTransport::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    &id,
                    TransportConfig::default(),
                )
                .unwrap(),
            ),
            id.node_id(),
        ),
        Link::Mem(hub, addr, claim) => {
            let node = claim.unwrap_or(id.node_id());
            (
                Arc::new(MemoryTransport::new(
                    hub,
                    addr,
                    node,
                    TransportConfig::default(),
                )),
                node,
            )
        }
    };
    let addr = overlay.listen_addrs()[0];
    let rtc = WebRtcTransport::new(&id, rtc_cfg, WebRtcConfig::loopback()).unwrap();
    let router = Arc::new(StaticRouter::new(node));
    let net = Network::builder(node, router.clone())
        .behavior(rtc.signalling())
        .behavior(Probe::default())
        .build()
        .unwrap();
    let (handle, events) = Node::spawn(
        net,
        vec![overlay, Arc::new(rtc.clone())],
        RuntimeConfig::default(),
    );
    rtc.attach(&handle);
    TestNode {
        handle,
        events,
        router,
        rtc,
        addr,
    }
}

/// A —overlay— C —overlay— B, with static routes between A and B via C.
async fn line(a: &mut TestNode, c: &mut TestNode, b: &mut TestNode) {
    let (cid, bid) = (c.id(), b.id());
    a.handle.connect(cid, c.addr).await.unwrap();
    a.connected(cid).await;
    c.handle.connect(bid, b.addr).await.unwrap();
    c.connected(bid).await;
    let aid = a.id();
    a.router.set_route(bid, cid, 2);
    b.router.set_route(aid, cid, 2);
    c.router.set_route(aid, aid, 1);
    c.router.set_route(bid, bid, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_signalled_webrtc_carries_reliable_in_order_and_unreliable() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut a = spawn(Link::Quic, TransportConfig::default()).await;
    let mut c = spawn(Link::Quic, TransportConfig::default()).await;
    let mut b = spawn(Link::Quic, TransportConfig::default()).await;
    line(&mut a, &mut c, &mut b).await;
    let (aid, bid) = (a.id(), b.id());

    // The offer and answer travel A → C → B and back.
    a.handle.connect(bid, Address::WebRtc(bid)).await.unwrap();
    a.connected(bid).await;
    b.connected(aid).await;
    for (n, peer) in [(&a, bid), (&b, aid)] {
        let status = n.handle.status().await.unwrap();
        let conn = status.connections.iter().find(|c| c.node == peer).unwrap();
        assert_eq!(conn.addr, Some(Address::WebRtc(peer)));
    }
    // The route switches to the direct connection.
    a.router.set_route(bid, bid, 1);
    b.router.set_route(aid, aid, 1);

    // 10,000 reliable messages, in order, with frames past one data
    // channel message among them.
    let n = 10_000;
    b.handle.rpc::<Probe>(n).await.unwrap();
    for tag in 0..n {
        let size = if tag % 1000 == 0 { 40_000 } else { 100 };
        let msg = Tagged {
            tag,
            body: vec![7; size],
        };
        a.handle
            .send(PROBE, RouteRule::Node(bid), &msg)
            .await
            .unwrap();
    }
    let got = b.counted().await;
    assert_eq!(
        got,
        Count {
            count: n,
            in_order: true
        }
    );
    // C relayed none of them: they went over WebRTC.
    let relayed = c.handle.status().await.unwrap().stats.forwarded;
    assert!(relayed < 100, "C forwarded {relayed}");

    // Unreliable messages go on the unreliable channel (B counts what it
    // received there); loss is allowed, so count what arrived.
    b.handle.rpc::<Probe>(1).await.unwrap();
    let before = b.rtc.unreliable_received();
    for tag in 0..200 {
        let msg = Tagged {
            tag,
            body: vec![1; 200],
        };
        a.handle
            .send_with(PROBE, RouteRule::Node(bid), &msg, SendOptions::unreliable())
            .await
            .unwrap();
    }
    let got = b.counted().await;
    assert!(got.count >= 1);
    assert!(
        b.rtc.unreliable_received() - before >= got.count,
        "{} arrived, {} on the unreliable channel",
        got.count,
        b.rtc.unreliable_received() - before
    );
    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_prove_the_dialled_id_is_refused() {
    let _ = env_logger::builder().is_test(true).try_init();
    let hub = MemoryHub::new();
    let claimed = NodeId(0x00c0_ffee_0000_0001);
    let mut a = spawn(Link::Mem(&hub, 1, None), TransportConfig::default()).await;
    let mut c = spawn(Link::Mem(&hub, 2, None), TransportConfig::default()).await;
    // The impostor's overlay id is `claimed`, its key is its own.
    let mut b = spawn(
        Link::Mem(&hub, 3, Some(claimed)),
        TransportConfig::default(),
    )
    .await;
    line(&mut a, &mut c, &mut b).await;
    a.handle
        .connect(claimed, Address::WebRtc(claimed))
        .await
        .unwrap();
    match a.dial_failed(claimed).await {
        OutgoingConnectionError::IdentityMismatch { expected, actual } => {
            assert_eq!(expected, claimed);
            assert_ne!(actual, claimed);
        }
        other => panic!("expected an identity mismatch, got {other}"),
    }
    let status = a.handle.status().await.unwrap();
    assert!(status
        .connections
        .iter()
        .all(|c| c.node != claimed || c.addr != Some(Address::WebRtc(claimed))));
    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_network_key_is_refused_before_any_behaviour() {
    let _ = env_logger::builder().is_test(true).try_init();
    let hub = MemoryHub::new();
    let mut a = spawn(Link::Mem(&hub, 1, None), TransportConfig::default()).await;
    let mut c = spawn(Link::Mem(&hub, 2, None), TransportConfig::default()).await;
    let mut b = spawn(
        Link::Mem(&hub, 3, None),
        TransportConfig::default().with_network_secret("other"),
    )
    .await;
    line(&mut a, &mut c, &mut b).await;
    // B's identity is real, its WebRTC network key another.
    let bid = b.id();
    a.handle.connect(bid, Address::WebRtc(bid)).await.unwrap();
    assert_eq!(
        a.dial_failed(bid).await,
        OutgoingConnectionError::NetworkKey
    );
    // B refused first (the answerer checks the offerer's hello before it
    // answers, and A's error is B's refusal): no WebRTC connection on
    // either, now or later.
    for n in [&a, &b] {
        let status = n.handle.status().await.unwrap();
        assert!(status
            .connections
            .iter()
            .all(|c| !matches!(c.addr, Some(Address::WebRtc(_)))));
    }
    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
}

/// The worked example in docs/wire.md is what plexus itself encodes.
#[test]
fn the_wire_doc_example_is_what_plexus_encodes() {
    use plexus_network::wire::{Frame, Header};
    let ping = plexus_behaviours::ping::Message::Ping {
        seq: 3,
        sent_at_us: 1000,
    };
    let payload = postcard::to_allocvec(&ping).unwrap();
    assert_eq!(payload, [0x00, 0x03, 0xe8, 0x07]);
    let header = Header {
        service: ServiceId(1),
        rule: RouteRule::Direct,
        ttl: 16,
        source: NodeId(0x0102_0304_0506_0708),
        unreliable: false,
    };
    let frame = Frame::encode(&header, &payload).unwrap();
    let doc =
        "01 00 01 00 10 00 00 00 00 00 00 00 00 01 02 03 04 05 06 07 08 00 00 00 04 00 03 e8 07";
    let doc: Vec<u8> = doc
        .split(' ')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    assert_eq!(frame, doc);
    assert_eq!(frame.len(), 0x1d);
}

#[test]
fn the_wire_doc_leaf_and_pubsub_examples_are_what_plexus_encodes() {
    use bytes::Bytes;
    use plexus_behaviours::broadcast::{MsgId, TreeMsg};
    use plexus_behaviours::{membership, pubsub};
    let hex = |doc: &str| -> Vec<u8> {
        doc.split([' ', '|'])
            .filter(|b| !b.is_empty())
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    fn enc<T: serde::Serialize>(m: &T) -> Vec<u8> {
        postcard::to_allocvec(m).unwrap()
    }
    let join = membership::Message::Join { addrs: vec![] };
    assert_eq!(enc(&join), hex("00 00"));
    let reply = membership::Message::NeighborReply { accepted: true };
    assert_eq!(enc(&reply), hex("03 01"));
    let chat = pubsub::Topic::new("chat");
    assert_eq!(chat.0, 0xf2a3_8d91_0b5b_348b);
    let me = NodeId(0x0102_0304_0506_0708);
    let interest = |root: u64, dist: u8, parent: bool| {
        pubsub::Message::Interest(vec![(
            chat,
            pubsub::protocol::Advert {
                root: NodeId(root),
                dist,
                parent,
                member: true,
            },
        )])
    };
    assert_eq!(
        enc(&interest(0, pubsub::protocol::NO_ROOT, false)),
        hex("00 01 | 8b e9 ec da 90 b2 e3 d1 f2 01 | 00 | 10 00 01")
    );
    assert_eq!(
        enc(&interest(0x0a, 3, true)),
        hex("00 01 | 8b e9 ec da 90 b2 e3 d1 f2 01 | 0a | 03 01 01")
    );
    let publish = pubsub::Message::Tree {
        topic: chat,
        msg: TreeMsg::Gossip {
            id: MsgId { author: me, seq: 5 },
            origin: me,
            round: 0,
            payload: Bytes::from_static(b"hi"),
        },
    };
    assert_eq!(
        enc(&publish),
        hex("01 | 8b e9 ec da 90 b2 e3 d1 f2 01 | 00 | 88 8e 98 a8 c0 e0 80 81 01 05 | 88 8e 98 a8 c0 e0 80 81 01 | 00 | 02 68 69")
    );
}
