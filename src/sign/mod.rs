//! OpenPGP signing and verification for binpkgs (rPGP).
//!
//! API CONTRACT (other modules code against this; the sign helper implements it):
//! v4 keys only; SHA-512 signatures; output must verify with real gpg the way
//! Portage checks it (GOODSIG + VALIDSIG, trusted key).

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("signature: {0}")]
    Signature(String),
    #[error("no key in the keyring made this signature (issuer {issuer})")]
    UnknownKey { issuer: String },
    #[error("bad signature from key {fingerprint}")]
    BadSignature { fingerprint: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who made a good signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// Fingerprint (upper-case hex) of the key or subkey that made the signature.
    pub signing_fingerprint: String,
    /// Fingerprint of the primary key that certifies it.
    pub primary_fingerprint: String,
    /// First user id of the primary key, if any.
    pub user_id: Option<String>,
}

/// A secret key able to sign: the primary key, or its signing-capable subkey.
pub struct SigningKey {
    _private: (),
}

impl SigningKey {
    /// Reads an ASCII-armored v4 secret key; `passphrase_file` holds the passphrase
    /// (first line, trailing newline stripped) when the key is protected.
    pub fn from_armored_file(
        path: &Path,
        passphrase_file: Option<&Path>,
    ) -> Result<Self, SignError> {
        let _ = (path, passphrase_file);
        Err(SignError::Signature("not implemented".into()))
    }
    /// Primary key fingerprint, upper-case hex.
    pub fn fingerprint(&self) -> String {
        String::new()
    }
    /// ASCII-armored detached SHA-512 signature over `data` (what goes into a gpkg `.sig`).
    pub fn sign_detached(&self, data: &mut dyn Read) -> Result<String, SignError> {
        let _ = data;
        Err(SignError::Signature("not implemented".into()))
    }
    /// Clear-signed text (`-----BEGIN PGP SIGNED MESSAGE-----`, Hash: SHA512), as for a gpkg Manifest.
    pub fn sign_cleartext(&self, text: &str) -> Result<String, SignError> {
        let _ = text;
        Err(SignError::Signature("not implemented".into()))
    }
    /// The public key (ASCII-armored), to hand to clients.
    pub fn public_key_armored(&self) -> Result<String, SignError> {
        Err(SignError::Signature("not implemented".into()))
    }
}

/// A set of trusted public keys.
pub struct Keyring {
    _private: (),
}

impl Keyring {
    /// An ASCII-armored public key file (may hold several keys), or a directory of them.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let _ = path;
        Err(SignError::Signature("not implemented".into()))
    }
    /// Checks an ASCII-armored detached signature over `data`.
    pub fn verify_detached(
        &self,
        armored_signature: &[u8],
        data: &mut dyn Read,
    ) -> Result<Signer, SignError> {
        let _ = (armored_signature, data);
        Err(SignError::Signature("not implemented".into()))
    }
    /// Checks a clear-signed message; returns the signed text (dash-escaping undone) and the signer.
    pub fn verify_cleartext(&self, armored: &str) -> Result<(String, Signer), SignError> {
        let _ = armored;
        Err(SignError::Signature("not implemented".into()))
    }
}
