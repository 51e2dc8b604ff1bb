//! [`Calls`]: the outstanding requests of one behaviour — ids, deadlines,
//! bounds — as a sans-IO table any behaviour can embed.

use super::{CallError, Limits, Scope};
use plexus_network::{Instant, NodeId, RouteRule};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Identifies one outgoing call; the response repeats it.
pub type CallId = u64;

/// Counters of a [`Calls`] table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls started.
    pub started: u64,
    /// Calls answered in time (with a response or a remote fault).
    pub answered: u64,
    /// Calls that ran out of time.
    pub timed_out: u64,
    /// Calls that failed before an answer could come (no route, a dropped
    /// request).
    pub failed: u64,
    /// Calls cancelled by their owner.
    pub cancelled: u64,
    /// Calls refused because a bound was reached.
    pub refused_busy: u64,
    /// Answers that came for no open call (late, cancelled, or duplicated):
    /// discarded.
    pub late_answers: u64,
}

#[derive(Debug)]
struct Open<C> {
    rule: RouteRule,
    sent: Instant,
    deadline: Instant,
    ctx: C,
}

/// What a finished call hands back.
#[derive(Debug)]
pub struct Finished<C> {
    /// Its id.
    pub id: CallId,
    /// Where it was sent.
    pub rule: RouteRule,
    /// How long it was open.
    pub elapsed: Duration,
    /// What the owner stored with it.
    pub ctx: C,
}

/// The outstanding calls of one behaviour, each with the context `C` its
/// owner needs to finish it (an [`Answer`](plexus_network::Answer), an
/// operation's state).
///
/// Bounded twice: at most [`Limits::max_in_flight`] calls open on the node
/// and [`Limits::max_per_peer`] to one destination (a route rule: a node, a
/// key, a service). A call past either bound is refused at once with
/// [`CallError::TooManyInFlight`]: the caller holds its request and decides
/// (wait for an answer to free a slot, or give up); nothing queues here.
///
/// Every call ends exactly once: [`answer`](Self::answer),
/// [`fail`](Self::fail), [`expire`](Self::expire) or
/// [`cancel`](Self::cancel) frees its slot, and an answer for a call that
/// has ended is counted ([`CallStats::late_answers`]) and discarded.
/// The owner arms one timer at [`next_deadline`](Self::next_deadline).
#[derive(Debug)]
pub struct Calls<C> {
    limits: Limits,
    secret: u64,
    counter: u64,
    open: BTreeMap<CallId, Open<C>>,
    deadlines: BTreeSet<(Instant, CallId)>,
    per_rule: BTreeMap<RuleKey, usize>,
    stats: CallStats,
}

/// `RouteRule` has no `Ord`; the per-destination counts need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RuleKey {
    Direct,
    Node(u64),
    Closest(u64),
    Service,
}

impl From<RouteRule> for RuleKey {
    fn from(r: RouteRule) -> Self {
        match r {
            RouteRule::Direct => RuleKey::Direct,
            RouteRule::Node(n) => RuleKey::Node(n.0),
            RouteRule::Closest(k) => RuleKey::Closest(k.0),
            RouteRule::Service => RuleKey::Service,
        }
    }
}

impl<C> Calls<C> {
    /// An empty table with these bounds. Call ids are a bijective mix of
    /// a counter and `secret`, so they never repeat within a life and, with
    /// a random secret, a peer cannot guess the ids of calls it was not
    /// sent (and a restarted node does not reuse its last life's ids).
    pub fn new(limits: Limits, secret: u64) -> Self {
        Calls {
            limits,
            secret,
            counter: 0,
            open: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            per_rule: BTreeMap::new(),
            stats: CallStats::default(),
        }
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Opens a call to `rule` that times out `timeout` after `now`; the
    /// owner then sends its request with the returned id.
    pub fn start(
        &mut self,
        now: Instant,
        rule: RouteRule,
        timeout: Duration,
        ctx: C,
    ) -> Result<CallId, (CallError, C)> {
        if self.open.len() >= self.limits.max_in_flight {
            self.stats.refused_busy += 1;
            return Err((
                CallError::TooManyInFlight {
                    scope: Scope::Node,
                    limit: self.limits.max_in_flight,
                },
                ctx,
            ));
        }
        let key = RuleKey::from(rule);
        let count = self.per_rule.entry(key).or_insert(0);
        if *count >= self.limits.max_per_peer {
            self.stats.refused_busy += 1;
            return Err((
                CallError::TooManyInFlight {
                    scope: Scope::Peer,
                    limit: self.limits.max_per_peer,
                },
                ctx,
            ));
        }
        *count += 1;
        let id = crate::gossip::crdt::mix(self.secret.wrapping_add(self.counter));
        self.counter = self.counter.wrapping_add(1);
        let deadline = now + timeout;
        self.deadlines.insert((deadline, id));
        self.open.insert(
            id,
            Open {
                rule,
                sent: now,
                deadline,
                ctx,
            },
        );
        self.stats.started += 1;
        Ok(id)
    }

    fn remove(&mut self, id: CallId, now: Instant) -> Option<Finished<C>> {
        let o = self.open.remove(&id)?;
        self.deadlines.remove(&(o.deadline, id));
        let key = RuleKey::from(o.rule);
        if let Some(c) = self.per_rule.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.per_rule.remove(&key);
            }
        }
        Some(Finished {
            id,
            rule: o.rule,
            elapsed: now.saturating_duration_since(o.sent),
            ctx: o.ctx,
        })
    }

    /// An answer came for `id` from `from`: the call, or `None` (counted)
    /// when no such call is open — it ended already, so the answer is
    /// discarded — or when the call went to another node
    /// ([`RouteRule::Node`]) than the one answering.
    pub fn answer(&mut self, id: CallId, from: NodeId, now: Instant) -> Option<Finished<C>> {
        let wrong = self
            .open
            .get(&id)
            .is_some_and(|o| matches!(o.rule, RouteRule::Node(n) if n != from));
        if wrong {
            self.stats.late_answers += 1;
            return None;
        }
        let f = self.remove(id, now);
        match f {
            Some(_) => self.stats.answered += 1,
            None => self.stats.late_answers += 1,
        }
        f
    }

    /// The call `id` failed before its answer could come.
    pub fn fail(&mut self, id: CallId, now: Instant) -> Option<Finished<C>> {
        let f = self.remove(id, now);
        if f.is_some() {
            self.stats.failed += 1;
        }
        f
    }

    /// The owner gives up on `id` (its slot is freed; a later answer is
    /// discarded).
    pub fn cancel(&mut self, id: CallId, now: Instant) -> Option<Finished<C>> {
        let f = self.remove(id, now);
        if f.is_some() {
            self.stats.cancelled += 1;
        }
        f
    }

    /// A request this node sent to `rule` died here (the core reported it
    /// through `on_dropped`): the oldest call to `rule` opened at `now`,
    /// the input the drop belongs to, failed. Drops of a node's own sends
    /// are reported in the input that made them, so this finds the call.
    pub fn dropped(&mut self, rule: RouteRule, now: Instant) -> Option<Finished<C>> {
        let id = self
            .open
            .iter()
            .find(|(_, o)| o.rule == rule && o.sent == now)
            .map(|(id, _)| *id)?;
        self.fail(id, now)
    }

    /// Ends every call whose deadline is at or before `now`, oldest
    /// deadline first.
    pub fn expire(&mut self, now: Instant) -> Vec<Finished<C>> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(f) = self.remove(id, now) {
                self.stats.timed_out += 1;
                out.push(f);
            }
        }
        out
    }

    /// When the next call times out: arm a timer for it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The context of an open call.
    pub fn get(&self, id: CallId) -> Option<&C> {
        self.open.get(&id).map(|o| &o.ctx)
    }

    /// The context of an open call, to update.
    pub fn get_mut(&mut self, id: CallId) -> Option<&mut C> {
        self.open.get_mut(&id).map(|o| &mut o.ctx)
    }

    /// Calls open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// No call is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Whether a call to `rule` could start now.
    pub fn has_room(&self, rule: RouteRule) -> bool {
        self.open.len() < self.limits.max_in_flight
            && self
                .per_rule
                .get(&RuleKey::from(rule))
                .is_none_or(|c| *c < self.limits.max_per_peer)
    }

    /// Counters.
    pub fn stats(&self) -> CallStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_network::NodeId;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn bounds_per_peer_and_per_node_refuse_and_free_on_every_ending() {
        let limits = Limits {
            max_in_flight: 3,
            max_per_peer: 2,
        };
        let mut c: Calls<&str> = Calls::new(limits, 10);
        let a = RouteRule::Node(NodeId(1));
        let b = RouteRule::Node(NodeId(2));
        let s = Duration::from_secs(1);
        let x = c.start(t(0), a, s, "x").unwrap();
        let _y = c.start(t(0), a, s, "y").unwrap();
        let err = c.start(t(0), a, s, "z").unwrap_err();
        assert_eq!(
            err.0,
            CallError::TooManyInFlight {
                scope: Scope::Peer,
                limit: 2
            }
        );
        let w = c.start(t(0), b, s, "w").unwrap();
        let err = c.start(t(0), b, s, "v").unwrap_err();
        assert!(matches!(
            err.0,
            CallError::TooManyInFlight {
                scope: Scope::Node,
                ..
            }
        ));
        assert!(!c.has_room(b));
        // Only the node called may answer; an answer frees a slot, a
        // second answer to it is late.
        assert!(c.answer(x, NodeId(2), t(5)).is_none());
        assert_eq!(c.answer(x, NodeId(1), t(5)).unwrap().ctx, "x");
        assert!(c.answer(x, NodeId(1), t(6)).is_none());
        assert!(c.has_room(a));
        // A cancelled call frees its slot, its late answer is discarded.
        assert_eq!(c.cancel(w, t(7)).unwrap().ctx, "w");
        assert!(c.answer(w, NodeId(2), t(8)).is_none());
        assert_eq!(c.stats().late_answers, 3);
        assert_eq!(c.len(), 1);
        // The rest time out at their deadline, not before.
        assert_eq!(c.next_deadline(), Some(t(1000)));
        assert!(c.expire(t(999)).is_empty());
        let gone = c.expire(t(1000));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].ctx, "y");
        assert!(c.is_empty());
        assert_eq!(c.next_deadline(), None);
        let st = c.stats();
        assert_eq!(
            (
                st.started,
                st.answered,
                st.cancelled,
                st.timed_out,
                st.refused_busy
            ),
            (3, 1, 1, 1, 2)
        );
    }

    #[test]
    fn a_drop_fails_the_call_sent_in_that_input() {
        let mut c: Calls<u8> = Calls::new(Limits::default(), 0);
        let a = RouteRule::Closest(NodeId(9));
        let s = Duration::from_secs(1);
        let old = c.start(t(0), a, s, 1).unwrap();
        let new = c.start(t(50), a, s, 2).unwrap();
        let f = c.dropped(a, t(50)).unwrap();
        assert_eq!((f.id, f.ctx), (new, 2));
        assert!(c.dropped(a, t(50)).is_none());
        assert!(c.get(old).is_some());
    }
}
