//! Typed, printable transport addresses: `quic://127.0.0.1:7000`,
//! `tcp://127.0.0.1:7001`, `webrtc://3fa2c1d07b9e4f10`, `mem://5`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use thiserror::Error;

/// Where a node can be reached, and over which transport. Serialisable, so
/// behaviours can tell peers how to dial each other.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Address {
    /// An in-process endpoint (the memory transport and the simulator).
    Memory(u64),
    /// QUIC over UDP.
    Quic(SocketAddr),
    /// TLS over TCP.
    Tcp(SocketAddr),
    /// WebRTC data channels to this node, negotiated through signalling
    /// (over the overlay, or a node's web endpoint for a browser): the
    /// address is the node's id, as ICE finds the path.
    WebRtc(crate::NodeId),
}

impl Address {
    /// The URL scheme of this address's transport.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Memory(_) => "mem",
            Address::Quic(_) => "quic",
            Address::Tcp(_) => "tcp",
            Address::WebRtc(_) => "webrtc",
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Memory(n) => write!(f, "mem://{n}"),
            Address::Quic(a) | Address::Tcp(a) => write!(f, "{}://{a}", self.scheme()),
            Address::WebRtc(n) => write!(f, "webrtc://{n}"),
        }
    }
}

/// Why an address string did not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressParseError {
    /// No `scheme://` prefix.
    #[error("address {0:?} has no scheme: expected e.g. quic://127.0.0.1:7000")]
    MissingScheme(String),
    /// A scheme no transport answers to.
    #[error("unknown scheme {0:?}: expected one of mem, quic, tcp, webrtc")]
    UnknownScheme(String),
    /// The part after the scheme is not valid for it.
    #[error("invalid {scheme} address {rest:?}: {why}")]
    Invalid {
        /// The scheme.
        scheme: String,
        /// What followed it.
        rest: String,
        /// What is wrong.
        why: String,
    },
}

impl FromStr for Address {
    type Err = AddressParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| AddressParseError::MissingScheme(s.to_string()))?;
        let invalid = |why: String| AddressParseError::Invalid {
            scheme: scheme.to_string(),
            rest: rest.to_string(),
            why,
        };
        let sock = || {
            rest.parse::<SocketAddr>()
                .map_err(|e| invalid(e.to_string()))
        };
        match scheme {
            "mem" => rest
                .parse::<u64>()
                .map(Address::Memory)
                .map_err(|e| invalid(e.to_string())),
            "quic" => sock().map(Address::Quic),
            "tcp" => sock().map(Address::Tcp),
            "webrtc" => u64::from_str_radix(rest, 16)
                .ok()
                .filter(|_| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|n| Address::WebRtc(crate::NodeId(n)))
                .ok_or_else(|| invalid("expected a node id of 16 hex digits".to_string())),
            other => Err(AddressParseError::UnknownScheme(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "quic://127.0.0.1:7000",
            "tcp://[::1]:9",
            "mem://5",
            "webrtc://00c0ffee12345678",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn rejects_with_reasons() {
        assert!(matches!(
            "127.0.0.1:1".parse::<Address>(),
            Err(AddressParseError::MissingScheme(_))
        ));
        assert!(matches!(
            "udp://127.0.0.1:1".parse::<Address>(),
            Err(AddressParseError::UnknownScheme(_))
        ));
        assert!(matches!(
            "quic://nope".parse::<Address>(),
            Err(AddressParseError::Invalid { .. })
        ));
        assert!(matches!(
            "webrtc://127.0.0.1:1".parse::<Address>(),
            Err(AddressParseError::Invalid { .. })
        ));
        assert!(matches!(
            "webrtc://+00c0ffee1234567".parse::<Address>(),
            Err(AddressParseError::Invalid { .. })
        ));
    }
}
