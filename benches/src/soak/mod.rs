//! Soak and faults across real network namespaces: node processes in their
//! own namespaces, joined in a ring by veth links, with loss and partitions
//! made by nftables rules on those links, and a node killed and restarted.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); [`available`] says
//! whether this machine has them. The phases, in order:
//!
//! 1. **soak** — every node sends sequenced messages to every other (half
//!    the flows cross a relay) for [`Config::soak`]; everything must arrive,
//!    in order, without duplicates; each node's memory must not drift by
//!    more than 5% from a third of the way in to the end, and its open file
//!    descriptors must not grow.
//! 2. **loss 10%** — two links drop 10% of their packets each way: all must
//!    still arrive (later).
//! 3. **loss 30%** — the same at 30%: each message arrives or its sender
//!    hears of its loss ([`plexus::runtime::NodeEvent::Dropped`]); the run
//!    must not hang.
//! 4. **partition** — two links cut for [`Config::partition`], traffic
//!    still flowing, then healed: within 10 s every node must have a route
//!    to every other, closest-key probes from every node must reach the
//!    XOR-closest node, and service probes a node that runs the service.
//! 5. **kill** — one node in five is SIGKILLed and restarted with its key;
//!    closest-key probes from every node must then be correct ≥ 99%.
//!
//! A node process (`plexus-bench soak-node`, [`node::run`]) reads commands
//! on stdin and answers each with one line on stdout: `start RATE SIZE`
//! (every flow sends RATE messages/s of SIZE bytes) → `started`; `stop` →
//! `stopped`; `stats` → `stats key=value…` (per-peer lists in index
//! order: `sent`, `failed`, `recv`, `late`, `skipped`; and `rss_kib`,
//! `fds`, `conns`, `disconnects`, `max_send_ms`, `drops`); `routes` →
//! `routes h0,h1,…` (hops, -1 without a route); `probe COUNT SEED` →
//! `probed seed=SEED i0,i1,…` (the index of the node that answered each
//! key of [`probe_key`], `-` for none within 5 s); `service` → `service I`.

pub mod node;

use plexus::{Identity, NodeId, ServiceId};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Sequenced data.
pub const DATA: ServiceId = ServiceId(40);
/// Closest-key probes and every probe's reply.
pub const PROBE: ServiceId = ServiceId(41);
/// The service some nodes run, found by service routing.
pub const MARK: ServiceId = ServiceId(42);

/// Key `k` of probe round `seed` (splitmix64, so the harness knows it too).
pub fn probe_key(seed: u64, k: u64) -> NodeId {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(k.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    NodeId(z ^ (z >> 31))
}

/// A soak run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `plexus-bench` binary (it runs the nodes as `soak-node`).
    pub exe: PathBuf,
    /// `quic` or `tcp`.
    pub transport: String,
    /// Nodes in the ring (≥ 5, so that killing 20% is one or more).
    pub nodes: usize,
    /// The soak phase.
    pub soak: Duration,
    /// Each loss phase.
    pub loss: Duration,
    /// The partition.
    pub partition: Duration,
    /// Messages per second of each flow (nodes × (nodes − 1) flows).
    pub rate: u64,
    /// Message body bytes.
    pub size: usize,
    /// The phases to run, of `soak`, `loss10`, `loss30`, `partition`,
    /// `kill`, in that order whatever the order here.
    pub phases: Vec<String>,
}

impl Config {
    /// The CI run: a 60 s soak, about 4 minutes in all.
    pub fn ci(exe: PathBuf) -> Config {
        Config {
            exe,
            transport: "quic".into(),
            nodes: 5,
            soak: Duration::from_secs(60),
            loss: Duration::from_secs(20),
            partition: Duration::from_secs(30),
            rate: 100,
            size: 256,
            phases: PHASES.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Every phase, in the order they run.
pub const PHASES: [&str; 5] = ["soak", "loss10", "loss30", "partition", "kill"];

impl Config {
    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

/// Whether this machine can run the soak: root, `ip netns` and `nft`.
pub fn available() -> Result<(), String> {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // `ip netns list` runs for anyone; making namespaces needs root.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2));
    if euid != Some("0") {
        return Err("not root (namespaces and nftables rules need it)".into());
    }
    if !ok("ip", &["netns", "list"]) {
        return Err("`ip netns` does not run here (iproute2 missing?)".into());
    }
    if !ok("nft", &["--version"]) {
        return Err("`nft` is not installed (apt-get install nftables)".into());
    }
    Ok(())
}

/// What a run found: a line per figure, and what failed its target.
#[derive(Debug, Default)]
pub struct Report {
    /// `key=value` lines, one per phase.
    pub lines: Vec<String>,
    /// Targets missed, each saying which and by how much.
    pub failures: Vec<String>,
}

impl Report {
    fn line(&mut self, l: String) {
        println!("{l}");
        self.lines.push(l);
    }
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            println!("FAILED: {w}");
            self.failures.push(w);
        }
    }
}

/// Runs every phase; an `Err` is a harness failure (a namespace that could
/// not be made, a node that did not answer), a missed target is in the
/// report.
pub fn run(cfg: &Config) -> io::Result<Report> {
    available().map_err(io::Error::other)?;
    let n = cfg.nodes.max(5);
    let dir = std::env::temp_dir().join(format!("plexus-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ring::remove_stale();
    let ring = Ring::create(n)?;
    let mut ids = Vec::new();
    for i in 0..n {
        let (id, _) = Identity::load_or_generate(&dir.join(format!("node{i}.key")))
            .map_err(io::Error::other)?;
        ids.push(id.node_id());
    }
    let mut procs: Vec<NodeProc> = (0..n)
        .map(|i| NodeProc::start(cfg, &ring, &dir, &ids, i))
        .collect::<io::Result<_>>()?;
    let mut report = Report::default();
    let result = phases(cfg, &ring, &dir, &ids, &mut procs, &mut report);
    for p in &mut procs {
        p.quit();
    }
    drop(ring);
    // PLEXUS_SOAK_LOGS=1 keeps the nodes' logs of a run that passed too.
    let keep = std::env::var_os("PLEXUS_SOAK_LOGS").is_some();
    if result.is_ok() && report.failures.is_empty() && !keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("the nodes' logs are in {}", dir.display());
    }
    result.map(|()| report)
}

fn phases(
    cfg: &Config,
    ring: &Ring,
    dir: &Path,
    ids: &[NodeId],
    procs: &mut [NodeProc],
    report: &mut Report,
) -> io::Result<()> {
    let n = ids.len();
    let all: Vec<usize> = (0..n).collect();
    let t = wall();
    let conv = converge(procs, ids, &all, Duration::from_secs(60))?;
    report.line(format!(
        "phase=start nodes={n} transport={} converged_s={:.1} ({:.1} s after the processes started)",
        cfg.transport,
        conv.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ));

    if cfg.runs("soak") {
        soak(cfg, procs, report)?;
    }
    for pct in [10u32, 30] {
        if cfg.runs(&format!("loss{pct}")) {
            loss(cfg, ring, procs, report, pct)?;
        }
    }
    if cfg.runs("partition") {
        partition(cfg, ring, ids, procs, report)?;
    }
    if cfg.runs("kill") {
        kill(cfg, ring, dir, ids, procs, report)?;
    }
    Ok(())
}

/// Phase 1: steady traffic; memory and descriptors.
fn soak(cfg: &Config, procs: &mut [NodeProc], report: &mut Report) -> io::Result<()> {
    let before = stats_all(procs)?;
    start(procs, cfg)?;
    let third = cfg.soak / 3;
    pause(third);
    let base = stats_all(procs)?;
    pause(cfg.soak - third);
    let flow = finish(procs, &before)?;
    let end = stats_all(procs)?;
    let mut drift = Vec::new();
    for (i, (b, e)) in base.iter().zip(&end).enumerate() {
        let d = (e.rss_kib as f64 - b.rss_kib as f64) / b.rss_kib.max(1) as f64;
        drift.push(d);
        report.check(d <= 0.05, || {
            format!(
                "soak: node {i}'s memory drifted {:+.1}% ({} → {} KiB)",
                d * 100.0,
                b.rss_kib,
                e.rss_kib
            )
        });
        report.check(e.fds <= b.fds, || {
            format!(
                "soak: node {i}'s file descriptors grew {} → {}",
                b.fds, e.fds
            )
        });
    }
    let max_drift = drift.iter().copied().fold(f64::MIN, f64::max);
    report.line(format!(
        "phase=soak secs={} {} rss_drift_max={:+.1}% rss_kib={} fds={}",
        cfg.soak.as_secs(),
        flow.summary(),
        max_drift * 100.0,
        join(end.iter().map(|s| s.rss_kib)),
        join(end.iter().map(|s| s.fds)),
    ));
    report.check(flow.in_order() && flow.failed == 0, || {
        format!("soak: not everything arrived in order: {}", flow.summary())
    });
    report.check(flow.relayed > 0, || "soak: no flow crossed a relay".into());
    Ok(())
}

/// Phases 2 and 3: `pct`% loss on links 0 and 2 (between nodes 0–1 and
/// 2–3).
fn loss(
    cfg: &Config,
    ring: &Ring,
    procs: &mut [NodeProc],
    report: &mut Report,
    pct: u32,
) -> io::Result<()> {
    {
        for k in [0, 2] {
            ring.loss(k, pct)?;
        }
        let before = stats_all(procs)?;
        start(procs, cfg)?;
        pause(cfg.loss);
        let flow = finish(procs, &before)?;
        ring.clear()?;
        report.line(format!(
            "phase=loss{pct} secs={} {}",
            cfg.loss.as_secs(),
            flow.summary()
        ));
        if pct <= 10 {
            report.check(flow.complete() && flow.failed == 0, || {
                format!(
                    "loss {pct}%: not everything arrived, once: {}",
                    flow.summary()
                )
            });
        } else {
            report.check(flow.complete(), || {
                format!(
                    "loss {pct}%: a message neither arrived nor was reported lost, or arrived twice: {}",
                    flow.summary()
                )
            });
        }
    }
    Ok(())
}

/// Phase 4: cut links 1 (nodes 1–2) and 3 (nodes 3–4), making {2, 3} and
/// the rest, with traffic going on; heal; time until routing agrees.
fn partition(
    cfg: &Config,
    ring: &Ring,
    ids: &[NodeId],
    procs: &mut [NodeProc],
    report: &mut Report,
) -> io::Result<()> {
    let n = ids.len();
    let all: Vec<usize> = (0..n).collect();
    let before = stats_all(procs)?;
    start(procs, cfg)?;
    ring.cut(1)?;
    ring.cut(3)?;
    pause(cfg.partition);
    ring.clear()?;
    // Timed from the heal: `converge` starts at once.
    let agree = converge(procs, ids, &all, Duration::from_secs(60));
    let flow = finish(procs, &before)?;
    let (agree_s, service_nearest) = match &agree {
        Ok(took) => (took.as_secs_f64(), service_check(procs, ids)?),
        Err(_) => (f64::INFINITY, (0, 0)),
    };
    report.line(format!(
        "phase=partition secs={} routes_agree_after_heal_s={agree_s:.1} service_nearest={}/{} {}",
        cfg.partition.as_secs(),
        service_nearest.0,
        service_nearest.1,
        flow.summary()
    ));
    report.check(agree_s <= 10.0, || {
        format!("partition: routing agreed {agree_s:.1} s after the heal (target ≤ 10 s)")
    });
    report.check(flow.dup == 0, || {
        format!("partition: messages arrived twice: {}", flow.summary())
    });
    Ok(())
}

/// Phase 5: kill one node in five, restart it with its key; closest-key
/// lookups after.
fn kill(
    cfg: &Config,
    ring: &Ring,
    dir: &Path,
    ids: &[NodeId],
    procs: &mut [NodeProc],
    report: &mut Report,
) -> io::Result<()> {
    let n = ids.len();
    let all: Vec<usize> = (0..n).collect();
    let killed: Vec<usize> = (0..n).filter(|i| i % 5 == 2).collect();
    for &i in &killed {
        procs[i].kill();
    }
    let live: Vec<usize> = (0..n).filter(|i| !killed.contains(i)).collect();
    let down = converge(procs, ids, &live, Duration::from_secs(60));
    for &i in &killed {
        procs[i] = NodeProc::start(cfg, ring, dir, ids, i)?;
    }
    let back = converge(procs, ids, &all, Duration::from_secs(60));
    let back_s = back.as_ref().map_or(f64::INFINITY, |d| d.as_secs_f64());
    let (right, total) = probe_all(procs, ids, &all, 200, 7)?;
    let pct = 100.0 * right as f64 / total.max(1) as f64;
    report.line(format!(
        "phase=kill killed={} survivors_agree={} restarted_agree_s={back_s:.1} closest_key_correct={right}/{total} ({pct:.2}%)",
        killed.len(),
        down.is_ok(),
    ));
    report.check(back.is_ok(), || {
        "kill: the restarted node's routes did not converge in 60 s".into()
    });
    report.check(pct >= 99.0, || {
        format!("kill: closest-key lookups {pct:.2}% correct (target ≥ 99%)")
    });
    Ok(())
}

/// Waits until every node of `live` has a route to every other one of
/// `live` and closest-key probes from each reach the closest live node.
fn converge(
    procs: &mut [NodeProc],
    ids: &[NodeId],
    live: &[usize],
    limit: Duration,
) -> io::Result<Duration> {
    let t = wall();
    let mut seed = 1000;
    loop {
        let mut ok = true;
        for &i in live {
            let hops = procs[i].ask("routes", "routes ")?;
            let hops: Vec<i64> = parse_list(hops.trim_start_matches("routes "));
            if live.iter().any(|&j| hops.get(j).is_none_or(|&h| h < 0)) {
                ok = false;
                break;
            }
        }
        if ok {
            seed += 1;
            let (right, total) = probe_all(procs, ids, live, 20, seed)?;
            if right == total {
                return Ok(t.elapsed());
            }
        }
        if t.elapsed() > limit {
            return Err(io::Error::other(format!(
                "routes did not converge within {limit:?}"
            )));
        }
        pause(Duration::from_millis(250));
    }
}

/// `count` closest-key probes from every node of `live`: how many reached
/// the XOR-closest live node, of how many.
fn probe_all(
    procs: &mut [NodeProc],
    ids: &[NodeId],
    live: &[usize],
    count: u64,
    seed: u64,
) -> io::Result<(usize, usize)> {
    for &i in live {
        procs[i].send(&format!("probe {count} {seed}"))?;
    }
    let (mut right, mut total) = (0, 0);
    for &i in live {
        let line = procs[i].expect(&format!("probed seed={seed} "))?;
        let answers = line.rsplit(' ').next().unwrap_or("");
        for (k, a) in answers.split(',').enumerate() {
            let key = probe_key(seed, k as u64);
            let best = live
                .iter()
                .copied()
                .min_by_key(|&j| ids[j].distance(key))
                .expect("live nodes");
            total += 1;
            if a.parse::<usize>().ok() == Some(best) {
                right += 1;
            }
        }
    }
    Ok((right, total))
}

/// The nodes that run [`MARK`]: every other one.
fn marked(i: usize) -> bool {
    i % 2 == 1
}

/// A service probe from every node: how many reached a marked node at the
/// fewest hops, of how many; one that reached no marked node is an error.
fn service_check(procs: &mut [NodeProc], _ids: &[NodeId]) -> io::Result<(usize, usize)> {
    let n = procs.len();
    let ring_hops = |a: usize, b: usize| {
        let d = a.abs_diff(b);
        d.min(n - d)
    };
    let mut nearest = 0;
    for (i, p) in procs.iter_mut().enumerate() {
        let line = p.ask("service", "service ")?;
        let by: Option<usize> = line.trim_start_matches("service ").parse().ok();
        let Some(by) = by.filter(|&b| marked(b)) else {
            return Err(io::Error::other(format!(
                "node {i}: a service probe reached no node running it ({line})"
            )));
        };
        let best = (0..n).filter(|&j| marked(j)).map(|j| ring_hops(i, j)).min();
        if Some(ring_hops(i, by)) == best {
            nearest += 1;
        }
    }
    Ok((nearest, n))
}

/// Starts traffic on every node.
fn start(procs: &mut [NodeProc], cfg: &Config) -> io::Result<()> {
    for p in procs.iter_mut() {
        p.ask(&format!("start {} {}", cfg.rate, cfg.size), "started")?;
    }
    Ok(())
}

/// Stops traffic and waits until every message sent since `before` is
/// accounted for (received, or reported dropped to its sender), or until
/// nothing has changed for 15 s (at most 120 s): then what is missing is
/// missing.
fn finish(procs: &mut [NodeProc], before: &[Stats]) -> io::Result<Flow> {
    for p in procs.iter_mut() {
        p.ask("stop", "stopped")?;
    }
    let t = wall();
    let mut last: Option<Flow> = None;
    let mut still = wall();
    loop {
        let now = stats_all(procs)?;
        let flow = Flow::between(before, &now);
        if flow.lost == 0 {
            return Ok(flow);
        }
        if last
            .as_ref()
            .is_none_or(|l| l.accounted() != flow.accounted())
        {
            still = wall();
        }
        if still.elapsed() > Duration::from_secs(15) || t.elapsed() > Duration::from_secs(120) {
            return Ok(flow);
        }
        last = Some(flow);
        pause(Duration::from_millis(250));
    }
}

/// One node's counters.
#[derive(Debug, Clone, Default)]
struct Stats {
    sent: Vec<u64>,
    failed: Vec<u64>,
    recv: Vec<u64>,
    late: Vec<u64>,
    dup: Vec<u64>,
    skipped: Vec<u64>,
    rss_kib: u64,
    fds: u64,
    disconnects: u64,
    max_send_ms: u64,
    drops: String,
}

impl Stats {
    fn parse(line: &str) -> Stats {
        let kv: HashMap<&str, &str> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.split_once('='))
            .collect();
        let list = |k: &str| parse_list(kv.get(k).copied().unwrap_or(""));
        let num = |k: &str| kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Stats {
            sent: list("sent"),
            failed: list("failed"),
            recv: list("recv"),
            late: list("late"),
            dup: list("dup"),
            skipped: list("skipped"),
            rss_kib: num("rss_kib"),
            fds: num("fds"),
            disconnects: num("disconnects"),
            max_send_ms: num("max_send_ms"),
            drops: kv.get("drops").unwrap_or(&"-").to_string(),
        }
    }
}

/// Every flow's messages over a phase.
#[derive(Debug, Clone, Default, PartialEq)]
struct Flow {
    sent: u64,
    received: u64,
    /// Reported dropped to their sender.
    failed: u64,
    /// Neither received nor reported.
    lost: u64,
    /// Received after a later one (reordered).
    late: u64,
    /// Received twice.
    dup: u64,
    /// Sequence numbers a receiver saw jumped over (messages it will not
    /// get: reported dropped, or unaccounted).
    skipped: u64,
    /// Received by flows that cross a relay.
    relayed: u64,
    disconnects: u64,
    max_send_ms: u64,
    drops: Vec<String>,
}

impl Flow {
    fn between(before: &[Stats], now: &[Stats]) -> Flow {
        let n = now.len();
        let d = |a: &[u64], b: &[u64], j: usize| {
            a.get(j)
                .copied()
                .unwrap_or(0)
                .saturating_sub(b.get(j).copied().unwrap_or(0))
        };
        let mut f = Flow::default();
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i) {
                // Node i → node j.
                let sent = d(&now[i].sent, &before[i].sent, j);
                let failed = d(&now[i].failed, &before[i].failed, j);
                let recv = d(&now[j].recv, &before[j].recv, i);
                f.sent += sent;
                f.failed += failed;
                f.received += recv;
                f.late += d(&now[j].late, &before[j].late, i);
                f.dup += d(&now[j].dup, &before[j].dup, i);
                f.skipped += d(&now[j].skipped, &before[j].skipped, i);
                f.lost += sent.saturating_sub(recv + failed);
                let dist = i.abs_diff(j).min(n - i.abs_diff(j));
                if dist > 1 {
                    f.relayed += recv;
                }
            }
            f.disconnects += now[i].disconnects.saturating_sub(before[i].disconnects);
            f.max_send_ms = f.max_send_ms.max(now[i].max_send_ms);
            if now[i].drops != "-" {
                f.drops.push(format!("n{i}:{}", now[i].drops));
            }
        }
        f
    }
    fn accounted(&self) -> u64 {
        self.received + self.failed
    }
    /// Every message received or reported, none twice.
    fn complete(&self) -> bool {
        self.lost == 0 && self.dup == 0
    }
    /// … and in order.
    fn in_order(&self) -> bool {
        self.complete() && self.late == 0
    }
    fn summary(&self) -> String {
        format!(
            "sent={} received={} ({:.3}%) reported_dropped={} unaccounted={} reordered={} duplicates={} gaps={} relayed={} disconnects={} max_send_ms={} drops=[{}]",
            self.sent,
            self.received,
            100.0 * self.received as f64 / self.sent.max(1) as f64,
            self.failed,
            self.lost,
            self.late,
            self.dup,
            self.skipped,
            self.relayed,
            self.disconnects,
            self.max_send_ms,
            self.drops.join(" ")
        )
    }
}

fn stats_all(procs: &mut [NodeProc]) -> io::Result<Vec<Stats>> {
    procs
        .iter_mut()
        .map(|p| p.ask("stats", "stats ").map(|l| Stats::parse(&l)))
        .collect()
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').filter_map(|v| v.parse().ok()).collect()
}

fn join(v: impl Iterator<Item = impl ToString>) -> String {
    v.map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// Lets the run go on for `d`: a phase's own length, or the interval at
/// which the harness polls the nodes' counters and tables (each poll has
/// a deadline that only fails the run).
#[allow(clippy::disallowed_methods)] // the harness, not the core
fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[allow(clippy::disallowed_methods)] // the harness measures wall time
fn wall() -> std::time::Instant {
    std::time::Instant::now()
}

/// `ip`/`nft` with `args`; its stderr in the error if it fails.
fn sh(cmd: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(cmd).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `n` namespaces in a ring: link `k` joins node `k` (10.77.k.1, device
/// `lKa`) and node `k+1 mod n` (10.77.k.2, device `lKb`). Deleted on drop.
struct Ring {
    ns: Vec<String>,
}

impl Ring {
    /// Deletes the namespaces of earlier runs whose harness is gone (a
    /// run killed before it could clean up).
    fn remove_stale() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(rest) = name.strip_prefix("plexus-soak-") else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            if !Path::new("/proc").join(pid).exists() {
                let _ = sh("ip", &["netns", "del", name]);
            }
        }
    }

    fn create(n: usize) -> io::Result<Ring> {
        let pid = std::process::id();
        let ring = Ring {
            ns: (0..n).map(|i| format!("plexus-soak-{pid}-{i}")).collect(),
        };
        for ns in &ring.ns {
            sh("ip", &["netns", "add", ns])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            // One table and input chain per namespace, for loss and cuts:
            // packets are dropped as they arrive, so the sender's kernel
            // does not know (a drop on output fails its sendmsg instead).
            sh(
                "ip",
                &["netns", "exec", ns, "nft", "add", "table", "inet", "soak"],
            )?;
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "soak",
                    "in",
                    "{ type filter hook input priority 0; }",
                ],
            )?;
        }
        for k in 0..n {
            let (a, b) = (&ring.ns[k], &ring.ns[(k + 1) % n]);
            let (da, db) = (format!("l{k}a"), format!("l{k}b"));
            sh(
                "ip",
                &[
                    "-n", a, "link", "add", &da, "type", "veth", "peer", "name", &db, "netns", b,
                ],
            )?;
            sh(
                "ip",
                &[
                    "-n",
                    a,
                    "addr",
                    "add",
                    &format!("10.77.{k}.1/24"),
                    "dev",
                    &da,
                ],
            )?;
            sh(
                "ip",
                &[
                    "-n",
                    b,
                    "addr",
                    "add",
                    &format!("10.77.{k}.2/24"),
                    "dev",
                    &db,
                ],
            )?;
            sh("ip", &["-n", a, "link", "set", &da, "up"])?;
            sh("ip", &["-n", b, "link", "set", &db, "up"])?;
        }
        Ok(ring)
    }

    /// Node `i`'s address on link `k` (it must be one of the link's ends).
    fn addr(&self, k: usize, i: usize) -> String {
        if i == k {
            format!("10.77.{k}.1")
        } else {
            format!("10.77.{k}.2")
        }
    }

    /// Adds `rule` on link `k`, both ends (each for what it receives).
    fn rule(&self, k: usize, rule: &str) -> io::Result<()> {
        let n = self.ns.len();
        for (ns, dev) in [
            (&self.ns[k], format!("l{k}a")),
            (&self.ns[(k + 1) % n], format!("l{k}b")),
        ] {
            let r = format!("iifname \"{dev}\" {rule}");
            let mut args = vec![
                "netns", "exec", ns, "nft", "add", "rule", "inet", "soak", "in",
            ];
            args.extend(r.split(' '));
            sh("ip", &args)?;
        }
        Ok(())
    }

    /// Link `k` drops `pct`% of packets each way.
    fn loss(&self, k: usize, pct: u32) -> io::Result<()> {
        self.rule(k, &format!("numgen random mod 100 < {pct} drop"))
    }

    /// Link `k` drops everything.
    fn cut(&self, k: usize) -> io::Result<()> {
        self.rule(k, "drop")
    }

    /// Every link whole again.
    fn clear(&self) -> io::Result<()> {
        for ns in &self.ns {
            sh(
                "ip",
                &[
                    "netns", "exec", ns, "nft", "flush", "chain", "inet", "soak", "in",
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for ns in &self.ns {
            // Deleting a namespace deletes its veth ends too.
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

/// A node process in its namespace.
struct NodeProc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    index: usize,
}

impl Drop for NodeProc {
    /// A node left behind by an error path is killed, not orphaned.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// How long the harness waits for a node's answer: generous, it only
/// fails the run.
const ANSWER: Duration = Duration::from_secs(30);

impl NodeProc {
    fn start(
        cfg: &Config,
        ring: &Ring,
        dir: &Path,
        ids: &[NodeId],
        i: usize,
    ) -> io::Result<NodeProc> {
        let n = ids.len();
        let port = 7000;
        let scheme = &cfg.transport;
        let (next, prev) = ((i + 1) % n, (i + n - 1) % n);
        // Link i goes to the next node, link i-1 to the previous one.
        let keep = [
            format!("{}@{scheme}://{}:{port}", ids[next], ring.addr(i, next)),
            format!("{}@{scheme}://{}:{port}", ids[prev], ring.addr(prev, prev)),
        ];
        let key = dir.join(format!("node{i}.key"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("node{i}.log")))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ring.ns[i]])
            .arg(&cfg.exe)
            .args(["soak-node", "--index", &i.to_string(), "--key-file"])
            .arg(&key)
            .args(["--listen", &format!("{scheme}://0.0.0.0:{port}")])
            .args(["--peers", &join(ids.iter())])
            .args(["--keep", &keep[0], "--keep", &keep[1]]);
        if marked(i) {
            cmd.arg("--mark");
        }
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let out = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = NodeProc {
            child,
            stdin,
            lines,
            index: i,
        };
        p.expect("ready ")?;
        Ok(p)
    }

    fn send(&mut self, cmd: &str) -> io::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()
    }

    /// The next line starting with `prefix` (others are skipped).
    fn expect(&mut self, prefix: &str) -> io::Result<String> {
        let t = wall();
        loop {
            let left = ANSWER.saturating_sub(t.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    return Err(io::Error::other(format!(
                        "node {} gave no line starting {prefix:?} within {ANSWER:?}",
                        self.index
                    )))
                }
            }
        }
    }

    fn ask(&mut self, cmd: &str, prefix: &str) -> io::Result<String> {
        self.send(cmd)?;
        self.expect(prefix)
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn quit(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.send("quit");
        let t = wall();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            pause(Duration::from_millis(50));
        }
        self.kill();
    }
}
