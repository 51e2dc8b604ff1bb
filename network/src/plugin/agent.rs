//! The agents: a behaviour's and a handler's hands. Every call queues an
//! action; the core applies the queue after the callback returns.

use super::{ConnectionHandler, FromBehaviorOf, NetworkBehavior, ResponseOf, SendOptions};
use crate::error::RpcError;
use crate::types::{AppEvent, ConnectionInfo, RouteChange, RpcId};
use crate::vecmap::VecMap;
use crate::wire::Header;
use crate::{Address, ConnId, Instant, NodeId, Rng, RouteRule, ServiceId};
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// What a behaviour's slot hands the core: already type-erased.
pub(crate) enum CoreAction {
    /// Route a frame by its header's rule.
    Route {
        header: Header,
        frame: Vec<u8>,
    },
    /// Send a frame one hop on a connection.
    SendConn {
        conn: ConnId,
        header: Header,
        frame: Vec<u8>,
    },
    Connect {
        node: NodeId,
        addr: Address,
        service: ServiceId,
    },
    Close {
        conn: ConnId,
        service: ServiceId,
    },
    Emit(AppEvent),
    Answer {
        id: RpcId,
        result: Result<Box<dyn Any + Send>, RpcError>,
    },
    Rtt {
        conn: ConnId,
        rtt: Duration,
    },
    RouteChanged(RouteChange),
    /// Set (`at: Some`) or cancel (`None`) the timer `token` of a behaviour
    /// (`conn: None`) or of its handler on `conn`.
    Timer {
        service: ServiceId,
        conn: Option<ConnId>,
        token: u64,
        at: Option<Instant>,
    },
    /// A behaviour went over its action budget for this input; `discarded`
    /// of its actions were not applied.
    Overflow {
        service: ServiceId,
        discarded: u64,
        /// The first overflow of this behaviour in this input.
        first: bool,
    },
    /// A message this node sent died here: tell its behaviour.
    Dropped(crate::types::DropReport),
    /// An event for the node's other behaviours.
    Local {
        from: ServiceId,
        event: Arc<dyn Any + Send + Sync>,
    },
}

/// What a callback can see of the node: lent by the core for one call.
pub(crate) struct Env<'a> {
    pub(crate) local: NodeId,
    pub(crate) now: Instant,
    /// Counts the core's inputs: a behaviour's action budget renews when it
    /// changes.
    pub(crate) input: u64,
    pub(crate) default_ttl: u8,
    pub(crate) max_actions: usize,
    pub(crate) services: &'a [ServiceId],
    pub(crate) addrs: &'a [Address],
    pub(crate) rng: &'a mut Rng,
    pub(crate) conns: &'a VecMap<ConnId, ConnectionInfo>,
    pub(crate) out: &'a mut VecDeque<CoreAction>,
}

impl Env<'_> {
    /// A shorter-lived view for one agent.
    pub(crate) fn reborrow(&mut self) -> Env<'_> {
        Env {
            local: self.local,
            now: self.now,
            input: self.input,
            default_ttl: self.default_ttl,
            max_actions: self.max_actions,
            services: self.services,
            addrs: self.addrs,
            rng: &mut *self.rng,
            conns: self.conns,
            out: &mut *self.out,
        }
    }
}

/// What a behaviour queued, still typed.
pub(crate) enum BAction<B: NetworkBehavior + ?Sized> {
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
        event: FromBehaviorOf<B>,
    },
    ToAllHandlers(FromBehaviorOf<B>),
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
        result: Result<ResponseOf<B>, RpcError>,
    },
    Timer {
        token: u64,
        at: Option<Instant>,
    },
    Rtt {
        conn: ConnId,
        rtt: Duration,
    },
    RouteChanged(RouteChange),
    Publish(Arc<dyn Any + Send + Sync>),
}

/// What a handler queued, still typed.
pub(crate) enum HAction<H: ConnectionHandler + ?Sized> {
    Send {
        msg: H::Msg,
        opts: SendOptions,
    },
    SendRoute {
        rule: RouteRule,
        msg: H::Msg,
        opts: SendOptions,
    },
    ToBehavior(H::ToBehavior),
    ToHandler {
        to: ConnId,
        event: H::FromBehavior,
    },
    Close,
    Timer {
        token: u64,
        at: Option<Instant>,
    },
}

/// One entry of a slot's queue: a behaviour's action, or a handler's with
/// the connection it came from.
pub(crate) enum Queued<B: NetworkBehavior + ?Sized> {
    B(BAction<B>),
    H(ConnectionInfo, HAction<B::Handler>),
}

/// A handle to answer one RPC, later or at once, with
/// [`BehaviorAgent::answer`] (or [`BehaviorAgent::refuse`]).
///
/// The answer carries the request's id back to the caller. Dropping it
/// without answering leaves the caller waiting until its own timeout (the
/// runtime's `NodeHandle::rpc` gives up after `RuntimeConfig::rpc_timeout`).
#[must_use = "an RPC that is never answered leaves its caller waiting"]
pub struct Answer<R> {
    pub(crate) id: RpcId,
    _r: PhantomData<fn(R)>,
}

impl<R> Answer<R> {
    pub(crate) fn new(id: RpcId) -> Self {
        Answer {
            id,
            _r: PhantomData,
        }
    }
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

/// The behaviour's hands: everything it does goes through here, queued.
pub struct BehaviorAgent<'a, B: NetworkBehavior + ?Sized> {
    pub(crate) env: Env<'a>,
    pub(crate) service: ServiceId,
    pub(crate) queue: &'a mut VecDeque<Queued<B>>,
}

impl<B: NetworkBehavior + ?Sized> BehaviorAgent<'_, B> {
    fn push(&mut self, a: BAction<B>) {
        self.queue.push_back(Queued::B(a));
    }
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
    /// The node's RNG (seeded: from the OS on a real node, from the
    /// scenario in the simulator).
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
    /// The services this node provides, ascending: every behaviour's but
    /// those whose [`provides_service`](NetworkBehavior::provides_service)
    /// is false. Routers announce these.
    pub fn local_services(&self) -> &[ServiceId] {
        self.env.services
    }
    /// Where this node can be reached, as its driver set it (the runtime:
    /// its transports' listen addresses; the simulator: `mem://<id>`).
    /// Behaviours that tell peers how to dial this node advertise these.
    pub fn local_addrs(&self) -> &[Address] {
        self.env.addrs
    }
    /// Hands `event` to every other behaviour of this node
    /// ([`NetworkBehavior::on_local_event`]), in the order they were added
    /// to the node: how behaviours that build on each other talk (the
    /// membership behaviour announces its neighbours this way). Receivers
    /// downcast it; one copy is shared by all.
    pub fn publish<E: Any + Send + Sync>(&mut self, event: E) {
        self.push(BAction::Publish(Arc::new(event)));
    }
    /// Tells every behaviour of this node (through
    /// [`NetworkBehavior::on_route_changed`]) and the application (as
    /// [`Output::RouteChanged`](crate::Output::RouteChanged)) that a route
    /// changed. Routers call this; other behaviours have no need to.
    pub fn route_changed(&mut self, change: RouteChange) {
        self.push(BAction::RouteChanged(change));
    }
    /// Records the measured round-trip time of a connection, shown in the
    /// node's status ([`Network::connection_rtt`](crate::Network::connection_rtt)).
    pub fn report_rtt(&mut self, conn: ConnId, rtt: Duration) {
        self.push(BAction::Rtt { conn, rtt });
    }
    /// Sends `msg` to this behaviour on the node(s) the rule resolves to.
    pub fn send(&mut self, rule: RouteRule, msg: B::Msg) {
        self.send_with(rule, msg, SendOptions::default());
    }
    /// [`send`](Self::send) with options.
    pub fn send_with(&mut self, rule: RouteRule, msg: B::Msg, opts: SendOptions) {
        self.push(BAction::Send { rule, msg, opts });
    }
    /// Sends `msg` one hop, on a connection (to this behaviour's handler
    /// there, if it has one).
    pub fn send_to_conn(&mut self, conn: ConnId, msg: B::Msg) {
        self.send_to_conn_with(conn, msg, SendOptions::default());
    }
    /// [`send_to_conn`](Self::send_to_conn) with options.
    pub fn send_to_conn_with(&mut self, conn: ConnId, msg: B::Msg, opts: SendOptions) {
        self.push(BAction::SendConn { conn, msg, opts });
    }
    /// Sends an event to this behaviour's handler on `conn`.
    pub fn send_to_handler(&mut self, conn: ConnId, event: FromBehaviorOf<B>) {
        self.push(BAction::ToHandler { conn, event });
    }
    /// Sends an event to every handler of this behaviour.
    pub fn send_to_handlers(&mut self, event: FromBehaviorOf<B>) {
        self.push(BAction::ToAllHandlers(event));
    }
    /// Dials `node` at `addr` (ignored if a connection to it exists or is
    /// being set up; a failure comes back through
    /// [`NetworkBehavior::on_outgoing_connection_error`]).
    pub fn connect(&mut self, node: NodeId, addr: Address) {
        self.push(BAction::Connect { node, addr });
    }
    /// Closes a connection.
    pub fn close(&mut self, conn: ConnId) {
        self.push(BAction::Close { conn });
    }
    /// Emits an event to the application.
    pub fn emit(&mut self, event: B::Event) {
        self.push(BAction::Emit(event));
    }
    /// Answers an RPC.
    pub fn answer(&mut self, answer: Answer<ResponseOf<B>>, response: ResponseOf<B>) {
        self.push(BAction::Answer {
            id: answer.id,
            result: Ok(response),
        });
    }
    /// Declines an RPC: the caller gets [`RpcError::Refused`] with `reason`.
    pub fn refuse(&mut self, answer: Answer<ResponseOf<B>>, reason: impl Into<String>) {
        self.push(BAction::Answer {
            id: answer.id,
            result: Err(RpcError::Refused {
                service: self.service,
                reason: reason.into(),
            }),
        });
    }
    /// Calls [`NetworkBehavior::on_timer`] with `token` after `after`.
    /// A token names one timer: scheduling a token that is pending moves it.
    pub fn schedule_after(&mut self, after: Duration, token: u64) {
        let at = self.env.now + after;
        self.push(BAction::Timer {
            token,
            at: Some(at),
        });
    }
    /// [`schedule_after`](Self::schedule_after) at an instant (now, if past).
    pub fn schedule_at(&mut self, at: Instant, token: u64) {
        self.push(BAction::Timer {
            token,
            at: Some(at.max(self.env.now)),
        });
    }
    /// Cancels the timer `token`, if pending.
    pub fn cancel_timer(&mut self, token: u64) {
        self.push(BAction::Timer { token, at: None });
    }
}

/// A handler's hands, bound to its connection.
pub struct ConnectionAgent<'a, H: ConnectionHandler + ?Sized> {
    pub(crate) env: Env<'a>,
    pub(crate) info: ConnectionInfo,
    pub(crate) queue: &'a mut VecDeque<HAction<H>>,
}

impl<H: ConnectionHandler + ?Sized> ConnectionAgent<'_, H> {
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
    /// The node's RNG.
    pub fn rng(&mut self) -> &mut Rng {
        &mut *self.env.rng
    }
    /// Sends `msg` on this connection, one hop.
    pub fn send(&mut self, msg: H::Msg) {
        self.send_with(msg, SendOptions::default());
    }
    /// [`send`](Self::send) with options (the TTL is irrelevant one hop).
    pub fn send_with(&mut self, msg: H::Msg, opts: SendOptions) {
        self.queue.push_back(HAction::Send { msg, opts });
    }
    /// Sends `msg` by route rule, like [`BehaviorAgent::send`].
    pub fn send_route(&mut self, rule: RouteRule, msg: H::Msg) {
        self.send_route_with(rule, msg, SendOptions::default());
    }
    /// [`send_route`](Self::send_route) with options.
    pub fn send_route_with(&mut self, rule: RouteRule, msg: H::Msg, opts: SendOptions) {
        self.queue.push_back(HAction::SendRoute { rule, msg, opts });
    }
    /// Sends an event to the behaviour.
    pub fn emit_to_behavior(&mut self, event: H::ToBehavior) {
        self.queue.push_back(HAction::ToBehavior(event));
    }
    /// Sends an event to this behaviour's handler on another connection.
    pub fn send_to_handler(&mut self, conn: ConnId, event: H::FromBehavior) {
        self.queue.push_back(HAction::ToHandler { to: conn, event });
    }
    /// Closes this connection.
    pub fn close(&mut self) {
        self.queue.push_back(HAction::Close);
    }
    /// Calls [`ConnectionHandler::on_timer`] with `token` after `after`
    /// (unless the connection closes first). Scheduling a pending token
    /// moves it.
    pub fn schedule_after(&mut self, after: Duration, token: u64) {
        let at = self.env.now + after;
        self.queue.push_back(HAction::Timer {
            token,
            at: Some(at),
        });
    }
    /// [`schedule_after`](Self::schedule_after) at an instant (now, if past).
    pub fn schedule_at(&mut self, at: Instant, token: u64) {
        self.queue.push_back(HAction::Timer {
            token,
            at: Some(at.max(self.env.now)),
        });
    }
    /// Cancels the timer `token`, if pending.
    pub fn cancel_timer(&mut self, token: u64) {
        self.queue.push_back(HAction::Timer { token, at: None });
    }
}
