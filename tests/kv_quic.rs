//! The kv store over real QUIC on 127.0.0.1: five nodes (membership, ping,
//! the distance-vector router, kv); puts from one node, gets from another;
//! the holder of some keys killed, the gets still answered; the store
//! re-replicated, a second holder killed, still answered. Waits poll the
//! nodes' own status with a generous timeout that only fails the test.

use plexus::behaviours::{kv, membership};
use plexus::ping;
use plexus::router::dv;
use plexus::runtime::{Node, NodeHandle, RuntimeConfig, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::{Identity, Network, NetworkBuilder, NodeId, TransportConfig};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const KEYS: usize = 40;

/// A node on QUIC 127.0.0.1 with the dv router and what `add` adds,
/// joining through `contact`; its events are drained.
fn spawn(
    contact: Option<&NodeHandle>,
    add: impl FnOnce(NetworkBuilder) -> NetworkBuilder,
) -> NodeHandle {
    let identity = Identity::generate().expect("key");
    let id = identity.node_id();
    let quic = QuicTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        TransportConfig::default(),
    )
    .expect("bind 127.0.0.1");
    let router = Arc::new(dv::DvRouter::new(id));
    let mut b = add(Network::builder(id, router.clone())
        .behavior(dv::Behaviour::new(router, dv::Config::default())));
    if let Some(c) = contact {
        b = b.bootstrap(c.node_id(), c.listen_addrs()[0]);
    }
    let (handle, mut events) = Node::spawn(
        b.build().expect("build"),
        vec![Arc::new(quic) as Arc<dyn Transport>],
        RuntimeConfig::default(),
    );
    tokio::spawn(async move { while events.next().await.is_some() {} });
    handle
}

/// A kv node: membership, ping, kv.
fn node(contact: Option<&NodeHandle>) -> NodeHandle {
    spawn(contact, |b| {
        b.behavior(membership::Behaviour::new(membership::Config::default()))
            .behavior(ping::Behaviour::new(
                ping::Config::default()
                    .with_interval(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(3))
                    .with_emit_rtt(false),
            ))
            .behavior(kv::Behaviour::new(
                kv::Config::default().with_repair_delay(Duration::from_millis(200)),
            ))
    })
}

/// Polls `check` every 50 ms until it holds; fails the test after `WAIT`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let done = tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "timed out waiting for {what}");
}

async fn routed(nodes: &[NodeHandle]) -> bool {
    for h in nodes {
        match h.status().await {
            Ok(s) if s.routes.len() + 1 >= nodes.len() => {}
            _ => return false,
        }
    }
    true
}

async fn records(nodes: &[NodeHandle]) -> u64 {
    let mut n = 0;
    for h in nodes {
        if let Ok(Ok(kv::Reply::Stats(s))) = h.rpc::<kv::Behaviour>(kv::Request::Stats).await {
            n += s.records;
        }
    }
    n
}

async fn get_all(from: &NodeHandle) {
    for i in 0..KEYS {
        let r = from
            .rpc::<kv::Behaviour>(kv::Request::get(format!("key-{i}")))
            .await
            .expect("node answers");
        let want = format!("value-{i}");
        assert_eq!(
            r.as_ref().ok().and_then(|r| r.value()).map(|v| &v[..]),
            Some(want.as_bytes()),
            "key-{i}: {r:?}"
        );
    }
}

/// The node the store puts a key's first copy on: the XOR-closest.
fn closest(nodes: &[NodeHandle], key: &str) -> usize {
    let ids: BTreeSet<NodeId> = nodes.iter().map(|h| h.node_id()).collect();
    let c = kv::closest(&ids, kv::key_id(key), 1)[0];
    nodes.iter().position(|h| h.node_id() == c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_survive_the_loss_of_holders_over_quic() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut nodes = vec![node(None)];
    for _ in 1..5 {
        let n = node(Some(&nodes[0]));
        nodes.push(n);
    }
    until("every node routes to every other", || routed(&nodes)).await;
    for i in 0..KEYS {
        let r = nodes[0]
            .rpc::<kv::Behaviour>(kv::Request::put(format!("key-{i}"), format!("value-{i}")))
            .await
            .expect("node answers");
        assert!(
            matches!(r, Ok(kv::Reply::Written { replicas, .. }) if replicas >= 2),
            "{r:?}"
        );
    }
    get_all(&nodes[1]).await;
    let all = 3 * KEYS as u64;
    until("three replicas of every key", || async {
        records(&nodes).await == all
    })
    .await;

    // Kill the first holder of key-0 (not the reader): gets still answer.
    let mut victim = closest(&nodes, "key-0");
    if victim == 1 {
        victim = closest(&nodes[2..], "key-0") + 2;
    }
    nodes.remove(victim).shutdown().await.expect("shutdown");
    let reader = nodes
        .iter()
        .position(|h| h.node_id() != nodes[0].node_id())
        .unwrap();
    get_all(&nodes[reader]).await;
    until("three replicas again on four nodes", || async {
        records(&nodes).await == all
    })
    .await;

    // A second holder: three nodes left, each must now hold every key.
    let victim = closest(&nodes, "key-1");
    nodes.remove(victim).shutdown().await.expect("shutdown");
    get_all(&nodes[0]).await;
    until("every key on all three survivors", || async {
        records(&nodes).await == all
    })
    .await;
    for h in &nodes {
        h.shutdown().await.expect("shutdown");
    }
}

/// Two nodes over QUIC with the dv router and an rpc protocol: calls by
/// node and by key are answered, refusals come back typed, a call to an
/// unknown node fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_calls_are_answered_over_quic() {
    use plexus::behaviours::rpc;
    use plexus::RouteRule;
    type Squares = rpc::Behaviour<u64, u64>;
    let start = |contact: Option<&NodeHandle>| {
        let squares = Squares::new(rpc::Config::default()).with_responder(|_, n: u64| {
            n.checked_mul(n)
                .ok_or_else(|| format!("{n} squared overflows"))
        });
        spawn(contact, |b| b.behavior(squares))
    };
    let a = start(None);
    let b = start(Some(&a));
    let nodes = [a.clone(), b.clone()];
    until("both route to each other", || routed(&nodes)).await;
    let call = |to: RouteRule, n: u64| {
        let a = a.clone();
        async move {
            a.rpc::<Squares>(rpc::Request::call(to, n))
                .await
                .expect("node answers")
                .into_reply()
        }
    };
    assert_eq!(call(RouteRule::Node(b.node_id()), 12).await, Ok(144));
    assert_eq!(call(RouteRule::Closest(b.node_id()), 3).await, Ok(9));
    assert!(matches!(
        call(RouteRule::Node(b.node_id()), u64::MAX).await,
        Err(rpc::CallError::Refused(why)) if why.contains("overflows")
    ));
    assert!(matches!(
        call(RouteRule::Node(NodeId(12345)), 1).await,
        Err(rpc::CallError::NoRoute(_))
    ));
    for h in nodes {
        h.shutdown().await.expect("shutdown");
    }
}
