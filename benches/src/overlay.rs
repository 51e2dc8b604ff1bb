//! Membership, broadcast and pubsub on the simulator: the scenarios of
//! `plexus_behaviours::sim_support`, timed, with their reports printed as
//! one `key=value` line each.

use plexus::behaviours::sim_support;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Peak resident memory, MiB.
fn peak_mib() -> u64 {
    crate::rss().1 >> 20
}

#[allow(clippy::disallowed_methods)] // wall time is what a benchmark reports
fn wall() -> Instant {
    Instant::now()
}

pub(crate) fn membership(nodes: usize, seed: u64) {
    let t = wall();
    let r = sim_support::membership_scenario(nodes, seed);
    println!(
        "workload=membership nodes={} steady_samples={} max_components={} views_min={} views_median={} \
         views_max={} diameter={} killed=50% healed_after_s={} heal_deadline_s={:.0} views_bounded={} \
         wall_s={:.1} peak_rss_mib={}",
        r.nodes,
        r.samples,
        r.max_components,
        r.view_min,
        r.view_median,
        r.view_max,
        r.diameter,
        r.heal.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
        r.heal_deadline.as_secs_f64(),
        r.bounded,
        t.elapsed().as_secs_f64(),
        peak_mib()
    );
}

pub(crate) fn broadcast(nodes: usize, seed: u64, senders: usize, messages: usize) {
    let t = wall();
    let r = sim_support::broadcast_scenario(nodes, seed, senders, messages, true);
    let phase = |name: &str, p: &sim_support::BroadcastPhase| {
        format!(
            "{name}_messages={} {name}_delivery={:.4} {name}_rmr={:.3} {name}_ldh={} {name}_ldh_mean={:.1} \
             {name}_dup_median={:.2} {name}_dup_p99={:.2} {name}_latency_p50_ms={:.0} \
             {name}_latency_p99_ms={:.0} {name}_bytes_per_node_msg={:.0}",
            p.messages,
            p.delivery,
            p.rmr,
            p.ldh,
            p.ldh_mean,
            p.dup_median,
            p.dup_p99,
            ms(p.latency_p50),
            ms(p.latency_p99),
            p.bytes_per_node_msg,
        )
    };
    println!(
        "workload=broadcast nodes={} diameter={} senders={} {} {} tenth_killed_survivors_all_delivered={} \
         wall_s={:.1} peak_rss_mib={}",
        r.nodes,
        r.diameter,
        r.senders,
        phase("warm", &r.warm),
        phase("cold", &r.cold),
        r.survivors_all_delivered.unwrap_or(false),
        t.elapsed().as_secs_f64(),
        peak_mib()
    );
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn pubsub(
    nodes: usize,
    seed: u64,
    topics: usize,
    per_topic: usize,
    publications: usize,
    loss: f64,
    churn: f64,
) {
    let t = wall();
    let r = sim_support::pubsub_scenario(nodes, seed, topics, per_topic, publications, loss, churn);
    println!(
        "workload=pubsub-sim nodes={} topics={topics} subscriptions={} publications={} loss={loss} churn={churn} \
         owed={} exactly_once={} duplicates={} latency_p50_ms={:.0} latency_p99_ms={:.0} carriers={} \
         wall_s={:.1} peak_rss_mib={}",
        r.nodes,
        r.subscriptions,
        r.publications,
        r.expected,
        r.exactly_once,
        r.duplicates,
        ms(r.latency_p50),
        ms(r.latency_p99),
        r.carriers,
        t.elapsed().as_secs_f64(),
        peak_mib()
    );
}

pub(crate) fn swarms(seeds: u64) {
    let t = wall();
    let mut parts = Vec::new();
    for n in [2, 3, 5, 10] {
        let ok = (0..seeds)
            .filter(|s| sim_support::swarm_scenario(n, *s))
            .count();
        parts.push(format!("n{n}_ok={ok}/{seeds}"));
    }
    println!(
        "workload=swarms {} wall_s={:.1}",
        parts.join(" "),
        t.elapsed().as_secs_f64()
    );
}

pub(crate) fn gossip_spread(nodes: usize, fanout: usize, loss: f64, seed: u64) {
    let r = sim_support::gossip_spread_scenario(nodes, fanout, loss, seed);
    println!(
        "workload=gossip-spread nodes={} fanout={fanout} loss={loss} converged={} rounds={} \
         messages_per_node={:.2} spread_ms={:.0} setup_wall_s={:.2} spread_wall_s={:.3} \
         peak_rss_mib={}",
        r.nodes,
        r.converged,
        r.rounds,
        r.messages_per_node,
        ms(r.spread_time),
        r.setup_wall.as_secs_f64(),
        r.spread_wall.as_secs_f64(),
        peak_mib()
    );
}

pub(crate) fn gossip_load(nodes: usize, keys: usize, rate: u32, loss: f64, seed: u64) {
    let r = sim_support::gossip_load_scenario(nodes, keys, rate, loss, seed);
    println!(
        "workload=gossip nodes={} keys={} rate={rate}/s loss={loss} converged={} \
         convergence_p50_ms={:.0} p99_ms={:.0} max_ms={:.0} \
         entropy_bytes_per_node_period={:.0} idle_entropy_bytes_per_node_period={:.1} \
         bytes_per_node_per_key={:.0} wall_s={:.1} peak_rss_mib={}",
        r.nodes,
        r.keys,
        r.converged,
        ms(r.convergence[0]),
        ms(r.convergence[1]),
        ms(r.convergence[2]),
        r.entropy_bytes_per_node_period,
        r.idle_entropy_bytes_per_node_period,
        r.bytes_per_node_per_key,
        r.wall.as_secs_f64(),
        peak_mib()
    );
}

pub(crate) fn gossip_partition(nodes: usize, seconds: u64, seeds: u64) {
    let t = wall();
    let (mut relink, mut heal) = (Vec::new(), Vec::new());
    let (mut resurrected, mut missing, mut stuck) = (0, 0, 0);
    for seed in 1..=seeds {
        let r = sim_support::gossip_partition_scenario(nodes, Duration::from_secs(seconds), seed);
        resurrected += r.resurrected.len();
        missing += r.missing.len();
        match (r.relink, r.heal) {
            (Some(l), Some(h)) => {
                relink.push(l);
                heal.push(h);
            }
            _ => stuck += 1,
        }
    }
    relink.sort();
    heal.sort();
    println!(
        "workload=gossip-partition nodes={nodes} split_s={seconds} seeds={seeds} not_converged={stuck} \
         resurrected={resurrected} missing={missing} relink_p50_ms={:.0} relink_max_ms={:.0} \
         converge_after_relink_p50_ms={:.0} max_ms={:.0} wall_s={:.1}",
        ms(sim_support::percentile(&relink, 50)),
        ms(relink.last().copied().unwrap_or_default()),
        ms(sim_support::percentile(&heal, 50)),
        ms(heal.last().copied().unwrap_or_default()),
        t.elapsed().as_secs_f64()
    );
}
