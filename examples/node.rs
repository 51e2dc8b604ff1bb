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

use clap::Parser;
use plexus::ping;
use plexus::router::{dv, StaticRouter};
use plexus::runtime::{Node, NodeEvent, RuntimeConfig, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::transports::tcp::TcpTransport;
use plexus::{Address, Identity, Network, NodeId, RouterTable, TransportConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A peer to join: `<node id in hex>@<address>`.
#[derive(Clone, Debug)]
struct Seed {
    node: NodeId,
    addr: Address,
}

fn parse_seed(s: &str) -> Result<Seed, String> {
    let (id, addr) = s.split_once('@').ok_or_else(|| {
        format!("{s:?} is not <node-id>@<address>, e.g. 3fa2…@quic://127.0.0.1:7000")
    })?;
    let node = u64::from_str_radix(id, 16)
        .map(NodeId)
        .map_err(|e| format!("node id {id:?} is not 16 hex digits: {e}"))?;
    let addr = addr.parse::<Address>().map_err(|e| e.to_string())?;
    if !matches!(addr, Address::Quic(_) | Address::Tcp(_)) {
        return Err(format!(
            "{addr}: this node dials quic:// and tcp:// addresses only"
        ));
    }
    Ok(Seed { node, addr })
}

fn parse_addr(s: &str) -> Result<Address, String> {
    match s.parse::<Address>().map_err(|e| e.to_string())? {
        a @ (Address::Quic(_) | Address::Tcp(_)) => Ok(a),
        other => Err(format!(
            "{other}: this node listens on quic:// or tcp:// addresses"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Behaviour {
    /// Liveness and RTT of every connection.
    Ping,
    /// The distance-vector router (otherwise: direct neighbours only).
    Router,
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
    /// Seconds between status lines (0: none).
    #[arg(long, default_value_t = 5)]
    status_every: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM, listened for from before the first line is printed
/// until the node stops: a signal that arrives while the loop is busy
/// (printing status, say) waits in the stream instead of killing the
/// process or being missed.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let err = |e: std::io::Error| format!("cannot listen for signals: {e}");
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
        })
    }

    /// Waits for either signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut signals = Signals::install()?;
    let (identity, created) =
        Identity::load_or_generate(&args.key_file).map_err(|e| e.to_string())?;
    let id = identity.node_id();
    if created {
        println!("created key file {}", args.key_file.display());
    }
    let mut config = TransportConfig::default();
    if let Some(secret) = &args.network_key {
        config = config.with_network_secret(secret);
    }
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    for addr in &args.listen {
        let t: Arc<dyn Transport> = match addr {
            Address::Quic(sa) => Arc::new(
                QuicTransport::bind(*sa, &identity, config.clone())
                    .map_err(|e| format!("listen {addr}: {e}"))?,
            ),
            Address::Tcp(sa) => Arc::new(
                TcpTransport::bind(*sa, &identity, config.clone())
                    .await
                    .map_err(|e| format!("listen {addr}: {e}"))?,
            ),
            other => return Err(format!("cannot listen on {other}")),
        };
        transports.push(t);
    }
    // Dial every scheme whatever we listen on: a node that listens on TCP
    // alone still reaches QUIC peers (from an ephemeral, unadvertised port).
    if !transports.iter().any(|t| t.scheme() == "quic") {
        let quic = QuicTransport::client(&identity, config.clone())
            .map_err(|e| format!("QUIC dialler: {e}"))?;
        transports.push(Arc::new(quic));
    }
    if !transports.iter().any(|t| t.scheme() == "tcp") {
        let tcp = TcpTransport::client(&identity, config.clone())
            .map_err(|e| format!("TCP dialler: {e}"))?;
        transports.push(Arc::new(tcp));
    }

    let use_router = args.behaviours.contains(&Behaviour::Router);
    let dv_router = Arc::new(dv::DvRouter::new(id));
    let router: Arc<dyn RouterTable> = if use_router {
        dv_router.clone()
    } else {
        Arc::new(StaticRouter::new(id))
    };
    // No .seed(): the node's RNG is seeded from the OS.
    let mut builder = Network::builder(id, router);
    if args.behaviours.contains(&Behaviour::Ping) {
        builder = builder.behavior(ping::Behaviour::new(ping::Config::default()));
    }
    if use_router {
        builder = builder.behavior(dv::Behaviour::new(dv_router, dv::Config::default()));
    }
    // Seeds are bootstrap peers: dialled at once, retried with backoff while
    // they fail (each failure printed with its reason), dialled again if the
    // node is ever left with no connection.
    for s in &args.seed {
        builder = builder.bootstrap(s.node, s.addr);
    }
    let network = builder.build().map_err(|e| e.to_string())?;
    let (node, mut events) = Node::spawn(network, transports, RuntimeConfig::default());

    println!("node id {id}");
    for a in node.listen_addrs() {
        println!("listening on {a}   (join with --seed {id}@{a})");
    }

    let mut status = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    status.tick().await;
    loop {
        tokio::select! {
            sig = signals.recv() => {
                log::info!("{sig}: stopping");
                break;
            }
            ev = events.next() => match ev {
                Some(NodeEvent::Behaviour(e)) => {
                    if let Some(p) = e.downcast_ref::<ping::Event>() {
                        match p.result {
                            Ok(rtt) => log::debug!("ping {}: {rtt:?}", p.peer),
                            Err(f) => println!("ping {}: failed ({f:?})", p.peer),
                        }
                    }
                }
                Some(NodeEvent::Connected { node: peer, conn }) => println!("connected to {peer} ({conn})"),
                Some(NodeEvent::Disconnected { node: peer, conn }) => println!("disconnected from {peer} ({conn})"),
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
    node.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}
