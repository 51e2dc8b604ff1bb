//! Real sockets on 127.0.0.1: every scenario over QUIC and over TCP (and
//! the in-memory transport where it applies). Tests wait on events with a
//! generous timeout that only fails the test; nothing sleeps.

use plexus_behaviours::ping;
use plexus_network::runtime::{Node, NodeEvent, NodeEvents, NodeHandle, RuntimeConfig, Transport};
use plexus_network::{
    Answer, BehaviorAgent, ConnId, ConnectionInfo, DropReason, Incoming, Network, NetworkBehavior,
    NetworkConfig, NoHandler, NodeId, OutgoingConnectionError, RouteRule, ServiceId,
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
    /// Quiet mode reached its target: how many arrived, and whether every
    /// one arrived in order with no gap.
    AllReceived {
        count: u64,
        in_order: bool,
    },
}

/// In quiet mode (set by RPC) the probe emits nothing per message: it
/// checks the order itself and reports once, when `target` have arrived.
#[derive(Default)]
struct Probe {
    target: Option<u64>,
    count: u64,
    in_order: bool,
}

impl NetworkBehavior for Probe {
    type Msg = Tagged;
    type Handler = NoHandler<Tagged>;
    type Event = Seen;
    type Rpc = (u64, ());

    fn service_id(&self) -> ServiceId {
        PROBE
    }
    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<NoHandler<Tagged>> {
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
        let Some(target) = self.target else {
            agent.emit(Seen::Received {
                source: msg.source,
                tag: msg.msg.tag,
                len: msg.msg.body.len(),
            });
            return;
        };
        self.in_order &= msg.msg.tag == self.count;
        self.count += 1;
        if self.count == target {
            agent.emit(Seen::AllReceived {
                count: self.count,
                in_order: self.in_order,
            });
        }
    }
    fn on_rpc(&mut self, agent: &mut BehaviorAgent<'_, Self>, target: u64, answer: Answer<()>) {
        *self = Probe {
            target: Some(target),
            count: 0,
            in_order: true,
        };
        agent.answer(answer, ());
    }
}

/// Sends a burst of probe-service messages from inside a behaviour (so the
/// runtime drops, rather than holds, what does not fit a send queue).
struct Flood;

impl NetworkBehavior for Flood {
    type Msg = ();
    type Handler = NoHandler<()>;
    type Event = ();
    type Rpc = ((ConnId, u64), ());
    fn service_id(&self) -> ServiceId {
        ServiceId(201)
    }
    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        (conn, n): (ConnId, u64),
        answer: Answer<()>,
    ) {
        for _ in 0..n {
            agent.send_to_conn(conn, ());
        }
        agent.answer(answer, ());
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
    spawn_with(
        kind,
        cfg,
        NetworkConfig::default(),
        RuntimeConfig::default(),
        hub,
        mem_addr,
    )
    .await
}

async fn spawn_with(
    kind: Kind,
    cfg: TransportConfig,
    ncfg: NetworkConfig,
    rcfg: RuntimeConfig,
    hub: &MemoryHub,
    mem_addr: u64,
) -> TestNode {
    let id = Identity::generate().unwrap();
    let transport = transport(kind, &id, cfg, hub, mem_addr).await;
    let addr = transport.listen_addrs()[0];
    let router = Arc::new(StaticRouter::new(id.node_id()));
    let net = Network::builder(id.node_id(), router.clone())
        .config(ncfg)
        .seed(mem_addr)
        .behavior(ping::Behaviour::new(
            ping::Config::default().with_interval(Duration::from_millis(200)),
        ))
        .behavior(Probe::default())
        .behavior(Flood)
        .build()
        .unwrap();
    let (handle, events) = Node::spawn(net, vec![transport], rcfg);
    TestNode {
        handle,
        events,
        router,
        addr,
    }
}

/// A listening transport of `kind` on 127.0.0.1 (or `mem://mem_addr`).
async fn transport(
    kind: Kind,
    id: &Identity,
    cfg: TransportConfig,
    hub: &MemoryHub,
    mem_addr: u64,
) -> Arc<dyn Transport> {
    let local = "127.0.0.1:0".parse().unwrap();
    match kind {
        Kind::Quic => Arc::new(QuicTransport::bind(local, id, cfg).unwrap()),
        Kind::Tcp => Arc::new(TcpTransport::bind(local, id, cfg).await.unwrap()),
        Kind::Mem => Arc::new(MemoryTransport::new(hub, mem_addr, id.node_id(), cfg)),
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

/// One hop A → B: B counts in quiet mode while A sends `n` tagged messages
/// of `size` bytes with `opts`; returns what B reports once all arrived.
async fn stream_probes(
    a: &TestNode,
    b: &mut TestNode,
    n: u64,
    size: usize,
    opts: plexus_network::SendOptions,
) -> Seen {
    let bid = b.id();
    a.router.set_route(bid, bid, 1);
    b.handle.rpc::<Probe>(n).await.unwrap();
    for tag in 0..n {
        let msg = Tagged {
            tag,
            body: vec![7; size],
        };
        a.handle
            .send_with(PROBE, RouteRule::Node(bid), &msg, opts)
            .await
            .unwrap();
    }
    b.seen(|s| matches!(s, Seen::AllReceived { .. })).await
}

/// Sends `n` probes tagged 0, 1, … of `size` bytes to `to`, from a task.
fn send_tagged(h: &NodeHandle, to: NodeId, n: u64, size: usize) -> tokio::task::JoinHandle<()> {
    let h = h.clone();
    tokio::spawn(async move {
        for tag in 0..n {
            let msg = Tagged {
                tag,
                body: vec![1; size],
            };
            h.send(PROBE, RouteRule::Node(to), &msg).await.unwrap();
        }
    })
}

async fn shutdown_all<'a>(nodes: impl IntoIterator<Item = &'a TestNode>) {
    for n in nodes {
        n.handle.shutdown().await.unwrap();
    }
}

async fn ping_measures_rtt(kind: Kind) {
    let started = tokio::time::Instant::now();
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
    // The driver worked (a connection, pings), and far less than the wall
    // time the test took: it mostly waited.
    let busy = status.driver_busy;
    assert!(busy > Duration::ZERO, "{busy:?}");
    assert!(busy < started.elapsed(), "{busy:?}");
    shutdown_all(&v).await;
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
    shutdown_all(&v).await;
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
    shutdown_all(&v).await;
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
    // The application hears it, with the reason, and so do behaviours.
    let bid = b.id();
    a.wait_for(|ev| match ev {
        NodeEvent::DialFailed(f) if f.node == bid => {
            assert_eq!(f.error, OutgoingConnectionError::NetworkKey);
            Some(())
        }
        _ => None,
    })
    .await;
    let failed = a.seen(|s| matches!(s, Seen::DialFailed(..))).await;
    assert_eq!(
        failed,
        Seen::DialFailed(bid, OutgoingConnectionError::NetworkKey)
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
    shutdown_all([&a, &b, &c]).await;
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
    shutdown_all([&a, &b, &c]).await;
}

async fn ten_thousand_messages_arrive_in_order(kind: Kind) {
    let mut v = nodes(kind, 2).await;
    let (l, r) = v.split_at_mut(1);
    let (a, b) = (&mut l[0], &mut r[0]);
    link(a, b).await;
    let got = stream_probes(a, b, 10_000, 64, Default::default()).await;
    let all = Seen::AllReceived {
        count: 10_000,
        in_order: true,
    };
    assert_eq!(got, all);
    let dropped = a.handle.status().await.unwrap().stats.dropped;
    assert_eq!(dropped, 0, "nothing dropped at the sender");
    shutdown_all(&v).await;
}

async fn connection_limit_refuses_the_extra_peer(kind: Kind) {
    let hub = MemoryHub::new();
    let one = NetworkConfig {
        max_connections: 1,
        ..NetworkConfig::default()
    };
    let mut b = spawn_with(
        kind,
        TransportConfig::default(),
        one,
        RuntimeConfig::default(),
        &hub,
        1,
    )
    .await;
    let mut a1 = spawn(kind, TransportConfig::default(), &hub, 2).await;
    let mut a2 = spawn(kind, TransportConfig::default(), &hub, 3).await;
    link(&mut a1, &mut b).await;
    let bid = b.id();
    a2.handle.connect(bid, b.addr).await.unwrap();
    // The transport handshake completes, then B's core refuses: A2 sees
    // the connection go down (or never come up).
    a2.wait_for(|ev| match ev {
        NodeEvent::Disconnected { node, .. } if *node == bid => Some(()),
        NodeEvent::Behaviour(e) => {
            matches!(e.downcast_ref::<Seen>(), Some(Seen::DialFailed(..))).then_some(())
        }
        _ => None,
    })
    .await;
    let status = b.handle.status().await.unwrap();
    assert_eq!(status.connections.len(), 1);
    assert_eq!(status.connections[0].node, a1.id());
    shutdown_all([&a1, &a2, &b]).await;
}

async fn full_send_queue_drops_behaviour_frames_and_reports_them(kind: Kind) {
    let hub = MemoryHub::new();
    let tiny = RuntimeConfig {
        send_queue: 4,
        ..RuntimeConfig::default()
    };
    let mut a = spawn_with(
        kind,
        TransportConfig::default(),
        NetworkConfig::default(),
        tiny,
        &hub,
        1,
    )
    .await;
    let mut b = spawn(kind, TransportConfig::default(), &hub, 2).await;
    link(&mut a, &mut b).await;
    let conn = a.handle.status().await.unwrap().connections[0].conn;
    // All 1,000 are queued or dropped within the call.
    a.handle.rpc::<Flood>((conn, 1000)).await.unwrap();
    let counted = a.handle.status().await.unwrap().stats.dropped;
    assert!(
        counted > 0,
        "a 4-frame queue cannot take 1,000 frames at once"
    );
    assert!(counted < 1000);
    // Each drop counted is reported, in order. (Reading until the count,
    // not until the queue is empty at some instant: a ping dropped after
    // the flood is reported later, and counted later too.)
    let mut dropped = 0;
    a.wait_for(|ev| {
        if let NodeEvent::Dropped(d) = ev {
            assert_eq!(d.reason, DropReason::QueueFull(conn));
            dropped += 1;
        }
        (dropped == counted).then_some(())
    })
    .await;
    shutdown_all([&a, &b]).await;
}

async fn app_sends_wait_for_a_full_queue_instead_of_dropping(kind: Kind) {
    let hub = MemoryHub::new();
    let tiny = RuntimeConfig {
        send_queue: 2,
        app_bytes_in_flight: 4096,
        ..RuntimeConfig::default()
    };
    let mut a = spawn_with(
        kind,
        TransportConfig::default(),
        NetworkConfig::default(),
        tiny,
        &hub,
        1,
    )
    .await;
    let mut b = spawn(kind, TransportConfig::default(), &hub, 2).await;
    link(&mut a, &mut b).await;
    let got = stream_probes(&a, &mut b, 5_000, 512, Default::default()).await;
    let all = Seen::AllReceived {
        count: 5_000,
        in_order: true,
    };
    assert_eq!(got, all);
    // The application's frames waited for room; a behaviour's frame (a
    // ping, here) that finds the 2-frame queue full is dropped and
    // reported, as documented. None of the dropped is the application's.
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(0), a.events.next()).await {
        if let NodeEvent::Dropped(d) = ev {
            assert_ne!(d.service, PROBE, "an application frame was dropped: {d:?}");
        }
    }
    shutdown_all([&a, &b]).await;
}

/// A → B → C with B's queues tiny: A sends flat out, B forwards at C's
/// pace, and flow control makes A wait instead of B dropping. Everything
/// arrives in order; nobody drops anything, pings included.
async fn a_relay_slows_the_sender_instead_of_dropping(kind: Kind) {
    let hub = MemoryHub::new();
    let tiny = RuntimeConfig {
        send_queue: 16,
        ..RuntimeConfig::default()
    };
    let mut a = spawn(kind, TransportConfig::default(), &hub, 1).await;
    let mut b = spawn_with(
        kind,
        TransportConfig::default(),
        NetworkConfig::default(),
        tiny,
        &hub,
        2,
    )
    .await;
    let mut c = spawn(kind, TransportConfig::default(), &hub, 3).await;
    link(&mut a, &mut b).await;
    link(&mut b, &mut c).await;
    let cid = c.id();
    a.router.set_route(cid, b.id(), 2);
    b.router.set_route(cid, cid, 1);
    const N: u64 = 20_000;
    c.handle.rpc::<Probe>(N).await.unwrap();
    for tag in 0..N {
        let msg = Tagged {
            tag,
            body: vec![7; 1024],
        };
        a.handle
            .send(PROBE, RouteRule::Node(cid), &msg)
            .await
            .unwrap();
    }
    let got = c.seen(|s| matches!(s, Seen::AllReceived { .. })).await;
    assert_eq!(
        got,
        Seen::AllReceived {
            count: N,
            in_order: true
        }
    );
    for n in [&mut a, &mut b, &mut c] {
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(0), n.events.next()).await
        {
            if let NodeEvent::Dropped(d) = ev {
                panic!("{} dropped {d:?}", n.id());
            }
        }
    }
    for (name, n) in [("A", &a), ("B", &b), ("C", &c)] {
        let st = n.handle.status().await.unwrap();
        assert_eq!(st.stats.dropped, 0, "{name} dropped nothing");
        assert_eq!(st.connections.len(), if name == "B" { 2 } else { 1 });
    }
    assert_eq!(
        b.handle.status().await.unwrap().stats.forwarded,
        N,
        "B forwarded every message"
    );
    shutdown_all([&a, &b, &c]).await;
}

/// Records the tags it receives; at the `kill_at`-th, fires `kill`.
struct Tally {
    tags: Arc<std::sync::Mutex<Vec<u64>>>,
    kill_at: usize,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NetworkBehavior for Tally {
    type Msg = Tagged;
    type Handler = NoHandler<Tagged>;
    type Event = ();
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        PROBE
    }
    fn on_message(&mut self, _: &mut BehaviorAgent<'_, Self>, msg: Incoming<Tagged>) {
        let mut tags = self.tags.lock().unwrap();
        tags.push(msg.msg.tag);
        if tags.len() == self.kill_at {
            if let Some(k) = self.kill.take() {
                let _ = k.send(());
            }
        }
    }
}

/// A → B → C, and C dies abruptly (its runtime dropped: no close, no
/// goodbye) while A sends flat out: every message reaches C once, in
/// order, or A hears that it was dropped — also the frames B had written
/// to C that C never confirmed.
async fn a_next_hop_that_dies_loses_nothing_silently(kind: Kind) {
    const N: u64 = 3_000;
    let hub = MemoryHub::new();
    // B gives up on a silent QUIC peer after 2 s (TCP and memory see the
    // socket or channel close at once).
    let quick = TransportConfig {
        idle_timeout: Duration::from_secs(2),
        keep_alive: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    let mut a = spawn(kind, TransportConfig::default(), &hub, 1).await;
    let mut b = spawn(kind, quick, &hub, 2).await;
    link(&mut a, &mut b).await;
    let tags = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let c_thread = std::thread::spawn({
        let (hub, tags) = (hub.clone(), tags.clone());
        move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let id = Identity::generate().unwrap();
                let t = transport(kind, &id, TransportConfig::default(), &hub, 3).await;
                let addr = t.listen_addrs()[0];
                let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
                let net = Network::builder(id.node_id(), Arc::new(StaticRouter::new(id.node_id())))
                    .seed(3)
                    .behavior(Tally {
                        tags,
                        kill_at: 300,
                        kill: Some(kill_tx),
                    })
                    .build()
                    .unwrap();
                let (handle, mut events) = Node::spawn(net, vec![t], RuntimeConfig::default());
                up_tx.send((handle.node_id(), addr)).unwrap();
                tokio::select! {
                    _ = kill_rx => {}
                    () = async { while events.next().await.is_some() {} } => {}
                }
            });
            // Every task of C dies here, mid-flight: dropped, no close, no
            // goodbye. Waiting for the worker thread to stop (it finishes
            // the poll it is in) means C handles nothing after `tags` is
            // read below; with `shutdown_background` it could go on with
            // a batch of frames for a moment, and confirm them to B.
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    });
    let (cid, caddr) = tokio::time::timeout(WAIT, up_rx).await.unwrap().unwrap();
    b.handle.connect(cid, caddr).await.unwrap();
    b.wait_for(|ev| matches!(ev, NodeEvent::Connected { node, .. } if *node == cid).then_some(()))
        .await;
    a.router.set_route(cid, b.id(), 2);
    b.router.set_route(cid, cid, 1);
    // B's drop notices go back to A.
    b.router.set_route(a.id(), a.id(), 1);
    let sender = {
        let h = a.handle.clone();
        tokio::spawn(async move {
            for tag in 0..N {
                let msg = Tagged {
                    tag,
                    body: vec![7; 1024],
                };
                h.send(PROBE, RouteRule::Node(cid), &msg).await.unwrap();
            }
        })
    };
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || c_thread.join()))
        .await
        .expect("C is killed")
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("A's sends finish")
        .unwrap();
    let received = tags.lock().unwrap().clone();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "C received each message once, in order"
    );
    let mut reported = 0u64;
    let deadline = tokio::time::Instant::now() + WAIT;
    while (received.len() as u64) + reported < N {
        match tokio::time::timeout_at(deadline, a.events.next()).await {
            Ok(Some(NodeEvent::Dropped(d))) if d.rule == RouteRule::Node(cid) => {
                reported += u64::from(d.count);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!(
                "{N} sent, C received {}, A heard of {reported} dropped: {} unaccounted",
                received.len(),
                N - received.len() as u64 - reported
            ),
        }
    }
    eprintln!(
        "{kind:?}: C received {}, A heard {reported} dropped, of {N}",
        received.len()
    );
    assert!(reported > 0, "C died before the end");
    assert!(received.len() >= 300, "C received until it died");
    shutdown_all([&a, &b]).await;
}

/// An application that reads one event per millisecond, behind a queue of
/// eight: the sender slows down, and every message reaches it in order.
async fn a_slow_application_loses_nothing(kind: Kind) {
    let hub = MemoryHub::new();
    let small = RuntimeConfig {
        app_event_queue: 8,
        ..RuntimeConfig::default()
    };
    let mut a = spawn(kind, TransportConfig::default(), &hub, 1).await;
    let mut b = spawn_with(
        kind,
        TransportConfig::default(),
        NetworkConfig::default(),
        small,
        &hub,
        2,
    )
    .await;
    link(&mut a, &mut b).await;
    let bid = b.id();
    a.router.set_route(bid, bid, 1);
    const N: u64 = 1_000;
    let sender = send_tagged(&a.handle, bid, N, 8 << 10);
    let mut next = 0;
    while next < N {
        let ev = tokio::time::timeout(WAIT, b.events.next())
            .await
            .expect("an event within the timeout")
            .expect("node running");
        if let NodeEvent::Behaviour(e) = ev {
            if let Some(Seen::Received { tag, .. }) = e.downcast_ref::<Seen>() {
                assert_eq!(*tag, next, "in order, none missing");
                next += 1;
                // The slow reader: one event per millisecond.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    sender.await.unwrap();
    // Every message arrived (checked above, in order) and none was dropped
    // anywhere. Events that carry no message (ping's RTTs every 200 ms)
    // may overflow the 8-event queue while 2,000 messages wait: they are
    // counted in `app_events_dropped`, by design.
    for n in [&a, &b] {
        assert_eq!(n.handle.status().await.unwrap().stats.dropped, 0);
    }
    shutdown_all([&a, &b]).await;
}

/// An application that takes its events in batches gets every message's
/// event once, in order.
async fn events_in_batches_arrive_in_order(kind: Kind) {
    let mut v = nodes(kind, 2).await;
    let (l, r) = v.split_at_mut(1);
    let (a, b) = (&mut l[0], &mut r[0]);
    link(a, b).await;
    let bid = b.id();
    a.router.set_route(bid, bid, 1);
    const N: u64 = 2_000;
    let sender = send_tagged(&a.handle, bid, N, 100);
    let (mut next, mut batch) = (0, Vec::new());
    while next < N {
        let got = tokio::time::timeout(WAIT, b.events.next_batch(&mut batch, 64))
            .await
            .expect("events within the timeout");
        assert!(got > 0 && got <= 64 && got == batch.len(), "{got}");
        for ev in batch.drain(..) {
            if let NodeEvent::Behaviour(e) = ev {
                if let Some(Seen::Received { tag, .. }) = e.downcast_ref::<Seen>() {
                    assert_eq!(*tag, next, "in order, none missing");
                    next += 1;
                }
            }
        }
    }
    sender.await.unwrap();
    assert_eq!(b.events.next_batch(&mut batch, 0).await, 0);
    shutdown_all(&v).await;
}

/// Dialling something that accepts but never completes a handshake fails
/// with a timeout after `RuntimeConfig::handshake_timeout`.
async fn dial_handshake_times_out(kind: Kind) {
    let hub = MemoryHub::new();
    let quick = RuntimeConfig {
        handshake_timeout: Duration::from_millis(300),
        ..RuntimeConfig::default()
    };
    let mut a = spawn_with(
        kind,
        TransportConfig::default(),
        NetworkConfig::default(),
        quick,
        &hub,
        1,
    )
    .await;
    // A socket that takes the connection (TCP) or the packets (UDP) and never answers.
    let (addr, _keep): (plexus_network::Address, Box<dyn std::any::Any + Send>) = match kind {
        Kind::Tcp => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (
                plexus_network::Address::Tcp(l.local_addr().unwrap()),
                Box::new(l),
            )
        }
        Kind::Quic => {
            let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            (
                plexus_network::Address::Quic(u.local_addr().unwrap()),
                Box::new(u),
            )
        }
        Kind::Mem => unreachable!("generated for sockets only"),
    };
    let target = NodeId(99);
    a.handle.connect(target, addr).await.unwrap();
    let failed = a.seen(|s| matches!(s, Seen::DialFailed(..))).await;
    assert_eq!(
        failed,
        Seen::DialFailed(target, OutgoingConnectionError::Timeout)
    );
    a.handle.shutdown().await.unwrap();
}

/// A peer that connects and never completes the handshake is dropped by
/// the listener after `TransportConfig::handshake_timeout`: over TCP a
/// client that never starts TLS, over QUIC one that completes the QUIC
/// handshake but never opens the stream with its network-key proof.
async fn accept_handshake_times_out(kind: Kind) {
    let hub = MemoryHub::new();
    let cfg = TransportConfig {
        handshake_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let b = spawn(kind, cfg, &hub, 1).await;
    match b.addr {
        plexus_network::Address::Tcp(sa) => {
            let mut raw = tokio::net::TcpStream::connect(sa).await.unwrap();
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut raw, &mut buf))
                .await
                .expect("closed within the timeout")
                .unwrap_or(0);
            assert_eq!(n, 0, "the listener closed the silent connection");
        }
        plexus_network::Address::Quic(sa) => {
            let id = Identity::generate().unwrap();
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
                plexus_transports::tls::client_config(&id).unwrap(),
            )
            .unwrap();
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let conn = ep
                .connect(sa, plexus_transports::tls::SERVER_NAME)
                .unwrap()
                .await
                .unwrap();
            let why = tokio::time::timeout(WAIT, conn.closed())
                .await
                .expect("closed within the timeout");
            assert!(
                matches!(
                    why,
                    quinn::ConnectionError::ApplicationClosed(_)
                        | quinn::ConnectionError::ConnectionClosed(_)
                ),
                "closed by the listener: {why:?}"
            );
        }
        other => unreachable!("generated for sockets only: {other}"),
    }
    assert!(b.handle.status().await.unwrap().connections.is_empty());
    b.handle.shutdown().await.unwrap();
}

/// Messages marked unreliable travel as QUIC datagrams (on TCP and memory,
/// on the stream): on loopback, all arrive.
async fn unreliable_messages_arrive(kind: Kind) {
    let mut v = nodes(kind, 2).await;
    let (l, r) = v.split_at_mut(1);
    let (a, b) = (&mut l[0], &mut r[0]);
    link(a, b).await;
    let opts = plexus_network::SendOptions {
        unreliable: true,
        ..Default::default()
    };
    // Datagrams may be reordered: count them, not their order.
    let got = stream_probes(a, b, 20, 200, opts).await;
    assert!(
        matches!(got, Seen::AllReceived { count: 20, .. }),
        "{got:?}"
    );
    shutdown_all(&v).await;
}

macro_rules! over {
    ($($name:ident: $($kind:ident),+;)*) => {
        $(
            mod $name {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[allow(non_snake_case)]
                    async fn $kind() {
                        let _ = env_logger::builder().is_test(true).try_init();
                        super::$name(Kind::$kind).await
                    }
                )+
            }
        )*
    };
}

over! {
    ping_measures_rtt: Quic, Tcp, Mem;
    message_crosses_a_four_node_chain: Quic, Tcp, Mem;
    wrong_expected_id_is_refused: Quic, Tcp, Mem;
    other_network_key_is_refused_before_any_behaviour: Quic, Tcp, Mem;
    oversized_frame_closes_only_that_connection: Quic, Tcp, Mem;
    ten_thousand_messages_arrive_in_order: Quic, Tcp, Mem;
    connection_limit_refuses_the_extra_peer: Quic, Tcp, Mem;
    full_send_queue_drops_behaviour_frames_and_reports_them: Quic, Tcp, Mem;
    app_sends_wait_for_a_full_queue_instead_of_dropping: Quic, Tcp, Mem;
    dial_handshake_times_out: Quic, Tcp;
    accept_handshake_times_out: Quic, Tcp;
    unreliable_messages_arrive: Quic, Tcp, Mem;
    a_relay_slows_the_sender_instead_of_dropping: Quic, Tcp, Mem;
    a_slow_application_loses_nothing: Quic, Tcp, Mem;
    a_next_hop_that_dies_loses_nothing_silently: Quic, Tcp, Mem;
    events_in_batches_arrive_in_order: Quic, Tcp, Mem;
}
