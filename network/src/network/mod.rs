//! The core: one node's connections, routing, timers and dispatch, as a
//! sans-IO state machine.
//!
//! # The drive loop
//! A driver (the tokio runtime, the simulator, a test) owns a [`Network`]
//! and repeats, as str0m documents its own loop:
//! 1. feed an input — `handle_incoming`, `handle_outgoing_connected`,
//!    `handle_outgoing_failed`, `handle_disconnected`, `handle_frame`,
//!    `handle_timeout`, or an application request (`send`, `rpc`,
//!    `connect`, `close`, `add_bootstrap`) — each carrying `now`;
//! 2. drain [`Network::poll_output`] until it returns `None`, executing each
//!    [`Output`] (dial, write a frame, close, hand an event to the app);
//! 3. wait until [`Network::poll_timeout`] (if any) or the next input,
//!    whichever comes first, and go to 1. A node with no timer pending
//!    sleeps until an input arrives.
//!
//! # Guarantees
//! - Deterministic: the same inputs at the same times produce the same
//!   outputs. There is no clock, no I/O, no thread and no unseeded RNG here,
//!   and every map that is iterated is ordered.
//! - Bytes from the network never panic the core. A frame whose header does
//!   not validate closes that one connection ([`CloseReason::Protocol`]); a
//!   payload its behaviour cannot decode is dropped and reported, and closes
//!   the connection only when its sender was the direct neighbour.
//! - A behaviour's panic is caught at the callback boundary and disables
//!   only that behaviour ([`Output::BehaviorFailed`]); nothing it queued in
//!   that callback is applied.
//! - Nothing is dropped silently: every message that dies here yields an
//!   [`Output::Dropped`] with its reason and is counted in [`NetworkStats`].
//! - Bounded: during one input each behaviour applies at most
//!   [`NetworkConfig::max_actions_per_input`] actions (counted through
//!   every nested event); past it, its remaining actions are discarded,
//!   counted and logged, and the other behaviours are unaffected. Each timer
//!   that fires is an input of its own. Outputs queue until the driver
//!   drains them, which the drive loop does after every input.

mod bootstrap;
mod builder;
mod timers;

pub use bootstrap::BootstrapStatus;
pub use builder::NetworkBuilder;

use crate::config::NetworkConfig;
use crate::error::{
    ConnectError, ConnectionRejectReason, OutgoingConnectionError, RpcError, SendError,
};
use crate::plugin::agent::{CoreAction, Env};
use crate::plugin::slot::ErasedBehavior;
use crate::plugin::SendOptions;
use crate::types::{
    BehaviorFailure, CloseReason, ConnectionInfo, DialFailure, DropReason, DropReport,
    NetworkStats, Output, RpcId,
};
use crate::vecmap::VecMap;
use crate::wire::{self, Frame, Header, HEADER_LEN};
use crate::{
    Address, ConnId, Direction, Instant, NetworkBehavior, NodeId, Rng, RouteAction, RouteRule,
    RouterTable, ServiceId,
};
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;
use timers::{TimerKey, Timers, CORE};

/// The core's own timer that starts the behaviours.
const START: TimerKey = TimerKey {
    conn: None,
    slot: CORE,
    token: u64::MAX,
};

/// The core's timer that sends drop notices held back by the rate limit.
const NOTICES: TimerKey = TimerKey {
    conn: None,
    slot: CORE,
    token: u64::MAX - 1,
};

/// Application RPCs awaiting an answer, most: past it the oldest is
/// answered with [`RpcError::TooManyOpen`], so a behaviour that never
/// answers cannot grow the core.
const MAX_OPEN_RPCS: usize = 65_536;
/// Dial-failure warnings per peer: at most one per this interval.
const DIAL_WARN_INTERVAL: Duration = Duration::from_secs(30);
/// Peers remembered for rate-limiting dial warnings.
const DIAL_WARN_PEERS: usize = 1024;

/// Service id → index of its behaviour, in 256 bytes (one byte per
/// service, 0 for none): looked up for every message, so it stays small.
#[derive(Clone, Copy)]
pub(crate) struct ServiceIndex([u8; 256]);

impl ServiceIndex {
    pub(crate) fn new() -> Self {
        ServiceIndex([0; 256])
    }
    /// The behaviour of `s`.
    pub(crate) fn get(&self, s: ServiceId) -> Option<u16> {
        match self.0[s.0 as usize] {
            0 => None,
            i => Some(u16::from(i) - 1),
        }
    }
    /// Records behaviour `i` (below 255) for `s`.
    pub(crate) fn set(&mut self, s: ServiceId, i: usize) {
        self.0[s.0 as usize] = u8::try_from(i + 1).unwrap_or(u8::MAX);
    }
}

/// Who asked for a dial: decides how loudly its failure is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The application ([`Network::connect`]): a warning.
    Application,
    /// A bootstrap peer: a warning (rate-limited by its backoff).
    Bootstrap,
    /// A behaviour (this service): debug (it hears the failure and decides).
    Behavior(ServiceId),
}

#[derive(Debug)]
struct Pending {
    node: NodeId,
    addr: Address,
    origin: Origin,
}

/// One node's core. See the [module docs](self) for the drive loop.
pub struct Network {
    local: NodeId,
    config: NetworkConfig,
    router: Arc<dyn RouterTable>,
    rng: Rng,
    behaviors: Vec<Box<dyn ErasedBehavior>>,
    /// Per behaviour: disabled after a panic.
    failed: Vec<bool>,
    /// Service id → index in `behaviors`.
    services: ServiceIndex,
    /// The services of `behaviors`, ascending.
    service_list: Vec<ServiceId>,
    /// Where the node can be reached, as the driver said.
    addrs: Vec<Address>,
    conns: VecMap<ConnId, ConnectionInfo>,
    pending: BTreeMap<ConnId, Pending>,
    /// Established connections per neighbour, oldest first; the newest is
    /// the one used to forward (a peer that restarted reconnects before its
    /// old connection times out).
    neighbours: VecMap<NodeId, Vec<ConnId>>,
    actions: VecDeque<CoreAction>,
    outputs: VecDeque<Output>,
    /// RTTs reported by behaviours, per established connection.
    rtts: VecMap<ConnId, Duration>,
    timers: Timers,
    bootstrap: Vec<bootstrap::Peer>,
    /// Application RPCs not answered yet, and whose they are.
    open_rpcs: BTreeMap<RpcId, ServiceId>,
    /// Per peer: when a failed dial to it was last warned about, and how
    /// many failures were quiet since.
    dial_warned: BTreeMap<NodeId, (Instant, u32)>,
    /// Per service: how often it went over its action budget.
    overflows: BTreeMap<ServiceId, u64>,
    now: Instant,
    /// Counts inputs: behaviours' action budgets renew with it.
    input: u64,
    /// The behaviours' `on_start` has run.
    started: bool,
    next_conn: u64,
    next_rpc: u64,
    stats: NetworkStats,
    /// Drop notices sent in the current second: (second, count).
    notices: (u64, u32),
    /// Drop notices to send at the end of the input: the dropped
    /// message's header, the reason's code, how many such messages.
    pending_notices: Vec<(Header, u8, u32)>,
    /// Where forwarded frames' buffers come from under the tokio runtime
    /// (its pool of written frames' buffers), else fresh allocations.
    #[cfg(feature = "runtime")]
    pub(crate) buffers: Option<Arc<crate::runtime::pool::FramePool>>,
}

/// Distinct drop notices one input may coalesce; past it, suppressed.
const MAX_PENDING_NOTICES: usize = 256;

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("local", &self.local)
            .field("connections", &self.conns.len())
            .field("behaviors", &self.behaviors.len())
            .finish()
    }
}

impl Network {
    /// Starts building the core of node `local`, routed by `router`.
    pub fn builder(local: NodeId, router: Arc<dyn RouterTable>) -> NetworkBuilder {
        NetworkBuilder::new(local, router)
    }

    fn from_parts(
        local: NodeId,
        router: Arc<dyn RouterTable>,
        config: NetworkConfig,
        seed: u64,
        behaviors: Vec<Box<dyn ErasedBehavior>>,
        services: ServiceIndex,
        bootstrap: Vec<(NodeId, Address, bool)>,
    ) -> Network {
        let n = behaviors.len();
        let mut service_list: Vec<ServiceId> = behaviors
            .iter()
            .filter(|b| b.provides_service())
            .map(|b| b.service_id())
            .collect();
        service_list.sort_unstable();
        let mut net = Network {
            local,
            rng: Rng::new(seed),
            router,
            config,
            failed: vec![false; n],
            behaviors,
            service_list,
            services,
            addrs: Vec::new(),
            conns: VecMap::new(),
            pending: BTreeMap::new(),
            neighbours: VecMap::new(),
            actions: VecDeque::new(),
            outputs: VecDeque::new(),
            rtts: VecMap::new(),
            timers: Timers::default(),
            bootstrap: Vec::new(),
            open_rpcs: BTreeMap::new(),
            dial_warned: BTreeMap::new(),
            overflows: BTreeMap::new(),
            now: Instant::ZERO,
            input: 0,
            started: false,
            next_conn: 0,
            next_rpc: 0,
            stats: NetworkStats::default(),
            notices: (0, 0),
            pending_notices: Vec::new(),
            #[cfg(feature = "runtime")]
            buffers: None,
        };
        // The first input starts the behaviours: a core timer due at once.
        net.timers.set(START, Instant::ZERO);
        for (node, addr, keep) in bootstrap {
            net.push_bootstrap(node, addr, keep);
        }
        net
    }

    /// Re-seeds the RNG (the simulator does, so every run replays).
    #[cfg(feature = "sim")]
    pub(crate) fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// This node's id.
    pub fn local_node(&self) -> NodeId {
        self.local
    }

    /// Tells the core where this node can be reached (the runtime passes
    /// its transports' listen addresses; the simulator `mem://<id>`), for
    /// behaviours that advertise it ([`BehaviorAgent::local_addrs`](crate::BehaviorAgent::local_addrs)).
    pub fn set_local_addrs(&mut self, addrs: Vec<Address>) {
        self.addrs = addrs;
    }

    /// Where this node can be reached, as the driver said.
    pub fn local_addrs(&self) -> &[Address] {
        &self.addrs
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The router.
    pub fn router(&self) -> &Arc<dyn RouterTable> {
        &self.router
    }

    /// Counters.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// The services this node provides (its behaviours', but for those
    /// that only call theirs), ascending.
    pub fn services(&self) -> &[ServiceId] {
        &self.service_list
    }

    /// Services whose behaviour failed (panicked) and is disabled.
    pub fn failed_services(&self) -> Vec<ServiceId> {
        self.behaviors
            .iter()
            .zip(&self.failed)
            .filter(|(_, f)| **f)
            .map(|(b, _)| b.service_id())
            .collect()
    }

    /// Established connections, in `ConnId` order.
    pub fn connections(&self) -> impl Iterator<Item = &ConnectionInfo> + '_ {
        self.conns.values()
    }

    /// The bootstrap peers and how dialling them goes.
    pub fn bootstrap_peers(&self) -> Vec<BootstrapStatus> {
        self.bootstrap
            .iter()
            .map(|p| BootstrapStatus {
                node: p.node,
                addr: p.addr,
                connected: self.neighbours.contains_key(&p.node),
                failures: p.failures,
                last_error: p.last_error.clone(),
                persistent: p.keep,
            })
            .collect()
    }

    /// The behaviour of type `B`, for inspection.
    pub fn behavior<B: NetworkBehavior>(&self) -> Option<&B> {
        self.behaviors
            .iter()
            .find_map(|b| b.as_any().downcast_ref::<B>())
    }

    /// The behaviour of type `B`, for direct configuration between inputs.
    /// Prefer RPCs for anything that should queue actions.
    pub fn behavior_mut<B: NetworkBehavior>(&mut self) -> Option<&mut B> {
        self.behaviors
            .iter_mut()
            .find_map(|b| b.as_any_mut().downcast_mut::<B>())
    }

    /// The smoothed RTT of a connection, as reported by a behaviour (ping
    /// does) through [`BehaviorAgent::report_rtt`](crate::BehaviorAgent::report_rtt).
    pub fn connection_rtt(&self, conn: ConnId) -> Option<Duration> {
        self.rtts.get(&conn).copied()
    }

    /// The next output for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the core next wants [`handle_timeout`](Self::handle_timeout):
    /// the earliest pending timer, or `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- inputs -------------------------------------------------------

    /// Fires every timer due at `now`, each as an input of its own. Timers
    /// set while firing (even for `now`) wait for the next call.
    pub fn handle_timeout(&mut self, now: Instant) {
        let limit = self.timers.next_id();
        self.now = now;
        while let Some((at, key)) = self.timers.pop_due(now, limit) {
            self.begin(now);
            log::trace!("node {}: timer {key:?} (due {at})", self.local);
            if key == START {
                // `begin` has started the behaviours.
            } else if key == NOTICES {
                self.flush_notices();
            } else if key.slot == CORE {
                self.bootstrap_due(key.token as usize);
            } else {
                let i = key.slot as usize;
                self.with_slot(i, "on_timer", |b, env| b.on_timer(env, key.conn, key.token));
            }
            self.run_actions();
        }
        self.end();
    }

    /// The application dials `node` at `addr`.
    pub fn connect(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: Address,
    ) -> Result<ConnId, ConnectError> {
        self.begin(now);
        let r = self.dial(node, addr, Origin::Application);
        self.end();
        r
    }

    /// Adds a bootstrap peer: dialled now, and again as its docs say
    /// ([`BootstrapStatus`]).
    pub fn add_bootstrap(&mut self, now: Instant, node: NodeId, addr: Address) {
        self.begin(now);
        self.push_bootstrap(node, addr, false);
        self.end();
    }

    /// Adds a persistent peer: dialled now and whenever no connection to it
    /// is up ([`NetworkBuilder::persistent_peer`](crate::NetworkBuilder::persistent_peer)).
    /// A bootstrap peer added again this way becomes persistent.
    pub fn add_persistent_peer(&mut self, now: Instant, node: NodeId, addr: Address) {
        self.begin(now);
        self.push_bootstrap(node, addr, true);
        self.end();
    }

    /// The application closes a connection.
    pub fn close(&mut self, now: Instant, conn: ConnId) {
        self.begin(now);
        self.close_conn(conn, CloseReason::Application);
        self.end();
    }

    /// A remote node connected to us. Returns the new connection's id, or
    /// why it is refused (the driver then closes it; no behaviour sees it
    /// beyond its `check_connection`).
    pub fn handle_incoming(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: Option<Address>,
    ) -> Result<ConnId, ConnectionRejectReason> {
        self.begin(now);
        if self.conns.len() + self.pending.len() >= self.config.max_connections {
            log::debug!(
                "node {}: incoming from {node} refused: connection limit",
                self.local
            );
            self.end();
            return Err(ConnectionRejectReason::ConnectionLimit);
        }
        let conn = self.alloc_conn();
        let info = ConnectionInfo {
            conn,
            node,
            direction: Direction::Incoming,
            addr,
            dialled_by: None,
        };
        if let Err(r) = self.check(&info) {
            log::debug!(
                "node {}: incoming {conn} from {node} refused: {r}",
                self.local
            );
            self.end();
            return Err(r);
        }
        self.establish(info);
        self.end();
        Ok(conn)
    }

    /// An outgoing dial (from an [`Output::Connect`]) completed; `node` is
    /// the identity the transport authenticated.
    pub fn handle_outgoing_connected(&mut self, now: Instant, conn: ConnId, node: NodeId) {
        self.begin(now);
        self.outgoing_connected(conn, node);
        self.end();
    }

    fn outgoing_connected(&mut self, conn: ConnId, node: NodeId) {
        let Some(p) = self.pending.remove(&conn) else {
            log::debug!("node {}: connected event for unknown {conn}", self.local);
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::Application,
            });
            return;
        };
        if node != p.node {
            let err = OutgoingConnectionError::IdentityMismatch {
                expected: p.node,
                actual: node,
            };
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::IdentityMismatch {
                    expected: p.node,
                    actual: node,
                },
            });
            self.outgoing_error(conn, p, err);
            return;
        }
        let info = ConnectionInfo {
            conn,
            node,
            direction: Direction::Outgoing,
            addr: Some(p.addr),
            dialled_by: match p.origin {
                Origin::Behavior(s) => Some(s),
                Origin::Application | Origin::Bootstrap => None,
            },
        };
        if let Err(r) = self.check(&info) {
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::Rejected(r.clone()),
            });
            self.outgoing_error(conn, p, OutgoingConnectionError::Rejected(r));
            return;
        }
        self.establish(info);
    }

    /// An outgoing dial failed.
    pub fn handle_outgoing_failed(
        &mut self,
        now: Instant,
        conn: ConnId,
        err: OutgoingConnectionError,
    ) {
        self.begin(now);
        match self.pending.remove(&conn) {
            Some(p) => self.outgoing_error(conn, p, err),
            None => log::debug!("node {}: failure for unknown dial {conn}", self.local),
        }
        self.end();
    }

    /// A connection went down (the peer closed it, or the transport lost it).
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        self.begin(now);
        if let Some(p) = self.pending.remove(&conn) {
            self.outgoing_error(conn, p, OutgoingConnectionError::Unreachable);
        } else if let Some(info) = self.remove_conn(conn) {
            log::debug!("node {}: {conn} to {} disconnected", self.local, info.node);
            self.disconnected(info);
        }
        self.end();
    }

    /// One frame arrived on a connection.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.begin(now);
        self.frame(conn, bytes);
        self.end();
    }

    fn frame(&mut self, conn: ConnId, bytes: &[u8]) {
        self.stats.frames_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let Some(from) = self.conns.get(&conn).map(|c| c.node) else {
            log::trace!("node {}: frame on unknown {conn} ignored", self.local);
            return;
        };
        let frame = match Frame::decode(bytes, self.config.max_payload) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("node {}: {conn} from {from}: closing: {e}", self.local);
                self.stats.protocol_errors += 1;
                self.close_conn(conn, CloseReason::Protocol(e));
                return;
            }
        };
        let h = frame.header;
        if matches!(h.rule, crate::RouteRule::Direct) && h.source != from {
            // A direct message's source is the neighbour the connection
            // proved: behaviours trust it as such, so a peer that writes
            // another node's id there is closed, not believed.
            log::debug!(
                "node {}: {conn} from {from}: closing: a direct message claims to be from {}",
                self.local,
                h.source
            );
            self.stats.protocol_errors += 1;
            self.close_conn(conn, CloseReason::ForgedSource { claimed: h.source });
            return;
        }
        match self.router.path_to(&h.rule, h.service) {
            RouteAction::Local => self.deliver(Some((conn, from)), &h, frame.payload),
            RouteAction::Next(hop) => {
                if h.ttl <= 1 {
                    self.drop_msg(&h, DropReason::TtlExpired);
                } else {
                    let mut out = self.buffer(bytes.len());
                    out.extend_from_slice(bytes);
                    wire::set_ttl(&mut out, h.ttl - 1);
                    self.stats.forwarded += 1;
                    log::trace!(
                        "node {}: forward {} from {} to {hop}",
                        self.local,
                        h.rule,
                        h.source
                    );
                    self.send_to_hop(hop, &h, out);
                }
            }
            RouteAction::Reject(r) => self.drop_msg(&h, DropReason::Rejected(r)),
        }
    }

    /// An empty buffer for a frame of `len` bytes.
    fn buffer(&self, len: usize) -> Vec<u8> {
        #[cfg(feature = "runtime")]
        if let Some(pool) = &self.buffers {
            return pool.take(len);
        }
        Vec::with_capacity(len)
    }

    /// The application sends `msg` to the behaviour of `service` on the
    /// node(s) `rule` resolves to.
    pub fn send<M: Serialize>(
        &mut self,
        now: Instant,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
    ) -> Result<(), SendError> {
        self.send_with(now, service, rule, msg, SendOptions::default())
    }

    /// [`send`](Self::send) with options (TTL, reliability).
    pub fn send_with<M: Serialize>(
        &mut self,
        now: Instant,
        service: ServiceId,
        rule: RouteRule,
        msg: &M,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let mut buf = vec![0u8; HEADER_LEN];
        buf = postcard::to_extend(msg, buf).map_err(|e| SendError::Encode(e.to_string()))?;
        self.send_frame(now, service, rule, buf, opts)
    }

    /// The application sends a message already serialised into a frame
    /// buffer: `frame[HEADER_LEN..]` is the behaviour's postcard-encoded
    /// `Msg`, and the first `HEADER_LEN` bytes are room the core fills with
    /// the header. For drivers that serialise off the core's thread without
    /// a second copy.
    pub fn send_frame(
        &mut self,
        now: Instant,
        service: ServiceId,
        rule: RouteRule,
        mut frame: Vec<u8>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        if frame.len() < HEADER_LEN {
            return Err(SendError::Encode(format!(
                "frame buffer of {} bytes has no room for the header",
                frame.len()
            )));
        }
        let len = frame.len() - HEADER_LEN;
        let max = self.config.max_payload;
        if len > max {
            return Err(SendError::Oversized { len, max });
        }
        self.begin(now);
        let header = Header {
            service,
            rule,
            ttl: opts.ttl.unwrap_or(self.config.default_ttl),
            source: self.local,
            unreliable: opts.unreliable,
        };
        // Cannot fail: the length was checked against `max_payload`, which
        // a u32 holds on every platform plexus runs on; if it ever did not,
        // the frame is refused rather than sent with a wrong header.
        if header.write_into(&mut frame).is_none() {
            self.end();
            return Err(SendError::Oversized { len, max });
        }
        self.actions.push_back(CoreAction::Route { header, frame });
        self.end();
        Ok(())
    }

    /// The driver could not queue a frame the core asked it to send: the
    /// message is reported dropped ([`DropReason::QueueFull`]).
    pub fn handle_send_failed(&mut self, now: Instant, conn: ConnId, frame: &[u8]) {
        self.begin(now);
        if let Ok((h, _)) = Header::decode(frame, usize::MAX) {
            self.drop_msg(&h, DropReason::QueueFull(conn));
        }
        self.end();
    }

    /// The driver dropped a frame the core asked it to send because its
    /// connection closed before it could be written: reported dropped
    /// ([`DropReason::ConnectionClosed`]).
    pub fn handle_send_aborted(&mut self, now: Instant, conn: ConnId, frame: &[u8]) {
        self.handle_sends_aborted(now, conn, [frame]);
    }

    /// [`handle_send_aborted`](Self::handle_send_aborted) for many frames
    /// (or their headers) at once: the drop notices for messages with the
    /// same source, service and rule become one notice with a count.
    pub fn handle_sends_aborted<'a>(
        &mut self,
        now: Instant,
        conn: ConnId,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) {
        self.begin(now);
        for frame in frames {
            if let Ok((h, _)) = Header::decode(frame, usize::MAX) {
                self.drop_msg(&h, DropReason::ConnectionClosed(conn));
            }
        }
        self.end();
    }

    /// The application calls the RPC of the behaviour of type `B`.
    pub fn rpc<B: NetworkBehavior>(
        &mut self,
        now: Instant,
        req: crate::plugin::RequestOf<B>,
    ) -> Result<RpcId, RpcError> {
        self.rpc_by_type(now, TypeId::of::<B>(), Box::new(req))
            .map_err(|e| match e {
                RpcError::NoBehavior(_) => RpcError::NoBehavior(std::any::type_name::<B>().into()),
                other => other,
            })
    }

    /// The application calls the RPC of the behaviour whose type has this
    /// `TypeId`, with a type-erased request (for drivers).
    pub fn rpc_by_type(
        &mut self,
        now: Instant,
        behavior: TypeId,
        req: Box<dyn Any + Send>,
    ) -> Result<RpcId, RpcError> {
        let idx = self
            .behaviors
            .iter()
            .position(|b| b.as_any().type_id() == behavior)
            .ok_or_else(|| RpcError::NoBehavior(format!("{behavior:?}")))?;
        let service = self.behaviors[idx].service_id();
        self.rpc_erased(now, service, req)
    }

    /// The application calls the RPC of the behaviour of `service` with a
    /// type-erased request (for drivers that carry requests as `Box<dyn Any>`).
    ///
    /// `Ok` carries the id the answer ([`Output::RpcAnswer`]) will repeat. A
    /// behaviour that failed answers at once with
    /// [`RpcError::BehaviorFailed`], through that output too.
    pub fn rpc_erased(
        &mut self,
        now: Instant,
        service: ServiceId,
        req: Box<dyn Any + Send>,
    ) -> Result<RpcId, RpcError> {
        let idx = self
            .services
            .get(service)
            .ok_or_else(|| RpcError::NoBehavior(service.to_string()))? as usize;
        self.begin(now);
        let id = RpcId(self.next_rpc);
        self.next_rpc += 1;
        if self.failed[idx] {
            self.outputs.push_back(Output::RpcAnswer {
                id,
                result: Err(RpcError::BehaviorFailed(service)),
            });
            self.end();
            return Ok(id);
        }
        self.open_rpcs.insert(id, service);
        if self.open_rpcs.len() > MAX_OPEN_RPCS {
            if let Some((old, s)) = self.open_rpcs.pop_first() {
                log::warn!(
                    "node {}: more than {MAX_OPEN_RPCS} RPCs open; giving up RPC {} of {s}",
                    self.local,
                    old.0
                );
                self.outputs.push_back(Output::RpcAnswer {
                    id: old,
                    result: Err(RpcError::TooManyOpen),
                });
            }
        }
        let res = self.with_slot(idx, "on_rpc", |b, env| b.on_rpc(env, id, req));
        let res = match res {
            Some(Ok(())) => Ok(id),
            Some(Err(_)) => {
                self.open_rpcs.remove(&id);
                Err(RpcError::WrongType(service))
            }
            // It panicked: its open RPCs, this one included, were answered.
            None => Ok(id),
        };
        self.end();
        res
    }

    // ---- internals ----------------------------------------------------

    /// Starts an input at `now`: behaviours' action budgets renew. The
    /// first input starts the behaviours.
    fn begin(&mut self, now: Instant) {
        self.now = now;
        self.input += 1;
        if !self.started {
            self.started = true;
            self.timers.cancel(&START);
            self.start();
        }
    }

    /// Ends an input: applies what is queued, leaves the timers exact.
    fn end(&mut self) {
        self.run_actions();
        if !self.pending_notices.is_empty() {
            self.flush_notices();
            self.run_actions();
        }
        self.timers.purge_top();
    }

    fn alloc_conn(&mut self) -> ConnId {
        let c = ConnId(self.next_conn);
        self.next_conn += 1;
        c
    }

    /// Lends behaviour `i` an `Env` over the other fields and runs `f`,
    /// catching a panic: then the behaviour is disabled, nothing it queued
    /// in this call applies, and `None` is returned (also when it was
    /// disabled already).
    fn with_slot<R>(
        &mut self,
        i: usize,
        callback: &'static str,
        f: impl FnOnce(&mut dyn ErasedBehavior, &mut Env<'_>) -> R,
    ) -> Option<R> {
        if self.failed[i] {
            return None;
        }
        let mark = self.actions.len();
        let result = {
            let mut env = Env {
                local: self.local,
                now: self.now,
                input: self.input,
                default_ttl: self.config.default_ttl,
                max_actions: self.config.max_actions_per_input,
                services: &self.service_list,
                addrs: &self.addrs,
                rng: &mut self.rng,
                conns: &self.conns,
                out: &mut self.actions,
            };
            let b = self.behaviors[i].as_mut();
            catch_unwind(AssertUnwindSafe(|| f(b, &mut env)))
        };
        match result {
            Ok(r) => Some(r),
            Err(payload) => {
                self.actions.truncate(mark);
                self.fail(i, callback, &*payload);
                None
            }
        }
    }

    /// Calls every behaviour's `on_start`, once.
    fn start(&mut self) {
        log::debug!(
            "node {}: starting {} behaviour(s)",
            self.local,
            self.behaviors.len()
        );
        for i in 0..self.behaviors.len() {
            self.with_slot(i, "on_start", |b, env| b.on_start(env));
            // Each behaviour's start is its own input: one cannot use up
            // another's budget.
            self.run_actions();
            self.input += 1;
        }
    }

    /// Disables behaviour `i` after a panic in `callback`.
    fn fail(&mut self, i: usize, callback: &'static str, payload: &(dyn Any + Send)) {
        self.failed[i] = true;
        self.stats.behavior_failures += 1;
        let b = &mut self.behaviors[i];
        let service = b.service_id();
        let failure = BehaviorFailure {
            service,
            behavior: b.type_name(),
            callback,
            message: panic_message(payload),
        };
        // Its handlers' destructors run here; a panic in one changes nothing.
        let _ = catch_unwind(AssertUnwindSafe(|| b.disable()));
        self.timers.remove_slot(i as u16);
        log::error!(
            "node {}: {failure}; it is disabled, the node goes on",
            self.local
        );
        let open: Vec<RpcId> = self
            .open_rpcs
            .iter()
            .filter(|(_, s)| **s == service)
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.open_rpcs.remove(&id);
            self.outputs.push_back(Output::RpcAnswer {
                id,
                result: Err(RpcError::BehaviorFailed(service)),
            });
        }
        self.outputs.push_back(Output::BehaviorFailed(failure));
    }

    /// Asks every behaviour whether `info` may come up.
    fn check(&mut self, info: &ConnectionInfo) -> Result<(), ConnectionRejectReason> {
        for i in 0..self.behaviors.len() {
            if let Some(Err(r)) =
                self.with_slot(i, "check_connection", |b, _| b.check_connection(info))
            {
                return Err(r);
            }
        }
        Ok(())
    }

    fn dial(
        &mut self,
        node: NodeId,
        addr: Address,
        origin: Origin,
    ) -> Result<ConnId, ConnectError> {
        if node == self.local {
            return Err(ConnectError::SelfDial);
        }
        if let Some(&conn) = self.neighbours.get(&node).and_then(|v| v.first()) {
            return Err(ConnectError::AlreadyConnected { node, conn });
        }
        if let Some((&conn, p)) = self.pending.iter_mut().find(|(_, p)| p.node == node) {
            // The user (application or bootstrap list) asked for this node
            // too while a behaviour's dial was in flight: the connection is
            // then the user's, as if they had dialled first.
            if matches!(p.origin, Origin::Behavior(_)) && !matches!(origin, Origin::Behavior(_)) {
                p.origin = origin;
            }
            return Err(ConnectError::AlreadyConnected { node, conn });
        }
        if self.conns.len() + self.pending.len() >= self.config.max_connections {
            return Err(ConnectError::ConnectionLimit);
        }
        let conn = self.alloc_conn();
        self.pending.insert(conn, Pending { node, addr, origin });
        log::debug!("node {}: dialling {node} at {addr} as {conn}", self.local);
        self.outputs.push_back(Output::Connect { conn, node, addr });
        Ok(conn)
    }

    fn establish(&mut self, info: ConnectionInfo) {
        log::debug!(
            "node {}: {} {:?} connection to {} up",
            self.local,
            info.conn,
            info.direction,
            info.node
        );
        self.conns.insert(info.conn, info);
        self.neighbours
            .get_or_insert_with(info.node, Vec::new)
            .push(info.conn);
        let now = self.now;
        if let Some(p) = self.bootstrap.iter_mut().find(|p| p.node == info.node) {
            p.connected(now);
        }
        for i in 0..self.behaviors.len() {
            self.with_slot(i, "on_connected", |b, env| b.on_connected(env, info));
        }
        self.run_actions();
    }

    fn remove_conn(&mut self, conn: ConnId) -> Option<ConnectionInfo> {
        let info = self.conns.remove(&conn)?;
        self.rtts.remove(&conn);
        self.timers.remove_conn(conn);
        if let Some(v) = self.neighbours.get_mut(&info.node) {
            v.retain(|c| *c != conn);
            if v.is_empty() {
                self.neighbours.remove(&info.node);
            }
        }
        Some(info)
    }

    /// Forgets a connection now and tells the driver to close it. A dial
    /// still in flight fails, as an aborted dial.
    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(p) = self.pending.remove(&conn) {
            self.outputs.push_back(Output::Close { conn, reason });
            self.outgoing_error(conn, p, OutgoingConnectionError::Aborted);
            return;
        }
        if let Some(info) = self.remove_conn(conn) {
            log::debug!(
                "node {}: closing {conn} to {}: {reason}",
                self.local,
                info.node
            );
            self.outputs.push_back(Output::Close { conn, reason });
            self.disconnected(info);
        }
    }

    fn disconnected(&mut self, info: ConnectionInfo) {
        let now = self.now;
        let mut redialled = None;
        if !self.neighbours.contains_key(&info.node) {
            if let Some(k) = self.bootstrap.iter().position(|p| p.node == info.node) {
                self.bootstrap[k].disconnected(now);
                // A link to keep: redialled after its backoff, whatever
                // other connections are up.
                if self.bootstrap[k].keep && self.bootstrap[k].dialing.is_none() {
                    let delay = self.bootstrap[k].next_delay();
                    let delay = self.jitter(delay);
                    self.schedule_bootstrap(k, delay);
                    redialled = Some(k);
                }
            }
        }
        for i in 0..self.behaviors.len() {
            self.with_slot(i, "on_disconnected", |b, env| b.on_disconnected(env, info));
        }
        if self.conns.is_empty() && self.pending.is_empty() {
            // Alone: the bootstrap peers are the way back in, each after
            // its backoff.
            for k in 0..self.bootstrap.len() {
                if self.bootstrap[k].dialing.is_none() && redialled != Some(k) {
                    let delay = self.bootstrap[k].next_delay();
                    let delay = self.jitter(delay);
                    self.schedule_bootstrap(k, delay);
                }
            }
        }
        self.run_actions();
    }

    /// `d` ± 20%, from the node's RNG.
    fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.8 + 0.4 * self.rng.next_f64())
    }

    fn outgoing_error(&mut self, conn: ConnId, p: Pending, err: OutgoingConnectionError) {
        self.stats.dial_failures += 1;
        let node = p.node;
        match p.origin {
            Origin::Behavior(_) => log::debug!(
                "node {}: dial {conn} to {node} at {} failed: {err}",
                self.local,
                p.addr
            ),
            Origin::Application => self.warn_dial(node, p.addr, &err),
            Origin::Bootstrap => {}
        }
        if let Some(k) = self.bootstrap.iter().position(|b| b.dialing == Some(conn)) {
            let warn = self.bootstrap[k].failed(err.clone());
            let failures = self.bootstrap[k].failures;
            let delay = self.bootstrap[k].next_delay();
            let delay = self.jitter(delay);
            if warn {
                log::warn!(
                    "node {}: cannot reach bootstrap peer {node} at {}: {err} \
                     (attempt {failures}; retrying in {:.1} s)",
                    self.local,
                    p.addr,
                    delay.as_secs_f64()
                );
            }
            self.schedule_bootstrap(k, delay);
        }
        for i in 0..self.behaviors.len() {
            self.with_slot(i, "on_outgoing_connection_error", |b, env| {
                b.on_outgoing_error(env, node, conn, &err)
            });
        }
        self.outputs.push_back(Output::DialFailed(DialFailure {
            conn,
            node,
            addr: p.addr,
            error: err,
        }));
        self.run_actions();
    }

    /// A warning for a failed application dial, at most one per peer per
    /// [`DIAL_WARN_INTERVAL`] (the next one says how many were quiet).
    fn warn_dial(&mut self, node: NodeId, addr: Address, err: &OutgoingConnectionError) {
        let now = self.now;
        let entry = self.dial_warned.get(&node).copied();
        match entry {
            Some((at, quiet)) if now - at < DIAL_WARN_INTERVAL => {
                self.dial_warned.insert(node, (at, quiet + 1));
                log::debug!(
                    "node {}: dial to {node} at {addr} failed: {err}",
                    self.local
                );
            }
            other => {
                let quiet = other.map_or(0, |(_, q)| q);
                let more = if quiet > 0 {
                    format!(" ({quiet} more failed quietly before)")
                } else {
                    String::new()
                };
                log::warn!(
                    "node {}: cannot connect to {node} at {addr}: {err}{more}",
                    self.local
                );
                if self.dial_warned.len() >= DIAL_WARN_PEERS && other.is_none() {
                    self.dial_warned.pop_first();
                }
                self.dial_warned.insert(node, (now, 0));
            }
        }
    }

    fn push_bootstrap(&mut self, node: NodeId, addr: Address, keep: bool) {
        if node == self.local {
            log::warn!(
                "node {}: bootstrap peer {node} is this node; ignored",
                self.local
            );
            return;
        }
        if let Some(k) = self.bootstrap.iter().position(|p| p.node == node) {
            let p = &mut self.bootstrap[k];
            p.addr = addr;
            if keep && !p.keep {
                p.keep = true;
                p.backoff = p.backoff.min(bootstrap::PERSISTENT_MAX_BACKOFF);
                if p.dialing.is_none() && !self.neighbours.contains_key(&node) {
                    self.schedule_bootstrap(k, Duration::ZERO);
                }
            }
            return;
        }
        self.bootstrap.push(bootstrap::Peer::new(node, addr, keep));
        self.schedule_bootstrap(self.bootstrap.len() - 1, Duration::ZERO);
    }

    fn schedule_bootstrap(&mut self, k: usize, after: Duration) {
        let key = TimerKey {
            conn: None,
            slot: CORE,
            token: k as u64,
        };
        self.timers.set(key, self.now + after);
    }

    /// The retry timer of bootstrap peer `k`.
    fn bootstrap_due(&mut self, k: usize) {
        let Some(p) = self.bootstrap.get(k) else {
            return;
        };
        let (node, addr) = (p.node, p.addr);
        let alone = self.conns.is_empty();
        if p.dialing.is_some()
            || self.neighbours.contains_key(&node)
            || (p.joined && !alone && !p.keep)
        {
            return;
        }
        match self.dial(node, addr, Origin::Bootstrap) {
            Ok(conn) => self.bootstrap[k].dialing = Some(conn),
            // Someone else is dialling it: follow that dial.
            Err(ConnectError::AlreadyConnected { conn, .. }) => {
                if self.pending.contains_key(&conn) {
                    self.bootstrap[k].dialing = Some(conn);
                }
            }
            Err(e) => {
                log::debug!("node {}: bootstrap dial to {node}: {e}", self.local);
                let wait = if self.bootstrap[k].keep {
                    bootstrap::PERSISTENT_MAX_BACKOFF
                } else {
                    bootstrap::MAX_BACKOFF
                };
                self.schedule_bootstrap(k, wait);
            }
        }
    }

    fn drop_msg(&mut self, h: &Header, reason: DropReason) {
        self.stats.dropped += 1;
        log::debug!(
            "node {}: dropped {} message from {} ({}): {reason}",
            self.local,
            h.service,
            h.source,
            h.rule
        );
        let report = DropReport {
            source: h.source,
            service: h.service,
            rule: h.rule,
            reason,
            count: 1,
        };
        if h.source == self.local {
            // Its behaviour may act on it (after the current action).
            self.actions.push_back(CoreAction::Dropped(report));
        } else if !h.unreliable && h.service != crate::DROP_NOTICE {
            self.notify_drop(h, &reason);
        }
        self.outputs.push_back(Output::Dropped(report));
    }

    /// Queues a drop notice back to the source of a reliable message that
    /// died here; sent at the end of the input, one per source, service,
    /// rule and reason however many such messages died in it. Past the
    /// rate limit, notices wait (counting on) for the next second's
    /// budget: the limit bounds notices, not what they tell. Only past
    /// [`MAX_PENDING_NOTICES`] distinct ones waiting is a notice suppressed.
    fn notify_drop(&mut self, h: &Header, reason: &DropReason) {
        let code = crate::RemoteDrop::code_of(reason);
        let h = Header {
            ttl: 0,
            unreliable: false,
            ..*h
        };
        if let Some(p) = self
            .pending_notices
            .iter_mut()
            .find(|(ph, pc, _)| *ph == h && *pc == code)
        {
            p.2 = p.2.saturating_add(1);
        } else if self.pending_notices.len() < MAX_PENDING_NOTICES {
            self.pending_notices.push((h, code, 1));
        } else {
            self.stats.drop_notices_suppressed += 1;
        }
    }

    /// Routes the queued drop notices: each a code for why, the message's
    /// header (payload length zero), and for more than one message their
    /// count (`u32` BE). Rate-limited per second; notices about notices are
    /// never sent (no storms).
    fn flush_notices(&mut self) {
        if self.config.drop_notices_per_sec == 0 {
            // Notices are off.
            self.stats.drop_notices_suppressed += self.pending_notices.len() as u64;
            self.pending_notices.clear();
            return;
        }
        let second = self.now.as_micros() / 1_000_000;
        if self.notices.0 != second {
            self.notices = (second, 0);
        }
        let budget = self
            .config
            .drop_notices_per_sec
            .saturating_sub(self.notices.1) as usize;
        let n = budget.min(self.pending_notices.len());
        let due: Vec<(Header, u8, u32)> = self.pending_notices.drain(..n).collect();
        if !self.pending_notices.is_empty() {
            // The rest go with the next second's budget.
            self.timers
                .set(NOTICES, Instant::from_micros((second + 1) * 1_000_000));
        }
        for (h, code, count) in due {
            self.notices.1 += 1;
            self.stats.drop_notices_sent += 1;
            let header = Header {
                service: crate::DROP_NOTICE,
                rule: RouteRule::Node(h.source),
                ttl: self.config.default_ttl,
                source: self.local,
                unreliable: false,
            };
            let counted = if count > 1 { 4 } else { 0 };
            let mut frame = Vec::with_capacity(2 * HEADER_LEN + 1 + counted);
            header.encode_into((1 + HEADER_LEN + counted) as u32, &mut frame);
            frame.push(code);
            frame.extend_from_slice(&h.to_bytes(0));
            if count > 1 {
                frame.extend_from_slice(&count.to_be_bytes());
            }
            self.actions.push_back(CoreAction::Route { header, frame });
        }
    }

    /// A drop notice reached this node: if it is about one of its own
    /// messages, its behaviour and the application hear of it.
    fn on_drop_notice(&mut self, h: &Header, payload: &[u8]) {
        let (about, count) = match payload {
            [code, rest @ ..] if rest.len() == HEADER_LEN => (Some((*code, rest)), 1),
            [code, rest @ ..] if rest.len() == HEADER_LEN + 4 => {
                let (hdr, n) = rest.split_at(HEADER_LEN);
                let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
                (Some((*code, hdr)), n)
            }
            _ => (None, 0),
        };
        let about = about.filter(|_| count > 0).and_then(|(code, hdr)| {
            Header::decode(hdr, usize::MAX)
                .ok()
                .map(|(about, _)| (crate::RemoteDrop::from_code(code), about))
        });
        let Some((why, about)) = about.filter(|(_, a)| a.source == self.local) else {
            log::debug!(
                "node {}: malformed or misdirected drop notice from {} ignored",
                self.local,
                h.source
            );
            return;
        };
        self.stats.drop_notices_received += 1;
        log::debug!(
            "node {}: {count} of its {} message(s) ({}) dropped at {}: {why}",
            self.local,
            about.service,
            about.rule,
            h.source
        );
        let report = DropReport {
            source: self.local,
            service: about.service,
            rule: about.rule,
            reason: DropReason::Remote { at: h.source, why },
            count,
        };
        self.actions.push_back(CoreAction::Dropped(report));
        self.outputs.push_back(Output::Dropped(report));
    }

    fn send_on(&mut self, conn: ConnId, frame: Vec<u8>, unreliable: bool) {
        self.stats.frames_out += 1;
        self.stats.bytes_out += frame.len() as u64;
        self.outputs.push_back(Output::Send {
            conn,
            frame,
            unreliable,
        });
    }

    fn send_to_hop(&mut self, hop: NodeId, h: &Header, frame: Vec<u8>) {
        match self.neighbours.get(&hop).and_then(|v| v.last()).copied() {
            Some(conn) => self.send_on(conn, frame, h.unreliable),
            None => self.drop_msg(h, DropReason::NoConnection(hop)),
        }
    }

    /// Delivers a validated message to its local behaviour.
    fn deliver(&mut self, via: Option<(ConnId, NodeId)>, h: &Header, payload: &[u8]) {
        if h.service == crate::DROP_NOTICE {
            self.on_drop_notice(h, payload);
            return;
        }
        let Some(idx) = self.services.get(h.service) else {
            self.drop_msg(h, DropReason::UnknownService);
            return;
        };
        let idx = idx as usize;
        if self.failed[idx] {
            self.drop_msg(h, DropReason::BehaviorFailed);
            return;
        }
        let conn = via.map(|(c, _)| c);
        let res = self.with_slot(idx, "on_message", |b, env| {
            b.on_message(env, conn, h, payload)
        });
        match res {
            Some(Ok(())) => self.stats.delivered += 1,
            None => self.drop_msg(h, DropReason::BehaviorFailed),
            Some(Err(e)) => {
                log::debug!(
                    "node {}: {} payload from {} does not decode: {e}",
                    self.local,
                    h.service,
                    h.source
                );
                self.drop_msg(h, DropReason::BadPayload);
                // Only the author of a message is to blame for it: close the
                // connection when the author is the neighbour itself.
                if let Some((c, from)) = via {
                    if from == h.source {
                        self.close_conn(c, CloseReason::BadPayload(h.service));
                    }
                }
            }
        }
    }

    /// Applies queued actions until none are left. Each came from a
    /// behaviour's budgeted queue (or the application), so this ends.
    fn run_actions(&mut self) {
        while let Some(action) = self.actions.pop_front() {
            self.apply(action);
        }
    }

    fn apply(&mut self, action: CoreAction) {
        match action {
            CoreAction::Route { header: h, frame } => {
                if frame.len() - HEADER_LEN > self.config.max_payload {
                    self.drop_msg(&h, DropReason::Oversized);
                    return;
                }
                match self.router.path_to(&h.rule, h.service) {
                    RouteAction::Local => self.deliver(None, &h, &frame[HEADER_LEN..]),
                    RouteAction::Next(_) if h.ttl == 0 => self.drop_msg(&h, DropReason::TtlExpired),
                    RouteAction::Next(hop) => self.send_to_hop(hop, &h, frame),
                    RouteAction::Reject(r) => self.drop_msg(&h, DropReason::Rejected(r)),
                }
            }
            CoreAction::SendConn {
                conn,
                header: h,
                frame,
            } => {
                if frame.len() - HEADER_LEN > self.config.max_payload {
                    self.drop_msg(&h, DropReason::Oversized);
                } else if self.conns.contains_key(&conn) {
                    self.send_on(conn, frame, h.unreliable);
                } else {
                    self.drop_msg(&h, DropReason::ConnectionClosed(conn));
                }
            }
            CoreAction::Connect {
                node,
                addr,
                service,
            } => match self.dial(node, addr, Origin::Behavior(service)) {
                Ok(_) => {}
                Err(ConnectError::ConnectionLimit) => {
                    let conn = self.alloc_conn();
                    let p = Pending {
                        node,
                        addr,
                        origin: Origin::Behavior(service),
                    };
                    let err =
                        OutgoingConnectionError::Rejected(ConnectionRejectReason::ConnectionLimit);
                    self.outgoing_error(conn, p, err);
                }
                Err(e) => log::trace!("node {}: dial to {node} skipped: {e}", self.local),
            },
            CoreAction::Close { conn, service } => {
                self.close_conn(conn, CloseReason::Behavior(service));
            }
            CoreAction::Emit(ev) => self.outputs.push_back(Output::Event(ev)),
            CoreAction::Answer { id, result } => {
                if self.open_rpcs.remove(&id).is_some() {
                    self.outputs.push_back(Output::RpcAnswer { id, result });
                } else {
                    log::debug!(
                        "node {}: answer to unknown RPC {} ignored",
                        self.local,
                        id.0
                    );
                }
            }
            CoreAction::Rtt { conn, rtt } => {
                if self.conns.contains_key(&conn) {
                    self.rtts.insert(conn, rtt);
                }
            }
            CoreAction::RouteChanged(change) => {
                for i in 0..self.behaviors.len() {
                    self.with_slot(i, "on_route_changed", |b, env| {
                        b.on_route_changed(env, &change)
                    });
                }
                self.outputs.push_back(Output::RouteChanged(change));
            }
            CoreAction::Timer {
                service,
                conn,
                token,
                at,
            } => {
                let Some(slot) = self.services.get(service) else {
                    return;
                };
                if self.failed[slot as usize] || conn.is_some_and(|c| !self.conns.contains_key(&c))
                {
                    return; // its owner is gone
                }
                let key = TimerKey { conn, slot, token };
                match at {
                    Some(at) => self.timers.set(key, at),
                    None => self.timers.cancel(&key),
                }
            }
            CoreAction::Local { from, event } => {
                for i in 0..self.behaviors.len() {
                    if self.behaviors[i].service_id() != from {
                        self.with_slot(i, "on_local_event", |b, env| {
                            b.on_local_event(env, from, &*event)
                        });
                    }
                }
            }
            CoreAction::Dropped(report) => {
                if let Some(i) = self.services.get(report.service) {
                    self.with_slot(i as usize, "on_dropped", |b, env| {
                        b.on_dropped(env, &report)
                    });
                }
            }
            CoreAction::Overflow {
                service,
                discarded,
                first,
            } => {
                self.stats.actions_discarded += discarded;
                if !first {
                    return;
                }
                self.stats.budget_overflows += 1;
                let n = self.overflows.entry(service).or_default();
                *n += 1;
                if n.is_power_of_two() {
                    log::warn!(
                        "node {}: behaviour {service} queued more than {} actions in one input \
                         ({discarded} discarded; {n} time(s) so far): does it bounce events forever?",
                        self.local,
                        self.config.max_actions_per_input
                    );
                }
            }
        }
    }
}

/// The text of a panic payload (what `catch_unwind` returns), for
/// behaviours that catch panics of code they call.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}

#[cfg(test)]
mod tests;
