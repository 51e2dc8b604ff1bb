//! The plugin API: [`NetworkBehavior`], [`ConnectionHandler`], and the
//! agents through which they act.
//!
//! This module holds the two traits and the small types their signatures
//! use; its `agent` submodule holds the agents ([`BehaviorAgent`],
//! [`ConnectionAgent`]: the only way a callback acts), and `slot` the type
//! erasure through which the core holds behaviours of any type. The core
//! ([`crate::network`]) depends on this module; nothing here depends on
//! the core.
//!
//! # Guarantees
//! - Callbacks never re-enter the core. An agent call only queues an action;
//!   the core applies the queue after the callback returns. So a behaviour
//!   needs no locks, and a send made inside a callback is observed by the
//!   destination only after the callback that made it has finished.
//! - Actions apply in the order they were queued, across a behaviour and
//!   its handlers (an event to a handler is handled after the actions
//!   queued before it).
//! - Events between a behaviour and its own handlers (and between handlers
//!   of the same behaviour) stay typed: they never leave the behaviour's
//!   slot and are never serialised. Only messages that cross the wire are
//!   serialised (postcard), and only application events and RPC answers are
//!   type-erased (`Box<dyn Any>`).
//! - A handler exists for a connection from the moment its behaviour returns
//!   it until `on_closed` is called; after `on_closed` it is dropped, with
//!   its timers.
//! - Bounded: while the core handles one input, one behaviour (with its
//!   handlers) applies at most `NetworkConfig::max_actions_per_input`
//!   actions, however deeply its events nest.
//! - A panic in any callback is caught at the callback boundary and
//!   disables that behaviour only (see [`NetworkBehavior`]).

pub(crate) mod agent;
pub(crate) mod slot;

use crate::error::{ConnectionRejectReason, OutgoingConnectionError};
use crate::types::{ConnectionInfo, DropReport, Incoming, RouteChange};
use crate::{ConnId, Direction, NodeId, ServiceId};
pub use agent::{Answer, BehaviorAgent, ConnectionAgent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::convert::Infallible;
use std::marker::PhantomData;

/// Per-send options. `Default` is reliable with the node's default TTL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Hops the message may take; `None` uses the node's configured default.
    pub ttl: Option<u8>,
    /// Loss is acceptable: transports may carry it as a datagram.
    pub unreliable: bool,
}

impl SendOptions {
    /// Reliable, with the node's default TTL.
    pub fn reliable() -> Self {
        SendOptions::default()
    }
    /// Loss acceptable (a datagram where the transport has them).
    pub fn unreliable() -> Self {
        SendOptions {
            unreliable: true,
            ..SendOptions::default()
        }
    }
    /// With this TTL.
    pub fn with_ttl(mut self, ttl: u8) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// The application RPC of a behaviour: what the application asks and what
/// it gets back. `()` means "no RPC"; a pair `(Request, Response)` names both
/// types, so a behaviour writes `type Rpc = (Request, Response);`.
pub trait Rpc: 'static {
    /// What the application sends.
    type Request: Send + 'static;
    /// What the behaviour answers.
    type Response: Send + 'static;
}

/// No RPC: no request can be made.
impl Rpc for () {
    type Request = Infallible;
    type Response = Infallible;
}

impl<Q: Send + 'static, R: Send + 'static> Rpc for (Q, R) {
    type Request = Q;
    type Response = R;
}

/// The request type of behaviour `B`'s RPC.
pub type RequestOf<B> = <<B as NetworkBehavior>::Rpc as Rpc>::Request;
/// The response type of behaviour `B`'s RPC.
pub type ResponseOf<B> = <<B as NetworkBehavior>::Rpc as Rpc>::Response;
/// What behaviour `B` sends to its handlers.
pub type FromBehaviorOf<B> = <<B as NetworkBehavior>::Handler as ConnectionHandler>::FromBehavior;
/// What `B`'s handlers send to it.
pub type ToBehaviorOf<B> = <<B as NetworkBehavior>::Handler as ConnectionHandler>::ToBehavior;

/// Node-wide logic of one protocol: a plugin of the core.
///
/// Four associated types say everything a behaviour exchanges:
/// - `Msg` crosses the wire (postcard-encoded) between instances of this
///   behaviour on different nodes;
/// - `Handler` serves each connection ([`NoHandler`] when the behaviour
///   needs none); the events between behaviour and handlers are the
///   handler's [`FromBehavior`](ConnectionHandler::FromBehavior) and
///   [`ToBehavior`](ConnectionHandler::ToBehavior), so they are declared
///   where they are used;
/// - `Event` goes to the application (`()` for none);
/// - `Rpc` is the application's request/response pair (`()` for none).
///
/// Every method but [`service_id`](Self::service_id) has a default that does
/// nothing (accepting every connection), so a behaviour implements only what
/// it needs. Callbacks act only through their agent, which queues: the core
/// applies what was queued after the callback returns.
///
/// A callback that panics is caught at the callback boundary: the behaviour
/// is disabled (its handlers dropped, its messages refused and counted, its
/// RPCs answered with [`RpcError::BehaviorFailed`](crate::RpcError)), the
/// application is told ([`Output::BehaviorFailed`](crate::Output)), and the
/// node and every other behaviour go on. Nothing the panicking callback
/// queued is applied. (This needs panics to unwind, Rust's default: a
/// binary built with `panic = "abort"` still dies on a behaviour's panic.)
pub trait NetworkBehavior: Send + 'static {
    /// The wire message.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// The per-connection handler ([`NoHandler<Self::Msg>`] for none).
    type Handler: ConnectionHandler<Msg = Self::Msg>;
    /// Events for the application (`()` for none).
    type Event: Send + 'static;
    /// The application RPC: `(Request, Response)`, or `()` for none.
    type Rpc: Rpc;

    /// The service this behaviour answers to; unique within a node.
    fn service_id(&self) -> ServiceId;

    /// Whether this node offers the service to others: only then is it
    /// among [`BehaviorAgent::local_services`], which routers announce, so
    /// that [`RouteRule::Service`](crate::RouteRule) messages of other
    /// nodes may come here. A behaviour that only calls a service (a
    /// client) returns `false`: messages addressed to this node or to a key
    /// still reach it, but its own service messages go to the nearest
    /// node that provides it. Default `true`.
    fn provides_service(&self) -> bool {
        true
    }

    /// The node started: called once, before any other callback but
    /// [`check_connection`](Self::check_connection), at the node's first
    /// input. The place to set first timers or dial first peers.
    fn on_start(&mut self, agent: &mut BehaviorAgent<'_, Self>) {
        let _ = agent;
    }

    /// May refuse a connection (either direction) before any behaviour
    /// sees it.
    fn check_connection(&mut self, conn: &ConnectionInfo) -> Result<(), ConnectionRejectReason> {
        let _ = conn;
        Ok(())
    }

    /// A connection is up (its direction is in `conn`); return a handler to
    /// serve it, or `None`.
    fn on_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Self::Handler> {
        let _ = (agent, conn);
        None
    }

    /// A connection closed (its handler's `on_closed` has run).
    fn on_disconnected(&mut self, agent: &mut BehaviorAgent<'_, Self>, conn: ConnectionInfo) {
        let _ = (agent, conn);
    }

    /// An incoming connection is up. The core calls this for incoming
    /// connections; the default forwards to [`on_connected`](Self::on_connected).
    fn on_incoming_connection_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Self::Handler> {
        self.on_connected(agent, conn)
    }

    /// An outgoing connection is up. The default forwards to
    /// [`on_connected`](Self::on_connected).
    fn on_outgoing_connection_connected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) -> Option<Self::Handler> {
        self.on_connected(agent, conn)
    }

    /// An incoming connection closed. The default forwards to
    /// [`on_disconnected`](Self::on_disconnected).
    fn on_incoming_connection_disconnected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) {
        self.on_disconnected(agent, conn)
    }

    /// An outgoing connection closed. The default forwards to
    /// [`on_disconnected`](Self::on_disconnected).
    fn on_outgoing_connection_disconnected(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
    ) {
        self.on_disconnected(agent, conn)
    }

    /// An outgoing connection never came up: a dial this node made (by the
    /// application, a behaviour or a bootstrap peer) failed.
    fn on_outgoing_connection_error(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        node: NodeId,
        conn: ConnId,
        err: &OutgoingConnectionError,
    ) {
        let _ = (agent, node, conn, err);
    }

    /// A timer this behaviour set with
    /// [`BehaviorAgent::schedule_after`] is due.
    fn on_timer(&mut self, agent: &mut BehaviorAgent<'_, Self>, token: u64) {
        let _ = (agent, token);
    }

    /// One of this behaviour's handlers sent it an event.
    fn on_handler_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        conn: ConnectionInfo,
        event: ToBehaviorOf<Self>,
    ) {
        let _ = (agent, conn, event);
    }

    /// A message for this behaviour that no handler took: every routed
    /// message (by node, key or service), a one-hop message on a connection
    /// this behaviour returned no handler for, and a message this node sent
    /// to itself (`conn` is `None`). One-hop ([`RouteRule::Direct`](crate::RouteRule))
    /// messages on a connection with a handler go to the handler.
    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Self::Msg>) {
        log::trace!(
            "node {}: {} message from {} ignored (no handler, no on_message)",
            agent.local_node(),
            agent.service_id(),
            msg.source
        );
    }

    /// A route of this node's router changed (announced by the router's
    /// own behaviour through [`BehaviorAgent::route_changed`]).
    fn on_route_changed(&mut self, agent: &mut BehaviorAgent<'_, Self>, change: &RouteChange) {
        let _ = (agent, change);
    }

    /// Another behaviour of this node published an event
    /// ([`BehaviorAgent::publish`]); downcast it to what you understand and
    /// ignore the rest.
    fn on_local_event(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        from: ServiceId,
        event: &(dyn Any + Send + Sync),
    ) {
        let _ = (agent, from, event);
    }

    /// A message of this behaviour that this node sent died here before it
    /// left: no route, a connection that closed, a full send queue
    /// ([`DropReason::QueueFull`](crate::DropReason) — the peer is slow),
    /// TTL spent. The application hears every drop too; a behaviour that
    /// can do something about it (retry, route around a slow peer) does it
    /// here.
    fn on_dropped(&mut self, agent: &mut BehaviorAgent<'_, Self>, report: &DropReport) {
        let _ = (agent, report);
    }

    /// A request from the application. Answer now or later with
    /// [`BehaviorAgent::answer`] (or refuse with [`BehaviorAgent::refuse`]).
    /// The default refuses, so a behaviour with RPCs implements this.
    fn on_rpc(
        &mut self,
        agent: &mut BehaviorAgent<'_, Self>,
        req: RequestOf<Self>,
        answer: Answer<ResponseOf<Self>>,
    ) {
        let _ = req;
        agent.refuse(answer, "the behaviour does not implement on_rpc");
    }
}

/// Per-connection logic of one behaviour: one instance per connection,
/// created by the behaviour's `on_connected`.
///
/// Its associated types are the handler's side of the conversation:
/// - `Msg`: the behaviour's wire message (the core checks they match);
/// - `FromBehavior`: events from the behaviour and from this behaviour's
///   handlers on other connections (`Clone`, as one event may go to every
///   handler);
/// - `ToBehavior`: events to the behaviour.
///
/// The agent is typed by the handler ([`ConnectionAgent<'_, Self>`]), so a
/// handler's module needs only the protocol's message type, not its
/// behaviour.
pub trait ConnectionHandler: Send + 'static {
    /// The wire message: the behaviour's `Msg`.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// Events from the behaviour and from other handlers (`()` for none).
    type FromBehavior: Clone + Send + 'static;
    /// Events to the behaviour (`()` for none).
    type ToBehavior: Send + 'static;

    /// The handler was installed; its connection is up.
    fn on_opened(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
        let _ = agent;
    }
    /// A one-hop message arrived on this connection.
    fn on_message(&mut self, agent: &mut ConnectionAgent<'_, Self>, msg: Incoming<Self::Msg>);
    /// A timer this handler set with [`ConnectionAgent::schedule_after`] is due.
    fn on_timer(&mut self, agent: &mut ConnectionAgent<'_, Self>, token: u64) {
        let _ = (agent, token);
    }
    /// The behaviour sent an event.
    fn on_behavior_event(
        &mut self,
        agent: &mut ConnectionAgent<'_, Self>,
        event: Self::FromBehavior,
    ) {
        let _ = (agent, event);
    }
    /// The behaviour's handler on another connection sent an event.
    fn on_other_handler_event(
        &mut self,
        agent: &mut ConnectionAgent<'_, Self>,
        from: ConnectionInfo,
        event: Self::FromBehavior,
    ) {
        let _ = (agent, from, event);
    }
    /// The connection closed. Sends made now are dropped; its timers are gone.
    fn on_closed(&mut self, agent: &mut ConnectionAgent<'_, Self>) {
        let _ = agent;
    }
}

/// The handler of a behaviour that needs none: `type Handler =
/// NoHandler<Self::Msg>;`. It cannot be built, so `on_connected` can only
/// return `None`.
pub struct NoHandler<M> {
    never: Infallible,
    _msg: PhantomData<fn() -> M>,
}

impl<M: Serialize + DeserializeOwned + Send + 'static> ConnectionHandler for NoHandler<M> {
    type Msg = M;
    type FromBehavior = ();
    type ToBehavior = ();

    fn on_message(&mut self, _: &mut ConnectionAgent<'_, Self>, _: Incoming<M>) {
        match self.never {}
    }
}

/// Which direction-specific callback the core calls; the defaults forward
/// to the short ones.
pub(crate) fn connected<B: NetworkBehavior>(
    b: &mut B,
    agent: &mut BehaviorAgent<'_, B>,
    info: ConnectionInfo,
) -> Option<B::Handler> {
    match info.direction {
        Direction::Incoming => b.on_incoming_connection_connected(agent, info),
        Direction::Outgoing => b.on_outgoing_connection_connected(agent, info),
    }
}

pub(crate) fn disconnected<B: NetworkBehavior>(
    b: &mut B,
    agent: &mut BehaviorAgent<'_, B>,
    info: ConnectionInfo,
) {
    match info.direction {
        Direction::Incoming => b.on_incoming_connection_disconnected(agent, info),
        Direction::Outgoing => b.on_outgoing_connection_disconnected(agent, info),
    }
}
