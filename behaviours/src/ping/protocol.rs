//! Ping's wire messages (postcard-encoded by the core).

use serde::{Deserialize, Serialize};

/// A ping or its answer. The sender's clock reading travels in the ping and
/// comes back in the pong, so the sender keeps no per-ping state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "Are you there?", with the sender's `now` in microseconds.
    Ping {
        /// Sequence number on this connection.
        seq: u32,
        /// The sender's time of sending, microseconds.
        sent_at_us: u64,
    },
    /// The echo of a ping.
    Pong {
        /// The ping's sequence number.
        seq: u32,
        /// The ping's time of sending, echoed.
        sent_at_us: u64,
    },
}
