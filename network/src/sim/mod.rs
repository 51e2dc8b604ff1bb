//! A deterministic simulator: many cores in one process over simulated links.
//!
//! [`Sim`] owns a set of [`Network`] cores and drives them exactly as a real
//! driver would (see [`crate::network`] for the drive loop), but over
//! simulated connections with a virtual clock. It jumps from one due item —
//! a frame arriving, a handshake step, a node's timer, a scheduled fault —
//! to the next, so a minute of virtual time costs only the work done in it,
//! and a node with no timer due costs nothing.
//!
//! # The link model
//! Each direction of each link has a [`LinkConfig`]: base latency, uniform
//! jitter, loss, duplication and reordering probabilities, and a
//! retransmission timeout. Loss means what it means on a real link (see
//! [`link`]): an unreliable frame is lost; a reliable one arrives late, one
//! retransmission timeout per loss, in order; a link that loses everything
//! for longer than [`SimConfig::idle_timeout`] closes the connection.
//! Reliable frames are never duplicated or reordered (a stream never does
//! that); unreliable ones may be. Nodes can be put into partitions (an
//! unreliable frame that meets one is dropped, a reliable one is held until
//! the heal — or until the idle timeout closes its connection — and
//! handshakes fail) and healed, killed (a crash: no goodbye; its peers'
//! connections close after the idle timeout unless a behaviour such as ping
//! notices first) and restarted with fresh state, at once or at a scheduled
//! virtual time ([`Sim::schedule`]).
//!
//! # Determinism
//! All randomness comes from the scenario's seed: link faults from the
//! simulator's own [`Rng`], each node's RNG from a seed derived from the
//! scenario seed, the node id and its incarnation (the simulator sets it
//! whatever the factory did). Every map iterated here and in the core is
//! ordered. The same seed and scenario therefore give the same trace, byte
//! for byte: [`SimReport::trace_hash`] hashes every frame, handshake, close
//! and drop with its virtual time, and can be compared across runs.
//!
//! # Limits
//! A run fails loudly with [`SimError::StepLimit`] after
//! [`SimConfig::step_limit`] processed items, so a livelocked scenario ends.

pub mod link;
mod queue;
mod report;
pub mod topology;

pub use link::LinkConfig;
pub use report::{SimEvent, SimReport, TraceEntry};

use crate::vecmap::VecMap;
use crate::{
    Address, ConnId, Instant, Network, NetworkBehavior, NodeId, OutgoingConnectionError, Output,
    RequestOf, ResponseOf, Rng, RouteRule, RpcError, RpcId, SendError, ServiceId,
};
use link::Fate;
use queue::EventQueue;
use report::Fnv;
use serde::Serialize;
use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;
use thiserror::Error;

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scenario seed: everything random derives from it.
    pub seed: u64,
    /// Links with no per-link setting. Default [`LinkConfig::default`].
    pub link: LinkConfig,
    /// How long a dial to a dead or cut-off node takes to fail. Default 1 s.
    pub connect_timeout: Duration,
    /// A connection whose path loses everything (or whose peer died) for
    /// this long closes, as QUIC's idle timeout closes it. Default 30 s,
    /// the QUIC transport's default.
    pub idle_timeout: Duration,
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
            idle_timeout: Duration::from_secs(30),
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

type Factory = Box<dyn FnMut(NodeId, u64) -> Network>;

/// A hasher for node ids: one multiplication (Fibonacci hashing). Ids are
/// spread already, or small integers in tests; either way this scatters
/// them, and it has no random seed, so iteration orders replay.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
type RpcResult = Result<Box<dyn Any + Send>, RpcError>;

/// The far end of one simulated connection.
struct Peer {
    node: NodeId,
    /// The remote's id for the connection; `None` until the handshake answers.
    conn: Option<ConnId>,
    incarnation: u32,
    /// Latest arrival time scheduled for a reliable frame in this direction
    /// (they arrive in order).
    fifo: Instant,
    /// The link model closes this connection: frames sent on it now are lost.
    dying: bool,
}

struct SimNode {
    /// Boxed: the map of nodes stays compact, and only the node an event is
    /// for has its core pulled into the cache.
    net: Option<Box<Network>>,
    factory: Factory,
    incarnation: u32,
    wake: Option<Instant>,
    conns: VecMap<ConnId, Peer>,
}

/// Reliable frames held at a partition, for one receiving connection.
struct Held {
    inc: u32,
    from: NodeId,
    since: Instant,
    items: VecDeque<HeldItem>,
}

/// What a partition holds on a connection, in order: reliable frames, and
/// the peer's graceful close behind them.
enum HeldItem {
    Frame(Vec<u8>),
    Close,
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
        reliable: bool,
        bytes: Vec<u8>,
    },
    /// Is the partition holding frames for this connection healed yet?
    Retry {
        to: NodeId,
        conn: ConnId,
    },
    /// The connection ends at `to`: the peer (`from`) closed it
    /// (`idle: false`; it travels like a reliable frame), or the link model
    /// timed it out.
    Disconnect {
        to: NodeId,
        from: NodeId,
        conn: ConnId,
        inc: u32,
        idle: bool,
    },
    /// Has the partition that cut this connection lasted past the idle
    /// timeout (`epoch` is the partition it was scheduled in)?
    IdleCheck {
        node: NodeId,
        conn: ConnId,
        inc: u32,
        epoch: u64,
    },
    Action(SimAction),
}

/// The simulator. See the [module docs](self).
pub struct Sim {
    config: SimConfig,
    rng: Rng,
    now: Instant,
    steps: u64,
    queue: EventQueue<Ev>,
    /// Looked up on every event: a hash map (by a fixed, seedless hash, so
    /// runs replay) rather than a tree.
    nodes: HashMap<NodeId, SimNode, BuildHasherDefault<IdHasher>>,
    /// The node ids, ascending: every iteration over the nodes goes in
    /// this order.
    order: Vec<NodeId>,
    links: BTreeMap<(NodeId, NodeId), LinkConfig>,
    groups: Option<BTreeMap<NodeId, usize>>,
    /// Counts partitions and heals: idle checks of an earlier one lapse.
    partition_epoch: u64,
    held: BTreeMap<(NodeId, ConnId), Held>,
    events: Vec<SimEvent>,
    answers: Vec<(NodeId, RpcId, RpcResult)>,
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
            steps: 0,
            queue: EventQueue::default(),
            nodes: HashMap::default(),
            order: Vec::new(),
            links: BTreeMap::new(),
            groups: None,
            partition_epoch: 0,
            held: BTreeMap::new(),
            events: Vec::new(),
            answers: Vec::new(),
            report: SimReport::default(),
            hash: Fnv::default(),
            trace: Vec::new(),
        }
    }

    /// Adds a node built by `factory(id, seed)`, started now. The factory is
    /// kept to build the node afresh on [`restart`](Self::restart); it must
    /// build a core whose local id is `id`. The simulator seeds the core's
    /// RNG with `seed` (derived from the scenario's seed, the id and the
    /// incarnation) whatever the factory did, so runs replay.
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
        let at = self.order.partition_point(|n| *n < id);
        self.order.insert(at, id);
        self.nodes.insert(
            id,
            SimNode {
                net: None,
                factory: Box::new(factory),
                incarnation: 0,
                wake: None,
                conns: VecMap::new(),
            },
        );
        self.start(id);
        id
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The ids of all nodes, dead or alive.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.order.iter().copied()
    }

    /// A live node's core.
    pub fn node(&self, id: NodeId) -> Option<&Network> {
        self.nodes.get(&id).and_then(|n| n.net.as_deref())
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

    /// Sends from node `from` as its application would. A dead node cannot
    /// send: [`SendError::NodeDown`].
    pub fn send<M: Serialize>(
        &mut self,
        from: NodeId,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
    ) -> Result<(), SendError> {
        self.with_node(from, |net, now| net.send(now, service, rule, msg))
            .unwrap_or(Err(SendError::NodeDown(from)))
    }

    /// Calls behaviour `B`'s RPC on a node and returns the answer if the
    /// behaviour answered before returning (`Ok(None)` if not, or if the
    /// node is dead; a refusal is an error).
    pub fn rpc<B: NetworkBehavior>(
        &mut self,
        node: NodeId,
        req: RequestOf<B>,
    ) -> Result<Option<ResponseOf<B>>, RpcError> {
        let Some(id) = self.rpc_start::<B>(node, req) else {
            return Ok(None);
        };
        let id = id?;
        self.take_answer::<ResponseOf<B>>(node, id).transpose()
    }

    /// Calls behaviour `B`'s RPC on a node and returns its id, for an
    /// answer that comes later ([`take_answer`](Self::take_answer)).
    /// `None` if the node is dead.
    pub fn rpc_start<B: NetworkBehavior>(
        &mut self,
        node: NodeId,
        req: RequestOf<B>,
    ) -> Option<Result<RpcId, RpcError>> {
        self.with_node(node, |net, now| net.rpc::<B>(now, req))
    }

    /// Whether the RPC `id` of `node` has an answer waiting for
    /// [`take_answer`](Self::take_answer).
    pub fn has_answer(&self, node: NodeId, id: RpcId) -> bool {
        self.answers.iter().any(|(n, i, _)| *n == node && *i == id)
    }

    /// Takes a stored RPC answer: the response as `R`, or the error.
    /// `None` while unanswered (or when the response is not an `R`).
    pub fn take_answer<R: 'static>(
        &mut self,
        node: NodeId,
        id: RpcId,
    ) -> Option<Result<R, RpcError>> {
        let pos = self
            .answers
            .iter()
            .position(|(n, i, _)| *n == node && *i == id)?;
        let (_, _, result) = self.answers.remove(pos);
        match result {
            Ok(resp) => resp.downcast::<R>().ok().map(|b| Ok(*b)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Changes [`SimConfig::step_limit`] (long scenarios need more).
    pub fn set_step_limit(&mut self, limit: u64) {
        self.config.step_limit = limit;
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
        self.partition_epoch += 1;
        // Connections across the cut close at the idle timeout even if
        // nothing is sent on them (QUIC's keep-alives get no answer).
        let at = self.now + self.config.idle_timeout;
        let mut checks = Vec::new();
        for id in &self.order {
            let n = &self.nodes[id];
            for (conn, p) in n.conns.iter() {
                if *id < p.node && self.cut(*id, p.node) {
                    checks.push(Ev::IdleCheck {
                        node: *id,
                        conn: *conn,
                        inc: n.incarnation,
                        epoch: self.partition_epoch,
                    });
                }
            }
        }
        for ev in checks {
            self.queue.push(at, ev);
        }
    }

    /// Removes any partition. Held reliable frames are delivered at their
    /// connection's next retransmission.
    pub fn heal(&mut self) {
        log::info!("sim {}: partition healed", self.now);
        self.groups = None;
        self.partition_epoch += 1;
    }

    /// Crashes a node: its state is gone, its peers are not told; their
    /// connections to it close after the idle timeout (sooner if a
    /// behaviour of theirs notices).
    pub fn kill(&mut self, id: NodeId) {
        let now = self.now;
        let idle = self.config.idle_timeout;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.net.take().is_none() {
            return;
        }
        log::info!("sim {now}: node {id} killed");
        n.incarnation += 1;
        n.wake = None;
        let peers: Vec<Peer> = std::mem::take(&mut n.conns).into_values().collect();
        self.hash.u64(0x4b49_4c4c ^ id.0);
        for p in peers {
            if let Some(pc) = p.conn {
                self.queue.push(
                    now + idle,
                    Ev::Disconnect {
                        to: p.node,
                        from: id,
                        conn: pc,
                        inc: p.incarnation,
                        idle: true,
                    },
                );
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
        self.queue.push(at.max(self.now), Ev::Action(action));
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
        let Some((at, ev)) = self.queue.pop() else {
            return Ok(false);
        };
        self.steps += 1;
        if self.steps > self.config.step_limit {
            return Err(SimError::StepLimit {
                limit: self.config.step_limit,
                at: self.now,
            });
        }
        self.now = at;
        self.process(ev);
        Ok(true)
    }

    /// Runs until virtual time `until` (inclusive), then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) -> Result<(), SimError> {
        while self.queue.peek_time().is_some_and(|t| t <= until) {
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
        while self.queue.peek_time().is_some_and(|t| t <= deadline) {
            self.step()?;
            if done(self) {
                return Ok(true);
            }
        }
        self.now = self.now.max(deadline);
        Ok(false)
    }

    // ---- internals ----------------------------------------------------

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
        let mut net = (n.factory)(id, seed);
        assert_eq!(
            net.local_node(),
            id,
            "the factory built a core with another id"
        );
        net.reseed(seed);
        net.set_local_addrs(vec![Address::Memory(id.0)]);
        n.net = Some(Box::new(net));
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

    fn delay(&mut self, from: NodeId, to: NodeId) -> Duration {
        let link = self.link(from, to);
        link.delay(&mut self.rng)
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
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(net) = n.net.as_ref() else {
            return;
        };
        match net.poll_timeout() {
            Some(t) => {
                let t = t.max(now);
                if n.wake != Some(t) {
                    n.wake = Some(t);
                    self.queue.push(t, Ev::Wake { node: id });
                }
            }
            None => n.wake = None,
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
                        self.queue.push(
                            now,
                            Ev::ConnectFail {
                                to: id,
                                conn,
                                inc,
                                err: OutgoingConnectionError::NoTransport(other.to_string()),
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
                            dying: false,
                        },
                    );
                }
                if self.alive_inc(target).is_some() && !self.cut(id, target) {
                    let d = self.delay(id, target);
                    self.queue.push(
                        now + d,
                        Ev::ConnectReq {
                            from: id,
                            from_conn: conn,
                            from_inc: inc,
                            to: target,
                        },
                    );
                } else {
                    self.queue.push(
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
            Output::Send {
                conn,
                frame,
                unreliable,
            } => self.transmit(id, conn, frame, !unreliable),
            Output::Close { conn, reason } => {
                self.hash.u64(0x434c_4f53 ^ id.0 ^ conn.0);
                self.trace_line(id, || format!("close {conn}: {reason}"));
                let peer = self.nodes.get_mut(&id).and_then(|n| n.conns.remove(&conn));
                self.held.remove(&(id, conn));
                if let Some(Peer {
                    node,
                    conn: Some(pc),
                    incarnation,
                    fifo,
                    ..
                }) = peer
                {
                    // The close travels behind the frames already sent.
                    let d = self.delay(id, node);
                    self.queue.push(
                        (now + d).max(fifo),
                        Ev::Disconnect {
                            to: node,
                            from: id,
                            conn: pc,
                            inc: incarnation,
                            idle: false,
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
            Output::RpcAnswer { id: rpc, result } => self.answers.push((id, rpc, result)),
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
            Output::DialFailed(_) => {}
            Output::BehaviorFailed(f) => {
                self.hash.u64(0x4641_494c_4244 ^ id.0);
                self.trace_line(id, || f.to_string());
                self.report.failures.push((now, id, f));
            }
        }
    }

    /// Puts a frame on the link of `conn`, as the link model says.
    fn transmit(&mut self, id: NodeId, conn: ConnId, frame: Vec<u8>, reliable: bool) {
        let now = self.now;
        let Some((to, to_conn, to_inc)) = self
            .nodes
            .get(&id)
            .and_then(|n| n.conns.get(&conn))
            .filter(|p| !p.dying)
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
        match link::fate(&link, reliable, self.config.idle_timeout, &mut self.rng) {
            Fate::Lost => {
                self.report.frames_lost += 1;
                self.hash.u64(0x4c4f_5354);
                self.trace_line(id, || format!("lost frame on {conn} to {to}"));
            }
            Fate::Ordered { delay, retransmits } => {
                self.report.frames_retransmitted += u64::from(retransmits);
                let mut at = now + delay;
                if let Some(p) = self.nodes.get_mut(&id).and_then(|n| n.conns.get_mut(&conn)) {
                    at = at.max(p.fifo);
                    p.fifo = at;
                }
                self.queue.push(
                    at,
                    Ev::Frame {
                        to,
                        conn: to_conn,
                        inc: to_inc,
                        from: id,
                        reliable: true,
                        bytes: frame,
                    },
                );
            }
            Fate::Datagram { delays, reordered } => {
                self.report.frames_reordered += u64::from(reordered);
                self.report.frames_duplicated += delays.len() as u64 - 1;
                let n = delays.len();
                let mut frame = Some(frame);
                for (i, d) in delays.into_iter().enumerate() {
                    let bytes = if i + 1 == n {
                        frame.take().unwrap_or_default()
                    } else {
                        frame.clone().unwrap_or_default()
                    };
                    self.queue.push(
                        now + d,
                        Ev::Frame {
                            to,
                            conn: to_conn,
                            inc: to_inc,
                            from: id,
                            reliable: false,
                            bytes,
                        },
                    );
                }
            }
            Fate::Dead => {
                self.trace_line(id, || format!("link to {to} dead on {conn}"));
                let idle = self.config.idle_timeout;
                self.link_dead(id, conn, idle);
            }
        }
    }

    /// The link of `conn` at `id` lost everything: both ends see the
    /// connection close after `after`; frames sent on it meanwhile are lost.
    fn link_dead(&mut self, id: NodeId, conn: ConnId, after: Duration) {
        let at = self.now + after;
        let inc = self.nodes.get(&id).map_or(0, |n| n.incarnation);
        let Some(p) = self.nodes.get_mut(&id).and_then(|n| n.conns.get_mut(&conn)) else {
            return;
        };
        if p.dying {
            return;
        }
        p.dying = true;
        let far = p.conn.map(|c| (p.node, c, p.incarnation));
        self.queue.push(
            at,
            Ev::Disconnect {
                to: id,
                from: id,
                conn,
                inc,
                idle: true,
            },
        );
        if let Some((node, c, i)) = far {
            self.queue.push(
                at,
                Ev::Disconnect {
                    to: node,
                    from: id,
                    conn: c,
                    inc: i,
                    idle: true,
                },
            );
        }
    }

    /// Holds a reliable frame (or a graceful close) that met a partition,
    /// or that comes behind ones held.
    fn hold(&mut self, to: NodeId, conn: ConnId, inc: u32, from: NodeId, item: HeldItem) {
        if matches!(item, HeldItem::Frame(_)) {
            self.report.frames_held += 1;
        }
        let now = self.now;
        let fresh = !self.held.contains_key(&(to, conn));
        let h = self.held.entry((to, conn)).or_insert_with(|| Held {
            inc,
            from,
            since: now,
            items: VecDeque::new(),
        });
        h.items.push_back(item);
        if fresh {
            let rto = self.link(from, to).retransmit_timeout;
            self.queue.push(now + rto, Ev::Retry { to, conn });
        }
    }

    /// The connection `conn` ends at `to`.
    fn disconnect(&mut self, to: NodeId, conn: ConnId, idle: bool) {
        let now = self.now;
        let removed = self
            .nodes
            .get_mut(&to)
            .is_some_and(|n| n.conns.remove(&conn).is_some());
        if !removed {
            return;
        }
        self.held.remove(&(to, conn));
        if idle {
            self.report.idle_closes += 1;
        }
        self.hash.u64(0x4449_5343 ^ to.0 ^ conn.0);
        self.trace_line(to, || {
            if idle {
                format!("{conn} timed out")
            } else {
                format!("peer closed {conn}")
            }
        });
        if let Some(net) = self.nodes.get_mut(&to).and_then(|n| n.net.as_mut()) {
            net.handle_disconnected(now, conn);
        }
        self.drain(to);
    }

    fn deliver(&mut self, to: NodeId, conn: ConnId, bytes: &[u8]) {
        self.report.frames_delivered += 1;
        let now = self.now;
        if let Some(net) = self.nodes.get_mut(&to).and_then(|n| n.net.as_mut()) {
            net.handle_frame(now, conn, bytes);
        }
        self.drain(to);
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
                    net.handle_timeout(now);
                    self.drain(node);
                }
            }
            Ev::ConnectReq {
                from,
                from_conn,
                from_inc,
                to,
            } => {
                let back = self.delay(to, from);
                let (Some(to_inc), false) = (self.alive_inc(to), self.cut(from, to)) else {
                    self.queue.push(
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
                                    dying: false,
                                },
                            );
                        }
                        // The ack is the first thing on the connection: frames
                        // the acceptor sends now queue behind it (FIFO).
                        self.queue.push(
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
                        self.queue.push(
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
                    let d = self.delay(to, peer);
                    self.queue.push(
                        now + d,
                        Ev::Disconnect {
                            to: peer,
                            from: to,
                            conn: peer_conn,
                            inc: peer_inc,
                            idle: false,
                        },
                    );
                    return;
                }
                if self.cut(to, peer) {
                    // The handshake's last flight met a partition: the
                    // dialler gives up at its timeout, and so does the
                    // side that accepted.
                    let at = now + self.config.connect_timeout;
                    self.queue.push(
                        at,
                        Ev::ConnectFail {
                            to,
                            conn,
                            inc,
                            err: OutgoingConnectionError::Unreachable,
                        },
                    );
                    self.queue.push(
                        at,
                        Ev::Disconnect {
                            to: peer,
                            from: peer,
                            conn: peer_conn,
                            inc: peer_inc,
                            idle: true,
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
                reliable,
                bytes,
            } => {
                let open = self.alive_inc(to) == Some(inc)
                    && self
                        .nodes
                        .get(&to)
                        .is_some_and(|n| n.conns.contains_key(&conn));
                if !open {
                    self.report.frames_undeliverable += 1;
                    return;
                }
                if self.cut(from, to) {
                    if reliable {
                        self.hold(to, conn, inc, from, HeldItem::Frame(bytes));
                    } else {
                        self.report.frames_partitioned += 1;
                        self.hash.u64(0x5041_5254);
                    }
                    return;
                }
                if reliable && self.held.contains_key(&(to, conn)) {
                    // Behind frames still held: keep the order.
                    self.hold(to, conn, inc, from, HeldItem::Frame(bytes));
                    return;
                }
                self.deliver(to, conn, &bytes);
            }
            Ev::Retry { to, conn } => {
                let Some(h) = self.held.get(&(to, conn)) else {
                    return;
                };
                let open = self.alive_inc(to) == Some(h.inc)
                    && self
                        .nodes
                        .get(&to)
                        .is_some_and(|n| n.conns.contains_key(&conn));
                if !open {
                    if let Some(h) = self.held.remove(&(to, conn)) {
                        self.report.frames_undeliverable += h.items.len() as u64;
                    }
                    return;
                }
                let from = h.from;
                if self.cut(from, to) {
                    if now - h.since >= self.config.idle_timeout {
                        self.held.remove(&(to, conn));
                        self.trace_line(to, || {
                            format!("partitioned past the idle timeout: {conn}")
                        });
                        self.link_dead(to, conn, Duration::ZERO);
                    } else {
                        let rto = self.link(from, to).retransmit_timeout;
                        self.queue.push(now + rto, Ev::Retry { to, conn });
                    }
                    return;
                }
                if let Some(h) = self.held.remove(&(to, conn)) {
                    for item in h.items {
                        if !self
                            .nodes
                            .get(&to)
                            .is_some_and(|n| n.conns.contains_key(&conn))
                        {
                            self.report.frames_undeliverable += 1;
                            continue;
                        }
                        match item {
                            HeldItem::Frame(bytes) => self.deliver(to, conn, &bytes),
                            HeldItem::Close => self.disconnect(to, conn, false),
                        }
                    }
                }
            }
            Ev::Disconnect {
                to,
                from,
                conn,
                inc,
                idle,
            } => {
                if self.alive_inc(to) != Some(inc) {
                    return;
                }
                if !idle && (self.cut(from, to) || self.held.contains_key(&(to, conn))) {
                    // A close travels like a reliable frame: behind what is
                    // held, and held itself at a partition.
                    self.hold(to, conn, inc, from, HeldItem::Close);
                    return;
                }
                self.disconnect(to, conn, idle);
            }
            Ev::IdleCheck {
                node,
                conn,
                inc,
                epoch,
            } => {
                if epoch != self.partition_epoch || self.alive_inc(node) != Some(inc) {
                    return;
                }
                let far = self
                    .nodes
                    .get(&node)
                    .and_then(|n| n.conns.get(&conn))
                    .map(|p| p.node);
                if far.is_some_and(|far| self.cut(node, far)) {
                    self.trace_line(node, || format!("{conn} partitioned past the idle timeout"));
                    self.link_dead(node, conn, Duration::ZERO);
                }
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
