//! Routers side by side on the simulator: `plexus_router::scenario`,
//! timed, its report printed as one `key=value` line.

use plexus::router::scenario::{self, Delivery, Dist, Options, Router};
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
    let mut o = Options::new(a.router, a.nodes, a.seed);
    o.messages = a.messages;
    o.sources = a.sources;
    o.kill = a.kill;
    o.steady = Duration::from_secs(a.steady);
    let t = crate::wall();
    let mut phases = Vec::new();
    let r = scenario::run(&o, |p| {
        let s = t.elapsed().as_secs_f64();
        eprintln!("route: {p} at {s:.1} s wall");
        phases.push(format!("{}_wall_s={s:.1}", p.replace(' ', "_")));
    });
    println!(
        "workload=route router={} nodes={} log2_n={:.1} overlay_edges={} converged_virtual_s={} \
         {} {} sync_bytes_per_node_per_s={:.0} {} {} {} killed={} {} {} {} wall_s={:.1} peak_rss_mib={}",
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
        phases.join(" "),
        t.elapsed().as_secs_f64(),
        crate::rss().1 >> 20,
    );
}
