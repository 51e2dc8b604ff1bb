//! Bootstrap peers: the nodes a node dials to join the network, and dials
//! again when it finds itself alone.
//!
//! A bootstrap peer is dialled until a connection to it comes up (either
//! direction). After that it is dialled again only when the node has no
//! connection at all: it is the way back in, not a link to keep. Every
//! dial after the first waits a backoff (1 s doubling to 60 s, ±20% jitter
//! from the node's RNG, so a restarted swarm does not redial in lockstep),
//! which starts over only once a connection to the peer has stayed up for
//! [`STABLE`] — a peer that accepts and then drops us is not hammered;
//! each failure is logged as a warning naming the peer and the reason
//! (rate-limited: the first, any change of reason, then every
//! power-of-two attempt), reported to behaviours like any failed dial, and
//! kept for [`Network::bootstrap_peers`](crate::Network::bootstrap_peers).
//!
//! A persistent peer ([`NetworkBuilder::persistent_peer`](crate::NetworkBuilder::persistent_peer))
//! is a link to keep: dialled whenever no connection to it is up, whatever
//! other connections the node has, with the same backoff capped at
//! [`PERSISTENT_MAX_BACKOFF`] — after a partition heals, the link comes
//! back within that, not within a minute.

use crate::error::OutgoingConnectionError;
use crate::{Address, ConnId, Instant, NodeId};
use std::time::Duration;

/// First retry delay after a failed dial.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest retry delay of a persistent peer: a link to keep is worth a
/// dial every few seconds (each a handful of packets), and after a
/// partition heals it comes back within about this plus one handshake.
pub(crate) const PERSISTENT_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A connection that lasts this long resets the backoff.
pub(crate) const STABLE: Duration = Duration::from_secs(30);

/// A bootstrap peer as [`Network::bootstrap_peers`](crate::Network::bootstrap_peers) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapStatus {
    /// The peer.
    pub node: NodeId,
    /// Where it is dialled.
    pub addr: Address,
    /// A connection to it is up now.
    pub connected: bool,
    /// Failed dials since it was last connected.
    pub failures: u32,
    /// Why the last dial failed, if it did and no connection came up since.
    pub last_error: Option<OutgoingConnectionError>,
    /// A persistent peer: redialled whenever no connection to it is up.
    pub persistent: bool,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    pub(crate) addr: Address,
    /// The dial in flight, if any.
    pub(crate) dialing: Option<ConnId>,
    /// Connected at least once.
    pub(crate) joined: bool,
    /// When the current connection to it came up.
    pub(crate) since: Option<Instant>,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<OutgoingConnectionError>,
    pub(crate) backoff: Duration,
    /// A persistent peer (a link to keep, not only a way in).
    pub(crate) keep: bool,
}

impl Peer {
    pub(crate) fn new(node: NodeId, addr: Address, keep: bool) -> Self {
        Peer {
            node,
            addr,
            dialing: None,
            joined: false,
            since: None,
            failures: 0,
            last_error: None,
            backoff: FIRST_BACKOFF,
            keep,
        }
    }

    /// The delay before the next dial (before jitter); the one after it
    /// doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.backoff;
        let max = if self.keep {
            PERSISTENT_MAX_BACKOFF
        } else {
            MAX_BACKOFF
        };
        self.backoff = (self.backoff * 2).min(max);
        delay
    }

    /// Records a failed dial; returns whether it deserves a warning.
    pub(crate) fn failed(&mut self, err: OutgoingConnectionError) -> bool {
        self.dialing = None;
        self.failures += 1;
        let changed = self.last_error.as_ref() != Some(&err);
        self.last_error = Some(err);
        changed || self.failures.is_power_of_two()
    }

    /// Records a connection to the peer.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.dialing = None;
        self.joined = true;
        self.since = Some(now);
        self.failures = 0;
        self.last_error = None;
    }

    /// Records that the connection to it closed.
    pub(crate) fn disconnected(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            if now - since >= STABLE {
                self.backoff = FIRST_BACKOFF;
            }
        }
    }
}
