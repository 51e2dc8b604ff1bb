//! One error enum per operation, as the core reports them.

use crate::{NodeId, ServiceId};
use thiserror::Error;

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
    /// The two ends do not share the network key (see the transports).
    #[error("refused: network key mismatch")]
    NetworkKey,
    /// No transport of this node speaks the address's scheme.
    #[error("no transport for {0}")]
    NoTransport(String),
    /// The remote node, or one of our own behaviours, refused it.
    #[error("rejected: {0}")]
    Rejected(ConnectionRejectReason),
    /// The transport failed, as it describes.
    #[error("transport error: {0}")]
    Transport(String),
    /// This node closed the connection before it came up.
    #[error("aborted: closed before it came up")]
    Aborted,
}

/// Why a core could not be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Two behaviours claim the same service.
    #[error("two behaviours claim service {0}")]
    DuplicateService(ServiceId),
    /// A behaviour claims a service the core keeps for itself
    /// ([`DROP_NOTICE`](crate::DROP_NOTICE)).
    #[error("service {0} is reserved for the core's drop notices")]
    ReservedService(ServiceId),
    /// The operating system's random source failed (only when no seed was given).
    #[error("cannot seed the node's RNG from the OS: {0}")]
    Entropy(String),
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
    /// The node is not running (a simulated node that was killed).
    #[error("node {0} is not running")]
    NodeDown(NodeId),
}

/// Why an application RPC got no answer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcError {
    /// No behaviour of that service (or type) runs on this node.
    #[error("no behaviour for {0}")]
    NoBehavior(String),
    /// The request is not that behaviour's request type.
    #[error("request type does not match the behaviour of {0}")]
    WrongType(ServiceId),
    /// The behaviour failed (panicked) and is disabled.
    #[error("behaviour {0} failed and is disabled")]
    BehaviorFailed(ServiceId),
    /// The behaviour exceeded its action budget while answering; the answer
    /// was discarded (see `NetworkConfig::max_actions_per_input`).
    #[error("behaviour {0} exceeded its action budget; the answer was discarded")]
    Overloaded(ServiceId),
    /// More RPCs were open than the core keeps (65,536): this one, the
    /// oldest, was given up.
    #[error("too many RPCs open at once; the oldest was given up")]
    TooManyOpen,
    /// The behaviour declined to answer, for the reason it gives.
    #[error("refused by behaviour {service}: {reason}")]
    Refused {
        /// The behaviour.
        service: ServiceId,
        /// Why.
        reason: String,
    },
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
        conn: crate::ConnId,
    },
    /// The node has its maximum number of connections.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// A node does not dial itself.
    #[error("a node does not dial itself")]
    SelfDial,
}
