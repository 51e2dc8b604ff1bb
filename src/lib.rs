//! # plexus
//!
//! A behaviour-plugin networking framework. This facade re-exports what a
//! user needs; the parts live in their own crates:
//! - [`network`] (`plexus-network`): the sans-IO core — ids, wire header,
//!   [`Network`], the plugin traits and agents, and (feature `sim`, on by
//!   default) the deterministic [`sim`]ulator;
//! - [`router`] (`plexus-router`): routing tables;
//! - [`behaviours`] (`plexus-behaviours`): ping and the other shipped protocols;
//! - [`transports`] (`plexus-transports`): what moves the bytes.
//!
//! Start with the README's "write your first behaviour", then
//! `examples/sim_demo.rs`.

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
