//! Type erasure: the core holds each behaviour, with its handlers and its
//! typed action queue, as one [`ErasedBehavior`].

use super::agent::{BAction, BehaviorAgent, ConnectionAgent, CoreAction, Env, HAction, Queued};
use super::{connected, disconnected, ConnectionHandler, NetworkBehavior, RequestOf, SendOptions};
use crate::error::{ConnectionRejectReason, OutgoingConnectionError, RpcError};
use crate::types::{AppEvent, ConnectionInfo, DropReport, Incoming, RouteChange, RpcId};
use crate::vecmap::VecMap;
use crate::wire::{Frame, Header, HEADER_LEN};
use crate::{ConnId, NodeId, RouteRule, ServiceId};
use serde::Serialize;
use std::any::Any;
use std::collections::VecDeque;

/// The core's view of one behaviour: type-erased, object-safe.
pub(crate) trait ErasedBehavior: Send {
    fn service_id(&self) -> ServiceId;
    fn provides_service(&self) -> bool;
    /// The behaviour's type name, for failure reports.
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn check_connection(&mut self, info: &ConnectionInfo) -> Result<(), ConnectionRejectReason>;
    fn on_start(&mut self, env: &mut Env<'_>);
    fn on_connected(&mut self, env: &mut Env<'_>, info: ConnectionInfo);
    fn on_disconnected(&mut self, env: &mut Env<'_>, info: ConnectionInfo);
    fn on_outgoing_error(
        &mut self,
        env: &mut Env<'_>,
        node: NodeId,
        conn: ConnId,
        err: &OutgoingConnectionError,
    );
    /// A timer of the behaviour (`conn: None`) or of its handler on `conn`.
    fn on_timer(&mut self, env: &mut Env<'_>, conn: Option<ConnId>, token: u64);
    /// Decodes and delivers one message; `Err` when the payload is not a valid `Msg`.
    fn on_message(
        &mut self,
        env: &mut Env<'_>,
        conn: Option<ConnId>,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), postcard::Error>;
    /// Delivers an RPC; gives the request back when it is not this behaviour's type.
    fn on_rpc(
        &mut self,
        env: &mut Env<'_>,
        id: RpcId,
        req: Box<dyn Any + Send>,
    ) -> Result<(), Box<dyn Any + Send>>;
    fn on_route_changed(&mut self, env: &mut Env<'_>, change: &RouteChange);
    fn on_local_event(
        &mut self,
        env: &mut Env<'_>,
        from: ServiceId,
        event: &(dyn Any + Send + Sync),
    );
    fn on_dropped(&mut self, env: &mut Env<'_>, report: &DropReport);
    /// Forgets every handler and queued action (the behaviour failed).
    fn disable(&mut self);
}

/// One behaviour with its handlers and its typed action queue.
pub(crate) struct Slot<B: NetworkBehavior> {
    service: ServiceId,
    behavior: B,
    handlers: VecMap<ConnId, B::Handler>,
    /// Actions in the order they were queued, behaviour's and handlers'.
    queue: VecDeque<Queued<B>>,
    /// Scratch for one handler callback; moved to `queue` after it.
    hq: VecDeque<HAction<B::Handler>>,
    /// The input the budget below counts for.
    input: u64,
    /// Actions applied during `input`.
    used: usize,
    /// Over budget during `input`: everything else it queues is discarded.
    over: bool,
}

impl<B: NetworkBehavior> Slot<B> {
    pub(crate) fn new(behavior: B) -> Self {
        Slot {
            service: behavior.service_id(),
            behavior,
            handlers: VecMap::new(),
            queue: VecDeque::new(),
            hq: VecDeque::new(),
            input: u64::MAX,
            used: 0,
            over: false,
        }
    }

    /// Runs `f` with a behaviour agent, then applies what it queued.
    fn with_behavior<R>(
        &mut self,
        env: &mut Env<'_>,
        f: impl FnOnce(&mut B, &mut BehaviorAgent<'_, B>) -> R,
    ) -> R {
        let r = {
            let mut agent = BehaviorAgent {
                env: env.reborrow(),
                service: self.service,
                queue: &mut self.queue,
            };
            f(&mut self.behavior, &mut agent)
        };
        self.drain(env);
        r
    }

    /// Runs `f` with the handler of `info.conn` (if any) and its agent, then
    /// applies what it queued.
    fn with_handler(
        &mut self,
        env: &mut Env<'_>,
        info: ConnectionInfo,
        f: impl FnOnce(&mut B::Handler, &mut ConnectionAgent<'_, B::Handler>),
    ) {
        call_handler(
            &mut self.handlers,
            &mut self.hq,
            &mut self.queue,
            env,
            info,
            f,
        );
        self.drain(env);
    }

    /// Applies queued actions in order, within the behaviour's budget for
    /// this input. Internal events (to handlers, to the behaviour) call back
    /// at once and may queue more, which apply after what is queued already.
    ///
    /// Over budget, what is left is discarded — but timers are still set
    /// or cancelled and RPC answers become errors, so a behaviour's own
    /// bookkeeping (a "timer pending" flag, an open request) never
    /// disagrees with the core.
    fn drain(&mut self, env: &mut Env<'_>) {
        if self.input != env.input {
            self.input = env.input;
            self.used = 0;
            self.over = false;
        }
        while let Some(action) = self.queue.pop_front() {
            if self.over || self.used >= env.max_actions {
                self.queue.push_front(action);
                self.discard(env);
                return;
            }
            self.used += 1;
            match action {
                Queued::B(a) => self.apply_behavior_action(env, a),
                Queued::H(info, a) => self.apply_handler_action(env, info, a),
            }
        }
    }

    /// The behaviour is over budget for this input: applies the timers and
    /// failed answers in its queue, discards the rest, and reports it.
    fn discard(&mut self, env: &mut Env<'_>) {
        let first = !self.over;
        self.over = true;
        let service = self.service;
        let mut discarded = 0u64;
        for action in self.queue.drain(..) {
            match action {
                Queued::B(BAction::Timer { token, at }) => env.out.push_back(CoreAction::Timer {
                    service,
                    conn: None,
                    token,
                    at,
                }),
                Queued::H(info, HAction::Timer { token, at }) => {
                    env.out.push_back(CoreAction::Timer {
                        service,
                        conn: Some(info.conn),
                        token,
                        at,
                    })
                }
                Queued::B(BAction::Answer { id, .. }) => env.out.push_back(CoreAction::Answer {
                    id,
                    result: Err(RpcError::Overloaded(service)),
                }),
                _ => discarded += 1,
            }
        }
        env.out.push_back(CoreAction::Overflow {
            service,
            discarded,
            first,
        });
    }

    fn apply_behavior_action(&mut self, env: &mut Env<'_>, action: BAction<B>) {
        let service = self.service;
        match action {
            BAction::Send { rule, msg, opts } => {
                if let Some((header, frame)) = encode(env, service, rule, &msg, opts) {
                    env.out.push_back(CoreAction::Route { header, frame });
                }
            }
            BAction::SendConn { conn, msg, opts } => {
                if let Some((header, frame)) = encode(env, service, RouteRule::Direct, &msg, opts) {
                    env.out.push_back(CoreAction::SendConn {
                        conn,
                        header,
                        frame,
                    });
                }
            }
            BAction::ToHandler { conn, event } => match env.conns.get(&conn).copied() {
                Some(info) => call_handler(
                    &mut self.handlers,
                    &mut self.hq,
                    &mut self.queue,
                    env,
                    info,
                    |h, a| h.on_behavior_event(a, event),
                ),
                None => log::trace!("{service}: event for closed {conn} dropped"),
            },
            BAction::ToAllHandlers(event) => {
                let conns: Vec<ConnectionInfo> = self
                    .handlers
                    .keys()
                    .filter_map(|c| env.conns.get(c).copied())
                    .collect();
                for info in conns {
                    let event = event.clone();
                    call_handler(
                        &mut self.handlers,
                        &mut self.hq,
                        &mut self.queue,
                        env,
                        info,
                        |h, a| h.on_behavior_event(a, event),
                    );
                }
            }
            BAction::Connect { node, addr } => env.out.push_back(CoreAction::Connect {
                node,
                addr,
                service,
            }),
            BAction::Close { conn } => env.out.push_back(CoreAction::Close { conn, service }),
            BAction::Emit(event) => env.out.push_back(CoreAction::Emit(AppEvent {
                service,
                event: Box::new(event),
            })),
            BAction::Answer { id, result } => env.out.push_back(CoreAction::Answer {
                id,
                result: result.map(|r| Box::new(r) as Box<dyn Any + Send>),
            }),
            BAction::Timer { token, at } => env.out.push_back(CoreAction::Timer {
                service,
                conn: None,
                token,
                at,
            }),
            BAction::Rtt { conn, rtt } => env.out.push_back(CoreAction::Rtt { conn, rtt }),
            BAction::RouteChanged(c) => env.out.push_back(CoreAction::RouteChanged(c)),
            BAction::Publish(event) => env.out.push_back(CoreAction::Local {
                from: service,
                event,
            }),
        }
    }

    fn apply_handler_action(
        &mut self,
        env: &mut Env<'_>,
        from: ConnectionInfo,
        action: HAction<B::Handler>,
    ) {
        let service = self.service;
        match action {
            HAction::Send { msg, opts } => {
                if let Some((header, frame)) = encode(env, service, RouteRule::Direct, &msg, opts) {
                    env.out.push_back(CoreAction::SendConn {
                        conn: from.conn,
                        header,
                        frame,
                    });
                }
            }
            HAction::SendRoute { rule, msg, opts } => {
                if let Some((header, frame)) = encode(env, service, rule, &msg, opts) {
                    env.out.push_back(CoreAction::Route { header, frame });
                }
            }
            HAction::ToBehavior(event) => {
                let mut agent = BehaviorAgent {
                    env: env.reborrow(),
                    service,
                    queue: &mut self.queue,
                };
                self.behavior.on_handler_event(&mut agent, from, event);
            }
            HAction::ToHandler { to, event } => match env.conns.get(&to).copied() {
                Some(info) => call_handler(
                    &mut self.handlers,
                    &mut self.hq,
                    &mut self.queue,
                    env,
                    info,
                    |h, a| h.on_other_handler_event(a, from, event),
                ),
                None => log::trace!("{service}: event for closed {to} dropped"),
            },
            HAction::Close => env.out.push_back(CoreAction::Close {
                conn: from.conn,
                service,
            }),
            HAction::Timer { token, at } => env.out.push_back(CoreAction::Timer {
                service,
                conn: Some(from.conn),
                token,
                at,
            }),
        }
    }
}

/// Calls the handler of `info.conn`, if there is one, and moves what it
/// queued to the slot's queue, tagged with its connection.
fn call_handler<H: ConnectionHandler, B: NetworkBehavior<Handler = H>>(
    handlers: &mut VecMap<ConnId, H>,
    hq: &mut VecDeque<HAction<H>>,
    queue: &mut VecDeque<Queued<B>>,
    env: &mut Env<'_>,
    info: ConnectionInfo,
    f: impl FnOnce(&mut H, &mut ConnectionAgent<'_, H>),
) {
    let Some(h) = handlers.get_mut(&info.conn) else {
        log::trace!("{}: no handler on {}; event dropped", info.node, info.conn);
        return;
    };
    {
        let mut agent = ConnectionAgent {
            env: env.reborrow(),
            info,
            queue: &mut *hq,
        };
        f(h, &mut agent);
    }
    queue.extend(hq.drain(..).map(|a| Queued::H(info, a)));
}

/// Builds a frame for `msg`: the header (source = this node) then the
/// postcard payload, encoded straight into one buffer.
fn encode<M: Serialize>(
    env: &Env<'_>,
    service: ServiceId,
    rule: RouteRule,
    msg: &M,
    opts: SendOptions,
) -> Option<(Header, Vec<u8>)> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 64);
    buf.resize(HEADER_LEN, 0);
    let mut buf = match postcard::to_extend(msg, buf) {
        Ok(b) => b,
        Err(e) => {
            log::warn!(
                "node {}: {service}: message not serialisable: {e}",
                env.local
            );
            return None;
        }
    };
    let header = Header {
        service,
        rule,
        ttl: opts.ttl.unwrap_or(env.default_ttl),
        source: env.local,
        unreliable: opts.unreliable,
    };
    if header.write_into(&mut buf).is_none() {
        log::warn!(
            "node {}: {service}: message of {} bytes too large",
            env.local,
            buf.len() - HEADER_LEN
        );
        return None;
    }
    debug_assert!(Frame::decode(&buf, usize::MAX).is_ok());
    Some((header, buf))
}

impl<B: NetworkBehavior> ErasedBehavior for Slot<B> {
    fn service_id(&self) -> ServiceId {
        self.service
    }

    fn provides_service(&self) -> bool {
        self.behavior.provides_service()
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<B>()
    }

    fn as_any(&self) -> &dyn Any {
        &self.behavior
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.behavior
    }

    fn check_connection(&mut self, info: &ConnectionInfo) -> Result<(), ConnectionRejectReason> {
        self.behavior.check_connection(info)
    }

    fn on_start(&mut self, env: &mut Env<'_>) {
        self.with_behavior(env, |b, a| b.on_start(a));
    }

    fn on_connected(&mut self, env: &mut Env<'_>, info: ConnectionInfo) {
        // The handler is installed and opened before anything the behaviour
        // queued applies: an event it sent its new handler reaches it.
        let handler = {
            let mut agent = BehaviorAgent {
                env: env.reborrow(),
                service: self.service,
                queue: &mut self.queue,
            };
            connected(&mut self.behavior, &mut agent, info)
        };
        if let Some(h) = handler {
            self.handlers.insert(info.conn, h);
            call_handler(
                &mut self.handlers,
                &mut self.hq,
                &mut self.queue,
                env,
                info,
                |h, a| h.on_opened(a),
            );
        }
        self.drain(env);
    }

    fn on_disconnected(&mut self, env: &mut Env<'_>, info: ConnectionInfo) {
        self.with_handler(env, info, |h, a| h.on_closed(a));
        self.handlers.remove(&info.conn);
        self.with_behavior(env, |b, a| disconnected(b, a, info));
    }

    fn on_outgoing_error(
        &mut self,
        env: &mut Env<'_>,
        node: NodeId,
        conn: ConnId,
        err: &OutgoingConnectionError,
    ) {
        self.with_behavior(env, |b, a| {
            b.on_outgoing_connection_error(a, node, conn, err)
        });
    }

    fn on_timer(&mut self, env: &mut Env<'_>, conn: Option<ConnId>, token: u64) {
        match conn {
            None => self.with_behavior(env, |b, a| b.on_timer(a, token)),
            Some(c) => {
                if let Some(info) = env.conns.get(&c).copied() {
                    self.with_handler(env, info, |h, a| h.on_timer(a, token));
                }
            }
        }
    }

    fn on_message(
        &mut self,
        env: &mut Env<'_>,
        conn: Option<ConnId>,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), postcard::Error> {
        let msg: B::Msg = postcard::from_bytes(payload)?;
        let incoming = Incoming {
            source: header.source,
            conn,
            rule: header.rule,
            ttl: header.ttl,
            msg,
        };
        let handler_conn = match (header.rule, conn) {
            (RouteRule::Direct, Some(c)) if self.handlers.contains_key(&c) => {
                env.conns.get(&c).copied()
            }
            _ => None,
        };
        match handler_conn {
            Some(info) => self.with_handler(env, info, |h, a| h.on_message(a, incoming)),
            None => self.with_behavior(env, |b, a| b.on_message(a, incoming)),
        }
        Ok(())
    }

    fn on_rpc(
        &mut self,
        env: &mut Env<'_>,
        id: RpcId,
        req: Box<dyn Any + Send>,
    ) -> Result<(), Box<dyn Any + Send>> {
        let req = req.downcast::<RequestOf<B>>()?;
        let answer = super::Answer::new(id);
        self.with_behavior(env, |b, a| b.on_rpc(a, *req, answer));
        Ok(())
    }

    fn on_route_changed(&mut self, env: &mut Env<'_>, change: &RouteChange) {
        self.with_behavior(env, |b, a| b.on_route_changed(a, change));
    }

    fn on_local_event(
        &mut self,
        env: &mut Env<'_>,
        from: ServiceId,
        event: &(dyn Any + Send + Sync),
    ) {
        self.with_behavior(env, |b, a| b.on_local_event(a, from, event));
    }

    fn on_dropped(&mut self, env: &mut Env<'_>, report: &DropReport) {
        self.with_behavior(env, |b, a| b.on_dropped(a, report));
    }

    fn disable(&mut self) {
        self.handlers.clear();
        self.queue.clear();
        self.hq.clear();
    }
}
