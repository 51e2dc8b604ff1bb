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

// ---- over QUIC ------------------------------------------------------------

use crate::pubsub_quic::cpu_time;
use crate::wall;
use plexus::behaviours::{kv, membership, ping};
use plexus::router::dv;
use plexus::runtime::{Node, NodeHandle, RuntimeConfig, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::{Identity, Network, Rng, TransportConfig};
use std::sync::Arc;

/// One kv node on QUIC 127.0.0.1: membership (joining through `contact`),
/// ping, the distance-vector router, kv.
pub(crate) fn kv_node(contact: Option<&NodeHandle>, kv_config: kv::Config) -> NodeHandle {
    let identity = Identity::generate().expect("key");
    let id = identity.node_id();
    let quic = QuicTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        TransportConfig::default(),
    )
    .expect("bind 127.0.0.1");
    let router = Arc::new(dv::DvRouter::new(id));
    let mut b = Network::builder(id, router.clone())
        .behavior(dv::Behaviour::new(router, dv::Config::default()))
        .behavior(membership::Behaviour::new(membership::Config::default()))
        .behavior(ping::Behaviour::new(
            ping::Config::default()
                .with_interval(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(4))
                .with_emit_rtt(false),
        ))
        .behavior(kv::Behaviour::new(kv_config));
    if let Some(c) = contact {
        b = b.bootstrap(c.node_id(), c.listen_addrs()[0]);
    }
    let net = b.build().expect("build");
    let transports: Vec<Arc<dyn Transport>> = vec![Arc::new(quic)];
    let (handle, mut events) = Node::spawn(net, transports, RuntimeConfig::default());
    // Nobody reads these events here: drain them.
    tokio::spawn(async move { while events.next().await.is_some() {} });
    handle
}

/// Waits until every node routes to every other (or `limit` passes).
pub(crate) async fn routed(handles: &[NodeHandle], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut all = true;
        for h in handles {
            let n = h.status().await.map_or(0, |s| s.routes.len());
            if n + 1 < handles.len() {
                all = false;
                break;
            }
        }
        if all {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct Phase {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, usize>,
}

use std::collections::BTreeMap;

impl Phase {
    fn line(&mut self, name: &str) -> String {
        self.latencies.sort_unstable();
        let l = &self.latencies;
        let pct = |p: usize| {
            l.get((l.len() * p / 100).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{name}_ok={} {name}_failed={} {name}_p50_ms={:.2} {name}_p99_ms={:.2} {name}_max_ms={:.2}",
            self.ok,
            self.failed,
            ms(pct(50)),
            ms(pct(99)),
            ms(l.last().copied().unwrap_or_default())
        )
    }
}

/// Runs `ops` (node index, request, expected value for gets) with at most
/// `in_flight` at once.
async fn run_ops(
    handles: &[NodeHandle],
    ops: Vec<(usize, kv::Request, Option<Vec<u8>>)>,
    in_flight: usize,
) -> Phase {
    let sem = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for (node, req, expect) in ops {
        let permit = sem.clone().acquire_owned().await.expect("open");
        let h = handles[node].clone();
        tasks.spawn(async move {
            let t = wall();
            let r = h.rpc::<kv::Behaviour>(req).await;
            drop(permit);
            let latency = t.elapsed();
            let verdict = match (r, expect) {
                (Ok(Ok(kv::Reply::Written { .. })), None) => Ok(()),
                (Ok(Ok(reply)), Some(v)) if reply.value().map(|b| &b[..]) == Some(&v[..]) => Ok(()),
                (Ok(Ok(reply)), _) => Err(format!("wrong answer {reply:?}")),
                (Ok(Err(e)), _) => Err(e.to_string()),
                (Err(e), _) => Err(e.to_string()),
            };
            (latency, verdict)
        });
    }
    let mut p = Phase::default();
    while let Some(r) = tasks.join_next().await {
        let (latency, verdict) = r.expect("task");
        match verdict {
            Ok(()) => {
                p.ok += 1;
                p.latencies.push(latency);
            }
            Err(e) => {
                p.failed += 1;
                *p.errors.entry(e).or_default() += 1;
            }
        }
    }
    p
}

/// Calls started by the kv behaviours of `handles` (their requests), and
/// the records they hold.
async fn kv_requests(handles: &[NodeHandle]) -> (u64, u64) {
    let (mut n, mut records) = (0, 0);
    for h in handles {
        if let Ok(Ok(kv::Reply::Stats(s))) = h.rpc::<kv::Behaviour>(kv::Request::Stats).await {
            n += s.calls.started;
            records += s.records;
        }
    }
    (n, records)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn quic(
    nodes: usize,
    records: usize,
    size: usize,
    in_flight: usize,
    kill: f64,
    replicas: usize,
    seed: u64,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut rng = Rng::new(seed);
        let cpu0 = cpu_time();
        let t0 = wall();
        let config = kv::Config::default().with_replicas(replicas);
        let mut handles: Vec<NodeHandle> = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let contact = (i > 0).then(|| &handles[rng.below(i as u64) as usize]);
            let h = kv_node(contact, config.clone());
            handles.push(h);
        }
        let up = routed(&handles, Duration::from_secs(120)).await;
        let setup = t0.elapsed();
        let keys: Vec<String> = (0..records).map(|i| format!("record-{i}")).collect();
        let value = |i: usize| {
            let mut v = format!("value-{i}-").into_bytes();
            v.resize(size, b'x');
            v
        };
        let (req0, _) = kv_requests(&handles).await;
        let mut writer = vec![0usize; records];
        let puts: Vec<_> = (0..records)
            .map(|i| {
                writer[i] = rng.below(nodes as u64) as usize;
                (writer[i], kv::Request::put(keys[i].clone(), value(i)), None)
            })
            .collect();
        let mut put = run_ops(&handles, puts, in_flight).await;
        let other = |rng: &mut Rng, not: usize, n: usize| loop {
            let j = rng.below(n as u64) as usize;
            if j != not || n == 1 {
                break j;
            }
        };
        let gets: Vec<_> = (0..records)
            .map(|i| (other(&mut rng, writer[i], nodes), kv::Request::get(keys[i].clone()), Some(value(i))))
            .collect();
        let mut get = run_ops(&handles, gets, in_flight).await;
        let (req1, held) = kv_requests(&handles).await;
        // Kill a fifth of the nodes (gracefully: their connections close),
        // then read everything again at once from the survivors.
        let mut order: Vec<usize> = (0..nodes).collect();
        rng.shuffle(&mut order);
        let dead: Vec<usize> = order[..((nodes as f64 * kill) as usize)].to_vec();
        for &i in &dead {
            let _ = handles[i].shutdown().await;
        }
        let alive: Vec<NodeHandle> = (0..nodes)
            .filter(|i| !dead.contains(i))
            .map(|i| handles[i].clone())
            .collect();
        let (req2, _) = kv_requests(&alive).await;
        let gets: Vec<_> = (0..records)
            .map(|i| (rng.below(alive.len() as u64) as usize, kv::Request::get(keys[i].clone()), Some(value(i))))
            .collect();
        let mut after = run_ops(&alive, gets, in_flight).await;
        let (req3, _) = kv_requests(&alive).await;
        let cpu = cpu_time() - cpu0;
        println!(
            "workload=kv transport=quic nodes={nodes} replicas={replicas} records={records} size={size} in_flight={in_flight} \
             routed={up} setup_s={:.1} {} {} replicas_per_record={:.2} killed={} {} requests_per_op_before={:.2} requests_per_op_after={:.2} \
             cpu_s={:.1} wall_s={:.1} peak_rss_mib={}",
            setup.as_secs_f64(),
            put.line("put"),
            get.line("get"),
            held as f64 / records as f64,
            dead.len(),
            after.line("get_after_kill"),
            (req1 - req0) as f64 / (2 * records) as f64,
            (req3 - req2) as f64 / records as f64,
            cpu.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
            peak_mib()
        );
        for (name, p) in [("put", &put), ("get", &get), ("get_after_kill", &after)] {
            if !p.errors.is_empty() {
                println!("# {name} errors: {:?}", p.errors);
            }
        }
        // The process ends here: no graceful shutdown of the survivors
        // (closing 80 nodes' connections one by one takes longer than the
        // run).
        drop(alive);
    });
    rt.shutdown_background();
}
