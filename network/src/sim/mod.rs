//! A deterministic simulator: many cores in one process over simulated links.
//!
//! [`Sim`] owns a set of [`Network`] cores and drives them exactly as a real
//! driver would (see [`crate::network`] for the drive loop), but over
//! simulated connections with a virtual clock. It jumps from one due item —
//! a frame arriving, a handshake step, a node's tick, a scheduled fault — to
//! the next, so a minute of virtual time costs only the work done in it.
//!
//! # Faults
//! Each direction of each link has a [`LinkConfig`]: base latency, uniform
//! jitter, loss, duplication and reordering probabilities. Nodes can be put
//! into partitions (frames and handshakes between groups are dropped) and
//! healed, killed (a crash: no goodbye to peers, who must notice on their
//! own) and restarted with fresh state, at once or at a scheduled virtual
//! time ([`Sim::schedule`]).
//!
//! Without `reorder`, each direction of a connection is FIFO even with
//! jitter (a frame never overtakes an earlier one), as on the stream
//! transports plexus runs on; `reorder` lets that fraction of frames take an
//! extra delay and overtake.
//!
//! # Determinism
//! All randomness comes from the scenario's seed: link faults from the
//! simulator's own [`Rng`], each node's from a seed derived from the
//! scenario seed, the node id and its incarnation. Every map iterated here
//! and in the core is ordered. The same seed and scenario therefore give the
//! same trace, byte for byte: [`SimReport::trace_hash`] hashes every frame,
//! handshake, close and drop with its virtual time, and can be compared
//! across runs.
//!
//! # Limits
//! A run fails loudly with [`SimError::StepLimit`] after
//! [`SimConfig::step_limit`] processed items, so a livelocked scenario ends.

pub mod topology;

use crate::network::{AppEvent, DropReport, Output, RpcError, RpcId, SendError};
use crate::{
    Address, ConnId, Instant, Network, NetworkBehavior, NodeId, OutgoingConnectionError, Rng,
    RouteRule, ServiceId,
};
use serde::Serialize;
use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// Faults and timing of one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way base latency. Default 10 ms.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame. Default 0.
    pub jitter: Duration,
    /// Probability a frame is lost. Default 0.
    pub loss: f64,
    /// Probability a frame is delivered twice. Default 0.
    pub duplicate: f64,
    /// Probability a frame is held back by `reorder_delay` and may be
    /// overtaken. Default 0.
    pub reorder: f64,
    /// Extra delay of a reordered frame. Default 20 ms.
    pub reorder_delay: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(20),
        }
    }
}

impl LinkConfig {
    /// Sets the latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    /// Sets the jitter.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
    /// Sets the loss probability.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }
    /// Sets the duplication probability.
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }
    /// Sets the reordering probability.
    pub fn with_reorder(mut self, reorder: f64) -> Self {
        self.reorder = reorder;
        self
    }
}

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scenario seed: everything random derives from it.
    pub seed: u64,
    /// Links with no per-link setting. Default [`LinkConfig::default`].
    pub link: LinkConfig,
    /// How long a dial to a dead or cut-off node takes to fail. Default 1 s.
    pub connect_timeout: Duration,
    /// Most items a simulation processes before failing. Default 200 million.
    pub step_limit: u64,
    /// Keep application events for [`Sim::take_events`]. Default true.
    pub capture_events: bool,
    /// Keep a readable trace for [`Sim::trace`]. Default false.
    pub record_trace: bool,
}

impl SimConfig {
    /// Defaults with this seed.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            link: LinkConfig::default(),
            connect_timeout: Duration::from_secs(1),
            step_limit: 200_000_000,
            capture_events: true,
            record_trace: false,
        }
    }
}

/// Why a run stopped early.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// The step limit was reached.
    #[error("step limit of {limit} reached at virtual time {at}")]
    StepLimit {
        /// The limit.
        limit: u64,
        /// Virtual time when it was reached.
        at: Instant,
    },
}

/// Something to do at a scheduled virtual time.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SimAction {
    /// Crash a node.
    Kill(NodeId),
    /// Restart a killed node with fresh state.
    Restart(NodeId),
    /// Split the nodes into groups; unlisted nodes form one more group.
    Partition(Vec<Vec<NodeId>>),
    /// Remove the partition.
    Heal,
    /// Have the first node dial the second.
    Connect(NodeId, NodeId),
    /// Change the default link.
    SetDefaultLink(LinkConfig),
}

/// An application event from a simulated node.
#[derive(Debug)]
pub struct SimEvent {
    /// Virtual time it was emitted.
    pub at: Instant,
    /// The node.
    pub node: NodeId,
    /// The event.
    pub event: AppEvent,
}

/// One line of the readable trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time.
    pub at: Instant,
    /// The node it happened at.
    pub node: NodeId,
    /// What happened.
    pub what: String,
}

/// Counts of what a simulation did, and the hash of its trace.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Frames handed to links.
    pub frames_sent: u64,
    /// Frames delivered to a live node's open connection.
    pub frames_delivered: u64,
    /// Frames lost to injected loss.
    pub frames_lost: u64,
    /// Extra copies made by injected duplication.
    pub frames_duplicated: u64,
    /// Frames delayed by injected reordering.
    pub frames_reordered: u64,
    /// Frames dropped at a partition.
    pub frames_partitioned: u64,
    /// Frames that arrived at a dead node or a closed connection.
    pub frames_undeliverable: u64,
    /// Connections established.
    pub connects: u64,
    /// Dials that failed.
    pub connect_failures: u64,
    /// Frames handed to links, per service (the header's service byte).
    pub frames_by_service: BTreeMap<ServiceId, u64>,
    /// Bytes handed to links, per service.
    pub bytes_by_service: BTreeMap<ServiceId, u64>,
    /// Route changes announced by routers.
    pub route_changes: u64,
    /// Messages the cores dropped, with where and when.
    pub drops: Vec<(Instant, NodeId, DropReport)>,
    /// FNV-1a hash over the whole trace.
    pub trace_hash: u64,
}

type Factory = Box<dyn FnMut(NodeId, u64) -> Network>;

/// The far end of one simulated connection.
struct Peer {
    node: NodeId,
    /// The remote's id for the connection; `None` until the handshake answers.
    conn: Option<ConnId>,
    incarnation: u32,
    /// Latest arrival time scheduled in this direction (FIFO).
    fifo: Instant,
}

struct SimNode {
    net: Option<Network>,
    factory: Factory,
    incarnation: u32,
    wake: Option<Instant>,
    conns: BTreeMap<ConnId, Peer>,
}

enum Ev {
    Wake {
        node: NodeId,
    },
    ConnectReq {
        from: NodeId,
        from_conn: ConnId,
        from_inc: u32,
        to: NodeId,
    },
    ConnectAck {
        to: NodeId,
        conn: ConnId,
        inc: u32,
        peer: NodeId,
        peer_conn: ConnId,
        peer_inc: u32,
    },
    ConnectFail {
        to: NodeId,
        conn: ConnId,
        inc: u32,
        err: OutgoingConnectionError,
    },
    Frame {
        to: NodeId,
        conn: ConnId,
        inc: u32,
        from: NodeId,
        bytes: Vec<u8>,
    },
    Disconnect {
        to: NodeId,
        conn: ConnId,
        inc: u32,
    },
    Action(SimAction),
}

/// A heap entry: small, so sifting is cheap; the event waits in a slab.
struct Queued {
    at: Instant,
    seq: u64,
    slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// FNV-1a, 64-bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
struct Fnv(u64);
impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }
}

/// The simulator. See the [module docs](self).
pub struct Sim {
    config: SimConfig,
    rng: Rng,
    now: Instant,
    seq: u64,
    steps: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    /// Events by slot; `free` lists the empty slots.
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    nodes: BTreeMap<NodeId, SimNode>,
    links: BTreeMap<(NodeId, NodeId), LinkConfig>,
    groups: Option<BTreeMap<NodeId, usize>>,
    events: Vec<SimEvent>,
    answers: Vec<(NodeId, RpcId, Box<dyn Any + Send>)>,
    report: SimReport,
    hash: Fnv,
    trace: Vec<TraceEntry>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Sim {
    /// A simulation with default settings and this seed.
    pub fn new(seed: u64) -> Self {
        Self::with_config(SimConfig::new(seed))
    }

    /// A simulation with these settings.
    pub fn with_config(config: SimConfig) -> Self {
        Sim {
            rng: Rng::new(config.seed),
            config,
            now: Instant::ZERO,
            seq: 0,
            steps: 0,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            groups: None,
            events: Vec::new(),
            answers: Vec::new(),
            report: SimReport::default(),
            hash: Fnv(0xcbf2_9ce4_8422_2325),
            trace: Vec::new(),
        }
    }

    /// Adds a node built by `factory(id, seed)`, started now. The factory is
    /// kept to build the node afresh on [`restart`](Self::restart); it must
    /// build a core whose local id is `id` and should seed it with `seed`.
    ///
    /// # Panics
    /// If a node with this id exists, or the factory builds a core with
    /// another id: both are scenario bugs.
    pub fn add_node(
        &mut self,
        id: NodeId,
        factory: impl FnMut(NodeId, u64) -> Network + 'static,
    ) -> NodeId {
        assert!(!self.nodes.contains_key(&id), "node {id} added twice");
        self.nodes.insert(
            id,
            SimNode {
                net: None,
                factory: Box::new(factory),
                incarnation: 0,
                wake: None,
                conns: BTreeMap::new(),
            },
        );
        self.start(id);
        id
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The ids of all nodes, dead or alive.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// A live node's core.
    pub fn node(&self, id: NodeId) -> Option<&Network> {
        self.nodes.get(&id).and_then(|n| n.net.as_ref())
    }

    /// Whether the node exists and is alive.
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    /// Runs `f` on a live node's core at the current virtual time, then
    /// executes whatever it queued. `None` if the node is dead or unknown.
    pub fn with_node<R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut Network, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes.get_mut(&id)?.net.as_mut()?, now);
        self.drain(id);
        Some(r)
    }

    /// Has node `a` dial node `b` now.
    pub fn connect(&mut self, a: NodeId, b: NodeId) {
        let r = self.with_node(a, |net, now| net.connect(now, b, Address::Memory(b.0)));
        if let Some(Err(e)) = r {
            log::debug!("sim: {a} dial {b}: {e}");
        }
    }

    /// Sends from node `from` as its application would.
    pub fn send<M: Serialize>(
        &mut self,
        from: NodeId,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
    ) -> Result<(), SendError> {
        self.with_node(from, |net, now| net.send(now, service, rule, msg))
            .unwrap_or(Ok(()))
    }

    /// Calls behaviour `B`'s RPC on a node and returns the answer if the
    /// behaviour answered before returning (`None` if not, or if the node is
    /// dead).
    pub fn rpc<B: NetworkBehavior>(
        &mut self,
        node: NodeId,
        req: B::Request,
    ) -> Result<Option<B::Response>, RpcError> {
        let Some(id) = self.with_node(node, |net, now| net.rpc::<B>(now, req)) else {
            return Ok(None);
        };
        let id = id?;
        Ok(self.take_answer::<B::Response>(node, id))
    }

    /// Takes a stored RPC answer of type `R`.
    pub fn take_answer<R: 'static>(&mut self, node: NodeId, id: RpcId) -> Option<R> {
        let pos = self
            .answers
            .iter()
            .position(|(n, i, _)| *n == node && *i == id)?;
        let (_, _, resp) = self.answers.remove(pos);
        resp.downcast::<R>().ok().map(|b| *b)
    }

    /// Sets the faults of the direction `from` → `to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// Sets both directions between two nodes.
    pub fn set_link_both(&mut self, a: NodeId, b: NodeId, link: LinkConfig) {
        self.set_link(a, b, link);
        self.set_link(b, a, link);
    }

    /// Sets the default link.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.config.link = link;
    }

    /// Splits nodes into groups that cannot reach each other; nodes not
    /// listed form one more group together.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let mut map = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            for n in g {
                map.insert(*n, i + 1);
            }
        }
        log::info!("sim {}: partition into {} group(s)", self.now, groups.len());
        self.groups = Some(map);
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        log::info!("sim {}: partition healed", self.now);
        self.groups = None;
    }

    /// Crashes a node: its state is gone, its peers are not told.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.net.take().is_some() {
                log::info!("sim {}: node {id} killed", self.now);
                n.incarnation += 1;
                n.wake = None;
                n.conns.clear();
                self.hash.u64(0x4b49_4c4c ^ id.0);
            }
        }
    }

    /// Restarts a killed node with fresh state from its factory.
    pub fn restart(&mut self, id: NodeId) {
        if self.nodes.get(&id).is_some_and(|n| n.net.is_none()) {
            log::info!("sim {}: node {id} restarted", self.now);
            self.start(id);
        }
    }

    /// Schedules an action at a virtual time (now, if that is past).
    pub fn schedule(&mut self, at: Instant, action: SimAction) {
        self.push(at.max(self.now), Ev::Action(action));
    }

    /// Takes the application events gathered so far.
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    /// What happened so far.
    pub fn report(&self) -> SimReport {
        let mut r = self.report.clone();
        r.trace_hash = self.hash.0;
        r
    }

    /// The readable trace (empty unless [`SimConfig::record_trace`]).
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// Items processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Processes the next due item, advancing virtual time to it. Returns
    /// `Ok(false)` when nothing is left to do.
    pub fn step(&mut self) -> Result<bool, SimError> {
        let Some(Reverse(q)) = self.queue.pop() else {
            return Ok(false);
        };
        self.steps += 1;
        if self.steps > self.config.step_limit {
            return Err(SimError::StepLimit {
                limit: self.config.step_limit,
                at: self.now,
            });
        }
        self.now = q.at;
        let ev = self.slab.get_mut(q.slot as usize).and_then(Option::take);
        self.free.push(q.slot);
        if let Some(ev) = ev {
            self.process(ev);
        }
        Ok(true)
    }

    /// Runs until virtual time `until` (inclusive), then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) -> Result<(), SimError> {
        while self.queue.peek().is_some_and(|Reverse(q)| q.at <= until) {
            self.step()?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        self.run_until(self.now + d)
    }

    /// Runs until `done(self)` holds, checking after every item, or until
    /// virtual time `deadline`. Returns whether `done` held.
    pub fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, SimError> {
        if done(self) {
            return Ok(true);
        }
        while self.queue.peek().is_some_and(|Reverse(q)| q.at <= deadline) {
            self.step()?;
            if done(self) {
                return Ok(true);
            }
        }
        self.now = self.now.max(deadline);
        Ok(false)
    }

    // ---- internals ----------------------------------------------------

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                // More than 4 billion queued items is far past memory.
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            slot,
        }));
    }

    fn trace_line(&mut self, node: NodeId, what: impl FnOnce() -> String) {
        if self.config.record_trace {
            let what = what();
            self.trace.push(TraceEntry {
                at: self.now,
                node,
                what,
            });
        }
    }

    fn node_seed(&self, id: NodeId, incarnation: u32) -> u64 {
        let mut r =
            Rng::new(self.config.seed ^ id.0.rotate_left(17) ^ (u64::from(incarnation) << 48));
        r.next_u64()
    }

    fn start(&mut self, id: NodeId) {
        let seed = {
            let n = &self.nodes[&id];
            self.node_seed(id, n.incarnation)
        };
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let net = (n.factory)(id, seed);
        assert_eq!(
            net.local_node(),
            id,
            "the factory built a core with another id"
        );
        n.net = Some(net);
        n.wake = None;
        n.conns.clear();
        self.drain(id);
    }

    fn alive_inc(&self, id: NodeId) -> Option<u32> {
        self.nodes
            .get(&id)
            .filter(|n| n.net.is_some())
            .map(|n| n.incarnation)
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        match &self.groups {
            None => false,
            Some(g) => g.get(&a).unwrap_or(&0) != g.get(&b).unwrap_or(&0),
        }
    }

    fn link(&self, from: NodeId, to: NodeId) -> LinkConfig {
        if self.links.is_empty() {
            return self.config.link;
        }
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.config.link)
    }

    fn delay(&mut self, link: &LinkConfig) -> Duration {
        let jitter = link.jitter.as_micros() as u64;
        let extra = if jitter > 0 {
            self.rng.below(jitter + 1)
        } else {
            0
        };
        link.latency + Duration::from_micros(extra)
    }

    /// Executes every output a node has queued, then re-arms its wake-up.
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(out) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.net.as_mut())
                .and_then(|net| net.poll_output())
            else {
                break;
            };
            self.execute(id, out);
        }
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(net) = n.net.as_ref() else {
            return;
        };
        let t = net.poll_timeout().max(self.now);
        if n.wake != Some(t) {
            n.wake = Some(t);
            self.push(t, Ev::Wake { node: id });
        }
    }

    fn execute(&mut self, id: NodeId, out: Output) {
        let now = self.now;
        let inc = self.nodes[&id].incarnation;
        match out {
            Output::Connect { conn, node, addr } => {
                let target = match addr {
                    Address::Memory(n) => NodeId(n),
                    other => {
                        log::debug!("sim: {id} cannot dial {other}: not a memory address");
                        self.push(
                            now,
                            Ev::ConnectFail {
                                to: id,
                                conn,
                                inc,
                                err: OutgoingConnectionError::Unreachable,
                            },
                        );
                        return;
                    }
                };
                self.hash
                    .u64(0x434f_4e4e ^ id.0 ^ target.0.rotate_left(1) ^ conn.0);
                self.trace_line(id, || format!("dial {node} at {addr} as {conn}"));
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.conns.insert(
                        conn,
                        Peer {
                            node: target,
                            conn: None,
                            incarnation: 0,
                            fifo: now,
                        },
                    );
                }
                if self.alive_inc(target).is_some() && !self.cut(id, target) {
                    let d = self.delay(&self.link(id, target));
                    self.push(
                        now + d,
                        Ev::ConnectReq {
                            from: id,
                            from_conn: conn,
                            from_inc: inc,
                            to: target,
                        },
                    );
                } else {
                    self.push(
                        now + self.config.connect_timeout,
                        Ev::ConnectFail {
                            to: id,
                            conn,
                            inc,
                            err: OutgoingConnectionError::Unreachable,
                        },
                    );
                }
            }
            Output::Send { conn, frame, .. } => self.transmit(id, conn, frame),
            Output::Close { conn, reason } => {
                self.hash.u64(0x434c_4f53 ^ id.0 ^ conn.0);
                self.trace_line(id, || format!("close {conn}: {reason}"));
                let peer = self.nodes.get_mut(&id).and_then(|n| n.conns.remove(&conn));
                if let Some(Peer {
                    node,
                    conn: Some(pc),
                    incarnation,
                    ..
                }) = peer
                {
                    let d = self.delay(&self.link(id, node));
                    self.push(
                        now + d,
                        Ev::Disconnect {
                            to: node,
                            conn: pc,
                            inc: incarnation,
                        },
                    );
                }
            }
            Output::Event(event) => {
                if self.config.capture_events {
                    self.events.push(SimEvent {
                        at: now,
                        node: id,
                        event,
                    });
                }
            }
            Output::RpcAnswer { id: rpc, response } => self.answers.push((id, rpc, response)),
            Output::Dropped(report) => {
                self.hash.u64(0x4452_4f50 ^ id.0 ^ report.source.0);
                self.trace_line(id, || {
                    format!(
                        "drop {} from {}: {}",
                        report.service, report.source, report.reason
                    )
                });
                self.report.drops.push((now, id, report));
            }
            Output::RouteChanged(change) => {
                self.report.route_changes += 1;
                self.hash.u64(0x5254_4348 ^ id.0 ^ change.dest.0);
            }
        }
    }

    /// Puts a frame on the link of `conn`, applying the link's faults.
    fn transmit(&mut self, id: NodeId, conn: ConnId, frame: Vec<u8>) {
        let now = self.now;
        let Some((to, to_conn, to_inc)) = self
            .nodes
            .get(&id)
            .and_then(|n| n.conns.get(&conn))
            .and_then(|p| p.conn.map(|c| (p.node, c, p.incarnation)))
        else {
            self.report.frames_undeliverable += 1;
            return;
        };
        self.report.frames_sent += 1;
        if let Some(s) = crate::wire::peek_service(&frame) {
            *self.report.frames_by_service.entry(s).or_default() += 1;
            *self.report.bytes_by_service.entry(s).or_default() += frame.len() as u64;
        }
        self.hash
            .u64(now.as_micros() ^ id.0.rotate_left(7) ^ conn.0);
        self.hash.write(&frame);
        let link = self.link(id, to);
        if self.rng.chance(link.loss) {
            self.report.frames_lost += 1;
            self.hash.u64(0x4c4f_5354);
            self.trace_line(id, || format!("lost frame on {conn} to {to}"));
            return;
        }
        let copies = if self.rng.chance(link.duplicate) {
            self.report.frames_duplicated += 1;
            2
        } else {
            1
        };
        let mut pending = Some(frame);
        for i in 0..copies {
            let mut at = now + self.delay(&link);
            let reordered = self.rng.chance(link.reorder);
            if reordered {
                self.report.frames_reordered += 1;
                at += link.reorder_delay;
            }
            if let Some(p) = self.nodes.get_mut(&id).and_then(|n| n.conns.get_mut(&conn)) {
                if !reordered {
                    at = at.max(p.fifo);
                    p.fifo = at;
                }
            }
            let bytes = if i + 1 == copies {
                pending.take().unwrap_or_default()
            } else {
                pending.clone().unwrap_or_default()
            };
            self.push(
                at,
                Ev::Frame {
                    to,
                    conn: to_conn,
                    inc: to_inc,
                    from: id,
                    bytes,
                },
            );
        }
    }

    fn process(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Wake { node } => {
                let Some(n) = self.nodes.get_mut(&node) else {
                    return;
                };
                if n.wake != Some(now) {
                    return; // superseded
                }
                n.wake = None;
                if let Some(net) = n.net.as_mut() {
                    net.handle_tick(now);
                    self.drain(node);
                }
            }
            Ev::ConnectReq {
                from,
                from_conn,
                from_inc,
                to,
            } => {
                let back = self.delay(&self.link(to, from));
                let (Some(to_inc), false) = (self.alive_inc(to), self.cut(from, to)) else {
                    self.push(
                        now + self.config.connect_timeout,
                        Ev::ConnectFail {
                            to: from,
                            conn: from_conn,
                            inc: from_inc,
                            err: OutgoingConnectionError::Unreachable,
                        },
                    );
                    return;
                };
                let res = self
                    .nodes
                    .get_mut(&to)
                    .and_then(|n| n.net.as_mut())
                    .map(|net| net.handle_incoming(now, from, Some(Address::Memory(from.0))));
                match res {
                    Some(Ok(conn)) => {
                        self.hash.u64(0x4143_4350 ^ to.0 ^ conn.0);
                        self.trace_line(to, || format!("accept {conn} from {from}"));
                        if let Some(n) = self.nodes.get_mut(&to) {
                            n.conns.insert(
                                conn,
                                Peer {
                                    node: from,
                                    conn: Some(from_conn),
                                    incarnation: from_inc,
                                    fifo: now + back,
                                },
                            );
                        }
                        // The ack is the first thing on the connection: frames
                        // the acceptor sends now queue behind it (FIFO).
                        self.push(
                            now + back,
                            Ev::ConnectAck {
                                to: from,
                                conn: from_conn,
                                inc: from_inc,
                                peer: to,
                                peer_conn: conn,
                                peer_inc: to_inc,
                            },
                        );
                        self.drain(to);
                    }
                    Some(Err(reason)) => {
                        self.push(
                            now + back,
                            Ev::ConnectFail {
                                to: from,
                                conn: from_conn,
                                inc: from_inc,
                                err: OutgoingConnectionError::Rejected(reason),
                            },
                        );
                        self.drain(to);
                    }
                    None => {}
                }
            }
            Ev::ConnectAck {
                to,
                conn,
                inc,
                peer,
                peer_conn,
                peer_inc,
            } => {
                let live = self.alive_inc(to) == Some(inc);
                let waiting = live
                    && self
                        .nodes
                        .get(&to)
                        .and_then(|n| n.conns.get(&conn))
                        .is_some_and(|p| p.conn.is_none());
                if !waiting {
                    // The dialler is gone or gave up: tear down the accepted side.
                    let d = self.delay(&self.link(to, peer));
                    self.push(
                        now + d,
                        Ev::Disconnect {
                            to: peer,
                            conn: peer_conn,
                            inc: peer_inc,
                        },
                    );
                    return;
                }
                if let Some(p) = self.nodes.get_mut(&to).and_then(|n| n.conns.get_mut(&conn)) {
                    p.conn = Some(peer_conn);
                    p.incarnation = peer_inc;
                    p.node = peer;
                }
                self.report.connects += 1;
                self.hash.u64(0x4143_4b21 ^ to.0 ^ conn.0);
                self.trace_line(to, || format!("connected {conn} to {peer}"));
                if let Some(net) = self.nodes.get_mut(&to).and_then(|n| n.net.as_mut()) {
                    net.handle_outgoing_connected(now, conn, peer);
                }
                self.drain(to);
            }
            Ev::ConnectFail { to, conn, inc, err } => {
                if self.alive_inc(to) != Some(inc) {
                    return;
                }
                self.report.connect_failures += 1;
                self.hash.u64(0x4641_494c ^ to.0 ^ conn.0);
                self.trace_line(to, || format!("dial {conn} failed: {err}"));
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.conns.remove(&conn);
                    if let Some(net) = n.net.as_mut() {
                        net.handle_outgoing_failed(now, conn, err);
                    }
                }
                self.drain(to);
            }
            Ev::Frame {
                to,
                conn,
                inc,
                from,
                bytes,
            } => {
                if self.cut(from, to) {
                    self.report.frames_partitioned += 1;
                    self.hash.u64(0x5041_5254);
                    return;
                }
                let open = self.alive_inc(to) == Some(inc)
                    && self
                        .nodes
                        .get(&to)
                        .is_some_and(|n| n.conns.contains_key(&conn));
                if !open {
                    self.report.frames_undeliverable += 1;
                    return;
                }
                self.report.frames_delivered += 1;
                if let Some(net) = self.nodes.get_mut(&to).and_then(|n| n.net.as_mut()) {
                    net.handle_frame(now, conn, &bytes);
                }
                self.drain(to);
            }
            Ev::Disconnect { to, conn, inc } => {
                if self.alive_inc(to) != Some(inc) {
                    return;
                }
                let removed = self
                    .nodes
                    .get_mut(&to)
                    .is_some_and(|n| n.conns.remove(&conn).is_some());
                if !removed {
                    return;
                }
                self.hash.u64(0x4449_5343 ^ to.0 ^ conn.0);
                self.trace_line(to, || format!("peer closed {conn}"));
                if let Some(net) = self.nodes.get_mut(&to).and_then(|n| n.net.as_mut()) {
                    net.handle_disconnected(now, conn);
                }
                self.drain(to);
            }
            Ev::Action(action) => {
                self.hash.u64(0x4143_5449);
                match action {
                    SimAction::Kill(n) => self.kill(n),
                    SimAction::Restart(n) => self.restart(n),
                    SimAction::Partition(groups) => self.partition(&groups),
                    SimAction::Heal => self.heal(),
                    SimAction::Connect(a, b) => self.connect(a, b),
                    SimAction::SetDefaultLink(l) => self.set_default_link(l),
                }
            }
        }
    }
}
