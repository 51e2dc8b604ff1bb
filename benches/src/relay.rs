//! Flow control across a relay, over real sockets on 127.0.0.1: A → B → C
//! flat out against A → C direct in the same run, then A → B → C and
//! D → B → C at once (fair share), with every node's drops and
//! disconnections counted.

use crate::workload::{plexus_node, wait, Blast, BlastEvent, BlobRef, Kind, BLAST};
use plexus::router::StaticRouter;
use plexus::runtime::{NodeEvent, NodeEvents, NodeHandle};
use plexus::{Identity, NodeId, RouteRule};
use std::io;
use std::sync::Arc;
use std::time::Duration;

struct N {
    h: NodeHandle,
    ev: NodeEvents,
    router: Arc<StaticRouter>,
}

async fn node(kind: Kind) -> io::Result<N> {
    let id = Identity::generate().map_err(io::Error::other)?;
    let router = Arc::new(StaticRouter::new(id.node_id()));
    let (h, ev) = plexus_node(kind, &id, router.clone()).await?;
    Ok(N { h, ev, router })
}

async fn link(a: &mut N, b: &N) -> io::Result<()> {
    let bid = b.h.node_id();
    a.h.connect(bid, b.h.listen_addrs()[0])
        .await
        .map_err(io::Error::other)?;
    wait(&mut a.ev, |ev| {
        matches!(ev, NodeEvent::Connected { node, .. } if node == bid).then_some(())
    })
    .await
}

/// Sends `n` messages of `size` bytes to `to` flat out; the time the
/// sending took (flow control makes it the path's pace).
fn sender(
    h: NodeHandle,
    to: NodeId,
    n: usize,
    size: usize,
) -> tokio::task::JoinHandle<io::Result<Duration>> {
    tokio::spawn(async move {
        let body = vec![7u8; size];
        let start = crate::wall();
        for seq in 0..n as u64 {
            h.send(
                BLAST,
                RouteRule::Node(to),
                &BlobRef {
                    seq,
                    echo: false,
                    body: &body,
                },
            )
            .await
            .map_err(io::Error::other)?;
        }
        Ok(start.elapsed())
    })
}

async fn done(c: &mut N) -> io::Result<u64> {
    wait(&mut c.ev, |ev| match ev {
        NodeEvent::Behaviour(e) => match e.downcast_ref::<BlastEvent>() {
            Some(BlastEvent::Done { count, .. }) => Some(*count),
            _ => None,
        },
        _ => None,
    })
    .await
}

/// C receives `n` from the senders; returns the time until it has them all
/// and each sender's own sending time.
async fn run(
    c: &mut N,
    senders: &[(&NodeHandle, usize)],
    size: usize,
) -> io::Result<(Duration, Vec<Duration>)> {
    let total: usize = senders.iter().map(|(_, n)| n).sum();
    c.h.rpc::<Blast>(total as u64)
        .await
        .map_err(io::Error::other)?;
    let start = crate::wall();
    let cid = c.h.node_id();
    let tasks: Vec<_> = senders
        .iter()
        .map(|(h, n)| sender((*h).clone(), cid, *n, size))
        .collect();
    let got = done(c).await?;
    let elapsed = start.elapsed();
    if got != total as u64 {
        return Err(io::Error::other(format!("{got} of {total} arrived")));
    }
    let mut each = Vec::new();
    for t in tasks {
        each.push(t.await.map_err(io::Error::other)??);
    }
    Ok((elapsed, each))
}

fn median(v: &mut [f64]) -> f64 {
    crate::spread(v).0
}

pub(crate) async fn relay(kind: Kind, n: usize, size: usize, runs: usize) -> io::Result<()> {
    let (mut a, mut b, mut c, mut d) = (
        node(kind).await?,
        node(kind).await?,
        node(kind).await?,
        node(kind).await?,
    );
    link(&mut a, &b).await?;
    link(&mut d, &b).await?;
    link(&mut b, &c).await?;
    link(&mut a, &c).await?;
    let cid = c.h.node_id();
    b.router.set_route(cid, cid, 1);
    d.router.set_route(cid, b.h.node_id(), 2);
    let (mut relayed, mut direct, mut fair) = (Vec::new(), Vec::new(), Vec::new());
    let (mut both, mut mbps) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        a.router.set_route(cid, b.h.node_id(), 2);
        let (t, _) = run(&mut c, &[(&a.h, n)], size).await?;
        relayed.push(n as f64 / t.as_secs_f64());
        a.router.set_route(cid, cid, 1);
        let (t, _) = run(&mut c, &[(&a.h, n)], size).await?;
        direct.push(n as f64 / t.as_secs_f64());
        a.router.set_route(cid, b.h.node_id(), 2);
        let (t, each) = run(&mut c, &[(&a.h, n), (&d.h, n)], size).await?;
        let (x, y) = (each[0].as_secs_f64(), each[1].as_secs_f64());
        fair.push(x.max(y) / x.min(y));
        both.push(2.0 * n as f64 / t.as_secs_f64());
        mbps.push(2.0 * (n * size) as f64 * 8.0 / 1e6 / t.as_secs_f64());
    }
    let ratios: Vec<f64> = relayed.iter().zip(&direct).map(|(r, d)| r / d).collect();
    let mut drops = 0;
    let mut disconnects = 0;
    for x in [&mut a, &mut b, &mut c, &mut d] {
        let st = x.h.status().await.map_err(io::Error::other)?;
        drops += st.stats.dropped + st.app_events_dropped;
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::ZERO, x.ev.next()).await {
            if matches!(ev, NodeEvent::Disconnected { .. }) {
                disconnects += 1;
            }
        }
    }
    let (rmed, rmin, rmax) = crate::spread(&mut ratios.clone());
    println!(
        "workload=relay transport={kind:?} n={n} size={size} runs={} relayed_msgs_per_s_median={:.0} \
         direct_msgs_per_s_median={:.0} relayed/direct_median={:.2} min={rmin:.2} max={rmax:.2} \
         two_flows_msgs_per_s_median={:.0} ({:.0} Mbit/s) slower/faster_flow_time_median={:.2} \
         dropped_anywhere={drops} disconnections={disconnects} target: ratio>=0.8 fairness<=2",
        ratios.len(),
        median(&mut relayed),
        median(&mut direct),
        rmed,
        median(&mut both),
        median(&mut mbps),
        median(&mut fair),
    );
    for x in [a, b, c, d] {
        x.h.shutdown().await.map_err(io::Error::other)?;
    }
    Ok(())
}

/// Process CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// One node receiving from 1, 2, 4 … peers at once: the receiver's
/// throughput, how busy its driver was (its share of wall time), and the
/// cores the whole process used, per peer count (medians of runs).
pub(crate) async fn fanin(
    kind: Kind,
    peers: &[usize],
    n: usize,
    size: usize,
    runs: usize,
) -> io::Result<()> {
    let most = peers.iter().copied().max().unwrap_or(1).max(1);
    let mut r = node(kind).await?;
    let mut senders = Vec::new();
    for _ in 0..most {
        let mut s = node(kind).await?;
        link(&mut s, &r).await?;
        let rid = r.h.node_id();
        s.router.set_route(rid, rid, 1);
        senders.push(s);
    }
    let mut line = format!(
        "workload=fanin transport={} n_per_peer={n} size={size} runs={}",
        format!("{kind:?}").to_lowercase(),
        runs.max(1)
    );
    for &k in peers {
        let k = k.clamp(1, most);
        let (mut rate, mut busy, mut cores) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            let hs: Vec<(&NodeHandle, usize)> = senders[..k].iter().map(|s| (&s.h, n)).collect();
            let b0 = r.h.status().await.map_err(io::Error::other)?.driver_busy;
            let c0 = cpu_time();
            let (t, _) = run(&mut r, &hs, size).await?;
            let b1 = r.h.status().await.map_err(io::Error::other)?.driver_busy;
            let c1 = cpu_time();
            let secs = t.as_secs_f64();
            rate.push((k * n) as f64 / secs);
            busy.push((b1 - b0).as_secs_f64() / secs);
            cores.push((c1 - c0).as_secs_f64() / secs);
        }
        let (rate, rmin, rmax) = crate::spread(&mut rate);
        let (busy, _, _) = crate::spread(&mut busy);
        let (cores, _, _) = crate::spread(&mut cores);
        println!(
            "peers={k} received_msgs_per_s_median={rate:.0} min={rmin:.0} max={rmax:.0} \
             receiver_driver_busy={busy:.2} process_cores_used={cores:.2}"
        );
        line += &format!(" peers{k}_msgs_per_s={rate:.0} peers{k}_driver_busy={busy:.2}");
    }
    println!("{line}");
    let mut drops = 0;
    for x in std::iter::once(&r).chain(&senders) {
        let st = x.h.status().await.map_err(io::Error::other)?;
        drops += st.stats.dropped + st.app_events_dropped;
    }
    println!("dropped_anywhere={drops}");
    for x in std::iter::once(r).chain(senders) {
        x.h.shutdown().await.map_err(io::Error::other)?;
    }
    Ok(())
}
