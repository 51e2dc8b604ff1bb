//! Per-topic roots, members and trees. See the [module docs](super).

use super::protocol::{Advert, Message, Topic, NO_ROOT};
use super::{Config, Event, Request, Response, Stats};
use crate::broadcast::plumtree::Action;
use crate::broadcast::{MsgId, Plumtree, TreeMsg};
use crate::neighbourhood::{Change, Neighbourhood};
use bytes::Bytes;
use plexus_network::{
    Answer, BehaviorAgent, ConnId, ConnectionInfo, DropReason, DropReport, Incoming, Instant,
    NetworkBehavior, NoHandler, NodeId, RouteRule, ServiceId,
};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

/// Timer tokens.
const TREES: u64 = 0;
const INTEREST: u64 = 1;
const UP: u64 = 2;

/// An `Up` this node keeps until the next hop acknowledges it.
#[derive(Debug)]
struct PendingUp {
    topic: Topic,
    hops: u8,
    payload: Bytes,
    via: NodeId,
    sent: Instant,
    attempts: u32,
}

type Agent<'a> = BehaviorAgent<'a, Behaviour>;

/// One topic at this node.
#[derive(Debug)]
struct TopicState {
    subscribed: bool,
    /// What each neighbour told us.
    heard: BTreeMap<NodeId, Advert>,
    /// What we last told each neighbour.
    told: BTreeMap<NodeId, Advert>,
    /// Membership's leaves that subscribe (their adverts say `member`): a
    /// leaf takes no part in choosing the root, so it cannot move or
    /// capture it; this node subscribes for it.
    leaf_members: BTreeSet<NodeId>,
    /// The tree among member neighbours (kept while this node is a member).
    tree: Plumtree<Bytes>,
}

/// The route this node follows to a topic's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    root: NodeId,
    dist: u8,
    /// `None`: this node is the root.
    parent: Option<NodeId>,
}

impl TopicState {
    /// The best route to a root: the smallest root id, then the shortest,
    /// then the smallest neighbour id; never through a neighbour whose own
    /// route goes through us.
    fn route(&self, me: NodeId) -> Option<Route> {
        let mut best = self.subscribes().then_some(Route {
            root: me,
            dist: 0,
            parent: None,
        });
        for (&n, a) in &self.heard {
            if a.parent || a.dist >= NO_ROOT - 1 {
                continue;
            }
            let r = Route {
                root: a.root,
                dist: a.dist + 1,
                parent: Some(n),
            };
            if best.is_none_or(|b| (r.root, r.dist, r.parent) < (b.root, b.dist, b.parent)) {
                best = Some(r);
            }
        }
        best
    }

    /// Member neighbours whose parent we are.
    fn has_member_child(&self) -> bool {
        self.heard.values().any(|a| a.parent && a.member)
    }

    /// This node subscribes, itself or for a leaf.
    fn subscribes(&self) -> bool {
        self.subscribed || !self.leaf_members.is_empty()
    }

    fn member(&self) -> bool {
        self.subscribes() || self.has_member_child()
    }

    fn advert_to(&self, me: NodeId, n: NodeId) -> Advert {
        match self.route(me) {
            Some(r) => Advert {
                root: r.root,
                dist: r.dist,
                parent: r.parent == Some(n),
                member: self.member(),
            },
            None => Advert::NONE,
        }
    }

    /// The tree's neighbours: member neighbours, while we are a member.
    fn tree_neighbours(&self) -> BTreeSet<NodeId> {
        if !self.member() {
            return BTreeSet::new();
        }
        self.heard
            .iter()
            .filter(|(_, a)| a.member)
            .map(|(n, _)| *n)
            .chain(self.leaf_members.iter().copied())
            .collect()
    }

    /// Nothing left to know or say about it.
    fn idle(&self) -> bool {
        !self.subscribes()
            && self.heard.values().all(|a| a.dist >= NO_ROOT && !a.member)
            && self.told.values().all(|a| *a == Advert::NONE)
    }
}

/// The pubsub behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    hood: Neighbourhood,
    topics: BTreeMap<Topic, TopicState>,
    /// Topics whose adverts may have changed.
    dirty: BTreeSet<Topic>,
    interest_armed: bool,
    trees_armed: Option<Instant>,
    next_seq: u64,
    forged: u64,
    topics_refused: u64,
    leaf_topics_refused: u64,
    /// `Up`s not acknowledged yet (bounded by `Config::max_pending_up`).
    pending_up: BTreeMap<MsgId, PendingUp>,
    up_armed: bool,
    up_given_up: u64,
}

impl Behaviour {
    /// A pubsub behaviour with these settings.
    pub fn new(config: Config) -> Self {
        Behaviour {
            hood: Neighbourhood::with_leaves(config.neighbours),
            config,
            topics: BTreeMap::new(),
            dirty: BTreeSet::new(),
            interest_armed: false,
            trees_armed: None,
            next_seq: 0,
            forged: 0,
            topics_refused: 0,
            leaf_topics_refused: 0,
            pending_up: BTreeMap::new(),
            up_armed: false,
            up_given_up: 0,
        }
    }

    /// Topics this node subscribes to.
    pub fn subscriptions(&self) -> impl Iterator<Item = Topic> + '_ {
        self.topics
            .iter()
            .filter(|(_, t)| t.subscribed)
            .map(|(t, _)| *t)
    }

    /// Whether this node is a member of `topic`'s tree (subscriber or relay).
    pub fn is_member(&self, topic: Topic) -> bool {
        self.topics.get(&topic).is_some_and(|t| t.member())
    }

    /// The root this node follows for `topic`, if any.
    pub fn root(&self, topic: Topic, me: NodeId) -> Option<NodeId> {
        self.topics.get(&topic)?.route(me).map(|r| r.root)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            topics: self.topics.len(),
            forged: self.forged,
            topics_refused: self.topics_refused,
            leaf_topics_refused: self.leaf_topics_refused,
            ups_pending: self.pending_up.len(),
            ups_given_up: self.up_given_up,
            ..Stats::default()
        };
        for t in self.topics.values() {
            if t.member() && !t.subscribed {
                s.relaying += 1;
            }
            let ts = t.tree.stats();
            s.trees.broadcast += ts.broadcast;
            s.trees.delivered += ts.delivered;
            s.trees.duplicates += ts.duplicates;
            s.trees.gossip_sent += ts.gossip_sent;
            s.trees.ihave_ids_sent += ts.ihave_ids_sent;
            s.trees.grafts_sent += ts.grafts_sent;
            s.trees.prunes_sent += ts.prunes_sent;
            s.trees.given_up += ts.given_up;
            s.trees.slow_peers += ts.slow_peers;
        }
        s
    }

    /// The topic's state, created if there is room.
    fn topic(&mut self, me: NodeId, topic: Topic) -> Option<&mut TopicState> {
        if !self.topics.contains_key(&topic) {
            if self.topics.len() >= self.config.max_topics {
                self.topics_refused += 1;
                if self.topics_refused.is_power_of_two() {
                    log::warn!(
                        "node {me}: pubsub tracks {} topics already; {topic} ignored",
                        self.config.max_topics
                    );
                }
                return None;
            }
            self.topics.insert(
                topic,
                TopicState {
                    subscribed: false,
                    heard: BTreeMap::new(),
                    told: BTreeMap::new(),
                    leaf_members: BTreeSet::new(),
                    tree: Plumtree::new(me, self.config.tree.clone()),
                },
            );
        }
        self.topics.get_mut(&topic)
    }

    /// Brings the topic's tree in line with its member neighbours, and
    /// marks its adverts for sending.
    fn changed(&mut self, agent: &mut Agent<'_>, topic: Topic) {
        let now = agent.now();
        if let Some(t) = self.topics.get_mut(&topic) {
            let want = t.tree_neighbours();
            let have: BTreeSet<NodeId> = t.tree.eager().chain(t.tree.lazy()).collect();
            for n in have.difference(&want) {
                t.tree.neighbor_down(*n);
            }
            for n in want.difference(&have) {
                t.tree.neighbor_up(now, *n);
            }
        }
        self.dirty.insert(topic);
        if !self.interest_armed {
            self.interest_armed = true;
            agent.schedule_after(self.config.interest_delay, INTEREST);
        }
    }

    /// Sends each neighbour the adverts that changed for it; forgets topics
    /// nobody cares about any more.
    fn send_interest(&mut self, agent: &mut Agent<'_>) {
        let me = agent.local_node();
        let dirty = std::mem::take(&mut self.dirty);
        let neighbours: Vec<(NodeId, ConnId)> = self.hood.iter().collect();
        for (n, conn) in neighbours {
            let mut batch = Vec::new();
            for topic in &dirty {
                let Some(t) = self.topics.get_mut(topic) else {
                    continue;
                };
                let advert = t.advert_to(me, n);
                let told = t.told.get(&n).copied().unwrap_or(Advert::NONE);
                if advert != told {
                    t.told.insert(n, advert);
                    batch.push((*topic, advert));
                }
            }
            if !batch.is_empty() {
                agent.send_to_conn(conn, Message::Interest(batch));
            }
        }
        for topic in dirty {
            if self.topics.get(&topic).is_some_and(TopicState::idle) {
                self.topics.remove(&topic);
            }
        }
    }

    /// Follows a change of the neighbours. A peer on a new connection may
    /// have restarted and know nothing: start over with it.
    fn on_change(&mut self, agent: &mut Agent<'_>, change: Change) {
        match change {
            Change::None | Change::Moved(..) => {}
            Change::Up(node, _) => self.neighbour_up(agent, node),
            Change::Replaced(node, _) => {
                self.neighbour_down(agent, node);
                self.neighbour_up(agent, node);
            }
            Change::Down(node) => self.neighbour_down(agent, node),
        }
    }

    fn neighbour_up(&mut self, agent: &mut Agent<'_>, node: NodeId) {
        // It knows nothing yet: everything we have to say is news.
        let topics: Vec<Topic> = self.topics.keys().copied().collect();
        for topic in topics {
            if let Some(t) = self.topics.get_mut(&topic) {
                t.told.remove(&node);
            }
            self.changed(agent, topic);
        }
    }

    fn neighbour_down(&mut self, agent: &mut Agent<'_>, node: NodeId) {
        let topics: Vec<Topic> = self.topics.keys().copied().collect();
        for topic in topics {
            if let Some(t) = self.topics.get_mut(&topic) {
                t.heard.remove(&node);
                t.told.remove(&node);
                t.leaf_members.remove(&node);
            }
            self.changed(agent, topic);
        }
        // What was on its way through it goes another way.
        self.retry_ups(agent, Some(node));
        self.run(agent);
    }

    /// Carries out what the trees asked, and keeps their timer armed.
    fn run(&mut self, agent: &mut Agent<'_>) {
        let mut next: Option<Instant> = None;
        for (&topic, t) in self.topics.iter_mut() {
            let subscribed = t.subscribed;
            for action in t.tree.take_actions() {
                match action {
                    Action::Send { to, msg } => match self.hood.conn(&to).as_ref() {
                        Some(&conn) => agent.send_to_conn(conn, Message::Tree { topic, msg }),
                        None => log::trace!("pubsub: {to} is no neighbour any more"),
                    },
                    Action::Deliver {
                        id,
                        round,
                        from,
                        payload,
                    } => {
                        if subscribed {
                            let verified = round == 0 || (round == 1 && from == id.author);
                            agent.emit(Event {
                                topic,
                                id,
                                hops: round,
                                verified,
                                payload,
                            });
                        }
                    }
                }
            }
            if let Some(d) = t.tree.next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        if next != self.trees_armed {
            self.trees_armed = next;
            match next {
                Some(at) => agent.schedule_at(at, TREES),
                None => agent.cancel_timer(TREES),
            }
        }
    }

    /// A publication (authored here or arriving `Up`) enters the topic:
    /// into its tree if this node is a member, else on towards the root.
    fn publish(
        &mut self,
        agent: &mut Agent<'_>,
        topic: Topic,
        id: MsgId,
        hops: u8,
        from: NodeId,
        payload: Bytes,
    ) {
        let me = agent.local_node();
        let now = agent.now();
        // No state is made for a topic this node does not track: a
        // publication of an unknown topic waits for a route (bounded by
        // `max_pending_up`) without taking one of `max_topics`.
        if let Some(t) = self.topics.get_mut(&topic).filter(|t| t.member()) {
            if from == me {
                t.tree.broadcast(now, id, payload);
            } else {
                // It enters the tree here: this node is its origin.
                t.tree.inject(now, from, id, u16::from(hops), payload);
            }
            self.run(agent);
            return;
        }
        self.send_up(agent, topic, id, hops, payload, 0);
    }

    /// Sends an `Up` to this node's parent towards the topic's root, and
    /// keeps it until acknowledged.
    fn send_up(
        &mut self,
        agent: &mut Agent<'_>,
        topic: Topic,
        id: MsgId,
        hops: u8,
        payload: Bytes,
        attempts: u32,
    ) {
        let me = agent.local_node();
        let parent = self
            .topics
            .get(&topic)
            .and_then(|t| t.route(me))
            .and_then(|r| r.parent);
        let Some((via, conn)) = parent.and_then(|p| self.hood.conn(&p).map(|c| (p, c))) else {
            log::debug!("node {me}: pubsub: no route to {topic}'s tree yet; {id:?} waits");
            // Kept (with no next hop) until a route appears or it is given up.
            self.keep_up(agent, id, topic, hops, payload, me, attempts);
            return;
        };
        if hops >= NO_ROOT {
            self.up_given_up += 1;
            return;
        }
        agent.send_to_conn(
            conn,
            Message::Up {
                topic,
                id,
                hops: hops + 1,
                payload: payload.clone(),
            },
        );
        self.keep_up(agent, id, topic, hops, payload, via, attempts);
    }

    #[allow(clippy::too_many_arguments)]
    fn keep_up(
        &mut self,
        agent: &mut Agent<'_>,
        id: MsgId,
        topic: Topic,
        hops: u8,
        payload: Bytes,
        via: NodeId,
        attempts: u32,
    ) {
        if self.pending_up.len() >= self.config.max_pending_up && !self.pending_up.contains_key(&id)
        {
            // Full: the oldest is given up, with a count, never silently.
            if let Some((old, _)) = self.pending_up.pop_first() {
                self.up_given_up += 1;
                log::warn!(
                    "node {}: pubsub: {} publications await acknowledgement; gave up {old:?}",
                    agent.local_node(),
                    self.config.max_pending_up
                );
            }
        }
        self.pending_up.insert(
            id,
            PendingUp {
                topic,
                hops,
                payload,
                via,
                sent: agent.now(),
                attempts,
            },
        );
        if !self.up_armed {
            self.up_armed = true;
            agent.schedule_after(self.config.up_retry, UP);
        }
    }

    /// Sends again the `Up`s that went through `via` (gone), or that were
    /// not acknowledged in time.
    fn retry_ups(&mut self, agent: &mut Agent<'_>, gone: Option<NodeId>) {
        let now = agent.now();
        let retry = self.config.up_retry;
        let due: Vec<MsgId> = self
            .pending_up
            .iter()
            .filter(|(_, p)| Some(p.via) == gone || now - p.sent >= retry)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(p) = self.pending_up.remove(&id) else {
                continue;
            };
            if p.attempts >= 10 {
                self.up_given_up += 1;
                log::warn!(
                    "node {}: pubsub: publication {id:?} unacknowledged after 10 attempts; given up",
                    agent.local_node()
                );
                continue;
            }
            self.send_up(agent, p.topic, id, p.hops, p.payload, p.attempts + 1);
        }
    }
}

impl Behaviour {
    /// A leaf's advert: only whether it subscribes counts (see
    /// `TopicState::leaf_members`), for at most `max_leaf_topics` topics.
    fn leaf_interest(&mut self, agent: &mut Agent<'_>, leaf: NodeId, topic: Topic, member: bool) {
        let me = agent.local_node();
        let has = self
            .topics
            .get(&topic)
            .is_some_and(|t| t.leaf_members.contains(&leaf));
        if member == has {
            return;
        }
        if member {
            let held = self
                .topics
                .values()
                .filter(|t| t.leaf_members.contains(&leaf))
                .count();
            if held >= self.config.max_leaf_topics {
                self.leaf_topics_refused += 1;
                if self.leaf_topics_refused.is_power_of_two() {
                    log::warn!(
                        "node {me}: pubsub: leaf {leaf} subscribes to {held} topics already; {topic} ignored"
                    );
                }
                return;
            }
        }
        let Some(t) = self.topic(me, topic) else {
            return;
        };
        if member {
            t.leaf_members.insert(leaf);
        } else {
            t.leaf_members.remove(&leaf);
        }
        self.changed(agent, topic);
    }
}

impl NetworkBehavior for Behaviour {
    type Msg = Message;
    type Handler = NoHandler<Message>;
    type Event = Event;
    type Rpc = (Request, Response);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        self.next_seq = agent.rng().next_u64() >> 1;
    }

    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        info: ConnectionInfo,
    ) -> Option<NoHandler<Message>> {
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

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Message>) {
        let (Some(_), RouteRule::Direct) = (msg.conn, msg.rule) else {
            return; // pubsub speaks to neighbours only
        };
        let from = msg.source;
        let me = agent.local_node();
        if !self.hood.contains(&from) {
            // Not (or no longer) an overlay neighbour: what it says about
            // routes would point the trees at a node we cannot reach.
            log::trace!("node {me}: pubsub: message from non-neighbour {from} ignored");
            return;
        }
        match msg.msg {
            Message::Interest(adverts) if self.hood.is_leaf(&from) => {
                for (topic, advert) in adverts {
                    self.leaf_interest(agent, from, topic, advert.member);
                }
                self.run(agent);
            }
            Message::Interest(adverts) => {
                for (topic, advert) in adverts {
                    let known = self.topics.contains_key(&topic);
                    if !known && advert == Advert::NONE {
                        continue;
                    }
                    let Some(t) = self.topic(me, topic) else {
                        continue;
                    };
                    if advert == Advert::NONE {
                        t.heard.remove(&from);
                    } else {
                        t.heard.insert(from, advert);
                    }
                    self.changed(agent, topic);
                }
                self.run(agent);
            }
            Message::Tree { topic, msg } => {
                if let TreeMsg::Gossip { id, round: 0, .. } = &msg {
                    if id.author != from {
                        self.forged += 1;
                        log::debug!(
                            "node {me}: pubsub: {from} sent {id:?} as its author's own; dropped"
                        );
                        return;
                    }
                }
                let now = agent.now();
                match self.topics.get_mut(&topic) {
                    Some(t) if t.member() => t.tree.on_message(now, from, msg),
                    _ => {
                        // Not (or no longer) a member: a publication goes
                        // on towards the root; tree upkeep is not for us.
                        if let TreeMsg::Gossip {
                            id, round, payload, ..
                        } = msg
                        {
                            let hops = u8::try_from(round).unwrap_or(NO_ROOT);
                            self.publish(agent, topic, id, hops, from, payload);
                        }
                    }
                }
                self.run(agent);
            }
            Message::Up {
                topic,
                id,
                hops,
                payload,
            } => {
                if hops == 1 && id.author != from {
                    self.forged += 1;
                    return;
                }
                // Ours now: the sender may forget it.
                if let Some(conn) = self.hood.conn(&from) {
                    agent.send_to_conn(conn, Message::UpAck(id));
                }
                self.publish(agent, topic, id, hops, from, payload);
            }
            Message::UpAck(id) => {
                if self.pending_up.get(&id).is_some_and(|p| p.via == from) {
                    self.pending_up.remove(&id);
                }
            }
        }
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        match token {
            TREES => {
                self.trees_armed = None;
                let now = agent.now();
                for t in self.topics.values_mut() {
                    if t.tree.next_deadline().is_some_and(|d| d <= now) {
                        t.tree.on_timeout(now);
                    }
                }
                self.run(agent);
            }
            INTEREST => {
                self.interest_armed = false;
                self.send_interest(agent);
                // Routes may have appeared for what waits.
                if self
                    .pending_up
                    .values()
                    .any(|p| p.via == agent.local_node())
                {
                    let me = agent.local_node();
                    let waiting: Vec<MsgId> = self
                        .pending_up
                        .iter()
                        .filter(|(_, p)| p.via == me)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in waiting {
                        if let Some(p) = self.pending_up.remove(&id) {
                            self.send_up(agent, p.topic, id, p.hops, p.payload, p.attempts);
                        }
                    }
                }
            }
            UP => {
                self.up_armed = false;
                self.retry_ups(agent, None);
                if !self.pending_up.is_empty() && !self.up_armed {
                    self.up_armed = true;
                    agent.schedule_after(self.config.up_retry, UP);
                }
            }
            _ => {}
        }
    }

    fn on_dropped(&mut self, agent: &mut BehaviorAgent<'_, Self>, report: &DropReport) {
        if let DropReason::QueueFull(conn) = report.reason {
            if let Some(node) = self.hood.node_of(conn) {
                for t in self.topics.values_mut() {
                    t.tree.peer_slow(node);
                }
            }
        }
        let _ = agent;
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request,
        answer: Answer<Response>,
    ) {
        let me = agent.local_node();
        match req {
            Request::Subscribe(topic) | Request::Unsubscribe(topic) => {
                let on = matches!(req, Request::Subscribe(_));
                match self.topic(me, topic) {
                    Some(t) => {
                        t.subscribed = on;
                        self.changed(agent, topic);
                        self.run(agent);
                        agent.answer(answer, Response::Done);
                    }
                    None => agent.refuse(
                        answer,
                        format!("tracking {} topics already", self.config.max_topics),
                    ),
                }
            }
            Request::Publish(topic, payload) => {
                if payload.len() > self.config.max_payload {
                    agent.refuse(
                        answer,
                        format!(
                            "payload of {} bytes over the {}-byte maximum",
                            payload.len(),
                            self.config.max_payload
                        ),
                    );
                    return;
                }
                let id = MsgId {
                    author: me,
                    seq: self.next_seq,
                };
                self.next_seq = self.next_seq.wrapping_add(1);
                self.publish(agent, topic, id, 0, me, payload);
                agent.answer(answer, Response::Published(id));
            }
            Request::Subscriptions => {
                let topics = self.subscriptions().collect();
                agent.answer(answer, Response::Subscriptions(topics));
            }
            Request::Stats => {
                let s = self.stats();
                agent.answer(answer, Response::Stats(s));
            }
        }
    }
}
