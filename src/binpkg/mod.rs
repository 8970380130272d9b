//! Binary packages: gpkg (GLEP 78) read/write/sign, legacy xpak read, Manifest.
//!
//! API CONTRACT (the index and later modules code against this; the binpkg
//! helper implements it and may add to it, but keeps these names and meanings).
//!
//! Files: `gpkg/read.rs` (one streaming pass: structure, Manifest, metadata),
//! `gpkg/write.rs`, `gpkg/sign.rs` (sign in place, verify), `manifest.rs`, `xpak.rs`,
//! `contents.rs` (image listing), `tarwalk.rs` (bounded tar reading, container
//! writing), `compress.rs`, `limits.rs` (caps against hostile input).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub mod compress;
pub mod contents;
pub mod gpkg;
pub mod limits;
pub mod manifest;
mod tarwalk;
pub mod xpak;

pub use contents::{contents, ContentsEntry, EntryKind};
pub use gpkg::write::{write as write_gpkg, GpkgSource, WriteOptions};

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

    /// Sorts raw metadata files into text (UTF-8 without NUL; one trailing newline
    /// removed) and binary keys.
    pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Metadata {
        let mut metadata = Metadata::default();
        for (key, value) in files {
            match std::str::from_utf8(value) {
                Ok(text) if !text.contains('\0') => {
                    let text = text.strip_suffix('\n').unwrap_or(text);
                    metadata.text.insert(key.clone(), text.to_owned());
                }
                _ => metadata.binary_keys.push(key.clone()),
            }
        }
        metadata
    }
}

/// A metadata key as a file name: one plain path component.
pub fn is_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && key != "."
        && key != ".."
        && !key
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_control())
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

/// Tells gpkg from xpak by content: an xpak ends with `STOP`, a gpkg starts with a
/// tar header.
pub fn detect_format(path: &Path) -> Result<Format, BinpkgError> {
    let io_err = |source| BinpkgError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    if xpak::looks_like_xpak(&mut file).map_err(io_err)? {
        return Ok(Format::Xpak);
    }
    let mut file = File::open(path).map_err(io_err)?;
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match file.read(&mut block[filled..]).map_err(io_err)? {
            0 => break,
            n => filled += n,
        }
    }
    let is_tar = filled == block.len() && &block[257..262] == b"ustar";
    if is_tar {
        Ok(Format::Gpkg)
    } else {
        Err(BinpkgError::Invalid {
            path: path.to_owned(),
            message: "neither a gpkg (tar container) nor an xpak (STOP trailer)".into(),
        })
    }
}

/// Reads and checks a binpkg (gpkg or xpak, told apart by content).
pub fn read(path: &Path) -> Result<Binpkg, BinpkgError> {
    match detect_format(path)? {
        Format::Gpkg => gpkg::read::read(path),
        Format::Xpak => xpak::read(path),
    }
}

/// Reads, checks the Manifest, and requires the package to be signed with every
/// signature good from a key in `keyring`. Xpak packages fail (unsignable).
pub fn verify(path: &Path, keyring: &Keyring) -> Result<Binpkg, BinpkgError> {
    match detect_format(path)? {
        Format::Gpkg => gpkg::sign::verify(path, keyring),
        Format::Xpak => Err(BinpkgError::Invalid {
            path: path.to_owned(),
            message: "xpak packages cannot carry signatures".into(),
        }),
    }
}

/// Writes `dest`: `path` re-signed with `key` under a new BUILD_ID, without recompressing
/// the image (see [`gpkg::sign::restamp_and_sign`]).
pub fn restamp_and_sign(
    path: &Path,
    dest: &Path,
    build_id: u64,
    key: &SigningKey,
) -> Result<(), BinpkgError> {
    match detect_format(path)? {
        Format::Gpkg => gpkg::sign::restamp_and_sign(path, dest, build_id, key),
        Format::Xpak => Err(BinpkgError::Invalid {
            path: path.to_owned(),
            message: "xpak packages cannot be signed; build gpkg (BINPKG_FORMAT=gpkg)".into(),
        }),
    }
}

/// Signs an unsigned gpkg in place (atomically: temp file + rename) without recompressing.
pub fn sign_in_place(path: &Path, key: &SigningKey) -> Result<(), BinpkgError> {
    match detect_format(path)? {
        Format::Gpkg => gpkg::sign::sign_in_place(path, key),
        Format::Xpak => Err(BinpkgError::Invalid {
            path: path.to_owned(),
            message: "xpak packages cannot be signed (rebuild as gpkg)".into(),
        }),
    }
}

/// The raw metadata files (`metadata/<KEY>` or xpak entries), binary ones included,
/// after the same checks as [`read`].
pub fn metadata_files(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, BinpkgError> {
    match detect_format(path)? {
        Format::Gpkg => Ok(gpkg::read::scan(path)?.metadata_files),
        Format::Xpak => Ok(xpak::layout(path)?.files),
    }
}

/// Best effort: makes a rename in `dir` durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
