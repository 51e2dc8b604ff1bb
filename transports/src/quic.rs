//! QUIC on quinn.
//!
//! One QUIC connection per neighbour. The dialler opens one bidirectional
//! stream that carries every reliable data frame (the application's and
//! forwarded ones), length-delimited (a `u32` length, then the frame), in
//! order (one long-lived stream: no per-message stream setup). Control
//! frames (behaviours' own, such as pings and routing sync, and credit
//! grants) go on a unidirectional stream each side opens when it first
//! has one, at a higher priority: a ping never waits behind data QUIC has
//! already taken, so a slow or lossy link under load does not look dead.
//! A peer may open one stream of each kind. Frames a behaviour
//! marks unreliable travel as QUIC datagrams when they fit the path's
//! datagram size, else on the stream. Keep-alive and idle timeout come from
//! [`TransportConfig`]. Authentication is mutual TLS 1.3 by node key plus
//! the network-key proofs ([`crate::tls`]), exchanged as the first frames on
//! the stream.
//!
//! Closing: the writer finishes its stream, waits until the peer has
//! acknowledged it (at most [`TransportConfig::close_timeout`]), then
//! closes the connection, so queued frames are delivered before the close.
//! [`QuicTransport::client`] only dials, from an ephemeral UDP port.
//!
//! Accepting never waits for a handshake slot: under a flood the handshake
//! stalled longest is cut, and once half the slots are taken, addresses
//! not yet validated get a stateless retry (see
//! [`TransportConfig::max_pending_handshakes`]).

use crate::framing::{read_frame, read_loop, write_frame, write_loop};
use crate::tls::{self, Role};
use crate::{Identity, TransportConfig};
use bytes::Bytes;
use parking_lot::Mutex;
use plexus_network::runtime::{
    BoxFuture, Connection, DialError, FrameReader, FrameSink, FrameWriter, Lane, Outbound,
    OutboundQueue, Transport,
};
use plexus_network::{Address, NodeId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The QUIC transport. See the [module docs](self).
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    /// Whether it accepts (and advertises `local`); a client endpoint only dials.
    listening: bool,
    config: TransportConfig,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuicTransport({})", self.local)
    }
}

fn other<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    io::Error::other(e)
}

impl QuicTransport {
    /// Binds a UDP socket at `addr` (port 0 picks one) for node `identity`,
    /// to accept and to dial. Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        config: TransportConfig,
    ) -> io::Result<Self> {
        Self::new(addr, identity, config, true)
    }

    /// A QUIC endpoint that only dials (on an ephemeral UDP port, not
    /// advertised): a node that listens on TCP alone can still reach
    /// `quic://` peers. Must be called inside a tokio runtime.
    pub fn client(identity: &Identity, config: TransportConfig) -> io::Result<Self> {
        // A dual-stack socket reaches IPv4 and IPv6 peers; where IPv6 is
        // off, an IPv4 one.
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        Self::new(v6, identity, config.clone(), false)
            .or_else(|_| Self::new(SocketAddr::from(([0, 0, 0, 0], 0)), identity, config, false))
    }

    fn new(
        addr: SocketAddr,
        identity: &Identity,
        config: TransportConfig,
        listening: bool,
    ) -> io::Result<Self> {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(config.keep_alive));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout).map_err(other)?,
        ));
        // The data stream and one control stream per side: nothing else.
        transport.max_concurrent_bidi_streams(1u32.into());
        transport.max_concurrent_uni_streams(1u32.into());
        let transport = Arc::new(transport);

        let server = QuicServerConfig::try_from(tls::server_config(identity).map_err(other)?)
            .map_err(other)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport.clone());
        let client = QuicClientConfig::try_from(tls::client_config(identity).map_err(other)?)
            .map_err(other)?;
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(transport);

        let socket = udp_socket(addr)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| io::Error::other("QUIC needs a tokio runtime"))?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            listening.then_some(server),
            socket,
            runtime,
        )?;
        endpoint.set_default_client_config(client);
        let local = endpoint.local_addr()?;
        Ok(QuicTransport {
            endpoint,
            local,
            listening,
            config,
            accept_task: Mutex::new(None),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Receive buffer asked for the UDP socket: a burst of a thousand
/// Initials (1.2 MB) fits, so a flood's burst does not push an honest
/// peer's Initial out of a default-sized buffer (it would then wait for
/// its retransmission, a second later). The kernel may grant less
/// (`net.core.rmem_max`).
const UDP_RECV_BUFFER: usize = 4 << 20;

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the system allows it (the client endpoint).
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        log::debug!("quic {addr}: cannot raise the UDP receive buffer: {e}");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Close codes.
const NETWORK_KEY: u32 = 1;
const IDENTITY: u32 = 2;

fn peer_id(conn: &quinn::Connection) -> Result<NodeId, DialError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
    tls::proven_id(certs.as_deref().map(|c| &c[..]))
}

async fn prove(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    role: Role,
    key: &[u8; 32],
) -> Result<(), DialError> {
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, tls::exporter_label(), b"")
        .map_err(|_| DialError::Failed("keying material export failed".into()))?;
    // A peer that rejects our proof closes with NETWORK_KEY at once, which
    // may discard its own proof in flight: read that close as the answer.
    let io = |e: io::Error| match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == NETWORK_KEY.into() =>
        {
            DialError::NetworkKey
        }
        _ => DialError::Failed(e.to_string()),
    };
    write_frame(send, &tls::proof(key, &exporter, role))
        .await
        .map_err(io)?;
    let got = read_frame(recv, 64).await.map_err(io)?.unwrap_or_default();
    if tls::check_proof(key, &exporter, role.peer(), &got) {
        Ok(())
    } else {
        Err(DialError::NetworkKey)
    }
}

fn connection(
    conn: quinn::Connection,
    node: NodeId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    config: &TransportConfig,
) -> Connection {
    let max = config.max_frame_size;
    let rtt_conn = conn.clone();
    Connection {
        node,
        addr: Address::Quic(conn.remote_address()),
        writer: Box::new(Writer {
            conn: conn.clone(),
            send: BufWriter::with_capacity(64 * 1024, send),
            max,
            close_timeout: config.close_timeout,
        }),
        reader: Box::new(Reader { conn, recv, max }),
        rtt: Some(Arc::new(move || rtt_conn.rtt())),
    }
}

struct Reader {
    conn: quinn::Connection,
    recv: quinn::RecvStream,
    max: usize,
}

/// Reads the peer's control stream: the first unidirectional stream it
/// opens, when it has a control frame to send. Never returns before the
/// stream ends or fails; pends forever if none is opened.
async fn control_stream(conn: quinn::Connection, max: usize, sink: FrameSink) -> io::Result<()> {
    let recv = match conn.accept_uni().await {
        Ok(r) => r,
        // The connection is closing: the data stream's reader says why.
        Err(_) => return std::future::pending().await,
    };
    let mut recv = recv;
    read_loop(&mut recv, max, &sink).await?;
    // The peer finished its control stream (closing): the data stream
    // ends the connection.
    std::future::pending().await
}

impl FrameReader for Reader {
    fn run(mut self: Box<Self>, sink: FrameSink) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let max = self.max;
            let conn = self.conn.clone();
            let datagrams = {
                let sink = sink.clone();
                async move {
                    while let Ok(d) = conn.read_datagram().await {
                        if d.len() > max {
                            log::debug!("quic: {}-byte datagram over the maximum dropped", d.len());
                            continue;
                        }
                        if sink.deliver(vec![d.to_vec()]).await.is_err() {
                            break;
                        }
                    }
                }
            };
            let control = control_stream(self.conn.clone(), max, sink.clone());
            tokio::select! {
                r = read_loop(&mut self.recv, max, &sink) => r,
                r = control => r,
                () = datagrams => Ok(()),
            }
        })
    }
}

struct Writer {
    conn: quinn::Connection,
    send: BufWriter<quinn::SendStream>,
    max: usize,
    close_timeout: Duration,
}

impl FrameWriter for Writer {
    fn run(mut self: Box<Self>, queue: OutboundQueue) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let conn = self.conn.clone();
            let datagram = |bytes: &[u8]| {
                conn.max_datagram_size().is_some_and(|m| bytes.len() <= m)
                    && conn.send_datagram(Bytes::copy_from_slice(bytes)).is_ok()
            };
            let (control, mut data) = queue.split();
            let max = self.max;
            let mut control = Box::pin(control_writer(conn.clone(), control, max));
            let close_timeout = self.close_timeout;
            let end = {
                let mut written = Box::pin(async {
                    let end = write_loop(&mut self.send, &mut data, max, datagram).await;
                    let _ = self.send.flush().await;
                    end
                });
                // The data lane carries the close, after its data: when it
                // ends, the control stream gets a moment to finish too.
                tokio::select! {
                    end = &mut written => {
                        let _ = tokio::time::timeout(close_timeout, &mut control).await;
                        end
                    }
                    r = &mut control => match r {
                        Err(e) => Err(e),
                        Ok(()) => written.await,
                    },
                }
            };
            let stream = self.send.get_mut();
            let _ = stream.finish();
            let _ = tokio::time::timeout(self.close_timeout, stream.stopped()).await;
            let reason = match &end {
                Ok(Some(why)) => why.clone(),
                _ => "closed".to_string(),
            };
            self.conn.close(0u32.into(), reason.as_bytes());
            end.map(|_| ())
        })
    }
}

/// Writes the control lane on a unidirectional stream of its own, opened
/// at the first control frame, at a higher priority than the data stream:
/// quinn sends its bytes first, so a neighbour's pings and routes never
/// wait behind data already handed to QUIC. Ends `Ok` when the lane ends.
async fn control_writer(conn: quinn::Connection, mut lane: Lane, max: usize) -> io::Result<()> {
    let mut first = Vec::new();
    if lane.next_batch(&mut first, 1).await.is_none() {
        return Ok(());
    }
    let stream = conn.open_uni().await.map_err(other)?;
    let _ = stream.set_priority(1);
    let mut w = BufWriter::with_capacity(16 * 1024, stream);
    let datagram = |bytes: &[u8]| {
        conn.max_datagram_size().is_some_and(|m| bytes.len() <= m)
            && conn.send_datagram(Bytes::copy_from_slice(bytes)).is_ok()
    };
    let mut lane = Prefixed { first, lane };
    let _ = write_loop(&mut w, &mut lane, max, datagram).await?;
    w.flush().await?;
    let _ = w.get_mut().finish();
    Ok(())
}

/// A lane with an item already taken from it.
struct Prefixed {
    first: Vec<Outbound>,
    lane: Lane,
}

impl crate::framing::Source for Prefixed {
    async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()> {
        if !self.first.is_empty() {
            out.append(&mut self.first);
            self.lane.take_ready(out, max);
            return Some(());
        }
        self.lane.next_batch(out, max).await
    }
    fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        let n = self.first.len();
        out.append(&mut self.first);
        n + self.lane.take_ready(out, max)
    }
    fn recycle(&mut self, buf: Vec<u8>) {
        self.lane.recycle(buf);
    }
}

impl Transport for QuicTransport {
    fn scheme(&self) -> &'static str {
        "quic"
    }

    fn listen_addrs(&self) -> Vec<Address> {
        if self.listening {
            vec![Address::Quic(self.local)]
        } else {
            Vec::new()
        }
    }

    fn start(&self, incoming: mpsc::Sender<Connection>) {
        if !self.listening {
            return;
        }
        let endpoint = self.endpoint.clone();
        let config = self.config.clone();
        let admission = Arc::new(crate::accept::Admission::new("quic", self.local, &config));
        let task = tokio::spawn(async move {
            while let Some(inc) = endpoint.accept().await {
                let remote = inc.remote_address();
                // Under pressure, an address that has not proven it can
                // receive gets a stateless retry: it costs this node no
                // state until it comes back with the token.
                if admission.under_pressure() && !inc.remote_address_validated() && inc.may_retry()
                {
                    if inc.retry().is_err() {
                        admission.log().refused(remote, "stateless retry failed");
                    }
                    continue;
                }
                let config = config.clone();
                // Stages: 1 TLS done, 2 the stream opened.
                admission.spawn(remote, incoming.clone(), |stage| async move {
                    let failed = |e: String| DialError::Failed(e);
                    let conn = inc.await.map_err(|e| failed(e.to_string()))?;
                    stage.reached(1);
                    let node = peer_id(&conn)?;
                    let (mut send, mut recv) =
                        conn.accept_bi().await.map_err(|e| failed(e.to_string()))?;
                    stage.reached(2);
                    if let Err(e) =
                        prove(&conn, &mut send, &mut recv, Role::Listener, &config.key()).await
                    {
                        conn.close(NETWORK_KEY.into(), b"network key");
                        return Err(e);
                    }
                    Ok(connection(conn, node, send, recv, &config))
                });
            }
        });
        *self.accept_task.lock() = Some(task);
    }

    fn dial(
        &self,
        addr: Address,
        expected: NodeId,
    ) -> BoxFuture<'static, Result<Connection, DialError>> {
        let endpoint = self.endpoint.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let Address::Quic(remote) = addr else {
                return Err(DialError::NoTransport(addr.to_string()));
            };
            let failed = |e: String| DialError::Failed(e);
            let conn = endpoint
                .connect(remote, tls::SERVER_NAME)
                .map_err(|e| failed(e.to_string()))?
                .await
                .map_err(|e| failed(e.to_string()))?;
            let actual = peer_id(&conn)?;
            if actual != expected {
                conn.close(IDENTITY.into(), b"identity mismatch");
                return Err(DialError::IdentityMismatch { expected, actual });
            }
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(e.to_string()))?;
            if let Err(e) = prove(&conn, &mut send, &mut recv, Role::Dialer, &config.key()).await {
                conn.close(NETWORK_KEY.into(), b"network key");
                return Err(e);
            }
            Ok(connection(conn, actual, send, recv, &config))
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        if let Some(t) = self.accept_task.lock().take() {
            t.abort();
        }
        let endpoint = self.endpoint.clone();
        let grace = self.config.close_timeout;
        Box::pin(async move {
            endpoint.close(0u32.into(), b"shutdown");
            let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
        })
    }
}
