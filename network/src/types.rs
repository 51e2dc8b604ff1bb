//! The core's public value types: what behaviours receive, what the driver
//! gets back ([`Output`]), and the counters ([`NetworkStats`]).

use crate::error::{ConnectionRejectReason, OutgoingConnectionError, RpcError};
use crate::wire::DecodeError;
use crate::{Address, ConnId, Direction, NodeId, RejectReason, RouteRule, ServiceId};
use std::any::Any;
use std::fmt;

/// A connection as behaviours see it. Built by the core only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// This node's id for the connection.
    pub conn: ConnId,
    /// The node on the other end (authenticated on secure transports).
    pub node: NodeId,
    /// Who dialled.
    pub direction: Direction,
    /// The remote address, when the transport knows it.
    pub addr: Option<Address>,
    /// The behaviour (service) whose [`connect`](crate::BehaviorAgent::connect)
    /// opened it; `None` for incoming connections and for dials by the
    /// application or the bootstrap list (also when those asked for the
    /// node while a behaviour's dial to it was in flight). Lets a behaviour
    /// tell its own dials, and other behaviours' dials, from a user's.
    pub dialled_by: Option<ServiceId>,
}

/// A message delivered to a behaviour or a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<M> {
    /// The node that first sent it. On a [`RouteRule::Direct`] message it
    /// is the neighbour, authenticated by the connection; on a routed one it
    /// is what the author wrote in the header, vouched for only by the hops
    /// that forwarded it.
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
    /// The peer sent a direct (one-hop) message naming another node as its
    /// source.
    ForgedSource {
        /// The node it claimed to be.
        claimed: NodeId,
    },
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
            CloseReason::ForgedSource { claimed } => {
                write!(f, "a direct message claimed to be from {claimed}")
            }
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
    /// Its behaviour on this node failed (panicked) and is disabled.
    BehaviorFailed,
    /// It died at another node, which sent this node (its source) a drop
    /// notice.
    Remote {
        /// The node where it died.
        at: NodeId,
        /// Why, as that node said.
        why: RemoteDrop,
    },
}

/// Why a message died at another node, as its drop notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteDrop {
    /// Its TTL was spent.
    TtlExpired,
    /// That node had no route (or its router refused it).
    NoRoute,
    /// The connection to the next hop closed with it queued.
    ConnectionClosed,
    /// The next hop's queue was full, or it waited too long for room.
    QueueFull,
    /// No behaviour there has its service.
    UnknownService,
    /// Its payload did not decode there.
    BadPayload,
    /// Its behaviour there failed.
    BehaviorFailed,
    /// Another reason (a newer node's, or a payload over the maximum).
    Other,
}

impl RemoteDrop {
    /// The notice's code for a local drop reason.
    pub fn code_of(reason: &DropReason) -> u8 {
        match reason {
            DropReason::TtlExpired => 1,
            DropReason::Rejected(_) | DropReason::NoConnection(_) => 2,
            DropReason::ConnectionClosed(_) => 3,
            DropReason::QueueFull(_) => 4,
            DropReason::UnknownService => 5,
            DropReason::BadPayload => 6,
            DropReason::BehaviorFailed => 7,
            DropReason::Oversized | DropReason::Remote { .. } => 0,
        }
    }

    /// The reason a notice's code stands for.
    pub fn from_code(code: u8) -> RemoteDrop {
        match code {
            1 => RemoteDrop::TtlExpired,
            2 => RemoteDrop::NoRoute,
            3 => RemoteDrop::ConnectionClosed,
            4 => RemoteDrop::QueueFull,
            5 => RemoteDrop::UnknownService,
            6 => RemoteDrop::BadPayload,
            7 => RemoteDrop::BehaviorFailed,
            _ => RemoteDrop::Other,
        }
    }
}

impl fmt::Display for RemoteDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteDrop::TtlExpired => "TTL expired",
            RemoteDrop::NoRoute => "no route",
            RemoteDrop::ConnectionClosed => "connection to the next hop closed",
            RemoteDrop::QueueFull => "queue full",
            RemoteDrop::UnknownService => "no behaviour for the service",
            RemoteDrop::BadPayload => "payload does not decode",
            RemoteDrop::BehaviorFailed => "its behaviour failed",
            RemoteDrop::Other => "another reason",
        })
    }
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
            DropReason::BehaviorFailed => f.write_str("its behaviour failed and is disabled"),
            DropReason::Remote { at, why } => write!(f, "dropped at {at}: {why}"),
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
    /// How many messages this report stands for: 1, or more for a drop
    /// notice about several messages with this header that died together
    /// (a connection that closed with them).
    pub count: u32,
}

/// A behaviour whose callback panicked: the core caught the panic at the
/// callback boundary and disabled the behaviour (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviorFailure {
    /// The behaviour's service.
    pub service: ServiceId,
    /// The behaviour's type, as `std::any::type_name` spells it.
    pub behavior: &'static str,
    /// The callback that panicked (`on_message`, `on_timer`, …).
    pub callback: &'static str,
    /// The panic message.
    pub message: String,
}

impl fmt::Display for BehaviorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "behaviour {} ({}) panicked in {}: {}",
            self.service, self.behavior, self.callback, self.message
        )
    }
}

/// An outgoing dial that did not come up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialFailure {
    /// The dial's connection id.
    pub conn: ConnId,
    /// The node dialled.
    pub node: NodeId,
    /// The address dialled.
    pub addr: Address,
    /// Why it failed.
    pub error: OutgoingConnectionError,
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
    /// The answer to an application RPC: the behaviour's `Response` value,
    /// or why there is none.
    RpcAnswer {
        /// The request's id.
        id: RpcId,
        /// The answer.
        result: Result<Box<dyn Any + Send>, RpcError>,
    },
    /// A message died at this node.
    Dropped(DropReport),
    /// A route changed (announced by the router's behaviour).
    RouteChanged(RouteChange),
    /// A dial failed (behaviours heard it through
    /// `on_outgoing_connection_error`).
    DialFailed(DialFailure),
    /// A behaviour panicked and is disabled; the node goes on without it.
    BehaviorFailed(BehaviorFailure),
}

/// Counters of what the core did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Frames received from connections.
    pub frames_in: u64,
    /// Frames handed to the driver to send.
    pub frames_out: u64,
    /// Bytes of the frames received (headers included; not the
    /// transport's own framing, encryption or packet headers).
    pub bytes_in: u64,
    /// Bytes of the frames handed to the driver to send (likewise).
    pub bytes_out: u64,
    /// Messages delivered to a local behaviour.
    pub delivered: u64,
    /// Messages forwarded to a next hop.
    pub forwarded: u64,
    /// Messages dropped (each also reported as [`Output::Dropped`]).
    pub dropped: u64,
    /// Connections closed because a frame did not decode.
    pub protocol_errors: u64,
    /// Times a behaviour exceeded the per-input action budget
    /// (`NetworkConfig::max_actions_per_input`).
    pub budget_overflows: u64,
    /// Actions discarded because their behaviour exceeded the budget.
    pub actions_discarded: u64,
    /// Behaviours disabled after a panic.
    pub behavior_failures: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Drop notices sent to the sources of reliable messages that died
    /// here while passing through.
    pub drop_notices_sent: u64,
    /// Drop notices not sent: more distinct ones waited for the rate
    /// limit (`NetworkConfig::drop_notices_per_sec`) than it holds.
    pub drop_notices_suppressed: u64,
    /// Drop notices received about this node's own messages.
    pub drop_notices_received: u64,
}
