//! # plexus-behaviours: the protocols that ship with plexus
//!
//! Each module is one behaviour — a [`NetworkBehavior`](plexus_network::NetworkBehavior)
//! with, where it needs one, a per-connection
//! [`ConnectionHandler`](plexus_network::ConnectionHandler) — laid out as
//! `mod.rs` (docs, `Config`, `Event`), `behaviour.rs`, `handler.rs` and
//! `protocol.rs` (wire messages). Users write `ping::Behaviour`,
//! `ping::Config`, `ping::Event`.
//!
//! - [`ping`]: liveness and round-trip time of every connection.
//! - [`membership`]: a random, connected overlay (HyParView): which peers a
//!   node keeps connections to.
//! - [`broadcast`]: every node delivers every message once, over a
//!   self-repairing spanning tree (Plumtree) on the overlay.
//! - [`pubsub`]: publish and subscribe by topic; per topic, a tree among
//!   the subscribers and the nodes between them.
//! - [`gossip`]: a key → value map of CRDTs replicated on every node, with
//!   anti-entropy.
//! - [`kv`]: a replicated key-value store (a DHT): each key on the `k`
//!   nodes XOR-closest to it, versioned by hybrid logical clocks, repaired
//!   under churn.
//! - [`rpc`]: request/response between nodes, with timeouts, typed errors
//!   and bounded in-flight calls; a helper other behaviours embed.
//!
//! Default service ids are in [`services`]; each `Config` can change its own.

pub mod broadcast;
pub mod gossip;
pub mod kv;
pub mod membership;
mod neighbourhood;
pub mod ping;
pub mod pubsub;
pub mod rpc;
#[cfg(feature = "sim")]
pub mod sim_support;

/// The service ids the shipped behaviours use by default.
pub mod services {
    use plexus_network::ServiceId;
    /// [`crate::ping`].
    pub const PING: ServiceId = ServiceId(1);
    /// [`crate::membership`].
    pub const MEMBERSHIP: ServiceId = ServiceId(2);
    /// [`crate::broadcast`].
    pub const BROADCAST: ServiceId = ServiceId(3);
    /// [`crate::pubsub`].
    pub const PUBSUB: ServiceId = ServiceId(4);
    /// [`crate::gossip`].
    pub const GOSSIP: ServiceId = ServiceId(5);
    /// [`crate::rpc`].
    pub const RPC: ServiceId = ServiceId(6);
    /// [`crate::kv`].
    pub const KV: ServiceId = ServiceId(7);
}
