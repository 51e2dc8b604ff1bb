//! The Plumtree engine: epidemic broadcast trees, as a sans-IO state
//! machine that any behaviour can embed (one instance per tree).
//!
//! Learned from: Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees"
//! (SRDS 2007).
//!
//! Each neighbour is **eager** (messages are pushed to it whole) or **lazy**
//! (it is told only the ids, in batched `IHave`s). All start eager. A node
//! that receives a message it already has tells the sender `Prune` and
//! both make the link lazy, so the eager links converge to a spanning
//! tree: every message then crosses each tree link once. When an `IHave`
//! announces a message that does not arrive through the tree within
//! `graft_timeout`, the node `Graft`s the announcer: the link becomes eager
//! and the message is sent — the tree repairs itself where a link failed.
//!
//! # One tree per origin
//! A message's *origin* is the node where it entered the tree: its author
//! for [`broadcast`](crate::broadcast), the first member on its way for
//! [`pubsub`](crate::pubsub). A spanning tree shared by every origin
//! delivers each message once, but its paths are short only for the
//! origin it formed around: from any other, a message climbs to the
//! tree's centre and down again (measured on 1,000 nodes: last delivery at
//! 34 hops on an overlay of diameter 8), and Plumtree's optimisation
//! cannot fix that for all at once — each origin's shortcut undoes
//! another's. So the engine uses the shared tree only for an origin's
//! *first* message, copying the shared eager set into the origin's own,
//! which then evolves alone:
//! - a duplicate prunes the link in the origin's tree (and in the shared
//!   tree too when the message was the origin's first, so the shared tree
//!   still converges);
//! - an `IHave` showing that a neighbour got the origin's latest message
//!   in fewer hops (by more than `optimize_threshold`) moves this node
//!   under that neighbour with `Route` messages: an origin's tree becomes
//!   its shortest-path tree within a message or two;
//! - a `Graft` adds the grafter to the trees of the messages it asked for.
//!
//! At most `trees_max` origins are kept (the least recently heard is
//! forgotten: its next message travels the shared tree again), each a
//! handful of ids.
//!
//! # Bounds
//! Every structure is bounded, so memory never grows with traffic or with
//! a slow peer: ids seen (`seen_max`, kept `seen_ttl`), payloads kept to
//! answer grafts (`cache_max`, kept `cache_ttl`), ids awaited from `IHave`s
//! (`missing_max`; oldest dropped), ids queued for one lazy peer (`ihave_max`:
//! a full batch is sent at once). A neighbour whose send queue overflows
//! ([`Plumtree::peer_slow`]) is made lazy: it stops getting whole messages
//! and repairs from `IHave`s at its own pace.
//!
//! # Driving it
//! Feed it [`neighbor_up`](Plumtree::neighbor_up) /
//! [`neighbor_down`](Plumtree::neighbor_down), the messages that arrive
//! ([`on_message`](Plumtree::on_message)), what to broadcast
//! ([`broadcast`](Plumtree::broadcast)), and the time
//! ([`on_timeout`](Plumtree::on_timeout) at [`next_deadline`](Plumtree::next_deadline));
//! after each, take its [`Action`]s with [`take_actions`](Plumtree::take_actions).
//!
//! A neighbour that comes up is told the ids of the recent messages
//! (`catch_up`): a node that joins, or a branch that moves, grafts what it
//! missed instead of losing it.

use plexus_network::{Instant, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A message's id: its author and the author's sequence number (which
/// starts at a random value, so a restarted author does not reuse ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The node that broadcast it.
    pub author: NodeId,
    /// The author's sequence number.
    pub seq: u64,
}

/// A Plumtree wire message, carrying payloads of type `P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeMsg<P> {
    /// A whole message, `round` hops from its origin.
    Gossip {
        /// Its id.
        id: MsgId,
        /// Where it entered the tree (the author, for broadcast).
        origin: NodeId,
        /// Hops from the origin when sent.
        round: u16,
        /// The message.
        payload: P,
    },
    /// "I have these": ids and their rounds, from a lazy neighbour.
    IHave(Vec<(MsgId, u16)>),
    /// "Send me these, and be my eager neighbour."
    Graft(Vec<MsgId>),
    /// "You sent me a duplicate of `id`: stop pushing me `origin`'s
    /// messages."
    Prune {
        /// The tree the duplicate travelled.
        origin: NodeId,
        /// The duplicate.
        id: MsgId,
    },
    /// "For `origin`'s messages only: push them to me (`push`), or stop."
    Route {
        /// The tree that changes.
        origin: NodeId,
        /// Push to me (true) or not (false).
        push: bool,
    },
}

/// What the engine asks its behaviour to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Send `msg` to neighbour `to`.
    Send {
        /// The neighbour.
        to: NodeId,
        /// The message.
        msg: TreeMsg<P>,
    },
    /// A message arrived for the first time: hand it to the application.
    Deliver {
        /// Its id.
        id: MsgId,
        /// Hops from where it entered the tree (0: sent by this node).
        round: u16,
        /// The neighbour it came from (this node for its own).
        from: NodeId,
        /// The message.
        payload: P,
    },
}

/// Settings of one tree. `Default` gives the values each field documents.
#[derive(Debug, Clone)]
pub struct PlumtreeConfig {
    /// Wait for a message announced by an `IHave` to arrive through the
    /// tree before grafting its announcer. Default 400 ms.
    pub graft_timeout: Duration,
    /// Wait after a graft before grafting the next announcer. Default 200 ms.
    pub graft_retry: Duration,
    /// `IHave`s to one neighbour are batched for this long. Default 25 ms.
    pub ihave_interval: Duration,
    /// Most ids in one `IHave` (a full batch goes at once). Default 512.
    pub ihave_max: usize,
    /// Most message ids remembered as seen. Default 100,000.
    pub seen_max: usize,
    /// How long an id is remembered as seen. Default 5 min.
    pub seen_ttl: Duration,
    /// Most payloads kept to answer grafts. Default 10,000.
    pub cache_max: usize,
    /// How long a payload is kept to answer grafts. Default 60 s.
    pub cache_ttl: Duration,
    /// Most ids awaited from `IHave`s at once. Default 10,000.
    pub missing_max: usize,
    /// A neighbour that got an origin's latest message in more than this
    /// many hops fewer than this node did becomes this node's parent in
    /// the origin's tree (Plumtree's optimisation, per origin). Default 0:
    /// any shorter path is taken, so each origin's tree becomes a
    /// shortest-path tree. `u16::MAX` turns it off.
    pub optimize_threshold: u16,
    /// Most origins with a tree of their own. Default 1,024; the least
    /// recently heard is forgotten (its next message uses the shared tree).
    pub trees_max: usize,
    /// A new neighbour is told the ids of the messages of this last while,
    /// so it can graft what it missed. Default 30 s.
    pub catch_up: Duration,
    /// At most this many ids. Default 1,024.
    pub catch_up_max: usize,
}

impl Default for PlumtreeConfig {
    fn default() -> Self {
        PlumtreeConfig {
            graft_timeout: Duration::from_millis(400),
            graft_retry: Duration::from_millis(200),
            ihave_interval: Duration::from_millis(25),
            ihave_max: 512,
            seen_max: 100_000,
            seen_ttl: Duration::from_secs(300),
            cache_max: 10_000,
            cache_ttl: Duration::from_secs(60),
            missing_max: 10_000,
            optimize_threshold: 0,
            trees_max: 1024,
            catch_up: Duration::from_secs(30),
            catch_up_max: 1024,
        }
    }
}

/// Counters of one tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Messages broadcast by this node.
    pub broadcast: u64,
    /// Messages delivered (first receptions).
    pub delivered: u64,
    /// Whole copies received of messages already delivered.
    pub duplicates: u64,
    /// Whole messages sent (eager pushes and graft answers).
    pub gossip_sent: u64,
    /// Ids announced in `IHave`s.
    pub ihave_ids_sent: u64,
    /// Grafts sent.
    pub grafts_sent: u64,
    /// Prunes sent.
    pub prunes_sent: u64,
    /// Announced messages never received (no announcer left to graft).
    pub given_up: u64,
    /// Neighbours made lazy because their send queue overflowed.
    pub slow_peers: u64,
    /// Moves to a closer parent in an origin's tree.
    pub reroutes: u64,
}

/// One origin's tree at this node.
#[derive(Debug)]
struct OriginTree {
    /// Neighbours this origin's messages are pushed to whole.
    eager: Vec<NodeId>,
    /// Who the latest message came from (this node, if it is the origin).
    parent: Option<NodeId>,
    /// The latest message, and this node's hops from the origin for it
    /// (lowered when this node reroutes).
    latest: (MsgId, u16),
    /// The message that made this tree (the origin's first seen here).
    first: MsgId,
    /// When the origin was last heard, for eviction.
    used: Instant,
}

#[derive(Debug)]
struct Missing {
    announcers: VecDeque<(NodeId, u16)>,
    deadline: Instant,
}

/// One broadcast tree. See the [module docs](self).
#[derive(Debug)]
pub struct Plumtree<P> {
    config: PlumtreeConfig,
    local: NodeId,
    /// The shared tree: every origin's first message.
    eager: BTreeSet<NodeId>,
    lazy: BTreeSet<NodeId>,
    origins: BTreeMap<NodeId, OriginTree>,
    /// Neighbours that lately brought this node a first message through the
    /// shared tree: links the shared tree must keep (see `unlink`).
    carried: BTreeMap<NodeId, Instant>,
    seen: BTreeMap<MsgId, Instant>,
    seen_order: VecDeque<(Instant, MsgId)>,
    /// Payloads to answer grafts, with their hops and origin.
    cache: BTreeMap<MsgId, (u16, NodeId, P)>,
    cache_order: VecDeque<(Instant, MsgId)>,
    missing: BTreeMap<MsgId, Missing>,
    /// Deadlines of `missing`, for `next_deadline`.
    missing_deadlines: BTreeSet<(Instant, MsgId)>,
    ihave: BTreeMap<NodeId, Vec<(MsgId, u16)>>,
    ihave_due: Option<Instant>,
    actions: Vec<Action<P>>,
    stats: TreeStats,
}

impl<P: Clone> Plumtree<P> {
    /// A tree at node `local`, with no neighbours yet.
    pub fn new(local: NodeId, config: PlumtreeConfig) -> Self {
        Plumtree {
            config,
            local,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            origins: BTreeMap::new(),
            carried: BTreeMap::new(),
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
            cache: BTreeMap::new(),
            cache_order: VecDeque::new(),
            missing: BTreeMap::new(),
            missing_deadlines: BTreeSet::new(),
            ihave: BTreeMap::new(),
            ihave_due: None,
            actions: Vec::new(),
            stats: TreeStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> TreeStats {
        self.stats
    }

    /// The shared tree's eager neighbours, ascending: where an origin's
    /// first message goes whole.
    pub fn eager(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.eager.iter().copied()
    }

    /// Where `origin`'s messages go whole from this node (the shared
    /// tree's eager neighbours if it has no tree of its own here yet).
    pub fn eager_for(&self, origin: &NodeId) -> Vec<NodeId> {
        match self.origins.get(origin) {
            Some(t) => t.eager.clone(),
            None => self.eager.iter().copied().collect(),
        }
    }

    /// Origins with a tree of their own here.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    /// The shared tree's lazy neighbours, ascending.
    pub fn lazy(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.lazy.iter().copied()
    }

    /// Whether `node` is a neighbour of this tree.
    pub fn has_neighbor(&self, node: &NodeId) -> bool {
        self.eager.contains(node) || self.lazy.contains(node)
    }

    /// Whether the message `id` was seen (delivered or broadcast) lately.
    pub fn has_seen(&self, id: &MsgId) -> bool {
        self.seen.contains_key(id)
    }

    /// The actions queued since the last call.
    pub fn take_actions(&mut self) -> std::vec::Drain<'_, Action<P>> {
        self.actions.drain(..)
    }

    /// A new neighbour: eager until a duplicate says otherwise. It is told
    /// the ids of the messages of the last `catch_up` (at most
    /// `catch_up_max`), so whatever it missed while it was not linked — a
    /// branch that just moved, a node that just joined — it can graft.
    pub fn neighbor_up(&mut self, now: Instant, node: NodeId) {
        if node == self.local || self.has_neighbor(&node) {
            return;
        }
        self.eager.insert(node);
        for t in self.origins.values_mut() {
            if !t.eager.contains(&node) {
                t.eager.push(node);
            }
        }
        let recent: Vec<(MsgId, u16)> = self
            .cache_order
            .iter()
            .rev()
            .take_while(|(t, _)| now - *t <= self.config.catch_up)
            .filter_map(|(_, id)| self.cache.get(id).map(|(r, _, _)| (*id, *r)))
            .take(self.config.catch_up_max)
            .collect();
        if recent.is_empty() {
            return;
        }
        for chunk in recent.chunks(self.config.ihave_max.max(1)) {
            self.stats.ihave_ids_sent += chunk.len() as u64;
            self.actions.push(Action::Send {
                to: node,
                msg: TreeMsg::IHave(chunk.to_vec()),
            });
        }
    }

    /// A neighbour is gone.
    pub fn neighbor_down(&mut self, node: NodeId) {
        self.eager.remove(&node);
        self.lazy.remove(&node);
        self.ihave.remove(&node);
        self.carried.remove(&node);
        for t in self.origins.values_mut() {
            t.eager.retain(|n| *n != node);
            if t.parent == Some(node) {
                t.parent = None;
            }
        }
        for m in self.missing.values_mut() {
            m.announcers.retain(|(n, _)| *n != node);
        }
    }

    /// A neighbour cannot keep up (its send queue overflowed): it gets ids
    /// instead of whole messages from now on.
    pub fn peer_slow(&mut self, node: NodeId) {
        if self.eager.remove(&node) {
            self.lazy.insert(node);
            self.stats.slow_peers += 1;
        }
        for t in self.origins.values_mut() {
            t.eager.retain(|n| *n != node);
        }
    }

    /// Broadcasts a message this node authored: it is delivered here too
    /// (an [`Action::Deliver`] with round 0).
    pub fn broadcast(&mut self, now: Instant, id: MsgId, payload: P) {
        if self.seen.contains_key(&id) {
            return;
        }
        self.stats.broadcast += 1;
        self.enter(now, id, 0, self.local, payload);
    }

    /// Takes in a message that enters the tree at this node although it
    /// came from elsewhere (`from`, `round` hops away: pubsub's
    /// publications on their way to a topic's tree). This node is its
    /// origin; `from` gets nothing back.
    pub fn inject(&mut self, now: Instant, from: NodeId, id: MsgId, round: u16, payload: P) {
        if self.seen.contains_key(&id) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.delivered += 1;
        self.enter(now, id, round, from, payload);
    }

    fn enter(&mut self, now: Instant, id: MsgId, round: u16, from: NodeId, payload: P) {
        let local = self.local;
        let t = self.origin_tree(now, local, id);
        t.parent = Some(local);
        t.latest = (id, round);
        self.remember(now, id, round, local, payload.clone());
        self.push(now, id, round, local, &payload, Some(from));
        self.actions.push(Action::Deliver {
            id,
            round,
            from,
            payload,
        });
    }

    /// A message from `from`. A node need not be a neighbour of this tree
    /// to send it messages: trees may be one-way (pubsub pushes only
    /// towards subscribers), so messages from anyone are taken, but only
    /// neighbours are pushed to.
    pub fn on_message(&mut self, now: Instant, from: NodeId, msg: TreeMsg<P>) {
        match msg {
            TreeMsg::Gossip {
                id,
                origin,
                round,
                payload,
            } => self.gossip(now, from, id, origin, round, payload),
            TreeMsg::IHave(ids) => self.ihave(now, from, ids),
            TreeMsg::Graft(ids) => {
                if self.has_neighbor(&from) {
                    self.make_eager(from);
                }
                for id in ids {
                    let Some((round, origin, payload)) = self.cache.get(&id).cloned() else {
                        continue;
                    };
                    if let Some(t) = self.origins.get_mut(&origin) {
                        if self.eager.contains(&from) && !t.eager.contains(&from) {
                            t.eager.push(from);
                        }
                    }
                    self.stats.gossip_sent += 1;
                    self.actions.push(Action::Send {
                        to: from,
                        msg: TreeMsg::Gossip {
                            id,
                            origin,
                            round,
                            payload,
                        },
                    });
                }
            }
            TreeMsg::Prune { origin, id } => {
                if self.unlink(now, from, origin, id) {
                    // That link brought us a first message just now: the
                    // shared tree keeps it (see `unlink`); tell them.
                    self.actions.push(Action::Send {
                        to: from,
                        msg: TreeMsg::Graft(Vec::new()),
                    });
                }
            }
            TreeMsg::Route { origin, push } => {
                if !self.has_neighbor(&from) {
                    return;
                }
                match (self.origins.get_mut(&origin), push) {
                    (Some(t), true) if !t.eager.contains(&from) => t.eager.push(from),
                    (Some(t), false) => t.eager.retain(|n| *n != from),
                    // No tree for the origin here: the shared tree serves it
                    // until its next message makes one.
                    _ => {}
                }
            }
        }
    }

    /// `node` sent a duplicate of `id`, or was told one: no more of
    /// `origin`'s messages on that link; nor of anyone's first message if
    /// this was the origin's first (the shared tree has a cycle there) —
    /// unless that link brought this node another first message lately.
    /// Messages in flight at once each prune their own cycle edge, and two
    /// of them can cut the shared tree in two; a link that is some recent
    /// message's tree link is kept. Returns whether it was kept so.
    fn unlink(&mut self, now: Instant, node: NodeId, origin: NodeId, id: MsgId) -> bool {
        let shared = match self.origins.get_mut(&origin) {
            Some(t) => {
                t.eager.retain(|n| *n != node);
                t.first == id
            }
            None => true,
        };
        if !shared {
            return false;
        }
        let window = self.config.graft_timeout * 2;
        if self.carried.get(&node).is_some_and(|t| now - *t < window) {
            return true;
        }
        if self.eager.remove(&node) {
            self.lazy.insert(node);
        }
        false
    }

    /// `origin`'s tree, made from the shared tree if `id` is the first of
    /// its messages heard here (or since it was forgotten).
    fn origin_tree(&mut self, now: Instant, origin: NodeId, id: MsgId) -> &mut OriginTree {
        if !self.origins.contains_key(&origin) && self.origins.len() >= self.config.trees_max {
            let oldest = self
                .origins
                .iter()
                .min_by_key(|(_, t)| t.used)
                .map(|(o, _)| *o);
            if let Some(o) = oldest {
                self.origins.remove(&o);
            }
        }
        let shared = &self.eager;
        let t = self.origins.entry(origin).or_insert_with(|| OriginTree {
            eager: shared.iter().copied().collect(),
            parent: None,
            latest: (id, u16::MAX),
            first: id,
            used: now,
        });
        t.used = now;
        t
    }

    /// `node` announced message `id` at `hops` from its origin: if that is
    /// more than `optimize_threshold` hops closer than this node's parent
    /// brought it, make `node` the parent in the origin's tree.
    fn shortcut(&mut self, id: MsgId, node: NodeId, hops: u16) {
        if self.config.optimize_threshold == u16::MAX || !self.has_neighbor(&node) {
            return;
        }
        let threshold = self.config.optimize_threshold;
        let Some(&(_, origin, _)) = self.cache.get(&id) else {
            return;
        };
        let Some(t) = self.origins.get_mut(&origin) else {
            return;
        };
        let via = hops.saturating_add(1);
        if t.latest.0 != id
            || t.parent == Some(node)
            || t.parent == Some(self.local)
            || via.saturating_add(threshold) >= t.latest.1
        {
            return;
        }
        let old = t.parent.replace(node);
        t.latest.1 = via;
        if t.first != id {
            // Neither needs this origin's messages from here. (On the
            // origin's first message the push goes on: its duplicate is
            // what prunes the shared tree's cycle.)
            t.eager.retain(|n| *n != node && Some(*n) != old);
        }
        self.stats.reroutes += 1;
        self.actions.push(Action::Send {
            to: node,
            msg: TreeMsg::Route { origin, push: true },
        });
        if let Some(old) = old.filter(|o| self.has_neighbor(o)) {
            self.actions.push(Action::Send {
                to: old,
                msg: TreeMsg::Route {
                    origin,
                    push: false,
                },
            });
        }
    }

    /// The next moment [`on_timeout`](Self::on_timeout) has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let graft = self.missing_deadlines.first().map(|(t, _)| *t);
        match (graft, self.ihave_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what is due at `now`: grafts for messages that did not come,
    /// batched `IHave`s, expiry of old ids and payloads.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.ihave_due.is_some_and(|t| t <= now) {
            self.flush_ihaves();
        }
        let mut grafts: BTreeMap<NodeId, Vec<MsgId>> = BTreeMap::new();
        while let Some(&(t, id)) = self.missing_deadlines.first() {
            if t > now {
                break;
            }
            self.missing_deadlines.pop_first();
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            match m.announcers.pop_front() {
                Some((node, _)) => {
                    grafts.entry(node).or_default().push(id);
                    m.deadline = now + self.config.graft_retry;
                    self.missing_deadlines.insert((m.deadline, id));
                }
                None => {
                    self.missing.remove(&id);
                    self.stats.given_up += 1;
                }
            }
        }
        for (node, ids) in grafts {
            if self.has_neighbor(&node) {
                self.make_eager(node);
            }
            self.stats.grafts_sent += 1;
            self.actions.push(Action::Send {
                to: node,
                msg: TreeMsg::Graft(ids),
            });
        }
        self.expire(now);
    }

    fn gossip(
        &mut self,
        now: Instant,
        from: NodeId,
        id: MsgId,
        origin: NodeId,
        round: u16,
        payload: P,
    ) {
        let link = self.has_neighbor(&from);
        if self.seen.contains_key(&id) {
            self.stats.duplicates += 1;
            // Whoever pushed it to us should not again: prune them (and,
            // if we push to them too, stop). A shared link we must keep
            // is unlinked for this origin only.
            let msg = if self.unlink(now, from, origin, id) {
                TreeMsg::Route {
                    origin,
                    push: false,
                }
            } else {
                TreeMsg::Prune { origin, id }
            };
            self.stats.prunes_sent += 1;
            self.actions.push(Action::Send { to: from, msg });
            return;
        }
        self.stats.delivered += 1;
        let next = round.saturating_add(1);
        let t = self.origin_tree(now, origin, id);
        t.latest = (id, next);
        t.parent = link.then_some(from);
        // The parent has the origin's messages before this node does.
        t.eager.retain(|n| *n != from);
        if link && t.first == id {
            // It came through the shared tree: keep that link both ways.
            self.make_eager(from);
            self.carried.insert(from, now);
        }
        self.remember(now, id, next, origin, payload.clone());
        if let Some(m) = self.missing.remove(&id) {
            self.missing_deadlines.remove(&(m.deadline, id));
            if let Some(&(n, r)) = m.announcers.iter().min_by_key(|(_, r)| *r) {
                self.shortcut(id, n, r);
            }
        }
        self.push(now, id, next, origin, &payload, Some(from));
        self.actions.push(Action::Deliver {
            id,
            round: next,
            from,
            payload,
        });
    }

    fn ihave(&mut self, now: Instant, from: NodeId, ids: Vec<(MsgId, u16)>) {
        for (id, round) in ids.into_iter().take(self.config.ihave_max) {
            if self.seen.contains_key(&id) {
                self.shortcut(id, from, round);
                continue;
            }
            if let Some(m) = self.missing.get_mut(&id) {
                if m.announcers.len() < 8 && !m.announcers.iter().any(|(n, _)| *n == from) {
                    m.announcers.push_back((from, round));
                }
                continue;
            }
            if self.missing.len() >= self.config.missing_max {
                // Drop the oldest wait: bounded, and the newest announcement
                // is the likeliest to still be cached by its announcer.
                if let Some((t, old)) = self.missing_deadlines.pop_first() {
                    let _ = t;
                    self.missing.remove(&old);
                    self.stats.given_up += 1;
                }
            }
            let deadline = now + self.config.graft_timeout;
            self.missing.insert(
                id,
                Missing {
                    announcers: VecDeque::from([(from, round)]),
                    deadline,
                },
            );
            self.missing_deadlines.insert((deadline, id));
        }
    }

    fn make_eager(&mut self, node: NodeId) {
        if self.lazy.remove(&node) || !self.eager.contains(&node) {
            self.eager.insert(node);
        }
    }

    /// Eager push along the origin's tree, lazy push (batched ids) to the
    /// other neighbours.
    fn push(
        &mut self,
        now: Instant,
        id: MsgId,
        round: u16,
        origin: NodeId,
        payload: &P,
        except: Option<NodeId>,
    ) {
        let eager = match self.origins.get(&origin) {
            Some(t) => t.eager.clone(),
            None => self.eager.iter().copied().collect(),
        };
        for &n in &eager {
            if Some(n) != except {
                self.stats.gossip_sent += 1;
                self.actions.push(Action::Send {
                    to: n,
                    msg: TreeMsg::Gossip {
                        id,
                        origin,
                        round,
                        payload: payload.clone(),
                    },
                });
            }
        }
        let lazy: Vec<NodeId> = self
            .eager
            .iter()
            .chain(&self.lazy)
            .copied()
            .filter(|n| Some(*n) != except && !eager.contains(n))
            .collect();
        for n in lazy {
            let batch = self.ihave.entry(n).or_default();
            batch.push((id, round));
            self.stats.ihave_ids_sent += 1;
            if batch.len() >= self.config.ihave_max {
                let ids = std::mem::take(batch);
                self.actions.push(Action::Send {
                    to: n,
                    msg: TreeMsg::IHave(ids),
                });
            }
        }
        if self.ihave_due.is_none() && self.ihave.values().any(|b| !b.is_empty()) {
            self.ihave_due = Some(now + self.config.ihave_interval);
        }
    }

    fn flush_ihaves(&mut self) {
        self.ihave_due = None;
        for (n, batch) in std::mem::take(&mut self.ihave) {
            if !batch.is_empty() {
                self.actions.push(Action::Send {
                    to: n,
                    msg: TreeMsg::IHave(batch),
                });
            }
        }
    }

    fn remember(&mut self, now: Instant, id: MsgId, round: u16, origin: NodeId, payload: P) {
        self.seen.insert(id, now);
        self.seen_order.push_back((now, id));
        while self.seen.len() > self.config.seen_max {
            match self.seen_order.pop_front() {
                Some((_, old)) => {
                    self.seen.remove(&old);
                }
                None => break,
            }
        }
        self.cache.insert(id, (round, origin, payload));
        self.cache_order.push_back((now, id));
        while self.cache.len() > self.config.cache_max {
            match self.cache_order.pop_front() {
                Some((_, old)) => {
                    self.cache.remove(&old);
                }
                None => break,
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.cache_order.front() {
            if now - t < self.config.cache_ttl {
                break;
            }
            self.cache_order.pop_front();
            self.cache.remove(&id);
        }
        while let Some(&(t, id)) = self.seen_order.front() {
            if now - t < self.config.seen_ttl {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> MsgId {
        MsgId {
            author: NodeId(9),
            seq,
        }
    }

    fn sends(t: &mut Plumtree<u32>) -> Vec<(NodeId, TreeMsg<u32>)> {
        t.take_actions()
            .filter_map(|a| match a {
                Action::Send { to, msg } => Some((to, msg)),
                Action::Deliver { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_duplicate_prunes_and_an_ihave_grafts_when_the_tree_is_silent() {
        let now = Instant::ZERO;
        let mut t = Plumtree::<u32>::new(NodeId(1), PlumtreeConfig::default());
        for n in [2, 3, 4] {
            t.neighbor_up(now, NodeId(n));
        }
        t.on_message(
            now,
            NodeId(2),
            TreeMsg::Gossip {
                id: id(1),
                origin: NodeId(9),
                round: 0,
                payload: 7,
            },
        );
        let out = sends(&mut t);
        assert_eq!(out.len(), 2, "pushed on to 3 and 4: {out:?}");
        t.on_message(
            now,
            NodeId(3),
            TreeMsg::Gossip {
                id: id(1),
                origin: NodeId(9),
                round: 1,
                payload: 7,
            },
        );
        assert_eq!(
            sends(&mut t),
            vec![(
                NodeId(3),
                TreeMsg::Prune {
                    origin: NodeId(9),
                    id: id(1)
                }
            )]
        );
        assert_eq!(t.lazy().collect::<Vec<_>>(), vec![NodeId(3)]);
        // A later message goes whole to 2 and 4, as an id to 3.
        t.broadcast(now, id(2), 8);
        let out = sends(&mut t);
        assert_eq!(out.len(), 2);
        let due = t.next_deadline().expect("an IHave batch is due");
        t.on_timeout(due);
        assert_eq!(
            sends(&mut t),
            vec![(NodeId(3), TreeMsg::IHave(vec![(id(2), 0)]))]
        );
        // 3 announces a message the tree never brings: graft after the timeout.
        t.on_message(due, NodeId(3), TreeMsg::IHave(vec![(id(5), 2)]));
        let graft_at = t.next_deadline().unwrap();
        assert_eq!(graft_at, due + PlumtreeConfig::default().graft_timeout);
        t.on_timeout(graft_at);
        assert_eq!(
            sends(&mut t),
            vec![(NodeId(3), TreeMsg::Graft(vec![id(5)]))]
        );
        assert!(
            t.eager().any(|n| n == NodeId(3)),
            "the grafted link is eager"
        );
    }

    fn gossip(seq: u64, round: u16) -> TreeMsg<u32> {
        TreeMsg::Gossip {
            id: id(seq),
            origin: NodeId(9),
            round,
            payload: seq as u32,
        }
    }

    #[test]
    fn a_closer_announcer_becomes_the_parent_in_that_origins_tree_only() {
        let now = Instant::ZERO;
        let mut t = Plumtree::<u32>::new(NodeId(1), PlumtreeConfig::default());
        for n in [2, 3, 4] {
            t.neighbor_up(now, NodeId(n));
        }
        // Origin 9's first message comes from 2, five hops out.
        t.on_message(now, NodeId(2), gossip(1, 5));
        let _ = sends(&mut t);
        // 3 had it one hop from 9: this node moves under 3 for origin 9.
        t.on_message(now, NodeId(3), TreeMsg::IHave(vec![(id(1), 1)]));
        assert_eq!(
            sends(&mut t),
            vec![
                (
                    NodeId(3),
                    TreeMsg::Route {
                        origin: NodeId(9),
                        push: true
                    }
                ),
                (
                    NodeId(2),
                    TreeMsg::Route {
                        origin: NodeId(9),
                        push: false
                    }
                ),
            ]
        );
        assert_eq!(t.stats().reroutes, 1);
        // A farther announcer changes nothing.
        t.on_message(now, NodeId(4), TreeMsg::IHave(vec![(id(1), 3)]));
        assert!(sends(&mut t).is_empty());
        // The shared tree is untouched: another origin's first message
        // still goes to every neighbour but the sender.
        assert_eq!(t.eager().count(), 3);
        // Origin 9's next message, from 3, goes on to 4 alone: not back to
        // 3, not to 2 (upstream of this node for 9).
        t.on_message(now, NodeId(3), gossip(2, 1));
        let whole: Vec<NodeId> = sends(&mut t)
            .into_iter()
            .filter(|(_, m)| matches!(m, TreeMsg::Gossip { .. }))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(whole, vec![NodeId(4)]);
        assert_eq!(t.eager_for(&NodeId(9)), vec![NodeId(4)]);
    }

    #[test]
    fn a_route_message_edits_one_origins_tree() {
        let now = Instant::ZERO;
        let mut t = Plumtree::<u32>::new(NodeId(1), PlumtreeConfig::default());
        t.neighbor_up(now, NodeId(2));
        t.neighbor_up(now, NodeId(3));
        t.on_message(now, NodeId(2), gossip(1, 0));
        let _ = sends(&mut t);
        assert_eq!(t.eager_for(&NodeId(9)), vec![NodeId(3)]);
        let stop = TreeMsg::Route {
            origin: NodeId(9),
            push: false,
        };
        t.on_message(now, NodeId(3), stop);
        assert!(t.eager_for(&NodeId(9)).is_empty());
        let start = TreeMsg::Route {
            origin: NodeId(9),
            push: true,
        };
        t.on_message(now, NodeId(2), start);
        assert_eq!(t.eager_for(&NodeId(9)), vec![NodeId(2)]);
        assert_eq!(t.eager().count(), 2, "the shared tree keeps both");
    }

    #[test]
    fn a_graft_is_answered_from_the_cache_and_memory_stays_bounded() {
        let cfg = PlumtreeConfig {
            seen_max: 100,
            cache_max: 10,
            ..PlumtreeConfig::default()
        };
        let mut t = Plumtree::<u32>::new(NodeId(1), cfg);
        t.neighbor_up(Instant::ZERO, NodeId(2));
        for s in 0..1000 {
            t.broadcast(Instant::from_millis(s), id(s), s as u32);
        }
        let _ = sends(&mut t);
        assert!(t.seen.len() <= 100 && t.cache.len() <= 10);
        t.on_message(
            Instant::from_secs(2),
            NodeId(2),
            TreeMsg::Graft(vec![id(999), id(1)]),
        );
        assert_eq!(
            sends(&mut t),
            vec![(
                NodeId(2),
                TreeMsg::Gossip {
                    id: id(999),
                    origin: NodeId(1),
                    round: 0,
                    payload: 999
                }
            )],
            "only what is still cached"
        );
        t.on_timeout(Instant::from_secs(1000));
        assert!(t.cache.is_empty() && t.seen.is_empty(), "expired");
        let mut t = Plumtree::<u32>::new(
            NodeId(1),
            PlumtreeConfig {
                trees_max: 4,
                ..PlumtreeConfig::default()
            },
        );
        t.neighbor_up(Instant::ZERO, NodeId(2));
        for author in 10..100 {
            let id = MsgId {
                author: NodeId(author),
                seq: 1,
            };
            let msg = TreeMsg::Gossip {
                id,
                origin: NodeId(author),
                round: 0,
                payload: 0,
            };
            t.on_message(Instant::from_millis(author), NodeId(2), msg);
        }
        assert_eq!(t.origins(), 4, "the least recently heard are forgotten");
    }
}
