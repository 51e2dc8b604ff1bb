//! The tokio runtime driver: one core, real transports, a [`NodeHandle`].
//!
//! [`Node::spawn`] moves a [`Network`] into a task that owns it and runs the
//! drive loop over real time: it feeds the core what the transports and the
//! application deliver, executes its outputs on the transports, and wakes
//! it when its earliest timer is due. Everything else talks to that task through channels, so the
//! core still needs no lock.
//!
//! # Transports
//! A [`Transport`] dials and accepts, and hands over only authenticated
//! [`Connection`]s: the remote's [`NodeId`](crate::NodeId) is proven (TLS on QUIC and TCP)
//! and any network key checked, so no behaviour ever sees a peer that failed
//! either. Each connection is a [`FrameWriter`] and a [`FrameReader`], which
//! the runtime runs as two tasks.
//!
//! # Queues and backpressure (all bounded)
//! - Per connection, a send queue of [`RuntimeConfig::send_queue`] frames.
//!   When it is full, a frame the core forwards or a behaviour sends is
//!   dropped and reported ([`DropReason::QueueFull`](crate::DropReason) in a
//!   [`NodeEvent::Dropped`]); a frame from the application's own
//!   [`NodeHandle::send`] is held instead, and the runtime takes no further
//!   application command until the queue has room — backpressure on the
//!   sender, while frames keep being read, so two busy peers cannot
//!   deadlock.
//! - Bytes of application sends in flight, from [`NodeHandle::send`] until
//!   the writer has written them, are bounded by
//!   [`RuntimeConfig::app_bytes_in_flight`]: `send` waits for credit, so a
//!   stream of large messages holds at most that much memory.
//! - Frames read from connections enter the core through one channel of
//!   [`RuntimeConfig::event_queue`] batches; when it is full, readers wait,
//!   which pushes back on the remote through the transport's flow control.
//! - Application events go out through a channel of
//!   [`RuntimeConfig::app_event_queue`]; when the application does not keep
//!   up, events are dropped with a warning (counted in [`NodeStatus`]).
//! - Frame buffers are reused: written frames' buffers go to the node's
//!   next sends and forwarded frames, read buffers the core has handled to
//!   the next reads. The pool keeps at most 1 MiB of small buffers, 4 MiB
//!   of large ones and 4 MiB of read buffers; a frame buffer serves only a
//!   frame that fills at least half of it, so frames queued to send hold at
//!   most about twice the bytes the limits above count. A batch of frames
//!   read holds its whole read buffer (64 KiB or more) until the core has
//!   handled it: at most [`RuntimeConfig::event_queue`] batches wait.
//!
//! # Failures
//! A behaviour that panics is disabled by the core and reported as
//! [`NodeEvent::BehaviorFailed`]; the node goes on. If the driver itself
//! ends unexpectedly (a panic outside any behaviour, in a router say), a
//! supervisor task notices: it logs the cause, closes the transports'
//! listeners (no port is left accepting handshakes for a dead node), sends
//! [`NodeEvent::Failed`] as the last event, and from then on every
//! [`NodeHandle`] call returns [`NodeError::Failed`] with the cause, not
//! [`NodeError::Closed`] (which means the node was shut down as asked).
//!
//! # Shutdown
//! [`NodeHandle::shutdown`], or dropping every handle, closes each
//! connection gracefully (queued frames are flushed first, within
//! [`RuntimeConfig::shutdown_grace`]), stops the transports and ends the task.

mod config;
mod driver;
mod handle;
pub(crate) mod pool;
mod transport;

pub use config::RuntimeConfig;
pub use handle::{
    ConnStatus, NodeError, NodeEvent, NodeEvents, NodeHandle, NodeStatus, WeakNodeHandle,
};
pub use transport::{
    BoxFuture, Connection, Credit, DialError, FrameBatch, FrameReader, FrameSink, FrameWriter,
    Lane, Outbound, OutboundQueue, Transport,
};

use crate::{Address, Network};
use driver::Driver;
use handle::NodeState;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Runs `network` over `transports` on the current tokio runtime.
    ///
    /// The network's RNG was seeded when it was built (from the OS, unless
    /// the builder was given a seed).
    pub fn spawn(
        mut network: Network,
        transports: Vec<Arc<dyn Transport>>,
        config: RuntimeConfig,
    ) -> (NodeHandle, NodeEvents) {
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue);
        let (ev_tx, ev_rx) = mpsc::channel(config.event_queue);
        let (app_tx, app_rx) = mpsc::channel(config.app_event_queue);
        let (in_tx, in_rx) = mpsc::channel(64);
        let listen_addrs: Vec<Address> = transports.iter().flat_map(|t| t.listen_addrs()).collect();
        for t in &transports {
            t.start(in_tx.clone());
        }
        network.set_local_addrs(listen_addrs.clone());
        let state = Arc::new(NodeState::default());
        let pool = Arc::new(pool::FramePool::default());
        network.buffers = Some(pool.clone());
        let node = network.local_node();
        let handle = NodeHandle {
            node,
            listen_addrs: listen_addrs.clone(),
            max_payload: network.config().max_payload,
            budget: Arc::new(tokio::sync::Semaphore::new(
                config.app_bytes_in_flight.max(1),
            )),
            budget_max: config.app_bytes_in_flight.max(1),
            tx: cmd_tx,
            state: state.clone(),
            rpc_timeout: config.rpc_timeout,
            pool: pool.clone(),
        };
        log::info!(
            "node {node}: running, listening on {}",
            listen_addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let supervisor_tx = app_tx.clone();
        let supervisor_transports = transports.clone();
        let driver = Driver::new(
            network,
            transports,
            config,
            ev_tx,
            app_tx,
            listen_addrs,
            state.clone(),
        );
        let task = tokio::spawn(driver.run(cmd_rx, ev_rx, in_rx));
        tokio::spawn(async move {
            let Err(e) = task.await else {
                return; // a clean stop
            };
            let why = if e.is_panic() {
                let payload = e.into_panic();
                match (
                    payload.downcast_ref::<&str>(),
                    payload.downcast_ref::<String>(),
                ) {
                    (Some(s), _) => format!("panicked: {s}"),
                    (_, Some(s)) => format!("panicked: {s}"),
                    _ => "panicked".to_string(),
                }
            } else {
                "its task was cancelled (the tokio runtime is shutting down)".to_string()
            };
            log::error!("node {node}: the node's driver failed: {why}; closing its listeners");
            let _ = state.failure.set(why.clone());
            state.failed.notify_waiters();
            for t in &supervisor_transports {
                t.shutdown().await;
            }
            // The last event; an application that does not read within a
            // second has its reason in every handle call anyway.
            let _ = supervisor_tx
                .send_timeout(NodeEvent::Failed(why), std::time::Duration::from_secs(1))
                .await;
        });
        (handle, NodeEvents { rx: app_rx })
    }
}
