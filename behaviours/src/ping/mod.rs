//! Ping: liveness and round-trip time of every connection.
//!
//! Every `interval`, each connection's handler sends a `Ping` carrying its
//! send time; the neighbour echoes it in a `Pong`, and the handler measures
//! the round trip. The behaviour keeps [`RttStats`] per connection and emits
//! an [`Event`] for each measurement (unless `emit_rtt` is off) and one
//! failure event when a neighbour has not answered for `timeout`; it then
//! closes the connection if `close_on_failure` is set.
//!
//! Timing: every handler of a node pings on one grid (period `interval`,
//! a phase per node), so a node wakes once per interval however many
//! connections it has. Failure detection: at each ping the handler checks
//! the silence since the last answer, so a neighbour that dies right after
//! its last answer is reported between `timeout` and `timeout + interval`
//! after that answer.
//!
//! ```
//! use plexus_behaviours::ping;
//! use std::time::Duration;
//! let cfg = ping::Config::default()
//!     .with_interval(Duration::from_millis(500))
//!     .with_timeout(Duration::from_secs(5));
//! let behaviour = ping::Behaviour::new(cfg);
//! # let _ = behaviour;
//! ```

mod behaviour;
mod handler;
mod protocol;

pub use behaviour::Behaviour;
pub use handler::{Handler, HandlerEvent};
pub use protocol::Message;

use plexus_network::{ConnId, NodeId, ServiceId};
use std::time::Duration;

/// Ping settings. `Config::default()` gives the values each setter documents.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) service: ServiceId,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) close_on_failure: bool,
    pub(crate) emit_rtt: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: crate::services::PING,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            close_on_failure: true,
            emit_rtt: true,
        }
    }
}

impl Config {
    /// The service id. Default [`crate::services::PING`] (1).
    pub fn with_service(mut self, service: ServiceId) -> Self {
        self.service = service;
        self
    }
    /// Time between pings on a connection. Default 1 s.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
    /// Silence after which a neighbour is declared failed. Default 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Close a failed connection. Default true.
    pub fn with_close_on_failure(mut self, close: bool) -> Self {
        self.close_on_failure = close;
        self
    }
    /// Emit an event for every RTT measured (failures are always emitted).
    /// Default true.
    pub fn with_emit_rtt(mut self, emit: bool) -> Self {
        self.emit_rtt = emit;
        self
    }
}

/// Round-trip time statistics of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttStats {
    /// The latest measurement.
    pub last: Duration,
    /// The smallest measured.
    pub min: Duration,
    /// The largest measured.
    pub max: Duration,
    /// Smoothed RTT (exponentially weighted, gain 1/8 as TCP's SRTT).
    pub smoothed: Duration,
    /// Number of measurements.
    pub samples: u64,
}

impl RttStats {
    fn first(rtt: Duration) -> Self {
        RttStats {
            last: rtt,
            min: rtt,
            max: rtt,
            smoothed: rtt,
            samples: 1,
        }
    }

    fn record(&mut self, rtt: Duration) {
        self.last = rtt;
        self.min = self.min.min(rtt);
        self.max = self.max.max(rtt);
        self.smoothed = (self.smoothed * 7 + rtt) / 8;
        self.samples += 1;
    }
}

/// Why a neighbour was declared failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No answer for longer than the timeout.
    Timeout {
        /// How long since the last answer (or since the connection opened).
        silent_for: Duration,
    },
}

/// What ping reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The neighbour.
    pub peer: NodeId,
    /// The connection.
    pub conn: ConnId,
    /// A measured round trip, or the failure.
    pub result: Result<Duration, Failure>,
}

/// Per-connection statistics, as answered by [`Request::Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// The neighbour.
    pub peer: NodeId,
    /// The connection.
    pub conn: ConnId,
    /// Its RTT statistics; `None` before the first answer.
    pub rtt: Option<RttStats>,
}

/// Ping's RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// The statistics of every connection.
    Stats,
}

/// Answers to [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// Per connection, in `ConnId` order.
    Stats(Vec<ConnStats>),
}

#[cfg(test)]
mod tests;
