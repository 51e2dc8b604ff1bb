//! # plexus
//!
//! A behaviour-plugin networking framework. This facade re-exports what a
//! user needs; the parts live in their own crates:
//! - [`network`] (`plexus-network`): the sans-IO core — ids, wire header,
//!   [`Network`], the plugin traits and agents — the tokio [`runtime`]
//!   ([`runtime::Node`], [`runtime::NodeHandle`]), and (feature `sim`, on
//!   by default) the deterministic [`sim`]ulator;
//! - [`router`] (`plexus-router`): routing tables — static, and the
//!   learning distance-vector [`router::dv`];
//! - [`behaviours`] (`plexus-behaviours`): [`ping`] and the other shipped
//!   protocols;
//! - [`transports`] (`plexus-transports`): QUIC, TCP + TLS 1.3, in-memory;
//!   node [`Identity`] and the network key ([`TransportConfig`]).
//!
//! Start with the README: "write your first behaviour" (on the simulator),
//! then "use it from your program" (real nodes); `examples/cluster.rs` runs
//! eight real nodes, `examples/node.rs` is a command-line node and
//! `examples/sim_demo.rs` a 200-node simulation.

pub use plexus_behaviours as behaviours;
pub use plexus_network as network;
pub use plexus_router as router;
pub use plexus_transports as transports;

pub use plexus_behaviours::ping;
pub use plexus_network::*;
pub use plexus_transports::{Identity, TransportConfig};

/// The README's Rust blocks run as doctests, so the walkthrough stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
