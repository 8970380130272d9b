//! Binary packages: gpkg (GLEP 78) read/write/sign, legacy xpak read, Manifest.
//!
//! API CONTRACT (the index and later modules code against this; the binpkg
//! helper implements it and may add to it, but keeps these names and meanings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sign::{Keyring, Signer, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum BinpkgError {
    /// Structural or content problem, naming the archive member when there is one.
    #[error("{path}: {member}: {message}")]
    Member {
        path: PathBuf,
        member: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Sign {
        path: PathBuf,
        #[source]
        source: crate::sign::SignError,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gpkg,
    Xpak,
}

/// The package's metadata: `metadata/<KEY>` files (gpkg) or xpak entries, as text,
/// with a trailing newline removed. Binary entries (environment.bz2) are not in `text`
/// but their names are in `binary_keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    pub text: BTreeMap<String, String>,
    pub binary_keys: Vec<String>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Full name inside the outer tar, e.g. `hello-1.0-1/image.tar.zst`.
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SignatureStatus {
    /// No .sig members and a plain Manifest.
    Unsigned,
    /// Signature members are present (not checked: no keyring given).
    Present,
    /// Every signature is good, from these signers.
    Good { signers: Vec<Signer> },
}

/// What reading a binpkg found. Reading checks the structure and, for gpkg, every
/// member against the Manifest; it does not check signatures (see [`verify`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Binpkg {
    pub format: Format,
    /// gpkg top directory (`<PF>-<BUILD_ID>` or `<PF>`); None for xpak.
    pub top_dir: Option<String>,
    pub metadata: Metadata,
    pub members: Vec<Member>,
    pub signature: SignatureStatus,
}

/// Reads and checks a binpkg (gpkg or xpak, told apart by content).
pub fn read(path: &Path) -> Result<Binpkg, BinpkgError> {
    Err(BinpkgError::Invalid {
        path: path.to_owned(),
        message: "not implemented".into(),
    })
}

/// Reads, checks the Manifest, and requires the package to be signed with every
/// signature good from a key in `keyring`. Xpak packages fail (unsignable).
pub fn verify(path: &Path, keyring: &Keyring) -> Result<Binpkg, BinpkgError> {
    let _ = keyring;
    Err(BinpkgError::Invalid {
        path: path.to_owned(),
        message: "not implemented".into(),
    })
}

/// Signs an unsigned gpkg in place (atomically: temp file + rename) without recompressing.
pub fn sign_in_place(path: &Path, key: &SigningKey) -> Result<(), BinpkgError> {
    let _ = key;
    Err(BinpkgError::Invalid {
        path: path.to_owned(),
        message: "not implemented".into(),
    })
}
