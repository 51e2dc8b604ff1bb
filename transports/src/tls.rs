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

// The crate-private helpers below serve the QUIC and TCP transports; a
// build with neither keeps only the public verifier and configs.
#![cfg_attr(not(any(feature = "quic", feature = "tcp")), allow(dead_code))]

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

/// The DER of an ed25519 SubjectPublicKeyInfo without its key: SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }.
/// RFC 8410 fixes this encoding: no parameters, exactly 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The peer presented no certificate.
    #[error("no certificate")]
    Missing,
    /// The peer presented a chain: plexus certificates stand alone.
    #[error("{0} certificates presented; exactly one is expected")]
    Chain(usize),
    /// The certificate does not parse as X.509 DER.
    #[error("certificate does not parse: {0}")]
    Malformed(String),
    /// Its key is not an ed25519 key (RFC 8410 encoding).
    #[error("the certificate's key is not ed25519")]
    KeyType,
}

/// The ed25519 public key of a certificate, taken from its parsed
/// SubjectPublicKeyInfo (rustls-webpki's X.509 parser): the certificate must
/// parse as a whole, and the SPKI must be exactly an ed25519 key.
pub fn ed25519_key(cert: &CertificateDer<'_>) -> Result<[u8; 32], CertError> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| CertError::Malformed(e.to_string()))?;
    let spki = parsed.subject_public_key_info();
    let spki: &[u8] = spki.as_ref();
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(key);
            Ok(k)
        }
        _ => Err(CertError::KeyType),
    }
}

/// The node id a peer proved, from the certificates it presented: exactly
/// one certificate with an ed25519 key.
pub fn peer_node_id(certs: &[CertificateDer<'_>]) -> Result<NodeId, CertError> {
    match certs {
        [] => Err(CertError::Missing),
        [one] => ed25519_key(one).map(|k| node_id_of(&k)),
        more => Err(CertError::Chain(more.len())),
    }
}

/// The node id the peer of a finished handshake proved, as a dial error
/// when it proved none.
pub(crate) fn proven_id(
    certs: Option<&[CertificateDer<'_>]>,
) -> Result<NodeId, plexus_network::runtime::DialError> {
    peer_node_id(certs.unwrap_or_default())
        .map_err(|e| plexus_network::runtime::DialError::Failed(format!("peer certificate: {e}")))
}

#[derive(Debug)]
struct PeerVerifier;

fn bad_cert(e: CertError) -> rustls::Error {
    log::debug!("tls: peer certificate refused: {e}");
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// The end-entity certificate must stand alone and hold an ed25519 key.
fn check_cert(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(bad_cert(CertError::Chain(1 + intermediates.len())));
    }
    ed25519_key(end_entity).map(|_| ()).map_err(bad_cert)
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
    let key = ed25519_key(cert).map_err(bad_cert)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_cert(end_entity, intermediates)?;
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
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_cert(end_entity, intermediates)?;
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
        assert_eq!(&ed25519_key(&cert).unwrap()[..], id.public_key());
        assert_eq!(peer_node_id(std::slice::from_ref(&cert)), Ok(id.node_id()));
        assert_eq!(peer_node_id(&[]), Err(CertError::Missing));
        assert_eq!(
            peer_node_id(&[cert.clone(), cert]),
            Err(CertError::Chain(2))
        );
        let garbage = CertificateDer::from(&b"garbage"[..]);
        assert!(matches!(
            ed25519_key(&garbage),
            Err(CertError::Malformed(_))
        ));
    }

    #[test]
    fn a_prefix_hidden_in_another_field_is_not_a_key() {
        // A certificate for a P-256 key whose subject name carries the
        // ed25519 SPKI bytes: a byte search would have found a "key".
        let mut params = rcgen::CertificateParams::new(vec!["plexus".into()]).unwrap();
        let mut fake = ED25519_SPKI_PREFIX.to_vec();
        fake.extend_from_slice(&[7u8; 32]);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::Utf8String(String::from_utf8_lossy(&fake).into_owned()),
        );
        params.distinguished_name.push(
            rcgen::DnType::OrganizationName,
            rcgen::DnValue::PrintableString(rcgen::PrintableString::try_from("x").unwrap()),
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        assert_eq!(ed25519_key(&der), Err(CertError::KeyType));
        // A raw blob with the prefix inside is not a certificate at all.
        let mut blob = vec![0x30, 0x82, 0x00, 0x40];
        blob.extend_from_slice(&fake);
        assert!(ed25519_key(&CertificateDer::from(blob)).is_err());
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
