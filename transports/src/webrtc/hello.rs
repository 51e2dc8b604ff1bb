//! The first exchange on a WebRTC connection: each side proves its
//! [`NodeId`] and the network key, bound to the DTLS certificates of both
//! sides.
//!
//! DTLS in WebRTC uses self-signed certificates; what authenticates them is
//! the fingerprint in the peer's SDP, which DTLS checks. Signalling may
//! pass through other nodes (or a web server), so the fingerprints
//! themselves are bound to identities here:
//!
//! ```text
//! T      = SHA-256("plexus-webrtc-v1" ‖ offerer's fingerprint ‖ answerer's fingerprint)
//!          (each side takes its own fingerprint from its own SDP and the
//!          peer's from the certificate the peer presented in DTLS)
//! hello  = public key (32) ‖ ed25519 signature of ("plexus-webrtc-v1" ‖ role ‖ T) (64)
//!          ‖ HMAC-SHA256(network key, T ‖ role) (32)
//! ```
//!
//! with role 0 for the offerer and 1 for the answerer, and fingerprints as
//! the 32 bytes of SHA-256 of the DER certificate. A node that swapped an
//! SDP's fingerprint for its own (to sit in the middle) cannot produce the
//! signature over the certificate the peer actually sees, and a hello
//! copied from another session names other certificates.
//!
//! The offerer sends its hello first. The answerer checks it, then sends
//! its own hello, or a refusal (`0xFF`, then 1 for the network key, 2 for
//! anything else) and closes: it never hands an HMAC of the network key to
//! a peer that has not proven the key itself.

use crate::tls::{self, Role};
use crate::Identity;
use plexus_network::NodeId;
use ring::signature::{UnparsedPublicKey, ED25519};

/// Bytes of a hello.
pub(crate) const HELLO_LEN: usize = 32 + 64 + 32;
const DOMAIN: &[u8] = b"plexus-webrtc-v1";

/// Why a hello was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HelloError {
    /// Not [`HELLO_LEN`] bytes.
    Malformed(usize),
    /// The signature does not verify for the key it came with.
    BadSignature,
    /// The network-key proof is wrong.
    NetworkKey,
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::Malformed(n) => write!(f, "hello of {n} bytes, expected {HELLO_LEN}"),
            HelloError::BadSignature => write!(f, "the hello's signature does not verify"),
            HelloError::NetworkKey => write!(f, "network key mismatch"),
        }
    }
}

/// The SHA-256 certificate fingerprint an SDP announces: exactly one
/// `a=fingerprint` line, else the SDP is refused (two lines could be read
/// two ways).
pub(crate) fn fingerprint(sdp: &str) -> Result<[u8; 32], String> {
    let mut lines = sdp
        .lines()
        .map(str::trim)
        .filter(|l| l.to_ascii_lowercase().starts_with("a=fingerprint"));
    let line = lines.next().ok_or("the SDP has no a=fingerprint line")?;
    if lines.next().is_some() {
        return Err("the SDP has more than one a=fingerprint line".into());
    }
    let line = line
        .get("a=fingerprint:".len()..)
        .filter(|_| line.as_bytes().get(13) == Some(&b':'))
        .ok_or("malformed a=fingerprint line")?;
    let (algo, value) = line.split_once(' ').ok_or("malformed a=fingerprint line")?;
    if !algo.eq_ignore_ascii_case("sha-256") {
        return Err(format!("fingerprint algorithm {algo}, expected sha-256"));
    }
    let mut out = [0u8; 32];
    let mut n = 0;
    for part in value.trim().split(':') {
        if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err("fingerprint is not colon-separated hex bytes".into());
        }
        let b = u8::from_str_radix(part, 16).map_err(|_| "fingerprint is not hex")?;
        *out.get_mut(n).ok_or("fingerprint longer than 32 bytes")? = b;
        n += 1;
    }
    if n != 32 {
        return Err(format!("fingerprint of {n} bytes, expected 32"));
    }
    Ok(out)
}

/// What an answerer sends instead of its hello when the offerer's fails:
/// `0xFF`, then 1 (network key) or 2 (anything else).
pub(crate) fn refusal(e: &HelloError) -> [u8; 2] {
    match e {
        HelloError::NetworkKey => [0xFF, 1],
        _ => [0xFF, 2],
    }
}

/// The reason in a refusal; `None` if `msg` is not one.
pub(crate) fn refusal_reason(msg: &[u8]) -> Option<HelloError> {
    match msg {
        [0xFF, 1] => Some(HelloError::NetworkKey),
        [0xFF, _] => Some(HelloError::BadSignature),
        _ => None,
    }
}

/// The largest data channel message an SDP's author takes: its
/// `a=max-message-size` (RFC 8841), 64 KiB when absent, unbounded for 0.
pub(crate) fn max_message_size(sdp: &str) -> usize {
    match sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=max-message-size:"))
        .map(|v| v.trim().parse::<usize>())
    {
        None => 64 * 1024,
        Some(Ok(0)) => usize::MAX,
        Some(Ok(n)) => n,
        // Unreadable: the smallest size every stack takes.
        Some(Err(_)) => 16 * 1024,
    }
}

/// The session transcript both hellos bind to.
pub(crate) fn transcript(offerer: &[u8; 32], answerer: &[u8; 32]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(offerer);
    ctx.update(answerer);
    let mut t = [0u8; 32];
    t.copy_from_slice(ctx.finish().as_ref());
    t
}

fn signed(role: Role, t: &[u8; 32]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.push(role as u8);
    m.extend_from_slice(t);
    m
}

/// This side's hello.
pub(crate) fn hello(
    identity: &Identity,
    network_key: &[u8; 32],
    t: &[u8; 32],
    role: Role,
) -> Result<Vec<u8>, String> {
    let mut h = identity.public_key().to_vec();
    h.extend_from_slice(&identity.sign(&signed(role, t)).map_err(|e| e.to_string())?);
    h.extend_from_slice(&tls::proof(network_key, t, role));
    Ok(h)
}

/// Checks the peer's hello (the peer has role `peer`); its node id if good.
pub(crate) fn check_hello(
    msg: &[u8],
    network_key: &[u8; 32],
    t: &[u8; 32],
    peer: Role,
) -> Result<NodeId, HelloError> {
    if msg.len() != HELLO_LEN {
        return Err(HelloError::Malformed(msg.len()));
    }
    let (key, rest) = msg.split_at(32);
    let (sig, proof) = rest.split_at(64);
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&signed(peer, t), sig)
        .map_err(|_| HelloError::BadSignature)?;
    if !tls::check_proof(network_key, t, peer, proof) {
        return Err(HelloError::NetworkKey);
    }
    Ok(crate::node_id_of(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\na=fingerprint:sha-256 \
        01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1a:1b:1c:1d:1e:1f:20\r\n";

    #[test]
    fn fingerprints_parse_and_bad_ones_are_refused() {
        let fp = fingerprint(SDP).unwrap();
        assert_eq!(fp[0], 1);
        assert_eq!(fp[31], 0x20);
        assert!(fingerprint("v=0\r\n").is_err());
        assert!(fingerprint("a=fingerprint:sha-1 01:02").is_err());
        assert!(fingerprint("a=fingerprint:sha-256 01:zz").is_err());
        assert!(fingerprint("a=fingerprint:sha-256 01:02").is_err());
        // Two fingerprint lines (one without a value, one upper-case) are
        // ambiguous: refused.
        let line = SDP.lines().nth(2).unwrap();
        assert!(fingerprint(&format!("a=fingerprint\r\n{line}\r\n")).is_err());
        assert!(fingerprint(&format!(
            "{SDP}A=FINGERPRINT:sha-256 {}\r\n",
            ["ab"; 32].join(":")
        ))
        .is_err());
        assert!(fingerprint(&format!("a=fingerprint:sha-256 {}", ["+1"; 32].join(":"))).is_err());
        let long = format!("a=fingerprint:sha-256 {}", ["ab"; 33].join(":"));
        assert!(fingerprint(&long).is_err());
    }

    #[test]
    fn max_message_size_follows_rfc_8841() {
        assert_eq!(max_message_size("v=0\r\n"), 65536);
        assert_eq!(max_message_size("a=max-message-size:262144\r\n"), 262_144);
        assert_eq!(max_message_size("a=max-message-size:0\r\n"), usize::MAX);
        assert_eq!(max_message_size("a=max-message-size:x\r\n"), 16384);
    }

    #[test]
    fn a_hello_proves_the_node_for_this_session_role_and_key_only() {
        let id = Identity::generate().unwrap();
        let key = [7u8; 32];
        let t = transcript(&[1; 32], &[2; 32]);
        let h = hello(&id, &key, &t, Role::Dialer).unwrap();
        assert_eq!(h.len(), HELLO_LEN);
        assert_eq!(check_hello(&h, &key, &t, Role::Dialer), Ok(id.node_id()));
        // Another session (a fingerprint swapped in the middle), the other
        // role, another network key, a short or altered hello: refused.
        let other = transcript(&[1; 32], &[3; 32]);
        assert_eq!(
            check_hello(&h, &key, &other, Role::Dialer),
            Err(HelloError::BadSignature)
        );
        assert_eq!(
            check_hello(&h, &key, &t, Role::Listener),
            Err(HelloError::BadSignature)
        );
        assert_eq!(
            check_hello(&h, &[8; 32], &t, Role::Dialer),
            Err(HelloError::NetworkKey)
        );
        assert_eq!(
            check_hello(&h[..100], &key, &t, Role::Dialer),
            Err(HelloError::Malformed(100))
        );
        assert_eq!(
            refusal_reason(&refusal(&HelloError::NetworkKey)),
            Some(HelloError::NetworkKey)
        );
        assert!(refusal_reason(&h).is_none());
        let mut forged = h.clone();
        forged[..32].copy_from_slice(Identity::generate().unwrap().public_key());
        assert_eq!(
            check_hello(&forged, &key, &t, Role::Dialer),
            Err(HelloError::BadSignature)
        );
    }
}
