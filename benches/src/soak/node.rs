//! The node the soak harness starts in each namespace: ping, the
//! distance-vector router, persistent links to its ring neighbours, and
//! three behaviours of its own — sequenced data, closest-key probes and a
//! service some nodes run — driven by commands on stdin and answering on
//! stdout, one line each (see [`super`] for the protocol).

use super::{probe_key, DATA, MARK, PROBE};
use plexus::ping;
use plexus::router::dv;
use plexus::runtime::{Node, NodeEvent, NodeHandle, RuntimeConfig, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::transports::tcp::TcpTransport;
use plexus::{
    Address, BehaviorAgent, DropReason, Identity, Incoming, Network, NetworkBehavior, NoHandler,
    NodeId, RouteRule, ServiceId, TransportConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// What `plexus-bench soak-node` is started with.
#[derive(Debug, Clone)]
pub struct NodeArgs {
    /// This node's place in `peers`.
    pub index: usize,
    /// Its key file (created by the harness).
    pub key_file: PathBuf,
    /// Where it listens.
    pub listen: Address,
    /// Every node of the soak, in index order (this one included).
    pub peers: Vec<NodeId>,
    /// Links to keep: its ring neighbours.
    pub keep: Vec<(NodeId, Address)>,
    /// Runs the [`MARK`] service.
    pub mark: bool,
}

/// A sequenced message. `epoch` changes when the sender restarts, so its
/// sequence starting over is not taken for reordering.
#[derive(Serialize, Deserialize)]
struct Data {
    epoch: u64,
    seq: u64,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// What one node received from one source.
#[derive(Default, Clone, Copy)]
struct Received {
    epoch: u64,
    next: u64,
    count: u64,
    /// Arrived after a later one: reordered (filled a gap).
    late: u64,
    /// Arrived a second time.
    dup: u64,
    /// Sequence numbers jumped over and not (yet) filled (lost, unless
    /// reported to the sender).
    skipped: u64,
}

type Table = Arc<Mutex<Vec<Received>>>;

/// Past this many gaps per source, a late message is counted late
/// without checking whether it is a duplicate.
const MAX_GAPS: usize = 1 << 20;

/// Counts sequenced messages per source; a sequence number behind the next
/// expected one is counted late, a jump ahead counts the ones skipped.
struct Sink {
    index: HashMap<NodeId, usize>,
    table: Table,
    /// Per source: the sequence numbers jumped over, not yet arrived.
    gaps: Vec<std::collections::HashSet<u64>>,
}

impl NetworkBehavior for Sink {
    type Msg = Data;
    type Handler = NoHandler<Data>;
    type Event = ();
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        DATA
    }

    fn on_message(&mut self, _: &mut BehaviorAgent<'_, Self>, m: Incoming<Data>) {
        let Some(&i) = self.index.get(&m.source) else {
            return;
        };
        let mut t = self.table.lock().expect("not poisoned");
        let r = &mut t[i];
        let gaps = &mut self.gaps[i];
        if r.epoch != m.msg.epoch {
            r.epoch = m.msg.epoch;
            r.next = 0;
            gaps.clear();
        }
        let seq = m.msg.seq;
        if seq < r.next {
            if gaps.remove(&seq) || gaps.len() >= MAX_GAPS {
                r.late += 1;
                r.skipped = r.skipped.saturating_sub(1);
                r.count += 1;
            } else {
                r.dup += 1;
            }
            return;
        }
        for missing in r.next..seq {
            if gaps.len() < MAX_GAPS {
                gaps.insert(missing);
            }
        }
        r.skipped += seq - r.next;
        r.next = seq + 1;
        r.count += 1;
    }
}

#[derive(Serialize, Deserialize)]
enum Probe {
    Ask(u64),
    Reply(u64),
}

/// A probe's answer: `nonce`, answered by `by`.
#[derive(Debug, Clone, Copy)]
struct Answered {
    nonce: u64,
    by: NodeId,
}

/// Answers closest-key probes with a reply routed back to their source.
struct Prober;

impl NetworkBehavior for Prober {
    type Msg = Probe;
    type Handler = NoHandler<Probe>;
    type Event = Answered;
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        PROBE
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, m: Incoming<Probe>) {
        match m.msg {
            Probe::Ask(nonce) => agent.send(RouteRule::Node(m.source), Probe::Reply(nonce)),
            Probe::Reply(nonce) => agent.emit(Answered {
                nonce,
                by: m.source,
            }),
        }
    }
}

/// The service some nodes run: a probe routed by service is handed to the
/// application, which answers it through [`PROBE`].
struct Mark;

impl NetworkBehavior for Mark {
    type Msg = u64;
    type Handler = NoHandler<u64>;
    type Event = Answered;
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        MARK
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, m: Incoming<u64>) {
        agent.emit(Answered {
            nonce: m.msg,
            by: m.source,
        });
    }
}

/// What the senders share with the command loop.
struct Traffic {
    running: AtomicBool,
    rate: AtomicU64,
    size: AtomicU64,
    /// Per destination: sent (returned from `send`).
    sent: Vec<AtomicU64>,
    /// Longest one `send` call waited, since the last `start`, in µs.
    max_send_us: AtomicU64,
    wake: tokio::sync::Notify,
}

/// Runs the node until stdin closes or `quit`.
pub async fn run(args: NodeArgs) -> io::Result<()> {
    let (identity, _) = Identity::load_or_generate(&args.key_file).map_err(io::Error::other)?;
    let me = identity.node_id();
    if args.peers.get(args.index) != Some(&me) {
        return Err(io::Error::other(format!(
            "the key file is node {me}, not peer {} of the list",
            args.index
        )));
    }
    let n = args.peers.len();
    let index: HashMap<NodeId, usize> = args
        .peers
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i))
        .collect();
    let config = TransportConfig::default();
    let transport: Arc<dyn Transport> = match args.listen {
        Address::Quic(sa) => Arc::new(QuicTransport::bind(sa, &identity, config)?),
        Address::Tcp(sa) => Arc::new(TcpTransport::bind(sa, &identity, config).await?),
        other => return Err(io::Error::other(format!("cannot listen on {other}"))),
    };
    let table: Table = Arc::new(Mutex::new(vec![Received::default(); n]));
    let router = Arc::new(dv::DvRouter::new(me));
    let mut builder = Network::builder(me, router.clone())
        .behavior(ping::Behaviour::new(ping::Config::default()))
        .behavior(dv::Behaviour::new(router, dv::Config::default()))
        .behavior(Sink {
            index: index.clone(),
            table: table.clone(),
            gaps: vec![Default::default(); n],
        })
        .behavior(Prober);
    if args.mark {
        builder = builder.behavior(Mark);
    }
    for &(node, addr) in &args.keep {
        builder = builder.persistent_peer(node, addr);
    }
    let network = builder.build().map_err(io::Error::other)?;
    let (node, mut events) = Node::spawn(network, vec![transport], RuntimeConfig::default());

    let traffic = Arc::new(Traffic {
        running: AtomicBool::new(false),
        rate: AtomicU64::new(0),
        size: AtomicU64::new(0),
        sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
        max_send_us: AtomicU64::new(0),
        wake: tokio::sync::Notify::new(),
    });
    let epoch = { getrandom::u64().map_err(|e| io::Error::other(e.to_string()))? };
    for (j, &dest) in args.peers.iter().enumerate() {
        if j != args.index {
            tokio::spawn(sender(node.clone(), traffic.clone(), j, dest, epoch));
        }
    }

    let mut failed = vec![0u64; n];
    let mut drops: HashMap<String, u64> = HashMap::new();
    let mut disconnects = 0u64;
    let mut answers: HashMap<u64, NodeId> = HashMap::new();
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut next_nonce = 1u64;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    println!("ready {me}");
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) | Err(_) => break,
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["start", rate, size] => {
                        traffic.rate.store(rate.parse().unwrap_or(0), Ordering::Relaxed);
                        traffic.size.store(size.parse().unwrap_or(0), Ordering::Relaxed);
                        traffic.max_send_us.store(0, Ordering::Relaxed);
                        traffic.running.store(true, Ordering::Release);
                        traffic.wake.notify_waiters();
                        println!("started");
                    }
                    ["stop"] => {
                        traffic.running.store(false, Ordering::Release);
                        println!("stopped");
                    }
                    ["stats"] => {
                        let t: Vec<Received> = table.lock().expect("not poisoned").clone();
                        let sent: Vec<u64> = traffic.sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
                        let col = |f: &dyn Fn(&Received) -> u64| join(t.iter().map(f));
                        let (rss, fds) = process_usage();
                        let conns = node.status().await.map(|s| s.connections.len()).unwrap_or(0);
                        let mut reasons: Vec<String> = drops.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        reasons.sort();
                        println!(
                            "stats sent={} failed={} recv={} late={} dup={} skipped={} rss_kib={} fds={} conns={} disconnects={} max_send_ms={} drops={}",
                            join(sent.iter().copied()),
                            join(failed.iter().copied()),
                            col(&|r| r.count),
                            col(&|r| r.late),
                            col(&|r| r.dup),
                            col(&|r| r.skipped),
                            rss / 1024,
                            fds,
                            conns,
                            disconnects,
                            traffic.max_send_us.load(Ordering::Relaxed) / 1000,
                            if reasons.is_empty() { "-".to_string() } else { reasons.join(",") },
                        );
                    }
                    ["routes"] => {
                        let mut hops = vec![-1i64; n];
                        hops[args.index] = 0;
                        if let Ok(s) = node.status().await {
                            for r in s.routes {
                                if let Some(&i) = index.get(&r.dest) {
                                    hops[i] = i64::from(r.hops);
                                }
                            }
                        }
                        println!("routes {}", join(hops.iter().copied()));
                    }
                    ["probe", count, seed] => {
                        let count: u64 = count.parse().unwrap_or(0);
                        let seed: u64 = seed.parse().unwrap_or(0);
                        let mut nonces = Vec::new();
                        for k in 0..count {
                            let nonce = next_nonce;
                            next_nonce += 1;
                            let key = probe_key(seed, k);
                            if node.send(PROBE, RouteRule::Closest(key), &Probe::Ask(nonce)).await.is_err() {
                                break;
                            }
                            nonces.push(nonce);
                        }
                        waiting.push(Waiting { tag: format!("probed seed={seed}"), nonces, until: tokio::time::Instant::now() + Duration::from_secs(5) });
                    }
                    ["service"] => {
                        let nonce = next_nonce;
                        next_nonce += 1;
                        let _ = node.send(MARK, RouteRule::Service, &nonce).await;
                        waiting.push(Waiting { tag: "service".into(), nonces: vec![nonce], until: tokio::time::Instant::now() + Duration::from_secs(5) });
                    }
                    ["quit"] => break,
                    _ => println!("error: unknown command {line:?}"),
                }
            }
            ev = events.next() => match ev {
                Some(NodeEvent::Behaviour(e)) => {
                    if let Some(p) = e.downcast_ref::<ping::Event>() {
                        match p.result {
                            Ok(rtt) if rtt > Duration::from_millis(500) => {
                                log::warn!("ping {}: slow round trip {rtt:?}", p.peer);
                            }
                            Ok(_) => {}
                            Err(f) => log::warn!("ping {}: failed: {f:?}", p.peer),
                        }
                    }
                    if let Some(a) = e.downcast_ref::<Answered>() {
                        // A probe answered, or (from Mark) one to answer.
                        if e.service == MARK {
                            let _ = node.send(PROBE, RouteRule::Node(a.by), &Probe::Reply(a.nonce)).await;
                        } else {
                            answers.insert(a.nonce, a.by);
                        }
                    }
                }
                Some(NodeEvent::Dropped(r)) => {
                    *drops.entry(reason_name(&r.reason)).or_default() += u64::from(r.count);
                    if r.service == DATA && r.source == me {
                        if let RouteRule::Node(dest) = r.rule {
                            if let Some(&i) = index.get(&dest) {
                                failed[i] += u64::from(r.count);
                            }
                        }
                    }
                }
                Some(NodeEvent::Disconnected { .. }) => disconnects += 1,
                Some(NodeEvent::Failed(why)) => return Err(io::Error::other(why)),
                Some(_) => {}
                None => break,
            },
            _ = tick.tick() => {}
        }
        // Report the probes whose answers are all in, or whose time is up.
        let now = tokio::time::Instant::now();
        waiting.retain(|w| {
            let done = w.nonces.iter().all(|k| answers.contains_key(k));
            if !done && now < w.until {
                return true;
            }
            let by: Vec<String> = w
                .nonces
                .iter()
                .map(|k| match answers.remove(k).and_then(|b| index.get(&b)) {
                    Some(i) => i.to_string(),
                    None => "-".into(),
                })
                .collect();
            println!(
                "{} {}",
                w.tag,
                if by.is_empty() {
                    "-".into()
                } else {
                    by.join(",")
                }
            );
            false
        });
    }
    traffic.running.store(false, Ordering::Release);
    node.shutdown().await.map_err(io::Error::other)?;
    Ok(())
}

/// Probes sent by one command, waiting for their answers.
struct Waiting {
    tag: String,
    nonces: Vec<u64>,
    until: tokio::time::Instant,
}

/// Sends to `dest` at the rate `start` set, in 10 ms batches, while running.
async fn sender(node: NodeHandle, traffic: Arc<Traffic>, j: usize, dest: NodeId, epoch: u64) {
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0f64;
    loop {
        if !traffic.running.load(Ordering::Acquire) {
            let woken = traffic.wake.notified();
            if !traffic.running.load(Ordering::Acquire) {
                woken.await;
            }
            owed = 0.0;
            continue;
        }
        tick.tick().await;
        owed += traffic.rate.load(Ordering::Relaxed) as f64 / 100.0;
        let size = traffic.size.load(Ordering::Relaxed) as usize;
        while owed >= 1.0 && traffic.running.load(Ordering::Acquire) {
            owed -= 1.0;
            let msg = Data {
                epoch,
                seq,
                body: vec![(seq & 0xff) as u8; size],
            };
            #[allow(clippy::disallowed_methods)] // wall time: how long a send waited
            let start = std::time::Instant::now();
            if node.send(DATA, RouteRule::Node(dest), &msg).await.is_err() {
                return;
            }
            let waited = start.elapsed().as_micros() as u64;
            traffic.max_send_us.fetch_max(waited, Ordering::Relaxed);
            traffic.sent[j].fetch_add(1, Ordering::Relaxed);
            seq += 1;
        }
    }
}

fn join(v: impl Iterator<Item = impl ToString>) -> String {
    v.map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// A drop reason without its connection or node ids, for counting.
fn reason_name(r: &DropReason) -> String {
    let full = format!("{r:?}");
    full.split(['(', ' ', '{'])
        .next()
        .unwrap_or("?")
        .to_string()
}

/// This process's resident memory (bytes) and open file descriptors.
pub(crate) fn process_usage() -> (u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds)
}
