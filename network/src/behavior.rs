//! The plugin API: [`NetworkBehavior`], [`ConnectionHandler`], and the agents
//! through which they act.
//!
//! # Guarantees
//! - Callbacks never re-enter the core. An agent call only queues an action;
//!   the core applies the queue after the callback returns. So a behaviour
//!   needs no locks, and a send made inside a callback is observed by the
//!   destination only after the callback that made it has finished.
//! - Events between a behaviour and its own handlers (and between handlers of
//!   the same behaviour) stay typed: they never leave the behaviour's slot
//!   and are never serialised. Only messages that cross the wire are
//!   serialised (postcard), and only application events and RPC answers are
//!   type-erased (`Box<dyn Any>`).
//! - A handler exists for a connection from the moment its behaviour returns
//!   it until `on_closed` is called; after `on_closed` it is dropped.

use crate::network::{AppEvent, CoreAction, Incoming, RouteChange, RpcId};
use crate::wire::{Frame, Header, HEADER_LEN};
use crate::{Address, ConnId, Direction, Instant, NodeId, Rng, RouteRule, ServiceId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use thiserror::Error;

/// A connection as behaviours see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// This node's id for the connection.
    pub conn: ConnId,
    /// The node on the other end (authenticated on secure transports).
    pub node: NodeId,
    /// Who dialled.
    pub direction: Direction,
    /// The remote address, when the transport knows it.
    pub addr: Option<Address>,
}

/// Why a behaviour or the core refused a connection.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionRejectReason {
    /// The node has its maximum number of connections.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// A behaviour refused, for the reason it gives.
    #[error("refused by a behaviour: {0}")]
    Custom(String),
}

/// Why an outgoing connection did not come up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutgoingConnectionError {
    /// Nothing answered at the address (or the path to it is cut).
    #[error("unreachable")]
    Unreachable,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The remote end proved a different identity than the one dialled.
    #[error("identity mismatch: dialled {expected}, remote is {actual}")]
    IdentityMismatch {
        /// The node we dialled.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// The remote node, or one of our own behaviours, refused it.
    #[error("rejected: {0}")]
    Rejected(ConnectionRejectReason),
    /// The transport failed, as it describes.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Per-send options. `Default` is reliable with the node's default TTL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Hops the message may take; `None` uses the node's configured default.
    pub ttl: Option<u8>,
    /// Loss is acceptable: transports may carry it as a datagram.
    pub unreliable: bool,
}

/// Something that happened on a handler's connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionEvent<M> {
    /// A message for this behaviour arrived on this connection.
    Msg(Incoming<M>),
}

/// A handle to answer one RPC, later or at once, with [`BehaviorAgent::answer`].
///
/// The answer carries the request's id back to the caller. Dropping it
/// without answering leaves the caller waiting until its own timeout.
#[must_use = "an RPC that is never answered leaves its caller waiting"]
pub struct Answer<R> {
    id: RpcId,
    _r: PhantomData<fn(R)>,
}

impl<R> Answer<R> {
    /// The id of the request this answers.
    pub fn id(&self) -> RpcId {
        self.id
    }
}

impl<R> fmt::Debug for Answer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Answer({})", self.id.0)
    }
}

/// Node-wide logic of one protocol: a plugin of the core.
///
/// Every method but [`service_id`](Self::service_id) has a default that does
/// nothing (accepting every connection), so a behaviour implements only what
/// it needs. Each behaviour picks its own message, event and RPC types:
/// - `Msg` crosses the wire (postcard-encoded) between instances of this
///   behaviour on different nodes;
/// - `HandlerEvent` goes from the behaviour to its handlers and between its
///   handlers; `BehaviorEvent` from a handler to the behaviour;
/// - `Event` goes to the application; `Request`/`Response` are its RPCs.
pub trait NetworkBehavior: Send + 'static {
    /// The wire message.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// Behaviour → handler and handler → handler events.
    type HandlerEvent: Clone + Send + 'static;
    /// Handler → behaviour events.
    type BehaviorEvent: Send + 'static;
    /// Events for the application.
    type Event: Send + 'static;
    /// RPC requests from the application.
    type Request: Send + 'static;
    /// RPC answers to the application.
    type Response: Send + 'static;

    /// The service this behaviour answers to; unique within a node.
    fn service_id(&self) -> ServiceId;

    /// Called every tick of the node (see `NetworkConfig::tick_interval`).
    fn on_tick(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let _ = agent;
    }

    /// May refuse an incoming connection before any behaviour sees it.
    fn check_incoming_connection(
        &mut self,
        node: NodeId,
        conn: ConnId,
    ) -> Result<(), ConnectionRejectReason> {
        let _ = (node, conn);
        Ok(())
    }

    /// May refuse an outgoing connection once it is up, before any behaviour sees it.
    fn check_outgoing_connection(
        &mut self,
        node: NodeId,
        conn: ConnId,
    ) -> Result<(), ConnectionRejectReason> {
        let _ = (node, conn);
        Ok(())
    }

    /// An incoming connection is up; return a handler to serve it.
    fn on_incoming_connection_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Box<dyn ConnectionHandler<Self>>> {
        let _ = (agent, conn);
        None
    }

    /// An outgoing connection is up; return a handler to serve it.
    fn on_outgoing_connection_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Box<dyn ConnectionHandler<Self>>> {
        let _ = (agent, conn);
        None
    }

    /// An incoming connection closed (its handler's `on_closed` has run).
    fn on_incoming_connection_disconnected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) {
        let _ = (agent, conn);
    }

    /// An outgoing connection closed (its handler's `on_closed` has run).
    fn on_outgoing_connection_disconnected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) {
        let _ = (agent, conn);
    }

    /// An outgoing connection never came up.
    fn on_outgoing_connection_error(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        node: NodeId,
        conn: ConnId,
        err: &OutgoingConnectionError,
    ) {
        let _ = (agent, node, conn, err);
    }

    /// One of this behaviour's handlers sent it an event.
    fn on_handler_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        node: NodeId,
        conn: ConnId,
        event: Self::BehaviorEvent,
    ) {
        let _ = (agent, node, conn, event);
    }

    /// A message arrived for this behaviour that no handler took: sent by
    /// this node to itself (`conn` is `None`), or arriving on a connection
    /// for which this behaviour returned no handler.
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Self::Msg>) {
        let _ = agent;
        log::trace!(
            "node {}: {} message from {} ignored (no handler, no on_message)",
            msg.source,
            self.service_id(),
            msg.source
        );
    }

    /// A route of this node's router changed (announced by the router's
    /// own behaviour through [`BehaviorAgent::route_changed`]).
    fn on_route_changed(&mut self, agent: &mut BehaviorAgent<'_, Self>, change: &RouteChange) {
        let _ = (agent, change);
    }

    /// A request from the application. Answer now or later with
    /// [`BehaviorAgent::answer`]. The default drops the request, so a
    /// behaviour with RPCs must implement this.
    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: Self::Request,
        answer: Answer<Self::Response>,
    ) {
        let _ = (agent, req);
        log::warn!(
            "{}: RPC {} dropped: the behaviour does not implement on_rpc",
            self.service_id(),
            answer.id.0
        );
    }
}

/// Per-connection logic of one behaviour.
pub trait ConnectionHandler<B: NetworkBehavior + ?Sized>: Send {
    /// The handler was installed; its connection is up.
    fn on_opened(&mut self, agent: &mut ConnectionAgent<'_, B>) {
        let _ = agent;
    }
    /// Called every tick of the node.
    fn on_tick(&mut self, agent: &mut ConnectionAgent<'_, B>) {
        let _ = agent;
    }
    /// A message arrived on this connection.
    fn on_event(&mut self, agent: &mut ConnectionAgent<'_, B>, event: ConnectionEvent<B::Msg>);
    /// Another connection's handler (of the same behaviour) sent an event.
    fn on_other_handler_event(
        &mut self,
        agent: &mut ConnectionAgent<'_, B>,
        from_node: NodeId,
        from_conn: ConnId,
        event: B::HandlerEvent,
    ) {
        let _ = (agent, from_node, from_conn, event);
    }
    /// The behaviour sent an event.
    fn on_behavior_event(&mut self, agent: &mut ConnectionAgent<'_, B>, event: B::HandlerEvent) {
        let _ = (agent, event);
    }
    /// The connection closed. Sends made now are dropped.
    fn on_closed(&mut self, agent: &mut ConnectionAgent<'_, B>) {
        let _ = agent;
    }
}

/// What a behaviour or handler queued, still typed.
enum Action<B: NetworkBehavior + ?Sized> {
    Send {
        rule: RouteRule,
        msg: B::Msg,
        opts: SendOptions,
    },
    SendConn {
        conn: ConnId,
        msg: B::Msg,
        opts: SendOptions,
    },
    ToHandler {
        conn: ConnId,
        event: B::HandlerEvent,
    },
    ToAllHandlers(B::HandlerEvent),
    ToBehavior {
        from: ConnectionInfo,
        event: B::BehaviorEvent,
    },
    HandlerToHandler {
        from: ConnectionInfo,
        to: ConnId,
        event: B::HandlerEvent,
    },
    Connect {
        node: NodeId,
        addr: Address,
    },
    Close {
        conn: ConnId,
    },
    Emit(B::Event),
    Answer {
        id: RpcId,
        response: B::Response,
    },
}

/// What a callback can see of the node: lent by the core for one call.
pub(crate) struct Env<'a> {
    pub(crate) local: NodeId,
    pub(crate) now: Instant,
    pub(crate) default_ttl: u8,
    pub(crate) services: &'a [ServiceId],
    pub(crate) rng: &'a mut Rng,
    pub(crate) conns: &'a BTreeMap<ConnId, ConnectionInfo>,
    pub(crate) out: &'a mut VecDeque<CoreAction>,
}

/// The behaviour's hands: everything it does goes through here, queued.
pub struct BehaviorAgent<'a, B: NetworkBehavior + ?Sized> {
    env: Env<'a>,
    service: ServiceId,
    queue: &'a mut VecDeque<Action<B>>,
}

impl<'a, B: NetworkBehavior + ?Sized> BehaviorAgent<'a, B> {
    /// This node's id.
    pub fn local_node(&self) -> NodeId {
        self.env.local
    }
    /// This behaviour's service.
    pub fn service_id(&self) -> ServiceId {
        self.service
    }
    /// The time of the input being handled.
    pub fn now(&self) -> Instant {
        self.env.now
    }
    /// The node's seeded RNG.
    pub fn rng(&mut self) -> &mut Rng {
        &mut *self.env.rng
    }
    /// The node's established connections, in `ConnId` order.
    pub fn connections(&self) -> impl Iterator<Item = &ConnectionInfo> + '_ {
        self.env.conns.values()
    }
    /// One established connection.
    pub fn connection(&self, conn: ConnId) -> Option<&ConnectionInfo> {
        self.env.conns.get(&conn)
    }
    /// The services of every behaviour on this node, ascending.
    pub fn local_services(&self) -> &[ServiceId] {
        self.env.services
    }
    /// Tells every behaviour of this node (through
    /// [`NetworkBehavior::on_route_changed`]) and the application (as
    /// [`Output::RouteChanged`](crate::Output::RouteChanged)) that a route
    /// changed. Routers call this; other behaviours have no need to.
    pub fn route_changed(&mut self, change: RouteChange) {
        self.env.out.push_back(CoreAction::RouteChanged(change));
    }
    /// Records the measured round-trip time of a connection, shown in the
    /// node's status ([`Network::connection_rtt`](crate::Network::connection_rtt)).
    pub fn report_rtt(&mut self, conn: ConnId, rtt: std::time::Duration) {
        self.env.out.push_back(CoreAction::Rtt { conn, rtt });
    }
    /// Sends `msg` to this behaviour on the node(s) the rule resolves to.
    pub fn send(&mut self, rule: RouteRule, msg: B::Msg) {
        self.send_with(rule, msg, SendOptions::default());
    }
    /// [`send`](Self::send) with options.
    pub fn send_with(&mut self, rule: RouteRule, msg: B::Msg, opts: SendOptions) {
        self.queue.push_back(Action::Send { rule, msg, opts });
    }
    /// Sends `msg` one hop, on a connection.
    pub fn send_to_conn(&mut self, conn: ConnId, msg: B::Msg) {
        self.queue.push_back(Action::SendConn {
            conn,
            msg,
            opts: SendOptions::default(),
        });
    }
    /// Sends an event to this behaviour's handler on `conn`.
    pub fn send_to_handler(&mut self, conn: ConnId, event: B::HandlerEvent) {
        self.queue.push_back(Action::ToHandler { conn, event });
    }
    /// Sends an event to every handler of this behaviour.
    pub fn send_to_handlers(&mut self, event: B::HandlerEvent) {
        self.queue.push_back(Action::ToAllHandlers(event));
    }
    /// Dials `node` at `addr` (ignored if a connection to it exists or is being set up).
    pub fn connect(&mut self, node: NodeId, addr: Address) {
        self.queue.push_back(Action::Connect { node, addr });
    }
    /// Closes a connection.
    pub fn close(&mut self, conn: ConnId) {
        self.queue.push_back(Action::Close { conn });
    }
    /// Emits an event to the application.
    pub fn emit(&mut self, event: B::Event) {
        self.queue.push_back(Action::Emit(event));
    }
    /// Answers an RPC.
    pub fn answer(&mut self, answer: Answer<B::Response>, response: B::Response) {
        self.queue.push_back(Action::Answer {
            id: answer.id,
            response,
        });
    }
}

/// A handler's hands, bound to its connection.
pub struct ConnectionAgent<'a, B: NetworkBehavior + ?Sized> {
    env: Env<'a>,
    info: ConnectionInfo,
    queue: &'a mut VecDeque<Action<B>>,
}

impl<'a, B: NetworkBehavior + ?Sized> ConnectionAgent<'a, B> {
    /// This node's id.
    pub fn local_node(&self) -> NodeId {
        self.env.local
    }
    /// The connection this handler serves.
    pub fn conn(&self) -> ConnId {
        self.info.conn
    }
    /// The node on the other end.
    pub fn remote_node(&self) -> NodeId {
        self.info.node
    }
    /// Everything known about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }
    /// The time of the input being handled.
    pub fn now(&self) -> Instant {
        self.env.now
    }
    /// The node's seeded RNG.
    pub fn rng(&mut self) -> &mut Rng {
        &mut *self.env.rng
    }
    /// Sends `msg` on this connection, one hop.
    pub fn send(&mut self, msg: B::Msg) {
        self.send_with(msg, SendOptions::default());
    }
    /// [`send`](Self::send) with options (the TTL is irrelevant one hop).
    pub fn send_with(&mut self, msg: B::Msg, opts: SendOptions) {
        self.queue.push_back(Action::SendConn {
            conn: self.info.conn,
            msg,
            opts,
        });
    }
    /// Sends `msg` by route rule, like [`BehaviorAgent::send`].
    pub fn send_route(&mut self, rule: RouteRule, msg: B::Msg) {
        self.queue.push_back(Action::Send {
            rule,
            msg,
            opts: SendOptions::default(),
        });
    }
    /// Sends an event to the behaviour.
    pub fn emit_to_behavior(&mut self, event: B::BehaviorEvent) {
        self.queue.push_back(Action::ToBehavior {
            from: self.info,
            event,
        });
    }
    /// Sends an event to this behaviour's handler on another connection.
    pub fn send_to_handler(&mut self, conn: ConnId, event: B::HandlerEvent) {
        self.queue.push_back(Action::HandlerToHandler {
            from: self.info,
            to: conn,
            event,
        });
    }
    /// Closes this connection.
    pub fn close(&mut self) {
        self.queue.push_back(Action::Close {
            conn: self.info.conn,
        });
    }
}

/// The core's view of one behaviour: type-erased, object-safe.
pub(crate) trait ErasedBehavior: Send {
    fn service_id(&self) -> ServiceId;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn on_tick(&mut self, env: &mut Env<'_>);
    fn check_connection(
        &mut self,
        direction: Direction,
        node: NodeId,
        conn: ConnId,
    ) -> Result<(), ConnectionRejectReason>;
    fn on_connected(&mut self, env: &mut Env<'_>, info: ConnectionInfo);
    fn on_disconnected(&mut self, env: &mut Env<'_>, info: ConnectionInfo);
    fn on_outgoing_error(
        &mut self,
        env: &mut Env<'_>,
        node: NodeId,
        conn: ConnId,
        err: &OutgoingConnectionError,
    );
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
}

/// One behaviour with its handlers and its typed action queue.
pub(crate) struct Slot<B: NetworkBehavior> {
    service: ServiceId,
    behavior: B,
    handlers: BTreeMap<ConnId, Box<dyn ConnectionHandler<B>>>,
    queue: VecDeque<Action<B>>,
}

impl<B: NetworkBehavior> Slot<B> {
    pub(crate) fn new(behavior: B) -> Self {
        Slot {
            service: behavior.service_id(),
            behavior,
            handlers: BTreeMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Runs `f` with a behaviour agent, then applies what it queued.
    fn with_behavior<R>(
        &mut self,
        env: &mut Env<'_>,
        f: impl FnOnce(&mut B, &mut BehaviorAgent<'_, B>) -> R,
    ) -> R {
        let r = {
            let mut agent = behavior_agent(env, self.service, &mut self.queue);
            f(&mut self.behavior, &mut agent)
        };
        self.drain(env);
        r
    }

    /// Runs `f` with the handler of `conn` (if any) and its agent, then drains.
    fn with_handler(
        &mut self,
        env: &mut Env<'_>,
        info: ConnectionInfo,
        f: impl FnOnce(&mut dyn ConnectionHandler<B>, &mut ConnectionAgent<'_, B>),
    ) {
        if let Some(h) = self.handlers.get_mut(&info.conn) {
            let mut agent = conn_agent(env, info, &mut self.queue);
            f(h.as_mut(), &mut agent);
        }
        self.drain(env);
    }

    /// Applies queued actions: internal ones here, typed; external ones as
    /// core actions. Internal events may queue more; all are applied in order.
    fn drain(&mut self, env: &mut Env<'_>) {
        let Slot {
            service,
            behavior,
            handlers,
            queue,
        } = self;
        let service = *service;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { rule, msg, opts } => {
                    if let Some((header, frame)) = encode(env, service, rule, &msg, opts) {
                        env.out.push_back(CoreAction::Route { header, frame });
                    }
                }
                Action::SendConn { conn, msg, opts } => {
                    if let Some((header, frame)) =
                        encode(env, service, RouteRule::Direct, &msg, opts)
                    {
                        env.out.push_back(CoreAction::SendConn {
                            conn,
                            header,
                            frame,
                        });
                    }
                }
                Action::ToHandler { conn, event } => match handlers.get_mut(&conn) {
                    Some(h) => match env.conns.get(&conn).copied() {
                        Some(info) => {
                            let mut agent = conn_agent(env, info, queue);
                            h.on_behavior_event(&mut agent, event);
                        }
                        None => log::trace!("{service}: event for closing {conn} dropped"),
                    },
                    None => log::trace!("{service}: no handler on {conn}; event dropped"),
                },
                Action::ToAllHandlers(event) => {
                    for (conn, h) in handlers.iter_mut() {
                        if let Some(info) = env.conns.get(conn).copied() {
                            let mut agent = conn_agent(env, info, queue);
                            h.on_behavior_event(&mut agent, event.clone());
                        }
                    }
                }
                Action::ToBehavior { from, event } => {
                    let mut agent = behavior_agent(env, service, queue);
                    behavior.on_handler_event(&mut agent, from.node, from.conn, event);
                }
                Action::HandlerToHandler { from, to, event } => match handlers.get_mut(&to) {
                    Some(h) => match env.conns.get(&to).copied() {
                        Some(info) => {
                            let mut agent = conn_agent(env, info, queue);
                            h.on_other_handler_event(&mut agent, from.node, from.conn, event);
                        }
                        None => log::trace!("{service}: event for closing {to} dropped"),
                    },
                    None => log::trace!("{service}: no handler on {to}; event dropped"),
                },
                Action::Connect { node, addr } => {
                    env.out.push_back(CoreAction::Connect { node, addr });
                }
                Action::Close { conn } => env.out.push_back(CoreAction::Close { conn, service }),
                Action::Emit(event) => env.out.push_back(CoreAction::Emit(AppEvent {
                    service,
                    event: Box::new(event),
                })),
                Action::Answer { id, response } => env.out.push_back(CoreAction::Answer {
                    id,
                    response: Box::new(response),
                }),
            }
        }
    }
}

fn behavior_agent<'a, 'e, B: NetworkBehavior + ?Sized>(
    env: &'a mut Env<'e>,
    service: ServiceId,
    queue: &'a mut VecDeque<Action<B>>,
) -> BehaviorAgent<'a, B> {
    BehaviorAgent {
        env: reborrow(env),
        service,
        queue,
    }
}

fn conn_agent<'a, 'e, B: NetworkBehavior + ?Sized>(
    env: &'a mut Env<'e>,
    info: ConnectionInfo,
    queue: &'a mut VecDeque<Action<B>>,
) -> ConnectionAgent<'a, B> {
    ConnectionAgent {
        env: reborrow(env),
        info,
        queue,
    }
}

/// A shorter-lived view of `env` for one agent.
fn reborrow<'a>(env: &'a mut Env<'_>) -> Env<'a> {
    Env {
        local: env.local,
        now: env.now,
        default_ttl: env.default_ttl,
        services: env.services,
        rng: &mut *env.rng,
        conns: env.conns,
        out: &mut *env.out,
    }
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
    let payload_len = buf.len() - HEADER_LEN;
    let Ok(len) = u32::try_from(payload_len) else {
        log::warn!(
            "node {}: {service}: message of {payload_len} bytes too large",
            env.local
        );
        return None;
    };
    let header = Header {
        service,
        rule,
        ttl: opts.ttl.unwrap_or(env.default_ttl),
        source: env.local,
        unreliable: opts.unreliable,
    };
    buf[..HEADER_LEN].copy_from_slice(&header.to_bytes(len));
    debug_assert!(Frame::decode(&buf, usize::MAX).is_ok());
    Some((header, buf))
}

impl<B: NetworkBehavior> ErasedBehavior for Slot<B> {
    fn service_id(&self) -> ServiceId {
        self.service
    }

    fn as_any(&self) -> &dyn Any {
        &self.behavior
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.behavior
    }

    fn on_tick(&mut self, env: &mut Env<'_>) {
        self.with_behavior(env, |b, a| b.on_tick(a));
        // Every handler ticks, then their actions apply in the order they
        // were queued: no per-tick allocation, one drain.
        for (conn, h) in self.handlers.iter_mut() {
            if let Some(info) = env.conns.get(conn).copied() {
                let mut agent = conn_agent(env, info, &mut self.queue);
                h.on_tick(&mut agent);
            }
        }
        self.drain(env);
    }

    fn check_connection(
        &mut self,
        direction: Direction,
        node: NodeId,
        conn: ConnId,
    ) -> Result<(), ConnectionRejectReason> {
        match direction {
            Direction::Incoming => self.behavior.check_incoming_connection(node, conn),
            Direction::Outgoing => self.behavior.check_outgoing_connection(node, conn),
        }
    }

    fn on_connected(&mut self, env: &mut Env<'_>, info: ConnectionInfo) {
        let handler = self.with_behavior(env, |b, a| match info.direction {
            Direction::Incoming => b.on_incoming_connection_connected(a, info),
            Direction::Outgoing => b.on_outgoing_connection_connected(a, info),
        });
        if let Some(h) = handler {
            self.handlers.insert(info.conn, h);
            self.with_handler(env, info, |h, a| h.on_opened(a));
        }
    }

    fn on_disconnected(&mut self, env: &mut Env<'_>, info: ConnectionInfo) {
        self.with_handler(env, info, |h, a| h.on_closed(a));
        self.handlers.remove(&info.conn);
        self.with_behavior(env, |b, a| match info.direction {
            Direction::Incoming => b.on_incoming_connection_disconnected(a, info),
            Direction::Outgoing => b.on_outgoing_connection_disconnected(a, info),
        });
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
        let info = conn.and_then(|c| env.conns.get(&c).copied());
        match info {
            Some(info) if self.handlers.contains_key(&info.conn) => {
                self.with_handler(env, info, |h, a| {
                    h.on_event(a, ConnectionEvent::Msg(incoming))
                });
            }
            _ => self.with_behavior(env, |b, a| b.on_message(a, incoming)),
        }
        Ok(())
    }

    fn on_rpc(
        &mut self,
        env: &mut Env<'_>,
        id: RpcId,
        req: Box<dyn Any + Send>,
    ) -> Result<(), Box<dyn Any + Send>> {
        let req = req.downcast::<B::Request>()?;
        let answer = Answer {
            id,
            _r: PhantomData,
        };
        self.with_behavior(env, |b, a| b.on_rpc(a, *req, answer));
        Ok(())
    }

    fn on_route_changed(&mut self, env: &mut Env<'_>, change: &RouteChange) {
        self.with_behavior(env, |b, a| b.on_route_changed(a, change));
    }
}
