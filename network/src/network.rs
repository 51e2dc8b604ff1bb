//! The core: one node's connections, routing and dispatch, as a sans-IO
//! state machine.
//!
//! # The drive loop
//! A driver (the tokio runtime, the simulator, a test) owns a [`Network`]
//! and repeats, as str0m documents its own loop:
//! 1. feed an input — `handle_incoming`, `handle_outgoing_connected`,
//!    `handle_outgoing_failed`, `handle_disconnected`, `handle_frame`,
//!    `handle_tick`, or an application request (`send`, `rpc`, `connect`,
//!    `close`) — each carrying `now`;
//! 2. drain [`Network::poll_output`] until it returns `None`, executing each
//!    [`Output`] (dial, write a frame, close, hand an event to the app);
//! 3. wait until [`Network::poll_timeout`] or the next input, whichever comes
//!    first, and go to 1.
//!
//! # Guarantees
//! - Deterministic: the same inputs at the same times produce the same
//!   outputs. There is no clock, no I/O, no thread and no unseeded RNG here,
//!   and every map that is iterated is ordered.
//! - Bytes from the network never panic the core. A frame whose header does
//!   not validate closes that one connection ([`CloseReason::Protocol`]); a
//!   payload its behaviour cannot decode is dropped and reported, and closes
//!   the connection only when its sender was the direct neighbour.
//! - Nothing is dropped silently: every message that dies here yields an
//!   [`Output::Dropped`] with its reason and is counted in [`NetworkStats`].
//! - Bounded: one input applies at most `max_actions_per_input` queued
//!   actions (a guard against behaviours that ping-pong events forever); the
//!   rest are dropped with a warning. Outputs queue until the driver drains
//!   them, which the drive loop does after every input.

use crate::behavior::{
    ConnectionInfo, ConnectionRejectReason, Env, ErasedBehavior, OutgoingConnectionError,
    SendOptions, Slot,
};
use crate::wire::{self, DecodeError, Frame, Header, HEADER_LEN};
use crate::{
    Address, ConnId, Direction, Instant, NetworkBehavior, NodeId, RejectReason, Rng, RouteAction,
    RouteRule, RouterTable, ServiceId,
};
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A message delivered to a behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<M> {
    /// The node that first sent it.
    pub source: NodeId,
    /// The connection it arrived on; `None` when this node sent it to itself.
    pub conn: Option<ConnId>,
    /// The rule it was sent with.
    pub rule: RouteRule,
    /// TTL left on arrival. With the sender's TTL `t`, it crossed `t - ttl + 1` links.
    pub ttl: u8,
    /// The message.
    pub msg: M,
}

/// A route of the node's router changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The destination.
    pub dest: NodeId,
    /// The new next hop; `None` when the destination became unreachable.
    pub next_hop: Option<NodeId>,
    /// The new metric (router-defined units); `None` when unreachable.
    pub metric: Option<u32>,
    /// The new hop count; `None` when unreachable.
    pub hops: Option<u8>,
}

/// Identifies one application RPC; the answer repeats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RpcId(pub u64);

/// An event a behaviour emitted for the application.
pub struct AppEvent {
    /// The behaviour that emitted it.
    pub service: ServiceId,
    /// The behaviour's `Event` value.
    pub event: Box<dyn Any + Send>,
}

impl AppEvent {
    /// The event as `T`, if it is one.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.event.downcast_ref()
    }
    /// The event as `T`, or `self` back.
    pub fn downcast<T: 'static>(self) -> Result<T, AppEvent> {
        match self.event.downcast::<T>() {
            Ok(t) => Ok(*t),
            Err(event) => Err(AppEvent {
                service: self.service,
                event,
            }),
        }
    }
}

impl fmt::Debug for AppEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppEvent({})", self.service)
    }
}

/// Why the core closed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A behaviour (this service) asked for it.
    Behavior(ServiceId),
    /// The application asked for it.
    Application,
    /// The peer sent a frame that does not decode.
    Protocol(DecodeError),
    /// The peer sent this service a payload that does not decode.
    BadPayload(ServiceId),
    /// The peer is not the node that was dialled.
    IdentityMismatch {
        /// The node dialled.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// A behaviour or the connection limit refused it.
    Rejected(ConnectionRejectReason),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Behavior(s) => write!(f, "closed by behaviour {s}"),
            CloseReason::Application => f.write_str("closed by the application"),
            CloseReason::Protocol(e) => write!(f, "protocol violation: {e}"),
            CloseReason::BadPayload(s) => write!(f, "undecodable payload for {s}"),
            CloseReason::IdentityMismatch { expected, actual } => {
                write!(f, "identity mismatch: dialled {expected}, got {actual}")
            }
            CloseReason::Rejected(r) => write!(f, "rejected: {r}"),
        }
    }
}

/// Why a message died at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// It needed forwarding but its TTL was spent.
    TtlExpired,
    /// The router refused it.
    Rejected(RejectReason),
    /// The router named a next hop this node has no connection to.
    NoConnection(NodeId),
    /// It was sent on a connection that is not (or no longer) up.
    ConnectionClosed(ConnId),
    /// It is for this node, but no behaviour here has its service.
    UnknownService,
    /// Its payload does not decode as its behaviour's message type.
    BadPayload,
    /// It exceeds the node's maximum payload size.
    Oversized,
    /// The connection's send queue was full (see the runtime's docs).
    QueueFull(ConnId),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::TtlExpired => f.write_str("TTL expired"),
            DropReason::Rejected(r) => write!(f, "router: {r}"),
            DropReason::NoConnection(n) => write!(f, "no connection to next hop {n}"),
            DropReason::ConnectionClosed(c) => write!(f, "connection {c} is not up"),
            DropReason::UnknownService => f.write_str("no behaviour for the service"),
            DropReason::BadPayload => f.write_str("payload does not decode"),
            DropReason::Oversized => f.write_str("payload over the maximum size"),
            DropReason::QueueFull(c) => write!(f, "send queue of {c} full"),
        }
    }
}

/// A message that died at this node, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropReport {
    /// The node that first sent it.
    pub source: NodeId,
    /// Its service.
    pub service: ServiceId,
    /// Its route rule.
    pub rule: RouteRule,
    /// Why it died.
    pub reason: DropReason,
}

/// What the core asks its driver to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Dial `node` at `addr`; report back with `handle_outgoing_connected`
    /// or `handle_outgoing_failed` for `conn`.
    Connect {
        /// The id this connection will have.
        conn: ConnId,
        /// The node expected at the address (the transport verifies it).
        node: NodeId,
        /// Where to dial.
        addr: Address,
    },
    /// Write one frame on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The complete frame (header and payload).
        frame: Vec<u8>,
        /// The sender accepts loss: the transport may use a datagram.
        unreliable: bool,
    },
    /// Close a connection. The core has already forgotten it: do not report
    /// its disconnection back.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the log and the peer.
        reason: CloseReason,
    },
    /// An event for the application.
    Event(AppEvent),
    /// The answer to an application RPC.
    RpcAnswer {
        /// The request's id.
        id: RpcId,
        /// The behaviour's `Response` value.
        response: Box<dyn Any + Send>,
    },
    /// A message died at this node.
    Dropped(DropReport),
    /// A route changed (announced by the router's behaviour).
    RouteChanged(RouteChange),
}

/// Counters of what the core did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Frames received from connections.
    pub frames_in: u64,
    /// Frames handed to the driver to send.
    pub frames_out: u64,
    /// Messages delivered to a local behaviour.
    pub delivered: u64,
    /// Messages forwarded to a next hop.
    pub forwarded: u64,
    /// Messages dropped (each also reported as [`Output::Dropped`]).
    pub dropped: u64,
    /// Connections closed because a frame did not decode.
    pub protocol_errors: u64,
}

/// Settings of one core. `Default` gives the values each field documents.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// How often behaviours and handlers tick. Default 100 ms.
    pub tick_interval: Duration,
    /// TTL of messages sent without an explicit one. Default 32 hops.
    pub default_ttl: u8,
    /// Largest payload accepted or sent, in bytes. Default 1 MiB.
    pub max_payload: usize,
    /// Most connections (established and being dialled). Default 1024.
    pub max_connections: usize,
    /// Most queued actions one input may apply. Default 100,000.
    pub max_actions_per_input: usize,
    /// Seed of the node's RNG. Default 0; the runtime seeds it from the OS,
    /// the simulator from the scenario's seed.
    pub seed: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            tick_interval: Duration::from_millis(100),
            default_ttl: 32,
            max_payload: 1 << 20,
            max_connections: 1024,
            max_actions_per_input: 100_000,
            seed: 0,
        }
    }
}

/// Why a core could not be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Two behaviours claim the same service.
    #[error("two behaviours claim service {0}")]
    DuplicateService(ServiceId),
}

/// Why an application send was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The message does not serialise.
    #[error("message does not serialise: {0}")]
    Encode(String),
    /// The message exceeds the maximum payload.
    #[error("message of {len} bytes exceeds the maximum payload of {max}")]
    Oversized {
        /// Its size.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Why an application RPC was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcError {
    /// No behaviour of that service (or type) runs on this node.
    #[error("no behaviour for {0}")]
    NoBehavior(String),
    /// The request is not that behaviour's `Request` type.
    #[error("request type does not match the behaviour of {0}")]
    WrongType(ServiceId),
}

/// Why an application dial was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// A connection to the node is up or being set up.
    #[error("already connected (or connecting) to {node} on {conn}")]
    AlreadyConnected {
        /// The node.
        node: NodeId,
        /// The existing connection.
        conn: ConnId,
    },
    /// The node has its maximum number of connections.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// A node does not dial itself.
    #[error("a node does not dial itself")]
    SelfDial,
}

/// Queued by behaviours (already erased), applied by the core.
pub(crate) enum CoreAction {
    Route {
        header: Header,
        frame: Vec<u8>,
    },
    SendConn {
        conn: ConnId,
        header: Header,
        frame: Vec<u8>,
    },
    Connect {
        node: NodeId,
        addr: Address,
    },
    Close {
        conn: ConnId,
        service: ServiceId,
    },
    Emit(AppEvent),
    Answer {
        id: RpcId,
        response: Box<dyn Any + Send>,
    },
    RouteChanged(RouteChange),
    Rtt {
        conn: ConnId,
        rtt: Duration,
    },
}

/// Builds a [`Network`]: one call per behaviour.
pub struct NetworkBuilder {
    local: NodeId,
    router: Arc<dyn RouterTable>,
    config: NetworkConfig,
    behaviors: Vec<Box<dyn ErasedBehavior>>,
}

impl NetworkBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: NetworkConfig) -> Self {
        self.config = config;
        self
    }
    /// Seeds the node's RNG.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }
    /// Sets the tick interval.
    pub fn tick_interval(mut self, interval: Duration) -> Self {
        self.config.tick_interval = interval;
        self
    }
    /// Adds a behaviour.
    pub fn behavior<B: NetworkBehavior>(mut self, behavior: B) -> Self {
        self.behaviors.push(Box::new(Slot::new(behavior)));
        self
    }
    /// Builds the core. Fails when two behaviours claim one service.
    pub fn build(self) -> Result<Network, BuildError> {
        let mut services = [None; 256];
        for (i, b) in self.behaviors.iter().enumerate() {
            let s = b.service_id();
            if services[s.0 as usize].is_some() {
                return Err(BuildError::DuplicateService(s));
            }
            services[s.0 as usize] = Some(i as u16);
        }
        log::info!(
            "node {}: core built with {} behaviour(s)",
            self.local,
            self.behaviors.len()
        );
        Ok(Network {
            local: self.local,
            rng: Rng::new(self.config.seed),
            router: self.router,
            config: self.config,
            behaviors: self.behaviors,
            service_list: (0..=255u8)
                .map(ServiceId)
                .filter(|s| services[s.0 as usize].is_some())
                .collect(),
            services,
            conns: BTreeMap::new(),
            pending: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            actions: VecDeque::new(),
            outputs: VecDeque::new(),
            rtts: BTreeMap::new(),
            now: Instant::ZERO,
            next_tick: Instant::ZERO,
            next_conn: 0,
            next_rpc: 0,
            stats: NetworkStats::default(),
        })
    }
}

/// One node's core. See the [module docs](self) for the drive loop.
pub struct Network {
    local: NodeId,
    config: NetworkConfig,
    router: Arc<dyn RouterTable>,
    rng: Rng,
    behaviors: Vec<Box<dyn ErasedBehavior>>,
    /// Service id → index in `behaviors`.
    services: [Option<u16>; 256],
    /// The services of `behaviors`, ascending.
    service_list: Vec<ServiceId>,
    conns: BTreeMap<ConnId, ConnectionInfo>,
    /// Outgoing dials in flight: conn → (node, addr).
    pending: BTreeMap<ConnId, (NodeId, Address)>,
    /// Established connections per neighbour, oldest first (the one used to forward).
    neighbours: BTreeMap<NodeId, Vec<ConnId>>,
    actions: VecDeque<CoreAction>,
    outputs: VecDeque<Output>,
    /// RTTs reported by behaviours, per established connection.
    rtts: BTreeMap<ConnId, Duration>,
    now: Instant,
    next_tick: Instant,
    next_conn: u64,
    next_rpc: u64,
    stats: NetworkStats,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("local", &self.local)
            .field("connections", &self.conns.len())
            .field("behaviors", &self.behaviors.len())
            .finish()
    }
}

impl Network {
    /// Starts building the core of node `local`, routed by `router`.
    pub fn builder(local: NodeId, router: Arc<dyn RouterTable>) -> NetworkBuilder {
        NetworkBuilder {
            local,
            router,
            config: NetworkConfig::default(),
            behaviors: Vec::new(),
        }
    }

    /// This node's id.
    pub fn local_node(&self) -> NodeId {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The router.
    pub fn router(&self) -> &Arc<dyn RouterTable> {
        &self.router
    }

    /// Counters.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// The services of this node's behaviours, ascending.
    pub fn services(&self) -> &[ServiceId] {
        &self.service_list
    }

    /// Established connections, in `ConnId` order.
    pub fn connections(&self) -> impl Iterator<Item = &ConnectionInfo> + '_ {
        self.conns.values()
    }

    /// The behaviour of type `B`, for inspection.
    pub fn behavior<B: NetworkBehavior>(&self) -> Option<&B> {
        self.behaviors
            .iter()
            .find_map(|b| b.as_any().downcast_ref::<B>())
    }

    /// The behaviour of type `B`, for direct configuration between inputs.
    /// Prefer RPCs for anything that should queue actions.
    pub fn behavior_mut<B: NetworkBehavior>(&mut self) -> Option<&mut B> {
        self.behaviors
            .iter_mut()
            .find_map(|b| b.as_any_mut().downcast_mut::<B>())
    }

    /// The next output for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the core next wants [`handle_tick`](Self::handle_tick).
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    // ---- inputs -------------------------------------------------------

    /// Advances time: ticks every behaviour and handler if a tick is due.
    pub fn handle_tick(&mut self, now: Instant) {
        self.now = now;
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.config.tick_interval;
        log::trace!("node {}: tick at {now}", self.local);
        for i in 0..self.behaviors.len() {
            self.with_slot(i, |b, env| b.on_tick(env));
        }
        self.run_actions();
    }

    /// The application dials `node` at `addr`.
    pub fn connect(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: Address,
    ) -> Result<ConnId, ConnectError> {
        self.now = now;
        self.dial(node, addr)
    }

    /// The application closes a connection.
    pub fn close(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        self.close_conn(conn, CloseReason::Application);
        self.run_actions();
    }

    /// A remote node connected to us. Returns the new connection's id, or
    /// why it is refused (the driver then closes it; no behaviour sees it
    /// beyond its `check_incoming_connection`).
    pub fn handle_incoming(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: Option<Address>,
    ) -> Result<ConnId, ConnectionRejectReason> {
        self.now = now;
        if self.conns.len() + self.pending.len() >= self.config.max_connections {
            log::debug!(
                "node {}: incoming from {node} refused: connection limit",
                self.local
            );
            return Err(ConnectionRejectReason::ConnectionLimit);
        }
        let conn = self.alloc_conn();
        for b in &mut self.behaviors {
            if let Err(r) = b.check_connection(Direction::Incoming, node, conn) {
                log::debug!(
                    "node {}: incoming {conn} from {node} refused: {r}",
                    self.local
                );
                return Err(r);
            }
        }
        self.establish(ConnectionInfo {
            conn,
            node,
            direction: Direction::Incoming,
            addr,
        });
        Ok(conn)
    }

    /// An outgoing dial (from an [`Output::Connect`]) completed; `node` is
    /// the identity the transport authenticated.
    pub fn handle_outgoing_connected(&mut self, now: Instant, conn: ConnId, node: NodeId) {
        self.now = now;
        let Some((expected, addr)) = self.pending.remove(&conn) else {
            log::debug!("node {}: connected event for unknown {conn}", self.local);
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::Application,
            });
            return;
        };
        if node != expected {
            let err = OutgoingConnectionError::IdentityMismatch {
                expected,
                actual: node,
            };
            log::debug!("node {}: {conn} to {addr}: {err}", self.local);
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::IdentityMismatch {
                    expected,
                    actual: node,
                },
            });
            self.outgoing_error(expected, conn, err);
            return;
        }
        for i in 0..self.behaviors.len() {
            if let Err(r) = self.behaviors[i].check_connection(Direction::Outgoing, node, conn) {
                log::debug!(
                    "node {}: outgoing {conn} to {node} refused: {r}",
                    self.local
                );
                self.outputs.push_back(Output::Close {
                    conn,
                    reason: CloseReason::Rejected(r.clone()),
                });
                self.outgoing_error(node, conn, OutgoingConnectionError::Rejected(r));
                return;
            }
        }
        self.establish(ConnectionInfo {
            conn,
            node,
            direction: Direction::Outgoing,
            addr: Some(addr),
        });
    }

    /// An outgoing dial failed.
    pub fn handle_outgoing_failed(
        &mut self,
        now: Instant,
        conn: ConnId,
        err: OutgoingConnectionError,
    ) {
        self.now = now;
        match self.pending.remove(&conn) {
            Some((node, addr)) => {
                log::debug!(
                    "node {}: dial {conn} to {node} at {addr} failed: {err}",
                    self.local
                );
                self.outgoing_error(node, conn, err);
            }
            None => log::debug!("node {}: failure for unknown dial {conn}", self.local),
        }
    }

    /// A connection went down (the peer closed it, or the transport lost it).
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        if let Some((node, _)) = self.pending.remove(&conn) {
            self.outgoing_error(node, conn, OutgoingConnectionError::Unreachable);
            return;
        }
        if let Some(info) = self.remove_conn(conn) {
            log::debug!("node {}: {conn} to {} disconnected", self.local, info.node);
            self.disconnected(info);
        }
    }

    /// One frame arrived on a connection.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.now = now;
        self.stats.frames_in += 1;
        let Some(from) = self.conns.get(&conn).map(|c| c.node) else {
            log::trace!("node {}: frame on unknown {conn} ignored", self.local);
            return;
        };
        let frame = match Frame::decode(bytes, self.config.max_payload) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("node {}: {conn} from {from}: closing: {e}", self.local);
                self.stats.protocol_errors += 1;
                self.close_conn(conn, CloseReason::Protocol(e));
                self.run_actions();
                return;
            }
        };
        let h = frame.header;
        match self.router.path_to(&h.rule, h.service) {
            RouteAction::Local => self.deliver(Some((conn, from)), &h, frame.payload),
            RouteAction::Next(hop) => {
                if h.ttl <= 1 {
                    self.drop_msg(&h, DropReason::TtlExpired);
                } else {
                    let mut out = bytes.to_vec();
                    wire::set_ttl(&mut out, h.ttl - 1);
                    self.stats.forwarded += 1;
                    log::trace!(
                        "node {}: forward {} from {} to {hop}",
                        self.local,
                        h.rule,
                        h.source
                    );
                    self.send_to_hop(hop, &h, out);
                }
            }
            RouteAction::Reject(r) => self.drop_msg(&h, DropReason::Rejected(r)),
        }
        self.run_actions();
    }

    /// The application sends `msg` to the behaviour of `service` on the
    /// node(s) `rule` resolves to.
    pub fn send<M: Serialize>(
        &mut self,
        now: Instant,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
    ) -> Result<(), SendError> {
        self.send_with(now, service, rule, msg, SendOptions::default())
    }

    /// [`send`](Self::send) with options (TTL, reliability).
    pub fn send_with<M: Serialize>(
        &mut self,
        now: Instant,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let mut buf = vec![0u8; HEADER_LEN];
        buf = postcard::to_extend(msg, buf).map_err(|e| SendError::Encode(e.to_string()))?;
        self.send_frame(now, service, rule, buf, opts)
    }

    /// The application sends a message already serialised into a frame
    /// buffer: `frame[HEADER_LEN..]` is the behaviour's postcard-encoded
    /// `Msg`, and the first `HEADER_LEN` bytes are room the core fills with
    /// the header. For drivers that serialise off the core's thread without
    /// a second copy.
    pub fn send_frame(
        &mut self,
        now: Instant,
        service: ServiceId,
        rule: RouteRule,
        mut frame: Vec<u8>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        self.now = now;
        if frame.len() < HEADER_LEN {
            return Err(SendError::Encode(format!(
                "frame buffer of {} bytes has no room for the header",
                frame.len()
            )));
        }
        let len = frame.len() - HEADER_LEN;
        let max = self.config.max_payload;
        let len32 = match u32::try_from(len) {
            Ok(l) if len <= max => l,
            _ => return Err(SendError::Oversized { len, max }),
        };
        let header = Header {
            service,
            rule,
            ttl: opts.ttl.unwrap_or(self.config.default_ttl),
            source: self.local,
            unreliable: opts.unreliable,
        };
        frame[..HEADER_LEN].copy_from_slice(&header.to_bytes(len32));
        self.actions.push_back(CoreAction::Route { header, frame });
        self.run_actions();
        Ok(())
    }

    /// The driver could not queue a frame the core asked it to send: the
    /// message is reported dropped ([`DropReason::QueueFull`]).
    pub fn handle_send_failed(&mut self, now: Instant, conn: ConnId, frame: &[u8]) {
        self.now = now;
        if let Ok((h, _)) = Header::decode(frame, usize::MAX) {
            self.drop_msg(&h, DropReason::QueueFull(conn));
        }
    }

    /// The smoothed RTT of a connection, as reported by a behaviour (ping
    /// does) through [`BehaviorAgent::report_rtt`](crate::BehaviorAgent::report_rtt).
    pub fn connection_rtt(&self, conn: ConnId) -> Option<Duration> {
        self.rtts.get(&conn).copied()
    }

    /// The application calls the RPC of the behaviour of type `B`.
    pub fn rpc<B: NetworkBehavior>(
        &mut self,
        now: Instant,
        req: B::Request,
    ) -> Result<RpcId, RpcError> {
        self.rpc_by_type(now, TypeId::of::<B>(), Box::new(req))
            .map_err(|e| match e {
                RpcError::NoBehavior(_) => RpcError::NoBehavior(std::any::type_name::<B>().into()),
                other => other,
            })
    }

    /// The application calls the RPC of the behaviour whose type has this
    /// `TypeId`, with a type-erased request (for drivers).
    pub fn rpc_by_type(
        &mut self,
        now: Instant,
        behavior: TypeId,
        req: Box<dyn Any + Send>,
    ) -> Result<RpcId, RpcError> {
        let idx = self
            .behaviors
            .iter()
            .position(|b| b.as_any().type_id() == behavior)
            .ok_or_else(|| RpcError::NoBehavior(format!("{behavior:?}")))?;
        let service = self.behaviors[idx].service_id();
        self.rpc_erased(now, service, req)
    }

    /// The application calls the RPC of the behaviour of `service` with a
    /// type-erased request (for drivers that carry requests as `Box<dyn Any>`).
    pub fn rpc_erased(
        &mut self,
        now: Instant,
        service: ServiceId,
        req: Box<dyn Any + Send>,
    ) -> Result<RpcId, RpcError> {
        self.now = now;
        let idx = self.services[service.0 as usize]
            .ok_or_else(|| RpcError::NoBehavior(service.to_string()))?;
        let id = RpcId(self.next_rpc);
        self.next_rpc += 1;
        let res = self.with_slot(idx as usize, |b, env| b.on_rpc(env, id, req));
        self.run_actions();
        res.map(|()| id).map_err(|_| RpcError::WrongType(service))
    }

    // ---- internals ----------------------------------------------------

    fn alloc_conn(&mut self) -> ConnId {
        let c = ConnId(self.next_conn);
        self.next_conn += 1;
        c
    }

    /// Lends slot `i` an `Env` over the other fields.
    fn with_slot<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn ErasedBehavior, &mut Env<'_>) -> R,
    ) -> R {
        let mut env = Env {
            local: self.local,
            now: self.now,
            default_ttl: self.config.default_ttl,
            services: &self.service_list,
            rng: &mut self.rng,
            conns: &self.conns,
            out: &mut self.actions,
        };
        f(self.behaviors[i].as_mut(), &mut env)
    }

    fn dial(&mut self, node: NodeId, addr: Address) -> Result<ConnId, ConnectError> {
        if node == self.local {
            return Err(ConnectError::SelfDial);
        }
        if let Some(&conn) = self.neighbours.get(&node).and_then(|v| v.first()) {
            return Err(ConnectError::AlreadyConnected { node, conn });
        }
        if let Some((&conn, _)) = self.pending.iter().find(|(_, (n, _))| *n == node) {
            return Err(ConnectError::AlreadyConnected { node, conn });
        }
        if self.conns.len() + self.pending.len() >= self.config.max_connections {
            return Err(ConnectError::ConnectionLimit);
        }
        let conn = self.alloc_conn();
        self.pending.insert(conn, (node, addr));
        log::debug!("node {}: dialling {node} at {addr} as {conn}", self.local);
        self.outputs.push_back(Output::Connect { conn, node, addr });
        Ok(conn)
    }

    fn establish(&mut self, info: ConnectionInfo) {
        log::debug!(
            "node {}: {} {:?} connection to {} up",
            self.local,
            info.conn,
            info.direction,
            info.node
        );
        self.conns.insert(info.conn, info);
        self.neighbours
            .entry(info.node)
            .or_default()
            .push(info.conn);
        for i in 0..self.behaviors.len() {
            self.with_slot(i, |b, env| b.on_connected(env, info));
        }
        self.run_actions();
    }

    fn remove_conn(&mut self, conn: ConnId) -> Option<ConnectionInfo> {
        let info = self.conns.remove(&conn)?;
        self.rtts.remove(&conn);
        if let Some(v) = self.neighbours.get_mut(&info.node) {
            v.retain(|c| *c != conn);
            if v.is_empty() {
                self.neighbours.remove(&info.node);
            }
        }
        Some(info)
    }

    /// Forgets a connection now and tells the driver to close it.
    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        if self.pending.remove(&conn).is_some() {
            self.outputs.push_back(Output::Close { conn, reason });
            return;
        }
        if let Some(info) = self.remove_conn(conn) {
            log::debug!(
                "node {}: closing {conn} to {}: {reason}",
                self.local,
                info.node
            );
            self.outputs.push_back(Output::Close { conn, reason });
            self.disconnected(info);
        }
    }

    fn disconnected(&mut self, info: ConnectionInfo) {
        for i in 0..self.behaviors.len() {
            self.with_slot(i, |b, env| b.on_disconnected(env, info));
        }
        self.run_actions();
    }

    fn outgoing_error(&mut self, node: NodeId, conn: ConnId, err: OutgoingConnectionError) {
        for i in 0..self.behaviors.len() {
            self.with_slot(i, |b, env| b.on_outgoing_error(env, node, conn, &err));
        }
        self.run_actions();
    }

    fn drop_msg(&mut self, h: &Header, reason: DropReason) {
        self.stats.dropped += 1;
        log::debug!(
            "node {}: dropped {} message from {} ({}): {reason}",
            self.local,
            h.service,
            h.source,
            h.rule
        );
        self.outputs.push_back(Output::Dropped(DropReport {
            source: h.source,
            service: h.service,
            rule: h.rule,
            reason,
        }));
    }

    fn send_on(&mut self, conn: ConnId, frame: Vec<u8>, unreliable: bool) {
        self.stats.frames_out += 1;
        self.outputs.push_back(Output::Send {
            conn,
            frame,
            unreliable,
        });
    }

    fn send_to_hop(&mut self, hop: NodeId, h: &Header, frame: Vec<u8>) {
        match self.neighbours.get(&hop).and_then(|v| v.first()).copied() {
            Some(conn) => self.send_on(conn, frame, h.unreliable),
            None => self.drop_msg(h, DropReason::NoConnection(hop)),
        }
    }

    /// Delivers a validated message to its local behaviour.
    fn deliver(&mut self, via: Option<(ConnId, NodeId)>, h: &Header, payload: &[u8]) {
        let Some(idx) = self.services[h.service.0 as usize] else {
            self.drop_msg(h, DropReason::UnknownService);
            return;
        };
        let conn = via.map(|(c, _)| c);
        let res = self.with_slot(idx as usize, |b, env| b.on_message(env, conn, h, payload));
        match res {
            Ok(()) => self.stats.delivered += 1,
            Err(e) => {
                log::debug!(
                    "node {}: {} payload from {} does not decode: {e}",
                    self.local,
                    h.service,
                    h.source
                );
                self.drop_msg(h, DropReason::BadPayload);
                // Only the author of a message is to blame for it: close the
                // connection when the author is the neighbour itself.
                if let Some((c, from)) = via {
                    if from == h.source {
                        self.close_conn(c, CloseReason::BadPayload(h.service));
                    }
                }
            }
        }
    }

    /// Applies queued actions until none are left (bounded).
    fn run_actions(&mut self) {
        let mut applied = 0usize;
        while let Some(action) = self.actions.pop_front() {
            applied += 1;
            if applied > self.config.max_actions_per_input {
                log::warn!(
                    "node {}: more than {} actions from one input; dropping {} queued",
                    self.local,
                    self.config.max_actions_per_input,
                    self.actions.len() + 1
                );
                self.actions.clear();
                return;
            }
            self.apply(action);
        }
    }

    fn apply(&mut self, action: CoreAction) {
        match action {
            CoreAction::Route { header: h, frame } => {
                if frame.len() - HEADER_LEN > self.config.max_payload {
                    self.drop_msg(&h, DropReason::Oversized);
                    return;
                }
                match self.router.path_to(&h.rule, h.service) {
                    RouteAction::Local => self.deliver(None, &h, &frame[HEADER_LEN..]),
                    RouteAction::Next(_) if h.ttl == 0 => self.drop_msg(&h, DropReason::TtlExpired),
                    RouteAction::Next(hop) => self.send_to_hop(hop, &h, frame),
                    RouteAction::Reject(r) => self.drop_msg(&h, DropReason::Rejected(r)),
                }
            }
            CoreAction::SendConn {
                conn,
                header: h,
                frame,
            } => {
                if frame.len() - HEADER_LEN > self.config.max_payload {
                    self.drop_msg(&h, DropReason::Oversized);
                } else if self.conns.contains_key(&conn) {
                    self.send_on(conn, frame, h.unreliable);
                } else {
                    self.drop_msg(&h, DropReason::ConnectionClosed(conn));
                }
            }
            CoreAction::Connect { node, addr } => match self.dial(node, addr) {
                Ok(_) => {}
                Err(ConnectError::ConnectionLimit) => {
                    let conn = self.alloc_conn();
                    self.outgoing_error(
                        node,
                        conn,
                        OutgoingConnectionError::Rejected(ConnectionRejectReason::ConnectionLimit),
                    );
                }
                Err(e) => log::trace!("node {}: dial to {node} skipped: {e}", self.local),
            },
            CoreAction::Close { conn, service } => {
                self.close_conn(conn, CloseReason::Behavior(service));
            }
            CoreAction::Emit(ev) => self.outputs.push_back(Output::Event(ev)),
            CoreAction::Answer { id, response } => {
                self.outputs.push_back(Output::RpcAnswer { id, response })
            }
            CoreAction::Rtt { conn, rtt } => {
                if self.conns.contains_key(&conn) {
                    self.rtts.insert(conn, rtt);
                }
            }
            CoreAction::RouteChanged(change) => {
                for i in 0..self.behaviors.len() {
                    self.with_slot(i, |b, env| b.on_route_changed(env, &change));
                }
                self.outputs.push_back(Output::RouteChanged(change));
            }
        }
    }
}
