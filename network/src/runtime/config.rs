//! Settings of the runtime.

use std::time::Duration;

/// Settings of the runtime. `Default` gives the values each field documents.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Frames queued per connection. Default 1,024.
    pub send_queue: usize,
    /// Batches of received frames waiting for the core. Default 256.
    pub event_queue: usize,
    /// Application commands waiting for the core. Default 1,024.
    pub command_queue: usize,
    /// Bytes of application sends in flight (queued or being written).
    /// Default 8 MiB; a single larger message takes the whole budget.
    pub app_bytes_in_flight: usize,
    /// Events waiting for the application. Default 4,096.
    pub app_event_queue: usize,
    /// Time for a dial's connect and handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time to flush and close connections at shutdown. Default 2 s.
    pub shutdown_grace: Duration,
    /// Time `NodeHandle::rpc` waits for an answer. Default 30 s.
    pub rpc_timeout: Duration,
    /// Longest a data frame waits at this node for its next hop's
    /// flow-control window; past it, it is dropped and reported
    /// (`DropReason::QueueFull`), so frames caught in a cycle of waiting
    /// relays end with an explicit error rather than a hang. Default 10 s.
    pub flow_stall_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            send_queue: 1024,
            event_queue: 256,
            command_queue: 1024,
            app_bytes_in_flight: 8 << 20,
            app_event_queue: 4096,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(30),
            flow_stall_timeout: Duration::from_secs(10),
        }
    }
}
