//! The workload benchmark: runs one workload and prints one line of
//! `key=value` figures.
//!
//! ```bash
//! cargo run --release -p plexus-bench -- rtt    --transport quic --n 10000 --size 64
//! cargo run --release -p plexus-bench -- stream --transport tcp  --n 100000 --size 1024
//! cargo run --release -p plexus-bench -- bulk   --transport quic --mib 256
//! cargo run --release -p plexus-bench -- fanin  --transport tcp  --peers 1,2,4
//! cargo run --release -p plexus-bench -- relay  --transport quic
//! cargo run --release -p plexus-bench -- dv --nodes 1000 --degree 6
//! cargo run --release -p plexus-bench -- sim --nodes 10000 --degree 8 --seconds 30
//! cargo run --release -p plexus-bench -- membership --nodes 10000
//! cargo run --release -p plexus-bench -- broadcast --nodes 10000
//! cargo run --release -p plexus-bench -- pubsub-sim --nodes 500
//! cargo run --release -p plexus-bench -- pubsub --nodes 100
//! cargo run --release -p plexus-bench -- swarms
//! ```
//!
//! `rtt`, `stream` and `bulk` run plexus between two nodes in this process,
//! then the same work on the raw transport underneath (quinn on one
//! long-lived stream, or tokio-rustls, with the TLS configuration plexus
//! uses, and plain TCP as the loopback ceiling), alternately `--runs N`
//! times (default 5), and print each run, then each figure's and each
//! ratio's median, min and max.

mod kv;
mod overlay;
mod pubsub_quic;
mod relay;
mod route;
mod rtc_baseline;
mod workload;

use clap::{Parser, Subcommand};
use plexus::ping;
use plexus::router::dv;
use plexus::router::StaticRouter;
use plexus::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus::{Instant, Network, NodeId, Rng};
use std::sync::Arc;
use std::time::Duration;
use workload::{Measured, Work};

#[derive(Parser)]
#[command(about = "plexus workload benchmarks: one line of key=value figures per run")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

/// A router of `plexus-router`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RouterArg {
    /// Distance vector: a route to every node.
    Dv,
    /// XOR buckets, O(log N) links.
    Kad,
}

#[derive(Subcommand)]
enum Workload {
    /// Sequential request/response round trips through a behaviour.
    Rtt {
        /// Transport.
        #[arg(long, value_enum)]
        transport: workload::Kind,
        /// Round trips.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Message body bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Runs, alternating plexus and the baseline; medians are printed.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A sends N reliable messages to B as fast as the framework allows.
    Stream {
        /// Transport.
        #[arg(long, value_enum)]
        transport: workload::Kind,
        /// Messages.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Message body bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Runs, alternating plexus and the baseline; medians are printed.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Run plexus only (for profiling).
        #[arg(long)]
        no_baseline: bool,
    },
    /// One large transfer, in messages just under the 1 MiB maximum.
    Bulk {
        /// Transport.
        #[arg(long, value_enum)]
        transport: workload::Kind,
        /// MiB to move.
        #[arg(long, default_value_t = 256)]
        mib: usize,
        /// Runs, alternating plexus and the baseline; medians are printed.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Run plexus only (for profiling).
        #[arg(long)]
        no_baseline: bool,
    },
    /// The distance-vector router on the simulator: convergence, memory per
    /// node, steady-state sync traffic.
    Dv {
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Average degree of the random graph.
        #[arg(long, default_value_t = 6.0)]
        degree: f64,
        /// Seconds of steady state to measure traffic over. Full-table
        /// refreshes come every 30 s per neighbour, so a short window over-
        /// or under-counts them by its phase; 300 s (ten periods) keeps the
        /// error under 10%.
        #[arg(long, default_value_t = 300)]
        steady: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A router on the simulator over a random overlay (mean degree 6):
    /// state per node, sync traffic, convergence, delivery and stretch of
    /// node, key and service messages, then delivery between survivors 15 s
    /// after a share of the nodes crash at once. Run `dv` and `kad` with the
    /// same nodes and seed to compare them on the same overlay.
    Route {
        /// The router.
        #[arg(long, value_enum, default_value_t = RouterArg::Kad)]
        router: RouterArg,
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Messages of each rule (node, key) per phase.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Senders (the messages are spread over them; each one's shortest
        /// paths are computed for the stretch).
        #[arg(long, default_value_t = 100)]
        sources: usize,
        /// Share of nodes crashed at once after convergence.
        #[arg(long, default_value_t = 0.1)]
        kill: f64,
        /// Seconds of steady state to measure sync traffic over.
        #[arg(long, default_value_t = 120)]
        steady: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Flow control across a relay: A → B → C flat out against A → C
    /// direct (same run, median of runs), then A → B → C and D → B → C at
    /// once (fair share); drops and disconnections on every node.
    Relay {
        /// Transport.
        #[arg(long, value_enum)]
        transport: workload::Kind,
        /// Messages per flow.
        #[arg(long, default_value_t = 200_000)]
        n: usize,
        /// Message body bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Runs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// One node receiving from several peers at once (1, 2, 4 by default):
    /// its throughput, how busy its driver task was, and the cores the
    /// process used, per number of peers.
    Fanin {
        /// Transport.
        #[arg(long, value_enum)]
        transport: workload::Kind,
        /// Numbers of peers sending at once, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        peers: Vec<usize>,
        /// Messages per peer.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Message body bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Runs per number of peers.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A handshake flood against a real listener on 127.0.0.1: N
    /// connections stalled at one stage of the handshake are held open,
    /// then an honest peer dials. Time to connect (median, min, max over
    /// runs, each with a fresh listener and flood) and memory growth of
    /// this process (listener and attacker together, so an upper bound for
    /// the listener). `RUST_LOG=warn` shows the listener's pressure log.
    Flood {
        /// How the flood's connections stall.
        #[arg(long, value_enum)]
        stall: plexus_bench::flood::Stall,
        /// Connections in the flood.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Runs.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Soak and faults across network namespaces (needs root, iproute2,
    /// nftables): five node processes in a ring of veth links, sequenced
    /// traffic between all of them, then 10% and 30% loss, a partition and
    /// a kill/restart (see `plexus_bench::soak`). Exits 1 if a target is
    /// missed. `--soak-secs 600` is the long run.
    Soak {
        /// Seconds of the soak phase.
        #[arg(long, default_value_t = 60)]
        soak_secs: u64,
        /// Seconds of each loss phase.
        #[arg(long, default_value_t = 20)]
        loss_secs: u64,
        /// Seconds of the partition.
        #[arg(long, default_value_t = 30)]
        partition_secs: u64,
        /// Messages per second of each of the 20 flows.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Message body bytes.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Transport.
        #[arg(long, value_enum, default_value = "quic")]
        transport: workload::Kind,
        /// Phases to run, comma-separated (default all: soak, loss10,
        /// loss30, partition, kill).
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(plexus_bench::soak::PHASES))]
        phases: Vec<String>,
    },
    /// One node of the soak, run by `soak` inside a namespace.
    #[command(hide = true)]
    SoakNode {
        #[arg(long)]
        index: usize,
        #[arg(long)]
        key_file: std::path::PathBuf,
        #[arg(long)]
        listen: plexus::Address,
        /// Every node's id, comma-separated, in index order.
        #[arg(long, value_delimiter = ',', value_parser = parse_id)]
        peers: Vec<NodeId>,
        /// A link to keep: <id>@<address> (repeatable).
        #[arg(long)]
        keep: Vec<String>,
        #[arg(long)]
        mark: bool,
    },
    /// Membership (HyParView) on the simulator: connectivity in steady
    /// state, view sizes, healing after half the nodes die at once.
    Membership {
        /// Nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Broadcast (Plumtree) over membership on the simulator: delivery,
    /// RMR, LDH, duplicates, latency of senders whose trees formed (warm)
    /// and of first messages (cold); then a tenth killed mid-stream.
    Broadcast {
        /// Nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Nodes that send in the warm phase (each twice before it is
        /// measured, so its tree has formed).
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Messages measured in the warm phase (one every 100 ms, from
        /// random senders).
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Pubsub over real QUIC on 127.0.0.1: N nodes in this process, each
    /// dialling 6 random others, all subscribed to one topic; publications
    /// from random nodes. Delivery, latency, copies and bytes per
    /// delivered message, CPU, peak RSS.
    Pubsub {
        /// Nodes.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// Publications.
        #[arg(long, default_value_t = 200)]
        publications: usize,
        /// Publications per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Bytes per publication (at least 16: sequence number and send time).
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Seed of the random graph and publishers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Pubsub over membership on the simulator, with loss and churn.
    PubsubSim {
        /// Nodes.
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Topics.
        #[arg(long, default_value_t = 10)]
        topics: usize,
        /// Subscribers per topic.
        #[arg(long, default_value_t = 10)]
        per_topic: usize,
        /// Publications (one every 50 ms, from random nodes).
        #[arg(long, default_value_t = 1000)]
        publications: usize,
        /// Loss on every link.
        #[arg(long, default_value_t = 0.05)]
        loss: f64,
        /// Fraction of nodes killed and restarted in waves.
        #[arg(long, default_value_t = 0.05)]
        churn: f64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Gossip: one update on `nodes` nodes each dialling `fanout` others,
    /// with loss (the gossiper crate's published scenario).
    GossipSpread {
        /// Nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Dials per node (about twice as many neighbours).
        #[arg(long, default_value_t = 3)]
        fanout: usize,
        /// Loss on every link.
        #[arg(long, default_value_t = 0.1)]
        loss: f64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Gossip over membership: keys written at a steady rate, with loss;
    /// convergence time and anti-entropy bytes.
    Gossip {
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Keys written.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Keys written per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Loss on every link.
        #[arg(long, default_value_t = 0.1)]
        loss: f64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Gossip across a partition into halves with writes and deletes on
    /// both sides, healed: relink and convergence times, resurrected keys.
    GossipPartition {
        /// Nodes.
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        /// How long the partition lasts, seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
    },
    /// The kv store under churn on the simulator (membership, the dv
    /// router, kv): keys put, then nodes killed and joined at random while
    /// gets and overwrites go on; replicas counted every sample.
    KvChurn {
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Keys.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Simulated hours of churn.
        #[arg(long, default_value_t = 6.0)]
        hours: f64,
        /// Fraction of the nodes killed and joined per hour.
        #[arg(long, default_value_t = 0.2)]
        churn: f64,
        /// Gets per second (random keys, random nodes).
        #[arg(long, default_value_t = 5.0)]
        gets: f64,
        /// Overwrites per second.
        #[arg(long, default_value_t = 0.5)]
        puts: f64,
        /// Minutes between replica counts.
        #[arg(long, default_value_t = 10)]
        sample_min: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The kv store over QUIC on 127.0.0.1: N nodes in this process
    /// (membership, ping, the dv router, kv); records put from random
    /// nodes, each read from another; a fifth of the nodes killed, every
    /// record read again.
    Kv {
        /// Nodes.
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        /// Records.
        #[arg(long, default_value_t = 1000)]
        records: usize,
        /// Bytes per record.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Operations in flight.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// Fraction of the nodes killed.
        #[arg(long, default_value_t = 0.2)]
        kill: f64,
        /// Replicas per key (kv's k).
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The kv store across a partition on the simulator: halves, a writer
    /// on each side racing on every key (and deleting some), healed.
    KvPartition {
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Keys raced on.
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// How long the partition lasts, seconds.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// 2, 3, 5 and 10 nodes joining one at a time in random order and
    /// timing: all join, all deliver a broadcast from each.
    Swarms {
        /// Seeds per size.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
    },
    /// Ping on every link of a random graph on the simulator: simulated
    /// node-rounds (100 ms of one node's life) per second of wall time,
    /// measured after the first simulated second (connection setup), and
    /// memory per node.
    Sim {
        /// Nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Average degree of the random graph.
        #[arg(long, default_value_t = 8.0)]
        degree: f64,
        /// Virtual seconds to run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// (current, peak) resident set size in bytes, from /proc (0 elsewhere).
pub(crate) fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn random_ids(n: usize, rng: &mut Rng) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = (0..n).map(|_| NodeId(rng.next_u64())).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
pub(crate) fn wall() -> std::time::Instant {
    std::time::Instant::now()
}

fn dv_workload(n: usize, degree: f64, steady: u64, seed: u64) {
    let mut sc = SimConfig::new(seed);
    sc.capture_events = false;
    sc.link = LinkConfig::default().with_latency(Duration::from_millis(10));
    let mut sim = Sim::with_config(sc);
    let mut rng = Rng::new(seed);
    let ids = random_ids(n, &mut rng);
    let n = ids.len();
    let edges = topology::random_connected(n, degree, &mut rng);
    let (base, _) = rss();
    for &id in &ids {
        sim.add_node(id, |id, seed| {
            let router = Arc::new(dv::DvRouter::new(id));
            Network::builder(id, router.clone())
                .seed(seed)
                .behavior(dv::Behaviour::new(router, dv::Config::default()))
                .build()
                .expect("one behaviour")
        });
    }
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }
    let start = wall();
    let mut converged = None;
    while sim.now() < Instant::from_secs(120) {
        sim.run_for(Duration::from_millis(100)).expect("step limit");
        let complete = ids.iter().all(|id| {
            sim.node(*id)
                .is_some_and(|n| n.router().routes().len() == ids.len() - 1)
        });
        if complete {
            converged = Some(sim.now());
            break;
        }
    }
    let converge_wall = start.elapsed();
    let (after, _) = rss();
    let bytes = |sim: &Sim| {
        sim.report()
            .bytes_by_service
            .get(&dv::SERVICE)
            .copied()
            .unwrap_or(0)
    };
    let (b0, t0) = (bytes(&sim), sim.now());
    sim.run_for(Duration::from_secs(steady))
        .expect("step limit");
    let traffic = (bytes(&sim) - b0) as f64 / n as f64 / (sim.now() - t0).as_secs_f64();
    let (_, peak) = rss();
    println!(
        "workload=dv nodes={n} degree={degree} edges={} converged_virtual_s={} converge_wall_s={:.2} \
         rss_per_node_bytes={} peak_rss_mib={} sync_bytes_per_node_per_s={traffic:.0}",
        edges.len(),
        converged.map_or("never".to_string(), |t| format!("{:.2}", t.as_micros() as f64 / 1e6)),
        converge_wall.as_secs_f64(),
        after.saturating_sub(base) / n as u64,
        peak >> 20,
    );
}

fn sim_workload(n: usize, degree: f64, seconds: u64, seed: u64) {
    let mut sc = SimConfig::new(seed);
    sc.capture_events = false;
    sc.link = LinkConfig::default()
        .with_latency(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(5));
    let mut sim = Sim::with_config(sc);
    let mut rng = Rng::new(seed);
    let ids = random_ids(n, &mut rng);
    let n = ids.len();
    let edges = topology::random_connected(n, degree, &mut rng);
    let cfg = ping::Config::default().with_emit_rtt(false);
    let (base, _) = rss();
    for &id in &ids {
        let cfg = cfg.clone();
        sim.add_node(id, move |id, seed| {
            Network::builder(id, Arc::new(StaticRouter::new(id)))
                .seed(seed)
                .behavior(ping::Behaviour::new(cfg.clone()))
                .build()
                .expect("one behaviour")
        });
    }
    for &(a, b) in &edges {
        sim.connect(ids[a], ids[b]);
    }
    // Connections come up in the first simulated second; measure after it.
    let setup = wall();
    sim.run_until(Instant::from_secs(1)).expect("step limit");
    let setup = setup.elapsed().as_secs_f64();
    let sent0 = sim.report().frames_sent;
    let start = wall();
    sim.run_until(Instant::from_secs(1 + seconds))
        .expect("step limit");
    let elapsed = start.elapsed().as_secs_f64();
    let (now, peak) = rss();
    // A node-round is 100 ms of one node's simulated life (the tick the
    // first simulator polled every node at; kept as the unit).
    let rounds = n as f64 * (seconds as f64 / 0.1);
    let frames = sim.report().frames_sent - sent0;
    println!(
        "workload=sim nodes={n} degree={degree} virtual_s={seconds} setup_wall_s={setup:.2} wall_s={elapsed:.2} \
         node_rounds_per_s={:.0} frames={frames} frames_per_s={:.0} rss_per_node_bytes={} peak_rss_mib={}",
        rounds / elapsed,
        frames as f64 / elapsed,
        now.saturating_sub(base) / n as u64,
        peak >> 20,
    );
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn baselines(kind: workload::Kind) -> Vec<workload::Baseline> {
    use workload::Baseline::*;
    match kind {
        workload::Kind::Quic => vec![Quinn],
        workload::Kind::Tcp => vec![TcpTls, Tcp],
        workload::Kind::Webrtc => vec![Webrtc, PlexusQuic],
    }
}

/// Median, min and max of `v` (which it sorts); zeros when empty.
pub(crate) fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(&min), Some(&max)) => (v[v.len() / 2], min, max),
        _ => (0.0, 0.0, 0.0),
    }
}

/// `name_median=… name_min=… name_max=…` of `v`, `prec` decimals.
fn spread_fields(name: &str, v: &mut [f64], prec: usize) -> String {
    let (med, min, max) = spread(v);
    format!("{name}_median={med:.prec$} {name}_min={min:.prec$} {name}_max={max:.prec$}")
}

/// Round trips: each run measures plexus on a fresh pair of nodes, then
/// each baseline, alternately; prints one line per run and the medians over
/// runs of the per-run medians and ratios.
async fn rtt_workload(
    kind: workload::Kind,
    n: usize,
    size: usize,
    runs: usize,
) -> std::io::Result<()> {
    let bases = baselines(kind);
    let mut plexus = Vec::new();
    let mut base_us = vec![Vec::new(); bases.len()];
    let mut ratios = vec![Vec::new(); bases.len()];
    for run in 0..runs.max(1) {
        let mut p = workload::pair(kind).await?;
        workload::plexus_rtt(&mut p, n.min(1000), size).await?; // warm-up
        let mut rtts = workload::plexus_rtt(&mut p, n, size).await?;
        p.shutdown().await?;
        rtts.sort_unstable();
        let m = percentile(&rtts, 50);
        let mut line = format!(
            "run={run} plexus_median_us={m:.1} plexus_p90_us={:.1} plexus_p99_us={:.1}",
            percentile(&rtts, 90),
            percentile(&rtts, 99)
        );
        plexus.push(m);
        for (i, b) in bases.iter().enumerate() {
            let Measured::Rtts(mut r) = workload::baseline(*b, Work::Rtt { n, size }).await? else {
                unreachable!("rtt work measures round trips")
            };
            r.sort_unstable();
            let bm = percentile(&r, 50);
            line += &format!(
                " {0}_median_us={bm:.1} {0}_p90_us={1:.1} {0}_p99_us={2:.1} ratio_vs_{0}={3:.2}",
                b.name(),
                percentile(&r, 90),
                percentile(&r, 99),
                m / bm
            );
            base_us[i].push(bm);
            ratios[i].push(m / bm);
        }
        println!("{line}");
    }
    let mut line = format!(
        "workload=rtt transport={} n={n} size={size} runs={} {}",
        format!("{kind:?}").to_lowercase(),
        plexus.len(),
        spread_fields("plexus_us", &mut plexus, 1)
    );
    for (i, b) in bases.iter().enumerate() {
        let name = b.name();
        line += &format!(
            " {} {}",
            spread_fields(&format!("{name}_us"), &mut base_us[i], 1),
            spread_fields(&format!("ratio_vs_{name}"), &mut ratios[i], 2)
        );
    }
    match kind {
        // No target for WebRTC: the figure is its cost next to QUIC.
        workload::Kind::Webrtc => println!("{line}"),
        _ => println!("{line} target_ratio<=1.1"),
    }
    Ok(())
}

/// One-way throughput (`stream`, and `bulk` with large messages): each run
/// measures plexus on a fresh pair of nodes, then each baseline,
/// alternately; prints one line per run and the medians over runs.
async fn stream_workload(
    kind: workload::Kind,
    name: &str,
    n: usize,
    size: usize,
    runs: usize,
    with_baseline: bool,
) -> std::io::Result<()> {
    let bases: Vec<_> = baselines(kind)
        .into_iter()
        .filter(|_| with_baseline)
        .collect();
    let mib = (n * size) as f64 / (1 << 20) as f64;
    let mut plexus = Vec::new();
    let mut base_rate = vec![Vec::new(); bases.len()];
    let mut ratios = vec![Vec::new(); bases.len()];
    for run in 0..runs.max(1) {
        let mut p = workload::pair(kind).await?;
        workload::plexus_stream(&mut p, n.min(10_000), size).await?; // warm-up
        let elapsed = workload::plexus_stream(&mut p, n, size)
            .await?
            .as_secs_f64();
        p.shutdown().await?;
        let msgs = n as f64 / elapsed;
        let mut line = format!(
            "run={run} plexus_msgs_per_s={msgs:.0} plexus_gbit_per_s={:.2}",
            mib * 8.0 * 1.048_576 / 1000.0 / elapsed,
        );
        plexus.push(msgs);
        for (i, b) in bases.iter().enumerate() {
            let Measured::Elapsed(e) = workload::baseline(*b, Work::Stream { n, size }).await?
            else {
                unreachable!("stream work measures elapsed time")
            };
            let e = e.as_secs_f64();
            line += &format!(
                " {0}_msgs_per_s={1:.0} {0}_gbit_per_s={2:.2} ratio_vs_{0}={3:.2}",
                b.name(),
                n as f64 / e,
                mib * 8.0 * 1.048_576 / 1000.0 / e,
                e / elapsed
            );
            base_rate[i].push(n as f64 / e);
            ratios[i].push(e / elapsed);
        }
        println!("{line}");
    }
    let (_, peak) = rss();
    let (med, _, _) = spread(&mut plexus.clone());
    let mut line = format!(
        "workload={name} transport={} n={n} size={size} runs={} {} plexus_gbit_per_s_median={:.2} peak_rss_mib={}",
        format!("{kind:?}").to_lowercase(),
        plexus.len(),
        spread_fields("plexus_msgs_per_s", &mut plexus, 0),
        med * size as f64 * 8.0 / 1e9,
        peak >> 20
    );
    for (i, b) in bases.iter().enumerate() {
        let name = b.name();
        line += &format!(
            " {} {}",
            spread_fields(&format!("{name}_msgs_per_s"), &mut base_rate[i], 0),
            spread_fields(&format!("ratio_vs_{name}"), &mut ratios[i], 2)
        );
    }
    let target = match (name, kind) {
        // The anchor: webrtc-rs data channels measured about 580 Mbit/s.
        (_, workload::Kind::Webrtc) => {
            println!("{line} anchor_webrtc_rs_mbit_per_s=580");
            return Ok(());
        }
        ("bulk", _) => "0.95",
        (_, workload::Kind::Quic) => "0.9",
        _ => "0.85",
    };
    println!("{line} target_ratio>={target}");
    Ok(())
}

async fn flood_workload(
    stall: plexus_bench::flood::Stall,
    n: usize,
    runs: usize,
) -> std::io::Result<()> {
    use plexus_bench::flood;
    let mut took = Vec::new();
    let mut grew = Vec::new();
    let mut held = Vec::new();
    for _ in 0..runs.max(1) {
        let mut l = flood::listener(stall, plexus::TransportConfig::default()).await?;
        let before = rss().0;
        let f = flood::flood(stall, l.addr, n).await?;
        let t = flood::honest_dial(stall, l.addr, l.node, Duration::from_secs(60)).await?;
        tokio::time::timeout(Duration::from_secs(60), l.incoming.recv())
            .await
            .map_err(|_| std::io::Error::other("the listener did not hand over the honest peer"))?
            .ok_or_else(|| std::io::Error::other("the listener stopped"))?;
        grew.push(rss().0.saturating_sub(before) as f64 / f64::from(1 << 20));
        took.push(t.as_secs_f64() * 1e3);
        held.push(f.held);
        drop(f);
        l.transport.shutdown().await;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (t_med, t_min, t_max) = stats(&mut took);
    let (m_med, _, m_max) = stats(&mut grew);
    println!(
        "workload=flood stall={stall:?} n={n} runs={} honest_connect_ms_median={t_med:.1} min={t_min:.1} \
         max={t_max:.1} rss_growth_mib_median={m_med:.1} max={m_max:.1} reached_stall_per_run={held:?}",
        took.len()
    );
    Ok(())
}

/// A node id: 16 hex digits.
fn parse_id(s: &str) -> Result<NodeId, String> {
    u64::from_str_radix(s, 16)
        .map(NodeId)
        .map_err(|e| format!("node id {s:?} is not 16 hex digits: {e}"))
}

/// Warnings only, without the WebRTC stack's routine ones (mDNS answers,
/// candidate pairs not formed yet).
const QUIET_LOGS: &str =
    "warn,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_mdns=error,webrtc=error";

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(QUIET_LOGS)).init();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    let done = |r: std::io::Result<()>| {
        if let Err(e) = r {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    match cli.workload {
        Workload::Rtt {
            transport,
            n,
            size,
            runs,
        } => done(rt().block_on(rtt_workload(transport, n, size, runs))),
        Workload::Stream {
            transport,
            n,
            size,
            runs,
            no_baseline,
        } => done(rt().block_on(stream_workload(
            transport,
            "stream",
            n,
            size,
            runs,
            !no_baseline,
        ))),
        Workload::Bulk {
            transport,
            mib,
            runs,
            no_baseline,
        } => {
            // Messages just under the 1 MiB payload maximum (room for the
            // message's own encoding).
            let size = (1 << 20) - 64;
            let n = (mib << 20).div_ceil(size);
            done(rt().block_on(stream_workload(
                transport,
                "bulk",
                n,
                size,
                runs,
                !no_baseline,
            )))
        }
        Workload::Relay { transport, .. }
        | Workload::Fanin { transport, .. }
        | Workload::Soak { transport, .. }
            if transport == workload::Kind::Webrtc =>
        {
            eprintln!("error: relay, fanin and soak run over quic or tcp; webrtc is measured by rtt, stream and bulk");
            std::process::exit(2)
        }
        Workload::Relay {
            transport,
            n,
            size,
            runs,
        } => done(rt().block_on(relay::relay(transport, n, size, runs))),
        Workload::Fanin {
            transport,
            peers,
            n,
            size,
            runs,
        } => done(rt().block_on(relay::fanin(transport, &peers, n, size, runs))),
        Workload::Flood { stall, n, runs } => done(rt().block_on(flood_workload(stall, n, runs))),
        Workload::Soak {
            soak_secs,
            loss_secs,
            partition_secs,
            rate,
            size,
            transport,
            phases,
        } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| "plexus-bench".into());
            let cfg = plexus_bench::soak::Config {
                transport: match transport {
                    workload::Kind::Quic => "quic".into(),
                    _ => "tcp".into(),
                },
                soak: Duration::from_secs(soak_secs),
                loss: Duration::from_secs(loss_secs),
                partition: Duration::from_secs(partition_secs),
                rate,
                size,
                phases: if phases.is_empty() {
                    plexus_bench::soak::PHASES
                        .iter()
                        .map(|p| p.to_string())
                        .collect()
                } else {
                    phases
                },
                ..plexus_bench::soak::Config::ci(exe)
            };
            match plexus_bench::soak::run(&cfg) {
                Ok(r) if r.failures.is_empty() => println!("soak: every target met"),
                Ok(r) => {
                    eprintln!("soak: {} target(s) missed:", r.failures.len());
                    for f in &r.failures {
                        eprintln!("  {f}");
                    }
                    std::process::exit(1);
                }
                Err(e) => done(Err(e)),
            }
        }
        Workload::SoakNode {
            index,
            key_file,
            listen,
            peers,
            keep,
            mark,
        } => {
            let keep = keep
                .iter()
                .map(|k| {
                    let (id, addr) = k
                        .split_once('@')
                        .ok_or_else(|| format!("--keep {k}: not <id>@<address>"))?;
                    Ok((
                        parse_id(id)?,
                        addr.parse::<plexus::Address>().map_err(|e| e.to_string())?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>();
            let keep = keep.unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(2)
            });
            let args = plexus_bench::soak::node::NodeArgs {
                index,
                key_file,
                listen,
                peers,
                keep,
                mark,
            };
            done(rt().block_on(plexus_bench::soak::node::run(args)))
        }
        Workload::Dv {
            nodes,
            degree,
            steady,
            seed,
        } => dv_workload(nodes, degree, steady, seed),
        Workload::Sim {
            nodes,
            degree,
            seconds,
            seed,
        } => sim_workload(nodes, degree, seconds, seed),
        Workload::Route {
            router,
            nodes,
            messages,
            sources,
            kill,
            steady,
            seed,
        } => route::route(route::Args {
            router: match router {
                RouterArg::Dv => plexus::router::scenario::Router::Dv,
                RouterArg::Kad => plexus::router::scenario::Router::Kad,
            },
            nodes,
            seed,
            messages,
            sources,
            kill,
            steady,
        }),
        Workload::Membership { nodes, seed } => overlay::membership(nodes, seed),
        Workload::Broadcast {
            nodes,
            senders,
            messages,
            seed,
        } => overlay::broadcast(nodes, seed, senders, messages),
        Workload::PubsubSim {
            nodes,
            topics,
            per_topic,
            publications,
            loss,
            churn,
            seed,
        } => overlay::pubsub(nodes, seed, topics, per_topic, publications, loss, churn),
        Workload::Swarms { seeds } => overlay::swarms(seeds),
        Workload::GossipSpread {
            nodes,
            fanout,
            loss,
            seed,
        } => overlay::gossip_spread(nodes.max(2), fanout, loss, seed),
        Workload::Gossip {
            nodes,
            keys,
            rate,
            loss,
            seed,
        } => overlay::gossip_load(nodes.max(2), keys, rate, loss, seed),
        Workload::GossipPartition {
            nodes,
            seconds,
            seeds,
        } => overlay::gossip_partition(nodes.max(2), seconds, seeds),
        Workload::KvChurn {
            nodes,
            keys,
            hours,
            churn,
            gets,
            puts,
            sample_min,
            seed,
        } => kv::churn(
            nodes.max(4),
            keys,
            hours,
            churn,
            gets,
            puts,
            sample_min,
            seed,
        ),
        Workload::Kv {
            nodes,
            records,
            size,
            in_flight,
            kill,
            replicas,
            seed,
        } => kv::quic(
            nodes.max(2),
            records,
            size,
            in_flight.max(1),
            kill.clamp(0.0, 0.9),
            replicas.max(1),
            seed,
        ),
        Workload::KvPartition {
            nodes,
            keys,
            seconds,
            seed,
        } => kv::partition(nodes.max(4), keys, seconds, seed),
        Workload::Pubsub {
            nodes,
            publications,
            rate,
            size,
            seed,
        } => pubsub_quic::run(nodes.max(2), publications, rate, size, seed),
    }
}
