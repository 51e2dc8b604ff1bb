//! Node identity: an ed25519 key pair, and the [`NodeId`] derived from it.
//!
//! `NodeId` = the first 8 bytes (big-endian) of SHA-256 of the 32-byte
//! ed25519 public key. Each TLS handshake proves possession of the key (see
//! [`crate::tls`]), so a peer cannot claim an id that is not its own.
//!
//! Key files hold the private key as PKCS#8 PEM; [`Identity::load_or_generate`]
//! creates one (mode 0600 on Unix) on first run.

use plexus_network::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use thiserror::Error;

/// Why an identity could not be made or loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Key generation or certificate signing failed.
    #[error("key or certificate: {0}")]
    Crypto(String),
    /// The key file is not a PKCS#8 ed25519 key.
    #[error("key file {path}: {why}")]
    BadKeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A node's key pair, its self-signed certificate, and its id.
#[derive(Debug)]
pub struct Identity {
    key: rcgen::KeyPair,
    cert: CertificateDer<'static>,
    node_id: NodeId,
}

/// The id of the node whose ed25519 public key is `public_key`.
pub fn node_id_of(public_key: &[u8]) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_ref()[..8]);
    NodeId(u64::from_be_bytes(b))
}

impl Identity {
    /// A fresh key pair from the OS's RNG.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| IdentityError::Crypto(e.to_string()))?;
        Self::from_key(key)
    }

    /// From a PKCS#8 PEM private key (as [`to_pem`](Self::to_pem) writes).
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| IdentityError::BadKeyFile {
            path: "<pem>".into(),
            why: e.to_string(),
        })?;
        if !key.is_compatible(&rcgen::PKCS_ED25519) {
            return Err(IdentityError::BadKeyFile {
                path: "<pem>".into(),
                why: "not an ed25519 key".into(),
            });
        }
        Self::from_key(key)
    }

    fn from_key(key: rcgen::KeyPair) -> Result<Self, IdentityError> {
        let node_id = node_id_of(key.public_key_raw());
        let params = rcgen::CertificateParams::new(vec![crate::tls::SERVER_NAME.to_string()])
            .map_err(|e| IdentityError::Crypto(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| IdentityError::Crypto(e.to_string()))?;
        Ok(Identity {
            cert: cert.der().clone(),
            key,
            node_id,
        })
    }

    /// Loads the key at `path`, or generates one and writes it there.
    /// Returns the identity and whether it was created.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), IdentityError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem)
                .map(|id| (id, false))
                .map_err(|e| match e {
                    IdentityError::BadKeyFile { why, .. } => {
                        IdentityError::BadKeyFile { path: shown, why }
                    }
                    other => other,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate()?;
                write_private(path, id.to_pem().as_bytes()).map_err(|source| {
                    IdentityError::Io {
                        path: shown,
                        source,
                    }
                })?;
                Ok((id, true))
            }
            Err(source) => Err(IdentityError::Io {
                path: shown,
                source,
            }),
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The 32-byte ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key_raw()
    }

    /// An ed25519 signature of `msg` by the node's key (64 bytes): how a
    /// transport without TLS client certificates (WebRTC) proves the node.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let pair =
            ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.key.serialize_der())
                .map_err(|e| IdentityError::Crypto(e.to_string()))?;
        Ok(pair.sign(msg).as_ref().to_vec())
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub(crate) fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_derived_from_the_key_and_survives_a_round_trip() {
        let a = Identity::generate().unwrap();
        let b = Identity::from_pem(&a.to_pem()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(a.node_id(), node_id_of(a.public_key()));
        assert_eq!(a.public_key().len(), 32);
        assert_ne!(a.node_id(), Identity::generate().unwrap().node_id());
    }

    #[test]
    fn key_file_is_created_then_reused() {
        let dir = std::env::temp_dir().join(format!("plexus-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let (a, created) = Identity::load_or_generate(&path).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(a.node_id(), b.node_id());
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            Identity::load_or_generate(&path),
            Err(IdentityError::BadKeyFile { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
