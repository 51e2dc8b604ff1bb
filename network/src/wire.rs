//! The wire format: a compact fixed header in front of each message's payload.
//!
//! ```text
//! offset size field
//!  0     1    version          (currently 1)
//!  1     1    flags            bit 0: unreliable (may travel as a datagram)
//!                               bit 1: credited (counts against the link's flow-control
//!                                      window; set per hop by the runtime); others zero
//!  2     1    service id
//!  3     1    route kind       0 direct, 1 node, 2 closest key, 3 service
//!  4     1    ttl              hops the message may still take
//!  5     8    route target     big-endian node id or key; zero for direct and service
//! 13     8    source node id   big-endian
//! 21     4    payload length   big-endian
//! 25     ..   payload          the behaviour's message, postcard-encoded
//! ```
//!
//! One transport frame carries exactly one message.
//!
//! # Link frames
//!
//! A frame whose first byte is [`LINK_VERSION`] is not a message: it is
//! for the link it arrives on, consumed by the runtime and never routed.
//! The first kind is a credit grant, `[LINK_VERSION, 1, u32 BE
//! bytes]` ([`LinkFrame::Credit`]): the peer may send that many more bytes
//! of credited frames. Each side of a connection starts with
//! [`INITIAL_CREDIT`] bytes and may send a credited frame while its credit
//! is above zero (so it overshoots by at most one frame). The receiver
//! grants the bytes back once the frame has left it: delivered to the
//! application, handed to the next hop's connection, or dropped.
//!
//! The second kind confirms receipt, `[LINK_VERSION, 2, u64 BE count]`
//! ([`LinkFrame::Received`]): the peer has received this many credited
//! frames on the connection since it opened. Credited frames travel in
//! order on one stream, so the count confirms a prefix; the sender holds
//! the headers of the frames past it, and if the connection dies before
//! they are confirmed, it reports each one dropped to its source (it may
//! have arrived: the confirmation may have been on its way). A receiver
//! confirms after every 256 credited frames, and within 10 ms of any. A
//! peer that keeps granting credit but confirms nothing is disconnected.
//! (Kind 2 is new with this version, as is QUIC's control stream: older
//! nodes close the connection on it. There is no version negotiation yet;
//! a network upgrades all its nodes together.)
//!
//! [`Frame::decode`]
//! validates everything once: if it returned `Ok`, the header fields are in
//! range and the payload slice is exactly the declared length, so nothing
//! that reads a [`Frame`] can panic or read out of bounds. Every malformed
//! input maps to a distinct [`DecodeError`]; none panics (property-tested
//! below and fuzzed in `fuzz/`).

use crate::{NodeId, RouteRule, ServiceId};
use thiserror::Error;

/// The only header version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 25;
/// Offset of the TTL byte, which forwarding rewrites in place.
const TTL_OFFSET: usize = 4;
const FLAG_UNRELIABLE: u8 = 0b0000_0001;
const FLAG_CREDITED: u8 = 0b0000_0010;
const KNOWN_FLAGS: u8 = FLAG_UNRELIABLE | FLAG_CREDITED;

/// First byte of a [link frame](self#link-frames).
pub const LINK_VERSION: u8 = 0xC0;
/// Bytes of credited frames each side of a connection may send before the
/// peer grants more.
pub const INITIAL_CREDIT: u32 = 16 << 20;
const LINK_CREDIT: u8 = 1;
/// [`LinkFrame::Received`]'s kind byte.
const LINK_RECEIVED: u8 = 2;

/// Whether `frame` is marked credited (see [link frames](self#link-frames)).
pub fn is_credited(frame: &[u8]) -> bool {
    frame.first() == Some(&VERSION) && frame.get(1).is_some_and(|f| f & FLAG_CREDITED != 0)
}

/// Marks `frame` credited or not (a message frame; others are left alone).
pub fn set_credited(frame: &mut [u8], credited: bool) {
    if frame.first() == Some(&VERSION) {
        if let Some(f) = frame.get_mut(1) {
            if credited {
                *f |= FLAG_CREDITED;
            } else {
                *f &= !FLAG_CREDITED;
            }
        }
    }
}

/// The source node of a message frame, if it is long enough to have one.
pub fn source_of(frame: &[u8]) -> Option<NodeId> {
    frame.get(13..21).map(|b| NodeId(be_u64(b)))
}

/// A frame for the link itself (see [link frames](self#link-frames)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkFrame {
    /// The peer may send this many more bytes of credited frames.
    Credit(u32),
    /// The peer has received this many credited frames on the connection
    /// since it opened.
    Received(u64),
}

impl LinkFrame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LinkFrame::Credit(n) => {
                let mut b = vec![LINK_VERSION, LINK_CREDIT];
                b.extend_from_slice(&n.to_be_bytes());
                b
            }
            LinkFrame::Received(n) => {
                let mut b = vec![LINK_VERSION, LINK_RECEIVED];
                b.extend_from_slice(&n.to_be_bytes());
                b
            }
        }
    }

    /// Decodes a frame whose first byte is [`LINK_VERSION`].
    pub fn decode(frame: &[u8]) -> Result<LinkFrame, DecodeError> {
        match frame {
            [LINK_VERSION, LINK_CREDIT, a, b, c, d] => {
                Ok(LinkFrame::Credit(u32::from_be_bytes([*a, *b, *c, *d])))
            }
            [LINK_VERSION, LINK_CREDIT, ..] => Err(DecodeError::LengthMismatch {
                declared: 4,
                actual: frame.len().saturating_sub(2),
            }),
            [LINK_VERSION, LINK_RECEIVED, rest @ ..] => match <[u8; 8]>::try_from(rest) {
                Ok(n) => Ok(LinkFrame::Received(u64::from_be_bytes(n))),
                Err(_) => Err(DecodeError::LengthMismatch {
                    declared: 8,
                    actual: rest.len(),
                }),
            },
            [LINK_VERSION, kind, ..] => Err(DecodeError::UnknownLinkFrame(*kind)),
            [v, ..] => Err(DecodeError::UnknownVersion(*v)),
            [] => Err(DecodeError::Truncated { needed: 2, got: 0 }),
        }
    }
}

/// Why a frame was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header needs.
    #[error("truncated frame: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The version byte is not one this build speaks.
    #[error("unknown header version {0}")]
    UnknownVersion(u8),
    /// The declared payload is larger than the configured maximum.
    #[error("oversized payload: {len} bytes, maximum {max}")]
    Oversized {
        /// Declared payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The flags byte sets bits this version does not define.
    #[error("unknown flags {0:#010b}")]
    UnknownFlags(u8),
    /// A link frame of a kind this build does not know.
    #[error("unknown link frame kind {0}")]
    UnknownLinkFrame(u8),
    /// The route kind byte is not a known route rule.
    #[error("unknown route kind {0}")]
    UnknownRouteKind(u8),
    /// A direct or service route carries a non-zero target.
    #[error("route kind {kind} must have a zero target")]
    UnexpectedTarget {
        /// The route kind byte.
        kind: u8,
    },
    /// The frame holds more bytes than header plus declared payload.
    #[error("frame length mismatch: header declares {declared} payload bytes, frame has {actual}")]
    LengthMismatch {
        /// Payload length in the header.
        declared: usize,
        /// Payload bytes actually present.
        actual: usize,
    },
}

/// The decoded fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The behaviour the payload is for.
    pub service: ServiceId,
    /// Where the message is going.
    pub rule: RouteRule,
    /// Hops the message may still take.
    pub ttl: u8,
    /// The node that first sent the message.
    pub source: NodeId,
    /// The sender accepts loss (the transport may use datagrams).
    pub unreliable: bool,
}

fn route_parts(rule: &RouteRule) -> (u8, u64) {
    match rule {
        RouteRule::Direct => (0, 0),
        RouteRule::Node(n) => (1, n.0),
        RouteRule::Closest(k) => (2, k.0),
        RouteRule::Service => (3, 0),
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl Header {
    /// The header's bytes for a payload of `payload_len` bytes.
    pub fn to_bytes(&self, payload_len: u32) -> [u8; HEADER_LEN] {
        let (kind, target) = route_parts(&self.rule);
        let mut b = [0u8; HEADER_LEN];
        b[0] = VERSION;
        b[1] = if self.unreliable { FLAG_UNRELIABLE } else { 0 };
        b[2] = self.service.0;
        b[3] = kind;
        b[TTL_OFFSET] = self.ttl;
        b[5..13].copy_from_slice(&target.to_be_bytes());
        b[13..21].copy_from_slice(&self.source.0.to_be_bytes());
        b[21..25].copy_from_slice(&payload_len.to_be_bytes());
        b
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `frame`,
    /// whose rest is the payload. `None` (nothing written) if `frame` is
    /// shorter than a header or its payload is over `u32::MAX` bytes.
    pub fn write_into(&self, frame: &mut [u8]) -> Option<()> {
        let len = u32::try_from(frame.len().checked_sub(HEADER_LEN)?).ok()?;
        frame[..HEADER_LEN].copy_from_slice(&self.to_bytes(len));
        Some(())
    }

    /// Appends the header for a payload of `payload_len` bytes to `out`.
    pub fn encode_into(&self, payload_len: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes(payload_len));
    }

    /// Validates and decodes the header at the start of `buf`, returning it
    /// with the declared payload length. Checks the payload length against
    /// `max_payload` but not against `buf`'s length (see [`Frame::decode`]).
    pub fn decode(buf: &[u8], max_payload: usize) -> Result<(Header, usize), DecodeError> {
        if buf.len() < HEADER_LEN {
            // A lone wrong version byte is reported as such, not as truncation.
            if let Some(&v) = buf.first() {
                if v != VERSION {
                    return Err(DecodeError::UnknownVersion(v));
                }
            }
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: buf.len(),
            });
        }
        if buf[0] != VERSION {
            return Err(DecodeError::UnknownVersion(buf[0]));
        }
        let flags = buf[1];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let kind = buf[3];
        let target = be_u64(&buf[5..13]);
        let rule = match kind {
            0 => RouteRule::Direct,
            1 => RouteRule::Node(NodeId(target)),
            2 => RouteRule::Closest(NodeId(target)),
            3 => RouteRule::Service,
            other => return Err(DecodeError::UnknownRouteKind(other)),
        };
        if matches!(rule, RouteRule::Direct | RouteRule::Service) && target != 0 {
            return Err(DecodeError::UnexpectedTarget { kind });
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&buf[21..25]);
        let len = u32::from_be_bytes(len) as usize;
        if len > max_payload {
            return Err(DecodeError::Oversized {
                len,
                max: max_payload,
            });
        }
        let header = Header {
            service: ServiceId(buf[2]),
            rule,
            ttl: buf[TTL_OFFSET],
            source: NodeId(be_u64(&buf[13..21])),
            unreliable: flags & FLAG_UNRELIABLE != 0,
        };
        Ok((header, len))
    }
}

/// A validated frame: header plus exactly the declared payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The decoded header.
    pub header: Header,
    /// The payload bytes (a behaviour's postcard-encoded message).
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Validates `buf` as exactly one frame whose payload is at most
    /// `max_payload` bytes.
    pub fn decode(buf: &'a [u8], max_payload: usize) -> Result<Frame<'a>, DecodeError> {
        let (header, len) = Header::decode(buf, max_payload)?;
        let actual = buf.len() - HEADER_LEN;
        if actual < len {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN + len,
                got: buf.len(),
            });
        }
        if actual > len {
            return Err(DecodeError::LengthMismatch {
                declared: len,
                actual,
            });
        }
        Ok(Frame {
            header,
            payload: &buf[HEADER_LEN..],
        })
    }

    /// Encodes a header and payload into a new frame.
    ///
    /// The caller bounds the payload by the node's maximum (the core does);
    /// a payload over `u32::MAX` bytes is a caller bug and is reported as
    /// [`DecodeError::Oversized`] rather than truncated on the wire.
    pub fn encode(header: &Header, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let len = u32::try_from(payload.len()).map_err(|_| DecodeError::Oversized {
            len: payload.len(),
            max: u32::MAX as usize,
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        header.encode_into(len, &mut out);
        out.extend_from_slice(payload);
        Ok(out)
    }
}

/// The service byte of a frame, without validating the rest (for counters
/// and metrics; use [`Frame::decode`] for anything that acts on the frame).
pub fn peek_service(frame: &[u8]) -> Option<ServiceId> {
    frame.get(2).map(|s| ServiceId(*s))
}

/// Rewrites the TTL of an already validated frame in place (forwarding).
///
/// Does nothing on a buffer shorter than a header, which a validated frame
/// never is.
pub(crate) fn set_ttl(frame: &mut [u8], ttl: u8) {
    if let Some(b) = frame.get_mut(TTL_OFFSET) {
        *b = ttl;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_frames_round_trip_and_bad_ones_are_errors() {
        let f = LinkFrame::Credit(123_456).encode();
        assert_eq!(LinkFrame::decode(&f), Ok(LinkFrame::Credit(123_456)));
        assert!(LinkFrame::decode(&f[..5]).is_err());
        let r = LinkFrame::Received(u64::MAX - 1).encode();
        assert_eq!(LinkFrame::decode(&r), Ok(LinkFrame::Received(u64::MAX - 1)));
        assert!(LinkFrame::decode(&r[..9]).is_err());
        assert!(LinkFrame::decode(&[r.clone(), vec![0]].concat()).is_err());
        assert!(LinkFrame::decode(&[LINK_VERSION, 9, 0, 0, 0, 0]).is_err());
        assert!(LinkFrame::decode(&[]).is_err());
        // A link frame is never taken for a message.
        assert!(Frame::decode(&f, 1 << 20).is_err());
    }

    #[test]
    fn the_credited_flag_is_set_cleared_and_decoded() {
        let h = Header {
            service: ServiceId(3),
            rule: RouteRule::Node(NodeId(7)),
            ttl: 9,
            source: NodeId(42),
            unreliable: false,
        };
        let mut f = h.to_bytes(0).to_vec();
        assert!(!is_credited(&f));
        set_credited(&mut f, true);
        assert!(is_credited(&f));
        assert_eq!(Frame::decode(&f, 16).map(|fr| fr.header), Ok(h));
        assert_eq!(source_of(&f), Some(NodeId(42)));
        set_credited(&mut f, false);
        assert_eq!(f, h.to_bytes(0).to_vec());
    }

    use super::*;
    use proptest::prelude::*;

    fn header(rule: RouteRule) -> Header {
        Header {
            service: ServiceId(7),
            rule,
            ttl: 9,
            source: NodeId(0x0102_0304_0506_0708),
            unreliable: false,
        }
    }

    #[test]
    fn round_trips_every_rule() {
        for rule in [
            RouteRule::Direct,
            RouteRule::Node(NodeId(42)),
            RouteRule::Closest(NodeId(u64::MAX)),
            RouteRule::Service,
        ] {
            let h = Header {
                unreliable: true,
                ..header(rule)
            };
            let frame = Frame::encode(&h, b"hello").unwrap();
            assert_eq!(frame.len(), HEADER_LEN + 5);
            let f = Frame::decode(&frame, 1024).unwrap();
            assert_eq!(f.header, h);
            assert_eq!(f.payload, b"hello");
        }
    }

    #[test]
    fn distinct_errors_for_distinct_faults() {
        let good = Frame::encode(&header(RouteRule::Node(NodeId(3))), &[1, 2, 3, 4]).unwrap();

        assert!(matches!(
            Frame::decode(&good[..10], 1024),
            Err(DecodeError::Truncated {
                needed: 25,
                got: 10
            })
        ));
        assert!(matches!(
            Frame::decode(&good[..27], 1024),
            Err(DecodeError::Truncated {
                needed: 29,
                got: 27
            })
        ));
        assert!(matches!(
            Frame::decode(&good, 3),
            Err(DecodeError::Oversized { len: 4, max: 3 })
        ));
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(
            Frame::decode(&bad, 1024),
            Err(DecodeError::UnknownVersion(2))
        );
        assert_eq!(
            Frame::decode(&[9], 1024),
            Err(DecodeError::UnknownVersion(9))
        );
        let mut bad = good.clone();
        bad[1] = 0b100;
        assert_eq!(Frame::decode(&bad, 1024), Err(DecodeError::UnknownFlags(4)));
        let mut bad = good.clone();
        bad[3] = 4;
        assert_eq!(
            Frame::decode(&bad, 1024),
            Err(DecodeError::UnknownRouteKind(4))
        );
        let mut bad = good.clone();
        bad[3] = 0;
        assert_eq!(
            Frame::decode(&bad, 1024),
            Err(DecodeError::UnexpectedTarget { kind: 0 })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            Frame::decode(&long, 1024),
            Err(DecodeError::LengthMismatch {
                declared: 4,
                actual: 5
            })
        );
        assert_eq!(
            Frame::decode(&[], 1024),
            Err(DecodeError::Truncated { needed: 25, got: 0 })
        );
    }

    #[test]
    fn ttl_rewrite_touches_only_ttl() {
        let mut f = Frame::encode(&header(RouteRule::Service), b"x").unwrap();
        set_ttl(&mut f, 3);
        let d = Frame::decode(&f, 16).unwrap();
        assert_eq!(d.header.ttl, 3);
        assert_eq!(d.header.service, ServiceId(7));
    }

    fn arb_rule() -> impl Strategy<Value = RouteRule> {
        prop_oneof![
            Just(RouteRule::Direct),
            any::<u64>().prop_map(|n| RouteRule::Node(NodeId(n))),
            any::<u64>().prop_map(|n| RouteRule::Closest(NodeId(n))),
            Just(RouteRule::Service),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), max in 0usize..256) {
            let _ = Frame::decode(&bytes, max);
            let _ = Header::decode(&bytes, max);
            let _ = LinkFrame::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_frames(
            rule in arb_rule(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            idx in any::<usize>(),
            byte in any::<u8>(),
            cut in any::<usize>(),
        ) {
            let mut f = Frame::encode(&header(rule), &payload).unwrap();
            let i = idx % f.len();
            f[i] = byte;
            let cut = cut % (f.len() + 1);
            let _ = Frame::decode(&f[..cut], 64);
            let _ = Frame::decode(&f, 64);
        }

        #[test]
        fn round_trip(
            rule in arb_rule(),
            service in any::<u8>(),
            ttl in any::<u8>(),
            source in any::<u64>(),
            unreliable in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let h = Header { service: ServiceId(service), rule, ttl, source: NodeId(source), unreliable };
            let f = Frame::encode(&h, &payload).unwrap();
            let d = Frame::decode(&f, 256).unwrap();
            prop_assert_eq!(d.header, h);
            prop_assert_eq!(d.payload, &payload[..]);
        }
    }
}
