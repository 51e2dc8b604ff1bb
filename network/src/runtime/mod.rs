//! The tokio runtime driver: one core, real transports, a [`NodeHandle`].
//!
//! [`Node::spawn`] moves a [`Network`] into a task that owns it and runs the
//! drive loop over real time: it feeds the core what the transports and the
//! application deliver, executes its outputs on the transports, and ticks it
//! on a timer. Everything else talks to that task through channels, so the
//! core still needs no lock.
//!
//! # Transports
//! A [`Transport`] dials and accepts, and hands over only authenticated
//! [`Connection`]s: the remote's [`NodeId`] is proven (TLS on QUIC and TCP)
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
//!
//! # Shutdown
//! [`NodeHandle::shutdown`], or dropping every handle, closes each
//! connection gracefully (queued frames are flushed first, within
//! [`RuntimeConfig::shutdown_grace`]), stops the transports and ends the task.

use crate::wire::HEADER_LEN;
use crate::{
    Address, AppEvent, ConnId, ConnectError, DropReport, Instant, Network, NetworkBehavior,
    NetworkStats, NodeId, OutgoingConnectionError, Output, RouteChange, RouteInfo, RouteRule,
    RpcError, RpcId, SendError, SendOptions, ServiceId,
};
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A boxed, sendable future (transports are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a dial failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialError {
    /// No transport of this node speaks the address's scheme.
    #[error("no transport for {0}")]
    NoTransport(String),
    /// Connecting or the handshake failed.
    #[error("{0}")]
    Failed(String),
    /// The handshake did not finish within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The remote proved another identity than the one dialled.
    #[error("identity mismatch: dialled {expected}, remote is {actual}")]
    IdentityMismatch {
        /// The node dialled.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// The remote did not prove this node's network key.
    #[error("network key mismatch")]
    NetworkKey,
}

impl From<DialError> for OutgoingConnectionError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Timeout => OutgoingConnectionError::Timeout,
            DialError::IdentityMismatch { expected, actual } => {
                OutgoingConnectionError::IdentityMismatch { expected, actual }
            }
            other => OutgoingConnectionError::Transport(other.to_string()),
        }
    }
}

/// Credit for bytes of application sends in flight: returned to the
/// node's budget when dropped, that is once the writer has written the
/// frame it travels with.
#[derive(Debug)]
pub struct Credit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// A frame to write: the bytes, and whether loss is acceptable.
#[derive(Debug)]
pub enum Outbound {
    /// One frame.
    Frame {
        /// Header and payload.
        bytes: Vec<u8>,
        /// May travel as a datagram.
        unreliable: bool,
        /// The send budget this frame holds until written (application
        /// sends only).
        credit: Option<Credit>,
    },
    /// Close the connection after what is queued, telling the peer why.
    Close(String),
}

/// The queue a [`FrameWriter`] drains.
#[derive(Debug)]
pub struct OutboundQueue {
    rx: mpsc::Receiver<Outbound>,
}

impl OutboundQueue {
    /// Waits for the next item and takes up to `max` already queued ones
    /// with it. `None` when the runtime has dropped the connection (close).
    pub async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()> {
        let first = self.rx.recv().await?;
        out.push(first);
        self.take_ready(out, max);
        Some(())
    }

    /// Takes up to `max` items in all that are queued now, without waiting.
    pub fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        let before = out.len();
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(o) => out.push(o),
                Err(_) => break,
            }
        }
        out.len() - before
    }
}

/// Where a [`FrameReader`] delivers what it reads.
#[derive(Debug, Clone)]
pub struct FrameSink {
    conn: ConnId,
    tx: mpsc::Sender<Event>,
}

impl FrameSink {
    /// Hands frames to the core; waits while the core is busy (backpressure).
    /// `Err` when the node is gone: stop reading.
    pub async fn deliver(&self, frames: Vec<Vec<u8>>) -> Result<(), ()> {
        self.tx
            .send(Event::Frames {
                conn: self.conn,
                frames,
            })
            .await
            .map_err(|_| ())
    }
}

/// The sending half of a connection, run as its own task.
pub trait FrameWriter: Send + 'static {
    /// Writes what `queue` yields until it ends (then closes the connection
    /// gracefully) or an `Outbound::Close` arrives. `Err` on a write failure.
    fn run(self: Box<Self>, queue: OutboundQueue) -> BoxFuture<'static, io::Result<()>>;
}

/// The receiving half of a connection, run as its own task.
pub trait FrameReader: Send + 'static {
    /// Reads frames into `sink` until the connection ends: `Ok` on a clean
    /// end, `Err` on an I/O error or a protocol violation (an oversized
    /// frame), which the runtime logs as the reason the connection closed.
    fn run(self: Box<Self>, sink: FrameSink) -> BoxFuture<'static, io::Result<()>>;
}

/// An authenticated connection, as a transport hands it to the runtime.
pub struct Connection {
    /// The remote node, as its handshake proved.
    pub node: NodeId,
    /// The remote address.
    pub addr: Address,
    /// The sending half.
    pub writer: Box<dyn FrameWriter>,
    /// The receiving half.
    pub reader: Box<dyn FrameReader>,
    /// The transport's own RTT estimate, where it has one (QUIC).
    pub rtt: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Moves frames between nodes: QUIC, TCP, memory, …
pub trait Transport: Send + Sync + 'static {
    /// The address scheme it serves (`"quic"`, `"tcp"`, `"mem"`).
    fn scheme(&self) -> &'static str;
    /// Where it listens.
    fn listen_addrs(&self) -> Vec<Address>;
    /// Starts accepting: each authenticated connection goes to `incoming`.
    fn start(&self, incoming: mpsc::Sender<Connection>);
    /// Dials `addr` and returns the connection once the remote proved it is
    /// `expected` (and the network key, if any).
    fn dial(
        &self,
        addr: Address,
        expected: NodeId,
    ) -> BoxFuture<'static, Result<Connection, DialError>>;
    /// Stops accepting and releases the sockets.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

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
        }
    }
}

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
    /// A connection went down.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// The remote node.
        node: NodeId,
    },
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
    /// Its router's table.
    pub routes: Vec<RouteInfo>,
    /// The core's counters.
    pub stats: NetworkStats,
    /// Application events dropped because the application did not keep up.
    pub app_events_dropped: u64,
}

/// Why a [`NodeHandle`] call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// The send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The RPC was refused.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The dial was refused.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The behaviour answered with another type than its `Response`.
    #[error("RPC answer of the wrong type")]
    WrongAnswer,
}

/// Most application commands applied per wake-up of the driver.
const COMMAND_BURST: usize = 256;

type RpcReply = oneshot::Sender<Result<Box<dyn Any + Send>, NodeError>>;

enum Command {
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
    Close(ConnId),
    Status(oneshot::Sender<NodeStatus>),
    Shutdown(oneshot::Sender<()>),
}

/// What the runtime's helpers tell its loop.
#[derive(Debug)]
#[doc(hidden)]
pub enum Event {
    Frames {
        conn: ConnId,
        frames: Vec<Vec<u8>>,
    },
    Closed {
        conn: ConnId,
        why: Option<String>,
    },
    Dialed {
        conn: ConnId,
        result: Result<Connection, DialError>,
    },
}

/// A cloneable handle to a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    node: NodeId,
    listen_addrs: Vec<Address>,
    max_payload: usize,
    budget: Arc<tokio::sync::Semaphore>,
    budget_max: usize,
    tx: mpsc::Sender<Command>,
}

/// The node's events for the application.
#[derive(Debug)]
pub struct NodeEvents {
    rx: mpsc::Receiver<NodeEvent>,
}

impl NodeEvents {
    /// The next event; `None` once the node has shut down.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        self.rx.recv().await
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

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Closed)?;
        rx.await.map_err(|_| NodeError::Closed)
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
        let mut frame = Vec::with_capacity(HEADER_LEN + 64);
        frame.resize(HEADER_LEN, 0);
        let frame = postcard::to_extend(msg, frame)
            .map_err(|e| NodeError::Send(SendError::Encode(e.to_string())))?;
        let len = frame.len() - HEADER_LEN;
        if len > self.max_payload {
            return Err(NodeError::Send(SendError::Oversized {
                len,
                max: self.max_payload,
            }));
        }
        let want = u32::try_from(frame.len().min(self.budget_max)).unwrap_or(u32::MAX);
        let credit = Credit(
            self.budget
                .clone()
                .acquire_many_owned(want)
                .await
                .map_err(|_| NodeError::Closed)?,
        );
        self.tx
            .send(Command::Send {
                service,
                rule,
                frame,
                opts,
                credit,
            })
            .await
            .map_err(|_| NodeError::Closed)
    }

    /// Calls the RPC of the node's behaviour of type `B` and awaits the answer.
    pub async fn rpc<B: NetworkBehavior>(&self, req: B::Request) -> Result<B::Response, NodeError> {
        let answer = self
            .call(|reply| Command::Rpc {
                behavior: TypeId::of::<B>(),
                req: Box::new(req),
                reply,
            })
            .await??;
        answer
            .downcast::<B::Response>()
            .map(|b| *b)
            .map_err(|_| NodeError::WrongAnswer)
    }

    /// Dials `node` at `addr`. Returns once the dial has started; the
    /// connection comes up (or fails) later, as an event.
    pub async fn connect(&self, node: NodeId, addr: Address) -> Result<ConnId, NodeError> {
        self.call(|reply| Command::Connect { node, addr, reply })
            .await?
    }

    /// Closes a connection.
    pub async fn close(&self, conn: ConnId) -> Result<(), NodeError> {
        self.tx
            .send(Command::Close(conn))
            .await
            .map_err(|_| NodeError::Closed)
    }

    /// A snapshot of the node: connections with RTTs, routes, counters.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.call(Command::Status).await
    }

    /// Closes every connection gracefully and stops the node.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.call(Command::Shutdown).await
    }
}

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Runs `network` over `transports` on the current tokio runtime.
    /// The network's RNG should already be seeded (from the OS, for a real
    /// node: the caller chooses).
    pub fn spawn(
        network: Network,
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
        let handle = NodeHandle {
            node: network.local_node(),
            listen_addrs: listen_addrs.clone(),
            max_payload: network.config().max_payload,
            budget: Arc::new(tokio::sync::Semaphore::new(
                config.app_bytes_in_flight.max(1),
            )),
            budget_max: config.app_bytes_in_flight.max(1),
            tx: cmd_tx,
        };
        log::info!(
            "node {}: running, listening on {}",
            network.local_node(),
            listen_addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let driver = Driver {
            net: network,
            transports,
            config,
            epoch: clock(),
            conns: HashMap::new(),
            rpcs: HashMap::new(),
            ev_tx,
            app_tx,
            app_dropped: 0,
            listen_addrs,
            blocked: None,
        };
        tokio::spawn(driver.run(cmd_rx, ev_rx, in_rx));
        (handle, NodeEvents { rx: app_rx })
    }
}

#[allow(clippy::disallowed_methods)] // the runtime is where real time enters
fn clock() -> std::time::Instant {
    std::time::Instant::now()
}

struct ConnIo {
    tx: mpsc::Sender<Outbound>,
    node: NodeId,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    rtt: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
}

/// An application frame waiting for room in its connection's queue.
struct Blocked {
    conn: ConnId,
    frame: Outbound,
}

struct Driver {
    net: Network,
    transports: Vec<Arc<dyn Transport>>,
    config: RuntimeConfig,
    epoch: std::time::Instant,
    conns: HashMap<ConnId, ConnIo>,
    rpcs: HashMap<RpcId, RpcReply>,
    ev_tx: mpsc::Sender<Event>,
    app_tx: mpsc::Sender<NodeEvent>,
    app_dropped: u64,
    listen_addrs: Vec<Address>,
    blocked: Option<Blocked>,
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_micros(t.as_micros()))
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
        mut incoming: mpsc::Receiver<Connection>,
    ) {
        let now = self.now();
        self.net.handle_tick(now);
        self.drain();
        let shutdown_reply = 'run: loop {
            let wake = self.deadline(self.net.poll_timeout());
            // An owned sender, so the wait borrows nothing from `self`.
            let blocked_tx = self
                .blocked
                .as_ref()
                .and_then(|b| self.conns.get(&b.conn))
                .map(|io| io.tx.clone());
            let room = async move {
                match blocked_tx {
                    Some(tx) => tx.reserve_owned().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                ev = events.recv() => {
                    // The driver holds a sender itself, so this never ends.
                    if let Some(ev) = ev { self.on_event(ev); }
                }
                conn = incoming.recv() => {
                    if let Some(conn) = conn { self.on_incoming(conn); }
                }
                ok = room => {
                    self.unblock(ok);
                }
                cmd = commands.recv(), if self.blocked.is_none() => {
                    // Take what is already queued too (bounded, for
                    // fairness): one wake-up per burst, not per command.
                    let mut next = cmd;
                    let mut taken = 0;
                    loop {
                        match next {
                            Some(Command::Shutdown(reply)) => break 'run Some(reply),
                            Some(cmd) => self.on_command(cmd),
                            None => break 'run None,
                        }
                        taken += 1;
                        if taken == COMMAND_BURST || self.blocked.is_some() {
                            break;
                        }
                        match commands.try_recv() {
                            Ok(cmd) => next = Some(cmd),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = self.now();
                    self.net.handle_tick(now);
                    self.drain();
                }
            }
        };
        self.shutdown().await;
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn unblock(&mut self, room: bool) {
        let Some(b) = self.blocked.take() else {
            return;
        };
        if !room {
            return; // the connection closed; the frame goes with it
        }
        if let Some(io) = self.conns.get(&b.conn) {
            if let Err(mpsc::error::TrySendError::Full(frame)) = io.tx.try_send(b.frame) {
                self.blocked = Some(Blocked {
                    conn: b.conn,
                    frame,
                });
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Frames { conn, frames } => {
                for f in &frames {
                    let now = self.now();
                    self.net.handle_frame(now, conn, f);
                    self.drain();
                }
            }
            Event::Closed { conn, why } => {
                if let Some(io) = self.conns.remove(&conn) {
                    match &why {
                        Some(why) => log::debug!(
                            "node {}: {conn} to {} closed: {why}",
                            self.net.local_node(),
                            io.node
                        ),
                        None => log::debug!(
                            "node {}: {conn} to {} closed by the peer",
                            self.net.local_node(),
                            io.node
                        ),
                    }
                    io.reader.abort();
                    self.app_event(NodeEvent::Disconnected {
                        conn,
                        node: io.node,
                    });
                    let now = self.now();
                    self.net.handle_disconnected(now, conn);
                    self.drain();
                }
            }
            Event::Dialed { conn, result } => {
                let now = self.now();
                match result {
                    Ok(c) => {
                        let node = c.node;
                        self.register(conn, c);
                        self.net.handle_outgoing_connected(now, conn, node);
                        if self.net.connections().any(|i| i.conn == conn) {
                            self.app_event(NodeEvent::Connected { conn, node });
                        }
                    }
                    Err(e) => {
                        log::debug!("node {}: dial {conn} failed: {e}", self.net.local_node());
                        self.net.handle_outgoing_failed(now, conn, e.into());
                    }
                }
                self.drain();
            }
        }
    }

    fn on_incoming(&mut self, c: Connection) {
        let now = self.now();
        match self.net.handle_incoming(now, c.node, Some(c.addr)) {
            Ok(conn) => {
                let node = c.node;
                self.register(conn, c);
                self.app_event(NodeEvent::Connected { conn, node });
                // The core ran its callbacks inside handle_incoming; their
                // outputs wait: the connection's queue exists only now.
                self.drain();
            }
            Err(reason) => {
                log::debug!(
                    "node {}: incoming from {} at {} refused: {reason}",
                    self.net.local_node(),
                    c.node,
                    c.addr
                );
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(Outbound::Close(reason.to_string()));
                drop(tx);
                tokio::spawn(async move {
                    let _ = c.writer.run(OutboundQueue { rx }).await;
                });
            }
        }
    }

    fn register(&mut self, conn: ConnId, c: Connection) {
        let (tx, rx) = mpsc::channel(self.config.send_queue);
        let sink = FrameSink {
            conn,
            tx: self.ev_tx.clone(),
        };
        let closed = self.ev_tx.clone();
        let reader = tokio::spawn(async move {
            let why = match c.reader.run(sink).await {
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            };
            let _ = closed.send(Event::Closed { conn, why }).await;
        });
        let closed = self.ev_tx.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = c.writer.run(OutboundQueue { rx }).await {
                let _ = closed
                    .send(Event::Closed {
                        conn,
                        why: Some(format!("write failed: {e}")),
                    })
                    .await;
            }
        });
        self.conns.insert(
            conn,
            ConnIo {
                tx,
                node: c.node,
                reader,
                writer,
                rtt: c.rtt,
            },
        );
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Send {
                service,
                rule,
                frame,
                opts,
                credit,
            } => {
                // The handle checked size and encoding: this cannot fail.
                if let Err(e) = self.net.send_frame(now, service, rule, frame, opts) {
                    log::warn!("node {}: send refused: {e}", self.net.local_node());
                }
                // The first frame out is this message (routed on); it holds
                // the credit until written. Delivered locally or dropped:
                // the credit returns now.
                self.drain_with(Some(credit));
            }
            Command::Rpc {
                behavior,
                req,
                reply,
            } => match self.net.rpc_by_type(now, behavior, req) {
                Ok(id) => {
                    self.rpcs.insert(id, reply);
                    self.drain();
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Connect { node, addr, reply } => {
                let r = self.net.connect(now, node, addr);
                self.drain();
                let _ = reply.send(r.map_err(NodeError::from));
            }
            Command::Close(conn) => {
                self.net.close(now, conn);
                self.drain();
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.net.local_node(),
            listen_addrs: self.listen_addrs.clone(),
            connections: self
                .net
                .connections()
                .map(|i| ConnStatus {
                    conn: i.conn,
                    node: i.node,
                    addr: i.addr,
                    direction: i.direction,
                    rtt: self.net.connection_rtt(i.conn).or_else(|| {
                        self.conns
                            .get(&i.conn)
                            .and_then(|io| io.rtt.as_ref().map(|f| f()))
                    }),
                })
                .collect(),
            routes: self.net.router().routes(),
            stats: self.net.stats(),
            app_events_dropped: self.app_dropped,
        }
    }

    fn app_event(&mut self, ev: NodeEvent) {
        if self.app_tx.try_send(ev).is_err() {
            self.app_dropped += 1;
            if self.app_dropped.is_power_of_two() {
                log::warn!(
                    "node {}: the application is not reading events: {} dropped so far",
                    self.net.local_node(),
                    self.app_dropped
                );
            }
        }
    }

    /// Executes the core's outputs.
    fn drain(&mut self) {
        self.drain_with(None);
    }

    /// [`drain`](Self::drain) after an application send holding `credit`:
    /// its frames wait for queue room instead of being dropped, and the
    /// first carries the credit.
    fn drain_with(&mut self, mut credit: Option<Credit>) {
        let from_app = credit.is_some();
        while let Some(out) = self.net.poll_output() {
            match out {
                Output::Send {
                    conn,
                    frame,
                    unreliable,
                } => self.send(conn, frame, unreliable, from_app, credit.take()),
                Output::Connect { conn, node, addr } => self.dial(conn, node, addr),
                Output::Close { conn, reason } => {
                    if let Some(io) = self.conns.remove(&conn) {
                        log::debug!("node {}: closing {conn}: {reason}", self.net.local_node());
                        let _ = io.tx.try_send(Outbound::Close(reason.to_string()));
                        io.reader.abort();
                        self.app_event(NodeEvent::Disconnected {
                            conn,
                            node: io.node,
                        });
                    }
                }
                Output::Event(ev) => self.app_event(NodeEvent::Behaviour(ev)),
                Output::RpcAnswer { id, response } => {
                    if let Some(reply) = self.rpcs.remove(&id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Output::Dropped(r) => self.app_event(NodeEvent::Dropped(r)),
                Output::RouteChanged(c) => self.app_event(NodeEvent::RouteChanged(c)),
            }
        }
    }

    fn send(
        &mut self,
        conn: ConnId,
        bytes: Vec<u8>,
        unreliable: bool,
        from_app: bool,
        credit: Option<Credit>,
    ) {
        let Some(io) = self.conns.get(&conn) else {
            return;
        };
        let frame = Outbound::Frame {
            bytes,
            unreliable,
            credit,
        };
        match io.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(frame)) if from_app && self.blocked.is_none() => {
                self.blocked = Some(Blocked { conn, frame });
            }
            Err(mpsc::error::TrySendError::Full(Outbound::Frame { bytes, .. })) => {
                let now = self.now();
                self.net.handle_send_failed(now, conn, &bytes);
            }
            Err(_) => {}
        }
    }

    fn dial(&mut self, conn: ConnId, node: NodeId, addr: Address) {
        let scheme = addr.scheme();
        let Some(t) = self
            .transports
            .iter()
            .find(|t| t.scheme() == scheme)
            .cloned()
        else {
            let now = self.now();
            let err = DialError::NoTransport(addr.to_string());
            self.net.handle_outgoing_failed(now, conn, err.into());
            return;
        };
        let tx = self.ev_tx.clone();
        let timeout = self.config.handshake_timeout;
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, t.dial(addr, node)).await {
                Ok(r) => r,
                Err(_) => Err(DialError::Timeout),
            };
            let _ = tx.send(Event::Dialed { conn, result }).await;
        });
    }

    async fn shutdown(mut self) {
        log::info!("node {}: shutting down", self.net.local_node());
        let now = self.now();
        let conns: Vec<ConnId> = self.net.connections().map(|c| c.conn).collect();
        for c in conns {
            self.net.close(now, c);
        }
        self.drain();
        let writers: Vec<JoinHandle<()>> = self
            .conns
            .drain()
            .map(|(_, io)| {
                let _ = io.tx.try_send(Outbound::Close("shutdown".into()));
                io.reader.abort();
                io.writer
            })
            .collect();
        let grace = self.config.shutdown_grace;
        let _ = tokio::time::timeout(grace, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
        for t in &self.transports {
            t.shutdown().await;
        }
        log::info!("node {}: stopped", self.net.local_node());
    }
}
