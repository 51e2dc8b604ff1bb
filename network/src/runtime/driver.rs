//! The driver: one task that owns the core, feeds it what the transports
//! and the application deliver, and executes its outputs.

use super::config::RuntimeConfig;
use super::handle::{Command, ConnStatus, NodeError, NodeEvent, NodeState, NodeStatus, RpcReply};
use super::transport::{
    ConnEvent, Connection, Credit, DialError, FrameSink, Outbound, OutboundQueue, Transport,
};
use crate::{Address, ConnId, Instant, Network, NodeId, Output, RpcId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most application commands applied per wake-up of the driver.
const COMMAND_BURST: usize = 256;

#[allow(clippy::disallowed_methods)] // the runtime is where real time enters
pub(crate) fn clock() -> std::time::Instant {
    std::time::Instant::now()
}

struct ConnIo {
    tx: mpsc::Sender<Outbound>,
    node: NodeId,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    rtt: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
    /// The application heard `Connected` for it (so it will hear
    /// `Disconnected`).
    announced: bool,
}

/// An application frame waiting for room in its connection's queue.
struct Blocked {
    conn: ConnId,
    frame: Outbound,
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
    listen_addrs: Vec<Address>,
    blocked: Option<Blocked>,
    state: Arc<NodeState>,
}

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
            listen_addrs,
            blocked: None,
            state,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
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
            // Timers first: a stream of frames must not starve them.
            if self.net.poll_timeout().is_some_and(|t| t <= self.now()) {
                let now = self.now();
                self.net.handle_timeout(now);
                self.drain();
            }
            let wake = self.net.poll_timeout().map(|t| self.deadline(t));
            // An owned sender, so the wait borrows nothing from `self`.
            let blocked_tx = self
                .blocked
                .as_ref()
                .map(|b| self.conns.get(&b.conn).map(|io| io.tx.clone()));
            let room = async move {
                match blocked_tx {
                    // The connection is gone: unblock at once (no room).
                    Some(None) => false,
                    Some(Some(tx)) => tx.reserve_owned().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let timer = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
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
                () = timer => {
                    let now = self.now();
                    self.net.handle_timeout(now);
                    self.drain();
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

    fn unblock(&mut self, room: bool) {
        let Some(b) = self.blocked.take() else {
            return;
        };
        if !room {
            // The connection closed with the frame still waiting: it goes
            // with it, reported like any frame a dead connection takes.
            if let Outbound::Frame { bytes, .. } = &b.frame {
                let now = self.now();
                self.net.handle_send_aborted(now, b.conn, bytes);
                self.drain();
            }
            return;
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

    fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Frames { conn, frames } => {
                for f in &frames {
                    let now = self.now();
                    self.net.handle_frame(now, conn, f);
                    self.drain();
                }
            }
            ConnEvent::Closed { conn, why } => {
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
            let _ = closed.send(ConnEvent::Closed { conn, why }).await;
        });
        let closed = self.ev_tx.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = c.writer.run(OutboundQueue { rx }).await {
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
                tx,
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
            Command::Bootstrap { node, addr } => {
                self.net.add_bootstrap(now, node, addr);
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
                        if io.announced {
                            self.app_event(NodeEvent::Disconnected {
                                conn,
                                node: io.node,
                            });
                        }
                    }
                }
                Output::Event(ev) => self.app_event(NodeEvent::Behaviour(ev)),
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
