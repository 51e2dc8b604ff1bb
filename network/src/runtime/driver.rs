//! The driver: one task that owns the core, feeds it what the transports
//! and the application deliver, and executes its outputs.
//!
//! # Flow control
//!
//! Frames of the application and frames this node forwards are *data*:
//! each connection gives its peer a window of credit
//! ([`wire::INITIAL_CREDIT`] bytes, see [link frames](crate::wire#link-frames))
//! and a data frame is written only while the window is open. A data frame
//! that cannot go yet waits at this node in its next hop's queue, holding
//! the credit of the connection it arrived on; that credit goes back to the
//! previous hop (a grant) only when the frame leaves: handed to the next
//! hop's writer, taken by the application, or dropped. So a relay whose
//! next hop is slow stops granting, its upstream's window closes, and the
//! sender's `NodeHandle::send` waits: the whole path runs at its
//! bottleneck's pace and nothing is dropped for want of room. Waiting
//! frames are served round-robin by the connection they arrived on (the
//! application counting as one), so one heavy flow through a relay cannot
//! starve another. Memory per connection is bounded by the windows (and,
//! for forwarded frames whose previous hop did not flow-control them, by
//! [`RuntimeConfig::send_queue`] per origin). A frame that waits longer
//! than [`RuntimeConfig::flow_stall_timeout`] (a cycle of relays each
//! waiting on the next can do that) is dropped and reported, its credit
//! returned: delivered or an explicit error, never a hang. An application
//! that stops reading its events stops the senders feeding it (that is the
//! point), including frames that share those connections to pass through.
//!
//! Frames behaviours send for themselves travel on the connection's
//! *control* lane, which the writer serves first, so routing sync and pings
//! are never queued behind bulk data; that lane holds at most
//! [`RuntimeConfig::send_queue`] frames, past which a frame is dropped and
//! reported. Events for the application that carry a data frame's credit
//! wait (without limit but the windows') when the application reads
//! slowly; other events past [`RuntimeConfig::app_event_queue`] waiting are
//! dropped and counted.

use super::config::RuntimeConfig;
use super::handle::{Command, ConnStatus, NodeError, NodeEvent, NodeState, NodeStatus, RpcReply};
use super::pool::FramePool;
use super::transport::{
    ConnEvent, Connection, Credit, DialError, FrameSink, Lanes, Outbound, Transport,
};
use crate::wire::{self, LinkFrame};
use crate::{Address, ConnId, Instant, Network, NodeId, Output, RpcId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most application commands applied per wake-up of the driver.
const COMMAND_BURST: usize = 256;
/// Most batches of frames from connections handled per wake-up.
const EVENT_BURST: usize = 4;

#[allow(clippy::disallowed_methods)] // the runtime is where real time enters
pub(crate) fn clock() -> std::time::Instant {
    std::time::Instant::now()
}

struct ConnIo {
    lanes: Lanes,
    flow: Flow,
    node: NodeId,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    rtt: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
    /// The application heard `Connected` for it (so it will hear
    /// `Disconnected`).
    announced: bool,
}

/// Credit a data frame holds on the connection it arrived on, returned
/// when the frame leaves this node.
#[derive(Clone, Copy, Debug)]
struct Charge {
    conn: ConnId,
    bytes: u32,
}

/// A data frame waiting for its connection's window to open.
struct Waiting {
    bytes: Vec<u8>,
    credit: Option<Credit>,
    charge: Option<Charge>,
    since: Instant,
}

/// Where waiting data frames came from: the connection they arrived on,
/// or the application (`None`). Served round-robin.
type Origin = Option<ConnId>;

/// One connection's flow control.
struct Flow {
    /// Bytes of data frames this node may still send (it sends while > 0).
    credit: i64,
    /// Data frames waiting for credit, by origin, and the origins' turn.
    waiting: HashMap<Origin, VecDeque<Waiting>>,
    turns: VecDeque<Origin>,
    /// Credited bytes received on it and not yet returned.
    held: u64,
    /// Returned bytes not yet granted back to the peer.
    returned: u64,
    /// Headers of the credited frames sent on it that the peer has not
    /// confirmed receiving, oldest first: reported dropped if it closes.
    unconfirmed: VecDeque<[u8; wire::HEADER_LEN]>,
    /// Credited frames sent on it, of which the first `confirmed` are
    /// confirmed.
    sent: u64,
    confirmed: u64,
    /// Credited frames received on it, of which the first `acked` are
    /// confirmed to the peer.
    received: u64,
    acked: u64,
}

impl Flow {
    fn new() -> Self {
        Flow {
            credit: i64::from(wire::INITIAL_CREDIT),
            waiting: HashMap::new(),
            turns: VecDeque::new(),
            held: 0,
            returned: 0,
            unconfirmed: VecDeque::new(),
            sent: 0,
            confirmed: 0,
            received: 0,
            acked: 0,
        }
    }

    /// Marks `bytes` credited and keeps its header until the peer confirms
    /// it.
    fn credited(&mut self, bytes: &mut [u8]) {
        self.credit -= bytes.len() as i64;
        wire::set_credited(bytes, true);
        let mut h = [0u8; wire::HEADER_LEN];
        if let Some(src) = bytes.get(..wire::HEADER_LEN) {
            h.copy_from_slice(src);
        }
        self.unconfirmed.push_back(h);
        self.sent += 1;
    }

    /// The peer is not confirming what it receives.
    fn unconfirming(&self) -> bool {
        self.unconfirmed.len() > MAX_UNCONFIRMED
    }

    /// The peer confirmed receiving its first `n` credited frames.
    fn confirm(&mut self, n: u64) {
        let n = n.min(self.sent);
        while self.confirmed < n {
            self.unconfirmed.pop_front();
            self.confirmed += 1;
        }
    }

    fn push(&mut self, origin: Origin, w: Waiting) {
        let q = self.waiting.entry(origin).or_default();
        if q.is_empty() {
            self.turns.push_back(origin);
        }
        q.push_back(w);
    }

    /// The next waiting frame, round-robin over origins. An origin's
    /// queue stays (empty) for its next frame, so a window that keeps
    /// closing and opening does not allocate per frame.
    fn pop(&mut self) -> Option<Waiting> {
        let origin = self.turns.pop_front()?;
        let q = self.waiting.get_mut(&origin)?;
        let w = q.pop_front();
        if !q.is_empty() {
            self.turns.push_back(origin);
        }
        w
    }

    /// Forgets `origin`'s queue if nothing of it waits.
    fn forget(&mut self, origin: Origin) {
        if self.waiting.get(&origin).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(&origin);
        }
    }

    fn is_waiting(&self) -> bool {
        !self.turns.is_empty()
    }

    fn waiting_from(&self, origin: Origin) -> usize {
        self.waiting.get(&origin).map_or(0, VecDeque::len)
    }

    /// Takes out the frames that have waited since before `cutoff`.
    fn expire(&mut self, cutoff: Instant, out: &mut Vec<Waiting>) {
        self.waiting.retain(|_, q| {
            while q.front().is_some_and(|w| w.since < cutoff) {
                out.extend(q.pop_front());
            }
            !q.is_empty()
        });
        let waiting = &self.waiting;
        self.turns.retain(|o| waiting.contains_key(o));
    }
}

/// An event for the application, with the credit it holds if it carries a
/// data frame.
struct AppEvent {
    ev: NodeEvent,
    charge: Option<Charge>,
}

pub(crate) struct Driver {
    pub(crate) net: Network,
    pub(crate) transports: Vec<Arc<dyn Transport>>,
    pub(crate) config: RuntimeConfig,
    pub(crate) epoch: std::time::Instant,
    conns: HashMap<ConnId, ConnIo>,
    rpcs: HashMap<RpcId, RpcReply>,
    ev_tx: mpsc::Sender<ConnEvent>,
    app_tx: mpsc::Sender<NodeEvent>,
    app_dropped: u64,
    /// Events waiting for room in the application's queue.
    app_waiting: VecDeque<AppEvent>,
    /// Of those, how many hold no credit (bounded by `app_event_queue`).
    app_waiting_free: usize,
    listen_addrs: Vec<Address>,
    /// The credit of the data frame being handled, until something takes it.
    charge: Option<Charge>,
    /// Credit returned while handling, granted back after.
    returns: Vec<Charge>,
    /// The connection whose frame is being handled.
    handling: Option<ConnId>,
    /// When to look for data frames stalled waiting for credit.
    stall_check: Option<Instant>,
    /// Connections owing their peer a receipt confirmation, due at
    /// `ack_at`.
    acks: Vec<ConnId>,
    ack_at: Option<Instant>,
    /// Connections this node closed, waiting for the last confirmations.
    closing: HashMap<ConnId, Closing>,
    /// The clock as read when this wake-up began (see [`now`](Self::now)).
    tick: Option<Instant>,
    /// When it last woke, and the time it spent working, not waiting.
    woke: Instant,
    busy_us: u64,
    state: Arc<NodeState>,
    /// The node's buffer pool: read buffers go back to it once handled,
    /// and each connection's lanes and reader take theirs from it.
    pool: Arc<FramePool>,
}

/// A connection this node closed, its writer still flushing: the frames
/// it sent that the peer has not confirmed yet.
struct Closing {
    unconfirmed: VecDeque<[u8; wire::HEADER_LEN]>,
    sent: u64,
    confirmed: u64,
    reader: JoinHandle<()>,
    until: Instant,
}

/// How long a connection this node closed waits for its peer's last
/// confirmations.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Past this many credited frames unconfirmed, the peer is not confirming
/// (a peer that does could not have more in flight: every credited frame
/// is at least a header, and the window bounds the bytes): it is closed.
const MAX_UNCONFIRMED: usize = wire::INITIAL_CREDIT as usize / wire::HEADER_LEN + 1024;

/// A receiver confirms credited frames after this many…
const ACK_EVERY: u64 = 256;
/// … or this long after the first unconfirmed one.
const ACK_DELAY: Duration = Duration::from_millis(10);

impl Driver {
    pub(crate) fn new(
        net: Network,
        transports: Vec<Arc<dyn Transport>>,
        config: RuntimeConfig,
        ev_tx: mpsc::Sender<ConnEvent>,
        app_tx: mpsc::Sender<NodeEvent>,
        listen_addrs: Vec<Address>,
        state: Arc<NodeState>,
    ) -> Self {
        // The pool the node's handles and the core share (see `Node::spawn`).
        let pool = net.buffers.clone().unwrap_or_default();
        Driver {
            net,
            transports,
            config,
            epoch: clock(),
            conns: HashMap::new(),
            rpcs: HashMap::new(),
            ev_tx,
            app_tx,
            app_dropped: 0,
            app_waiting: VecDeque::new(),
            app_waiting_free: 0,
            listen_addrs,
            charge: None,
            returns: Vec::new(),
            handling: None,
            stall_check: None,
            acks: Vec::new(),
            ack_at: None,
            closing: HashMap::new(),
            tick: None,
            woke: Instant::ZERO,
            busy_us: 0,
            state,
            pool,
        }
    }

    /// Woken: reads the clock for what it handles now.
    fn wake(&mut self) {
        self.tick = None;
        let now = self.now();
        self.tick = Some(now);
        self.woke = now;
    }

    /// Now: the clock read at the start of this wake-up's batch, if one is
    /// being handled, else the clock.
    fn now(&self) -> Instant {
        self.tick
            .unwrap_or_else(|| Instant::from_micros(self.epoch.elapsed().as_micros() as u64))
    }

    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_micros(t.as_micros()))
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<ConnEvent>,
        mut incoming: mpsc::Receiver<Connection>,
    ) {
        let now = self.now();
        self.net.handle_timeout(now);
        self.drain();
        let shutdown_reply = 'run: loop {
            // A few readings of the clock per wake-up serve everything it
            // handles (batches of frames, a burst of commands).
            self.tick = None;
            self.tick = Some(self.now());
            // Timers first: a stream of frames must not starve them.
            if self.net.poll_timeout().is_some_and(|t| t <= self.now()) {
                let now = self.now();
                self.net.handle_timeout(now);
                self.drain();
            }
            if self.next_chore().is_some_and(|t| t <= self.now()) {
                self.chores();
            }
            let wake = self.net.poll_timeout().map(|t| self.deadline(t));
            // An owned sender, so the wait borrows nothing from `self`.
            let app_tx = (!self.app_waiting.is_empty()).then(|| self.app_tx.clone());
            let room = async move {
                match app_tx {
                    Some(tx) => tx.reserve_owned().await.ok(),
                    None => std::future::pending().await,
                }
            };
            let stall = self.stall_check.map(|t| self.deadline(t));
            let stall = async move {
                match stall {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let ack = self.next_chore().map(|t| self.deadline(t));
            let ack = async move {
                match ack {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let timer = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Busy until here since it woke; the wait may be long, so what
            // it wakes for reads the clock anew.
            self.tick = None;
            let idle = self.now();
            self.busy_us += idle.as_micros().saturating_sub(self.woke.as_micros());
            tokio::select! {
                biased;
                ev = events.recv() => {
                    self.wake();
                    // The driver holds a sender itself, so this never ends.
                    // Take what else is queued too (bounded, for fairness).
                    if let Some(ev) = ev { self.on_event(ev); }
                    for _ in 1..EVENT_BURST {
                        let Ok(ev) = events.try_recv() else { break };
                        self.on_event(ev);
                    }
                }
                conn = incoming.recv() => {
                    self.wake();
                    if let Some(conn) = conn { self.on_incoming(conn); }
                }
                permit = room => {
                    self.wake();
                    self.app_room(permit);
                }
                cmd = commands.recv() => {
                    self.wake();
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
                        if taken == COMMAND_BURST {
                            break;
                        }
                        match commands.try_recv() {
                            Ok(cmd) => next = Some(cmd),
                            Err(_) => break,
                        }
                    }
                }
                () = timer => {
                    self.wake();
                    let now = self.now();
                    self.net.handle_timeout(now);
                    self.drain();
                }
                () = stall => {
                    self.wake();
                    self.expire_stalled();
                }
                () = ack => {
                    self.wake();
                    self.chores();
                }
            }
        };
        let state = self.state.clone();
        self.shutdown().await;
        state
            .clean
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// The application's queue has room: the waiting events go on, in
    /// order, as far as it takes them.
    fn app_room(&mut self, permit: Option<mpsc::OwnedPermit<NodeEvent>>) {
        let Some(permit) = permit else {
            // The application dropped its events: nothing will take them.
            while let Some(e) = self.app_waiting.pop_front() {
                self.app_left(e.charge);
            }
            self.grant_returns();
            return;
        };
        if let Some(e) = self.app_waiting.pop_front() {
            permit.send(e.ev);
            self.app_left(e.charge);
        }
        while let Some(e) = self.app_waiting.pop_front() {
            match self.app_tx.try_send(e.ev) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => self.app_left(e.charge),
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.app_waiting.push_front(AppEvent {
                        ev,
                        charge: e.charge,
                    });
                    break;
                }
            }
        }
        self.grant_returns();
    }

    /// An event left the waiting queue: its credit goes back, or it no
    /// longer counts against the cap on events without credit.
    fn app_left(&mut self, charge: Option<Charge>) {
        match charge {
            Some(c) => self.returns.push(c),
            None => self.app_waiting_free -= 1,
        }
    }

    fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Frames { conn, frames } if self.closing.contains_key(&conn) => {
                // Closed by this node: only the peer's confirmations count.
                frames.for_each(|f| {
                    let Ok(LinkFrame::Received(n)) = LinkFrame::decode(f) else {
                        return true;
                    };
                    let Some(c) = self.closing.get_mut(&conn) else {
                        return false;
                    };
                    let n = n.min(c.sent);
                    while c.confirmed < n {
                        c.unconfirmed.pop_front();
                        c.confirmed += 1;
                    }
                    if c.unconfirmed.is_empty() {
                        if let Some(c) = self.closing.remove(&conn) {
                            c.reader.abort();
                        }
                        return false;
                    }
                    true
                });
                frames.recycle(&self.pool);
            }
            ConnEvent::Frames { conn, frames } => {
                frames.for_each(|f| {
                    if f.first() == Some(&wire::LINK_VERSION) {
                        self.on_link_frame(conn, f);
                        return true;
                    }
                    if wire::is_credited(f) && !self.take_credit(conn, f.len()) {
                        return false;
                    }
                    let now = self.now();
                    self.handling = Some(conn);
                    self.net.handle_frame(now, conn, f);
                    self.drain();
                    self.handling = None;
                    // Handled and gone (consumed by a behaviour, delivered
                    // at once, dropped): its credit goes back.
                    self.returns.extend(self.charge.take());
                    true
                });
                frames.recycle(&self.pool);
                self.grant_returns();
                self.confirm_received(conn);
            }
            ConnEvent::Closed { conn, why } => {
                if let Some(mut c) = self.closing.remove(&conn) {
                    // A connection this node closed has ended (its reader,
                    // or its writer failing): what its peer did not
                    // confirm may be lost.
                    c.reader.abort();
                    self.report_unconfirmed(conn, &mut c.unconfirmed);
                    self.drain();
                    return;
                }
                if let Some(mut io) = self.remove_conn(conn) {
                    self.report_unconfirmed(conn, &mut io.flow.unconfirmed);
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
                    if io.announced {
                        self.app_event(NodeEvent::Disconnected {
                            conn,
                            node: io.node,
                        });
                    }
                    let now = self.now();
                    self.net.handle_disconnected(now, conn);
                    self.drain();
                }
            }
            ConnEvent::Dialed { conn, result } => {
                let now = self.now();
                match result {
                    Ok(c) => {
                        let node = c.node;
                        self.register(conn, c);
                        self.net.handle_outgoing_connected(now, conn, node);
                        if self.net.connections().any(|i| i.conn == conn) {
                            if let Some(io) = self.conns.get_mut(&conn) {
                                io.announced = true;
                            }
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
                if let Some(io) = self.conns.get_mut(&conn) {
                    io.announced = true;
                }
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
                let (lanes, queue) = Lanes::new(self.pool.clone());
                lanes.data(Outbound::Close(reason.to_string()));
                drop(lanes);
                tokio::spawn(async move {
                    let _ = c.writer.run(queue).await;
                });
            }
        }
    }

    fn register(&mut self, conn: ConnId, c: Connection) {
        let (lanes, queue) = Lanes::new(self.pool.clone());
        let sink = FrameSink {
            conn,
            tx: self.ev_tx.clone(),
            pool: self.pool.clone(),
        };
        let closed = self.ev_tx.clone();
        let reader = tokio::spawn(async move {
            let why = match c.reader.run(sink).await {
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            };
            let _ = closed.send(ConnEvent::Closed { conn, why }).await;
        });
        let closed = self.ev_tx.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = c.writer.run(queue).await {
                let _ = closed
                    .send(ConnEvent::Closed {
                        conn,
                        why: Some(format!("write failed: {e}")),
                    })
                    .await;
            }
        });
        self.conns.insert(
            conn,
            ConnIo {
                lanes,
                flow: Flow::new(),
                node: c.node,
                reader,
                writer,
                rtt: c.rtt,
                announced: false,
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
                    if self.rpcs.len() >= 1024 {
                        // Callers that gave up (timed out) hold nothing.
                        self.rpcs.retain(|_, r| !r.is_closed());
                    }
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
            Command::Bootstrap {
                node,
                addr,
                persistent,
            } => {
                if persistent {
                    self.net.add_persistent_peer(now, node, addr);
                } else {
                    self.net.add_bootstrap(now, node, addr);
                }
                self.drain();
            }
            Command::Close(conn) => {
                self.net.close(now, conn);
                self.drain();
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            // The loop takes shutdowns before they get here.
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
            bootstrap: self.net.bootstrap_peers(),
            routes: self.net.router().routes(),
            failed_services: self.net.failed_services(),
            stats: self.net.stats(),
            app_events_dropped: self.app_dropped,
            driver_busy: Duration::from_micros(self.busy_us),
        }
    }

    fn app_event(&mut self, ev: NodeEvent) {
        self.app_event_holding(ev, None);
    }

    /// Hands `ev` to the application. If its queue is full the event
    /// waits: one holding a data frame's credit always (that credit is what
    /// slows the senders), others while fewer than the event queue's
    /// capacity wait, past which they are dropped and counted.
    fn app_event_holding(&mut self, ev: NodeEvent, charge: Option<Charge>) {
        let ev = if self.app_waiting.is_empty() {
            match self.app_tx.try_send(ev) {
                Ok(()) => {
                    self.returns.extend(charge);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.returns.extend(charge);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(ev)) => ev,
            }
        } else {
            ev
        };
        if charge.is_none() && self.app_waiting_free >= self.config.app_event_queue {
            self.app_dropped += 1;
            if self.app_dropped.is_power_of_two() {
                log::warn!(
                    "node {}: the application is not reading events: {} dropped so far",
                    self.net.local_node(),
                    self.app_dropped
                );
            }
            return;
        }
        self.app_waiting_free += usize::from(charge.is_none());
        self.app_waiting.push_back(AppEvent { ev, charge });
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
                    if let Some(io) = self.remove_conn(conn) {
                        log::debug!("node {}: closing {conn}: {reason}", self.net.local_node());
                        io.lanes.data(Outbound::Close(reason.to_string()));
                        if io.announced {
                            self.app_event(NodeEvent::Disconnected {
                                conn,
                                node: io.node,
                            });
                        }
                        self.closing(conn, io);
                    }
                }
                Output::Event(ev) => {
                    let charge = self.charge.take();
                    self.app_event_holding(NodeEvent::Behaviour(ev), charge);
                }
                Output::RpcAnswer { id, result } => {
                    if let Some(reply) = self.rpcs.remove(&id) {
                        let _ = reply.send(result.map_err(NodeError::from));
                    }
                }
                Output::Dropped(r) => self.app_event(NodeEvent::Dropped(r)),
                Output::RouteChanged(c) => self.app_event(NodeEvent::RouteChanged(c)),
                Output::DialFailed(f) => self.app_event(NodeEvent::DialFailed(f)),
                Output::BehaviorFailed(f) => self.app_event(NodeEvent::BehaviorFailed(f)),
            }
        }
        self.grant_returns();
    }

    /// Queues a frame the core output on `conn`: application sends and
    /// forwarded frames on the data lane under flow control, behaviours'
    /// own frames on the control lane.
    fn send(
        &mut self,
        conn: ConnId,
        mut bytes: Vec<u8>,
        unreliable: bool,
        from_app: bool,
        credit: Option<Credit>,
    ) {
        let local = self.net.local_node();
        let send_queue = self.config.send_queue;
        let Some(io) = self.conns.get_mut(&conn) else {
            return;
        };
        let transit = wire::source_of(&bytes).is_some_and(|s| s != local);
        let data = from_app || transit;
        if unreliable || !data {
            // Loss is acceptable (unreliable), or a behaviour's own frame:
            // a bounded lane; past it, dropped and reported.
            wire::set_credited(&mut bytes, false);
            let (lane, depth) = if data {
                (&io.lanes.data, &io.lanes.depth.data)
            } else {
                (&io.lanes.control, &io.lanes.depth.control)
            };
            if depth.load(Relaxed) >= send_queue {
                let now = self.now();
                self.net.handle_send_failed(now, conn, &bytes);
                // A forwarded frame dropped here has left this node.
                self.returns.extend(self.charge.take());
                return;
            }
            depth.fetch_add(1, Relaxed);
            let _ = lane.send(Outbound::Frame {
                bytes,
                unreliable,
                credit,
            });
            return;
        }
        let charge = if transit { self.charge.take() } else { None };
        let origin = if transit { self.handling } else { None };
        // A forwarded frame that holds no credit (its previous hop did not
        // flow-control it) is bounded like a behaviour's frame.
        if transit && charge.is_none() && io.flow.waiting_from(origin) >= send_queue {
            let now = self.now();
            self.net.handle_send_failed(now, conn, &bytes);
            return;
        }
        // The common case: nothing waits and the window is open.
        if !io.flow.is_waiting() && io.flow.credit > 0 {
            io.flow.credited(&mut bytes);
            io.lanes.data(Outbound::Frame {
                bytes,
                unreliable: false,
                credit,
            });
            self.returns.extend(charge);
            return;
        }
        let since = self.now();
        let Some(io) = self.conns.get_mut(&conn) else {
            return;
        };
        io.flow.push(
            origin,
            Waiting {
                bytes,
                credit,
                charge,
                since,
            },
        );
        self.flush(conn);
        if self.conns.get(&conn).is_some_and(|io| io.flow.is_waiting())
            && self.stall_check.is_none()
        {
            self.stall_check = Some(since + self.config.flow_stall_timeout);
        }
    }

    /// Writes waiting data frames of `conn` while its window is open.
    fn flush(&mut self, conn: ConnId) {
        let Some(io) = self.conns.get_mut(&conn) else {
            return;
        };
        while io.flow.credit > 0 {
            let Some(mut w) = io.flow.pop() else {
                break;
            };
            io.flow.credited(&mut w.bytes);
            io.lanes.data(Outbound::Frame {
                bytes: w.bytes,
                unreliable: false,
                credit: w.credit,
            });
            self.returns.extend(w.charge);
        }
    }

    /// Drops the data frames that waited for credit longer than
    /// [`RuntimeConfig::flow_stall_timeout`], reported as a full queue,
    /// returning their credit: a cycle of relays each waiting on the next
    /// (a routing loop, or saturated flows in a ring) cannot hold its
    /// frames for ever.
    fn expire_stalled(&mut self) {
        let now = self.now();
        let timeout = self.config.flow_stall_timeout;
        let cutoff =
            Instant::from_micros(now.as_micros().saturating_sub(timeout.as_micros() as u64));
        let mut expired = Vec::new();
        let mut any = false;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            let Some(io) = self.conns.get_mut(&conn) else {
                continue;
            };
            io.flow.expire(cutoff, &mut expired);
            any |= io.flow.is_waiting();
            if !expired.is_empty() {
                log::warn!(
                    "node {}: {} frame(s) waited over {timeout:?} for {conn}'s flow-control window; dropped",
                    self.net.local_node(),
                    expired.len()
                );
                for w in expired.drain(..) {
                    self.net.handle_send_failed(now, conn, &w.bytes);
                    self.returns.extend(w.charge);
                }
            }
        }
        self.drain();
        // Look again after another period while anything waits.
        self.stall_check = any.then(|| now + timeout);
    }

    /// Counts a credited frame of `len` bytes against `conn`'s window;
    /// `false` (and the connection closed) if the peer overran it.
    fn take_credit(&mut self, conn: ConnId, len: usize) -> bool {
        let Some(io) = self.conns.get_mut(&conn) else {
            return false;
        };
        io.flow.held += len as u64;
        io.flow.received += 1;
        // The peer sends while its credit is above zero: it may overshoot
        // the window by one frame, no more.
        let limit = u64::from(wire::INITIAL_CREDIT)
            + (self.net.config().max_payload + wire::HEADER_LEN) as u64;
        if io.flow.held > limit {
            log::warn!(
                "node {}: {conn} to {} sent {} bytes past its flow-control window; closing it",
                self.net.local_node(),
                io.node,
                io.flow.held - u64::from(wire::INITIAL_CREDIT)
            );
            let now = self.now();
            self.net.close(now, conn);
            self.drain();
            return false;
        }
        self.charge = Some(Charge {
            conn,
            bytes: len as u32,
        });
        true
    }

    fn on_link_frame(&mut self, conn: ConnId, f: &[u8]) {
        match LinkFrame::decode(f) {
            Ok(LinkFrame::Credit(n)) => {
                if self
                    .conns
                    .get(&conn)
                    .is_some_and(|io| io.flow.unconfirming())
                {
                    log::warn!(
                        "node {}: {conn} grants credit but confirms nothing it receives; closing it",
                        self.net.local_node()
                    );
                    let now = self.now();
                    self.net.close(now, conn);
                    self.drain();
                    return;
                }
                if let Some(io) = self.conns.get_mut(&conn) {
                    io.flow.credit = io.flow.credit.saturating_add(i64::from(n));
                    // A window that grows past all bounds is a broken peer;
                    // it can only hurt itself, as its frames wait here.
                    io.flow.credit = io.flow.credit.min(i64::from(u32::MAX));
                }
                self.flush(conn);
                self.grant_returns();
            }
            Ok(LinkFrame::Received(n)) => {
                if let Some(io) = self.conns.get_mut(&conn) {
                    io.flow.confirm(n);
                }
            }
            Err(e) => {
                log::warn!(
                    "node {}: {conn} sent a malformed link frame ({e}); closing it",
                    self.net.local_node()
                );
                let now = self.now();
                self.net.close(now, conn);
                self.drain();
            }
        }
    }

    /// Confirms to `conn`'s peer the credited frames received: at once
    /// after [`ACK_EVERY`] unconfirmed, else within [`ACK_DELAY`].
    fn confirm_received(&mut self, conn: ConnId) {
        let Some(io) = self.conns.get_mut(&conn) else {
            return;
        };
        let unacked = io.flow.received - io.flow.acked;
        if unacked >= ACK_EVERY {
            io.flow.acked = io.flow.received;
            io.lanes.control(Outbound::Frame {
                bytes: LinkFrame::Received(io.flow.received).encode(),
                unreliable: false,
                credit: None,
            });
        } else if unacked > 0 && !self.acks.contains(&conn) {
            self.acks.push(conn);
            if self.ack_at.is_none() {
                self.ack_at = Some(self.now() + ACK_DELAY);
            }
        }
    }

    /// The delayed confirmations are due.
    fn send_acks(&mut self) {
        self.ack_at = None;
        for conn in std::mem::take(&mut self.acks) {
            let Some(io) = self.conns.get_mut(&conn) else {
                continue;
            };
            if io.flow.received > io.flow.acked {
                io.flow.acked = io.flow.received;
                io.lanes.control(Outbound::Frame {
                    bytes: LinkFrame::Received(io.flow.received).encode(),
                    unreliable: false,
                    credit: None,
                });
            }
        }
    }

    /// Gives back the credit of frames that left this node: a grant to
    /// each previous hop once a quarter of the window has come back.
    fn grant_returns(&mut self) {
        if self.returns.is_empty() {
            return;
        }
        // Keeps the vector's capacity: this runs once per input.
        let mut returns = std::mem::take(&mut self.returns);
        for c in returns.drain(..) {
            let Some(io) = self.conns.get_mut(&c.conn) else {
                continue;
            };
            let n = u64::from(c.bytes).min(io.flow.held);
            io.flow.held -= n;
            io.flow.returned += n;
            // A quarter of the window at a time: the peer's credit runs
            // out only with a whole window outstanding, so a quarter of it
            // always comes back to be granted.
            if io.flow.returned >= u64::from(wire::INITIAL_CREDIT / 4) {
                let grant = io.flow.returned.min(u64::from(u32::MAX)) as u32;
                io.flow.returned -= u64::from(grant);
                let frame = LinkFrame::Credit(grant).encode();
                io.lanes.control(Outbound::Frame {
                    bytes: frame,
                    unreliable: false,
                    credit: None,
                });
            }
        }
        self.returns = returns;
    }

    /// Forgets `conn`: its waiting data frames are reported dropped
    /// (connection closed) and their credit goes back upstream.
    fn remove_conn(&mut self, conn: ConnId) -> Option<ConnIo> {
        let mut io = self.conns.remove(&conn)?;
        for other in self.conns.values_mut() {
            other.flow.forget(Some(conn));
        }
        self.acks.retain(|c| *c != conn);
        if io.flow.is_waiting() {
            let now = self.now();
            let mut frames = Vec::new();
            while let Some(w) = io.flow.pop() {
                self.returns.extend(w.charge);
                frames.push(w.bytes);
            }
            self.net
                .handle_sends_aborted(now, conn, frames.iter().map(|f| &f[..]));
            // The drop reports wait in the core's outputs for the caller's
            // drain (a nested one here would lose what the outer knows).
            self.grant_returns();
        }
        Some(io)
    }

    /// Reports the frames sent on `conn` that its peer never confirmed:
    /// each may have arrived, or died with the connection; its source
    /// hears of it either way.
    fn report_unconfirmed(
        &mut self,
        conn: ConnId,
        unconfirmed: &mut VecDeque<[u8; wire::HEADER_LEN]>,
    ) {
        if unconfirmed.is_empty() {
            return;
        }
        let now = self.now();
        log::debug!(
            "node {}: {conn} closed with {} frame(s) unconfirmed; reported dropped",
            self.net.local_node(),
            unconfirmed.len()
        );
        self.net
            .handle_sends_aborted(now, conn, unconfirmed.iter().map(|h| &h[..]));
        unconfirmed.clear();
    }

    /// A connection this node closed: its writer still sends what was
    /// queued before the close, and its reader stays up for the peer's
    /// confirmations of it, until the connection ends or [`CLOSE_GRACE`].
    fn closing(&mut self, conn: ConnId, io: ConnIo) {
        let ConnIo { flow, reader, .. } = io;
        if flow.unconfirmed.is_empty() {
            reader.abort();
            return;
        }
        let until = self.now() + CLOSE_GRACE;
        self.closing.insert(
            conn,
            Closing {
                unconfirmed: flow.unconfirmed,
                sent: flow.sent,
                confirmed: flow.confirmed,
                reader,
                until,
            },
        );
    }

    /// Closed connections whose grace ended: what is still unconfirmed is
    /// reported.
    fn expire_closing(&mut self) {
        let now = self.now();
        let due: Vec<ConnId> = self
            .closing
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(k, _)| *k)
            .collect();
        for conn in due {
            if let Some(mut c) = self.closing.remove(&conn) {
                c.reader.abort();
                self.report_unconfirmed(conn, &mut c.unconfirmed);
            }
        }
        self.drain();
    }

    /// The next housekeeping deadline: confirmations due, or a closed
    /// connection's grace.
    fn next_chore(&self) -> Option<Instant> {
        let closing = self.closing.values().map(|c| c.until).min();
        match (self.ack_at, closing) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    fn chores(&mut self) {
        let now = self.now();
        if self.ack_at.is_some_and(|t| t <= now) {
            self.send_acks();
        }
        if self.closing.values().any(|c| c.until <= now) {
            self.expire_closing();
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
            let _ = tx.send(ConnEvent::Dialed { conn, result }).await;
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
                io.lanes.data(Outbound::Close("shutdown".into()));
                io.reader.abort();
                io.writer
            })
            .collect();
        for (_, c) in self.closing.drain() {
            c.reader.abort();
        }
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
