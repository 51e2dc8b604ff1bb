//! The workload benchmark: runs one workload and prints one line of
//! `key=value` figures.
//!
//! ```bash
//! cargo run --release -p plexus-bench -- dv --nodes 1000 --degree 6
//! cargo run --release -p plexus-bench -- sim --nodes 10000 --degree 8 --seconds 30
//! ```

use clap::{Parser, Subcommand};
use plexus::ping;
use plexus::router::dv;
use plexus::router::StaticRouter;
use plexus::sim::{topology, LinkConfig, Sim, SimConfig};
use plexus::{Instant, Network, NodeId, Rng};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "plexus workload benchmarks: one line of key=value figures per run")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// The distance-vector router on the simulator: convergence, memory per
    /// node, steady-state sync traffic.
    Dv {
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Average degree of the random graph.
        #[arg(long, default_value_t = 6.0)]
        degree: f64,
        /// Seconds of steady state to measure traffic over (a multiple of
        /// the 30 s refresh period gives the long-run average).
        #[arg(long, default_value_t = 60)]
        steady: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Ping on every link of a random graph on the simulator: simulated
    /// node-rounds (node ticks) per second of wall time, and memory per node.
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
fn rss() -> (u64, u64) {
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
fn wall() -> std::time::Instant {
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
    let start = wall();
    sim.run_until(Instant::from_secs(seconds))
        .expect("step limit");
    let elapsed = start.elapsed().as_secs_f64();
    let (now, peak) = rss();
    let tick = Duration::from_millis(100);
    let rounds = n as f64 * (seconds as f64 / tick.as_secs_f64());
    let r = sim.report();
    println!(
        "workload=sim nodes={n} degree={degree} virtual_s={seconds} wall_s={elapsed:.2} \
         node_rounds_per_s={:.0} frames={} frames_per_s={:.0} rss_per_node_bytes={} peak_rss_mib={}",
        rounds / elapsed,
        r.frames_sent,
        r.frames_sent as f64 / elapsed,
        now.saturating_sub(base) / n as u64,
        peak >> 20,
    );
}

fn main() {
    let cli = Cli::parse();
    match cli.workload {
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
    }
}
