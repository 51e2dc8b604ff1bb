//! Starts N nodes (default 8) in one process on loopback over QUIC, joins
//! them in a chain, lets the router learn the routes, sends one message by
//! each route rule across several hops, shows ping RTTs and a summary, then
//! exits 0 (1 if anything did not arrive within 30 s).
//!
//! `--router dv` (the default): the distance-vector router, which stops at
//! 16 hops, so past 17 nodes the chain gets skip-list chords (node i also
//! links to i + 8, i + 16, … where i is a multiple of the span): paths stay
//! within the limit at any size. `--router kad`: the XOR router, which
//! dials a link into each XOR bucket of the id space on top of the chain,
//! so paths shorten to a few hops whatever the size.
//!
//! ```bash
//! cargo run --release --example cluster
//! cargo run --release --example cluster -- --nodes 16
//! cargo run --release --example cluster -- --router kad --nodes 32
//! RUST_LOG=debug cargo run --release --example cluster
//! ```

use clap::Parser;
use plexus::ping;
use plexus::router::{dv, kad};
use plexus::runtime::{Node, NodeEvent, NodeHandle, RuntimeConfig};
use plexus::transports::quic::QuicTransport;
use plexus::{
    BehaviorAgent, Identity, Incoming, Network, NetworkBehavior, NoHandler, NodeId, RouteRule,
    ServiceId, TransportConfig,
};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Every node runs it: receives notes sent by node or key.
const NOTES: ServiceId = ServiceId(100);
/// Only the last node runs it: the target of the service rule.
const ARCHIVE: ServiceId = ServiceId(101);
/// TTL the notes are sent with (the default), to count hops.
const TTL: u8 = 32;

#[derive(Serialize, Deserialize)]
struct Note(String);

#[derive(Debug)]
struct Arrived {
    source: NodeId,
    rule: RouteRule,
    hops: u8,
    text: String,
}

/// Reports every note that reaches it.
struct Notes(ServiceId);

impl NetworkBehavior for Notes {
    type Msg = Note;
    type Handler = NoHandler<Note>;
    type Event = Arrived;
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        self.0
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, m: Incoming<Note>) {
        agent.emit(Arrived {
            source: m.source,
            rule: m.rule,
            hops: TTL - m.ttl + 1,
            text: m.msg.0,
        });
    }
}

#[derive(Parser)]
#[command(about = "A local plexus cluster over QUIC: multi-hop messages by every route rule")]
struct Args {
    /// Number of nodes (2 to 256).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
    nodes: u16,
    /// The router: `dv` (a route to every node) or `kad` (XOR buckets).
    #[arg(long, value_enum, default_value_t = Router::Dv)]
    router: Router,
}

/// Which router the nodes run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Router {
    /// Distance vector.
    Dv,
    /// XOR buckets.
    Kad,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            run(args.nodes as usize, args.router),
        )
        .await
    }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("error: the cluster did not finish within 30 s");
            ExitCode::FAILURE
        }
    }
}

async fn run(n: usize, kind: Router) -> Result<(), String> {
    // Wall time is what this example reports; clippy.toml keeps it out of the core.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let (tx, mut rx) = mpsc::channel::<(usize, NodeEvent)>(4096);
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..n {
        let identity = Identity::generate().map_err(|e| e.to_string())?;
        let id = identity.node_id();
        let quic = QuicTransport::bind(
            "127.0.0.1:0".parse().expect("address"),
            &identity,
            TransportConfig::default(),
        )
        .map_err(|e| e.to_string())?;
        let b = match kind {
            Router::Dv => {
                let router = Arc::new(dv::DvRouter::new(id));
                Network::builder(id, router.clone())
                    .behavior(dv::Behaviour::new(router, dv::Config::default()))
            }
            Router::Kad => {
                let router = Arc::new(kad::KadRouter::new(id));
                Network::builder(id, router.clone())
                    .behavior(kad::Behaviour::new(router, kad::Config::default()))
            }
        };
        let mut b = b
            .seed(id.0)
            .behavior(ping::Behaviour::new(
                ping::Config::default().with_interval(Duration::from_millis(250)),
            ))
            .behavior(Notes(NOTES));
        if i == n - 1 {
            b = b.behavior(Notes(ARCHIVE));
        }
        let net = b.build().map_err(|e| e.to_string())?;
        let (handle, mut events) = Node::spawn(net, vec![Arc::new(quic)], RuntimeConfig::default());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if tx.send((i, ev)).await.is_err() {
                    break;
                }
            }
        });
        println!("node {i}: {id} on {}", handle.listen_addrs()[0]);
        nodes.push(handle);
    }

    // A chain 0 - 1 - … - (n-1), so messages cross several hops; chords
    // past the router's hop limit.
    let (edges, shape) = topology(n);
    let longest = hops(n, &edges, 0, n - 1);
    println!(
        "topology: {shape}, {} links; node 0 is {longest} hops from node {}",
        edges.len(),
        n - 1
    );
    for &(a, b) in &edges {
        let to = &nodes[b];
        nodes[a]
            .connect(to.node_id(), to.listen_addrs()[0])
            .await
            .map_err(|e| e.to_string())?;
    }

    match kind {
        Router::Dv => dv_converged(&nodes, &mut rx).await?,
        Router::Kad => kad_converged(&nodes, &mut rx).await?,
    }
    println!(
        "routes: every node reaches the {} others ({:.0} ms after start)",
        n - 1,
        started.elapsed().as_secs_f64() * 1e3
    );

    // One message by each rule, all from node 0.
    let last = nodes[n - 1].node_id();
    let key = NodeId(last.0 ^ 1); // XOR-closest to the last node's id
    let sends = [
        (NOTES, RouteRule::Node(last), "by node id to the last node"),
        (
            NOTES,
            RouteRule::Closest(key),
            "by key to the node closest to it",
        ),
        (
            ARCHIVE,
            RouteRule::Service,
            "by service to the archive's provider",
        ),
    ];
    for (service, rule, text) in &sends {
        nodes[0]
            .send(*service, *rule, &Note(text.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut arrived = 0;
    while arrived < sends.len() {
        let Some((i, ev)) = rx.recv().await else {
            break;
        };
        if let NodeEvent::Behaviour(e) = ev {
            if let Some(a) = e.downcast_ref::<Arrived>() {
                println!(
                    "message {:<38} from {} arrived at node {i} after {} hops ({})",
                    a.text, a.source, a.hops, a.rule
                );
                arrived += 1;
            }
        }
    }

    // Ping RTTs along the chain.
    for (i, node) in nodes.iter().enumerate() {
        let s = node.status().await.map_err(|e| e.to_string())?;
        let rtts: Vec<String> = s
            .connections
            .iter()
            .map(|c| match c.rtt {
                Some(r) => format!("{:.3} ms", r.as_secs_f64() * 1e3),
                None => "?".into(),
            })
            .collect();
        println!(
            "node {i}: {} connection(s), rtt [{}], {} forwarded",
            s.connections.len(),
            rtts.join(", "),
            s.stats.forwarded
        );
    }
    for node in &nodes {
        node.shutdown().await.map_err(|e| e.to_string())?;
    }
    println!(
        "summary: {n} nodes over QUIC, {arrived}/{} messages delivered from node 0 to node {} ({longest} hops apart on the chain), {:.2} s",
        sends.len(),
        n - 1,
        started.elapsed().as_secs_f64()
    );
    if arrived == sends.len() {
        Ok(())
    } else {
        Err("some messages did not arrive".into())
    }
}

/// Waits until every node has a route to every other (route events).
async fn dv_converged(
    nodes: &[NodeHandle],
    rx: &mut mpsc::Receiver<(usize, NodeEvent)>,
) -> Result<(), String> {
    loop {
        let Some((_, ev)) = rx.recv().await else {
            return Err("the nodes' events ended".into());
        };
        if matches!(ev, NodeEvent::RouteChanged(_)) {
            let mut all = true;
            for node in nodes {
                let s = node.status().await.map_err(|e| e.to_string())?;
                all &= s.routes.len() == nodes.len() - 1;
            }
            if all {
                return Ok(());
            }
        }
    }
}

/// Waits until every node has a link in every XOR bucket that holds a node
/// and knows a route to the archive. The XOR router announces no per-node
/// routes, so this asks each node's router for its status every 100 ms
/// (the nodes' events are drained meanwhile, so none waits on a full queue).
async fn kad_converged(
    nodes: &[NodeHandle],
    rx: &mut mpsc::Receiver<(usize, NodeEvent)>,
) -> Result<(), String> {
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
    loop {
        while rx.try_recv().is_ok() {}
        let mut all = true;
        for node in nodes {
            let kad::Response::Status(s) = node
                .rpc::<kad::Behaviour>(kad::Request::Status)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Err("unexpected router answer".into());
            };
            let me = node.node_id();
            let filled: Vec<usize> = s.links.iter().map(|(_, b)| *b).collect();
            all &= ids
                .iter()
                .filter_map(|o| kad::bucket_of(me, *o))
                .all(|b| filled.contains(&b));
            all &= s.services.iter().any(|(svc, _)| *svc == ARCHIVE);
        }
        if all {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The distance-vector router's hop limit (its default `max_hops`).
const MAX_HOPS: usize = 16;

/// A chain, and past `MAX_HOPS + 1` nodes skip-list chords: node `i` links to
/// `i + span` for every span 8, 16, 32, … that divides `i`.
fn topology(n: usize) -> (Vec<(usize, usize)>, &'static str) {
    let mut edges: Vec<(usize, usize)> = (0..n - 1).map(|i| (i, i + 1)).collect();
    if n - 1 <= MAX_HOPS {
        return (edges, "a chain");
    }
    let mut span = 8;
    while span < n {
        edges.extend((0..n - span).step_by(span).map(|i| (i, i + span)));
        span *= 2;
    }
    (edges, "a chain with skip-list chords")
}

/// Hops on a shortest path from `a` to `b` (breadth-first).
fn hops(n: usize, edges: &[(usize, usize)], a: usize, b: usize) -> usize {
    let mut adj = vec![Vec::new(); n];
    for &(x, y) in edges {
        adj[x].push(y);
        adj[y].push(x);
    }
    let mut dist = vec![usize::MAX; n];
    dist[a] = 0;
    let mut queue = std::collections::VecDeque::from([a]);
    while let Some(x) = queue.pop_front() {
        for &y in &adj[x] {
            if dist[y] == usize::MAX {
                dist[y] = dist[x] + 1;
                queue.push_back(y);
            }
        }
    }
    dist[b]
}
