//! A peer's certificate as the TLS verifiers see it: arbitrary bytes must
//! either parse as one certificate with an ed25519 key or be refused with
//! an error, never panic; and whatever key is accepted is exactly 32 bytes
//! that the certificate's SubjectPublicKeyInfo holds.
//!
//! `cargo +nightly fuzz run cert`
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_transports::tls::{ed25519_key, peer_node_id};
use rustls::pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let cert = CertificateDer::from(data);
    if let Ok(key) = ed25519_key(&cert) {
        assert_eq!(
            peer_node_id(&[cert]),
            Ok(plexus_transports::node_id_of(&key))
        );
    }
});
