//! The router's sync messages (postcard-encoded by the core).

use serde::{Deserialize, Serialize};

/// Metric meaning "unreachable": a withdrawal, or poisoned reverse.
pub const INFINITY: u32 = u32::MAX;

/// What a node tells each neighbour, periodically and on change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// The sender's clock, microseconds: echoed back to measure the RTT.
    pub ts_us: u64,
    /// The latest `ts_us` the sender received from the receiver (0: none yet).
    pub echo_ts_us: u64,
    /// How long the sender held that timestamp before sending this, µs.
    pub echo_held_us: u64,
    /// `true`: `adverts` is the sender's whole table and replaces what the
    /// receiver knew from it. `false`: only changes.
    pub full: bool,
    /// Routes: the sender itself (metric 0), then what it reaches.
    pub adverts: Vec<Advert>,
}

/// One advertised route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// The destination's id.
    pub dest: u64,
    /// The sender's metric to it; [`INFINITY`] withdraws it.
    pub metric: u32,
    /// The sender's hop count to it.
    pub hops: u8,
    /// The services the destination runs (a 256-bit set).
    pub services: [u64; 4],
}
