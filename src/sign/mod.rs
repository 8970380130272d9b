//! OpenPGP signing and verification for binpkgs (rPGP).
//!
//! API CONTRACT (other modules code against this; the sign helper implements it):
//! v4 keys only; SHA-512 signatures; output must verify with real gpg the way
//! Portage checks it (GOODSIG + VALIDSIG, trusted key).
//!
//! - [`SigningKey`] loads an ASCII-armored v4 secret key (as `gpg --armor --export-secret-keys`
//!   writes it) and picks the component that signs: the newest valid signing subkey, else the
//!   primary key when it may sign.
//! - [`SigningKey::sign_detached`] makes a binary-mode (type 0x00) detached signature, the
//!   `.sig` members of a gpkg; [`SigningKey::sign_cleartext`] a text-mode (type 0x01)
//!   clear-signed document laid out like `gpg --clearsign`, for the gpkg `Manifest`.
//! - [`Keyring`] holds trusted public keys and checks both kinds of signature, reporting the
//!   [`Signer`].
//!
//! Fingerprints are printed as gpg prints them in `--status-fd` output: 40 upper-case hex digits.

use std::path::PathBuf;

mod armor;
mod cert;
mod generate;
mod keyring;
mod keys;

pub use generate::generate_signing_key;
pub use keyring::Keyring;
pub use keys::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file (secret key, passphrase, or keyring file) is unusable.
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    /// A signature (or clear-signed document) is malformed or unacceptable as such:
    /// bad armor, no signature packet, weak hash, dated in the future, expired, ...
    #[error("signature: {0}")]
    Signature(String),
    #[error("no key in the keyring made this signature (issuer {issuer})")]
    UnknownKey { issuer: String },
    #[error("bad signature from key {fingerprint}")]
    BadSignature { fingerprint: String },
    /// The keyring knows the issuing key, but it may not sign now (revoked, expired, no
    /// signing capability, missing back-signature, ...).
    #[error("signing key {fingerprint} is not valid: {reason}")]
    InvalidKey { fingerprint: String, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading the data that is signed or being verified failed.
    #[error("reading the signed data: {0}")]
    Data(#[source] std::io::Error),
}

/// Who made a good signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// Fingerprint (upper-case hex) of the key or subkey that made the signature.
    pub signing_fingerprint: String,
    /// Fingerprint of the primary key that certifies it.
    pub primary_fingerprint: String,
    /// First user id of the primary key, if any (the one flagged primary, when one is).
    pub user_id: Option<String>,
}

/// Formats a fingerprint the way gpg prints it in status lines: upper-case hex, no spaces.
pub fn fingerprint_hex(fingerprint: &pgp::types::Fingerprint) -> String {
    format!("{fingerprint:X}")
}

/// Groups an upper-case hex fingerprint in blocks of four, as `gpg --fingerprint` shows it
/// (`AAAA BBBB ...  FFFF ...`, with a double space in the middle of a v4 fingerprint).
pub fn fingerprint_grouped(hex: &str) -> String {
    let groups: Vec<&str> = hex
        .as_bytes()
        .chunks(4)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    let half = groups.len() / 2;
    let mut out = String::with_capacity(hex.len() + groups.len());
    for (index, group) in groups.iter().enumerate() {
        if index > 0 {
            out.push_str(if index == half && groups.len() == 10 {
                "  "
            } else {
                " "
            });
        }
        out.push_str(group);
    }
    out
}

#[cfg(test)]
mod tests;
