//! The accept side shared by QUIC and TCP: each incoming handshake in its
//! own task, admitted without ever making the accept loop wait, cut when it
//! stalls under pressure, and refusals logged without flooding the log.
//!
//! # Admission under a flood
//!
//! The accept loop takes every connection the kernel (or quinn) offers at
//! once and asks [`Admission::admit`] for a slot. There are
//! [`TransportConfig::max_pending_handshakes`] slots in all and
//! [`TransportConfig::max_pending_per_source`] per remote IP address. When
//! either is full, the newcomer is not refused: the pending handshake
//! stalled longest (whose last progress is the oldest) is cut to make room.
//! Each handshake reports its progress through stages (TCP: first byte
//! seen, TLS done; QUIC: TLS done, stream opened), so a silent or stalled
//! connection goes before an honest one, which passes a stage every round
//! trip or two. Once half the slots are taken, a handshake that has not
//! progressed for [`TransportConfig::pressured_handshake_timeout`] is cut
//! as well (instead of after the full handshake timeout), and QUIC answers
//! addresses it has not validated with a stateless retry. Cuts and
//! refusals are logged once per [`RefusalLog::INTERVAL`] with a count.
//!
//! [`TransportConfig::max_pending_handshakes`]: crate::TransportConfig::max_pending_handshakes
//! [`TransportConfig::max_pending_per_source`]: crate::TransportConfig::max_pending_per_source
//! [`TransportConfig::pressured_handshake_timeout`]: crate::TransportConfig::pressured_handshake_timeout

use crate::TransportConfig;
use parking_lot::Mutex;
use plexus_network::runtime::{Connection, DialError};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Refused incoming handshakes, logged at most once per
/// [`RefusalLog::INTERVAL`] per listener with a count: a flood (or a
/// misconfigured peer retrying) does not flood the log, and an operator
/// still learns that peers are being refused and why.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    scheme: &'static str,
    local: SocketAddr,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    pub(crate) fn new(scheme: &'static str, local: SocketAddr) -> Self {
        RefusalLog {
            scheme,
            local,
            state: Mutex::new((None, 0)),
        }
    }

    /// Records one refusal; logs it (with the count since the last line)
    /// if the interval has passed.
    pub(crate) fn refused(&self, remote: SocketAddr, why: &str) {
        let now = Instant::now();
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

struct Pending {
    remote: SocketAddr,
    /// When it last made progress (arrived, or reached a stage).
    progressed: Instant,
    /// How far the handshake got (higher is further).
    stage: u8,
    abort: Option<AbortHandle>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    pending: HashMap<u64, Pending>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        let ip = p.remote.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(p)
    }

    /// The pending handshake to cut first among those `filter` keeps: the
    /// one stalled longest (its last progress the oldest).
    fn victim(&self, filter: impl Fn(&Pending) -> bool) -> Option<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| filter(p))
            .min_by_key(|(id, p)| (p.progressed, **id))
            .map(|(id, _)| *id)
    }
}

/// The handshake slots of one listener. See the [module docs](self).
pub(crate) struct Admission {
    slots: Mutex<Slots>,
    max: usize,
    per_source: usize,
    timeout: Duration,
    pressured_timeout: Duration,
    log: RefusalLog,
}

impl Admission {
    pub(crate) fn new(scheme: &'static str, local: SocketAddr, config: &TransportConfig) -> Self {
        Admission {
            slots: Mutex::new(Slots::default()),
            max: config.max_pending_handshakes.max(1),
            per_source: config.max_pending_per_source.max(1),
            timeout: config.handshake_timeout,
            pressured_timeout: config.pressured_handshake_timeout,
            log: RefusalLog::new(scheme, local),
        }
    }

    /// The refusal log of this listener.
    pub(crate) fn log(&self) -> &RefusalLog {
        &self.log
    }

    /// Handshakes pending now.
    pub(crate) fn pending(&self) -> usize {
        self.slots.lock().pending.len()
    }

    /// Whether at least half the slots are taken.
    pub(crate) fn under_pressure(&self) -> bool {
        self.pending() * 2 >= self.max
    }

    fn cut(&self, slots: &mut Slots, id: u64, why: &str) {
        if let Some(p) = slots.remove(id) {
            if let Some(a) = p.abort {
                a.abort();
            }
            self.log.refused(p.remote, why);
        }
    }

    /// Makes room for a handshake from `remote` (never waits) and runs
    /// `handshake` in its own task within the handshake timeout; hands the
    /// authenticated connection to `incoming` or logs why it was refused.
    /// The handshake reports its progress through the [`Stage`] it is given.
    pub(crate) fn spawn<F, Fut>(
        self: &Arc<Self>,
        remote: SocketAddr,
        incoming: mpsc::Sender<Connection>,
        handshake: F,
    ) where
        F: FnOnce(Stage) -> Fut,
        Fut: Future<Output = Result<Connection, DialError>> + Send + 'static,
    {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        if slots.pending.len() * 2 >= self.max {
            let stale: Vec<u64> = slots
                .pending
                .iter()
                .filter(|(_, p)| now - p.progressed >= self.pressured_timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                self.cut(&mut slots, id, "handshake stalled while slots are scarce");
            }
        }
        let ip = remote.ip();
        if slots.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_source {
            if let Some(id) = slots.victim(|p| p.remote.ip() == ip) {
                self.cut(
                    &mut slots,
                    id,
                    "too many pending handshakes from one address",
                );
            }
        }
        if slots.pending.len() >= self.max {
            if let Some(id) = slots.victim(|_| true) {
                self.cut(
                    &mut slots,
                    id,
                    "handshake slots full; cut the longest stalled",
                );
            }
        }
        let id = slots.next;
        slots.next += 1;
        slots.pending.insert(
            id,
            Pending {
                remote,
                progressed: now,
                stage: 0,
                abort: None,
            },
        );
        *slots.per_ip.entry(ip).or_default() += 1;
        let guard = SlotGuard {
            admission: self.clone(),
            id,
        };
        let fut = handshake(Stage {
            admission: self.clone(),
            id,
        });
        let timeout = self.timeout;
        // Not holding the lock while spawning: a runtime that is shutting
        // down drops the task at once, and its guard takes the lock.
        drop(slots);
        // The slot is released when the task ends, however it ends (done,
        // failed, timed out, or cut: aborting drops the guard).
        let task = tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, fut).await;
            let admission = guard.admission.clone();
            drop(guard);
            match result {
                Ok(Ok(conn)) => {
                    // In a task of its own: a cut that raced the handshake's
                    // end (an abort of this task) cannot throw it away now.
                    tokio::spawn(async move {
                        let _ = incoming.send(conn).await;
                    });
                }
                Ok(Err(e)) => admission.log.refused(remote, &e.to_string()),
                Err(_) => admission.log.refused(remote, "handshake timed out"),
            }
        });
        // Gone already if the task ended (or was cut) meanwhile.
        if let Some(p) = self.slots.lock().pending.get_mut(&id) {
            p.abort = Some(task.abort_handle());
        }
    }
}

/// What a pending handshake holds to report its progress.
#[derive(Clone)]
pub(crate) struct Stage {
    admission: Arc<Admission>,
    id: u64,
}

impl Stage {
    /// The handshake reached stage `n` (1, 2, …). Under pressure the
    /// handshake stalled longest is cut first, so one that keeps making
    /// progress (an honest peer, a round trip per stage) outlives those
    /// that stopped.
    pub(crate) fn reached(&self, n: u8) {
        if let Some(p) = self.admission.slots.lock().pending.get_mut(&self.id) {
            if n > p.stage {
                p.stage = n;
                p.progressed = Instant::now();
            }
        }
    }
}

/// Frees a handshake's slot when its task ends.
struct SlotGuard {
    admission: Arc<Admission>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.admission.slots.lock().remove(self.id);
    }
}
