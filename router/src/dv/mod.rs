//! A distance-vector router that learns routes from its neighbours.
//!
//! Two halves share one table: [`DvRouter`] is the
//! [`RouterTable`](plexus_network::RouterTable) the core asks for every
//! message, and [`Behaviour`] is the plugin that keeps it up to date by
//! exchanging [`Sync`] messages with direct neighbours (service 0 by
//! default, carried by the core like any other service).
//!
//! ```
//! use plexus_network::{Network, NodeId};
//! use plexus_router::dv;
//! use std::sync::Arc;
//!
//! let id = NodeId(7);
//! let router = Arc::new(dv::DvRouter::new(id));
//! let node = Network::builder(id, router.clone())
//!     .behavior(dv::Behaviour::new(router, dv::Config::default()))
//!     .build()
//!     .unwrap();
//! # let _ = node;
//! ```
//!
//! # Protocol
//! - Each node advertises itself (metric 0) with the services its
//!   behaviours run, and every destination it reaches with its metric, hop
//!   count and services.
//! - **Metric**: the sum over the path of each link's cost, in
//!   microseconds: `hop_cost` plus half the link's smoothed RTT, quantised.
//!   The RTT is measured by the sync messages themselves (each carries the
//!   sender's clock and echoes the receiver's, NTP-style), so the router
//!   needs no other behaviour. A link is used only once its RTT is known.
//!   With equal latencies, metric order is hop order.
//! - **Updates**: a keep-alive every `sync_interval` to each neighbour
//!   (carrying the RTT echo and any changes), changes `trigger_delay`
//!   after the first of them (triggered updates: changes that close
//!   together travel together), and the whole table every
//!   `refresh_interval` (repairing anything lost).
//! - **Loops**: split horizon with poisoned reverse (a route is advertised
//!   back to its next hop as unreachable), explicit withdrawals (metric
//!   [`INFINITY`]), and a hop limit `max_hops`: a route longer than that is
//!   unreachable, so counting to infinity stops after at most `max_hops`
//!   rounds of triggered updates. Transient loops are also cut by the
//!   header's TTL.
//! - **Failure**: a neighbour is dropped when its connection closes, and
//!   set aside (its adverts forgotten, still probed) when nothing is heard
//!   from it for `neighbour_timeout`; either way routes through it are
//!   recomputed at once from what the other neighbours advertised. A
//!   set-aside neighbour that speaks again gets the whole table at once.
//!
//! # Memory
//! Each node keeps, per neighbour, the last table that neighbour advertised
//! (one entry per destination), plus its own best route per destination and
//! two indexes. So memory per node is `O(degree × N)` for an `N`-node
//! network. Measured as resident memory per simulated node at degree 6
//! (`cargo run --release -p plexus-bench -- dv --nodes N`): 199 KB at 250
//! nodes, 391 KB at 500, 775 KB at 1,000, 1.49 MB at 2,000 — about 750
//! bytes per destination, so about 7.5 MB per node at 10,000 nodes, the
//! size full tables are meant for.
//!
//! # Key and service routing
//! `path_to_key` picks the XOR-closest among this node and every reachable
//! destination, so once tables converge every node agrees on the one
//! closest live node. `path_to_service` picks the provider with the lowest
//! metric (ties: the smaller id).

mod behaviour;
mod protocol;
mod table;

pub use behaviour::Behaviour;
pub use protocol::{Advert, Sync, INFINITY};
pub use table::{DvRouter, RouteEntry};

use plexus_network::{NodeId, RouteInfo, ServiceId};
use std::time::Duration;

/// The service id the router's sync uses by default.
pub const SERVICE: ServiceId = ServiceId(0);

/// Router settings. `Config::default()` gives the values each setter documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) sync_interval: Duration,
    pub(crate) refresh_interval: Duration,
    pub(crate) neighbour_timeout: Duration,
    pub(crate) trigger_delay: Duration,
    pub(crate) hop_cost_us: u32,
    pub(crate) cost_quantum_us: u32,
    pub(crate) max_hops: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: SERVICE,
            sync_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(30),
            neighbour_timeout: Duration::from_secs(5),
            trigger_delay: Duration::from_millis(100),
            hop_cost_us: 1000,
            cost_quantum_us: 500,
            max_hops: 16,
        }
    }
}

impl Config {
    /// The service id of the sync messages. Default [`SERVICE`] (0).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Keep-alive period per neighbour. Default 1 s.
    pub fn with_sync_interval(mut self, d: Duration) -> Self {
        self.sync_interval = d;
        self
    }
    /// Full-table period per neighbour. Default 30 s.
    pub fn with_refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }
    /// Silence after which a neighbour is dropped. Default 5 s.
    pub fn with_neighbour_timeout(mut self, d: Duration) -> Self {
        self.neighbour_timeout = d;
        self
    }
    /// Delay of a triggered update after the first change it carries.
    /// Default 100 ms.
    pub fn with_trigger_delay(mut self, d: Duration) -> Self {
        self.trigger_delay = d;
        self
    }
    /// Fixed cost of crossing one link, µs. Default 1,000 (1 ms).
    pub fn with_hop_cost_us(mut self, c: u32) -> Self {
        self.hop_cost_us = c;
        self
    }
    /// Link costs are rounded to this, and change only by more than it (or
    /// 10%), so RTT noise does not churn routes. Default 500 µs.
    pub fn with_cost_quantum_us(mut self, q: u32) -> Self {
        self.cost_quantum_us = q.max(1);
        self
    }
    /// Longest usable route, in hops (RIP's bound). Default 16.
    pub fn with_max_hops(mut self, h: u8) -> Self {
        self.max_hops = h.max(1);
        self
    }
}

/// A neighbour as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// The neighbour.
    pub node: NodeId,
    /// Smoothed RTT, once measured.
    pub rtt: Option<Duration>,
    /// Current link cost, µs (used once the RTT is known).
    pub link_cost: u32,
    /// Destinations it advertises.
    pub advertised: usize,
}

/// Counters of the sync protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sync messages sent.
    pub syncs_sent: u64,
    /// Adverts carried by them.
    pub adverts_sent: u64,
    /// Sync messages received.
    pub syncs_received: u64,
    /// Route changes made.
    pub route_changes: u64,
}

/// The router's RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// The whole table.
    Routes,
    /// The neighbours.
    Neighbours,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// One row per reachable destination, by id.
    Routes(Vec<RouteInfo>),
    /// One row per neighbour, by id.
    Neighbours(Vec<NeighbourInfo>),
}
