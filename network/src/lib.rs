//! # plexus-network: the sans-IO core of plexus
//!
//! A node is one [`Network`]: a deterministic state machine that owns the
//! node's connections, asks an injectable [`RouterTable`] where each message
//! goes, forwards what is not for it hop by hop (the header's TTL stops
//! loops), and dispatches what is to behaviours — [`NetworkBehavior`] plugins
//! with per-connection [`ConnectionHandler`]s — which act only through
//! agents ([`BehaviorAgent`], [`ConnectionAgent`]).
//!
//! The core never opens a socket, spawns a task, sleeps, reads a clock or
//! draws from an unseeded RNG. Drivers feed it inputs, each carrying `now`,
//! and execute its [`Output`]s: the tokio runtime over real transports, or
//! the [`sim`] simulator (feature `sim`) over simulated links with a virtual
//! clock and seeded faults. See [`network`] for the drive loop.
//!
//! ```
//! use plexus_network::*;
//! use serde::{Deserialize, Serialize};
//! use std::sync::Arc;
//!
//! /// A behaviour that emits every greeting it receives.
//! struct Hello;
//!
//! #[derive(Serialize, Deserialize, Debug)]
//! struct Greeting(String);
//!
//! impl NetworkBehavior for Hello {
//!     type Msg = Greeting;
//!     type Handler = NoHandler<Greeting>;
//!     type Event = (NodeId, String);
//!     type Rpc = ();
//!     fn service_id(&self) -> ServiceId {
//!         ServiceId(100)
//!     }
//!     fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Greeting>) {
//!         agent.emit((msg.source, msg.msg.0));
//!     }
//! }
//!
//! /// Routes everything to this node.
//! struct Loopback;
//! impl RouterTable for Loopback {
//!     fn path_to_node(&self, _: NodeId) -> RouteAction { RouteAction::Local }
//!     fn path_to_key(&self, _: NodeId) -> RouteAction { RouteAction::Local }
//!     fn path_to_service(&self, _: ServiceId) -> RouteAction { RouteAction::Local }
//! }
//!
//! let mut node = Network::builder(NodeId(1), Arc::new(Loopback))
//!     .behavior(Hello)
//!     .build()
//!     .unwrap();
//! let now = Instant::ZERO;
//! node.send(now, ServiceId(100), RouteRule::Node(NodeId(1)), &Greeting("hi".into())).unwrap();
//! match node.poll_output() {
//!     Some(Output::Event(ev)) => {
//!         let (from, text) = ev.downcast::<(NodeId, String)>().unwrap();
//!         assert_eq!((from, text.as_str()), (NodeId(1), "hi"));
//!     }
//!     other => panic!("expected the event, got {other:?}"),
//! }
//! ```
//!
//! # The shape of a behaviour
//! A behaviour declares four types — its wire message `Msg`, its per-connection
//! `Handler` ([`NoHandler`] when it needs none), its application `Event`
//! and its `Rpc` (`(Request, Response)`, or `()`) — and implements only the
//! callbacks it needs. The events between a behaviour and its handlers are
//! declared on the handler ([`ConnectionHandler::FromBehavior`],
//! [`ConnectionHandler::ToBehavior`]), where they are used, and a handler's
//! agent is typed by the handler, so a handler's module needs the protocol's
//! message type and nothing of its behaviour. Connection callbacks do not
//! care about direction (`on_connected`, `on_disconnected`; the direction is
//! in [`ConnectionInfo`]); the direction-specific names of the original
//! design remain as provided methods that forward to them. Time reaches a
//! behaviour only through timers it asks for (`schedule_after`), so a node
//! with nothing due sleeps, in the runtime and in the simulator alike.
//!
//! # Modules
//! [`plugin`] holds the plugin API (traits, agents); [`network`] the state
//! machine; the value types, errors and configuration sit beside them and
//! depend on neither. Nothing in the plugin API depends on the core.

mod addr;
mod config;
mod error;
mod id;
pub mod network;
pub mod plugin;
mod rng;
mod route;
mod time;
mod types;
mod vecmap;
pub mod wire;

#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;

pub use addr::{Address, AddressParseError};
pub use config::NetworkConfig;
pub use error::{
    BuildError, ConnectError, ConnectionRejectReason, OutgoingConnectionError, RpcError, SendError,
};
pub use id::{ConnId, Direction, NodeId, ServiceId};
pub use network::{panic_message, BootstrapStatus, Network, NetworkBuilder};
pub use plugin::{
    Answer, BehaviorAgent, ConnectionAgent, ConnectionHandler, FromBehaviorOf, NetworkBehavior,
    NoHandler, RequestOf, ResponseOf, Rpc, SendOptions, ToBehaviorOf,
};
pub use rng::Rng;
pub use route::{RejectReason, RouteAction, RouteInfo, RouteRule, RouterTable};
pub use time::Instant;
pub use types::{
    AppEvent, BehaviorFailure, CloseReason, ConnectionInfo, DialFailure, DropReason, DropReport,
    Incoming, NetworkStats, Output, RemoteDrop, RouteChange, RpcId,
};
pub use wire::DecodeError;

/// The service the core keeps for drop notices (see
/// [`NetworkConfig::drop_notices_per_sec`]); no behaviour may claim it.
pub const DROP_NOTICE: ServiceId = ServiceId(255);
