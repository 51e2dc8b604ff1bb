//! The contract between the runtime and a transport: a [`Transport`] dials
//! and accepts, and hands over only authenticated [`Connection`]s, each a
//! [`FrameWriter`] and a [`FrameReader`] that the runtime runs as tasks.

use crate::{Address, ConnId, NodeId, OutgoingConnectionError};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

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
            DialError::NetworkKey => OutgoingConnectionError::NetworkKey,
            DialError::NoTransport(s) => OutgoingConnectionError::NoTransport(s),
            DialError::Failed(s) => OutgoingConnectionError::Transport(s),
        }
    }
}

/// Credit for bytes of application sends in flight: returned to the
/// node's budget when dropped, that is once the writer has written the
/// frame it travels with.
#[derive(Debug)]
pub struct Credit(#[allow(dead_code)] pub(crate) tokio::sync::OwnedSemaphorePermit);

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

/// The queue a [`FrameWriter`] drains: two lanes, control ahead of data.
///
/// The control lane carries the frames behaviours send for themselves
/// (routing sync, ping, membership, …) and credit grants; the data lane the
/// application's messages and the frames this node forwards. Control
/// frames are taken first at every frame boundary, so a connection busy
/// with bulk data still carries a neighbour's pings and routes at once.
/// Each lane keeps its own order.
#[derive(Debug)]
pub struct OutboundQueue {
    pub(crate) control: mpsc::UnboundedReceiver<Outbound>,
    pub(crate) data: mpsc::UnboundedReceiver<Outbound>,
    pub(crate) depth: Arc<LaneDepth>,
}

/// One lane of an [`OutboundQueue`], for a transport that writes the two
/// lanes on streams of their own ([`OutboundQueue::split`]).
#[derive(Debug)]
pub struct Lane {
    rx: mpsc::UnboundedReceiver<Outbound>,
    depth: Arc<LaneDepth>,
    control: bool,
}

impl Lane {
    /// Whether this is the control lane.
    pub fn is_control(&self) -> bool {
        self.control
    }

    fn taken(&self) {
        let d = if self.control {
            &self.depth.control
        } else {
            &self.depth.data
        };
        d.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for the next item and takes up to `max` already queued ones
    /// with it. `None` when the runtime has dropped the connection.
    pub async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()> {
        if self.take_ready(out, max) > 0 {
            return Some(());
        }
        let first = self.rx.recv().await?;
        self.taken();
        out.push(first);
        self.take_ready(out, max);
        Some(())
    }

    /// Takes up to `max` items in all that are queued now, without waiting.
    pub fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        let before = out.len();
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(o) => {
                    self.taken();
                    out.push(o);
                }
                Err(_) => break,
            }
        }
        out.len() - before
    }
}

/// Frames waiting in each lane of a connection's [`OutboundQueue`] (the
/// lanes are unbounded channels; the runtime bounds what it puts in them).
#[derive(Debug, Default)]
pub(crate) struct LaneDepth {
    pub(crate) control: std::sync::atomic::AtomicUsize,
    pub(crate) data: std::sync::atomic::AtomicUsize,
}

/// The runtime's side of an [`OutboundQueue`].
#[derive(Debug, Clone)]
pub(crate) struct Lanes {
    pub(crate) control: mpsc::UnboundedSender<Outbound>,
    pub(crate) data: mpsc::UnboundedSender<Outbound>,
    pub(crate) depth: Arc<LaneDepth>,
}

impl Lanes {
    /// A connection's lanes and the queue its writer drains.
    pub(crate) fn new() -> (Lanes, OutboundQueue) {
        let (ctx, crx) = mpsc::unbounded_channel();
        let (dtx, drx) = mpsc::unbounded_channel();
        let depth = Arc::new(LaneDepth::default());
        (
            Lanes {
                control: ctx,
                data: dtx,
                depth: depth.clone(),
            },
            OutboundQueue {
                control: crx,
                data: drx,
                depth,
            },
        )
    }

    /// Queues on the control lane; `false` if the writer is gone.
    pub(crate) fn control(&self, o: Outbound) -> bool {
        let ok = self.control.send(o).is_ok();
        if ok {
            self.depth.control.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Queues on the data lane; `false` if the writer is gone.
    pub(crate) fn data(&self, o: Outbound) -> bool {
        let ok = self.data.send(o).is_ok();
        if ok {
            self.depth.data.fetch_add(1, Relaxed);
        }
        ok
    }
}

use std::sync::atomic::Ordering::Relaxed;

impl OutboundQueue {
    /// The two lanes apart, control then data, for a transport that gives
    /// control frames a stream of their own (QUIC): a ping then never waits
    /// behind data the transport has already taken. `Outbound::Close`
    /// comes on the data lane, after the data queued before it.
    pub fn split(self) -> (Lane, Lane) {
        (
            Lane {
                rx: self.control,
                depth: self.depth.clone(),
                control: true,
            },
            Lane {
                rx: self.data,
                depth: self.depth,
                control: false,
            },
        )
    }

    /// Waits for the next item and takes up to `max` already queued ones
    /// with it (control first). `None` when the runtime has dropped the
    /// connection (close).
    pub async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()> {
        if self.take_ready(out, max) > 0 {
            return Some(());
        }
        let first = tokio::select! {
            biased;
            Some(o) = self.control.recv() => {
                self.depth.control.fetch_sub(1, Relaxed);
                o
            }
            Some(o) = self.data.recv() => {
                self.depth.data.fetch_sub(1, Relaxed);
                o
            }
            else => return None,
        };
        out.push(first);
        self.take_ready(out, max);
        Some(())
    }

    /// Takes up to `max` items in all that are queued now, control first,
    /// without waiting.
    pub fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        let before = out.len();
        while out.len() < max {
            match self.control.try_recv() {
                Ok(o) => {
                    self.depth.control.fetch_sub(1, Relaxed);
                    out.push(o);
                }
                Err(_) => break,
            }
        }
        while out.len() < max {
            match self.data.try_recv() {
                Ok(o) => {
                    self.depth.data.fetch_sub(1, Relaxed);
                    out.push(o);
                }
                Err(_) => break,
            }
        }
        out.len() - before
    }
}

/// What connection tasks and dials tell the runtime's loop.
#[derive(Debug)]
pub(crate) enum ConnEvent {
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

/// Where a [`FrameReader`] delivers what it reads.
#[derive(Debug, Clone)]
pub struct FrameSink {
    pub(crate) conn: ConnId,
    pub(crate) tx: mpsc::Sender<ConnEvent>,
}

impl FrameSink {
    /// Hands frames to the core; waits while the core is busy (backpressure).
    /// `Err` when the node is gone: stop reading.
    pub async fn deliver(&self, frames: Vec<Vec<u8>>) -> Result<(), ()> {
        self.tx
            .send(ConnEvent::Frames {
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
///
/// A transport may dial without listening (its `listen_addrs` is then
/// empty): a node can reach every scheme it was built with, whatever it
/// advertises.
pub trait Transport: Send + Sync + 'static {
    /// The address scheme it serves (`"quic"`, `"tcp"`, `"mem"`).
    fn scheme(&self) -> &'static str;
    /// Where it listens (empty for a dial-only transport).
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
