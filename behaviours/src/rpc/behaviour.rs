//! The application's request/response behaviour.

use super::{
    CallError, Calls, Config, Envelope, Event, Fault, InboundId, Request, Response, RpcStats,
};
use plexus_network::{
    Answer, BehaviorAgent, DropReport, Incoming, Instant, NetworkBehavior, NoHandler, NodeId,
    RouteRule, ServiceId,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// Answers requests on the spot: `Ok(response)`, or `Err(reason)` to
/// refuse. A panic inside it is caught and answered as
/// [`CallError::RemoteFailed`] to the caller; the behaviour goes on.
pub type Responder<Q, R> = Box<dyn FnMut(NodeId, Q) -> Result<R, String> + Send>;

const TIMER: u64 = 1;

type Reply<R> = Answer<Response<R>>;

struct Waiting<Q, R> {
    to: RouteRule,
    request: Q,
    asked: Instant,
    timeout: Duration,
    answer: Reply<R>,
}

struct Inbound {
    from: NodeId,
    call: u64,
    until: Instant,
}

/// A request/response protocol: requests `Q`, responses `R`. See the
/// [module docs](super).
pub struct Behaviour<Q, R> {
    config: Config,
    calls: Calls<Reply<R>>,
    waiting: VecDeque<Waiting<Q, R>>,
    inbound: BTreeMap<InboundId, Inbound>,
    next_inbound: u64,
    responder: Option<Responder<Q, R>>,
    armed: Option<Instant>,
    stats: RpcStats,
}

impl<Q, R> fmt::Debug for Behaviour<Q, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("rpc::Behaviour")
            .field("service", &self.config.service)
            .field("open", &self.calls.len())
            .field("waiting", &self.waiting.len())
            .field("inbound", &self.inbound.len())
            .field("responder", &self.responder.is_some())
            .finish()
    }
}

impl<Q, R> Behaviour<Q, R>
where
    Q: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// A behaviour whose received requests go to the application as
    /// [`Event::Request`]s.
    pub fn new(config: Config) -> Self {
        Behaviour {
            calls: Calls::new(config.limits, 0),
            config,
            waiting: VecDeque::new(),
            inbound: BTreeMap::new(),
            next_inbound: 0,
            responder: None,
            armed: None,
            stats: RpcStats::default(),
        }
    }

    /// Answers received requests with `f` instead of asking the
    /// application.
    pub fn with_responder(
        mut self,
        f: impl FnMut(NodeId, Q) -> Result<R, String> + Send + 'static,
    ) -> Self {
        self.responder = Some(Box::new(f));
        self
    }

    /// Counters.
    pub fn stats(&self) -> RpcStats {
        let mut s = self.stats;
        s.calls = self.calls.stats();
        s
    }

    /// Calls open and waiting for a slot.
    pub fn open_calls(&self) -> (usize, usize) {
        (self.calls.len(), self.waiting.len())
    }

    fn send_call(&mut self, agent: &mut BehaviorAgent<'_, Self>, w: Waiting<Q, R>) {
        let left = w
            .timeout
            .saturating_sub(agent.now().saturating_duration_since(w.asked));
        match self.calls.start(agent.now(), w.to, left, w.answer) {
            Ok(id) => agent.send(
                w.to,
                Envelope::Request {
                    id,
                    body: w.request,
                },
            ),
            Err((e, answer)) => agent.answer(answer, Response::Reply(Err(e))),
        }
    }

    /// Ends the waiting calls whose time ran out, then starts those that
    /// have room, oldest first.
    fn pump(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let now = agent.now();
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            if now >= w.asked + w.timeout {
                let w = self.waiting.remove(i).expect("index in range");
                self.calls_timed_out(agent, w.answer, w.timeout);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            if self.calls.has_room(w.to) {
                let w = self.waiting.remove(i).expect("index in range");
                self.send_call(agent, w);
            } else if self.calls.len() >= self.calls.limits().max_in_flight {
                break;
            } else {
                i += 1;
            }
        }
    }

    fn calls_timed_out(&mut self, agent: &mut BehaviorAgent<'_, Self>, a: Reply<R>, t: Duration) {
        agent.answer(a, Response::Reply(Err(CallError::Timeout(t))));
    }

    fn respond(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        to: NodeId,
        id: u64,
        result: Result<R, Fault>,
    ) {
        self.stats.responses_sent += 1;
        agent.send(RouteRule::Node(to), Envelope::Response { id, result });
    }

    fn arm(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let next = [
            self.calls.next_deadline(),
            self.waiting.iter().map(|w| w.asked + w.timeout).min(),
            self.inbound.values().next().map(|i| i.until),
        ]
        .into_iter()
        .flatten()
        .min();
        if next != self.armed {
            match next {
                Some(at) => agent.schedule_at(at, TIMER),
                None => agent.cancel_timer(TIMER),
            }
            self.armed = next;
        }
    }
}

impl<Q, R> NetworkBehavior for Behaviour<Q, R>
where
    Q: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Msg = Envelope<Q, R>;
    type Handler = NoHandler<Self::Msg>;
    type Event = Event<Q>;
    type Rpc = (Request<Q, R>, Response<R>);

    fn service_id(&self) -> ServiceId {
        self.config.service
    }

    fn provides_service(&self) -> bool {
        self.config.serving
    }

    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        // Random first id: a restarted node's new calls cannot be finished
        // by late answers to its last life's.
        self.calls = Calls::new(self.config.limits, agent.rng().next_u64());
    }

    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Request<Q, R>,
        answer: Reply<R>,
    ) {
        match req {
            Request::Call {
                to,
                request,
                timeout,
            } => {
                let w = Waiting {
                    to,
                    request,
                    asked: agent.now(),
                    timeout: timeout.unwrap_or(self.config.timeout),
                    answer,
                };
                if self.calls.has_room(to) && !self.waiting.iter().any(|q| q.to == to) {
                    // Room, and no older call to the same place waits.
                    self.send_call(agent, w);
                } else if self.waiting.len() < self.config.max_waiting {
                    self.stats.waited += 1;
                    self.waiting.push_back(w);
                    self.pump(agent);
                } else {
                    let limits = self.calls.limits();
                    let scope = if self.calls.len() >= limits.max_in_flight {
                        super::Scope::Node
                    } else {
                        super::Scope::Peer
                    };
                    let limit = match scope {
                        super::Scope::Node => limits.max_in_flight,
                        super::Scope::Peer => limits.max_per_peer,
                    };
                    agent.answer(
                        w.answer,
                        Response::Reply(Err(CallError::TooManyInFlight { scope, limit })),
                    );
                }
            }
            Request::Respond { id, result } => match self.inbound.remove(&id) {
                Some(i) => {
                    self.respond(agent, i.from, i.call, result.map_err(Fault::Refused));
                    agent.answer(answer, Response::Responded);
                }
                None => agent.refuse(
                    answer,
                    format!(
                        "no request {} waits for an answer (answered or expired)",
                        id.0
                    ),
                ),
            },
        }
        self.arm(agent);
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Self::Msg>) {
        let from = msg.source;
        match msg.msg {
            Envelope::Request { id, body } => {
                self.stats.requests_received += 1;
                if !self.config.serving {
                    let why = "this node does not serve the protocol".to_string();
                    self.respond(agent, from, id, Err(Fault::Refused(why)));
                } else if let Some(f) = self.responder.as_mut() {
                    let result = match catch_unwind(AssertUnwindSafe(|| f(from, body))) {
                        Ok(r) => r.map_err(Fault::Refused),
                        Err(panic) => {
                            let why = plexus_network::panic_message(&*panic);
                            log::warn!(
                                "node {}: rpc {} responder panicked on a request from {from}: {why}",
                                agent.local_node(),
                                self.config.service
                            );
                            Err(Fault::Failed(why))
                        }
                    };
                    self.respond(agent, from, id, result);
                } else if self.inbound.len() >= self.config.max_inbound {
                    self.stats.inbound_refused += 1;
                    self.respond(agent, from, id, Err(Fault::Busy));
                } else {
                    let iid = InboundId(self.next_inbound);
                    self.next_inbound += 1;
                    let until = agent.now() + self.config.inbound_timeout;
                    self.inbound.insert(
                        iid,
                        Inbound {
                            from,
                            call: id,
                            until,
                        },
                    );
                    agent.emit(Event::Request {
                        id: iid,
                        from,
                        request: body,
                    });
                }
            }
            Envelope::Response { id, result } => {
                if let Some(f) = self.calls.answer(id, from, agent.now()) {
                    agent.answer(f.ctx, Response::Reply(result.map_err(CallError::from)));
                    self.pump(agent);
                } else {
                    log::debug!(
                        "node {}: rpc {}: answer to call {id} from {from} came after the call ended; discarded",
                        agent.local_node(),
                        self.config.service
                    );
                }
            }
        }
        self.arm(agent);
    }

    fn on_dropped(&mut self, agent: &mut BehaviorAgent<'_, Self>, report: &DropReport) {
        if let Some(f) = self.calls.dropped(report.rule, agent.now()) {
            agent.answer(
                f.ctx,
                Response::Reply(Err(CallError::NoRoute(report.reason))),
            );
            self.pump(agent);
            self.arm(agent);
        }
    }

    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        if token != TIMER {
            return;
        }
        self.armed = None;
        let now = agent.now();
        for f in self.calls.expire(now) {
            let waited = f.elapsed;
            self.calls_timed_out(agent, f.ctx, waited);
        }
        while let Some((&id, i)) = self.inbound.iter().next() {
            if i.until > now {
                break;
            }
            self.inbound.remove(&id);
            self.stats.inbound_expired += 1;
        }
        self.pump(agent);
        self.arm(agent);
    }
}
