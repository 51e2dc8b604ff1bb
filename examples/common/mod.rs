//! What the `node` and `chat` examples share: command-line parsing of
//! peers and addresses, the transports a node listens and dials on, and
//! the signals that stop it.

// Each example uses its own part of this module.
#![allow(dead_code)]

use plexus::runtime::Transport;
use plexus::transports::quic::QuicTransport;
use plexus::transports::tcp::TcpTransport;
use plexus::{Address, Identity, NodeId, TransportConfig};
use std::sync::Arc;

/// A peer to join: `<node id in hex>@<address>`.
#[derive(Clone, Debug)]
pub(crate) struct Seed {
    pub(crate) node: NodeId,
    pub(crate) addr: Address,
}

/// Parses `--seed`: `<node-id>@quic://IP:PORT` or `…@tcp://IP:PORT`.
pub(crate) fn parse_seed(s: &str) -> Result<Seed, String> {
    let (id, addr) = s.split_once('@').ok_or_else(|| {
        format!("{s:?} is not <node-id>@<address>, e.g. 3fa2…@quic://127.0.0.1:7000")
    })?;
    let node = u64::from_str_radix(id, 16)
        .map(NodeId)
        .map_err(|e| format!("node id {id:?} is not 16 hex digits: {e}"))?;
    let addr = addr.parse::<Address>().map_err(|e| e.to_string())?;
    if !matches!(addr, Address::Quic(_) | Address::Tcp(_)) {
        return Err(format!(
            "{addr}: this node dials quic:// and tcp:// addresses only"
        ));
    }
    Ok(Seed { node, addr })
}

/// Parses `--listen`: `quic://IP:PORT` or `tcp://IP:PORT`.
pub(crate) fn parse_addr(s: &str) -> Result<Address, String> {
    match s.parse::<Address>().map_err(|e| e.to_string())? {
        a @ (Address::Quic(_) | Address::Tcp(_)) => Ok(a),
        other => Err(format!(
            "{other}: this node listens on quic:// or tcp:// addresses"
        )),
    }
}

/// A listener for each of `listen`, plus a dialler for every scheme not
/// listened on: a node that listens on TCP alone still reaches QUIC peers
/// (from an ephemeral, unadvertised port).
pub(crate) async fn transports(
    listen: &[Address],
    identity: &Identity,
    config: &TransportConfig,
) -> Result<Vec<Arc<dyn Transport>>, String> {
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    for addr in listen {
        let t: Arc<dyn Transport> = match addr {
            Address::Quic(sa) => Arc::new(
                QuicTransport::bind(*sa, identity, config.clone())
                    .map_err(|e| format!("listen {addr}: {e}"))?,
            ),
            Address::Tcp(sa) => Arc::new(
                TcpTransport::bind(*sa, identity, config.clone())
                    .await
                    .map_err(|e| format!("listen {addr}: {e}"))?,
            ),
            other => return Err(format!("cannot listen on {other}")),
        };
        transports.push(t);
    }
    if !transports.iter().any(|t| t.scheme() == "quic") {
        let quic = QuicTransport::client(identity, config.clone())
            .map_err(|e| format!("QUIC dialler: {e}"))?;
        transports.push(Arc::new(quic));
    }
    if !transports.iter().any(|t| t.scheme() == "tcp") {
        let tcp = TcpTransport::client(identity, config.clone())
            .map_err(|e| format!("TCP dialler: {e}"))?;
        transports.push(Arc::new(tcp));
    }
    Ok(transports)
}

/// The transport settings for `--network-key`.
pub(crate) fn transport_config(network_key: Option<&str>) -> TransportConfig {
    let config = TransportConfig::default();
    match network_key {
        Some(secret) => config.with_network_secret(secret),
        None => config,
    }
}

/// SIGINT and SIGTERM, listened for from before the first line is printed
/// until the node stops: a signal that arrives while the loop is busy
/// (printing status, say) waits in the stream instead of killing the
/// process or being missed.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let err = |e: std::io::Error| format!("cannot listen for signals: {e}");
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
        })
    }

    /// Waits for either signal and names it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Runs an example's `run` on a tokio runtime and turns its result into
/// the exit code, printing the error if any.
pub(crate) fn block_on_main(
    run: impl std::future::Future<Output = Result<(), String>>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run);
    // A read of stdin in progress blocks on a thread of its own; dropping
    // the runtime would wait for it (for the next line typed). Nothing else
    // is left to wait for: the node has shut down.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
