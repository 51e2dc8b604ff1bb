//! Bootstrap peers: the nodes a node dials to join the network, and dials
//! again when it finds itself alone.
//!
//! A bootstrap peer is dialled until a connection to it comes up (either
//! direction). After that it is dialled again only when the node has no
//! connection at all: it is the way back in, not a link to keep. Failed
//! dials retry with exponential backoff (1 s doubling to 60 s, ±20% jitter
//! from the node's RNG, so a restarted swarm does not redial in lockstep);
//! each failure is logged as a warning naming the peer and the reason
//! (rate-limited: the first, any change of reason, then every
//! power-of-two attempt), reported to behaviours like any failed dial, and
//! kept for [`Network::bootstrap_peers`](crate::Network::bootstrap_peers).

use crate::error::OutgoingConnectionError;
use crate::{Address, ConnId, NodeId};
use std::time::Duration;

/// First retry delay after a failed dial.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

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
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    pub(crate) addr: Address,
    /// The dial in flight, if any.
    pub(crate) dialing: Option<ConnId>,
    /// Connected at least once.
    pub(crate) joined: bool,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<OutgoingConnectionError>,
    pub(crate) backoff: Duration,
}

impl Peer {
    pub(crate) fn new(node: NodeId, addr: Address) -> Self {
        Peer {
            node,
            addr,
            dialing: None,
            joined: false,
            failures: 0,
            last_error: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Records a failed dial; returns whether it deserves a warning and the
    /// delay before the next attempt (before jitter).
    pub(crate) fn failed(&mut self, err: OutgoingConnectionError) -> (bool, Duration) {
        self.dialing = None;
        self.failures += 1;
        let changed = self.last_error.as_ref() != Some(&err);
        self.last_error = Some(err);
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        (changed || self.failures.is_power_of_two(), delay)
    }

    /// Records a connection to the peer.
    pub(crate) fn connected(&mut self) {
        self.dialing = None;
        self.joined = true;
        self.failures = 0;
        self.last_error = None;
        self.backoff = FIRST_BACKOFF;
    }
}
