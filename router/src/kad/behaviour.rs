//! The XOR router's protocol: keeps links in the buckets, the two-hop
//! state and the service vector current.

use super::protocol::{Contact, Find, Found, Message, MAX_ADDRS, MAX_FIND_HOPS};
use super::table::{KadRouter, Link};
use super::{bucket_of, Config, Request, Response, Stats, Status};
use crate::ServiceSet;
use plexus_network::{
    Address, Answer, BehaviorAgent, ConnId, ConnectionInfo, Incoming, Instant, NetworkBehavior,
    NoHandler, NodeId, OutgoingConnectionError, RouteRule, RouterTable, ServiceId,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Buckets of a 64-bit id space; a lookup for bucket [`CLOSEST`] seeks the
/// node's own closest nodes.
const BUCKETS: usize = 64;
const CLOSEST: u8 = 64;
/// Most services a state message may carry (there are 256 ids).
const MAX_SERVICES: usize = 256;

/// Timer tokens.
const T_PERIOD: u64 = 0;
const T_TRIGGER: u64 = 1;
const T_REFRESH: u64 = 2;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Links in it.
    links: u32,
    /// A lookup found it empty: none before then.
    empty_until: Option<Instant>,
    /// The next wait after a lookup that finds it empty (doubles up to
    /// `empty_recheck`; zero: one period).
    backoff: Duration,
}

/// The XOR router's behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    router: Arc<KadRouter>,
    conns: BTreeMap<NodeId, Vec<ConnId>>,
    /// Dials in flight: the bucket each fills and when it started.
    dialling: BTreeMap<NodeId, (usize, Instant)>,
    /// Lookups waited for: id → (bucket, sent at). One per bucket at most.
    outstanding: BTreeMap<u64, (u8, Instant)>,
    buckets: [Bucket; BUCKETS],
    next_self_lookup: Option<Instant>,
    /// Wait before the next self-lookup: one period at first, doubling up
    /// to `self_lookup_interval`, so a node that joined together with many
    /// others finds its closest nodes early.
    self_backoff: Duration,
    trigger_pending: bool,
    local_services: Option<ServiceSet>,
    stats: Stats,
}

impl Behaviour {
    /// A router behaviour that keeps `router` up to date. Give the same
    /// `router` to the core.
    pub fn new(router: Arc<KadRouter>, config: Config) -> Self {
        // The table's service hop limit comes from the config.
        router.inner.write().set_max_hops(config.max_service_hops);
        Behaviour {
            config,
            router,
            conns: BTreeMap::new(),
            dialling: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            buckets: [Bucket::default(); BUCKETS],
            next_self_lookup: None,
            self_backoff: Duration::ZERO,
            trigger_pending: false,
            local_services: None,
            stats: Stats::default(),
        }
    }

    /// The shared table.
    pub fn router(&self) -> &Arc<KadRouter> {
        &self.router
    }

    /// Protocol counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Links, buckets and counters.
    pub fn status(&self, now: Instant) -> Status {
        let local = self.router.local();
        Status {
            links: self
                .conns
                .keys()
                .filter_map(|n| bucket_of(local, *n).map(|b| (*n, b)))
                .collect(),
            filled_buckets: self.buckets.iter().filter(|b| b.links > 0).count(),
            empty_buckets: (0..BUCKETS)
                .filter(|b| self.buckets[*b].empty_until.is_some_and(|t| t > now))
                .collect(),
            entries: self.router.state_entries(),
            services: {
                let inner = self.router.inner.read();
                let mut v: BTreeMap<u8, u8> =
                    inner.services.iter().map(|(s, (h, _))| (*s, *h)).collect();
                for s in inner.local_services.iter() {
                    v.insert(s.0, 0);
                }
                v.into_iter().map(|(s, h)| (ServiceId(s), h)).collect()
            },
            stats: self.stats,
        }
    }

    fn local(&self) -> NodeId {
        self.router.local()
    }

    fn my_contact(agent: &BehaviorAgent<'_, Self>) -> Contact {
        Contact {
            node: agent.local_node().0,
            addrs: agent
                .local_addrs()
                .iter()
                .take(MAX_ADDRS)
                .copied()
                .collect(),
        }
    }

    fn send_link(&mut self, agent: &mut BehaviorAgent<'_, Self>, to: NodeId, msg: Message) -> bool {
        match self.conns.get(&to).and_then(|v| v.last()) {
            Some(&c) => {
                agent.send_to_conn(c, msg);
                true
            }
            None => {
                self.stats.lost_walks += 1;
                false
            }
        }
    }

    /// Whether bucket `b` has a link or a dial in flight.
    fn covered(&self, b: usize) -> bool {
        self.buckets[b].links > 0 || self.dialling.values().any(|(db, _)| *db == b)
    }

    /// Whether a lookup for bucket `b` ([`CLOSEST`]: the closest nodes) is
    /// out and not yet given up (answers come within a period).
    fn pending(&self, b: usize, now: Instant) -> bool {
        self.outstanding.values().any(|(ob, at)| {
            *ob as usize == b && now.saturating_duration_since(*at) < self.config.period
        })
    }

    /// Starts a lookup for `target` to fill `bucket` ([`CLOSEST`]: the
    /// node's closest nodes). Its first hop is the known node closest to the
    /// target, even when this node is closer: the walk needs someone
    /// else's view.
    fn lookup(&mut self, agent: &mut BehaviorAgent<'_, Self>, bucket: u8, target: u64) {
        let first = self.router.inner.read().closest(target, |_| false);
        let Some((_, best)) = first else {
            return; // no link yet
        };
        let now = agent.now();
        let period = self.config.period;
        // At most one lookup per bucket is waited for: a newer one replaces
        // a given-up one, so the table holds at most 65 entries.
        self.outstanding
            .retain(|_, (b, at)| *b != bucket && now.saturating_duration_since(*at) < period);
        let id = agent.rng().next_u64();
        self.outstanding.insert(id, (bucket, now));
        self.stats.lookups += 1;
        let msg = Message::Find(Find {
            id,
            origin: Self::my_contact(agent),
            target,
            bucket,
            path: vec![self.local().0],
            detours: self.config.detours,
        });
        self.send_link(agent, best.via, msg);
    }

    /// A lookup for a random id in bucket `b`'s range.
    fn lookup_bucket(&mut self, agent: &mut BehaviorAgent<'_, Self>, b: usize) {
        let r = agent.rng().next_u64();
        let target = bucket_target(self.local().0, b, r);
        self.lookup(agent, b as u8, target);
    }

    fn on_find(&mut self, agent: &mut BehaviorAgent<'_, Self>, from: NodeId, mut f: Find) {
        self.stats.finds_handled += 1;
        let local = self.local();
        let asker = NodeId(f.origin.node);
        if f.path.first() != Some(&asker.0)
            || f.path.last() != Some(&from.0)
            || f.path.contains(&local.0)
            || f.path.len() > MAX_FIND_HOPS
            || f.bucket as usize > BUCKETS
        {
            log::debug!("node {local}: kad: malformed or looping lookup from {from} dropped");
            return;
        }
        // Carried on as bounded as the asker should have sent it.
        f.origin.addrs.truncate(MAX_ADDRS);
        // Traffic teaches: the asker may fill one of this node's buckets.
        self.learn(agent, &f.origin);
        let target = f.target;
        let own = local.0 ^ target;
        let (next, mut near) = {
            let walked = |m: u64| f.path.contains(&m);
            let inner = self.router.inner.read();
            let next = inner.closest(target, walked).filter(|(d, _)| *d < own);
            // A dead end short of the bucket sought (or of the asker's
            // closest nodes): one of the three links nearest the target not
            // walked yet, at random, so that a lookup repeated over the
            // same tables does not repeat the same walk.
            let reached = bucket_of(asker, local) == Some(f.bucket as usize);
            let near: Vec<NodeId> = if next.is_none() && f.detours > 0 && !reached {
                inner
                    .links
                    .keys()
                    .filter(|n| !walked(n.0))
                    .copied()
                    .collect()
            } else {
                Vec::new()
            };
            (next.map(|(_, b)| b.via), near)
        };
        near.sort_unstable_by_key(|n| n.0 ^ target);
        near.truncate(3);
        let sideways = agent.rng().choose(&near).copied();
        if f.path.len() < MAX_FIND_HOPS {
            let step = match (next, sideways) {
                (Some(via), _) => Some((via, f.detours)),
                (None, Some(via)) => Some((via, f.detours.saturating_sub(1))),
                (None, None) => None,
            };
            if let Some((via, detours)) = step {
                f.path.push(local.0);
                f.detours = detours;
                self.send_link(agent, via, Message::Find(f));
                return;
            }
        }
        // The walk ends here: this node and its links nearest the target.
        let mut contacts = vec![Self::my_contact(agent)];
        {
            let inner = self.router.inner.read();
            let mut near: Vec<(u64, Contact)> = inner
                .links
                .iter()
                .filter(|(n, l)| **n != asker && !l.addrs.is_empty())
                .map(|(n, l)| {
                    (
                        n.0 ^ target,
                        Contact {
                            node: n.0,
                            addrs: l.addrs.clone(),
                        },
                    )
                })
                .collect();
            near.sort_by_key(|(d, _)| *d);
            contacts.extend(
                near.into_iter()
                    .take(self.config.contacts.saturating_sub(1))
                    .map(|(_, c)| c),
            );
        }
        let answer = Found {
            id: f.id,
            bucket: f.bucket,
            contacts,
            path: f.path,
        };
        self.send_link(agent, from, Message::Found(answer));
    }

    fn on_found(&mut self, agent: &mut BehaviorAgent<'_, Self>, from: NodeId, mut f: Found) {
        let local = self.local();
        if f.path.pop() != Some(local.0) {
            log::debug!("node {local}: kad: answer from {from} not addressed to this hop dropped");
            return;
        }
        // Carried on as bounded as the answering node should have sent it.
        f.contacts.truncate(self.config.contacts);
        for c in &mut f.contacts {
            c.addrs.truncate(MAX_ADDRS);
        }
        if let Some(&back) = f.path.last() {
            for c in &f.contacts {
                self.learn(agent, c);
            }
            self.send_link(agent, NodeId(back), Message::Found(f));
            return;
        }
        // An answer to this node's own lookup — if it asked.
        let Some((bucket, _)) = self.outstanding.remove(&f.id) else {
            log::debug!(
                "node {local}: kad: answer {} from {from} not awaited, dropped",
                f.id
            );
            return;
        };
        self.stats.answers += 1;
        let now = agent.now();
        let mut in_bucket = false;
        for c in &f.contacts {
            // Only a contact this node can dial fills the bucket.
            in_bucket |=
                bucket_of(local, NodeId(c.node)) == Some(bucket as usize) && !c.addrs.is_empty();
            self.learn(agent, c);
        }
        if !in_bucket {
            self.back_off(bucket as usize, now);
        }
    }

    /// Bucket `b` was found empty (or its member could not be dialled):
    /// look again later, less and less often — while tables are young a
    /// walk can end short of nodes that exist.
    fn back_off(&mut self, b: usize, now: Instant) {
        let period = self.config.period;
        let cap = self.config.empty_recheck;
        if let Some(bk) = self.buckets.get_mut(b) {
            if bk.links == 0 {
                let wait = bk.backoff.max(period);
                bk.empty_until = Some(now + wait);
                bk.backoff = (wait * 2).min(cap);
            }
        }
    }

    /// Dials `c` if it falls in a bucket without a link (or dial).
    fn learn(&mut self, agent: &mut BehaviorAgent<'_, Self>, c: &Contact) {
        let node = NodeId(c.node);
        let Some(b) = bucket_of(self.local(), node) else {
            return;
        };
        if self.covered(b) || self.conns.contains_key(&node) {
            return;
        }
        if let Some(&addr) = c.addrs.first() {
            self.dial(agent, node, addr, b);
        }
    }

    fn dial(&mut self, agent: &mut BehaviorAgent<'_, Self>, node: NodeId, addr: Address, b: usize) {
        log::debug!("node {}: kad: dialling {node} for bucket {b}", self.local());
        self.dialling.insert(node, (b, agent.now()));
        self.stats.dials += 1;
        agent.connect(node, addr);
    }

    fn on_state(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: NodeId,
        addrs: Vec<Address>,
        mut links: Vec<u64>,
        mut services: Vec<(u8, u8)>,
    ) {
        let local = self.local();
        // Bounded whatever the sender sent: a neighbour cannot make this
        // node hold more than `max_advertised` ids for it.
        links.retain(|m| *m != from.0);
        if links.len() > self.config.max_advertised {
            // Keep those nearest the sender, as a sender does.
            links.sort_unstable_by_key(|m| m ^ from.0);
            links.truncate(self.config.max_advertised);
        }
        links.sort_unstable();
        links.dedup();
        services.sort_unstable();
        services.dedup_by_key(|(s, _)| *s);
        services.truncate(MAX_SERVICES);
        let mut addrs = addrs;
        addrs.truncate(MAX_ADDRS);
        let (fresh, changed) = {
            let mut inner = self.router.inner.write();
            let Some(link) = inner.links.get_mut(&from) else {
                return;
            };
            let fresh: Vec<u64> = links
                .iter()
                .copied()
                .filter(|m| link.links.binary_search(m).is_err())
                .collect();
            // A refresh usually repeats what the link said: recompute the
            // service vector only when its adverts changed.
            let services_changed = link.services != services;
            *link = Link {
                links,
                services,
                addrs,
            };
            (fresh, services_changed && inner.recompute_services())
        };
        if changed {
            self.arm_trigger(agent);
        }
        // A node two hops away in a bucket without a link: look it up (the
        // walk ends at it, and it answers with its address).
        let now = agent.now();
        for m in fresh {
            let Some(b) = bucket_of(local, NodeId(m)) else {
                continue;
            };
            self.buckets[b].empty_until = None;
            if !self.covered(b) && !self.pending(b, now) {
                self.lookup(agent, b as u8, m);
            }
        }
    }

    fn arm_trigger(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        if !self.trigger_pending {
            self.trigger_pending = true;
            agent.schedule_after(self.config.trigger_delay, T_TRIGGER);
        }
    }

    /// The whole state to every link.
    fn send_states(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let local = self.local();
        let addrs: Vec<Address> = agent
            .local_addrs()
            .iter()
            .take(MAX_ADDRS)
            .copied()
            .collect();
        let mut links: Vec<u64> = self.conns.keys().map(|n| n.0).collect();
        if links.len() > self.config.max_advertised {
            links.sort_unstable_by_key(|m| m ^ local.0);
            links.truncate(self.config.max_advertised);
            links.sort_unstable();
        }
        let (own, best) = {
            let inner = self.router.inner.read();
            (inner.local_services, inner.services.clone())
        };
        let targets: Vec<NodeId> = self.conns.keys().copied().collect();
        for n in targets {
            let mut services: BTreeMap<u8, u8> = best
                .iter()
                .filter(|(_, (_, via))| *via != n)
                .map(|(s, (h, _))| (*s, *h))
                .collect();
            for s in own.iter() {
                services.insert(s.0, 0);
            }
            let msg = Message::State {
                addrs: addrs.clone(),
                links: links.clone(),
                services: services.into_iter().collect(),
            };
            self.stats.states_sent += 1;
            self.send_link(agent, n, msg);
        }
    }

    fn refresh_local_services(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let set: ServiceSet = agent.local_services().iter().copied().collect();
        if self.local_services != Some(set) {
            self.local_services = Some(set);
            self.router.inner.write().local_services = set;
            self.arm_trigger(agent);
        }
    }

    /// The maintenance round: lookups for buckets without a link, down to
    /// two past the deepest bucket with one.
    fn maintain(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now = agent.now();
        let stale = self.config.period * 2;
        self.dialling
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < stale);
        let period = self.config.period;
        self.outstanding
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < period);
        if self.conns.is_empty() {
            return;
        }
        if self.next_self_lookup.is_none_or(|t| t <= now) {
            self.self_lookup(agent);
        }
        let deepest = (0..BUCKETS).rev().find(|b| self.buckets[*b].links > 0);
        let depth = deepest.map_or(0, |d| (d + 2).min(BUCKETS - 1));
        let mut started = 0;
        for b in 0..=depth {
            if started >= self.config.lookups_per_period {
                break;
            }
            let bk = self.buckets[b];
            if self.covered(b) || self.pending(b, now) || bk.empty_until.is_some_and(|t| t > now) {
                continue;
            }
            self.lookup_bucket(agent, b);
            started += 1;
        }
    }

    fn self_lookup(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let wait = self.self_backoff.max(self.config.period);
        self.self_backoff = (wait * 2).min(self.config.self_lookup_interval);
        self.next_self_lookup = Some(agent.now() + wait);
        self.lookup(agent, CLOSEST, self.local().0);
    }

    fn link_up(&mut self, agent: &mut BehaviorAgent<'_, Self>, node: NodeId) {
        let Some(b) = bucket_of(self.local(), node) else {
            return;
        };
        self.dialling.remove(&node);
        self.buckets[b].links += 1;
        self.buckets[b].empty_until = None;
        self.buckets[b].backoff = Duration::ZERO;
        let first = {
            let mut inner = self.router.inner.write();
            inner.links.insert(node, Link::default());
            inner.links.len() == 1
        };
        self.arm_trigger(agent);
        if first {
            // Joining: find the closest nodes through the first link.
            self.self_backoff = Duration::ZERO;
            self.self_lookup(agent);
        }
    }

    fn link_down(&mut self, agent: &mut BehaviorAgent<'_, Self>, node: NodeId) {
        let Some(b) = bucket_of(self.local(), node) else {
            return;
        };
        self.buckets[b].links = self.buckets[b].links.saturating_sub(1);
        {
            let mut inner = self.router.inner.write();
            inner.links.remove(&node);
            inner.recompute_services();
        }
        self.arm_trigger(agent);
        if !self.covered(b) {
            // Repair at once: the bucket is not known to be empty (it had
            // this link), so look for another node in it.
            log::debug!(
                "node {}: kad: link {node} lost, bucket {b} empty: looking it up",
                self.local()
            );
            self.buckets[b].empty_until = None;
            self.lookup_bucket(agent, b);
        }
    }
}

/// A random id in bucket `b` of `local`: its first `b` bits, bit `b`
/// flipped, the rest from `r`.
fn bucket_target(local: u64, b: usize, r: u64) -> u64 {
    let (lo, hi) = super::bucket_range(NodeId(local), b);
    lo | (r & (hi - lo))
}

impl NetworkBehavior for Behaviour {
    type Msg = Message;
    type Handler = NoHandler<Message>;
    type Event = ();
    type Rpc = (Request, Response);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        self.refresh_local_services(agent);
        agent.schedule_after(self.config.period, T_PERIOD);
        agent.schedule_after(self.config.refresh_interval, T_REFRESH);
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        match token {
            T_PERIOD => {
                self.refresh_local_services(agent);
                self.maintain(agent);
                // ±10% so that nodes started together do not stay in step.
                let p = self.config.period;
                let jitter = agent.rng().below(p.as_millis() as u64 / 5 + 1);
                let next = p * 9 / 10 + std::time::Duration::from_millis(jitter);
                agent.schedule_after(next, T_PERIOD);
            }
            T_TRIGGER => {
                self.trigger_pending = false;
                self.send_states(agent);
            }
            T_REFRESH => {
                self.send_states(agent);
                agent.schedule_after(self.config.refresh_interval, T_REFRESH);
            }
            _ => {}
        }
    }

    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        info: ConnectionInfo,
    ) -> Option<NoHandler<Message>> {
        let conns = self.conns.entry(info.node).or_default();
        conns.push(info.conn);
        if conns.len() == 1 {
            self.link_up(agent, info.node);
        }
        None
    }

    fn on_disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, info: ConnectionInfo) {
        let gone = match self.conns.get_mut(&info.node) {
            Some(v) => {
                v.retain(|c| *c != info.conn);
                v.is_empty()
            }
            None => false,
        };
        if gone {
            self.conns.remove(&info.node);
            self.link_down(agent, info.node);
        }
    }

    fn on_outgoing_connection_error(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        node: NodeId,
        _conn: ConnId,
        err: &OutgoingConnectionError,
    ) {
        if let Some((b, _)) = self.dialling.remove(&node) {
            self.stats.dial_failures += 1;
            log::debug!(
                "node {}: kad: dial to {node} failed: {err}",
                agent.local_node()
            );
            // Not every period at the same unreachable node.
            self.back_off(b, agent.now());
        }
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Message>) {
        let (Some(_), RouteRule::Direct) = (msg.conn, msg.rule) else {
            return; // the router speaks to its links only
        };
        let from = msg.source;
        if !self.conns.contains_key(&from) {
            return;
        }
        match msg.msg {
            Message::State {
                addrs,
                links,
                services,
            } => self.on_state(agent, from, addrs, links, services),
            Message::Find(f) => self.on_find(agent, from, f),
            Message::Found(f) => self.on_found(agent, from, f),
        }
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request,
        answer: Answer<Response>,
    ) {
        let resp = match req {
            Request::Routes => Response::Routes(self.router.routes()),
            Request::Status => Response::Status(self.status(agent.now())),
        };
        agent.answer(answer, resp);
    }
}

#[cfg(test)]
mod unit {
    use super::bucket_target;

    #[test]
    fn bucket_targets_share_exactly_the_bucket_prefix() {
        let local = 0xdead_beef_0123_4567u64;
        for b in 0..64 {
            for r in [0u64, u64::MAX, 0x5555_5555_5555_5555] {
                let t = bucket_target(local, b, r);
                assert_eq!((t ^ local).leading_zeros() as usize, b, "bucket {b}");
            }
        }
    }
}
