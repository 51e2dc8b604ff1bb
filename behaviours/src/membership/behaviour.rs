//! HyParView's state machine, as a behaviour. See the [module docs](super).

use super::protocol::{Message, PeerInfo, Priority, MAX_ADDRS};
use super::{Config, NeighborEvent, Request, Response, Stats};
use plexus_network::{
    Address, Answer, BehaviorAgent, ConnId, ConnectionInfo, Direction, Incoming, Instant,
    NetworkBehavior, NoHandler, NodeId, OutgoingConnectionError, RouteRule, ServiceId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Timer tokens.
const SHUFFLE: u64 = 0;
const HOUSEKEEP: u64 = 1;
/// Timer: dial a lost neighbour again.
const RECALL: u64 = 2;
/// How often lost neighbours are retried (each on its own backoff).
const RECALL_EVERY: Duration = Duration::from_secs(5);
/// Longest wait between two tries of one lost neighbour.
const RECALL_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a lost neighbour is tried.
const RECALL_FOR: Duration = Duration::from_secs(600);

/// Contacts remembered.
const MAX_CONTACTS: usize = 8;

type Agent<'a> = BehaviorAgent<'a, Behaviour>;

/// A `Neighbor` request of ours in flight.
#[derive(Debug, Clone)]
struct Ask {
    priority: Priority,
    since: Instant,
    addrs: Vec<Address>,
}

/// The membership behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    /// Open connections per node (whoever opened them), oldest first; the
    /// newest is the one used.
    conns: BTreeMap<NodeId, Vec<ConnId>>,
    /// Connections membership dialled itself: it may close them.
    dialled: BTreeSet<ConnId>,
    /// The active view, with each neighbour's addresses.
    active: BTreeMap<NodeId, Vec<Address>>,
    /// The passive view.
    passive: BTreeMap<NodeId, Vec<Address>>,
    /// Leaves: peers that joined with no address (browsers). Neighbours of
    /// this node only, outside the active view (at most `max_leaves`).
    leaves: BTreeSet<NodeId>,
    /// Neighbor requests in flight (dialling, or waiting for the reply).
    asking: BTreeMap<NodeId, Ask>,
    /// Peers that refused us lately: not asked again before the instant.
    refused: BTreeMap<NodeId, Instant>,
    /// What our last shuffle offered: evicted first when replies come in.
    offered: BTreeSet<NodeId>,
    housekeeping: bool,
    /// Lost neighbours still to replace.
    repair: usize,
    /// The peers this node joined through, with their addresses (at most
    /// [`MAX_CONTACTS`]): kept apart from the passive view, which shuffles
    /// refresh from the node's own neighbourhood.
    contacts: BTreeMap<NodeId, Vec<Address>>,
    /// Neighbours that failed (at most twice the active size), tried again
    /// with backoff for [`RECALL_FOR`]: after a partition heals, the two
    /// sides know each other only through these.
    lost: BTreeMap<NodeId, Lost>,
    recall_armed: bool,
    stats: Stats,
}

/// A neighbour that failed.
#[derive(Debug, Clone)]
struct Lost {
    addrs: Vec<Address>,
    since: Instant,
    next: Instant,
    tries: u32,
}

impl Behaviour {
    /// A membership behaviour with these settings.
    pub fn new(config: Config) -> Self {
        Behaviour {
            config,
            conns: BTreeMap::new(),
            dialled: BTreeSet::new(),
            active: BTreeMap::new(),
            passive: BTreeMap::new(),
            leaves: BTreeSet::new(),
            asking: BTreeMap::new(),
            refused: BTreeMap::new(),
            offered: BTreeSet::new(),
            housekeeping: false,
            repair: 0,
            contacts: BTreeMap::new(),
            lost: BTreeMap::new(),
            recall_armed: false,
            stats: Stats::default(),
        }
    }

    /// The active view: the overlay neighbours, ascending.
    pub fn active_view(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.active.keys().copied()
    }

    /// The passive view, ascending.
    pub fn passive_view(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.passive.keys().copied()
    }

    /// The leaves, ascending: peers that joined with no address to dial
    /// them by (browsers). See the [module docs](super#leaves).
    pub fn leaves(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.leaves.iter().copied()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The newest connection to `node`: a peer that restarted reconnects
    /// before its old connection times out, and only the new one is alive.
    fn conn(&self, node: NodeId) -> Option<ConnId> {
        self.conns.get(&node).and_then(|v| v.last()).copied()
    }

    fn send(&self, agent: &mut Agent<'_>, node: NodeId, msg: Message) -> bool {
        match self.conn(node) {
            Some(c) => {
                agent.send_to_conn(c, msg);
                true
            }
            None => false,
        }
    }

    fn my_addrs(agent: &Agent<'_>) -> Vec<Address> {
        agent
            .local_addrs()
            .iter()
            .take(MAX_ADDRS)
            .copied()
            .collect()
    }

    fn me(agent: &Agent<'_>) -> PeerInfo {
        PeerInfo {
            node: agent.local_node(),
            addrs: Self::my_addrs(agent),
        }
    }

    fn pick<T: Copy>(agent: &mut Agent<'_>, items: &[T]) -> Option<T> {
        agent.rng().choose(items).copied()
    }

    /// Takes `node` into the active view (its connection is up), making
    /// room if needed.
    fn add_active(&mut self, agent: &mut Agent<'_>, node: NodeId, addrs: Vec<Address>) {
        if node == agent.local_node() {
            return;
        }
        self.asking.remove(&node);
        let Some(conn) = self.conn(node) else {
            return;
        };
        self.leaves.remove(&node);
        let addrs = clean(addrs);
        if let Some(a) = self.active.get_mut(&node) {
            if !addrs.is_empty() {
                *a = addrs;
            }
            return;
        }
        while self.active.len() >= self.config.active_size {
            self.drop_random_active(agent, node);
        }
        let addrs = if addrs.is_empty() {
            self.passive.get(&node).cloned().unwrap_or_default()
        } else {
            addrs
        };
        self.passive.remove(&node);
        self.lost.remove(&node);
        self.active.insert(node, addrs);
        self.repair = self.repair.saturating_sub(1);
        log::debug!(
            "node {}: membership: {node} active ({} of {})",
            agent.local_node(),
            self.active.len(),
            self.config.active_size
        );
        self.announce(agent, self.up(node, conn));
    }

    fn announce(&self, agent: &mut Agent<'_>, ev: NeighborEvent) {
        agent.publish(ev);
        if self.config.emit_events {
            agent.emit(ev);
        }
    }

    /// Makes room: a random active neighbour other than `keep` is told, its
    /// connection closed, and it becomes passive.
    fn drop_random_active(&mut self, agent: &mut Agent<'_>, keep: NodeId) {
        let others: Vec<NodeId> = self.active.keys().copied().filter(|n| *n != keep).collect();
        let Some(victim) = Self::pick(agent, &others) else {
            return;
        };
        self.send(agent, victim, Message::Disconnect);
        if let Some(c) = self.conn(victim) {
            agent.close(c);
        }
        let addrs = self.active.remove(&victim).unwrap_or_default();
        self.announce(agent, NeighborEvent::Down { node: victim });
        self.add_passive(agent, victim, addrs);
    }

    /// Removes `node` from the active view: to the passive view if it left
    /// politely, forgotten if it failed.
    fn remove_active(&mut self, agent: &mut Agent<'_>, node: NodeId, failed: bool) {
        let Some(addrs) = self.active.remove(&node) else {
            return;
        };
        self.announce(agent, NeighborEvent::Down { node });
        if failed {
            self.stats.failures += 1;
            self.remember_lost(agent, node, addrs);
        } else {
            self.add_passive(agent, node, addrs);
        }
        if self.active.is_empty() && !self.recall_armed {
            self.arm_recall(agent);
        }
    }

    fn add_passive(&mut self, agent: &mut Agent<'_>, node: NodeId, addrs: Vec<Address>) {
        let addrs = clean(addrs);
        if node == agent.local_node() || self.active.contains_key(&node) || addrs.is_empty() {
            return;
        }
        if let Some(c) = self.contacts.get_mut(&node) {
            // A contact that restarted elsewhere: its new address.
            c.clone_from(&addrs);
        }
        if let Some(a) = self.passive.get_mut(&node) {
            *a = addrs;
            return;
        }
        if self.passive.len() >= self.config.passive_size {
            // Evict what we offered in our last shuffle first (the other
            // side has it now), else a random peer. Never by id order: a
            // bias there starves some nodes of promotions everywhere.
            let offered: Vec<NodeId> = self
                .offered
                .iter()
                .copied()
                .filter(|n| self.passive.contains_key(n))
                .collect();
            let victim = match Self::pick(agent, &offered) {
                Some(v) => Some(v),
                None => {
                    let all: Vec<NodeId> = self.passive.keys().copied().collect();
                    Self::pick(agent, &all)
                }
            };
            if let Some(v) = victim {
                self.passive.remove(&v);
                self.offered.remove(&v);
            }
        }
        self.passive.insert(node, addrs);
    }

    /// Asks `node` to become an active neighbour, dialling it if needed.
    fn ask(
        &mut self,
        agent: &mut Agent<'_>,
        node: NodeId,
        addrs: Vec<Address>,
        priority: Priority,
    ) {
        if node == agent.local_node()
            || self.active.contains_key(&node)
            || self.asking.contains_key(&node)
        {
            return;
        }
        let addrs = clean(addrs);
        self.asking.insert(
            node,
            Ask {
                priority,
                since: agent.now(),
                addrs: addrs.clone(),
            },
        );
        if self.conn(node).is_some() {
            let msg = Message::Neighbor {
                priority,
                addrs: Self::my_addrs(agent),
            };
            self.send(agent, node, msg);
        } else if let Some(addr) = addrs.first() {
            agent.connect(node, *addr);
        } else {
            self.asking.remove(&node);
            return;
        }
        self.arm_housekeeping(agent);
    }

    /// Replaces lost neighbours: promotes passive peers, one after another
    /// as they refuse, until as many have come back as were lost (or the
    /// view is full). A node left with none keeps trying, with high
    /// priority. Growing a view that is merely below its target is slower:
    /// one request per shuffle round, so refusals do not turn into a storm
    /// of dials.
    fn fill(&mut self, agent: &mut Agent<'_>) {
        if self.active.is_empty() {
            self.repair = self.repair.max(1);
        }
        let target = (self.active.len() + self.repair).min(self.config.active_size);
        self.fill_up_to(agent, target);
    }

    /// Promotes passive peers until the active view plus requests in flight
    /// reach `target`.
    fn fill_up_to(&mut self, agent: &mut Agent<'_>, target: usize) {
        let now = agent.now();
        while self.active.len() + self.asking.len() < target {
            let candidates: Vec<NodeId> = self
                .passive
                .keys()
                .copied()
                .filter(|n| {
                    !self.asking.contains_key(n) && self.refused.get(n).is_none_or(|t| *t <= now)
                })
                .collect();
            let Some(node) = Self::pick(agent, &candidates) else {
                return;
            };
            // A node with at most one neighbour hangs by a thread: it asks
            // with high priority, so it gets a second link at once.
            let priority = if self.active.len() <= 1 {
                Priority::High
            } else {
                Priority::Low
            };
            let addrs = self.passive.get(&node).cloned().unwrap_or_default();
            self.stats.promotions += 1;
            self.ask(agent, node, addrs, priority);
        }
    }

    /// Asks a random passive peer to replace one of our neighbours.
    /// Asks a random passive peer or contact to replace one of our
    /// neighbours. Contacts (the peers this node joined through) are there
    /// because a group of nodes whose views and passive views filled up
    /// among themselves knows nobody outside; its contacts mostly are.
    fn rewire(&mut self, agent: &mut Agent<'_>) {
        let now = agent.now();
        let candidates: Vec<NodeId> = self
            .passive
            .keys()
            .chain(self.contacts.keys())
            .copied()
            .filter(|n| {
                !self.active.contains_key(n) && self.refused.get(n).is_none_or(|t| *t <= now)
            })
            .collect();
        if let Some(node) = Self::pick(agent, &candidates) {
            let addrs = self
                .passive
                .get(&node)
                .or_else(|| self.contacts.get(&node))
                .cloned()
                .unwrap_or_default();
            self.stats.rewirings += 1;
            self.ask(agent, node, addrs, Priority::Swap);
        }
    }

    /// A node with fewer than two neighbours joins again through one of
    /// its contacts: the join walk gives it fresh random neighbours from
    /// the main overlay (and pulls an island it may be part of back in).
    fn rejoin(&mut self, agent: &mut Agent<'_>) {
        let candidates: Vec<NodeId> = self
            .contacts
            .keys()
            .copied()
            .filter(|n| !self.active.contains_key(n))
            .collect();
        let Some(node) = Self::pick(agent, &candidates) else {
            return;
        };
        self.stats.rejoins += 1;
        if self.conn(node).is_some() {
            let msg = Message::Join {
                addrs: Self::my_addrs(agent),
            };
            self.send(agent, node, msg);
            let addrs = self.contacts.get(&node).cloned().unwrap_or_default();
            self.add_active(agent, node, addrs);
        } else if let Some(addr) = self.contacts.get(&node).and_then(|a| a.first()) {
            // On connection it is a contact again: `on_connected` joins.
            agent.connect(node, *addr);
        }
    }

    fn remember_lost(&mut self, agent: &mut Agent<'_>, node: NodeId, addrs: Vec<Address>) {
        let addrs = clean(addrs);
        if addrs.is_empty() {
            return;
        }
        let now = agent.now();
        if self.lost.len() >= 2 * self.config.active_size {
            let oldest = self
                .lost
                .iter()
                .min_by_key(|(_, l)| l.since)
                .map(|(n, _)| *n);
            if let Some(o) = oldest {
                self.lost.remove(&o);
            }
        }
        self.lost.insert(
            node,
            Lost {
                addrs,
                since: now,
                next: now + RECALL_EVERY,
                tries: 0,
            },
        );
        if !self.recall_armed {
            self.arm_recall(agent);
        }
    }

    /// Tries one lost neighbour whose backoff is over: asks it to swap in
    /// (or, below the target, to join the view). Failed dials leave it
    /// for its next try; one that answers is forgotten as lost.
    fn recall(&mut self, agent: &mut Agent<'_>) {
        let now = agent.now();
        self.lost.retain(|_, l| now - l.since < RECALL_FOR);
        // A node with no neighbour at all ignores the backoff and also
        // joins again through a contact, every second, until it is back.
        let alone = self.active.is_empty();
        if alone && self.asking.is_empty() {
            self.rejoin(agent);
        }
        let due: Vec<NodeId> = self
            .lost
            .iter()
            .filter(|(n, l)| (alone || l.next <= now) && !self.active.contains_key(n))
            .map(|(n, _)| *n)
            .collect();
        if let Some(node) = Self::pick(agent, &due) {
            if let Some(l) = self.lost.get_mut(&node) {
                l.tries += 1;
                let wait = RECALL_EVERY
                    .saturating_mul(1 << l.tries.min(6))
                    .min(RECALL_MAX_BACKOFF);
                l.next = now + wait;
                let addrs = l.addrs.clone();
                let priority = if self.active.len() < self.config.active_size {
                    Priority::Low
                } else {
                    Priority::Swap
                };
                self.stats.recalls += 1;
                self.ask(agent, node, addrs, priority);
            }
        }
        self.arm_recall(agent);
    }

    /// Keeps the recall timer running while there are lost neighbours to
    /// try or the node has none: every [`RECALL_EVERY`], or every second
    /// when alone.
    fn arm_recall(&mut self, agent: &mut Agent<'_>) {
        self.recall_armed = !self.lost.is_empty() || self.active.is_empty();
        if self.recall_armed {
            let every = if self.active.is_empty() {
                Duration::from_secs(1)
            } else {
                RECALL_EVERY
            };
            let d = jitter(agent, every);
            agent.schedule_after(d, RECALL);
        }
    }

    fn arm_housekeeping(&mut self, agent: &mut Agent<'_>) {
        if !self.housekeeping {
            self.housekeeping = true;
            agent.schedule_after(self.config.neighbor_timeout, HOUSEKEEP);
        }
    }

    fn shuffle(&mut self, agent: &mut Agent<'_>) {
        let active: Vec<NodeId> = self.active.keys().copied().collect();
        let Some(target) = Self::pick(agent, &active) else {
            return;
        };
        let mut peers = vec![Self::me(agent)];
        let mut others: Vec<NodeId> = active.iter().copied().filter(|n| *n != target).collect();
        agent.rng().shuffle(&mut others);
        peers.extend(
            others
                .into_iter()
                .take(self.config.shuffle_active)
                .map(|n| PeerInfo {
                    node: n,
                    addrs: self.active[&n].clone(),
                }),
        );
        let mut passive: Vec<NodeId> = self.passive.keys().copied().collect();
        agent.rng().shuffle(&mut passive);
        passive.truncate(self.config.shuffle_passive);
        self.offered = passive.iter().copied().collect();
        peers.extend(passive.into_iter().map(|n| PeerInfo {
            node: n,
            addrs: self.passive[&n].clone(),
        }));
        self.stats.shuffles += 1;
        let msg = Message::Shuffle {
            ttl: self.config.arwl,
            path: vec![agent.local_node()],
            peers,
        };
        self.send(agent, target, msg);
    }

    fn max_shuffle(&self) -> usize {
        1 + self.config.shuffle_active + self.config.shuffle_passive
    }

    fn merge(&mut self, agent: &mut Agent<'_>, peers: Vec<PeerInfo>) {
        for p in peers.into_iter().take(self.max_shuffle()) {
            self.add_passive(agent, p.node, p.addrs);
        }
    }

    fn on_join(&mut self, agent: &mut Agent<'_>, from: NodeId, addrs: Vec<Address>) {
        if addrs.is_empty() && !self.active.contains_key(&from) {
            self.add_leaf(agent, from);
            return;
        }
        self.stats.joins += 1;
        let known = self.active.contains_key(&from);
        self.add_active(agent, from, addrs.clone());
        if known {
            return;
        }
        self.send_sample(agent, from);
        let peer = PeerInfo {
            node: from,
            addrs: clean(addrs),
        };
        let others: Vec<NodeId> = self.active.keys().copied().filter(|n| *n != from).collect();
        for n in others {
            let msg = Message::ForwardJoin {
                peer: peer.clone(),
                ttl: self.config.arwl,
            };
            self.send(agent, n, msg);
        }
    }

    /// The joiner knows nobody else yet: a sample of the peers we know
    /// fills its passive view at once (as a shuffle answer would), so
    /// losing its first neighbours does not leave it with no one to
    /// promote. In a small swarm that is the whole swarm.
    fn send_sample(&mut self, agent: &mut Agent<'_>, from: NodeId) {
        let mut known: Vec<PeerInfo> = self
            .active
            .iter()
            .chain(&self.passive)
            .filter(|(n, _)| **n != from)
            .map(|(n, a)| PeerInfo {
                node: *n,
                addrs: a.clone(),
            })
            .collect();
        agent.rng().shuffle(&mut known);
        known.truncate(self.max_shuffle());
        if !known.is_empty() {
            let msg = Message::ShuffleReply {
                path: vec![from],
                peers: known,
            };
            self.send(agent, from, msg);
        }
    }

    /// A peer that joined with no address: nobody can dial it, so no walk
    /// spreads it and no shuffle passes it on. It becomes a neighbour of
    /// this node alone (for the trees built on membership), outside the
    /// active view's bound, if there is room among the leaves; either way
    /// the answer tells it. A leaf that can dial (a native node with no
    /// listen address) also gets a sample of peers, as any joiner does.
    fn add_leaf(&mut self, agent: &mut Agent<'_>, node: NodeId) {
        let Some(conn) = self.conn(node) else {
            return;
        };
        if self.leaves.contains(&node) {
            // Asked again: the same answer, and nothing new to announce.
            self.send(agent, node, Message::NeighborReply { accepted: true });
            return;
        }
        let accepted = self.leaves.len() < self.config.max_leaves;
        self.send(agent, node, Message::NeighborReply { accepted });
        if !accepted {
            self.stats.leaves_refused += 1;
            if self.stats.leaves_refused.is_power_of_two() {
                log::warn!(
                    "node {}: membership: {} leaves are here already; {node} refused ({} refused so far)",
                    agent.local_node(),
                    self.config.max_leaves,
                    self.stats.leaves_refused
                );
            }
            return;
        }
        self.leaves.insert(node);
        self.stats.leaves += 1;
        log::debug!(
            "node {}: membership: {node} is a leaf ({} of {})",
            agent.local_node(),
            self.leaves.len(),
            self.config.max_leaves
        );
        self.send_sample(agent, node);
        self.announce(agent, self.up(node, conn));
    }

    /// The event that says `node` is a neighbour on `conn`.
    fn up(&self, node: NodeId, conn: ConnId) -> NeighborEvent {
        NeighborEvent::Up {
            node,
            conn,
            leaf: self.leaves.contains(&node),
        }
    }

    /// `node` is no longer a leaf (it left, or its connection closed).
    fn remove_leaf(&mut self, agent: &mut Agent<'_>, node: NodeId) {
        if self.leaves.remove(&node) {
            self.announce(agent, NeighborEvent::Down { node });
        }
    }

    fn on_forward_join(&mut self, agent: &mut Agent<'_>, from: NodeId, peer: PeerInfo, ttl: u8) {
        let me = agent.local_node();
        if peer.node == me || self.active.contains_key(&peer.node) {
            return;
        }
        if ttl == 0 || self.active.len() <= 1 {
            // The walk ends here: take the joiner as a neighbour.
            self.ask(agent, peer.node, peer.addrs, Priority::High);
            return;
        }
        // HyParView keeps the joiner as passive at hop `prwl`; every hop
        // with room keeps it too (small swarms learn each other faster).
        if ttl == self.config.prwl || self.passive.len() < self.config.passive_size {
            self.add_passive(agent, peer.node, peer.addrs.clone());
        }
        let next: Vec<NodeId> = self
            .active
            .keys()
            .copied()
            .filter(|n| *n != from && *n != peer.node)
            .collect();
        match Self::pick(agent, &next) {
            Some(n) => {
                let msg = Message::ForwardJoin { peer, ttl: ttl - 1 };
                self.send(agent, n, msg);
            }
            None => self.ask(agent, peer.node, peer.addrs, Priority::High),
        }
    }

    fn on_neighbor(
        &mut self,
        agent: &mut Agent<'_>,
        from: NodeId,
        priority: Priority,
        addrs: Vec<Address>,
    ) {
        let room = self.active.len() < self.config.active_size;
        let accepted = self.active.contains_key(&from)
            || room
            || match priority {
                Priority::High => true,
                Priority::Low => false,
                // Replace a neighbour that has others: never one whose only
                // link this is (we cannot know, so: only when we keep two).
                Priority::Swap => self.active.len() >= 2,
            };
        if accepted {
            self.add_active(agent, from, addrs);
        } else {
            self.stats.refusals += 1;
            self.add_passive(agent, from, addrs);
        }
        self.send(agent, from, Message::NeighborReply { accepted });
    }

    fn on_neighbor_reply(&mut self, agent: &mut Agent<'_>, from: NodeId, accepted: bool) {
        let ask = self.asking.remove(&from);
        if accepted {
            let addrs = ask.map(|a| a.addrs).unwrap_or_default();
            self.add_active(agent, from, addrs);
        } else {
            let until = agent.now() + self.config.shuffle_interval;
            self.refused.insert(from, until);
            self.close_if_unused(agent, from);
            self.fill(agent);
        }
    }

    fn on_shuffle(
        &mut self,
        agent: &mut Agent<'_>,
        from: NodeId,
        ttl: u8,
        mut path: Vec<NodeId>,
        mut peers: Vec<PeerInfo>,
    ) {
        peers.truncate(self.max_shuffle());
        path.truncate(usize::from(self.config.arwl) + 1);
        let me = agent.local_node();
        if ttl > 1 && self.active.len() > 1 {
            let next: Vec<NodeId> = self.active.keys().copied().filter(|n| *n != from).collect();
            if let Some(n) = Self::pick(agent, &next) {
                path.push(me);
                let msg = Message::Shuffle {
                    ttl: ttl - 1,
                    path,
                    peers,
                };
                self.send(agent, n, msg);
                return;
            }
        }
        // The walk ends here: answer with as many passive peers.
        let theirs: BTreeSet<NodeId> = peers.iter().map(|p| p.node).collect();
        let mut mine: Vec<NodeId> = self
            .passive
            .keys()
            .copied()
            .filter(|n| !theirs.contains(n))
            .collect();
        agent.rng().shuffle(&mut mine);
        mine.truncate(peers.len());
        let reply: Vec<PeerInfo> = mine
            .into_iter()
            .map(|n| PeerInfo {
                node: n,
                addrs: self.passive[&n].clone(),
            })
            .collect();
        self.send(agent, from, Message::ShuffleReply { path, peers: reply });
        self.merge(agent, peers);
    }

    fn on_shuffle_reply(
        &mut self,
        agent: &mut Agent<'_>,
        mut path: Vec<NodeId>,
        peers: Vec<PeerInfo>,
    ) {
        let me = agent.local_node();
        if path.last() != Some(&me) {
            return;
        }
        path.pop();
        match path.last().copied() {
            None => {
                self.stats.shuffle_replies += 1;
                self.merge(agent, peers);
            }
            Some(prev) => {
                // Retrace the walk; a hop that is gone ends it (best effort).
                self.send(agent, prev, Message::ShuffleReply { path, peers });
            }
        }
    }

    /// Closes the connection to `node` if membership opened it and `node`
    /// is not an active neighbour.
    fn close_if_unused(&mut self, agent: &mut Agent<'_>, node: NodeId) {
        if self.active.contains_key(&node) {
            return;
        }
        for c in self.conns.get(&node).cloned().unwrap_or_default() {
            if self.dialled.remove(&c) {
                agent.close(c);
            }
        }
    }
}

/// Addresses as kept: at most [`MAX_ADDRS`], no duplicates.
fn clean(mut addrs: Vec<Address>) -> Vec<Address> {
    addrs.truncate(MAX_ADDRS);
    addrs.dedup();
    addrs
}

impl NetworkBehavior for Behaviour {
    type Msg = Message;
    type Handler = NoHandler<Message>;
    type Event = NeighborEvent;
    type Rpc = (Request, Response);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let first = jitter(agent, self.config.shuffle_interval);
        agent.schedule_after(first, SHUFFLE);
    }

    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        info: ConnectionInfo,
    ) -> Option<NoHandler<Message>> {
        let node = info.node;
        self.conns.entry(node).or_default().push(info.conn);
        let mine = info.dialled_by == Some(self.config.service);
        if let Some(ask) = self.asking.get(&node) {
            // Only a connection membership dialled is membership's to
            // close later; another behaviour's dial to the same node (a
            // router's link) is shared, not taken over.
            if info.direction == Direction::Outgoing && mine {
                self.dialled.insert(info.conn);
            }
            let msg = Message::Neighbor {
                priority: ask.priority,
                addrs: Self::my_addrs(agent),
            };
            self.send(agent, node, msg);
        } else if self.active.contains_key(&node) || self.leaves.contains(&node) {
            // A newer connection to a neighbour (it may have restarted):
            // from now on it is the one to use.
            self.announce(agent, self.up(node, info.conn));
        } else if info.direction == Direction::Outgoing && (info.dialled_by.is_none() || mine) {
            // A connection the node opened but no other behaviour did (a
            // bootstrap peer, an application dial, membership's own redial
            // of a contact): join through it. Links other behaviours open
            // for their own use (a router's) are theirs, not contacts. Not
            // only when alone: a node that joins while others are joining
            // through it must still join the rest of the overlay itself, or
            // concurrent joiners can form an island.
            let msg = Message::Join {
                addrs: Self::my_addrs(agent),
            };
            self.send(agent, node, msg);
            let addrs: Vec<Address> = info.addr.into_iter().collect();
            if self.contacts.len() < MAX_CONTACTS && !addrs.is_empty() {
                self.contacts.insert(node, addrs.clone());
            }
            self.add_active(agent, node, addrs);
        }
        None
    }

    fn on_disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, info: ConnectionInfo) {
        let node = info.node;
        self.dialled.remove(&info.conn);
        let left = match self.conns.get_mut(&node) {
            Some(v) => {
                v.retain(|c| *c != info.conn);
                v.last().copied()
            }
            None => None,
        };
        match left {
            Some(conn) => {
                if self.active.contains_key(&node) || self.leaves.contains(&node) {
                    // Still reachable on another connection.
                    self.announce(agent, self.up(node, conn));
                }
            }
            None => {
                self.conns.remove(&node);
                self.remove_leaf(agent, node);
                let was_asking = self.asking.remove(&node).is_some();
                if self.active.contains_key(&node) {
                    log::debug!(
                        "node {}: membership: neighbour {node} lost",
                        agent.local_node()
                    );
                    self.remove_active(agent, node, true);
                    self.repair += 1;
                    self.fill(agent);
                    if self.active.len() < 2 && self.asking.is_empty() {
                        // Nobody passive to promote: join again at once
                        // rather than at the next shuffle round.
                        self.rejoin(agent);
                    }
                } else if was_asking {
                    self.fill(agent);
                }
            }
        }
    }

    fn on_outgoing_connection_error(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        node: NodeId,
        _conn: ConnId,
        err: &OutgoingConnectionError,
    ) {
        if self.asking.remove(&node).is_some() {
            log::debug!(
                "node {}: membership: passive peer {node} unreachable: {err}",
                agent.local_node()
            );
            self.passive.remove(&node);
            self.fill(agent);
        }
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Message>) {
        let (Some(_), RouteRule::Direct) = (msg.conn, msg.rule) else {
            return; // membership speaks to neighbours only
        };
        let from = msg.source;
        match msg.msg {
            Message::Join { addrs } => self.on_join(agent, from, addrs),
            Message::ForwardJoin { peer, ttl } => self.on_forward_join(agent, from, peer, ttl),
            Message::Neighbor { priority, addrs } => self.on_neighbor(agent, from, priority, addrs),
            Message::NeighborReply { accepted } => self.on_neighbor_reply(agent, from, accepted),
            Message::Disconnect => {
                // Dropped to make room: not a failure; the view grows back
                // at the shuffle rounds' pace (at once if it is empty).
                self.remove_leaf(agent, from);
                self.remove_active(agent, from, false);
                if let Some(c) = self.conn(from) {
                    agent.close(c);
                }
                self.fill(agent);
            }
            Message::Shuffle { ttl, path, peers } => self.on_shuffle(agent, from, ttl, path, peers),
            Message::ShuffleReply { path, peers } => self.on_shuffle_reply(agent, path, peers),
        }
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        match token {
            SHUFFLE => {
                let next = jitter(agent, self.config.shuffle_interval);
                agent.schedule_after(next, SHUFFLE);
                let now = agent.now();
                self.refused.retain(|_, t| *t > now);
                // Below the target: promote one more each round. Full:
                // sometimes rewire, so the overlay keeps mixing.
                let want = self.active.len() + self.asking.len() + 1;
                if self.active.len() < 2 {
                    self.rejoin(agent);
                }
                if want <= self.config.active_size {
                    if self.asking.is_empty() {
                        self.fill_up_to(agent, want);
                    }
                } else if self.asking.is_empty() && agent.rng().chance(self.config.rewire) {
                    self.rewire(agent);
                }
                self.shuffle(agent);
            }
            RECALL => self.recall(agent),
            HOUSEKEEP => {
                self.housekeeping = false;
                let now = agent.now();
                let timeout = self.config.neighbor_timeout;
                let late: Vec<NodeId> = self
                    .asking
                    .iter()
                    .filter(|(_, a)| now - a.since >= timeout)
                    .map(|(n, _)| *n)
                    .collect();
                for n in late {
                    self.asking.remove(&n);
                    self.refused.insert(n, now + self.config.shuffle_interval);
                    self.close_if_unused(agent, n);
                }
                self.fill(agent);
                if !self.asking.is_empty() {
                    self.arm_housekeeping(agent);
                }
            }
            _ => {}
        }
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request,
        answer: Answer<Response>,
    ) {
        let resp = match req {
            Request::ActiveView => Response::ActiveView(self.active.keys().copied().collect()),
            Request::PassiveView => Response::PassiveView(
                self.passive
                    .iter()
                    .map(|(n, a)| PeerInfo {
                        node: *n,
                        addrs: a.clone(),
                    })
                    .collect(),
            ),
            Request::Leaves => Response::Leaves(self.leaves.iter().copied().collect()),
            Request::Stats => Response::Stats(self.stats),
        };
        agent.answer(answer, resp);
    }
}

/// `d` ± 20%, from the node's RNG.
fn jitter(agent: &mut BehaviorAgent<'_, Behaviour>, d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * agent.rng().next_f64())
}
