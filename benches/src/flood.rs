//! Handshake floods against a real listener on 127.0.0.1, the way an
//! attacker would send them, and an honest dial timed while one is held:
//! used by `plexus-bench flood` and by the flood tests.
//!
//! - [`Stall::Silent`] (TCP): connections that never send a byte.
//! - [`Stall::Initial`] (QUIC): one real client Initial each (built with
//!   quinn-proto, sans-IO), then silence: nothing the server sends back is
//!   ever read.
//! - [`Stall::NoStream`] (QUIC): TLS completes with a valid identity, then
//!   the client never opens the stream.
//! - [`Stall::NoProof`] (QUIC): the stream is opened with one byte of the
//!   network-key proof, and the rest never comes.

use plexus::runtime::{Connection, Transport};
use plexus::transports::quic::QuicTransport;
use plexus::transports::tcp::TcpTransport;
use plexus::transports::tls;
use plexus::{Address, Identity, NodeId, TransportConfig};
use quinn::crypto::rustls::QuicClientConfig;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How the flood's connections stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stall {
    /// TCP connections that never send a byte.
    Silent,
    /// QUIC: a client Initial, then silence.
    Initial,
    /// QUIC: TLS done, no stream ever opened.
    NoStream,
    /// QUIC: stream opened, the network-key proof never completed.
    NoProof,
}

impl Stall {
    /// Whether it floods the TCP listener (else the QUIC one).
    pub fn is_tcp(self) -> bool {
        self == Stall::Silent
    }
}

/// What keeps a flood's connections open until dropped.
pub struct Flood {
    _tcp: Vec<tokio::net::TcpStream>,
    _quic: Vec<quinn::Connection>,
    _streams: Vec<quinn::SendStream>,
    _proto: Vec<quinn_proto::Connection>,
    _endpoint: Option<quinn::Endpoint>,
    _socket: Option<std::net::UdpSocket>,
    /// Connections (or Initials) sent.
    pub sent: usize,
    /// Of those, how many the listener let through to the stage they stall
    /// at (the others it refused, cut or asked to retry first).
    pub held: usize,
}

/// A listening node's transport, its address and id, and the channel its
/// authenticated connections arrive on.
pub struct Listener {
    /// The transport (started).
    pub transport: Arc<dyn Transport>,
    /// Its address.
    pub addr: Address,
    /// The node it authenticates as.
    pub node: NodeId,
    /// Authenticated incoming connections.
    pub incoming: mpsc::Receiver<Connection>,
}

/// Starts a listener on 127.0.0.1 for `stall`'s transport with `config`.
pub async fn listener(stall: Stall, config: TransportConfig) -> io::Result<Listener> {
    let id = Identity::generate().map_err(io::Error::other)?;
    let local: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let transport: Arc<dyn Transport> = if stall.is_tcp() {
        Arc::new(TcpTransport::bind(local, &id, config).await?)
    } else {
        Arc::new(QuicTransport::bind(local, &id, config)?)
    };
    let (tx, incoming) = mpsc::channel(1024);
    transport.start(tx);
    let addr = transport.listen_addrs()[0];
    Ok(Listener {
        transport,
        addr,
        node: id.node_id(),
        incoming,
    })
}

fn socket_addr(addr: Address) -> SocketAddr {
    match addr {
        Address::Tcp(a) | Address::Quic(a) => a,
        other => panic!("not an IP address: {other}"),
    }
}

fn quic_client_config(id: &Identity) -> io::Result<quinn::ClientConfig> {
    let crypto = QuicClientConfig::try_from(tls::client_config(id).map_err(io::Error::other)?)
        .map_err(io::Error::other)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    // Attempts the listener cut are given up after a few seconds, not the
    // default 30; those it holds are kept alive meanwhile.
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(3)).map_err(io::Error::other)?,
    ));
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Opens `n` connections to `target` that stall as `stall` says, and
/// returns once every one has reached its stall (or been turned away).
pub async fn flood(stall: Stall, target: Address, n: usize) -> io::Result<Flood> {
    let addr = socket_addr(target);
    let mut f = Flood {
        _tcp: Vec::new(),
        _quic: Vec::new(),
        _streams: Vec::new(),
        _proto: Vec::new(),
        _endpoint: None,
        _socket: None,
        sent: n,
        held: 0,
    };
    match stall {
        Stall::Silent => {
            for _ in 0..n {
                f._tcp.push(tokio::net::TcpStream::connect(addr).await?);
            }
            f.held = n;
        }
        Stall::Initial => {
            let id = Identity::generate().map_err(io::Error::other)?;
            let config = quic_client_config(&id)?;
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let mut ep = quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            );
            #[allow(clippy::disallowed_methods)] // quinn-proto runs on real time here
            let now = std::time::Instant::now();
            let mut buf = Vec::new();
            for _ in 0..n {
                let (_, mut conn) = ep
                    .connect(now, config.clone(), addr, tls::SERVER_NAME)
                    .map_err(io::Error::other)?;
                while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                    socket.send_to(&buf[..t.size], t.destination)?;
                    buf.clear();
                }
                f._proto.push(conn);
            }
            f._socket = Some(socket);
            f.held = n;
        }
        Stall::NoStream | Stall::NoProof => {
            let id = Identity::generate().map_err(io::Error::other)?;
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))?;
            endpoint.set_default_client_config(quic_client_config(&id)?);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..n {
                let connecting = endpoint
                    .connect(addr, tls::SERVER_NAME)
                    .map_err(io::Error::other)?;
                tasks.spawn(async move {
                    let conn = connecting.await.ok()?;
                    if stall == Stall::NoStream {
                        return Some((conn, None));
                    }
                    let (mut send, _recv) = conn.open_bi().await.ok()?;
                    // One byte of the 4-byte length of the proof frame: the
                    // listener sees the stream and waits for the rest.
                    send.write_all(&[0]).await.ok()?;
                    Some((conn, Some(send)))
                });
            }
            while let Some(r) = tasks.join_next().await {
                if let Ok(Some((conn, send))) = r {
                    f._quic.push(conn);
                    f._streams.extend(send);
                    f.held += 1;
                }
            }
            f._endpoint = Some(endpoint);
        }
    }
    Ok(f)
}

/// Dials `listener` as an honest peer; returns how long the dial took.
pub async fn honest_dial(
    stall: Stall,
    target: Address,
    node: NodeId,
    limit: Duration,
) -> io::Result<Duration> {
    let id = Identity::generate().map_err(io::Error::other)?;
    let config = TransportConfig::default();
    let client: Arc<dyn Transport> = if stall.is_tcp() {
        Arc::new(TcpTransport::client(&id, config)?)
    } else {
        Arc::new(QuicTransport::client(&id, config)?)
    };
    #[allow(clippy::disallowed_methods)] // a benchmark measures real time
    let start = std::time::Instant::now();
    let conn = tokio::time::timeout(limit, client.dial(target, node))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the honest dial timed out"))?
        .map_err(io::Error::other)?;
    let took = start.elapsed();
    drop(conn);
    client.shutdown().await;
    Ok(took)
}
