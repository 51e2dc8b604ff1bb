//! TLS 1.3 shared by QUIC and TCP: mutual authentication by node key, and
//! the network-key proof.
//!
//! Both sides present a self-signed certificate for their ed25519 key. The
//! verifier trusts no CA: it takes the ed25519 public key from the
//! certificate, checks the handshake signature against *that key*, and the
//! transport derives the peer's [`NodeId`] from it. Since the peer signed
//! the handshake with the key its id is derived from, the id is proven.
//! The dialler then compares it with the id it dialled.
//!
//! Network key: after the handshake each side sends, as its first frame,
//! `HMAC-SHA256(network_key, exporter ‖ role)`, where `exporter` is 32 bytes
//! of TLS keying material exported for this session (RFC 5705) and `role`
//! tells dialler from listener (so a proof cannot be reflected back). A
//! node without a configured key uses the all-zero key, so keyed and
//! unkeyed nodes refuse each other too. The proof is bound to the session:
//! it cannot be replayed on another connection.

use crate::identity::{node_id_of, Identity};
use plexus_network::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// The name every certificate carries and every dialler asks for; identity
/// is the key, not the name.
pub const SERVER_NAME: &str = "plexus";
/// ALPN protocol id.
pub const ALPN: &[u8] = b"plexus/1";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-plexus-network-key";

/// The DER prefix of an ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE {
/// OID 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The ed25519 public key in a certificate. Which occurrence of the prefix
/// is found does not matter for security: the handshake signature is
/// checked against the key returned here, so the peer must hold it.
pub(crate) fn ed25519_key(cert: &[u8]) -> Option<&[u8]> {
    let at = cert
        .windows(ED25519_SPKI_PREFIX.len())
        .position(|w| w == ED25519_SPKI_PREFIX)?;
    cert.get(at + ED25519_SPKI_PREFIX.len()..at + ED25519_SPKI_PREFIX.len() + 32)
}

/// The node id a peer proved, from its certificate chain.
pub fn peer_node_id(certs: &[CertificateDer<'_>]) -> Option<NodeId> {
    certs.first().and_then(|c| ed25519_key(c)).map(node_id_of)
}

#[derive(Debug)]
struct PeerVerifier;

fn bad_cert() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// Only TLS 1.3 is offered; a TLS 1.2 signature never needs checking.
fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    let key = ed25519_key(cert).ok_or_else(bad_cert)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        ed25519_key(end_entity).ok_or_else(bad_cert)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ed25519_key(end_entity).ok_or_else(bad_cert)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener side: TLS 1.3 only, client certificate required, peers
/// verified by node key. Public for custom transports and benchmarks.
pub fn server_config(id: &Identity) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier))
        .with_single_cert(vec![id.cert()], id.private_key())?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// The dialler side: TLS 1.3 only, presents its certificate, verifies the
/// peer by node key (compare [`peer_node_id`] with the id dialled).
pub fn client_config(id: &Identity) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier))
        .with_client_auth_cert(vec![id.cert()], id.private_key())?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// Which end of the connection a proof comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Dialer = 0,
    Listener = 1,
}

impl Role {
    pub(crate) fn peer(self) -> Role {
        match self {
            Role::Dialer => Role::Listener,
            Role::Listener => Role::Dialer,
        }
    }
}

/// The exporter label and context for the keying material the proof binds to.
pub(crate) fn exporter_label() -> &'static [u8] {
    EXPORTER_LABEL
}

/// `HMAC-SHA256(key, exporter ‖ role)`.
pub(crate) fn proof(key: &[u8; 32], exporter: &[u8; 32], role: Role) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(exporter);
    ctx.update(&[role as u8]);
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks, in constant time, the peer's proof.
pub(crate) fn check_proof(key: &[u8; 32], exporter: &[u8; 32], peer: Role, got: &[u8]) -> bool {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut msg = [0u8; 33];
    msg[..32].copy_from_slice(exporter);
    msg[32] = peer as u8;
    ring::hmac::verify(&k, &msg, got).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_in_our_certificates_is_found() {
        let id = Identity::generate().unwrap();
        let cert = id.cert();
        assert_eq!(ed25519_key(&cert), Some(id.public_key()));
        assert_eq!(peer_node_id(&[cert]), Some(id.node_id()));
        assert_eq!(ed25519_key(b"garbage"), None);
    }

    #[test]
    fn proofs_bind_key_session_and_role() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let (s1, s2) = ([7u8; 32], [8u8; 32]);
        let p = proof(&k1, &s1, Role::Dialer);
        assert!(check_proof(&k1, &s1, Role::Dialer, &p));
        assert!(!check_proof(&k2, &s1, Role::Dialer, &p), "other key");
        assert!(!check_proof(&k1, &s2, Role::Dialer, &p), "other session");
        assert!(!check_proof(&k1, &s1, Role::Listener, &p), "reflected");
        assert!(!check_proof(&k1, &s1, Role::Dialer, &p[..31]), "truncated");
    }
}
