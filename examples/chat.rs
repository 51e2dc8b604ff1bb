//! A terminal chat over pubsub: every line typed goes to everyone in the
//! room, printed as `<author id>: <line>`.
//!
//! ```bash
//! # first peer (prints its id and the --seed that joins it)
//! cargo run --release --example chat -- --listen quic://127.0.0.1:7100
//! # more peers, each joining through any running one
//! cargo run --release --example chat -- --listen quic://127.0.0.1:7101 --seed <ID>@quic://127.0.0.1:7100
//! ```
//!
//! `/peers` shows the overlay neighbours (membership's active view),
//! `/quit` (or end of input, or Ctrl-C) leaves.
//!
//! The author shown is the publication's id. It is authenticated at the
//! first hop (a publication with hop count 0 must come from its author's
//! connection); further away it is what the relays say — lines from
//! authenticated neighbours are marked nothing, relayed ones `~`.

mod common;

use bytes::Bytes;
use clap::Parser;
use common::{parse_addr, parse_seed, Seed, Signals};
use plexus::behaviours::pubsub::Topic;
use plexus::behaviours::{membership, pubsub};
use plexus::ping;
use plexus::router::StaticRouter;
use plexus::runtime::{Node, NodeEvent, NodeHandle, RuntimeConfig};
use plexus::{Address, Identity, Network};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(name = "chat", about = "Chat with other plexus nodes over pubsub")]
struct Args {
    /// Address to listen on (repeatable): quic://IP:PORT or tcp://IP:PORT.
    #[arg(long, value_parser = parse_addr, default_value = "quic://127.0.0.1:0")]
    listen: Vec<Address>,
    /// A peer to join through (repeatable): <node-id>@<address>.
    #[arg(long, value_parser = parse_seed)]
    seed: Vec<Seed>,
    /// Key file (PKCS#8 PEM), created on first run; without it the node
    /// has a fresh identity each run.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Network secret: only peers with the same one can connect.
    #[arg(long)]
    network_key: Option<String>,
    /// The room.
    #[arg(long, default_value = "chat")]
    topic: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    common::block_on_main(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let mut signals = Signals::install()?;
    let identity = match &args.key_file {
        Some(path) => Identity::load_or_generate(path).map(|(i, _)| i),
        None => Identity::generate(),
    }
    .map_err(|e| e.to_string())?;
    let id = identity.node_id();
    let config = common::transport_config(args.network_key.as_deref());
    let transports = common::transports(&args.listen, &identity, &config).await?;
    let mut builder = Network::builder(id, Arc::new(StaticRouter::new(id)))
        .behavior(ping::Behaviour::new(ping::Config::default()))
        .behavior(membership::Behaviour::new(membership::Config::default()))
        .behavior(pubsub::Behaviour::new(pubsub::Config::default()));
    for s in &args.seed {
        builder = builder.bootstrap(s.node, s.addr);
    }
    let network = builder.build().map_err(|e| e.to_string())?;
    let (node, mut events) = Node::spawn(network, transports, RuntimeConfig::default());
    let topic = Topic::new(&args.topic);
    node.rpc::<pubsub::Behaviour>(pubsub::Request::Subscribe(topic))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    println!("chat: you are {id}, in room {:?}", args.topic);
    for a in node.listen_addrs() {
        println!("chat: others join with --seed {id}@{a}");
    }

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            sig = signals.recv() => {
                log::info!("{sig}: leaving");
                break;
            }
            line = stdin.next_line() => match line {
                Ok(Some(line)) => match line.trim() {
                    "" => {}
                    "/quit" => break,
                    "/peers" => println!("{}", peers(&node).await),
                    text if text.starts_with('/') => {
                        println!("chat: unknown command {text:?} (/peers, /quit)");
                    }
                    text => {
                        let publish = pubsub::Request::Publish(topic, Bytes::from(text.to_owned()));
                        if let Err(e) = node.rpc::<pubsub::Behaviour>(publish).await {
                            println!("chat: not sent: {e}");
                        }
                    }
                },
                Ok(None) => break,
                Err(e) => return Err(format!("reading input: {e}")),
            },
            ev = events.next() => match ev {
                Some(NodeEvent::Behaviour(e)) => {
                    if let Some(p) = e.downcast_ref::<pubsub::Event>() {
                        // Our own lines are on the screen already.
                        if p.topic == topic && p.id.author != id {
                            let mark = if p.verified { "" } else { "~" };
                            println!("{mark}{}: {}", p.id.author, String::from_utf8_lossy(&p.payload));
                        }
                    }
                }
                Some(NodeEvent::DialFailed(f)) => println!("chat: cannot connect to {} at {}: {}", f.node, f.addr, f.error),
                Some(NodeEvent::Failed(why)) => return Err(format!("the node failed: {why}")),
                Some(_) => {}
                None => break,
            },
        }
    }
    node.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// `/peers`: the overlay neighbours.
async fn peers(node: &NodeHandle) -> String {
    match node
        .rpc::<membership::Behaviour>(membership::Request::ActiveView)
        .await
    {
        Ok(membership::Response::ActiveView(v)) if v.is_empty() => "peers: none yet".into(),
        Ok(membership::Response::ActiveView(v)) => {
            let ids: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            format!("peers: {}", ids.join(", "))
        }
        Ok(other) => format!("peers: {other:?}"),
        Err(e) => format!("peers: {e}"),
    }
}
