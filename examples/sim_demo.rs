//! A simulated overlay: 200 nodes, ping on every link, routed messages by
//! every rule, 10 nodes crashed, all on a virtual clock.
//!
//! ```bash
//! cargo run --release --example sim_demo            # seed 1
//! cargo run --release --example sim_demo -- 42      # another seed, another run
//! RUST_LOG=debug cargo run --release --example sim_demo
//! ```
//!
//! The same seed always prints the same trace hash.

use plexus::ping;
use plexus::router::{ServiceSet, StaticRouter};
use plexus::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus::{
    BehaviorAgent, Incoming, Instant, Network, NetworkBehavior, NoHandler, NodeId, Rng, RouteRule,
    ServiceId,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

const NODES: usize = 200;
const ECHO: ServiceId = ServiceId(100);

#[derive(Serialize, Deserialize)]
struct Note(String);

/// Reports every note that reaches this node.
struct Echo;
impl NetworkBehavior for Echo {
    type Msg = Note;
    type Handler = NoHandler<Note>;
    type Event = (NodeId, RouteRule, String);
    type Rpc = ();
    fn service_id(&self) -> ServiceId {
        ECHO
    }
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, m: Incoming<Note>) {
        agent.emit((m.source, m.rule, m.msg.0));
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let seed = match std::env::args().nth(1).map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("error: the seed must be an unsigned integer: {e}");
            return ExitCode::from(2);
        }
    };

    let mut cfg = SimConfig::new(seed);
    cfg.link = LinkConfig::default()
        .with_latency(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(10))
        .with_loss(0.02);
    let mut sim = Sim::with_config(cfg);
    let mut rng = Rng::new(seed);
    let ids: Vec<NodeId> = (0..NODES).map(|_| NodeId(rng.next_u64())).collect();
    let edges = topology::random_connected(NODES, 6.0, &mut rng);
    let adj = topology::adjacency(NODES, &edges);
    let routers = StaticRouter::from_graph(&ids, &adj);
    // Every fifth node (from the third) provides the echo service.
    let providers: BTreeSet<NodeId> = ids.iter().skip(2).step_by(5).copied().collect();
    for r in &routers {
        for p in &providers {
            r.set_services(*p, [ECHO].into_iter().collect::<ServiceSet>());
        }
    }
    let ping_cfg = ping::Config::default()
        .with_interval(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(3))
        .with_emit_rtt(false);
    for r in routers {
        let ping_cfg = ping_cfg.clone();
        sim.add_node(r.local(), move |id, s| {
            Network::builder(id, r.clone())
                .seed(s)
                .behavior(ping::Behaviour::new(ping_cfg.clone()))
                .behavior(Echo)
                .build()
                .expect("distinct services")
        });
    }
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }
    println!(
        "plexus simulator demo, seed {seed}: {NODES} nodes, {} links, 2% loss, 20±10 ms",
        edges.len()
    );
    sim.run_until(Instant::from_secs(5))
        .expect("within the step limit");

    // Routed messages, one per rule.
    let (a, z) = (ids[0], ids[NODES - 1]);
    let key = NodeId(rng.next_u64());
    let sends = [
        (RouteRule::Node(z), "to a node"),
        (RouteRule::Closest(key), "to the node closest to a key"),
        (RouteRule::Service, "to the nearest echo provider"),
    ];
    for (rule, what) in &sends {
        sim.send(a, ECHO, *rule, &Note(what.to_string()))
            .expect("small message");
    }
    sim.run_for(Duration::from_secs(1))
        .expect("within the step limit");
    for e in sim.take_events() {
        let at = e.node;
        if let Ok((src, rule, text)) = e.event.downcast::<(NodeId, RouteRule, String)>() {
            println!("  {text:<32} {rule} from {src} arrived at {at}");
        }
    }
    let forwarded: u64 = ids
        .iter()
        .filter_map(|i| sim.node(*i))
        .map(|n| n.stats().forwarded)
        .sum();
    println!("  forwarded {forwarded} times on the way");

    // Crash 10 nodes; their neighbours' ping notices.
    let killed: Vec<NodeId> = ids[1..11].to_vec();
    let t0 = sim.now();
    for k in &killed {
        sim.kill(*k);
    }
    sim.run_for(Duration::from_secs(6))
        .expect("within the step limit");
    let mut detected = 0;
    let mut slowest = Duration::ZERO;
    for e in sim.take_events() {
        let at = e.at;
        if let Ok(ev) = e.event.downcast::<ping::Event>() {
            if ev.result.is_err() && killed.contains(&ev.peer) {
                detected += 1;
                slowest = slowest.max(at - t0);
            }
        }
    }
    let watched: usize = edges
        .iter()
        .filter(|(x, y)| killed.contains(&ids[*x]) != killed.contains(&ids[*y]))
        .count();
    println!("  crashed {} nodes: {detected}/{watched} neighbours reported it, the last after {slowest:?}", killed.len());
    let r = sim.report();
    println!(
        "virtual time {}, {} steps; frames sent {}, lost {}, delivered {}; trace hash {:016x}",
        sim.now(),
        sim.steps(),
        r.frames_sent,
        r.frames_lost,
        r.frames_delivered,
        r.trace_hash
    );
    if detected == watched {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: some failures went unreported");
        ExitCode::FAILURE
    }
}
