//! Routers side by side on the simulator: `plexus_router::scenario`,
//! timed, its report printed as one `key=value` line.

use plexus::router::scenario::{self, Delivery, Dist, Options, Router};
use plexus::sim::Sim;
use plexus::{NodeId, Rng, RouteAction};
use std::time::Duration;

fn dist(name: &str, d: &Dist) -> String {
    format!(
        "{name}_min={} {name}_median={} {name}_max={} {name}_mean={:.1}",
        d.min, d.median, d.max, d.mean
    )
}

fn delivery(name: &str, d: &Delivery) -> String {
    let hops: Vec<String> = d.hops.iter().map(|h| h.to_string()).collect();
    format!(
        "{name}_sent={} {name}_delivered={} {name}_misdelivered={} {name}_ratio={:.4} \
         {name}_mean_hops={:.2} {name}_mean_shortest={:.2} {name}_stretch={:.3} {name}_hops={}",
        d.sent,
        d.delivered,
        d.misdelivered,
        d.ratio(),
        d.mean_hops,
        d.mean_shortest,
        d.stretch(),
        hops.join("/")
    )
}

/// Mean time of one `path_to_key` (the per-message routing decision) over
/// random keys, on up to 100 converged nodes' routers.
fn time_lookups(sim: &Sim) -> f64 {
    let mut rng = Rng::new(9);
    let nodes: Vec<NodeId> = sim.node_ids().take(100).collect();
    let keys: Vec<NodeId> = (0..1000).map(|_| NodeId(rng.next_u64())).collect();
    let t = crate::wall();
    let mut acc = 0u64;
    for id in &nodes {
        let Some(n) = sim.node(*id) else { continue };
        let router = n.router();
        for k in &keys {
            if let RouteAction::Next(h) = router.path_to_key(*k) {
                acc = acc.wrapping_add(h.0);
            }
        }
    }
    std::hint::black_box(acc);
    t.elapsed().as_nanos() as f64 / (nodes.len() * keys.len()).max(1) as f64
}

pub(crate) struct Args {
    pub router: Router,
    pub nodes: usize,
    pub seed: u64,
    pub messages: usize,
    pub sources: usize,
    pub kill: f64,
    pub steady: u64,
}

pub(crate) fn route(a: Args) {
    if a.nodes < 2 || !(0.0..1.0).contains(&a.kill) {
        eprintln!("error: route needs --nodes of at least 2 and --kill in [0, 1)");
        std::process::exit(2);
    }
    let mut o = Options::new(a.router, a.nodes, a.seed);
    o.messages = a.messages;
    o.sources = a.sources;
    o.kill = a.kill;
    o.steady = Duration::from_secs(a.steady);
    let t = crate::wall();
    let mut phases = Vec::new();
    let mut lookup_ns = 0.0;
    let r = scenario::run_with(
        &o,
        |p| {
            let s = t.elapsed().as_secs_f64();
            eprintln!("route: {p} at {s:.1} s wall");
            phases.push(format!("{}_wall_s={s:.1}", p.replace(' ', "_")));
        },
        |sim| lookup_ns = time_lookups(sim),
    );
    println!(
        "workload=route router={} nodes={} log2_n={:.1} overlay_edges={} converged_virtual_s={} \
         {} {} sync_bytes_per_node_per_s={:.0} {} {} {} killed={} {} {} lookup_ns={:.0} {} wall_s={:.1} peak_rss_mib={}",
        match a.router {
            Router::Dv => "dv",
            Router::Kad => "kad",
        },
        r.nodes,
        (r.nodes as f64).log2(),
        r.overlay_edges,
        r.converged
            .map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
        dist("links", &r.links),
        dist("entries", &r.entries),
        r.sync_bytes_per_node_per_s,
        delivery("node", &r.node),
        delivery("key", &r.key),
        delivery("service", &r.service),
        r.killed,
        delivery("node_after_kill", &r.node_after_kill),
        delivery("key_after_kill", &r.key_after_kill),
        lookup_ns,
        phases.join(" "),
        t.elapsed().as_secs_f64(),
        crate::rss().1 >> 20,
    );
}
