//! The accept side shared by QUIC and TCP: each incoming handshake in its
//! own task, within the handshake timeout, and refusals logged without
//! flooding the log.

use plexus_network::runtime::{Connection, DialError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// Refused incoming handshakes, logged at most once per
/// [`RefusalLog::INTERVAL`] per listener with a count: a flood (or a
/// misconfigured peer retrying) does not flood the log, and an operator
/// still learns that peers are being refused and why.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    scheme: &'static str,
    local: SocketAddr,
    state: parking_lot::Mutex<(Option<tokio::time::Instant>, u64)>,
}

impl RefusalLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    pub(crate) fn new(scheme: &'static str, local: SocketAddr) -> Self {
        RefusalLog {
            scheme,
            local,
            state: parking_lot::Mutex::new((None, 0)),
        }
    }

    /// Records one refusal; logs it (with the count since the last line)
    /// if the interval has passed.
    pub(crate) fn refused(&self, remote: SocketAddr, why: &str) {
        let now = tokio::time::Instant::now();
        let mut st = self.state.lock();
        st.1 += 1;
        let due = st.0.is_none_or(|at| now - at >= Self::INTERVAL);
        if due {
            let n = std::mem::take(&mut st.1);
            st.0 = Some(now);
            drop(st);
            log::warn!(
                "{} {}: refused {n} incoming handshake(s) since the last report; the last from {remote}: {why}",
                self.scheme,
                self.local
            );
        } else {
            log::debug!(
                "{} {}: incoming from {remote} refused: {why}",
                self.scheme,
                self.local
            );
        }
    }
}

/// Runs one incoming connection's handshake in its own task, holding a
/// pending-handshake permit, within the handshake timeout; hands the
/// authenticated connection to the runtime or logs why it was refused.
pub(crate) fn spawn_handshake(
    log: Arc<RefusalLog>,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
    timeout: std::time::Duration,
    incoming: mpsc::Sender<Connection>,
    handshake: impl Future<Output = Result<Connection, DialError>> + Send + 'static,
) {
    tokio::spawn(async move {
        let _permit = permit;
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(conn)) => {
                let _ = incoming.send(conn).await;
            }
            Ok(Err(e)) => log.refused(remote, &e.to_string()),
            Err(_) => log.refused(remote, "handshake timed out"),
        }
    });
}
