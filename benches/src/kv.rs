//! The kv store: on the simulator under churn and across a partition, and
//! over QUIC on 127.0.0.1. Each prints one `key=value` line.

use plexus::behaviours::sim_support;
use std::time::Duration;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn peak_mib() -> u64 {
    crate::rss().1 >> 20
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn churn(
    nodes: usize,
    keys: usize,
    hours: f64,
    churn: f64,
    gets: f64,
    puts: f64,
    sample_min: u64,
    seed: u64,
) {
    let r = sim_support::kv_churn_scenario(
        nodes,
        keys,
        hours,
        churn,
        gets,
        puts,
        Duration::from_secs(sample_min.max(1) * 60),
        seed,
    );
    let mut hist = [0u64; 6];
    let mut worst = (0u64, [0u64; 6]);
    let mut worst_share = 2.0;
    for (t, h) in &r.samples {
        for (a, b) in hist.iter_mut().zip(h) {
            *a += b;
        }
        let total: u64 = h.iter().sum();
        let share = (total - h[0] - h[1]) as f64 / total.max(1) as f64;
        if share < worst_share {
            worst_share = share;
            worst = (*t, *h);
        }
    }
    let fmt = |h: &[u64]| {
        h.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    let gets_total: u64 = r.gets.iter().sum();
    println!(
        "workload=kv-churn nodes={} keys={} hours={hours} churn_per_hour={churn} killed={} joined={} samples={} \
         min_share_2_replicas={:.5} worst_sample_t_s={} worst_sample_replicas_0/1/2/3/4/5+={} \
         all_samples_replicas_0/1/2/3/4/5+={} writes_acked={} writes_failed={} gets={} gets_right={} \
         gets_wrong={} gets_failed={} put_p50_ms={:.1} put_p99_ms={:.1} get_p50_ms={:.1} get_p99_ms={:.1} \
         get_hops_0..8={} get_extra_hops_0/1/2+={} repair_bytes_per_node_hour={:.0} wall_s={:.1} peak_rss_mib={}",
        r.nodes,
        r.keys,
        r.kills,
        r.joins,
        r.samples.len(),
        r.min_two_replicas,
        worst.0,
        fmt(&worst.1),
        fmt(&hist),
        r.writes[0],
        r.writes[1],
        gets_total,
        r.gets[0],
        r.gets[1],
        r.gets[2],
        ms(r.put_latency[0]),
        ms(r.put_latency[1]),
        ms(r.get_latency[0]),
        ms(r.get_latency[1]),
        fmt(&r.hops[..9]),
        fmt(&r.extra_hops),
        r.repair_bytes_per_node_hour,
        r.wall.as_secs_f64(),
        peak_mib()
    );
    if !r.wrong.is_empty() || !r.errors.is_empty() {
        println!("# wrong gets: {:?}; errors: {:?}", r.wrong, r.errors);
    }
}

pub(crate) fn partition(nodes: usize, keys: usize, seconds: u64, seed: u64) {
    let r = sim_support::kv_partition_scenario(nodes, keys, Duration::from_secs(seconds), seed);
    let opt =
        |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    println!(
        "workload=kv-partition nodes={} keys={} split_s={seconds} acked_side_a={} acked_side_b={} \
         deleted_last={} sides_apart_s={} routes_whole_after_heal_s={} replicas_agree_after_s={} \
         repair_interval_s={} not_newest={} deleted_back={} lost={} wall_s={:.1} peak_rss_mib={}",
        r.nodes,
        r.keys,
        r.acked[0],
        r.acked[1],
        r.deleted,
        opt(r.sides_apart),
        opt(r.routes_whole),
        opt(r.agreed),
        r.repair_interval.as_secs(),
        r.not_newest,
        r.resurrected,
        r.lost,
        r.wall.as_secs_f64(),
        peak_mib()
    );
}
