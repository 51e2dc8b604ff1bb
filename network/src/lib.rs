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
//!     type HandlerEvent = ();
//!     type BehaviorEvent = ();
//!     type Event = (NodeId, String);
//!     type Request = ();
//!     type Response = ();
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

mod addr;
mod behavior;
mod id;
pub mod network;
mod rng;
mod route;
mod time;
pub mod wire;

#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;

pub use addr::{Address, AddressParseError};
pub use behavior::{
    Answer, BehaviorAgent, ConnectionAgent, ConnectionEvent, ConnectionHandler, ConnectionInfo,
    ConnectionRejectReason, NetworkBehavior, OutgoingConnectionError, SendOptions,
};
pub use id::{ConnId, Direction, NodeId, ServiceId};
pub use network::{
    AppEvent, BuildError, CloseReason, ConnectError, DropReason, DropReport, Incoming, Network,
    NetworkBuilder, NetworkConfig, NetworkStats, Output, RouteChange, RpcError, RpcId, SendError,
};
pub use rng::Rng;
pub use route::{RejectReason, RouteAction, RouteInfo, RouteRule, RouterTable};
pub use time::Instant;
pub use wire::DecodeError;
