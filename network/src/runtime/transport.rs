//! The contract between the runtime and a transport: a [`Transport`] dials
//! and accepts, and hands over only authenticated [`Connection`]s, each a
//! [`FrameWriter`] and a [`FrameReader`] that the runtime runs as tasks.

use super::pool::{FramePool, Recycler};
use crate::{Address, ConnId, NodeId, OutgoingConnectionError};
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
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
/// node's budget when dropped. A writer drops it once the frame it travels
/// with is written: after flushing the batch the frame was in, or sooner
/// within a long batch (see [`absorb`](Self::absorb)).
#[derive(Debug)]
pub struct Credit(pub(crate) tokio::sync::OwnedSemaphorePermit);

impl Credit {
    /// Holds `other`'s credit with this one, so both return together: a
    /// writer returns a whole batch's credit at once, after its flush,
    /// instead of once per frame. Credit of another node's budget is
    /// returned at once instead (never merged across budgets).
    pub fn absorb(&mut self, other: Credit) {
        if Arc::ptr_eq(self.0.semaphore(), other.0.semaphore()) {
            self.0.merge(other.0);
        }
    }

    /// The bytes of budget it holds.
    pub fn bytes(&self) -> usize {
        self.0.num_permits()
    }

    /// Holds `credit` in `held` (see [`absorb`](Self::absorb)).
    pub fn hold(held: &mut Option<Credit>, credit: Option<Credit>) {
        match (held.as_mut(), credit) {
            (Some(h), Some(c)) => h.absorb(c),
            (None, c) => *held = c,
            (Some(_), None) => {}
        }
    }
}

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
    pub(crate) recycler: Recycler,
}

/// One lane of an [`OutboundQueue`], for a transport that writes the two
/// lanes on streams of their own ([`OutboundQueue::split`]).
#[derive(Debug)]
pub struct Lane {
    rx: mpsc::UnboundedReceiver<Outbound>,
    depth: Arc<LaneDepth>,
    control: bool,
    recycler: Recycler,
}

impl Lane {
    /// Whether this is the control lane.
    pub fn is_control(&self) -> bool {
        self.control
    }

    /// Hands back a written frame's buffer (see
    /// [`OutboundQueue::recycle`]).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.recycler.recycle(buf);
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
    pub(crate) fn new(pool: Arc<FramePool>) -> (Lanes, OutboundQueue) {
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
                recycler: Recycler::new(pool),
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
                recycler: Recycler::new(self.recycler.pool()),
            },
            Lane {
                rx: self.data,
                depth: self.depth,
                control: false,
                recycler: self.recycler,
            },
        )
    }

    /// Hands back a written frame's buffer, for the node's next sends to
    /// reuse (what the node's bounded pool has no room for is freed).
    /// Optional: a writer that drops its frames loses only the reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.recycler.recycle(buf);
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

/// Frames read from a connection, lying in one buffer: a reader hands over
/// the very buffer it read into, with where each frame lies in it, instead
/// of one allocation per frame.
#[derive(Debug, Default)]
pub struct FrameBatch {
    buf: Vec<u8>,
    /// Where each frame lies in `buf`, in order.
    spans: Vec<Range<usize>>,
}

impl FrameBatch {
    /// The frames lying in `buf` at `spans` (a read buffer, with the
    /// length prefixes between them): `None` if a span is not inside it.
    pub fn from_parts(buf: Vec<u8>, spans: Vec<Range<usize>>) -> Option<Self> {
        spans
            .iter()
            .all(|r| r.start <= r.end && r.end <= buf.len())
            .then_some(FrameBatch { buf, spans })
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of all its frames.
    pub fn bytes(&self) -> usize {
        self.spans.iter().map(|r| r.len()).sum()
    }

    /// The frames, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        // The spans were checked against the buffer, which does not change.
        self.spans.iter().filter_map(|r| self.buf.get(r.clone()))
    }
}

/// Frames as a reader delivered them.
#[derive(Debug)]
pub(crate) enum Frames {
    Each(Vec<Vec<u8>>),
    Packed(FrameBatch),
}

impl Frames {
    /// Hands the buffers back to `pool` for the next reads.
    pub(crate) fn recycle(self, pool: &FramePool) {
        match self {
            Frames::Each(v) => v.into_iter().for_each(|b| pool.give_read(b)),
            Frames::Packed(b) => pool.give_read(b.buf),
        }
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&[u8]) -> bool) {
        match self {
            Frames::Each(v) => {
                for frame in v {
                    if !f(frame) {
                        return;
                    }
                }
            }
            Frames::Packed(b) => {
                for frame in b.iter() {
                    if !f(frame) {
                        return;
                    }
                }
            }
        }
    }
}

/// What connection tasks and dials tell the runtime's loop.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    Frames {
        conn: ConnId,
        frames: Frames,
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
    pub(crate) pool: Arc<FramePool>,
}

impl FrameSink {
    /// Hands frames to the core; waits while the core is busy (backpressure).
    /// `Err` when the node is gone: stop reading.
    pub async fn deliver(&self, frames: Vec<Vec<u8>>) -> Result<(), ()> {
        self.send(Frames::Each(frames)).await
    }

    /// An empty buffer with room for `cap` bytes to read a frame into:
    /// one the node has handled and handed back, when one is free (no
    /// allocation, no fresh pages), else a new one.
    pub fn buffer(&self, cap: usize) -> Vec<u8> {
        self.pool.take_read(cap)
    }

    /// [`deliver`](Self::deliver) for frames lying in one buffer (see
    /// [`FrameBatch::from_parts`]).
    pub async fn deliver_batch(&self, frames: FrameBatch) -> Result<(), ()> {
        self.send(Frames::Packed(frames)).await
    }

    async fn send(&self, frames: Frames) -> Result<(), ()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // spans: one frame's range
    fn a_batch_yields_its_frames_in_order() {
        // Frames in place in a read buffer, prefixes between them.
        let read = b"\0\0\0\x02ab\0\0\0\0\0\0\0\x01c".to_vec();
        let b = FrameBatch::from_parts(read.clone(), vec![4..6, 10..10, 14..15]).unwrap();
        assert_eq!((b.len(), b.bytes()), (3, 3));
        assert_eq!(b.iter().collect::<Vec<_>>(), [&b"ab"[..], b"", b"c"]);
        assert!(FrameBatch::from_parts(read.clone(), vec![4..16]).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = vec![6..4];
        assert!(FrameBatch::from_parts(read, reversed).is_none());
        assert!(FrameBatch::default().is_empty());
        // Frames::for_each stops when asked.
        let mut seen = 0;
        Frames::Packed(b).for_each(|_| {
            seen += 1;
            seen < 2
        });
        assert_eq!(seen, 2);
    }
}
