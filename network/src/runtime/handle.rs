//! What the application holds: a cloneable [`NodeHandle`] to command the
//! node, and [`NodeEvents`] to hear from it.

use super::transport::Credit;
use crate::wire::HEADER_LEN;
use crate::{
    Address, AppEvent, BehaviorFailure, BootstrapStatus, ConnId, ConnectError, DialFailure,
    DropReport, NetworkBehavior, NetworkStats, NodeId, RequestOf, ResponseOf, RouteChange,
    RouteInfo, RouteRule, RpcError, SendError, SendOptions, ServiceId,
};
use serde::Serialize;
use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// What the node tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A behaviour's event.
    Behaviour(AppEvent),
    /// A message died at this node.
    Dropped(DropReport),
    /// A route changed.
    RouteChanged(RouteChange),
    /// A connection came up (after every check).
    Connected {
        /// The connection.
        conn: ConnId,
        /// The remote node.
        node: NodeId,
    },
    /// A connection that was announced with `Connected` went down.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// The remote node.
        node: NodeId,
    },
    /// A dial failed: unreachable, refused (network key, identity), no
    /// transport for the scheme, …
    DialFailed(DialFailure),
    /// A behaviour panicked and is disabled; the node goes on without it.
    BehaviorFailed(BehaviorFailure),
    /// The node's driver failed unexpectedly (a panic outside any
    /// behaviour, such as in the router): its listeners are closed and every
    /// handle call now returns [`NodeError::Failed`]. The last event.
    Failed(String),
}

/// One connection in [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnStatus {
    /// The connection.
    pub conn: ConnId,
    /// The remote node.
    pub node: NodeId,
    /// The remote address.
    pub addr: Option<Address>,
    /// Who dialled.
    pub direction: crate::Direction,
    /// RTT: reported by a behaviour (ping), else the transport's estimate.
    pub rtt: Option<Duration>,
}

/// A snapshot of a running node.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// Where it listens.
    pub listen_addrs: Vec<Address>,
    /// Its connections.
    pub connections: Vec<ConnStatus>,
    /// Its bootstrap peers, with the last error of those not connected.
    pub bootstrap: Vec<BootstrapStatus>,
    /// Its router's table.
    pub routes: Vec<RouteInfo>,
    /// Services whose behaviour failed and is disabled.
    pub failed_services: Vec<ServiceId>,
    /// The core's counters.
    pub stats: NetworkStats,
    /// Application events dropped because the application did not keep up.
    pub app_events_dropped: u64,
    /// Time the node's driver (the one task that runs the core) has spent
    /// working since the node started, as opposed to waiting for input:
    /// its share of wall time is how close the node is to what one core
    /// can do.
    pub driver_busy: Duration,
}

/// Why a [`NodeHandle`] call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down (as asked).
    #[error("the node has shut down")]
    Closed,
    /// The node failed: its driver ended unexpectedly, for this reason.
    #[error("the node failed: {0}")]
    Failed(String),
    /// The send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The RPC was refused or failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The dial was refused.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The behaviour answered with another type than its `Response`.
    #[error("RPC answer of the wrong type")]
    WrongAnswer,
    /// No answer within the RPC timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

pub(crate) type RpcReply = oneshot::Sender<Result<Box<dyn Any + Send>, NodeError>>;

/// What a handle asks the driver.
pub(crate) enum Command {
    Send {
        service: ServiceId,
        rule: RouteRule,
        /// Header room, then the serialised message.
        frame: Vec<u8>,
        opts: SendOptions,
        credit: Credit,
    },
    Rpc {
        behavior: TypeId,
        req: Box<dyn Any + Send>,
        reply: RpcReply,
    },
    Connect {
        node: NodeId,
        addr: Address,
        reply: oneshot::Sender<Result<ConnId, NodeError>>,
    },
    Bootstrap {
        node: NodeId,
        addr: Address,
        persistent: bool,
    },
    Close(ConnId),
    Status(oneshot::Sender<NodeStatus>),
    Shutdown(oneshot::Sender<()>),
}

/// Shared between the handles, the driver and the runtime's supervisor.
#[derive(Debug, Default)]
pub(crate) struct NodeState {
    /// Set by the driver when it stopped as asked.
    pub(crate) clean: AtomicBool,
    /// Set by the supervisor when the driver ended unexpectedly.
    pub(crate) failure: OnceLock<String>,
    /// Wakes handles waiting for `failure`.
    pub(crate) failed: tokio::sync::Notify,
}

/// A cloneable handle to a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub(crate) node: NodeId,
    pub(crate) listen_addrs: Vec<Address>,
    pub(crate) max_payload: usize,
    pub(crate) budget: Arc<tokio::sync::Semaphore>,
    pub(crate) budget_max: usize,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) state: Arc<NodeState>,
    pub(crate) rpc_timeout: Duration,
    pub(crate) pool: Arc<super::pool::FramePool>,
}

/// A handle that does not keep the node running: what a part of the node
/// itself (a transport that signals over the overlay) holds, since the node
/// stops once the application has dropped every [`NodeHandle`].
#[derive(Clone, Debug)]
pub struct WeakNodeHandle {
    handle: NodeHandle,
    tx: mpsc::WeakSender<Command>,
}

impl WeakNodeHandle {
    /// A full handle, while the application still holds one.
    pub fn upgrade(&self) -> Option<NodeHandle> {
        let tx = self.tx.upgrade()?;
        Some(NodeHandle {
            tx,
            ..self.handle.clone()
        })
    }
}

/// The node's events for the application.
#[derive(Debug)]
pub struct NodeEvents {
    pub(crate) rx: mpsc::Receiver<NodeEvent>,
}

impl NodeEvents {
    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        self.rx.recv().await
    }

    /// Waits for the next event and appends it to `out` with the ones
    /// already queued behind it, at most `max` in all: one wake-up for a
    /// burst of events. Returns how many it appended; 0 once the node has
    /// stopped (or if `max` is 0).
    pub async fn next_batch(&mut self, out: &mut Vec<NodeEvent>, max: usize) -> usize {
        self.rx.recv_many(out, max).await
    }
}

impl NodeHandle {
    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Where the node listens.
    pub fn listen_addrs(&self) -> &[Address] {
        &self.listen_addrs
    }

    /// A handle that does not keep the node running (see
    /// [`WeakNodeHandle`]).
    pub fn downgrade(&self) -> WeakNodeHandle {
        // The kept copy's sender is a closed channel's, never used: only
        // `upgrade` hands out a handle, with the live sender.
        let (dead, _) = mpsc::channel(1);
        WeakNodeHandle {
            tx: self.tx.downgrade(),
            handle: NodeHandle {
                tx: dead,
                ..self.clone()
            },
        }
    }

    /// Why the node is gone: shut down as asked, or failed. A driver that
    /// ended without stopping cleanly failed, even before the supervisor
    /// has recorded why (it is given a moment to).
    async fn gone(&self) -> NodeError {
        if self.state.clean.load(Ordering::Acquire) {
            return NodeError::Closed;
        }
        let wait = self.state.failed.notified();
        if let Some(why) = self.state.failure.get() {
            return NodeError::Failed(why.clone());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        match self.state.failure.get() {
            Some(why) => NodeError::Failed(why.clone()),
            None => NodeError::Failed("the node's driver ended unexpectedly".to_string()),
        }
    }

    async fn command(&self, cmd: Command) -> Result<(), NodeError> {
        match self.tx.send(cmd).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.gone().await),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(make(tx)).await?;
        match rx.await {
            Ok(t) => Ok(t),
            Err(_) => Err(self.gone().await),
        }
    }

    /// Sends `msg` to the behaviour of `service` on the node(s) `rule`
    /// resolves to. Returns once the message is queued for the core; waits
    /// while the node applies backpressure (a full first-hop queue). A
    /// message that cannot be routed is reported as [`NodeEvent::Dropped`].
    pub async fn send<M: Serialize>(
        &self,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
    ) -> Result<(), NodeError> {
        self.send_with(service, rule, msg, SendOptions::default())
            .await
    }

    /// [`send`](Self::send) with options.
    pub async fn send_with<M: Serialize>(
        &self,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
        opts: SendOptions,
    ) -> Result<(), NodeError> {
        // Serialise here, on the caller's thread, straight after room for
        // the header: the core writes the header in place, no second copy.
        // A first pass counts the bytes (no copy), so the frame is
        // allocated once at its size instead of grown by doubling.
        let encode = |e: postcard::Error| NodeError::Send(SendError::Encode(e.to_string()));
        let len = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
            .map_err(encode)?;
        if len > self.max_payload {
            return Err(NodeError::Send(SendError::Oversized {
                len,
                max: self.max_payload,
            }));
        }
        let mut frame = self.pool.take(HEADER_LEN + len);
        frame.resize(HEADER_LEN, 0);
        let frame = postcard::to_extend(msg, frame).map_err(encode)?;
        let want = u32::try_from(frame.len().min(self.budget_max)).unwrap_or(u32::MAX);
        // Without waiting when the budget has room (no waiter can be
        // passed: released credit goes to queued waiters first).
        let permit = match self.budget.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                match self.budget.clone().acquire_many_owned(want).await {
                    Ok(p) => p,
                    Err(_) => return Err(self.gone().await),
                }
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(self.gone().await),
        };
        let credit = Credit(permit);
        self.command(Command::Send {
            service,
            rule,
            frame,
            opts,
            credit,
        })
        .await
    }

    /// Calls the RPC of the node's behaviour of type `B` and awaits the
    /// answer, at most `RuntimeConfig::rpc_timeout` ([`NodeError::Timeout`]).
    pub async fn rpc<B: NetworkBehavior>(
        &self,
        req: RequestOf<B>,
    ) -> Result<ResponseOf<B>, NodeError> {
        let call = self.call(|reply| Command::Rpc {
            behavior: TypeId::of::<B>(),
            req: Box::new(req),
            reply,
        });
        let answer = tokio::time::timeout(self.rpc_timeout, call)
            .await
            .map_err(|_| NodeError::Timeout(self.rpc_timeout))???;
        answer
            .downcast::<ResponseOf<B>>()
            .map(|b| *b)
            .map_err(|_| NodeError::WrongAnswer)
    }

    /// Dials `node` at `addr`. Returns once the dial has started; the
    /// connection comes up ([`NodeEvent::Connected`]) or fails
    /// ([`NodeEvent::DialFailed`]) later.
    pub async fn connect(&self, node: NodeId, addr: Address) -> Result<ConnId, NodeError> {
        self.call(|reply| Command::Connect { node, addr, reply })
            .await?
    }

    /// Adds a bootstrap peer: dialled now, retried with backoff while it
    /// fails, and dialled again whenever the node has no connection left
    /// (see [`BootstrapStatus`]).
    pub async fn add_bootstrap(&self, node: NodeId, addr: Address) -> Result<(), NodeError> {
        self.command(Command::Bootstrap {
            node,
            addr,
            persistent: false,
        })
        .await
    }

    /// Adds a persistent peer: a link to keep, dialled whenever no
    /// connection to it is up (see
    /// [`NetworkBuilder::persistent_peer`](crate::NetworkBuilder::persistent_peer)).
    pub async fn add_persistent_peer(&self, node: NodeId, addr: Address) -> Result<(), NodeError> {
        self.command(Command::Bootstrap {
            node,
            addr,
            persistent: true,
        })
        .await
    }

    /// Closes a connection.
    pub async fn close(&self, conn: ConnId) -> Result<(), NodeError> {
        self.command(Command::Close(conn)).await
    }

    /// A snapshot of the node: connections with RTTs, bootstrap peers,
    /// routes, counters.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.call(Command::Status).await
    }

    /// Closes every connection gracefully and stops the node.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.call(Command::Shutdown).await
    }
}
