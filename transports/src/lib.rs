//! # plexus-transports: what moves plexus frames
//!
//! Each transport implements [`Transport`](plexus_network::runtime::Transport)
//! for the tokio runtime and hands it only authenticated connections:
//! - [`quic`] (feature `quic`): quinn. One QUIC connection per neighbour,
//!   one bidirectional stream for reliable frames (in order), QUIC datagrams
//!   for frames a behaviour marks unreliable (when they fit), keep-alive
//!   and idle timeout configured.
//! - [`tcp`] (feature `tcp`): TLS 1.3 (rustls) over TCP, length-delimited
//!   frames.
//! - [`webrtc`] (feature `webrtc`): WebRTC data channels, signalled over
//!   the overlay; what browsers speak.
//! - [`memory`] (feature `memory`): bounded channels between endpoints in
//!   one process; no crypto (the hub vouches for identities).
//!
//! QUIC and TCP share [`tls`]: mutual TLS 1.3 where each side proves the
//! ed25519 key its [`NodeId`](plexus_network::NodeId) derives from
//! ([`Identity`]), and an optional network key proven per session.

#[cfg(any(feature = "quic", feature = "tcp"))]
pub(crate) mod accept;
#[cfg(any(feature = "quic", feature = "tcp", feature = "webrtc"))]
pub(crate) mod framing;
pub mod identity;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "quic")]
pub mod quic;
#[cfg(feature = "tcp")]
pub mod tcp;
pub mod tls;
#[cfg(feature = "web")]
pub mod web;
#[cfg(feature = "webrtc")]
pub mod webrtc;

pub use identity::{node_id_of, Identity, IdentityError};

use plexus_network::wire::HEADER_LEN;
use std::time::Duration;

/// Settings shared by the transports. `Default` gives the values each
/// field documents.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, header included. A peer that sends a
    /// larger one is disconnected. Default: the core's default maximum
    /// payload (1 MiB) plus the header.
    pub max_frame_size: usize,
    /// Time an incoming connection has to finish its handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Handshakes of incoming connections in progress at once. The accept
    /// loop never waits for a slot: when they are all taken, the pending
    /// handshake that got least far (then the oldest) is cut to make room,
    /// so silent or stalled connections cannot lock honest peers out.
    /// Default 256.
    pub max_pending_handshakes: usize,
    /// Pending handshakes from one IP address; past it, that address's
    /// least progressed handshake is cut. Default 64.
    pub max_pending_per_source: usize,
    /// Once half the handshake slots are taken, a handshake still pending
    /// after this long is cut (instead of after `handshake_timeout`); QUIC
    /// also answers unvalidated addresses with a stateless retry then.
    /// Default 1 s.
    pub pressured_handshake_timeout: Duration,
    /// The network key: peers must prove the same one. Default none (the
    /// all-zero key: such nodes only talk to each other).
    pub network_key: Option<[u8; 32]>,
    /// QUIC keep-alive interval. Default 5 s.
    pub keep_alive: Duration,
    /// QUIC idle timeout: a silent connection closes after it. Default 30 s.
    pub idle_timeout: Duration,
    /// How long a closing connection (or a shutting-down QUIC endpoint)
    /// waits for the peer to acknowledge what was sent. Default 2 s.
    pub close_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_size: HEADER_LEN + (1 << 20),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 256,
            max_pending_per_source: 64,
            pressured_handshake_timeout: Duration::from_secs(1),
            network_key: None,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(2),
        }
    }
}

impl TransportConfig {
    /// Sets the network key to SHA-256 of `secret` (a passphrase shared by
    /// the nodes of one network).
    pub fn with_network_secret(mut self, secret: &str) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        self.network_key = Some(k);
        self
    }

    /// Sets the maximum frame size.
    pub fn with_max_frame_size(mut self, max: usize) -> Self {
        self.max_frame_size = max;
        self
    }

    #[cfg(any(
        feature = "memory",
        feature = "quic",
        feature = "tcp",
        feature = "webrtc"
    ))]
    pub(crate) fn key(&self) -> [u8; 32] {
        self.network_key.unwrap_or([0; 32])
    }
}
