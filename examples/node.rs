//! Runs one plexus node: QUIC and/or TCP listeners, ping and the
//! distance-vector router, joining the network through seed peers.
//!
//! ```bash
//! # first node (creates node-a.key on first run and prints its id)
//! cargo run --release --example node -- --key-file node-a.key --listen quic://127.0.0.1:7000
//! # second node, joining through the first (paste its id)
//! cargo run --release --example node -- --key-file node-b.key --listen quic://127.0.0.1:7001 \
//!     --seed <ID-OF-A>@quic://127.0.0.1:7000
//! RUST_LOG=debug cargo run --release --example node -- …   # more detail
//! ```
//!
//! Ctrl-C closes every connection gracefully and exits.

mod common;

use bytes::Bytes;
use clap::Parser;
use common::{parse_addr, parse_seed, Seed, Signals};
use plexus::behaviours::pubsub::Topic;
use plexus::behaviours::{broadcast, gossip, kv, membership, pubsub};
use plexus::ping;
use plexus::router::{dv, StaticRouter};
use plexus::runtime::{Node, NodeEvent, NodeHandle, RuntimeConfig};
use plexus::transports::web;
use plexus::transports::webrtc::{WebRtcConfig, WebRtcTransport};
use plexus::{Address, Identity, Network, RouterTable};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Behaviour {
    /// Liveness and RTT of every connection.
    Ping,
    /// The distance-vector router (otherwise: direct neighbours only).
    Router,
    /// A random, connected overlay (HyParView): the neighbours broadcast
    /// and pubsub use.
    Membership,
    /// Every node delivers every message once (Plumtree; needs membership).
    Broadcast,
    /// Publish and subscribe by topic (needs membership).
    Pubsub,
    /// A replicated key-value map of CRDTs (needs membership).
    Gossip,
    /// A key-value store on the 3 nodes closest to each key (a DHT; needs
    /// the router).
    Kv,
}

#[derive(Parser, Debug)]
#[command(name = "node", about = "Run one plexus node")]
struct Args {
    /// Address to listen on (repeatable): quic://IP:PORT or tcp://IP:PORT.
    #[arg(long, value_parser = parse_addr, default_value = "quic://127.0.0.1:7000")]
    listen: Vec<Address>,
    /// Peer to join (repeatable): <node-id>@<address>.
    #[arg(long, value_parser = parse_seed)]
    seed: Vec<Seed>,
    /// The node's key file (PKCS#8 PEM), created on first run.
    #[arg(long, default_value = "plexus-node.key")]
    key_file: PathBuf,
    /// Network secret: only peers with the same one can connect.
    #[arg(long)]
    network_key: Option<String>,
    /// Behaviours to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ping,router")]
    behaviours: Vec<Behaviour>,
    /// Pubsub topic to subscribe to (repeatable; needs the pubsub behaviour).
    #[arg(long)]
    subscribe: Vec<String>,
    /// Seconds between status lines (0: none).
    #[arg(long, default_value_t = 5)]
    status_every: u64,
    /// Serve the node's web endpoint here (e.g. 127.0.0.1:8080): the
    /// browser peer page at /, signalling for browsers, the dashboard at
    /// /dashboard.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Local UDP address for WebRTC connections (repeatable; port 0: an
    /// ephemeral port per connection).
    #[arg(long, default_value = "0.0.0.0:0")]
    webrtc_udp: Vec<std::net::SocketAddr>,
}

/// What clap cannot check: behaviours that need another.
fn check(args: &Args) -> Result<(), String> {
    let has = |b: Behaviour| args.behaviours.contains(&b);
    for (b, name) in [
        (Behaviour::Broadcast, "broadcast"),
        (Behaviour::Pubsub, "pubsub"),
        (Behaviour::Gossip, "gossip"),
    ] {
        if has(b) && !has(Behaviour::Membership) {
            return Err(format!(
                "--behaviours {name} needs membership (its neighbours): add it, e.g. --behaviours ping,membership,{name}"
            ));
        }
    }
    if has(Behaviour::Kv) && !has(Behaviour::Router) {
        return Err(
            "--behaviours kv needs the router (it finds each key's closest nodes by it): add it, e.g. --behaviours ping,router,membership,kv"
                .into(),
        );
    }
    if !args.subscribe.is_empty() && !has(Behaviour::Pubsub) {
        return Err(
            "--subscribe needs the pubsub behaviour (--behaviours …,membership,pubsub)".into(),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        // A usage error, reported as clap reports its own (exit code 2).
        use clap::CommandFactory;
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    common::block_on_main(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let mut signals = Signals::install()?;
    let (identity, created) =
        Identity::load_or_generate(&args.key_file).map_err(|e| e.to_string())?;
    let id = identity.node_id();
    if created {
        println!("created key file {}", args.key_file.display());
    }
    let config = common::transport_config(args.network_key.as_deref());
    let mut transports = common::transports(&args.listen, &identity, &config).await?;
    // WebRTC, signalled over the overlay (and for browsers, over --http).
    let rtc = WebRtcTransport::new(
        &identity,
        config.clone(),
        WebRtcConfig {
            udp_addrs: args.webrtc_udp.iter().map(|a| a.to_string()).collect(),
            ..WebRtcConfig::default()
        },
    )
    .map_err(|e| format!("WebRTC: {e}"))?;
    transports.push(Arc::new(rtc.clone()));
    let has = |b: Behaviour| args.behaviours.contains(&b);

    let use_router = has(Behaviour::Router);
    let dv_router = Arc::new(dv::DvRouter::new(id));
    let router: Arc<dyn RouterTable> = if use_router {
        dv_router.clone()
    } else {
        Arc::new(StaticRouter::new(id))
    };
    // No .seed(): the node's RNG is seeded from the OS.
    let mut builder = Network::builder(id, router).behavior(rtc.signalling());
    if has(Behaviour::Ping) {
        builder = builder.behavior(ping::Behaviour::new(ping::Config::default()));
    }
    if use_router {
        builder = builder.behavior(dv::Behaviour::new(dv_router, dv::Config::default()));
    }
    if has(Behaviour::Membership) {
        builder = builder.behavior(membership::Behaviour::new(membership::Config::default()));
    }
    if has(Behaviour::Broadcast) {
        builder = builder.behavior(broadcast::Behaviour::new(broadcast::Config::default()));
    }
    if has(Behaviour::Pubsub) {
        builder = builder.behavior(pubsub::Behaviour::new(pubsub::Config::default()));
    }
    if has(Behaviour::Gossip) {
        // Every change of the replicated map is printed.
        builder = builder.behavior(gossip::Behaviour::<gossip::Value>::new(
            gossip::Config::default().with_watch(""),
        ));
    }
    if has(Behaviour::Kv) {
        builder = builder.behavior(kv::Behaviour::new(kv::Config::default()));
    }
    // Seeds are bootstrap peers: dialled at once, retried with backoff while
    // they fail (each failure printed with its reason), dialled again if the
    // node is ever left with no connection.
    for s in &args.seed {
        builder = builder.bootstrap(s.node, s.addr);
    }
    let network = builder.build().map_err(|e| e.to_string())?;
    let (node, mut events) = Node::spawn(network, transports, RuntimeConfig::default());
    rtc.attach(&node);

    println!("node id {id}");
    for a in node.listen_addrs() {
        println!("listening on {a}   (join with --seed {id}@{a})");
    }
    let web = match args.http {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| format!("--http {at}: {e}"))?;
            let at = listener.local_addr().map_err(|e| e.to_string())?;
            println!("web endpoint on http://{at}/ (browser peer page), http://{at}/dashboard (dashboard)");
            let (node, rtc, keyed) = (node.clone(), rtc.clone(), args.network_key.is_some());
            Some(tokio::spawn(async move {
                if let Err(e) = web::serve(listener, node, rtc, keyed).await {
                    log::error!("web endpoint stopped: {e}");
                }
            }))
        }
        None => None,
    };
    // Topics travel as hashes of their names: these are the names.
    let names: std::collections::HashMap<Topic, String> = args
        .subscribe
        .iter()
        .map(|t| (Topic::new(t), t.clone()))
        .collect();
    for t in &args.subscribe {
        node.rpc::<pubsub::Behaviour>(pubsub::Request::Subscribe(Topic::new(t)))
            .await
            .map_err(|e| format!("subscribe {t}: {e}"))?;
        println!("subscribed to {t}");
    }
    println!("commands: {COMMANDS}");
    let kv_runs = has(Behaviour::Kv);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;

    let mut pinged = std::collections::HashSet::new();
    let mut status = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    status.tick().await;
    loop {
        tokio::select! {
            sig = signals.recv() => {
                log::info!("{sig}: stopping");
                break;
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => command(&node, line.trim(), kv_runs).await,
                // No (more) input, as under a service manager: keep running.
                Ok(None) | Err(_) => stdin_open = false,
            },
            ev = events.next() => match ev {
                Some(NodeEvent::Behaviour(e)) => {
                    if let Some(p) = e.downcast_ref::<ping::Event>() {
                        match p.result {
                            // The first answer on each connection is worth a line.
                            Ok(rtt) if pinged.insert(p.conn) => println!("ping {}: rtt {:.2} ms (first answer on {})", p.peer, rtt.as_secs_f64() * 1e3, p.conn),
                            Ok(rtt) => log::debug!("ping {}: {rtt:?}", p.peer),
                            Err(f) => println!("ping {}: failed ({f:?})", p.peer),
                        }
                    } else if let Some(b) = e.downcast_ref::<broadcast::Event>() {
                        println!("broadcast from {} ({} hops): {}", b.id.author, b.hops, String::from_utf8_lossy(&b.payload));
                    } else if let Some(p) = e.downcast_ref::<pubsub::Event>() {
                        let topic = names.get(&p.topic).cloned().unwrap_or_else(|| p.topic.to_string());
                        println!("{topic} from {} ({} hops): {}", p.id.author, p.hops, String::from_utf8_lossy(&p.payload));
                    } else if let Some(g) = e.downcast_ref::<gossip::Event>() {
                        println!("{} = {}", g.key, show(g.value.as_ref()));
                    } else if let Some(m) = e.downcast_ref::<membership::Event>() {
                        match m {
                            membership::NeighborEvent::Up { node: peer, leaf: true, .. } => log::info!("leaf {peer} up"),
                            membership::NeighborEvent::Up { node: peer, .. } => log::info!("overlay neighbour {peer} up"),
                            membership::NeighborEvent::Down { node: peer } => log::info!("overlay neighbour {peer} down"),
                        }
                    }
                }
                Some(NodeEvent::Connected { node: peer, conn }) => {
                    let addr = node.status().await.ok().and_then(|s| {
                        s.connections.iter().find(|c| c.conn == conn).and_then(|c| c.addr)
                    });
                    match addr {
                        Some(a) => println!("connected to {peer} ({conn}) over {a}"),
                        None => println!("connected to {peer} ({conn})"),
                    }
                }
                Some(NodeEvent::Disconnected { node: peer, conn }) => {
                    pinged.remove(&conn);
                    println!("disconnected from {peer} ({conn})");
                }
                Some(NodeEvent::DialFailed(f)) => println!("cannot connect to {} at {}: {}", f.node, f.addr, f.error),
                Some(NodeEvent::BehaviorFailed(f)) => println!("{f}"),
                Some(NodeEvent::Failed(why)) => return Err(format!("the node failed: {why}")),
                Some(_) => {}
                None => break,
            },
            _ = status.tick(), if args.status_every > 0 => {
                if let Ok(s) = node.status().await {
                    let conns: Vec<String> = s.connections.iter().map(|c| match c.rtt {
                        Some(rtt) => format!("{} rtt {:.2} ms", c.node, rtt.as_secs_f64() * 1e3),
                        None => format!("{} rtt ?", c.node),
                    }).collect();
                    let seeds: String = s.bootstrap.iter()
                        .filter(|b| !b.connected)
                        .map(|b| match &b.last_error {
                            Some(e) => format!("; seed {} at {} not connected: {e} ({} failed attempt(s))", b.node, b.addr, b.failures),
                            None => format!("; seed {} at {} not connected yet", b.node, b.addr),
                        })
                        .collect();
                    println!("status: {} connection(s) [{}], {} route(s){seeds}", conns.len(), conns.join(", "), s.routes.len());
                }
            }
        }
    }
    println!("shutting down");
    if let Some(web) = web {
        web.abort();
    }
    node.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// What can be typed on stdin.
const COMMANDS: &str = "webrtc <node-id> | broadcast <text> | publish <topic> <text> | peers | \
put <key> <text> [ttl-seconds] | get <key> | delete <key> (kv) | \
set <key> <text> | incr <key> [n] | add <key> <item> | remove <key> <item> | del <key> | show <key> (gossip; \
get too, when kv does not run)";

/// A gossip value as text.
fn show(v: Option<&gossip::Value>) -> String {
    match v {
        None => "(deleted)".into(),
        Some(gossip::Value::Lww(r)) => String::from_utf8_lossy(r.get()).into_owned(),
        Some(gossip::Value::PnCounter(c)) => c.value().to_string(),
        Some(gossip::Value::GCounter(c)) => c.value().to_string(),
        Some(gossip::Value::OrSet(s)) => {
            let items: Vec<String> = s
                .elements()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(other) => format!("{other:?}"),
    }
}

/// A gossip command: `set`, `incr`, `add`, `remove`, `del`, `get`.
async fn gossip_command(node: &NodeHandle, verb: &str, rest: &str) -> Result<String, String> {
    let (key, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    if key.is_empty() {
        return Err(format!("usage: {verb} <key> …"));
    }
    let key = key.to_owned();
    let text = || bytes::Bytes::from(arg.to_owned());
    let req = match verb {
        "set" => gossip::Request::Update {
            key,
            op: gossip::Op::Assign(text()),
        },
        "incr" => {
            let n = if arg.is_empty() {
                1
            } else {
                arg.parse::<i64>()
                    .map_err(|_| format!("incr: {arg:?} is not a whole number"))?
            };
            gossip::Request::Update {
                key,
                op: gossip::Op::Add(n),
            }
        }
        "add" => gossip::Request::Update {
            key,
            op: gossip::Op::Insert(text()),
        },
        "remove" => gossip::Request::Update {
            key,
            op: gossip::Op::Remove(text()),
        },
        "del" => gossip::Request::Delete(key),
        _ => gossip::Request::Get(key),
    };
    match node.rpc::<gossip::Behaviour>(req).await {
        Ok(gossip::Response::Value(v)) => Ok(format!("{rest} = {}", show(v.as_ref()))),
        Ok(_) => Ok("ok".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A kv command: `put <key> <text> [ttl-seconds]`, `get <key>`,
/// `delete <key>`.
async fn kv_command(node: &NodeHandle, verb: &str, rest: &str) -> Result<String, String> {
    let mut words = rest.splitn(2, ' ');
    let key = words.next().unwrap_or("").to_owned();
    let arg = words.next().unwrap_or("");
    if key.is_empty() {
        return Err(format!(
            "usage: {verb} <key>{}",
            if verb == "put" {
                " <text> [ttl-seconds]"
            } else {
                ""
            }
        ));
    }
    let req = match verb {
        "put" => {
            // A last word that is a number is a TTL in seconds.
            let (text, ttl) = match arg.rsplit_once(' ') {
                Some((t, n)) if n.parse::<u64>().is_ok() => {
                    (t, Some(Duration::from_secs(n.parse().unwrap_or(0))))
                }
                _ => (arg, None),
            };
            kv::Request::Put {
                key: key.clone(),
                value: Bytes::from(text.to_owned()),
                ttl,
            }
        }
        "delete" => kv::Request::delete(key.clone()),
        _ => kv::Request::get(key.clone()),
    };
    match node.rpc::<kv::Behaviour>(req).await {
        Ok(Ok(kv::Reply::Found { value, .. })) => {
            Ok(format!("{key} = {}", String::from_utf8_lossy(&value)))
        }
        Ok(Ok(kv::Reply::NotFound)) => Ok(format!("{key}: not found")),
        Ok(Ok(kv::Reply::Written { replicas, .. })) => {
            Ok(format!("{key}: stored on {replicas} node(s)"))
        }
        Ok(Ok(other)) => Ok(format!("{other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// One line typed on stdin.
async fn command(node: &NodeHandle, line: &str, kv_runs: bool) {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let result = match verb {
        "" => return,
        "broadcast" => node
            .rpc::<broadcast::Behaviour>(broadcast::Request::Broadcast(Bytes::from(
                rest.to_owned(),
            )))
            .await
            .map(|_| "broadcast sent".to_owned()),
        "publish" => match rest.split_once(' ') {
            Some((topic, text)) => node
                .rpc::<pubsub::Behaviour>(pubsub::Request::Publish(
                    Topic::new(topic),
                    Bytes::from(text.to_owned()),
                ))
                .await
                .map(|_| format!("published to {topic}")),
            None => {
                println!("usage: publish <topic> <text>");
                return;
            }
        },
        "webrtc" => match u64::from_str_radix(rest, 16) {
            Ok(n) if rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let peer = plexus::NodeId(n);
                node.connect(peer, Address::WebRtc(peer)).await.map(|conn| {
                    format!("dialling {peer} over WebRTC ({conn}), signalled through the overlay")
                })
            }
            _ => {
                println!("usage: webrtc <node-id> (16 hex digits)");
                return;
            }
        },
        "peers" => {
            let ids = |v: &[plexus::NodeId]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let active = node
                .rpc::<membership::Behaviour>(membership::Request::ActiveView)
                .await;
            let leaves = node
                .rpc::<membership::Behaviour>(membership::Request::Leaves)
                .await;
            match (active, leaves) {
                (Ok(membership::Response::ActiveView(a)), Ok(membership::Response::Leaves(l)))
                    if l.is_empty() =>
                {
                    Ok(format!("peers: {}", ids(&a)))
                }
                (Ok(membership::Response::ActiveView(a)), Ok(membership::Response::Leaves(l))) => {
                    Ok(format!("peers: {}; leaves: {}", ids(&a), ids(&l)))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
                other => Ok(format!("{other:?}")),
            }
        }
        "put" | "get" | "delete" if verb != "get" || kv_runs => {
            match kv_command(node, verb, rest).await {
                Ok(r) => println!("{r}"),
                Err(e) => println!("{verb}: {e}"),
            }
            return;
        }
        "set" | "incr" | "add" | "remove" | "del" | "get" | "show" => {
            match gossip_command(node, verb, rest).await {
                Ok(r) => println!("{r}"),
                Err(e) => println!("{verb}: {e}"),
            }
            return;
        }
        other => {
            println!("unknown command {other:?}: {COMMANDS}");
            return;
        }
    };
    match result {
        Ok(r) => println!("{r}"),
        Err(e) => println!("{verb}: {e}"),
    }
}
