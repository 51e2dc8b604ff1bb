//! TLS 1.3 over TCP.
//!
//! Dial: TCP connect, TLS handshake (mutual, by node key), the peer's id
//! checked against the one dialled, network-key proofs exchanged as the
//! first frames. Then length-delimited frames (a `u32` length, then the frame) both
//! ways. `TCP_NODELAY` is set; frames are batched into one TLS record write
//! per flush.
//!
//! Accepting: a failed `accept` (out of file descriptors, say) is logged and
//! retried after a pause that doubles from 10 ms to 1 s, so the loop never
//! spins; each accepted connection's handshake runs in its own task within
//! [`TransportConfig::handshake_timeout`], admitted without waiting: a
//! flood of silent connections is cut, least progressed first, rather than
//! locking honest peers out (see [`TransportConfig::max_pending_handshakes`]).
//! [`TcpTransport::client`] only dials.

use crate::framing::{read_frame, read_loop, write_frame, write_loop};
use crate::tls::{self, Role};
use crate::{Identity, TransportConfig};
use parking_lot::Mutex;
use plexus_network::runtime::{
    BoxFuture, Connection, DialError, FrameReader, FrameSink, FrameWriter, OutboundQueue, Transport,
};
use plexus_network::{Address, NodeId};
use rustls::pki_types::ServerName;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

type Tls = TlsStream<TcpStream>;

/// First wait after a failed `accept`, and the longest.
const ACCEPT_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The TCP transport. See the [module docs](self).
pub struct TcpTransport {
    /// Where it listens; `None` for a dial-only transport.
    local: Option<SocketAddr>,
    listener: Mutex<Option<TcpListener>>,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    config: TransportConfig,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.local {
            Some(a) => write!(f, "TcpTransport({a})"),
            None => f.write_str("TcpTransport(dial only)"),
        }
    }
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::other(e)
}

impl TcpTransport {
    /// Binds `addr` (port 0 picks one) for node `identity`, to accept and
    /// to dial.
    pub async fn bind(
        addr: SocketAddr,
        identity: &Identity,
        config: TransportConfig,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Self::new(Some(local), Some(listener), identity, config)
    }

    /// A TCP transport that only dials: a node that listens on QUIC alone
    /// can still reach `tcp://` peers.
    pub fn client(identity: &Identity, config: TransportConfig) -> io::Result<Self> {
        Self::new(None, None, identity, config)
    }

    fn new(
        local: Option<SocketAddr>,
        listener: Option<TcpListener>,
        identity: &Identity,
        config: TransportConfig,
    ) -> io::Result<Self> {
        Ok(TcpTransport {
            local,
            listener: Mutex::new(listener),
            acceptor: TlsAcceptor::from(Arc::new(tls::server_config(identity).map_err(tls_err)?)),
            connector: TlsConnector::from(Arc::new(tls::client_config(identity).map_err(tls_err)?)),
            config,
            accept_task: Mutex::new(None),
        })
    }

    /// The bound address (`None` for a dial-only transport).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }
}

/// Peer id, then network-key proofs, on a fresh TLS stream.
async fn authenticate(tls: &mut Tls, role: Role, key: &[u8; 32]) -> Result<NodeId, DialError> {
    let (peer, exporter) = {
        let conn = tls.get_ref().1;
        let peer = tls::proven_id(conn.peer_certificates())?;
        let exporter = match &*tls {
            TlsStream::Client(s) => {
                s.get_ref()
                    .1
                    .export_keying_material([0u8; 32], tls::exporter_label(), None)
            }
            TlsStream::Server(s) => {
                s.get_ref()
                    .1
                    .export_keying_material([0u8; 32], tls::exporter_label(), None)
            }
        }
        .map_err(|e| DialError::Failed(e.to_string()))?;
        (peer, exporter)
    };
    let io = |e: io::Error| DialError::Failed(e.to_string());
    write_frame(tls, &tls::proof(key, &exporter, role))
        .await
        .map_err(io)?;
    tls.flush().await.map_err(io)?;
    let got = read_frame(tls, 64).await.map_err(io)?.unwrap_or_default();
    if !tls::check_proof(key, &exporter, role.peer(), &got) {
        return Err(DialError::NetworkKey);
    }
    Ok(peer)
}

fn connection(tls: Tls, node: NodeId, remote: SocketAddr, max: usize) -> Connection {
    let (r, w) = tokio::io::split(tls);
    Connection {
        node,
        addr: Address::Tcp(remote),
        writer: Box::new(Writer {
            w: BufWriter::with_capacity(64 * 1024, w),
            max,
        }),
        reader: Box::new(Reader { r, max }),
        rtt: None,
    }
}

struct Reader<R> {
    r: R,
    max: usize,
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameReader for Reader<R> {
    fn run(mut self: Box<Self>, sink: FrameSink) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move { read_loop(&mut self.r, self.max, &sink).await })
    }
}

struct Writer<W> {
    w: BufWriter<W>,
    max: usize,
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for Writer<W> {
    fn run(mut self: Box<Self>, mut queue: OutboundQueue) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let end = write_loop(&mut self.w, &mut queue, self.max, |_| false).await;
            // TLS close_notify, then FIN: the peer reads to a clean end.
            let _ = self.w.shutdown().await;
            end.map(|_| ())
        })
    }
}

impl Transport for TcpTransport {
    fn scheme(&self) -> &'static str {
        "tcp"
    }

    fn listen_addrs(&self) -> Vec<Address> {
        self.local.map(Address::Tcp).into_iter().collect()
    }

    fn start(&self, incoming: mpsc::Sender<Connection>) {
        let Some(listener) = self.listener.lock().take() else {
            return;
        };
        let Some(local) = self.local else {
            return;
        };
        let acceptor = self.acceptor.clone();
        let config = self.config.clone();
        let admission = Arc::new(crate::accept::Admission::new("tcp", local, &config));
        let task = tokio::spawn(async move {
            let mut backoff = ACCEPT_BACKOFF_MIN;
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(x) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        x
                    }
                    Err(e) => {
                        // Out of file descriptors (EMFILE, ENFILE) or memory:
                        // retrying at once would spin. Wait, doubling up to
                        // a second, and say so once per doubling.
                        log::warn!(
                            "tcp {local}: accept failed: {e}; retrying in {} ms",
                            backoff.as_millis()
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                let (acceptor, config) = (acceptor.clone(), config.clone());
                let _ = tcp.set_nodelay(true);
                // Stages: 1 the peer sent something, 2 TLS done.
                admission.spawn(remote, incoming.clone(), |stage| async move {
                    let failed = |e: io::Error| DialError::Failed(e.to_string());
                    tcp.readable().await.map_err(failed)?;
                    stage.reached(1);
                    let mut tls = TlsStream::from(acceptor.accept(tcp).await.map_err(failed)?);
                    stage.reached(2);
                    let node = authenticate(&mut tls, Role::Listener, &config.key()).await?;
                    Ok(connection(tls, node, remote, config.max_frame_size))
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
        let connector = self.connector.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let Address::Tcp(remote) = addr else {
                return Err(DialError::NoTransport(addr.to_string()));
            };
            let failed = |e: io::Error| DialError::Failed(e.to_string());
            let tcp = TcpStream::connect(remote).await.map_err(failed)?;
            tcp.set_nodelay(true).map_err(failed)?;
            let name = ServerName::try_from(tls::SERVER_NAME)
                .map_err(|e| DialError::Failed(e.to_string()))?;
            let mut tls = TlsStream::from(connector.connect(name, tcp).await.map_err(failed)?);
            let actual = tls::proven_id(tls.get_ref().1.peer_certificates())?;
            if actual != expected {
                let _ = tls.shutdown().await;
                return Err(DialError::IdentityMismatch { expected, actual });
            }
            authenticate(&mut tls, Role::Dialer, &config.key()).await?;
            Ok(connection(tls, actual, remote, config.max_frame_size))
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        if let Some(t) = self.accept_task.lock().take() {
            t.abort();
        }
        Box::pin(async {})
    }
}
