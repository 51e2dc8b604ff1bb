//! The gossip behaviour: the store, a Plumtree for updates, and the
//! anti-entropy rounds.

use super::crdt::{Crdt, HlcClock, Origin, Replica};
use super::store::{bucket_of, Delta, Entry, Store, StoreError, BUCKETS};
use super::{Clock, Config, Event, GossipStats, Message, Request, Response};
use crate::broadcast::plumtree::{Action, MsgId, Plumtree, TreeMsg};
use crate::neighbourhood::{Change, Neighbourhood};
use plexus_network::{
    Answer, BehaviorAgent, ConnId, ConnectionInfo, DropReason, DropReport, Incoming, Instant,
    NetworkBehavior, NoHandler, NodeId, RouteRule, ServiceId,
};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

/// The tree's timer.
const TREE: u64 = 0;
/// The anti-entropy timer.
const ENTROPY: u64 = 1;

/// The gossip behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour<V: Crdt = super::Value> {
    config: Config,
    store: Store<V>,
    clock: HlcClock,
    /// Physical milliseconds = `now` in milliseconds + this.
    offset_ms: i64,
    life: u64,
    tree: Option<Plumtree<Delta<V>>>,
    hood: Neighbourhood,
    next_seq: u64,
    armed: Option<Instant>,
    watches: BTreeSet<String>,
    stats: GossipStats,
    /// Anti-entropy partners are taken in turn from here.
    turn: usize,
    /// The next round was brought forward (once per period).
    hurried: bool,
}

impl<V: Crdt> Behaviour<V> {
    /// A gossip behaviour with these settings.
    pub fn new(config: Config) -> Self {
        Behaviour {
            store: Store::new(config.max_keys),
            watches: config.watch.iter().cloned().collect(),
            clock: HlcClock::new(NodeId(0), config.max_drift.as_millis() as u64),
            hood: Neighbourhood::new(config.neighbours),
            config,
            offset_ms: 0,
            life: 0,
            tree: None,
            next_seq: 0,
            armed: None,
            stats: GossipStats::default(),
            turn: 0,
            hurried: false,
        }
    }

    /// The replicated map as this node holds it.
    pub fn store(&self) -> &Store<V> {
        &self.store
    }

    /// A key's value here (`None`: missing or deleted).
    pub fn get(&self, key: &str) -> Option<&V> {
        self.store.get(key)
    }

    /// Counters.
    pub fn stats(&self) -> GossipStats {
        let mut s = self.stats.clone();
        s.keys = self.store.len() as u64;
        s.neighbours = self.hood.len() as u64;
        s.tombstones = self.store.tombstones() as u64;
        if let Some(t) = &self.tree {
            let ts = t.stats();
            s.tree_gossip_sent = ts.gossip_sent;
            s.tree_duplicates = ts.duplicates;
        }
        s
    }

    fn physical_ms(&self, now: Instant) -> u64 {
        Clock::physical_ms(self.offset_ms, now)
    }

    fn tree(&mut self, local: NodeId) -> &mut Plumtree<Delta<V>> {
        let cfg = &self.config.tree;
        self.tree
            .get_or_insert_with(|| Plumtree::new(local, cfg.clone()))
    }

    /// A local update, delete or merge: stamp it, store it, spread it.
    fn local(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        key: String,
        change: impl FnOnce(&mut Entry<V>, Origin) -> Result<(), String>,
    ) -> Result<(), String> {
        if key.len() > self.config.max_key_len {
            return Err(format!(
                "key of {} bytes over the {}-byte maximum",
                key.len(),
                self.config.max_key_len
            ));
        }
        let stamp = self.clock.stamp(self.physical_ms(agent.now()));
        let origin = Origin {
            replica: Replica {
                node: agent.local_node(),
                life: self.life,
            },
            stamp,
        };
        let mut entry = self.store.entry(&key).cloned().unwrap_or(Entry {
            incarnation: Default::default(),
            value: None,
        });
        change(&mut entry, origin)?;
        let now_ms = self.physical_ms(agent.now());
        let size = postcard::to_allocvec(&entry).map_or(usize::MAX, |b| b.len());
        if size > self.config.max_state_bytes {
            return Err(format!(
                "the key's state would be {size} bytes, over the {}-byte maximum",
                self.config.max_state_bytes
            ));
        }
        match self.store.join(&key, &entry, now_ms) {
            Ok(true) => {
                self.changed(agent, &key);
                self.spread(agent, Delta { key, entry });
            }
            Ok(false) => {}
            Err(StoreError::Full(max)) => {
                return Err(format!("the store holds its maximum of {max} keys"))
            }
        }
        Ok(())
    }

    /// Pushes a key's state to every node through the tree.
    fn spread(&mut self, agent: &mut BehaviorAgent<'_, Self>, delta: Delta<V>) {
        let id = MsgId {
            author: agent.local_node(),
            seq: self.next_seq,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let now = agent.now();
        self.tree(agent.local_node()).broadcast(now, id, delta);
        self.stats.updates_sent += 1;
    }

    /// Joins a remote key state in. True if it changed the store.
    fn absorb(&mut self, agent: &mut BehaviorAgent<'_, Self>, delta: &Delta<V>) -> bool {
        if delta.key.len() > self.config.max_key_len {
            log::debug!("gossip: key of {} bytes ignored", delta.key.len());
            self.stats.refused += 1;
            return false;
        }
        let now_ms = self.physical_ms(agent.now());
        let e = &delta.entry;
        self.clock.observe(e.incarnation, now_ms);
        if let Some(s) = e.value.as_ref().and_then(Crdt::max_stamp) {
            self.clock.observe(s, now_ms);
        }
        if e.value.is_none()
            && self.store.entry(&delta.key).is_none()
            && self.expired(e.incarnation.millis, now_ms)
        {
            return false; // a tombstone every node has collected by now
        }
        match self.store.join(&delta.key, e, now_ms) {
            Ok(true) => {
                self.changed(agent, &delta.key);
                true
            }
            Ok(false) => false,
            Err(StoreError::Full(max)) => {
                log::warn!(
                    "gossip: store full ({max} keys); {:?} not stored",
                    delta.key
                );
                self.stats.refused += 1;
                false
            }
        }
    }

    fn expired(&self, deleted_ms: u64, now_ms: u64) -> bool {
        deleted_ms.saturating_add(self.config.tombstone_ttl.as_millis() as u64) < now_ms
    }

    fn changed(&mut self, agent: &mut BehaviorAgent<'_, Self>, key: &str) {
        self.stats.changes += 1;
        if self.watches.iter().any(|p| key.starts_with(p.as_str())) {
            agent.emit(Event {
                key: key.to_owned(),
                value: self.store.get(key).cloned(),
            });
        }
    }

    /// Carries out what the tree asked, and keeps its timer armed.
    fn run(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let Some(tree) = self.tree.as_mut() else {
            return;
        };
        let actions: Vec<_> = tree.take_actions().collect();
        for action in actions {
            match action {
                Action::Send { to, msg } => match self.hood.conn(&to) {
                    Some(conn) => agent.send_to_conn(conn, Message::Tree(msg)),
                    None => log::trace!("gossip: {to} is no neighbour any more"),
                },
                Action::Deliver {
                    from,
                    payload,
                    round,
                    ..
                } => {
                    if from != agent.local_node() {
                        self.stats.updates_received += 1;
                        self.stats.hops_max = self.stats.hops_max.max(round);
                        self.absorb(agent, &payload);
                    }
                }
            }
        }
        let Some(tree) = self.tree.as_ref() else {
            return;
        };
        let next = tree.next_deadline();
        if next != self.armed {
            self.armed = next;
            match next {
                Some(at) => agent.schedule_at(at, TREE),
                None => agent.cancel_timer(TREE),
            }
        }
    }

    fn on_change(&mut self, agent: &mut BehaviorAgent<'_, Self>, change: Change) {
        let now = agent.now();
        let local = agent.local_node();
        match change {
            Change::None | Change::Moved(..) => return,
            Change::Up(node, _) => self.tree(local).neighbor_up(now, node),
            Change::Replaced(node, conn) => {
                let t = self.tree(local);
                t.neighbor_down(node);
                t.neighbor_up(now, node);
                // A restarted peer knows nothing: sync with it at once.
                self.stats.rounds += 1;
                self.send_entropy(agent, conn, self.digest());
            }
            Change::Down(node) => self.tree(local).neighbor_down(node),
        }
        if let Change::Up(_, conn) = change {
            self.stats.rounds += 1;
            self.send_entropy(agent, conn, self.digest());
        }
        self.run(agent);
    }

    fn digest(&self) -> Message<V> {
        Message::Digest {
            root: self.store.root(),
            keys: self.store.len() as u64,
        }
    }

    /// One anti-entropy round: a digest to the next neighbour in turn;
    /// tombstones past their time are collected.
    fn entropy_round(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now_ms = self.physical_ms(agent.now());
        let ttl = self.config.tombstone_ttl.as_millis() as u64;
        for key in self.store.expired_tombstones(now_ms.saturating_sub(ttl)) {
            self.store.remove(&key);
            self.stats.tombstones_collected += 1;
        }
        let n = self.hood.len();
        if n > 0 {
            self.turn = (self.turn + 1) % n;
            let partner = self.hood.iter().nth(self.turn);
            if let Some((_, conn)) = partner {
                self.stats.rounds += 1;
                self.send_entropy(agent, conn, self.digest());
            }
        }
        self.hurried = false;
        agent.schedule_after(self.config.interval, ENTROPY);
    }

    /// Anti-entropy from any peer connected directly (a neighbour, or a
    /// peer about to be one: both ends of a new link learn of it at
    /// slightly different times), answered on the connection it came on.
    fn on_entropy(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: NodeId,
        conn: ConnId,
        msg: Message<V>,
    ) {
        match msg {
            Message::Tree(_) => {}
            Message::Digest { root, .. } => {
                if root == self.store.root() {
                    self.stats.in_sync += 1;
                } else {
                    self.send_entropy(agent, conn, Message::Buckets(self.store.buckets().to_vec()));
                }
            }
            Message::Buckets(theirs) => {
                if theirs.len() != BUCKETS {
                    log::debug!("gossip: {from} sent {} buckets", theirs.len());
                    return;
                }
                let differ: Vec<usize> = (0..BUCKETS)
                    .filter(|b| theirs[*b] != self.store.buckets()[*b])
                    .collect();
                if differ.is_empty() {
                    return;
                }
                // A budget of keys per round, starting at a random bucket
                // so rounds that cannot cover everything cover it in turn.
                let start = agent.rng().below(differ.len() as u64) as usize;
                let mut buckets = Vec::new();
                let mut keys = Vec::new();
                for i in 0..differ.len() {
                    let b = differ[(start + i) % differ.len()];
                    let len = self.store.bucket_len(b);
                    if !buckets.is_empty() && keys.len() + len > self.config.max_summary_keys {
                        break;
                    }
                    buckets.push(b as u16);
                    keys.extend(self.store.summary(b));
                }
                self.send_entropy(agent, conn, Message::Summary { buckets, keys });
            }
            Message::Summary { buckets, keys } => {
                let theirs: BTreeMap<u64, u64> = keys.into_iter().collect();
                let buckets: BTreeSet<usize> = buckets
                    .into_iter()
                    .map(usize::from)
                    .filter(|b| *b < BUCKETS)
                    .collect();
                let mine: BTreeMap<u64, u64> = buckets
                    .iter()
                    .flat_map(|b| self.store.summary(*b))
                    .collect();
                // Ours where theirs differs or is missing; theirs (in the
                // buckets they summarised) where ours differs or is missing.
                let max = self.config.max_entries;
                let push: Vec<u64> = mine
                    .iter()
                    .filter(|(kh, d)| theirs.get(kh) != Some(d))
                    .map(|(kh, _)| *kh)
                    .collect();
                let want: Vec<u64> = theirs
                    .iter()
                    .filter(|(kh, d)| buckets.contains(&bucket_of(**kh)) && mine.get(kh) != Some(d))
                    .map(|(kh, _)| *kh)
                    .collect();
                // More than fit: a random window, so keys that cannot be
                // reconciled (or are too large) never starve the others.
                let push = window(agent, push, max);
                let want = window(agent, want, max);
                let entries = self.deltas(agent.now(), &push);
                self.stats.entries_sent += entries.len() as u64;
                if !entries.is_empty() || !want.is_empty() {
                    self.send_entropy(agent, conn, Message::Entries { entries, want });
                }
            }
            Message::Entries { entries, want } => {
                self.stats.entries_received += entries.len() as u64;
                // News that had been settled at the sender for a period is
                // news this side of the overlay missed (a partition, a late
                // join): spread it. Younger news is likely still on its way
                // through the tree here; spreading it again would double
                // the traffic of every write.
                let settled = self.config.interval.as_millis() as u64;
                let mut fresh = Vec::new();
                for (d, age) in &entries {
                    if self.absorb(agent, d) && u64::from(*age) >= settled {
                        fresh.push(d.key.clone());
                    }
                }
                // What anti-entropy brought is news here, and likely for
                // this node's side of a healed partition: spread it, and
                // sync with the next neighbour now rather than in a period.
                if !fresh.is_empty() && !self.hurried {
                    self.hurried = true;
                    agent.schedule_after(self.config.interval / 10, ENTROPY);
                }
                for key in fresh {
                    if let Some(entry) = self.store.entry(&key).cloned() {
                        self.spread(agent, Delta { key, entry });
                    }
                }
                let want = window(agent, want, self.config.max_entries);
                let entries = self.deltas(agent.now(), &want);
                if !entries.is_empty() {
                    self.stats.entries_sent += entries.len() as u64;
                    self.send_entropy(
                        agent,
                        conn,
                        Message::Entries {
                            entries,
                            want: Vec::new(),
                        },
                    );
                }
                self.run(agent);
            }
        }
    }

    /// Sends an anti-entropy message, counting it and its encoded size.
    fn send_entropy(&mut self, agent: &mut BehaviorAgent<'_, Self>, conn: ConnId, msg: Message<V>) {
        self.stats.entropy_messages += 1;
        self.stats.entropy_bytes += postcard::to_allocvec(&msg).map_or(0, |b| b.len() as u64);
        agent.send_to_conn(conn, msg);
    }

    /// The entries with these key hashes, each with how long ago (ms) it
    /// last changed here.
    fn deltas(&self, now: Instant, hashes: &[u64]) -> Vec<(Delta<V>, u32)> {
        let now_ms = self.physical_ms(now);
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for (k, e) in hashes.iter().filter_map(|h| self.store.by_hash(*h)) {
            let age = now_ms.saturating_sub(self.store.changed_ms(k).unwrap_or(now_ms));
            let delta = Delta {
                key: k.to_owned(),
                entry: e.clone(),
            };
            // Up to `max_message_bytes` encoded; the rest in a later round.
            let size = postcard::to_allocvec(&delta).map_or(usize::MAX, |b| b.len());
            if bytes.saturating_add(size) > self.config.max_message_bytes {
                continue;
            }
            bytes += size;
            out.push((delta, u32::try_from(age).unwrap_or(u32::MAX)));
        }
        out
    }
}

/// At most `max` of `items`: a window starting at a random place.
fn window<B: NetworkBehavior>(
    agent: &mut BehaviorAgent<'_, B>,
    mut items: Vec<u64>,
    max: usize,
) -> Vec<u64> {
    if items.len() > max {
        let start = agent.rng().below(items.len() as u64) as usize;
        items.rotate_left(start);
        items.truncate(max);
    }
    items
}

impl<V: Crdt> NetworkBehavior for Behaviour<V> {
    type Msg = Message<V>;
    type Handler = NoHandler<Message<V>>;
    type Event = Event<V>;
    type Rpc = (Request<V>, Response<V>);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let local = agent.local_node();
        // A random start: a restarted node never reuses its old ids, and
        // its counters and sets count this life apart from the last.
        self.next_seq = agent.rng().next_u64() >> 1;
        self.life = agent.rng().next_u64();
        self.offset_ms = self.config.clock.offset_ms(agent.now());
        self.clock = HlcClock::new(local, self.config.max_drift.as_millis() as u64);
        self.tree(local);
        // Rounds start at a random point of the period: nodes started
        // together do not all sync at once.
        let first = self.config.interval.mul_f64(agent.rng().next_f64());
        agent.schedule_after(first, ENTROPY);
    }

    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        info: ConnectionInfo,
    ) -> Option<NoHandler<Message<V>>> {
        let change = self.hood.on_connected(&info);
        self.on_change(agent, change);
        None
    }

    fn on_disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, info: ConnectionInfo) {
        let change = self.hood.on_disconnected(&info, agent.connections());
        self.on_change(agent, change);
    }

    fn on_local_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        _from: ServiceId,
        event: &(dyn Any + Send + Sync),
    ) {
        let change = self.hood.on_local_event(event);
        self.on_change(agent, change);
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Message<V>>) {
        let (Some(conn), RouteRule::Direct) = (msg.conn, msg.rule) else {
            return; // gossip speaks to directly connected peers only
        };
        match msg.msg {
            Message::Tree(t) => {
                if !self.hood.contains(&msg.source) {
                    // The tree is among neighbours, but the two ends of a
                    // new link learn of it at slightly different times: a
                    // state pushed in that window is kept, and spread
                    // anew if it is news.
                    if let TreeMsg::Gossip { payload, .. } = t {
                        if self.absorb(agent, &payload) {
                            self.spread(agent, payload);
                            self.run(agent);
                        }
                    }
                    return;
                }
                let now = agent.now();
                self.tree(agent.local_node()).on_message(now, msg.source, t);
                self.run(agent);
            }
            other => self.on_entropy(agent, msg.source, conn, other),
        }
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        match token {
            TREE => {
                self.armed = None;
                let now = agent.now();
                self.tree(agent.local_node()).on_timeout(now);
                self.run(agent);
            }
            ENTROPY => self.entropy_round(agent),
            _ => {}
        }
    }

    fn on_dropped(&mut self, agent: &mut BehaviorAgent<'_, Self>, report: &DropReport) {
        if let DropReason::QueueFull(conn) = report.reason {
            if let Some(n) = self.hood.node_of(conn) {
                self.tree(agent.local_node()).peer_slow(n);
            }
        }
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request<V>,
        answer: Answer<Response<V>>,
    ) {
        let result = match req {
            Request::Update { key, op } => self.local(agent, key, |e, origin| {
                let mut v = e.value.take().unwrap_or_default();
                let r = v.apply(op, &origin);
                e.value = Some(v);
                r
            }),
            Request::Merge { key, value } => self.local(agent, key, |e, _| {
                match &mut e.value {
                    Some(v) => v.merge(&value),
                    None => e.value = Some(value),
                }
                Ok(())
            }),
            Request::Delete(key) => self.local(agent, key, |e, origin| {
                // After the stored incarnation even if a peer's clock put
                // it ahead of ours: a delete always takes effect.
                e.incarnation = if origin.stamp > e.incarnation {
                    origin.stamp
                } else {
                    e.incarnation.after(origin.stamp.node)
                };
                e.value = None;
                Ok(())
            }),
            Request::Get(key) => {
                let v = self.store.get(&key).cloned();
                agent.answer(answer, Response::Value(v));
                return;
            }
            Request::Watch(prefix) => {
                self.watches.insert(prefix);
                Ok(())
            }
            Request::Unwatch(prefix) => {
                self.watches.remove(&prefix);
                Ok(())
            }
            Request::Stats => {
                agent.answer(answer, Response::Stats(self.stats()));
                return;
            }
        };
        self.run(agent);
        match result {
            Ok(()) => agent.answer(answer, Response::Done),
            Err(reason) => agent.refuse(answer, reason),
        }
    }
}
