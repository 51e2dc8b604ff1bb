//! The kv behaviour: client, coordinator, replica and repair in one.

use super::{
    closest, key_id, Ack, Clock, Config, Failure, KvError, KvStats, Merge, Message, OpKind, Record,
    Reply, Req, Resp, Sample, Store, WireRecord,
};
use crate::gossip::crdt::stable_hash;
use crate::gossip::{Hlc, HlcClock};
use crate::rpc::{CallError, CallId, Calls, Envelope};
use bytes::Bytes;
use plexus_network::{
    Answer, BehaviorAgent, DropReport, Incoming, Instant, NetworkBehavior, NoHandler, NodeId,
    RouteChange, RouteRule, SendOptions, ServiceId,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The TTL kv requests are sent with, so the receiver can count hops.
const KV_TTL: u8 = 32;
/// Largest batch of records or digest entries in one message (bytes, about).
const BATCH_BYTES: usize = 256 << 10;

const T_CALLS: u64 = 1;
const T_REPAIR: u64 = 2;
const T_SOON: u64 = 3;
const T_REPUBLISH: u64 = 4;
const T_HEDGE: u64 = 5;

type AppAnswer = Answer<Result<Reply, KvError>>;

/// What an open call is for.
#[derive(Debug)]
enum Ctx {
    /// The application's operation, sent to the key's coordinator.
    Client(u64),
    /// A coordinator's store or read at one replica, for operation `op`.
    Replica { op: u64, peer: NodeId },
    /// A repair digest to `peer`, whose confirmation is `hash`.
    Digest { peer: NodeId, hash: Option<u64> },
    /// Records pushed in repair; on success `peer` is in sync at `hash`.
    Push { synced: Option<(NodeId, u64)> },
    /// Records handed over to one member of their replica set.
    Handover { keys: Vec<String> },
    /// An owner's republish of `key` at `version`.
    Republish { key: String, version: Hlc },
}

/// An application's operation: retried on a timeout or a lost route
/// until its deadline (writes carry their version, so a retry is the
/// same write).
#[derive(Debug)]
struct ClientOp {
    answer: AppAnswer,
    /// Attempts sent and not yet ended.
    open: usize,
    /// When the next hedge (a get's extra attempt) is due.
    hedge_at: Option<Instant>,
    op: OpKind,
    req: Req,
    key: NodeId,
    asked: Instant,
    deadline: Instant,
    attempt: usize,
    /// The router's path to the coordinator when asked (for samples).
    path: Option<u8>,
}

#[derive(Debug)]
struct Op {
    from: NodeId,
    call: CallId,
    key: String,
    pending: usize,
    state: OpState,
}

#[derive(Debug)]
enum OpState {
    Write {
        version: Hlc,
        held: usize,
        needed: usize,
        answered: bool,
    },
    Read {
        quorum: bool,
        heard: usize,
        needed: usize,
        best: Option<Record>,
        /// Replicas asked.
        asked: usize,
        /// Replicas that answered, with the version they hold.
        answers: Vec<(NodeId, Option<Hlc>)>,
        answered: bool,
        hops: u8,
        in_set: bool,
    },
}

#[derive(Debug)]
struct Published {
    value: Bytes,
    version: Hlc,
    ttl: Duration,
}

#[derive(Debug)]
struct Handover {
    version: Hlc,
    remaining: usize,
    failed: bool,
}

/// The kv behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    store: Store,
    clock: HlcClock,
    offset_ms: i64,
    local: NodeId,
    /// Nodes the router reaches, with their hop count.
    known: BTreeMap<NodeId, u8>,
    /// `known` and this node: where replicas are chosen.
    nodes: BTreeSet<NodeId>,
    calls: Calls<Ctx>,
    armed: Option<Instant>,
    ops: BTreeMap<u64, Op>,
    next_op: u64,
    /// Per peer, the digest it last confirmed.
    synced: BTreeMap<NodeId, u64>,
    handovers: BTreeMap<String, Handover>,
    published: BTreeMap<String, Published>,
    republish_due: BTreeSet<(Instant, String)>,
    republish_armed: Option<Instant>,
    repair_soon: bool,
    samples: VecDeque<Sample>,
    clients: BTreeMap<u64, ClientOp>,
    next_client: u64,
    hedges: BTreeSet<(Instant, u64)>,
    hedge_armed: Option<Instant>,
    /// Smoothed get latency and its deviation, µs (RFC 6298's estimator).
    srtt: Option<(f64, f64)>,
    stats: KvStats,
}

impl Behaviour {
    /// A kv behaviour with these settings.
    pub fn new(config: Config) -> Self {
        Behaviour {
            store: Store::new(config.max_records, config.max_bytes),
            clock: HlcClock::new(NodeId(0), 60_000),
            calls: Calls::new(config.limits, 0),
            config,
            offset_ms: 0,
            local: NodeId(0),
            known: BTreeMap::new(),
            nodes: BTreeSet::new(),
            armed: None,
            ops: BTreeMap::new(),
            next_op: 0,
            synced: BTreeMap::new(),
            handovers: BTreeMap::new(),
            published: BTreeMap::new(),
            republish_due: BTreeSet::new(),
            republish_armed: None,
            repair_soon: false,
            samples: VecDeque::new(),
            clients: BTreeMap::new(),
            next_client: 0,
            hedges: BTreeSet::new(),
            hedge_armed: None,
            srtt: None,
            stats: KvStats::default(),
        }
    }

    /// The records this node holds.
    pub fn store(&self) -> &Store {
        &self.store
    }

    #[cfg(test)]
    pub(crate) fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The nodes this node knows (its router reaches), itself included.
    pub fn nodes(&self) -> &BTreeSet<NodeId> {
        &self.nodes
    }

    /// Hops to a known node, as the router last announced.
    pub fn hops_to(&self, node: NodeId) -> Option<u8> {
        self.known.get(&node).copied()
    }

    /// The replica set of `key` as this node sees it.
    pub fn replicas_of(&self, key: &str) -> Vec<NodeId> {
        closest(&self.nodes, key_id(key), self.config.replicas)
    }

    /// Counters.
    pub fn stats(&self) -> KvStats {
        let mut s = self.stats;
        s.records = self.store.len() as u64;
        s.tombstones = self.store.tombstones() as u64;
        s.bytes = self.store.bytes() as u64;
        s.known_nodes = self.known.len() as u64;
        s.calls = self.calls.stats();
        s
    }

    /// The samples kept since the last call (see `Config::with_samples`).
    pub fn take_samples(&mut self) -> Vec<Sample> {
        self.samples.drain(..).collect()
    }

    fn now_ms(&self, now: Instant) -> u64 {
        Clock::physical_ms(self.offset_ms, now)
    }

    fn opts() -> SendOptions {
        SendOptions::reliable().with_ttl(KV_TTL)
    }

    fn hops(msg: &Incoming<Message>) -> u8 {
        match msg.conn {
            None => 0,
            Some(_) => KV_TTL.saturating_sub(msg.ttl).saturating_add(1),
        }
    }

    fn respond(agent: &mut BehaviorAgent<'_, Self>, to: NodeId, id: CallId, resp: Resp) {
        agent.send_with(
            RouteRule::Node(to),
            Envelope::Response {
                id,
                result: Ok(resp),
            },
            Self::opts(),
        );
    }

    /// Opens a call and sends `req`; a call that cannot open fails at once.
    fn call(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        rule: RouteRule,
        req: Req,
        timeout: Duration,
        ctx: Ctx,
    ) {
        match self.calls.start(agent.now(), rule, timeout, ctx) {
            Ok(id) => {
                agent.send_with(rule, Envelope::Request { id, body: req }, Self::opts());
            }
            Err((e, ctx)) => self.failed(agent, ctx, e),
        }
        self.arm(agent);
    }

    fn arm(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let next = self.calls.next_deadline();
        if next != self.armed {
            match next {
                Some(at) => agent.schedule_at(at, T_CALLS),
                None => agent.cancel_timer(T_CALLS),
            }
            self.armed = next;
        }
        let next = self.hedges.first().map(|(at, _)| *at);
        if next != self.hedge_armed {
            match next {
                Some(at) => agent.schedule_at(at, T_HEDGE),
                None => agent.cancel_timer(T_HEDGE),
            }
            self.hedge_armed = next;
        }
        let next = self.republish_due.first().map(|(at, _)| *at);
        if next != self.republish_armed {
            match next {
                Some(at) => agent.schedule_at(at, T_REPUBLISH),
                None => agent.cancel_timer(T_REPUBLISH),
            }
            self.republish_armed = next;
        }
    }

    fn sample(&mut self, now: Instant, c: &ClientOp, ok: bool, hops: Option<u8>) {
        if self.config.max_samples == 0 {
            return;
        }
        if self.samples.len() >= self.config.max_samples {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            op: c.op,
            ok,
            latency: now.saturating_duration_since(c.asked),
            hops,
            path: c.path,
        });
    }

    /// Sends (or resends) an application's operation: first to the key's
    /// closest node; a get's further attempts go to the next replicas in
    /// turn (any holder can answer it), a write's to the closest again (by
    /// then the router may have found a new one). A get is hedged: if no
    /// answer came within [`hedge_delay`](Self::hedge_delay), the next
    /// replica is asked too, and the first answer wins.
    fn send_client(&mut self, agent: &mut BehaviorAgent<'_, Self>, cid: u64) {
        let now = agent.now();
        let hedge = self.hedge_delay();
        let replicas = self.config.replicas;
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        let rule = match (c.op, c.attempt) {
            (_, 0) | (OpKind::Put | OpKind::Delete, _) => RouteRule::Closest(c.key),
            (OpKind::Get, n) => {
                let set = closest(&self.nodes, c.key, replicas);
                match set.get(n % set.len().max(1)) {
                    Some(node) => RouteRule::Node(*node),
                    None => RouteRule::Closest(c.key),
                }
            }
        };
        c.open += 1;
        if let Some(at) = c.hedge_at.take() {
            self.hedges.remove(&(at, cid));
        }
        if c.op == OpKind::Get && c.attempt + 1 < replicas && now + hedge < c.deadline {
            c.hedge_at = Some(now + hedge);
            self.hedges.insert((now + hedge, cid));
        }
        let left = c.deadline.saturating_duration_since(now);
        let timeout = left.min(self.config.attempt_timeout);
        let req = c.req.clone();
        self.call(agent, rule, req, timeout, Ctx::Client(cid));
    }

    /// How long a get waits before it also asks the next replica: the
    /// smoothed get latency plus four deviations (at least 5 ms), or a
    /// quarter of the attempt timeout before any get has been measured.
    fn hedge_delay(&self) -> Duration {
        let cap = self.config.attempt_timeout / 2;
        match self.srtt {
            Some((srtt, var)) => Duration::from_micros((srtt + 4.0 * var) as u64)
                .max(Duration::from_millis(5))
                .min(cap),
            None => self.config.attempt_timeout / 4,
        }
    }

    fn measured(&mut self, latency: Duration) {
        let r = latency.as_micros() as f64;
        self.srtt = Some(match self.srtt {
            None => (r, r / 2.0),
            Some((srtt, var)) => (
                0.875 * srtt + 0.125 * r,
                0.75 * var + 0.25 * (srtt - r).abs(),
            ),
        });
    }

    /// Takes an application's operation out of the table (it is ending).
    fn end_client(&mut self, cid: u64) -> Option<ClientOp> {
        let c = self.clients.remove(&cid)?;
        if let Some(at) = c.hedge_at {
            self.hedges.remove(&(at, cid));
        }
        Some(c)
    }

    fn hedge(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now = agent.now();
        while let Some(&(at, cid)) = self.hedges.first() {
            if at > now {
                break;
            }
            self.hedges.remove(&(at, cid));
            if let Some(c) = self.clients.get_mut(&cid) {
                c.hedge_at = None;
                c.attempt += 1;
                self.send_client(agent, cid);
            }
        }
    }

    // ---- the application's side --------------------------------------

    fn client(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: super::Request,
        answer: AppAnswer,
    ) {
        let now = agent.now();
        let (key, body, op) = match req {
            super::Request::Put { key, value, ttl } => {
                if value.len() > self.config.max_value_bytes {
                    let e = KvError::TooLarge {
                        len: value.len(),
                        max: self.config.max_value_bytes,
                    };
                    agent.answer(answer, Err(e));
                    return;
                }
                let version = self.clock.stamp(self.now_ms(now));
                if let Some(ttl) = ttl {
                    if !self.published.contains_key(&key)
                        && self.published.len() >= self.config.max_published
                    {
                        agent.answer(answer, Err(KvError::TooManyPublished(self.published.len())));
                        return;
                    }
                    self.publish(now, &key, value.clone(), version, ttl);
                } else {
                    self.unpublish(&key);
                }
                let record = WireRecord {
                    value: Some(value),
                    version,
                    ttl_ms: ttl.map(|t| t.as_millis() as u64),
                };
                (key.clone(), Req::Put { key, record }, OpKind::Put)
            }
            super::Request::Delete { key } => {
                let version = self.clock.stamp(self.now_ms(now));
                self.unpublish(&key);
                let record = WireRecord {
                    value: None,
                    version,
                    ttl_ms: Some(self.config.tombstone_ttl.as_millis() as u64),
                };
                (key.clone(), Req::Put { key, record }, OpKind::Delete)
            }
            super::Request::Stats => {
                agent.answer(answer, Ok(Reply::Stats(self.stats())));
                return;
            }
            super::Request::Get { key, quorum } => {
                (key.clone(), Req::Get { key, quorum }, OpKind::Get)
            }
        };
        let key = key_id(&key);
        let path = match op {
            OpKind::Get if self.config.max_samples > 0 => closest(&self.nodes, key, 1)
                .first()
                .map(|c| self.known.get(c).copied().unwrap_or(0)),
            _ => None,
        };
        let c = ClientOp {
            answer,
            open: 0,
            hedge_at: None,
            op,
            req: body,
            key,
            asked: now,
            deadline: now + self.config.op_timeout,
            attempt: 0,
            path,
        };
        let cid = self.next_client;
        self.next_client += 1;
        self.clients.insert(cid, c);
        self.send_client(agent, cid);
    }

    /// How often an owner republishes a record of this TTL (at least once a
    /// second, so a tiny TTL cannot spin the node).
    fn republish_every(ttl: Duration, fraction: f64) -> Duration {
        ttl.mul_f64(fraction).max(Duration::from_secs(1))
    }

    /// A write of `key` at `version` found `held` at the coordinator: if
    /// newer, someone else wrote (or deleted) the key since, and this
    /// node's republishing of it stops.
    fn superseded(&mut self, key: &str, version: Hlc, held: Hlc) {
        if held > version
            && self
                .published
                .get(key)
                .is_some_and(|p| p.version == version)
        {
            log::debug!(
                "node {}: kv {key} superseded by {held:?}; no longer republished",
                self.local
            );
            self.unpublish(key);
        }
    }

    fn publish(&mut self, now: Instant, key: &str, value: Bytes, version: Hlc, ttl: Duration) {
        self.unpublish(key);
        let at = now + Self::republish_every(ttl, self.config.republish_fraction);
        self.republish_due.insert((at, key.to_owned()));
        self.published.insert(
            key.to_owned(),
            Published {
                value,
                version,
                ttl,
            },
        );
    }

    fn unpublish(&mut self, key: &str) {
        if self.published.remove(key).is_some() {
            self.republish_due.retain(|(_, k)| k != key);
        }
    }

    fn republish(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now = agent.now();
        while let Some((at, key)) = self.republish_due.first().cloned() {
            if at > now {
                break;
            }
            self.republish_due.remove(&(at, key.clone()));
            let Some(p) = self.published.get(&key) else {
                continue;
            };
            let record = WireRecord {
                value: Some(p.value.clone()),
                version: p.version,
                ttl_ms: Some(p.ttl.as_millis() as u64),
            };
            let version = p.version;
            let next = now + Self::republish_every(p.ttl, self.config.republish_fraction);
            self.republish_due.insert((next, key.clone()));
            self.stats.republished += 1;
            let rule = RouteRule::Closest(key_id(&key));
            let timeout = self.config.op_timeout;
            let ctx = Ctx::Republish {
                key: key.clone(),
                version,
            };
            self.call(agent, rule, Req::Put { key, record }, timeout, ctx);
        }
    }

    // ---- the coordinator's side --------------------------------------

    /// The other members of `key`'s replica set, and whether this node is
    /// one.
    fn others(&self, key: &str) -> (Vec<NodeId>, bool) {
        let mut set = closest(&self.nodes, key_id(key), self.config.replicas);
        let len = set.len();
        set.retain(|n| *n != self.local);
        let in_set = set.len() < len;
        (set, in_set)
    }

    fn coordinate_put(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: NodeId,
        call: CallId,
        key: String,
        record: WireRecord,
    ) {
        self.stats.coordinated_writes += 1;
        let now = agent.now();
        if let Some(v) = &record.value {
            if v.len() > self.config.max_value_bytes {
                let f = Failure::TooLarge {
                    len: v.len() as u64,
                    max: self.config.max_value_bytes as u64,
                };
                Self::respond(agent, from, call, Resp::Put(Err(f)));
                return;
            }
        }
        let version = record.version;
        self.clock.observe(version, self.now_ms(now));
        if self
            .store
            .merge(&key, Record::from_wire(record.clone(), now))
            == Merge::Full
        {
            self.stats.refused_full += 1;
            Self::respond(agent, from, call, Resp::Put(Err(Failure::Full)));
            return;
        }
        // The version held here now: this write's, or a newer one that
        // superseded it (the caller learns it, and an owner stops
        // republishing a superseded record).
        let version = self
            .store
            .get(&key)
            .map_or(version, |r| r.version.max(version));
        // This node counts towards the quorum only if it is a replica.
        let (others, in_set) = self.others(&key);
        let held = usize::from(in_set);
        let needed = self.config.write_quorum.min(others.len() + held).max(1);
        if held >= needed {
            Self::respond(agent, from, call, Resp::Put(Ok((version, held as u8))));
            if others.is_empty() {
                return;
            }
        }
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            op,
            Op {
                from,
                call,
                key: key.clone(),
                pending: others.len(),
                state: OpState::Write {
                    version,
                    held,
                    needed,
                    answered: held >= needed,
                },
            },
        );
        let timeout = self.config.replica_timeout;
        let wire = Record::from_wire(record, now).to_wire(now);
        for peer in others {
            let req = Req::Store(vec![(key.clone(), wire.clone())]);
            self.call(
                agent,
                RouteRule::Node(peer),
                req,
                timeout,
                Ctx::Replica { op, peer },
            );
        }
    }

    fn coordinate_get(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: NodeId,
        call: CallId,
        key: String,
        quorum: bool,
        hops: u8,
    ) {
        self.stats.coordinated_reads += 1;
        let now = agent.now();
        let local = self.store.live(&key, now).cloned();
        let (others, in_set) = self.others(&key);
        if others.is_empty() || (!quorum && local.is_some()) {
            let found = local.and_then(|r| r.value.map(|v| (v, r.version)));
            Self::respond(agent, from, call, Resp::Get { found, hops });
            return;
        }
        if local.is_none() {
            self.stats.reads_forwarded += 1;
        }
        let needed = if quorum {
            self.config.read_quorum.min(others.len() + 1)
        } else {
            1
        };
        let op = self.next_op;
        self.next_op += 1;
        let heard = usize::from(quorum && in_set);
        self.ops.insert(
            op,
            Op {
                from,
                call,
                key: key.clone(),
                pending: others.len(),
                state: OpState::Read {
                    quorum,
                    heard,
                    needed,
                    best: local,
                    asked: others.len(),
                    answers: Vec::new(),
                    answered: false,
                    hops: if quorum { hops } else { hops.saturating_add(1) },
                    in_set,
                },
            },
        );
        let timeout = self.config.replica_timeout;
        for peer in others {
            let req = Req::Read(key.clone());
            self.call(
                agent,
                RouteRule::Node(peer),
                req,
                timeout,
                Ctx::Replica { op, peer },
            );
        }
    }

    /// A replica answered (`Some`) or failed (`None`) for operation `op`.
    fn replica_done(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        op_id: u64,
        peer: NodeId,
        resp: Option<Resp>,
    ) {
        let now = agent.now();
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        op.pending -= 1;
        let (from, call) = (op.from, op.call);
        match &mut op.state {
            OpState::Write {
                version,
                held,
                needed,
                answered,
            } => {
                if let Some(Resp::Stored(acks)) = &resp {
                    if matches!(acks.first(), Some(Ack::Held | Ack::Newer)) {
                        *held += 1;
                    }
                }
                if !*answered && *held >= *needed {
                    *answered = true;
                    let r = Resp::Put(Ok((*version, *held as u8)));
                    Self::respond(agent, from, call, r);
                } else if !*answered && op.pending == 0 {
                    *answered = true;
                    let f = Failure::NotEnoughReplicas {
                        stored: *held as u8,
                        needed: *needed as u8,
                    };
                    Self::respond(agent, from, call, Resp::Put(Err(f)));
                }
            }
            OpState::Read {
                quorum,
                heard,
                needed,
                best,
                asked,
                answers,
                answered,
                hops,
                ..
            } => {
                if let Some(Resp::Read(rec)) = resp {
                    *heard += 1;
                    let rec = rec.map(|w| Record::from_wire(w, now));
                    answers.push((peer, rec.as_ref().map(|r| r.version)));
                    if let Some(r) = rec {
                        if best.as_ref().is_none_or(|b| r.version > b.version) {
                            *best = Some(r);
                        }
                    }
                }
                let all_in = op.pending == 0;
                // "Not found" needs every other replica to say so: one
                // that could not be asked may hold it.
                let ready = if *quorum {
                    *heard >= *needed
                } else {
                    best.is_some() || (all_in && answers.len() == *asked)
                };
                if !*answered && ready {
                    *answered = true;
                    let found = best
                        .as_ref()
                        .and_then(|r| r.value.clone().map(|v| (v, r.version)));
                    let hops = *hops;
                    Self::respond(agent, from, call, Resp::Get { found, hops });
                } else if !*answered && all_in {
                    *answered = true;
                    Self::respond(agent, from, call, Resp::Unavailable);
                }
            }
        }
        if op.pending == 0 {
            let op = self.ops.remove(&op_id).expect("present");
            if let OpState::Read {
                best: Some(best),
                answers,
                in_set,
                ..
            } = op.state
            {
                self.read_repair(agent, &op.key, best, answers, in_set);
            }
        }
    }

    /// After a read: every replica that answered older or empty, and this
    /// node if it is one, gets the newest record.
    fn read_repair(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        key: &str,
        best: Record,
        answers: Vec<(NodeId, Option<Hlc>)>,
        in_set: bool,
    ) {
        let now = agent.now();
        if best.expires.is_some_and(|e| e <= now) {
            return;
        }
        if in_set && self.store.merge(key, best.clone()) == Merge::Stored {
            self.stats.read_repairs += 1;
        }
        let wire = best.to_wire(now);
        for (peer, v) in answers {
            if v.is_none_or(|v| v < best.version) {
                self.stats.read_repairs += 1;
                let req = Req::Store(vec![(key.to_owned(), wire.clone())]);
                let timeout = self.config.replica_timeout;
                self.call(
                    agent,
                    RouteRule::Node(peer),
                    req,
                    timeout,
                    Ctx::Push { synced: None },
                );
            }
        }
    }

    // ---- the replica's side ------------------------------------------

    fn store_records(&mut self, now: Instant, records: Vec<(String, WireRecord)>) -> Vec<Ack> {
        let now_ms = self.now_ms(now);
        let max = self.config.max_value_bytes;
        records
            .into_iter()
            .map(|(key, w)| {
                if w.value.as_ref().is_some_and(|v| v.len() > max) {
                    self.stats.refused_full += 1;
                    return Ack::Full;
                }
                self.clock.observe(w.version, now_ms);
                match self.store.merge(&key, Record::from_wire(w, now)) {
                    Merge::Stored | Merge::Same => Ack::Held,
                    Merge::Older => Ack::Newer,
                    Merge::Full => {
                        self.stats.refused_full += 1;
                        Ack::Full
                    }
                }
            })
            .collect()
    }

    fn on_digest(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: NodeId,
        call: CallId,
        entries: Vec<(NodeId, Hlc)>,
    ) {
        let now = agent.now();
        let mut want = Vec::new();
        let mut back = Vec::new();
        for (id, version) in entries {
            let mine = self
                .store
                .keys_of(id)
                .filter_map(|k| self.store.get(k).map(|r| (k, r)))
                .max_by_key(|(_, r)| r.version);
            match mine {
                None => want.push(id),
                Some((_, r)) if r.version < version => want.push(id),
                Some((k, r)) if r.version > version => back.push((k.clone(), r.to_wire(now))),
                Some(_) => {}
            }
        }
        Self::respond(agent, from, call, Resp::Want(want));
        self.push(agent, from, back, None);
    }

    /// Sends `records` to `peer` in batches.
    fn push(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        peer: NodeId,
        records: Vec<(String, WireRecord)>,
        synced: Option<u64>,
    ) {
        if records.is_empty() {
            if let Some(h) = synced {
                self.synced.insert(peer, h);
            }
            return;
        }
        let batches = batch(records, |(k, r)| {
            k.len() + r.value.as_ref().map_or(0, |v| v.len()) + 32
        });
        let single = batches.len() == 1;
        for b in batches {
            self.stats.records_repaired += b.len() as u64;
            self.stats.repair_bytes += b
                .iter()
                .map(|(k, r)| k.len() + r.value.as_ref().map_or(0, |v| v.len()) + 32)
                .sum::<usize>() as u64;
            let ctx = Ctx::Push {
                synced: synced.filter(|_| single).map(|h| (peer, h)),
            };
            let timeout = self.config.replica_timeout;
            self.call(agent, RouteRule::Node(peer), Req::Store(b), timeout, ctx);
        }
    }

    // ---- repair -------------------------------------------------------

    fn repair(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now = agent.now();
        self.stats.repair_passes += 1;
        self.stats.expired += self.store.expire(now) as u64;
        if self.stats.repair_passes % u64::from(self.config.full_sync_every.max(1)) == 0 {
            self.synced.clear();
        }
        let k = self.config.replicas;
        let mut shared: BTreeMap<NodeId, Vec<(NodeId, Hlc)>> = BTreeMap::new();
        let mut hand: BTreeMap<NodeId, Vec<(String, WireRecord)>> = BTreeMap::new();
        let mut handing = Vec::new();
        for (key, rec) in self.store.iter() {
            let id = key_id(key);
            let set = closest(&self.nodes, id, k);
            if set.contains(&self.local) {
                for m in set.into_iter().filter(|m| *m != self.local) {
                    shared.entry(m).or_default().push((id, rec.version));
                }
            } else if !self.handovers.contains_key(key) && !set.is_empty() {
                handing.push((key.clone(), rec.version, set.len()));
                for m in set {
                    hand.entry(m)
                        .or_default()
                        .push((key.clone(), rec.to_wire(now)));
                }
            }
        }
        for (key, version, remaining) in handing {
            self.handovers.insert(
                key,
                Handover {
                    version,
                    remaining,
                    failed: false,
                },
            );
        }
        self.synced.retain(|peer, _| shared.contains_key(peer));
        let timeout = self.config.replica_timeout;
        for (peer, mut entries) in shared {
            entries.sort_unstable();
            let hash = stable_hash(&entries);
            if self.synced.get(&peer) == Some(&hash) {
                continue;
            }
            let batches = batch(entries, |_| 24);
            let single = batches.len() == 1;
            for b in batches {
                self.stats.digests_sent += 1;
                self.stats.repair_bytes += 24 * b.len() as u64;
                let ctx = Ctx::Digest {
                    peer,
                    hash: single.then_some(hash),
                };
                self.call(agent, RouteRule::Node(peer), Req::Digest(b), timeout, ctx);
            }
        }
        for (peer, records) in hand {
            for b in batch(records, |(k, r)| {
                k.len() + r.value.as_ref().map_or(0, |v| v.len()) + 32
            }) {
                self.stats.repair_bytes += b
                    .iter()
                    .map(|(k, r)| k.len() + r.value.as_ref().map_or(0, |v| v.len()) + 32)
                    .sum::<usize>() as u64;
                let keys = b.iter().map(|(k, _)| k.clone()).collect();
                self.call(
                    agent,
                    RouteRule::Node(peer),
                    Req::Store(b),
                    timeout,
                    Ctx::Handover { keys },
                );
            }
        }
    }

    fn handover_done(&mut self, keys: Vec<String>, acks: Option<&[Ack]>) {
        for (i, key) in keys.into_iter().enumerate() {
            let ok = acks.is_some_and(|a| matches!(a.get(i), Some(Ack::Held | Ack::Newer)));
            let Some(h) = self.handovers.get_mut(&key) else {
                continue;
            };
            h.remaining = h.remaining.saturating_sub(1);
            h.failed |= !ok;
            if h.remaining > 0 {
                continue;
            }
            let h = self.handovers.remove(&key).expect("present");
            let still_out =
                !closest(&self.nodes, key_id(&key), self.config.replicas).contains(&self.local);
            let same = self.store.get(&key).is_some_and(|r| r.version == h.version);
            if !h.failed && still_out && same {
                self.store.remove(&key);
                self.stats.handed_over += 1;
            }
        }
    }

    // ---- answers and failures ------------------------------------------

    fn answered(&mut self, agent: &mut BehaviorAgent<'_, Self>, ctx: Ctx, resp: Resp) {
        let now = agent.now();
        match ctx {
            Ctx::Client(cid) if resp == Resp::Unavailable => {
                // The coordinator could reach no holder: like a lost
                // attempt, try the next replica.
                self.failed_as(agent, Ctx::Client(cid), KvError::Unavailable, true);
            }
            Ctx::Client(cid)
                if matches!(resp, Resp::Put(Err(Failure::NotEnoughReplicas { .. }))) =>
            {
                // Replicas the coordinator still believed alive did not
                // answer (churn): the write is retried, the same version,
                // once the routes have caught up.
                let Resp::Put(Err(f)) = resp else {
                    unreachable!("matched above")
                };
                self.failed_as(agent, Ctx::Client(cid), KvError::from(f), true);
            }
            Ctx::Client(cid) => {
                let Some(c) = self.end_client(cid) else {
                    // Another attempt (a hedge) answered first.
                    return;
                };
                let own = match &c.req {
                    Req::Put { key, record } => Some((key.clone(), record.version)),
                    _ => None,
                };
                let (result, hops) = match resp {
                    Resp::Put(Ok((held, replicas))) => {
                        let version = own.as_ref().map_or(held, |(_, v)| *v);
                        if let Some((key, own)) = &own {
                            self.superseded(key, *own, held);
                        }
                        let newer = (held > version).then_some(held);
                        let w = Reply::Written {
                            version,
                            newer,
                            replicas,
                        };
                        (Ok(w), None)
                    }
                    Resp::Put(Err(f)) => (Err(KvError::from(f)), None),
                    Resp::Get { found, hops } => (
                        Ok(match found {
                            Some((value, version)) => Reply::Found { value, version },
                            None => Reply::NotFound,
                        }),
                        Some(hops),
                    ),
                    other => (
                        Err(KvError::Call(CallError::Refused(format!(
                            "unexpected answer {other:?}"
                        )))),
                        None,
                    ),
                };
                // Karn's rule: only a get answered at its first attempt, with
                // no hedge out, measures the latency (a slow retried one
                // would inflate the delay every later get hedges after).
                if c.op == OpKind::Get && result.is_ok() && c.attempt == 0 {
                    self.measured(now.saturating_duration_since(c.asked));
                }
                self.sample(now, &c, result.is_ok(), hops);
                agent.answer(c.answer, result);
            }
            Ctx::Replica { op, peer } => self.replica_done(agent, op, peer, Some(resp)),
            Ctx::Digest { peer, hash } => {
                if let Resp::Want(ids) = resp {
                    let records: Vec<(String, WireRecord)> = ids
                        .into_iter()
                        .flat_map(|id| self.store.keys_of(id).cloned().collect::<Vec<_>>())
                        .filter_map(|k| {
                            self.store
                                .live(&k, now)
                                .map(|r| (k.clone(), r.to_wire(now)))
                        })
                        .collect();
                    self.push(agent, peer, records, hash);
                }
            }
            Ctx::Push { synced } => {
                if let (Some((peer, hash)), Resp::Stored(acks)) = (synced, &resp) {
                    if acks.iter().all(|a| *a != Ack::Full) {
                        self.synced.insert(peer, hash);
                    }
                }
            }
            Ctx::Handover { keys } => match resp {
                Resp::Stored(acks) => self.handover_done(keys, Some(&acks)),
                _ => self.handover_done(keys, None),
            },
            Ctx::Republish { key, version } => {
                if let Resp::Put(Ok((held, _))) = resp {
                    self.superseded(&key, version, held);
                }
            }
        }
    }

    fn failed(&mut self, agent: &mut BehaviorAgent<'_, Self>, ctx: Ctx, e: CallError) {
        let again = matches!(
            e,
            CallError::Timeout(_) | CallError::NoRoute(_) | CallError::RemoteBusy
        );
        self.failed_as(agent, ctx, KvError::Call(e), again)
    }

    /// A call ended without a usable answer: `e`, retried if `again`.
    fn failed_as(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        ctx: Ctx,
        e: KvError,
        again: bool,
    ) {
        let now = agent.now();
        match ctx {
            Ctx::Client(cid) => {
                let Some(c) = self.clients.get_mut(&cid) else {
                    return;
                };
                c.open -= 1;
                if c.open > 0 {
                    // Another attempt is still out: it may answer.
                    return;
                }
                if again && now < c.deadline {
                    log::debug!(
                        "node {}: kv {:?} of {} attempt {} failed ({e}); retrying",
                        self.local,
                        c.op,
                        c.key,
                        c.attempt
                    );
                    // By timer, never in the input that failed: a drop is
                    // reported in the input that sent, and a retry there
                    // could be dropped again at once, and again.
                    let delay = match e {
                        KvError::Call(CallError::Timeout(_)) => Duration::ZERO,
                        _ => Duration::from_millis(20),
                    };
                    if let Some(at) = c.hedge_at.take() {
                        self.hedges.remove(&(at, cid));
                    }
                    let at = now + delay;
                    c.hedge_at = Some(at);
                    self.hedges.insert((at, cid));
                } else {
                    let c = self.end_client(cid).expect("present");
                    self.sample(now, &c, false, None);
                    let e = match e {
                        KvError::Call(CallError::Timeout(_)) => KvError::Call(CallError::Timeout(
                            now.saturating_duration_since(c.asked),
                        )),
                        e => e,
                    };
                    agent.answer(c.answer, Err(e));
                }
            }
            Ctx::Replica { op, peer } => {
                log::debug!("node {}: kv replica {peer}: {e}", self.local);
                self.replica_done(agent, op, peer, None);
            }
            Ctx::Handover { keys } => self.handover_done(keys, None),
            Ctx::Digest { peer, .. }
            | Ctx::Push {
                synced: Some((peer, _)),
            } => {
                log::debug!("node {}: kv repair with {peer}: {e}", self.local);
            }
            Ctx::Push { synced: None } | Ctx::Republish { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: NodeId,
        id: CallId,
        hops: u8,
        req: Req,
    ) {
        let now = agent.now();
        match req {
            Req::Put { key, record } => self.coordinate_put(agent, from, id, key, record),
            Req::Get { key, quorum } => self.coordinate_get(agent, from, id, key, quorum, hops),
            Req::Store(records) => {
                let acks = self.store_records(now, records);
                Self::respond(agent, from, id, Resp::Stored(acks));
            }
            Req::Read(key) => {
                let rec = self.store.live(&key, now).map(|r| r.to_wire(now));
                Self::respond(agent, from, id, Resp::Read(rec));
            }
            Req::Digest(entries) => self.on_digest(agent, from, id, entries),
        }
    }

    fn known_changed(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        if !self.repair_soon {
            self.repair_soon = true;
            agent.schedule_after(self.config.repair_delay, T_SOON);
        }
    }
}

/// Splits `items` into batches of about [`BATCH_BYTES`] by `size`.
fn batch<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for it in items {
        let s = size(&it);
        if !cur.is_empty() && bytes + s > BATCH_BYTES {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += s;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl NetworkBehavior for Behaviour {
    type Msg = Message;
    type Handler = NoHandler<Message>;
    type Event = ();
    type Rpc = (super::Request, Result<Reply, KvError>);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        self.local = agent.local_node();
        self.nodes.insert(self.local);
        self.offset_ms = self.config.clock.offset_ms(agent.now());
        self.clock = HlcClock::new(self.local, 60_000);
        self.calls = Calls::new(self.config.limits, agent.rng().next_u64());
        let first = self.config.repair_interval.mul_f64(agent.rng().next_f64());
        agent.schedule_after(first, T_REPAIR);
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: super::Request,
        answer: AppAnswer,
    ) {
        self.client(agent, req, answer);
        self.arm(agent);
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Message>) {
        let hops = Self::hops(&msg);
        let from = msg.source;
        match msg.msg {
            Envelope::Request { id, body } => self.on_request(agent, from, id, hops, body),
            Envelope::Response { id, result } => match self.calls.answer(id, from, agent.now()) {
                Some(f) => match result {
                    Ok(resp) => self.answered(agent, f.ctx, resp),
                    Err(fault) => self.failed(agent, f.ctx, CallError::from(fault)),
                },
                None => log::debug!(
                    "node {}: kv answer to call {id} from {from} after the call ended; discarded",
                    self.local
                ),
            },
        }
        self.arm(agent);
    }

    fn on_dropped(&mut self, agent: &mut BehaviorAgent<'_, Self>, report: &DropReport) {
        if let Some(f) = self.calls.dropped(report.rule, agent.now()) {
            self.failed(agent, f.ctx, CallError::NoRoute(report.reason));
            self.arm(agent);
        }
    }

    fn on_route_changed(&mut self, agent: &mut BehaviorAgent<'_, Self>, change: &RouteChange) {
        let changed = match change.hops {
            Some(h) => self.known.insert(change.dest, h).is_none(),
            None => self.known.remove(&change.dest).is_some(),
        };
        if changed {
            if change.hops.is_some() {
                self.nodes.insert(change.dest);
            } else {
                self.nodes.remove(&change.dest);
                self.synced.remove(&change.dest);
            }
            self.known_changed(agent);
        }
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        match token {
            T_CALLS => {
                self.armed = None;
                for f in self.calls.expire(agent.now()) {
                    let e = CallError::Timeout(f.elapsed);
                    self.failed(agent, f.ctx, e);
                }
            }
            T_REPAIR => {
                self.repair(agent);
                agent.schedule_after(self.config.repair_interval, T_REPAIR);
            }
            T_SOON => {
                self.repair_soon = false;
                self.repair(agent);
            }
            T_HEDGE => {
                self.hedge_armed = None;
                self.hedge(agent);
            }
            T_REPUBLISH => {
                self.republish_armed = None;
                self.republish(agent);
            }
            _ => {}
        }
        self.arm(agent);
    }
}
