//! Real-socket workloads: plexus between two nodes in one process, and the
//! same work on the raw transport underneath (the baseline), both on
//! 127.0.0.1, timed from after the connection is up.

use plexus::router::StaticRouter;
use plexus::runtime::{Node, NodeEvent, NodeEvents, NodeHandle, RuntimeConfig, Transport};
use plexus::transports::memory::{MemoryHub, MemoryTransport};
use plexus::transports::quic::QuicTransport;
use plexus::transports::tcp::TcpTransport;
use plexus::transports::tls;
use plexus::transports::webrtc::{WebRtcConfig, WebRtcTransport};
use plexus::{
    Address, Answer, BehaviorAgent, Identity, Incoming, Network, NetworkBehavior, NoHandler,
    RouteRule, ServiceId, TransportConfig,
};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// The benchmark behaviour's service.
pub(crate) const BLAST: ServiceId = ServiceId(10);

/// A benchmark message. `body` uses `serde_bytes`, so postcard copies it
/// as one slice (a `Vec<u8>` without it is encoded byte by byte).
#[derive(Serialize, Deserialize)]
pub(crate) struct Blob {
    /// Sequence number.
    pub(crate) seq: u64,
    /// Ask the receiver to send it back.
    pub(crate) echo: bool,
    /// Payload.
    #[serde(with = "serde_bytes")]
    pub(crate) body: Vec<u8>,
}

/// A [`Blob`] to send, borrowing its body: serialises exactly like `Blob`,
/// so a sender streams one buffer without cloning it per message.
#[derive(Serialize)]
pub(crate) struct BlobRef<'a> {
    pub(crate) seq: u64,
    pub(crate) echo: bool,
    #[serde(with = "serde_bytes")]
    pub(crate) body: &'a [u8],
}

/// What the benchmark behaviour reports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlastEvent {
    /// An echo came back.
    Echoed(u64),
    /// The expected number of messages arrived.
    Done {
        /// Messages.
        count: u64,
        /// Body bytes.
        bytes: u64,
    },
}

/// Echoes what asks for it; counts the rest and reports when `target` arrived.
#[derive(Default)]
pub(crate) struct Blast {
    target: Option<u64>,
    count: u64,
    bytes: u64,
}

impl NetworkBehavior for Blast {
    type Msg = Blob;
    type Handler = NoHandler<Blob>;
    type Event = BlastEvent;
    type Rpc = (u64, ());

    fn service_id(&self) -> ServiceId {
        BLAST
    }

    fn on_message(&mut self, agent: &mut BehaviorAgent<'_, Self>, m: Incoming<Blob>) {
        let blob = m.msg;
        if blob.echo {
            if let Some(conn) = m.conn {
                agent.send_to_conn(
                    conn,
                    Blob {
                        echo: false,
                        ..blob
                    },
                );
            }
        } else if let Some(target) = self.target {
            self.count += 1;
            self.bytes += blob.body.len() as u64;
            if self.count == target {
                agent.emit(BlastEvent::Done {
                    count: self.count,
                    bytes: self.bytes,
                });
            }
        } else {
            agent.emit(BlastEvent::Echoed(blob.seq));
        }
    }

    fn on_rpc(&mut self, agent: &mut BehaviorAgent<'_, Self>, target: u64, answer: Answer<()>) {
        *self = Blast {
            target: Some(target),
            count: 0,
            bytes: 0,
        };
        agent.answer(answer, ());
    }
}

/// Which transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// QUIC (quinn).
    Quic,
    /// TLS 1.3 over TCP.
    Tcp,
    /// WebRTC data channels (webrtc-rs), native to native, signalled
    /// through a third node linked in process; the pair's routes then use
    /// the WebRTC connection alone.
    Webrtc,
}

/// Two connected plexus nodes: A (sender) and B (receiver).
pub(crate) struct Pair {
    /// Node A.
    pub(crate) a: NodeHandle,
    /// A's events.
    pub(crate) a_events: NodeEvents,
    /// Node B.
    pub(crate) b: NodeHandle,
    /// B's events.
    pub(crate) b_events: NodeEvents,
    /// For WebRTC, the node that relayed the signalling.
    signaller: Option<NodeHandle>,
}

pub(crate) async fn plexus_node(
    kind: Kind,
    id: &Identity,
    router: Arc<StaticRouter>,
) -> io::Result<(NodeHandle, NodeEvents)> {
    let local = "127.0.0.1:0".parse().expect("address");
    let mut builder = Network::builder(id.node_id(), router)
        .seed(id.node_id().0)
        .behavior(Blast::default());
    let mut rtc = None;
    let ts: Vec<Arc<dyn Transport>> = match kind {
        Kind::Quic => vec![Arc::new(QuicTransport::bind(
            local,
            id,
            TransportConfig::default(),
        )?)],
        Kind::Tcp => vec![Arc::new(
            TcpTransport::bind(local, id, TransportConfig::default()).await?,
        )],
        Kind::Webrtc => {
            let t = WebRtcTransport::new(id, TransportConfig::default(), WebRtcConfig::loopback())?;
            builder = builder.behavior(t.signalling());
            rtc = Some(t.clone());
            vec![
                Arc::new(t),
                Arc::new(MemoryTransport::new(
                    &SIGNAL_HUB,
                    id.node_id().0,
                    id.node_id(),
                    TransportConfig::default(),
                )),
            ]
        }
    };
    let net = builder.build().map_err(io::Error::other)?;
    let (h, e) = Node::spawn(net, ts, RuntimeConfig::default());
    if let Some(t) = rtc {
        t.attach(&h);
    }
    Ok((h, e))
}

/// The in-process links WebRTC pairs signal over.
static SIGNAL_HUB: std::sync::LazyLock<MemoryHub> = std::sync::LazyLock::new(MemoryHub::new);

/// Waits for an event `f` picks, at most 120 s.
pub(crate) async fn wait<T>(
    events: &mut NodeEvents,
    mut f: impl FnMut(NodeEvent) -> Option<T>,
) -> io::Result<T> {
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(ev) = events.next().await {
            if let Some(t) = f(ev) {
                return Ok(t);
            }
        }
        Err(io::Error::other("node stopped"))
    })
    .await
    .map_err(|_| io::Error::other("timed out"))?
}

impl Pair {
    /// Stops both nodes.
    pub(crate) async fn shutdown(self) -> io::Result<()> {
        self.a.shutdown().await.map_err(io::Error::other)?;
        if let Some(s) = self.signaller {
            s.shutdown().await.map_err(io::Error::other)?;
        }
        self.b.shutdown().await.map_err(io::Error::other)
    }
}

/// Starts two nodes and connects A to B.
pub(crate) async fn pair(kind: Kind) -> io::Result<Pair> {
    let (ia, ib) = (
        Identity::generate().map_err(io::Error::other)?,
        Identity::generate().map_err(io::Error::other)?,
    );
    let (ra, rb) = (
        Arc::new(StaticRouter::new(ia.node_id())),
        Arc::new(StaticRouter::new(ib.node_id())),
    );
    let (aid, bid) = (ia.node_id(), ib.node_id());
    let (a, mut a_events) = plexus_node(kind, &ia, ra.clone()).await?;
    let (b, mut b_events) = plexus_node(kind, &ib, rb.clone()).await?;
    let mut signaller = None;
    if kind == Kind::Webrtc {
        // A and B each link to a third node S in process; the offer and
        // answer go A → S → B and back; then A and B route to each other
        // over the WebRTC connection alone.
        let is = Identity::generate().map_err(io::Error::other)?;
        let rs = Arc::new(StaticRouter::new(is.node_id()));
        rs.set_route(aid, aid, 1);
        rs.set_route(bid, bid, 1);
        let s_mem: Arc<dyn Transport> = Arc::new(MemoryTransport::new(
            &SIGNAL_HUB,
            is.node_id().0,
            is.node_id(),
            TransportConfig::default(),
        ));
        let net = Network::builder(is.node_id(), rs)
            .build()
            .map_err(io::Error::other)?;
        let (s, _s_events) = Node::spawn(net, vec![s_mem], RuntimeConfig::default());
        for (h, ev) in [(&a, &mut a_events), (&b, &mut b_events)] {
            let sid = is.node_id();
            h.connect(sid, Address::Memory(sid.0))
                .await
                .map_err(io::Error::other)?;
            wait(ev, |e| {
                matches!(e, NodeEvent::Connected { node, .. } if node == sid).then_some(())
            })
            .await?;
        }
        ra.set_route(bid, is.node_id(), 2);
        rb.set_route(aid, is.node_id(), 2);
        a.connect(bid, Address::WebRtc(bid))
            .await
            .map_err(io::Error::other)?;
        signaller = Some(s);
    } else {
        a.connect(bid, b.listen_addrs()[0])
            .await
            .map_err(io::Error::other)?;
    }
    wait(&mut a_events, |ev| {
        matches!(ev, NodeEvent::Connected { node, .. } if node == bid).then_some(())
    })
    .await?;
    ra.set_route(bid, bid, 1);
    rb.set_route(aid, aid, 1);
    Ok(Pair {
        a,
        a_events,
        b,
        b_events,
        signaller,
    })
}

/// Sequential round trips through plexus; returns each RTT.
pub(crate) async fn plexus_rtt(p: &mut Pair, n: usize, size: usize) -> io::Result<Vec<Duration>> {
    let to = RouteRule::Node(p.b.node_id());
    let mut rtts = Vec::with_capacity(n);
    for seq in 0..n as u64 {
        let start = crate::wall();
        p.a.send(
            BLAST,
            to,
            &Blob {
                seq,
                echo: true,
                body: vec![1; size],
            },
        )
        .await
        .map_err(io::Error::other)?;
        wait(&mut p.a_events, |ev| match ev {
            NodeEvent::Behaviour(e) => match e.downcast_ref::<BlastEvent>() {
                Some(BlastEvent::Echoed(s)) if *s == seq => Some(()),
                _ => None,
            },
            _ => None,
        })
        .await?;
        rtts.push(start.elapsed());
    }
    Ok(rtts)
}

/// A sends `n` messages of `size` bytes to B as fast as plexus takes them;
/// returns the time until B has them all.
pub(crate) async fn plexus_stream(p: &mut Pair, n: usize, size: usize) -> io::Result<Duration> {
    p.b.rpc::<Blast>(n as u64).await.map_err(io::Error::other)?;
    let to = RouteRule::Node(p.b.node_id());
    let body = vec![7u8; size];
    let start = crate::wall();
    let a = p.a.clone();
    let sender = tokio::spawn(async move {
        for seq in 0..n as u64 {
            a.send(
                BLAST,
                to,
                &BlobRef {
                    seq,
                    echo: false,
                    body: &body,
                },
            )
            .await?;
        }
        Ok::<_, plexus::runtime::NodeError>(())
    });
    let (count, _) = wait(&mut p.b_events, |ev| match ev {
        NodeEvent::Behaviour(e) => match e.downcast_ref::<BlastEvent>() {
            Some(BlastEvent::Done { count, bytes }) => Some((*count, *bytes)),
            _ => None,
        },
        _ => None,
    })
    .await?;
    let elapsed = start.elapsed();
    sender
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
    assert_eq!(count, n as u64);
    Ok(elapsed)
}

// ---- baselines: the same work on the raw transport -------------------------

async fn write_frames<W: AsyncWrite + Unpin>(w: W, n: usize, size: usize) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let body = vec![7u8; size];
    for _ in 0..n {
        w.write_all(&(size as u32).to_be_bytes()).await?;
        w.write_all(&body).await?;
    }
    w.flush().await
}

async fn read_frames<R: AsyncRead + Unpin>(r: R, n: usize) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    for _ in 0..n {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(&mut buf).await?;
    }
    Ok(())
}

async fn echo<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    n: usize,
) -> io::Result<()> {
    let mut buf = Vec::new();
    for _ in 0..n {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(&mut buf).await?;
        w.write_all(&len).await?;
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    Ok(())
}

async fn ping_pong<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    n: usize,
    size: usize,
) -> io::Result<Vec<Duration>> {
    let body = vec![1u8; size];
    let mut buf = vec![0u8; size];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let start = crate::wall();
        w.write_all(&(size as u32).to_be_bytes()).await?;
        w.write_all(&body).await?;
        w.flush().await?;
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        r.read_exact(&mut buf).await?;
        rtts.push(start.elapsed());
    }
    Ok(rtts)
}

/// The baseline transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Baseline {
    /// quinn, one long-lived bidirectional stream, plexus's TLS config.
    Quinn,
    /// tokio TCP + tokio-rustls, plexus's TLS config.
    TcpTls,
    /// Plain tokio TCP: the loopback ceiling.
    Tcp,
    /// plexus itself over QUIC: what WebRTC is compared with.
    PlexusQuic,
    /// webrtc-rs alone: two peer connections, one data channel.
    Webrtc,
}

impl Baseline {
    /// Its name in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Baseline::Quinn => "baseline-quinn",
            Baseline::TcpTls => "baseline-tcp-tls",
            Baseline::Tcp => "baseline-tcp",
            Baseline::PlexusQuic => "plexus-quic",
            Baseline::Webrtc => "baseline-webrtc-rs",
        }
    }
}

/// What a baseline run does on its connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work {
    /// `n` sequential round trips of `size` bytes.
    Rtt { n: usize, size: usize },
    /// `n` frames of `size` bytes one way.
    Stream { n: usize, size: usize },
}

/// The result of a baseline run: round trips, or the one-way time.
pub(crate) enum Measured {
    /// Each round trip.
    Rtts(Vec<Duration>),
    /// Time until the receiver had everything.
    Elapsed(Duration),
}

type Duplex = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
);

/// Connects a client and a server of `b` on loopback: (client, server).
async fn connect(b: Baseline) -> io::Result<(Duplex, Duplex)> {
    let (ia, ib) = (
        Identity::generate().map_err(io::Error::other)?,
        Identity::generate().map_err(io::Error::other)?,
    );
    match b {
        Baseline::Quinn => {
            use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
            let server_crypto =
                QuicServerConfig::try_from(tls::server_config(&ib).map_err(io::Error::other)?)
                    .map_err(io::Error::other)?;
            let server = quinn::Endpoint::server(
                quinn::ServerConfig::with_crypto(Arc::new(server_crypto)),
                "127.0.0.1:0".parse().expect("address"),
            )?;
            let addr = server.local_addr()?;
            let client_crypto =
                QuicClientConfig::try_from(tls::client_config(&ia).map_err(io::Error::other)?)
                    .map_err(io::Error::other)?;
            let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))?;
            client.set_default_client_config(quinn::ClientConfig::new(Arc::new(client_crypto)));
            let accept = tokio::spawn(async move {
                let conn = server
                    .accept()
                    .await
                    .ok_or_else(|| io::Error::other("no connection"))?
                    .await?;
                let (s, r) = conn.accept_bi().await?;
                // Keep the endpoint and connection alive as long as the streams.
                std::mem::forget((server, conn));
                Ok::<_, io::Error>((s, r))
            });
            let conn = client
                .connect(addr, tls::SERVER_NAME)
                .map_err(io::Error::other)?
                .await?;
            let (mut cs, cr) = conn.open_bi().await?;
            cs.write_all(&[0u8; 4]).await?; // open the stream: an empty frame
            std::mem::forget((client, conn));
            let (ss, mut sr) = accept.await.map_err(io::Error::other)??;
            let mut first = [0u8; 4];
            AsyncReadExt::read_exact(&mut sr, &mut first).await?;
            Ok(((Box::new(cr), Box::new(cs)), (Box::new(sr), Box::new(ss))))
        }
        Baseline::PlexusQuic | Baseline::Webrtc => {
            Err(io::Error::other("not a byte-stream baseline"))
        }
        Baseline::TcpTls | Baseline::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let accept = tokio::spawn(async move { listener.accept().await });
            let client = tokio::net::TcpStream::connect(addr).await?;
            client.set_nodelay(true)?;
            let (server, _) = accept.await.map_err(io::Error::other)??;
            server.set_nodelay(true)?;
            if b == Baseline::Tcp {
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                return Ok(((Box::new(cr), Box::new(cw)), (Box::new(sr), Box::new(sw))));
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
                tls::server_config(&ib).map_err(io::Error::other)?,
            ));
            let connector = tokio_rustls::TlsConnector::from(Arc::new(
                tls::client_config(&ia).map_err(io::Error::other)?,
            ));
            let accept = tokio::spawn(async move { acceptor.accept(server).await });
            let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME)
                .map_err(io::Error::other)?;
            let c = connector.connect(name, client).await?;
            let s = accept.await.map_err(io::Error::other)??;
            let (cr, cw) = tokio::io::split(c);
            let (sr, sw) = tokio::io::split(s);
            Ok(((Box::new(cr), Box::new(cw)), (Box::new(sr), Box::new(sw))))
        }
    }
}

/// Runs `work` on baseline `b`.
pub(crate) async fn baseline(b: Baseline, work: Work) -> io::Result<Measured> {
    if b == Baseline::Webrtc {
        return crate::rtc_baseline::run(work).await;
    }
    if b == Baseline::PlexusQuic {
        let mut p = pair(Kind::Quic).await?;
        let m = match work {
            Work::Rtt { n, size } => {
                plexus_rtt(&mut p, n.min(1000), size).await?; // warm-up
                Measured::Rtts(plexus_rtt(&mut p, n, size).await?)
            }
            Work::Stream { n, size } => {
                plexus_stream(&mut p, n.min(10_000), size).await?; // warm-up
                Measured::Elapsed(plexus_stream(&mut p, n, size).await?)
            }
        };
        p.shutdown().await?;
        return Ok(m);
    }
    let ((cr, cw), (sr, sw)) = connect(b).await?;
    match work {
        Work::Rtt { n, size } => {
            let server = tokio::spawn(echo(sr, sw, n));
            let rtts = ping_pong(cr, cw, n, size).await?;
            server.await.map_err(io::Error::other)??;
            Ok(Measured::Rtts(rtts))
        }
        Work::Stream { n, size } => {
            let start = crate::wall();
            let server = tokio::spawn(read_frames(sr, n));
            write_frames(cw, n, size).await?;
            server.await.map_err(io::Error::other)??;
            let elapsed = start.elapsed();
            drop(cr);
            Ok(Measured::Elapsed(elapsed))
        }
    }
}
