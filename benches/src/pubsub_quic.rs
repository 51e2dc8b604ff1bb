//! `plexus-bench pubsub`: pubsub over real QUIC on 127.0.0.1, N nodes in
//! this process. Each node dials 6 random others (the links are the
//! neighbours: `Neighbours::Connections`, no membership), all subscribe to
//! one topic; once a warm-up publication has reached everyone, P
//! publications of S bytes at R per second from random nodes, each
//! carrying its send time. The workload rust-libp2p's gossipsub figures in
//! `shared/reference/dissemination-anchors.md` were measured on.

use crate::{rss, wall};
use bytes::Bytes;
use plexus::behaviours::broadcast::Neighbours;
use plexus::behaviours::pubsub::{self, Topic};
use plexus::router::StaticRouter;
use plexus::runtime::{Node, NodeEvent, NodeHandle, RuntimeConfig, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::{Identity, Network, Rng, TransportConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A delivery: which node, the payload's sequence number, when.
struct Got {
    node: usize,
    seq: u64,
    at: Instant,
}

/// Bytes sent on the loopback interface so far (IP, UDP and QUIC headers
/// included), from /proc/net/dev; 0 where unavailable.
pub(crate) fn loopback_tx_bytes() -> u64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    dev.lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|rest| rest.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time of this process so far (user + system), from /proc.
pub(crate) fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), so 11 and 12 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

struct Run {
    handles: Vec<NodeHandle>,
    got: mpsc::UnboundedReceiver<Got>,
    epoch: Instant,
}

fn payload(seq: u64, size: usize, epoch: Instant) -> Bytes {
    let mut p = vec![0u8; size.max(16)];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    let micros = wall().duration_since(epoch).as_micros() as u64;
    p[8..16].copy_from_slice(&micros.to_be_bytes());
    Bytes::from(p)
}

async fn start(n: usize, degree: usize, rng: &mut Rng, topic: Topic) -> Run {
    let epoch = wall();
    let (tx, got) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<usize>();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let identity = Identity::generate().expect("key");
        let id = identity.node_id();
        let quic = QuicTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            TransportConfig::default(),
        )
        .expect("bind 127.0.0.1");
        let net = Network::builder(id, Arc::new(StaticRouter::new(id)))
            .behavior(pubsub::Behaviour::new(
                pubsub::Config::default().with_neighbours(Neighbours::Connections),
            ))
            .build()
            .expect("build");
        let transports: Vec<Arc<dyn Transport>> = vec![Arc::new(quic)];
        let (handle, mut events) = Node::spawn(net, transports, RuntimeConfig::default());
        let tx = tx.clone();
        let conn_tx = conn_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                match e {
                    NodeEvent::Behaviour(e) => {
                        if let Some(p) = e.downcast_ref::<pubsub::Event>() {
                            let mut seq = [0u8; 8];
                            seq.copy_from_slice(&p.payload[..8]);
                            let got = Got {
                                node: i,
                                seq: u64::from_be_bytes(seq),
                                at: wall(),
                            };
                            if tx.send(got).is_err() {
                                break;
                            }
                        }
                    }
                    NodeEvent::Connected { .. } => {
                        let _ = conn_tx.send(i);
                    }
                    _ => {}
                }
            }
        });
        handles.push(handle);
    }
    // Each node dials `degree` random others; a pair dials once.
    let mut edges = BTreeSet::new();
    for i in 0..n {
        let mut picked = 0;
        while picked < degree.min(n - 1) {
            let j = rng.below(n as u64) as usize;
            if j != i && edges.insert((i.min(j), i.max(j))) {
                picked += 1;
            }
        }
    }
    for &(i, j) in &edges {
        let to = &handles[j];
        handles[i]
            .connect(to.node_id(), to.listen_addrs()[0])
            .await
            .expect("dial");
    }
    // Both ends report each connection.
    let mut up = 0;
    while up < 2 * edges.len() {
        tokio::time::timeout(Duration::from_secs(60), conn_rx.recv())
            .await
            .expect("connections come up within a minute")
            .expect("nodes run");
        up += 1;
    }
    for h in &handles {
        h.rpc::<pubsub::Behaviour>(pubsub::Request::Subscribe(topic))
            .await
            .expect("subscribe");
    }
    Run {
        handles,
        got,
        epoch,
    }
}

/// Waits until every node but its author has delivered each of `seqs`
/// (or `limit` passes); returns the deliveries seen.
async fn collect(
    run: &mut Run,
    authors: &BTreeMap<u64, usize>,
    limit: Duration,
    into: &mut Vec<Got>,
) -> bool {
    let n = run.handles.len();
    let want = authors.len() * (n - 1);
    let mut have = into
        .iter()
        .filter(|g| authors.get(&g.seq).is_some_and(|a| *a != g.node))
        .count();
    let deadline = tokio::time::Instant::now() + limit;
    while have < want {
        match tokio::time::timeout_at(deadline, run.got.recv()).await {
            Ok(Some(g)) => {
                if authors.get(&g.seq).is_some_and(|a| *a != g.node) {
                    have += 1;
                }
                into.push(g);
            }
            _ => return false,
        }
    }
    true
}

async fn totals(handles: &[NodeHandle]) -> (u64, u64) {
    let mut copies = 0;
    let mut frame_bytes = 0;
    for h in handles {
        if let Ok(pubsub::Response::Stats(s)) =
            h.rpc::<pubsub::Behaviour>(pubsub::Request::Stats).await
        {
            copies += s.trees.gossip_sent;
        }
        if let Ok(st) = h.status().await {
            frame_bytes += st.stats.bytes_out;
        }
    }
    (copies, frame_bytes)
}

pub(crate) fn run(nodes: usize, publications: usize, rate: f64, size: usize, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut rng = Rng::new(seed);
        let topic = Topic::new("bench");
        let mut run = start(nodes, 6, &mut rng, topic).await;
        // Settle: a warm-up publication must reach everyone.
        let mut seen = Vec::new();
        let warm = u64::MAX - 1;
        let author = rng.below(nodes as u64) as usize;
        run.handles[author]
            .rpc::<pubsub::Behaviour>(pubsub::Request::Publish(
                topic,
                payload(warm, size, run.epoch),
            ))
            .await
            .expect("publish");
        let settled = collect(
            &mut run,
            &BTreeMap::from([(warm, author)]),
            Duration::from_secs(60),
            &mut seen,
        )
        .await;
        assert!(settled, "the warm-up publication reached every node");
        seen.clear();

        let (copies0, frames0) = totals(&run.handles).await;
        let wire0 = loopback_tx_bytes();
        let cpu0 = cpu_time();
        let t0 = wall();
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut authors = BTreeMap::new();
        let mut sent_at = BTreeMap::new();
        let mut tick = tokio::time::interval(gap);
        for seq in 0..publications as u64 {
            tick.tick().await;
            let a = rng.below(nodes as u64) as usize;
            authors.insert(seq, a);
            let p = payload(seq, size, run.epoch);
            sent_at.insert(seq, wall());
            let h = run.handles[a].clone();
            tokio::spawn(async move {
                let _ = h
                    .rpc::<pubsub::Behaviour>(pubsub::Request::Publish(topic, p))
                    .await;
            });
        }
        let all = collect(&mut run, &authors, Duration::from_secs(30), &mut seen).await;
        let elapsed = t0.elapsed();
        let cpu = cpu_time() - cpu0;
        let wire = loopback_tx_bytes() - wire0;
        let (copies1, frames1) = totals(&run.handles).await;

        let mut latencies: Vec<Duration> = Vec::new();
        let mut delivered = BTreeSet::new();
        let mut duplicates = 0usize;
        for g in &seen {
            let Some(author) = authors.get(&g.seq) else {
                continue;
            };
            if *author == g.node {
                continue;
            }
            if !delivered.insert((g.node, g.seq)) {
                duplicates += 1;
                continue;
            }
            latencies.push(g.at.duration_since(sent_at[&g.seq]));
        }
        latencies.sort_unstable();
        let pct = |p: usize| {
            latencies
                .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let d = delivered.len().max(1) as f64;
        println!(
            "workload=pubsub nodes={nodes} publications={publications} size={size} rate_per_s={rate} \
             delivery={:.4} all_delivered={all} duplicates_to_app={duplicates} latency_p50_ms={:.2} \
             latency_p99_ms={:.2} copies_per_delivered={:.2} frame_bytes_per_delivered={:.0} \
             loopback_bytes_per_delivered={:.0} cpu_s={:.2} cpu_share={:.2} wall_s={:.1} peak_rss_mib={}",
            delivered.len() as f64 / (publications * (nodes - 1)) as f64,
            pct(50),
            pct(99),
            (copies1 - copies0) as f64 / d,
            (frames1 - frames0) as f64 / d,
            wire as f64 / d,
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            rss().1 >> 20,
        );
        for h in &run.handles {
            let _ = h.shutdown().await;
        }
    });
}
