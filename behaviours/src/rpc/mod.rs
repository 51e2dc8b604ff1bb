//! Request/response between nodes: typed requests to a node, to the node
//! closest to a key, or to the nearest provider of a service, each with a
//! timeout, typed errors, and bounded in-flight calls.
//!
//! Two layers:
//! - [`Calls`] is the table of a behaviour's outstanding requests (ids,
//!   deadlines, a bound per destination and per node, late answers counted
//!   and discarded), and [`Envelope`] the wire shape of a request and its
//!   answer. Behaviours embed them to make their own calls: [`crate::kv`]
//!   does.
//! - [`Behaviour<Q, R>`] is a request/response protocol for applications:
//!   requests of type `Q`, responses of type `R`, both serde types. The
//!   application calls through `NodeHandle::rpc` (or `Sim::rpc`) with
//!   [`Request::Call`]; on the remote node a [`Responder`] function answers
//!   at once, or the application gets an [`Event::Request`] and answers
//!   whenever it likes with [`Request::Respond`] (late answers are fine
//!   until the caller's timeout; after it they are discarded and counted).
//!
//! ```
//! use plexus_behaviours::rpc;
//! use std::time::Duration;
//! // A service that answers a number with its square.
//! let squares = rpc::Behaviour::<u64, u64>::new(rpc::Config::default())
//!     .with_responder(|_from, n: u64| Ok(n * n));
//! # let _ = squares;
//! ```
//!
//! ```ignore
//! // From the application of another node:
//! let reply = handle
//!     .rpc::<rpc::Behaviour<u64, u64>>(rpc::Request::call(RouteRule::Node(b), 7))
//!     .await?
//!     .into_reply();
//! assert_eq!(reply, Ok(49));
//! ```
//!
//! # Errors and bounds
//! A call ends exactly once, with the response or a [`CallError`]:
//! `Timeout` (no answer within the call's timeout, default 10 s), `NoRoute`
//! (the request died at this node: no route, a closed connection, a full
//! queue), `Refused` (the remote answered with a refusal), `RemoteFailed`
//! (the remote's responder panicked), `RemoteBusy` (the remote had too many
//! requests waiting for its application), `TooManyInFlight` (this node's
//! bound). A request lost beyond the first hop is a `Timeout`: the core
//! does not yet report drops back to their source.
//!
//! At most [`Limits::max_in_flight`] calls are open per node (default 256)
//! and [`Limits::max_per_peer`] per destination (default 64). A call past
//! a bound waits, in a queue of at most `max_waiting` (default 1,024), for a
//! slot to free: that is the backpressure on the caller, whose `rpc` future
//! simply takes longer. Its timeout runs while it waits. Past the queue,
//! the call fails at once with `TooManyInFlight`. On the answering side at
//! most `max_inbound` requests (default 1,024) wait for the application;
//! more are answered `RemoteBusy` at once.

mod behaviour;
mod calls;
#[cfg(test)]
mod tests;

pub use behaviour::{Behaviour, Responder};
pub use calls::{CallId, CallStats, Calls, Finished};

use plexus_network::{DropReason, NodeId, RouteRule, ServiceId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Bounds on open calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls open on this node at once. Default 256.
    pub max_in_flight: usize,
    /// Calls open to one destination (a node, a key, a service) at once.
    /// Default 64.
    pub max_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 256,
            max_per_peer: 64,
        }
    }
}

/// Which bound refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Calls to one destination.
    Peer,
    /// Calls of the whole node.
    Node,
}

/// Why a call got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No answer came within the timeout.
    Timeout(Duration),
    /// The request died at this node before it could travel.
    NoRoute(DropReason),
    /// The remote refused, for the reason it gave.
    Refused(String),
    /// The remote's responder failed (panicked) on this request.
    RemoteFailed(String),
    /// The remote had too many requests waiting to take this one.
    RemoteBusy,
    /// This node had too many calls open (see [`Limits`]).
    TooManyInFlight {
        /// The bound that was reached.
        scope: Scope,
        /// Its value.
        limit: usize,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no answer within {d:?}"),
            CallError::NoRoute(r) => write!(f, "the request could not be sent: {r}"),
            CallError::Refused(r) => write!(f, "refused by the remote: {r}"),
            CallError::RemoteFailed(r) => write!(f, "the remote's responder failed: {r}"),
            CallError::RemoteBusy => f.write_str("the remote has too many requests waiting"),
            CallError::TooManyInFlight { scope, limit } => match scope {
                Scope::Peer => write!(f, "{limit} calls already open to that destination"),
                Scope::Node => write!(f, "{limit} calls already open on this node"),
            },
        }
    }
}

impl std::error::Error for CallError {}

impl From<Fault> for CallError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Refused(r) => CallError::Refused(r),
            Fault::Failed(r) => CallError::RemoteFailed(r),
            Fault::Busy => CallError::RemoteBusy,
        }
    }
}

/// A negative answer, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Refused, with the reason.
    Refused(String),
    /// The responder failed.
    Failed(String),
    /// Too many requests waiting.
    Busy,
}

/// A request or its answer on the wire: the request carries the caller's
/// [`CallId`], the answer repeats it and goes back to the request's source
/// by [`RouteRule::Node`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope<Q, R> {
    /// A request.
    Request {
        /// The caller's id for it.
        id: CallId,
        /// The request.
        body: Q,
    },
    /// The answer to the request `id`.
    Response {
        /// The request's id.
        id: CallId,
        /// The response, or why there is none.
        result: Result<R, Fault>,
    },
}

/// Identifies a request this node received, for [`Request::Respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// Settings of [`Behaviour`]. `Config::default()` gives the values each
/// setter documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) max_waiting: usize,
    pub(crate) max_inbound: usize,
    pub(crate) inbound_timeout: Duration,
    pub(crate) serving: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::RPC,
            timeout: Duration::from_secs(10),
            limits: Limits::default(),
            max_waiting: 1024,
            max_inbound: 1024,
            inbound_timeout: Duration::from_secs(60),
            serving: true,
        }
    }
}

impl Config {
    /// The service id. Default [`crate::services::RPC`] (6); each protocol
    /// on a node needs its own.
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// The timeout of a call that names none. Default 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// The bounds on open calls. Default [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Calls that may wait for a slot. Default 1,024.
    pub fn with_max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }
    /// Received requests that may wait for the application's answer.
    /// Default 1,024.
    pub fn with_max_inbound(mut self, n: usize) -> Self {
        self.max_inbound = n;
        self
    }
    /// Whether this node serves the protocol. Default true. A node that
    /// only calls it (`false`) is not announced as a provider, so its
    /// [`RouteRule::Service`] calls go to the nearest node that serves;
    /// requests that reach it anyway are refused.
    pub fn with_serving(mut self, serving: bool) -> Self {
        self.serving = serving;
        self
    }
    /// How long a received request waits for the application's answer
    /// before it is forgotten (its caller has timed out by then). Default
    /// 60 s.
    pub fn with_inbound_timeout(mut self, d: Duration) -> Self {
        self.inbound_timeout = d;
        self
    }
}

/// What the application asks of [`Behaviour`].
#[derive(Debug, Clone)]
pub enum Request<Q, R> {
    /// Send `request` to `to` and wait for the response.
    Call {
        /// Where: a node, the node closest to a key, the nearest provider.
        to: RouteRule,
        /// The request.
        request: Q,
        /// Its timeout; `None` uses the configured one.
        timeout: Option<Duration>,
    },
    /// Answer a request this node received ([`Event::Request`]).
    Respond {
        /// Which.
        id: InboundId,
        /// The response, or a refusal with its reason.
        result: Result<R, String>,
    },
}

impl<Q, R> Request<Q, R> {
    /// A call with the configured timeout.
    pub fn call(to: RouteRule, request: Q) -> Self {
        Request::Call {
            to,
            request,
            timeout: None,
        }
    }
    /// An answer to a received request.
    pub fn respond(id: InboundId, response: R) -> Self {
        Request::Respond {
            id,
            result: Ok(response),
        }
    }
}

/// What [`Behaviour`] answers the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<R> {
    /// The outcome of a [`Request::Call`].
    Reply(Result<R, CallError>),
    /// A [`Request::Respond`] was sent.
    Responded,
}

impl<R> Response<R> {
    /// The outcome of a call (a `Responded` is not one: it reads as a
    /// refusal).
    pub fn into_reply(self) -> Result<R, CallError> {
        match self {
            Response::Reply(r) => r,
            Response::Responded => Err(CallError::Refused("not the answer to a call".to_string())),
        }
    }
}

/// What [`Behaviour`] tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<Q> {
    /// A request for the application to answer with [`Request::Respond`]
    /// (only when the behaviour has no [`Responder`]).
    Request {
        /// The id to answer with.
        id: InboundId,
        /// The caller.
        from: NodeId,
        /// The request.
        request: Q,
    },
}

/// Counters of [`Behaviour`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcStats {
    /// The outgoing calls' counters.
    pub calls: CallStats,
    /// Requests received.
    pub requests_received: u64,
    /// Requests answered (responses and refusals sent).
    pub responses_sent: u64,
    /// Requests answered `Busy` because too many were waiting.
    pub inbound_refused: u64,
    /// Received requests forgotten unanswered after `inbound_timeout`.
    pub inbound_expired: u64,
    /// Calls that waited for a slot.
    pub waited: u64,
}
