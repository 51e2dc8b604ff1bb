//! The sync protocol: learns the table from neighbours.

use super::protocol::{Advert, Sync, INFINITY};
use super::table::{DvRouter, Inner, RouteEntry};
use super::{Config, NeighbourInfo, Request, Response, Stats};
use crate::ServiceSet;
use plexus_network::{
    Answer, BehaviorAgent, ConnId, ConnectionInfo, Incoming, Instant, NetworkBehavior, NoHandler,
    NodeId, RouteChange, RouteRule, RouterTable, ServiceId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Adv {
    metric: u32,
    hops: u8,
    services: ServiceSet,
}

#[derive(Debug)]
struct Neighbour {
    conns: Vec<ConnId>,
    srtt_us: Option<u64>,
    link_cost: u32,
    last_heard: Instant,
    /// Its latest clock reading and when it arrived, to echo back.
    echo: Option<(u64, Instant)>,
    /// Lookup only; anything derived from its iteration is collected into
    /// ordered sets, so its order never reaches the wire.
    adverts: HashMap<NodeId, Adv>,
    next_refresh: Instant,
    /// Nothing heard for `neighbour_timeout`: its adverts are forgotten and
    /// it is not used, but still probed on its connection so that routes
    /// come back when it is heard again (a healed partition).
    silent: bool,
}

impl Neighbour {
    fn new(now: Instant) -> Self {
        Neighbour {
            conns: Vec::new(),
            srtt_us: None,
            link_cost: INFINITY,
            last_heard: now,
            echo: None,
            adverts: HashMap::new(),
            next_refresh: now,
            silent: false,
        }
    }
}

/// The distance-vector sync behaviour. See the [module docs](super).
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    router: Arc<DvRouter>,
    neighbours: BTreeMap<NodeId, Neighbour>,
    /// Destinations whose route changed since the last update was sent.
    changed: BTreeSet<NodeId>,
    local_services: Option<ServiceSet>,
    /// A triggered update is scheduled.
    trigger_pending: bool,
    /// A check for silent neighbours is scheduled.
    silence_pending: bool,
    stats: Stats,
}

/// Timer tokens.
const SYNC: u64 = 0;
const TRIGGER: u64 = 1;
const SILENCE: u64 = 2;

impl Behaviour {
    /// A router behaviour that keeps `router` up to date. Give the same
    /// `router` to the core.
    pub fn new(router: Arc<DvRouter>, config: Config) -> Self {
        Behaviour {
            config,
            router,
            neighbours: BTreeMap::new(),
            changed: BTreeSet::new(),
            local_services: None,
            trigger_pending: false,
            silence_pending: false,
            stats: Stats::default(),
        }
    }

    /// The shared table.
    pub fn router(&self) -> &Arc<DvRouter> {
        &self.router
    }

    /// Protocol counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The neighbours, by id.
    pub fn neighbours(&self) -> Vec<NeighbourInfo> {
        self.neighbours
            .iter()
            .map(|(n, nb)| NeighbourInfo {
                node: *n,
                rtt: nb.srtt_us.map(Duration::from_micros),
                link_cost: nb.link_cost,
                advertised: nb.adverts.len(),
            })
            .collect()
    }

    fn local(&self) -> NodeId {
        self.router.local()
    }

    fn self_advert(&self) -> Advert {
        Advert {
            dest: self.local().0,
            metric: 0,
            hops: 0,
            services: self.local_services.unwrap_or_default().to_words(),
        }
    }

    /// What to tell neighbour `to` about `dest` (poisoned reverse applied).
    fn advert_for(&self, table: &Inner, dest: NodeId, to: NodeId) -> Advert {
        if dest == self.local() {
            return self.self_advert();
        }
        match table.get(dest) {
            Some(r) if r.next_hop != to => Advert {
                dest: dest.0,
                metric: r.metric,
                hops: r.hops,
                services: r.services.to_words(),
            },
            _ => Advert {
                dest: dest.0,
                metric: INFINITY,
                hops: 0,
                services: [0; 4],
            },
        }
    }

    fn send_sync(&mut self, agent: &mut BehaviorAgent<'_, Self>, to: NodeId, full: bool) {
        let now = agent.now();
        let adverts = {
            let inner = self.router.inner.read();
            if full {
                let mut v = Vec::with_capacity(inner.len() + 1);
                v.push(self.self_advert());
                v.extend(
                    inner
                        .iter()
                        .filter(|(_, r)| r.next_hop != to)
                        .map(|(d, r)| Advert {
                            dest: d.0,
                            metric: r.metric,
                            hops: r.hops,
                            services: r.services.to_words(),
                        }),
                );
                v
            } else {
                self.changed
                    .iter()
                    .map(|d| self.advert_for(&inner, *d, to))
                    .collect()
            }
        };
        let Some(nb) = self.neighbours.get_mut(&to) else {
            return;
        };
        // The newest connection: an older one may be a dead link not yet
        // noticed (a neighbour that restarted), and the core forwards on
        // the newest too.
        let Some(&conn) = nb.conns.last() else {
            return;
        };
        let (echo_ts_us, echo_held_us) = match nb.echo {
            Some((ts, at)) => (ts, (now - at).as_micros() as u64),
            None => (0, 0),
        };
        if full {
            nb.next_refresh = now + self.config.refresh_interval;
        }
        self.stats.syncs_sent += 1;
        self.stats.adverts_sent += adverts.len() as u64;
        agent.send_to_conn(
            conn,
            Sync {
                ts_us: now.as_micros(),
                echo_ts_us,
                echo_held_us,
                full,
                adverts,
            },
        );
    }

    /// Best route to `dest` from what the neighbours advertise.
    fn best(&self, dest: NodeId) -> Option<RouteEntry> {
        let mut best: Option<RouteEntry> = None;
        for (n, nb) in &self.neighbours {
            if nb.silent || nb.srtt_us.is_none() {
                continue; // not usable: silent, or its cost is not measured yet
            }
            let Some(a) = nb.adverts.get(&dest) else {
                continue;
            };
            let hops = a.hops.saturating_add(1);
            let metric = a.metric.saturating_add(nb.link_cost);
            if hops > self.config.max_hops || metric == INFINITY {
                continue;
            }
            if best.is_none_or(|b| (metric, *n) < (b.metric, b.next_hop)) {
                best = Some(RouteEntry {
                    next_hop: *n,
                    metric,
                    hops,
                    services: a.services,
                });
            }
        }
        best
    }

    /// Recomputes the routes to `dests` and publishes what changed.
    fn recompute(&mut self, agent: &mut BehaviorAgent<'_, Self>, dests: BTreeSet<NodeId>) {
        let local = self.local();
        let mut changes = Vec::new();
        {
            let computed: Vec<(NodeId, Option<RouteEntry>)> = dests
                .into_iter()
                .filter(|d| *d != local)
                .map(|d| (d, self.best(d)))
                .collect();
            let mut inner = self.router.inner.write();
            for (d, new) in computed {
                if inner.get(d).copied() == new {
                    continue;
                }
                let old = inner.set(d, new);
                self.changed.insert(d);
                // Metric-only changes are advertised but not announced.
                if old.map(|o| (o.next_hop, o.hops)) != new.map(|n| (n.next_hop, n.hops)) {
                    changes.push(RouteChange {
                        dest: d,
                        next_hop: new.map(|r| r.next_hop),
                        metric: new.map(|r| r.metric),
                        hops: new.map(|r| r.hops),
                    });
                }
            }
        }
        self.stats.route_changes += changes.len() as u64;
        for c in changes {
            log::trace!("node {local}: route to {} now via {:?}", c.dest, c.next_hop);
            agent.route_changed(c);
        }
        self.arm_trigger(agent);
    }

    /// Schedules a triggered update if routes changed and none is pending:
    /// changes within `trigger_delay` of each other travel together.
    fn arm_trigger(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        if !self.changed.is_empty() && !self.trigger_pending {
            self.trigger_pending = true;
            agent.schedule_after(self.config.trigger_delay, TRIGGER);
        }
    }

    /// Schedules the next check for silent neighbours, at the earliest
    /// moment one could be declared silent.
    fn arm_silence(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        if self.silence_pending {
            return;
        }
        let earliest = self
            .neighbours
            .values()
            .filter(|nb| !nb.silent)
            .map(|nb| nb.last_heard + self.config.neighbour_timeout)
            .min();
        if let Some(at) = earliest {
            self.silence_pending = true;
            agent.schedule_at(at + Duration::from_micros(1), SILENCE);
        }
    }

    /// Sends every neighbour what changed (the whole table where a refresh
    /// is due).
    fn sync_all(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now = agent.now();
        let ns: Vec<(NodeId, bool)> = self
            .neighbours
            .iter()
            .map(|(n, nb)| (*n, now >= nb.next_refresh))
            .collect();
        for (n, full) in ns {
            self.send_sync(agent, n, full);
        }
        self.changed.clear();
    }

    fn drop_neighbour(&mut self, agent: &mut BehaviorAgent<'_, Self>, n: NodeId, why: &str) {
        if let Some(nb) = self.neighbours.remove(&n) {
            log::debug!("node {}: router drops neighbour {n}: {why}", self.local());
            let dests: BTreeSet<NodeId> = nb.adverts.keys().copied().collect();
            self.recompute(agent, dests);
        }
    }

    /// Stops using a neighbour that went quiet, but keeps probing it.
    fn silence_neighbour(&mut self, agent: &mut BehaviorAgent<'_, Self>, n: NodeId) {
        let Some(nb) = self.neighbours.get_mut(&n) else {
            return;
        };
        log::debug!("node {}: router neighbour {n} silent", self.router.local());
        nb.silent = true;
        let dests: BTreeSet<NodeId> = std::mem::take(&mut nb.adverts).into_keys().collect();
        self.recompute(agent, dests);
    }

    fn connected(&mut self, agent: &mut BehaviorAgent<'_, Self>, info: ConnectionInfo) {
        let now = agent.now();
        let nb = self
            .neighbours
            .entry(info.node)
            .or_insert_with(|| Neighbour::new(now));
        nb.conns.push(info.conn);
        nb.last_heard = now;
        self.send_sync(agent, info.node, true);
        self.arm_silence(agent);
    }

    fn disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, info: ConnectionInfo) {
        let gone = match self.neighbours.get_mut(&info.node) {
            Some(nb) => {
                nb.conns.retain(|c| *c != info.conn);
                // What went on the closed connection may be lost: the next
                // sync on the one left is the whole table.
                nb.next_refresh = agent.now();
                nb.conns.is_empty()
            }
            None => false,
        };
        if gone {
            self.drop_neighbour(agent, info.node, "connection closed");
        }
    }

    fn refresh_local_services(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let set: ServiceSet = agent.local_services().iter().copied().collect();
        if self.local_services != Some(set) {
            self.local_services = Some(set);
            self.router.inner.write().local_services = set;
            self.changed.insert(self.local());
            self.arm_trigger(agent);
        }
    }
}

impl NetworkBehavior for Behaviour {
    type Msg = Sync;
    type Handler = NoHandler<Sync>;
    type Event = ();
    type Rpc = (Request, Response);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        self.refresh_local_services(agent);
        agent.schedule_after(self.config.sync_interval, SYNC);
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        match token {
            SYNC => {
                // The keep-alive (and any change not sent yet) to every
                // neighbour; the whole table where its refresh is due.
                self.refresh_local_services(agent);
                self.sync_all(agent);
                agent.schedule_after(self.config.sync_interval, SYNC);
            }
            TRIGGER => {
                self.trigger_pending = false;
                if !self.changed.is_empty() {
                    self.sync_all(agent);
                }
            }
            SILENCE => {
                self.silence_pending = false;
                let now = agent.now();
                let silent: Vec<NodeId> = self
                    .neighbours
                    .iter()
                    .filter(|(_, nb)| {
                        !nb.silent && now - nb.last_heard > self.config.neighbour_timeout
                    })
                    .map(|(n, _)| *n)
                    .collect();
                for n in silent {
                    self.silence_neighbour(agent, n);
                }
                self.arm_silence(agent);
            }
            _ => {}
        }
    }

    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<NoHandler<Sync>> {
        self.connected(agent, conn);
        None
    }

    fn on_disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, conn: ConnectionInfo) {
        self.disconnected(agent, conn);
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Sync>) {
        let (Some(conn), RouteRule::Direct) = (msg.conn, msg.rule) else {
            log::debug!(
                "node {}: router sync not from a neighbour; ignored",
                self.local()
            );
            return;
        };
        let from = msg.source;
        let Some(info) = agent.connection(conn).copied() else {
            return;
        };
        if info.node != from {
            log::debug!(
                "node {}: router sync on {conn} claims {from}; ignored",
                self.local()
            );
            return;
        }
        let now = agent.now();
        self.stats.syncs_received += 1;
        let sync = msg.msg;
        let mut dests = BTreeSet::new();
        let fresh = self.neighbours.get(&from).is_none_or(|nb| nb.silent);
        let nb = self
            .neighbours
            .entry(from)
            .or_insert_with(|| Neighbour::new(now));
        nb.silent = false;
        if !nb.conns.contains(&conn) {
            nb.conns.push(conn);
        }
        nb.last_heard = now;
        nb.echo = Some((sync.ts_us, now));

        // RTT from the echo of our own clock.
        if sync.echo_ts_us != 0 && sync.echo_ts_us <= now.as_micros() {
            let rtt = now
                .as_micros()
                .saturating_sub(sync.echo_ts_us)
                .saturating_sub(sync.echo_held_us);
            let srtt = match nb.srtt_us {
                None => rtt,
                Some(s) => (s * 7 + rtt) / 8,
            };
            let first = nb.srtt_us.is_none();
            nb.srtt_us = Some(srtt);
            let q = u64::from(self.config.cost_quantum_us);
            let one_way = (srtt / 2 + q / 2) / q * q;
            let cost = u64::from(self.config.hop_cost_us)
                .saturating_add(one_way)
                .min(u64::from(INFINITY / 4)) as u32;
            let delta = cost.abs_diff(nb.link_cost);
            if first || delta > self.config.cost_quantum_us.max(nb.link_cost / 10) {
                nb.link_cost = cost;
                dests.extend(nb.adverts.keys().copied());
            }
        }

        let local = self.router.local();
        if sync.full {
            let mut replaced = HashMap::with_capacity(sync.adverts.len());
            for a in &sync.adverts {
                if a.metric != INFINITY && a.dest != local.0 {
                    replaced.insert(
                        NodeId(a.dest),
                        Adv {
                            metric: a.metric,
                            hops: a.hops,
                            services: ServiceSet::from_words(a.services),
                        },
                    );
                }
            }
            let old = std::mem::replace(&mut nb.adverts, replaced);
            for (d, a) in &old {
                if nb.adverts.get(d) != Some(a) {
                    dests.insert(*d);
                }
            }
            for (d, a) in &nb.adverts {
                if old.get(d) != Some(a) {
                    dests.insert(*d);
                }
            }
        } else {
            for a in &sync.adverts {
                let d = NodeId(a.dest);
                if d == local {
                    continue;
                }
                let new = (a.metric != INFINITY).then(|| Adv {
                    metric: a.metric,
                    hops: a.hops,
                    services: ServiceSet::from_words(a.services),
                });
                let old = match new {
                    Some(adv) => nb.adverts.insert(d, adv),
                    None => nb.adverts.remove(&d),
                };
                if old != new {
                    dests.insert(d);
                }
            }
        }
        // A neighbour that has not heard us yet cannot measure its RTT to
        // us: answer at once. One that we had forgotten gets our table.
        let answer_now = sync.echo_ts_us == 0 || fresh;
        if !dests.is_empty() {
            self.recompute(agent, dests);
        }
        if answer_now {
            self.send_sync(agent, from, fresh);
        }
        self.arm_silence(agent);
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request,
        answer: Answer<Response>,
    ) {
        let resp = match req {
            Request::Routes => Response::Routes(self.router.routes()),
            Request::Neighbours => Response::Neighbours(self.neighbours()),
        };
        agent.answer(answer, resp);
    }
}
