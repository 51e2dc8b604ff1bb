//! # plexus-router: routing tables for plexus
//!
//! Implementations of [`RouterTable`](plexus_network::RouterTable), the
//! injectable table the core asks where every message goes:
//! - [`StaticRouter`]: routes set by hand (or computed from a known graph
//!   with [`StaticRouter::from_graph`]); closest-key and nearest-service
//!   over the nodes it knows. For fixed topologies and tests.
//! - [`dv`]: a distance-vector router that learns node, key and service
//!   routes from its neighbours, with RTT metrics, and repairs them when
//!   nodes fail. Every node knows every node: for clusters up to about a
//!   thousand nodes.
//! - [`kad`]: an XOR (Kademlia-style) router with O(log N) links and
//!   O(log² N) state, for overlays of up to hundreds of thousands of nodes.
//!
//! Routers are shared (`Arc`) between the core, which reads them on every
//! message, and whoever updates them; reads take a `parking_lot` read lock.

pub mod dv;
pub mod kad;
#[cfg(any(test, feature = "sim"))]
pub mod scenario;
mod service_set;
mod static_router;

pub use service_set::ServiceSet;
pub use static_router::StaticRouter;
