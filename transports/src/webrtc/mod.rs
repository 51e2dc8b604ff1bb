//! WebRTC data channels (the `webrtc` crate, on tokio), signalled over the
//! overlay: the transport browsers can speak.
//!
//! # Connections
//! One peer connection per plexus connection, with two data channels that
//! the offerer opens (announced in band, so a browser's
//! `createDataChannel` is all it takes):
//! - `plexus`: reliable and ordered. The first message each way is a
//!   [hello] proving the node's ed25519 identity and the network key,
//!   bound to both sides' DTLS certificate fingerprints; after it the
//!   channel carries the same length-delimited frame stream as TCP and QUIC
//!   (`u32` big-endian length, then the frame), cut into messages of at
//!   most 60 KiB, or the peer's `a=max-message-size` if smaller.
//! - `plexus-unreliable`: unordered, no retransmissions. Each message
//!   is one frame a behaviour sent unreliably; frames too large for one
//!   message go on the reliable channel instead.
//!
//! The limits of the other transports apply: frame size, a handshake
//! timeout covering the whole handshake, handshakes in progress in all and
//! per source (the neighbour that delivered an overlay offer, a client
//! address for the
//! web endpoint's); further offers are refused with a reason, or, when
//! offers come faster than they can be answered, dropped with a warning
//! (the dialler's handshake then times out). Sends wait while a channel's send buffer holds
//! [`WebRtcConfig::send_buffer`] bytes, so memory stays bounded.
//!
//! # Signalling
//! Offers and answers are messages of the [`Signalling`] behaviour (service
//! [`SIGNALLING`]), routed to the target node like any other message, so
//! `connect(id, webrtc://<id>)` works between two nodes that share any path;
//! once the connection is up the router may prefer it. ICE candidates
//! travel inside the SDP (gathering completes before it is sent: host
//! candidates only take milliseconds). A browser with no overlay path yet
//! sends its offer to a node's web endpoint instead
//! ([`WebRtcTransport::accept_offer`]).
//!
//! ```no_run
//! # use plexus_transports::{Identity, TransportConfig};
//! # use plexus_transports::webrtc::{WebRtcConfig, WebRtcTransport};
//! # async fn f(builder: plexus_network::NetworkBuilder) -> std::io::Result<()> {
//! let identity = Identity::generate().unwrap();
//! let rtc = WebRtcTransport::new(&identity, TransportConfig::default(), WebRtcConfig::default())?;
//! let network = builder.behavior(rtc.signalling()).build().unwrap();
//! let (handle, events) = plexus_network::runtime::Node::spawn(
//!     network,
//!     vec![std::sync::Arc::new(rtc.clone()) /* , quic, tcp, … */],
//!     Default::default(),
//! );
//! # let _ = events;
//! rtc.attach(&handle); // signals go out through the node
//! # Ok(()) }
//! ```

mod channel;
pub mod hello;

use crate::tls::Role;
use crate::{Identity, TransportConfig};
use bytes::BytesMut;
use channel::{next_event, DcRead, DcWrite};
use parking_lot::Mutex;
use plexus_network::runtime::{
    BoxFuture, Connection, DialError, FrameReader, FrameSink, FrameWriter, NodeHandle,
    OutboundQueue, Transport, WeakNodeHandle,
};
use plexus_network::{
    Address, BehaviorAgent, Incoming, NetworkBehavior, NoHandler, NodeId, RouteRule, ServiceId,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{
    DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState,
};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
};

/// The service id of [`Signalling`].
pub const SIGNALLING: ServiceId = ServiceId(8);

/// Label of the reliable, ordered data channel.
pub const RELIABLE_CHANNEL: &str = "plexus";
/// Label of the unordered, unretransmitted data channel.
pub const UNRELIABLE_CHANNEL: &str = "plexus-unreliable";

/// Signals queued for the transport; past it, an offer is dropped with a
/// warning (its dialler's handshake times out and reports it).
const INBOX: usize = 64;
/// Unreliable frames queued for their channel; past it they are dropped
/// (they may be lost anyway).
const UNRELIABLE_QUEUE: usize = 256;

/// WebRTC settings beyond the shared [`TransportConfig`].
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// Local UDP addresses each peer connection gathers candidates on.
    /// Default `0.0.0.0:0` (every interface, an ephemeral port each).
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers (`stun:host:port`), for peers behind NAT. Default
    /// none (host candidates only: the same network, or public addresses).
    pub ice_servers: Vec<String>,
    /// Bytes a data channel may hold unacknowledged before sends wait.
    /// Default 4 MiB.
    pub send_buffer: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            udp_addrs: vec!["0.0.0.0:0".to_string()],
            ice_servers: Vec::new(),
            send_buffer: 4 << 20,
        }
    }
}

impl WebRtcConfig {
    /// Gathers on loopback only: for tests and for peers on this machine.
    pub fn loopback() -> Self {
        WebRtcConfig {
            udp_addrs: vec!["127.0.0.1:0".to_string()],
            ..WebRtcConfig::default()
        }
    }
}

/// What [`Signalling`] carries between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// "Connect to me": the dialler's SDP offer, candidates included.
    Offer {
        /// Chosen by the dialler; its answer names it.
        session: u64,
        /// The SDP.
        sdp: String,
    },
    /// The answer to an offer.
    Answer {
        /// The offer's session.
        session: u64,
        /// The SDP.
        sdp: String,
    },
    /// The offer was refused (no room for another handshake, a bad SDP, …).
    Refused {
        /// The offer's session.
        session: u64,
        /// Why.
        why: String,
    },
}

/// The WebRTC transport. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct WebRtcTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebRtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebRtcTransport({})", self.inner.identity.node_id())
    }
}

struct Inner {
    identity: Identity,
    config: TransportConfig,
    rtc: WebRtcConfig,
    handle: OnceLock<WeakNodeHandle>,
    /// Dials waiting for their answer, by session.
    pending: Mutex<HashMap<u64, (NodeId, AnswerTx)>>,
    incoming: OnceLock<mpsc::Sender<Connection>>,
    inbox_tx: mpsc::Sender<Inbound>,
    inbox_rx: Mutex<Option<mpsc::Receiver<Inbound>>>,
    /// Incoming handshakes in progress, in all and by source (a node id
    /// for offers over the overlay, an IP address for the web endpoint's).
    handshakes: AtomicUsize,
    per_source: Mutex<HashMap<String, usize>>,
    /// Offers being answered (each a task); past `max_pending_handshakes`,
    /// further offers are dropped with a log line.
    answering: Arc<tokio::sync::Semaphore>,
    closed: AtomicBool,
    /// Frames received on unreliable channels.
    unreliable_in: Arc<AtomicU64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl WebRtcTransport {
    /// The transport of node `identity`. Add [`signalling`](Self::signalling)
    /// to the node's behaviours, and [`attach`](Self::attach) the node's
    /// handle once it runs.
    pub fn new(
        identity: &Identity,
        config: TransportConfig,
        rtc: WebRtcConfig,
    ) -> io::Result<Self> {
        let identity = Identity::from_pem(&identity.to_pem()).map_err(io::Error::other)?;
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
        let answering = Arc::new(tokio::sync::Semaphore::new(
            config.max_pending_handshakes.max(1),
        ));
        Ok(WebRtcTransport {
            inner: Arc::new(Inner {
                identity,
                config,
                rtc,
                handle: OnceLock::new(),
                pending: Mutex::new(HashMap::new()),
                incoming: OnceLock::new(),
                inbox_tx,
                inbox_rx: Mutex::new(Some(inbox_rx)),
                handshakes: AtomicUsize::new(0),
                per_source: Mutex::new(HashMap::new()),
                answering,
                closed: AtomicBool::new(false),
                unreliable_in: Arc::new(AtomicU64::new(0)),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The behaviour that carries this transport's signals: add it to the
    /// node's network.
    pub fn signalling(&self) -> Signalling {
        Signalling {
            inbox: self.inner.inbox_tx.clone(),
        }
    }

    /// Gives the transport the running node, through which its dials send
    /// their offers. Holds it weakly: the node still stops when the
    /// application drops its handles.
    pub fn attach(&self, handle: &NodeHandle) {
        let _ = self.inner.handle.set(handle.downgrade());
    }

    /// Frames this transport has received on unreliable channels, over all
    /// its connections.
    pub fn unreliable_received(&self) -> u64 {
        self.inner.unreliable_in.load(Ordering::Relaxed)
    }

    /// Answers an offer that came from outside the overlay (a browser's,
    /// through a node's web endpoint): returns the SDP answer at once and
    /// finishes the handshake in the background; the connection reaches
    /// the node once the peer has proven its identity and network key.
    /// `source` names where the offer came from (the client's IP address,
    /// say): each source has at most `max_pending_per_source` handshakes in
    /// progress.
    pub async fn accept_offer(&self, offer: String, source: &str) -> Result<String, DialError> {
        self.inner
            .clone()
            .accept_offer(offer, format!("web {source}"))
            .await
    }
}

/// Carries WebRTC offers and answers between nodes, over the overlay: the
/// behaviour half of [`WebRtcTransport`] (made by
/// [`WebRtcTransport::signalling`]).
#[derive(Debug)]
pub struct Signalling {
    inbox: mpsc::Sender<Inbound>,
}

/// A signal as it arrived: from whom (as its header says) and over which
/// of this node's connections (the neighbour that delivered it, which no
/// one can forge).
#[derive(Debug)]
struct Inbound {
    from: NodeId,
    via: Option<plexus_network::ConnId>,
    signal: Signal,
}

impl NetworkBehavior for Signalling {
    type Msg = Signal;
    type Handler = NoHandler<Signal>;
    type Event = ();
    type Rpc = ();

    fn service_id(&self) -> ServiceId {
        SIGNALLING
    }

    fn on_message(&mut self, _agent: &mut BehaviorAgent<'_, Self>, msg: Incoming<Signal>) {
        let inbound = Inbound {
            from: msg.source,
            via: msg.conn,
            signal: msg.msg,
        };
        if let Err(e) = self.inbox.try_send(inbound) {
            log::warn!(
                "webrtc: signal from {} dropped: the transport's queue of {INBOX} is {}",
                msg.source,
                match e {
                    mpsc::error::TrySendError::Full(_) => "full",
                    mpsc::error::TrySendError::Closed(_) => "closed",
                }
            );
        }
    }
}

/// Peer connection events the handshake waits for.
struct PcEvents {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    /// Channels the remote opened (the answerer's two).
    channels: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PcEvents {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        if self.channels.try_send(dc.clone()).is_err() {
            // More channels than plexus opens: not ours to keep.
            let _ = dc.close().await;
        }
    }
}

/// A peer connection with its two channels, closed when the last holder
/// (handshake, reader, writer) lets go.
struct Peer {
    pc: Arc<dyn PeerConnection>,
    /// The offerer's channels, opened before its offer.
    local: Option<Channels>,
    /// The channels the remote opens, for the answerer.
    remote: tokio::sync::Mutex<mpsc::Receiver<Arc<dyn DataChannel>>>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// Closes the peer connection when the last holder lets go.
    _close: CloseOnDrop,
}

#[derive(Clone)]
struct Channels {
    reliable: Arc<dyn DataChannel>,
    unreliable: Arc<dyn DataChannel>,
}

/// Closes a peer connection when dropped.
struct CloseOnDrop(Arc<dyn PeerConnection>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let pc = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> DialError {
    DialError::Failed(format!("webrtc: {what}: {e}"))
}

impl Inner {
    fn key(&self) -> [u8; 32] {
        self.config.key()
    }

    /// A peer connection; the offerer's with its two channels.
    async fn new_peer(&self, offerer: bool) -> Result<Arc<Peer>, DialError> {
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (channels, remote) = mpsc::channel(2);
        let events = Arc::new(PcEvents {
            gathered: gathered_tx,
            state: state_tx,
            channels,
        });
        let mut config = RTCConfigurationBuilder::new();
        if !self.rtc.ice_servers.is_empty() {
            config = config.with_ice_servers(vec![RTCIceServer {
                urls: self.rtc.ice_servers.clone(),
                ..Default::default()
            }]);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_handler(events)
            .with_udp_addrs(self.rtc.udp_addrs.clone())
            .with_data_channel_send_buffer_limit(self.rtc.send_buffer.max(1))
            // The drivers run on the tokio workers. A thread of their own
            // measured 10% more throughput but 2.4x the round trip
            // (plexus-bench rtt/stream --transport webrtc, 2026-12-03).
            .with_dedicated_reactor_pool_size(0)
            .build()
            .await
            .map_err(|e| failed("peer connection", e))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let local = if offerer {
            let reliable = pc
                .create_data_channel(RELIABLE_CHANNEL, None)
                .await
                .map_err(|e| failed("data channel", e))?;
            let unreliable = pc
                .create_data_channel(
                    UNRELIABLE_CHANNEL,
                    Some(RTCDataChannelInit {
                        ordered: false,
                        max_retransmits: Some(0),
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| failed("data channel", e))?;
            Some(Channels {
                reliable,
                unreliable,
            })
        } else {
            None
        };
        Ok(Arc::new(Peer {
            _close: CloseOnDrop(pc.clone()),
            pc,
            local,
            remote: tokio::sync::Mutex::new(remote),
            gathered,
            state,
        }))
    }

    /// Sets `desc` as the local description and waits for candidate
    /// gathering: the SDP to send, candidates included.
    async fn local_sdp(
        &self,
        peer: &Peer,
        desc: RTCSessionDescription,
    ) -> Result<String, DialError> {
        peer.pc
            .set_local_description(desc)
            .await
            .map_err(|e| failed("local description", e))?;
        let mut gathered = peer.gathered.clone();
        // Host candidates gather in milliseconds; STUN may take longer, and
        // what was gathered by then is sent.
        if tokio::time::timeout(
            self.config.handshake_timeout / 4,
            gathered.wait_for(|done| *done),
        )
        .await
        .is_err()
        {
            log::debug!("webrtc: candidate gathering unfinished; sending what was gathered");
        }
        peer.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| failed("local description", "missing"))
    }

    async fn dial(
        self: Arc<Self>,
        target: NodeId,
        expected: NodeId,
    ) -> Result<Connection, DialError> {
        if target != expected {
            return Err(DialError::Failed(format!(
                "webrtc://{target} names another node than the one dialled ({expected})"
            )));
        }
        let handle = self
            .handle
            .get()
            .ok_or_else(|| {
                DialError::Failed(
                    "webrtc: the transport has no node to signal through \
                     (call WebRtcTransport::attach)"
                        .into(),
                )
            })?
            .upgrade()
            .ok_or_else(|| DialError::Failed("webrtc: the node has shut down".into()))?;
        let peer = self.new_peer(true).await?;
        let offer = peer
            .pc
            .create_offer(None)
            .await
            .map_err(|e| failed("offer", e))?;
        let sdp = self.local_sdp(&peer, offer).await?;
        let session = loop {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| failed("random", e))?;
            let s = u64::from_le_bytes(b);
            if !self.pending.lock().contains_key(&s) {
                break s;
            }
        };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(session, (target, tx));
        log::debug!("webrtc: offer {session:016x} to {target}");
        let _forget = Forget(&self.pending, session);
        handle
            .send(
                SIGNALLING,
                RouteRule::Node(target),
                &Signal::Offer {
                    session,
                    sdp: sdp.clone(),
                },
            )
            .await
            .map_err(|e| failed("sending the offer", e))?;
        drop(handle);
        let answer = match rx.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(why)) => return Err(failed("offer refused", why)),
            Err(_) => return Err(failed("signalling", "the transport stopped")),
        };
        set_remote(&peer, RTCSessionDescription::answer(answer.clone())).await?;
        self.finish(peer, Role::Dialer, &sdp, &answer, Some(expected))
            .await
    }

    /// Takes a handshake slot for `source`: `Err` when all of them, or
    /// the source's share, are taken.
    fn admit(self: &Arc<Self>, source: &str) -> Result<Slot, DialError> {
        let mut per = self.per_source.lock();
        let max = self.config.max_pending_handshakes.max(1);
        let max_per = self.config.max_pending_per_source.max(1);
        if self.handshakes.load(Ordering::Acquire) >= max {
            return Err(failed(
                "offer refused",
                format!("{max} handshakes already in progress"),
            ));
        }
        let n = per.entry(source.to_string()).or_insert(0);
        if *n >= max_per {
            return Err(failed(
                "offer refused",
                format!("{max_per} handshakes from {source} already in progress"),
            ));
        }
        *n += 1;
        self.handshakes.fetch_add(1, Ordering::AcqRel);
        Ok(Slot(self.clone(), source.to_string()))
    }

    async fn accept_offer(
        self: Arc<Self>,
        offer: String,
        source: String,
    ) -> Result<String, DialError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(failed("offer refused", "the transport has shut down"));
        }
        let slot = self.admit(&source)?;
        // One deadline for the whole handshake, answer included.
        let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
        let answered = tokio::time::timeout_at(deadline, async {
            let peer = self.new_peer(false).await?;
            set_remote(&peer, RTCSessionDescription::offer(offer.clone())).await?;
            let answer = peer
                .pc
                .create_answer(None)
                .await
                .map_err(|e| failed("answer", e))?;
            let sdp = self.local_sdp(&peer, answer).await?;
            Ok::<_, DialError>((peer, sdp))
        })
        .await;
        let (peer, sdp) = answered.unwrap_or(Err(DialError::Timeout))?;
        let inner = self.clone();
        let answer = sdp.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let result = tokio::time::timeout_at(
                deadline,
                inner.finish(peer, Role::Listener, &offer, &answer, None),
            )
            .await
            .unwrap_or(Err(DialError::Timeout));
            match result {
                Ok(conn) => {
                    if let Some(incoming) = inner.incoming.get() {
                        let _ = incoming.send(conn).await;
                    }
                }
                Err(e) => log::info!("webrtc: incoming handshake from {source} failed: {e}"),
            }
        });
        self.track(task);
        Ok(sdp)
    }

    fn track(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Once descriptions are set on both sides: waits for the reliable
    /// channel, exchanges hellos, and makes the connection.
    async fn finish(
        &self,
        peer: Arc<Peer>,
        role: Role,
        offer: &str,
        answer: &str,
        expected: Option<NodeId>,
    ) -> Result<Connection, DialError> {
        let key = self.key();
        let channels = match &peer.local {
            Some(c) => c.clone(),
            None => remote_channels(&peer).await?,
        };
        // Open (DTLS is done then); the peer's first message may come with it.
        let mut first = None;
        let open = matches!(
            channels.reliable.ready_state().await,
            Ok(RTCDataChannelState::Open)
        );
        if !open {
            loop {
                match next_event(&channels.reliable).await {
                    Some(DataChannelEvent::OnOpen) => break,
                    Some(DataChannelEvent::OnMessage(m)) => {
                        first = Some(m.data);
                        break;
                    }
                    None | Some(DataChannelEvent::OnClose) | Some(DataChannelEvent::OnError) => {
                        return Err(failed(
                            "handshake",
                            "the data channel closed before opening",
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        // The transcript: our own certificate's fingerprint (from the SDP
        // this node made) and the certificate the peer actually presented
        // in DTLS, not what its SDP says: signalling passed through other
        // hands, and an SDP can be made to say two things.
        let own = hello::fingerprint(if role == Role::Dialer { offer } else { answer })
            .map_err(|e| failed("own SDP", e))?;
        let theirs_fp = remote_fingerprint(&peer.pc).await?;
        let t = match role {
            Role::Dialer => hello::transcript(&own, &theirs_fp),
            Role::Listener => hello::transcript(&theirs_fp, &own),
        };
        let mine = hello::hello(&self.identity, &key, &t, role).map_err(|e| failed("hello", e))?;
        let send = |msg: Vec<u8>| {
            let dc = channels.reliable.clone();
            async move {
                dc.send(BytesMut::from(&msg[..]))
                    .await
                    .map_err(|e| failed("hello", e))
            }
        };
        let recv = |first: Option<BytesMut>| {
            let dc = channels.reliable.clone();
            async move {
                if let Some(m) = first {
                    return Ok(m);
                }
                loop {
                    match next_event(&dc).await {
                        Some(DataChannelEvent::OnMessage(m)) => return Ok(m.data),
                        None
                        | Some(DataChannelEvent::OnClose)
                        | Some(DataChannelEvent::OnError) => {
                            return Err(failed("handshake", "the peer closed before its hello"))
                        }
                        Some(_) => {}
                    }
                }
            }
        };
        // The offerer proves itself first; the answerer answers with its
        // own hello only once the offerer's checks out (else with a
        // refusal), so an unkeyed peer learns nothing about the network
        // key from it to guess with.
        let node = match role {
            Role::Dialer => {
                send(mine).await?;
                let theirs = recv(first).await?;
                if let Some(why) = hello::refusal_reason(&theirs) {
                    return Err(match why {
                        hello::HelloError::NetworkKey => DialError::NetworkKey,
                        other => failed("the peer refused our hello", other),
                    });
                }
                hello::check_hello(&theirs, &key, &t, Role::Listener).map_err(|e| match e {
                    hello::HelloError::NetworkKey => DialError::NetworkKey,
                    other => failed("hello", other),
                })?
            }
            Role::Listener => {
                let theirs = recv(first).await?;
                match hello::check_hello(&theirs, &key, &t, Role::Dialer) {
                    Ok(node) => {
                        send(mine).await?;
                        node
                    }
                    Err(e) => {
                        // The refusal reaches the peer before the channel
                        // closes, so it reports the real reason.
                        send(hello::refusal(&e).to_vec()).await?;
                        delivered(&channels.reliable, self.config.close_timeout).await;
                        return Err(match e {
                            hello::HelloError::NetworkKey => DialError::NetworkKey,
                            other => failed("hello", other),
                        });
                    }
                }
            }
        };
        if let Some(expected) = expected {
            if node != expected {
                return Err(DialError::IdentityMismatch {
                    expected,
                    actual: node,
                });
            }
        }
        let max = self.config.max_frame_size;
        let remote = if role == Role::Dialer { answer } else { offer };
        // At least 1 KiB a message, whatever the peer says: a peer may not
        // make this node send a message per byte.
        let chunk = channel::CHUNK.min(hello::max_message_size(remote).max(1024));
        Ok(Connection {
            node,
            addr: Address::WebRtc(node),
            writer: Box::new(Writer {
                _peer: peer.clone(),
                chunk,
                channels: channels.clone(),
                max,
                close_timeout: self.config.close_timeout,
            }),
            reader: Box::new(Reader {
                _close: CloseOnDrop(peer.pc.clone()),
                peer,
                channels,
                max,
                unreliable_in: self.unreliable_in.clone(),
            }),
            rtt: None,
        })
    }

    /// Hands an answer to the dial waiting for it, if `from` is the node
    /// it dialled.
    fn answered(&self, from: NodeId, session: u64, answer: Result<String, String>) {
        let mut pending = self.pending.lock();
        match pending.get(&session) {
            Some((target, _)) if *target == from => {
                if let Some((_, tx)) = pending.remove(&session) {
                    let _ = tx.send(answer);
                }
            }
            Some(_) => log::info!(
                "webrtc: an answer for a session with another node came from {from}: ignored"
            ),
            None => {}
        }
    }

    /// Handles a signal from `from`.
    fn on_signal(
        self: &Arc<Self>,
        from: NodeId,
        via: Option<plexus_network::ConnId>,
        signal: Signal,
    ) {
        log::debug!("webrtc: signal from {from}: {signal:?}");
        match signal {
            Signal::Offer { session, sdp } => {
                let Ok(permit) = self.answering.clone().try_acquire_owned() else {
                    log::warn!(
                        "webrtc: offer from {from} dropped: {} offers already being answered",
                        self.config.max_pending_handshakes
                    );
                    return;
                };
                let inner = self.clone();
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    // Counted per neighbour that delivered it: the author
                    // named in a routed header can be anyone.
                    let source = match via {
                        Some(conn) => format!("neighbour {conn}"),
                        None => format!("node {from}"),
                    };
                    let reply = match inner.clone().accept_offer(sdp, source).await {
                        Ok(sdp) => Signal::Answer { session, sdp },
                        Err(e) => {
                            log::info!("webrtc: offer from {from} refused: {e}");
                            Signal::Refused {
                                session,
                                why: e.to_string(),
                            }
                        }
                    };
                    let Some(handle) = inner.handle.get().and_then(|h| h.upgrade()) else {
                        return;
                    };
                    if let Err(e) = handle.send(SIGNALLING, RouteRule::Node(from), &reply).await {
                        log::info!("webrtc: answer to {from} not sent: {e}");
                    }
                });
                self.track(task);
            }
            Signal::Answer { session, sdp } => self.answered(from, session, Ok(sdp)),
            Signal::Refused { session, why } => {
                // A peer's words, shown in logs and errors: printable, short.
                let why: String = why.chars().filter(|c| !c.is_control()).take(200).collect();
                self.answered(from, session, Err(why))
            }
        }
    }
}

/// The two channels the offerer opened, by label.
async fn remote_channels(peer: &Peer) -> Result<Channels, DialError> {
    let mut remote = peer.remote.lock().await;
    let (mut reliable, mut unreliable) = (None, None);
    while reliable.is_none() || unreliable.is_none() {
        let dc = remote
            .recv()
            .await
            .ok_or_else(|| failed("handshake", "closed before the data channels opened"))?;
        match dc.label().await.unwrap_or_default().as_str() {
            RELIABLE_CHANNEL => reliable = Some(dc),
            UNRELIABLE_CHANNEL => unreliable = Some(dc),
            other => {
                log::info!("webrtc: closing a data channel plexus does not use ({other:?})");
                let _ = dc.close().await;
            }
        }
    }
    match (reliable, unreliable) {
        (Some(reliable), Some(unreliable)) => Ok(Channels {
            reliable,
            unreliable,
        }),
        _ => Err(failed("handshake", "missing data channels")),
    }
}

/// Removes a dial's pending entry however the dial ends.
struct Forget<'a>(&'a Mutex<HashMap<u64, (NodeId, AnswerTx)>>, u64);

/// Where a dial's answer (or the refusal's reason) goes.
type AnswerTx = oneshot::Sender<Result<String, String>>;

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// An incoming handshake's place among `max_pending_handshakes` (and its
/// source's among `max_pending_per_source`).
struct Slot(Arc<Inner>, String);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self.0.per_source.lock();
        if let Some(n) = per.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.1);
            }
        }
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Reader {
    peer: Arc<Peer>,
    /// Closes the peer connection when the reader ends or is dropped
    /// (the runtime aborts readers): a writer waiting for send-buffer room
    /// that a dead peer will never acknowledge is released then.
    _close: CloseOnDrop,
    channels: Channels,
    max: usize,
    unreliable_in: Arc<AtomicU64>,
}

impl FrameReader for Reader {
    fn run(self: Box<Self>, sink: FrameSink) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let mut stream = DcRead::new(self.channels.reliable.clone());
            let mut state = self.peer.state.clone();
            let failed = async {
                let _ = state
                    .wait_for(|s| {
                        matches!(
                            s,
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                        )
                    })
                    .await;
            };
            let end = tokio::select! {
                r = crate::framing::read_loop(&mut stream, self.max, &sink) => r,
                r = read_unreliable(&self.channels.unreliable, self.max, &sink, &self.unreliable_in) => r,
                _ = failed => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the peer connection failed",
                )),
            };
            end
        })
    }
}

/// Sets the peer's SDP (checked as it is made).
async fn set_remote(
    peer: &Peer,
    desc: webrtc::error::Result<RTCSessionDescription>,
) -> Result<(), DialError> {
    let desc = desc.map_err(|e| failed("remote description", e))?;
    peer.pc
        .set_remote_description(desc)
        .await
        .map_err(|e| failed("remote description", e))
}

/// SHA-256 of the certificate the peer presented in DTLS.
async fn remote_fingerprint(pc: &Arc<dyn PeerConnection>) -> Result<[u8; 32], DialError> {
    let sctp = pc
        .sctp()
        .await
        .ok_or_else(|| failed("handshake", "no SCTP transport"))?;
    let certs = sctp
        .transport()
        .get_remote_certificates()
        .await
        .map_err(|e| failed("handshake", e))?;
    let cert = certs
        .first()
        .ok_or_else(|| failed("handshake", "the peer presented no DTLS certificate"))?;
    let mut fp = [0u8; 32];
    fp.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert).as_ref());
    Ok(fp)
}

/// Waits (at most `timeout`) until the peer has acknowledged everything
/// sent on `dc`. The channel's events belong to its reader, so this
/// checks the count every few milliseconds rather than waiting for one.
async fn delivered(dc: &Arc<dyn DataChannel>, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        while dc.outstanding_bytes().await.unwrap_or(0) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Each message of the unreliable channel is one frame.
async fn read_unreliable(
    dc: &Arc<dyn DataChannel>,
    max: usize,
    sink: &FrameSink,
    counter: &AtomicU64,
) -> io::Result<()> {
    loop {
        match next_event(dc).await {
            Some(DataChannelEvent::OnMessage(m)) => {
                if m.data.len() > max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("oversized frame: {} bytes, maximum {max}", m.data.len()),
                    ));
                }
                counter.fetch_add(1, Ordering::Relaxed);
                if sink.deliver(vec![m.data.to_vec()]).await.is_err() {
                    return Ok(());
                }
            }
            // The reliable channel decides when the connection ends.
            None | Some(DataChannelEvent::OnClose) => std::future::pending::<()>().await,
            Some(_) => {}
        }
    }
}

struct Writer {
    /// Keeps the peer connection open while the writer runs.
    _peer: Arc<Peer>,
    /// Largest message to send.
    chunk: usize,
    channels: Channels,
    max: usize,
    close_timeout: Duration,
}

impl FrameWriter for Writer {
    fn run(self: Box<Self>, mut queue: OutboundQueue) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(UNRELIABLE_QUEUE);
            let unreliable = self.channels.unreliable.clone();
            let sender = tokio::spawn(async move {
                while let Some(frame) = rx.recv().await {
                    // Loss is allowed here: a frame the channel refuses is
                    // dropped, and the next one tried.
                    if let Err(e) = unreliable.send(BytesMut::from(&frame[..])).await {
                        log::debug!("webrtc: unreliable frame not sent: {e}");
                    }
                }
            });
            let datagram = |frame: &[u8]| {
                if frame.len() > self.chunk {
                    return false; // too large for one message: reliable
                }
                match tx.try_send(frame.to_vec()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        log::debug!("webrtc: unreliable queue full: a frame dropped");
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            };
            let mut w = DcWrite::new(self.channels.reliable.clone(), self.chunk);
            let end = crate::framing::write_loop(&mut w, &mut queue, self.max, datagram).await;
            drop(tx);
            sender.abort();
            // What was sent reaches the peer before the channel closes
            // (bounded by the close timeout), so it reads to a clean end.
            let reliable = self.channels.reliable.clone();
            delivered(&reliable, self.close_timeout).await;
            let _ = reliable.close().await;
            end.map(|_| ())
        })
    }
}

impl Transport for WebRtcTransport {
    fn scheme(&self) -> &'static str {
        "webrtc"
    }

    /// None: WebRTC peers are reached through signalling, not an address
    /// one could dial without it.
    fn listen_addrs(&self) -> Vec<Address> {
        Vec::new()
    }

    fn start(&self, incoming: mpsc::Sender<Connection>) {
        let _ = self.inner.incoming.set(incoming);
        let Some(mut inbox) = self.inner.inbox_rx.lock().take() else {
            return;
        };
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            while let Some(Inbound { from, via, signal }) = inbox.recv().await {
                inner.on_signal(from, via, signal);
            }
        });
        self.inner.track(task);
    }

    fn dial(
        &self,
        addr: Address,
        expected: NodeId,
    ) -> BoxFuture<'static, Result<Connection, DialError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Address::WebRtc(target) = addr else {
                return Err(DialError::NoTransport(addr.to_string()));
            };
            let timeout = inner.config.handshake_timeout;
            tokio::time::timeout(timeout, inner.dial(target, expected))
                .await
                .unwrap_or(Err(DialError::Timeout))
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.closed.store(true, Ordering::Release);
            for t in inner.tasks.lock().drain(..) {
                t.abort();
            }
            inner.pending.lock().clear();
        })
    }
}
