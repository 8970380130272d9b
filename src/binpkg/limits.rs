//! Caps on what a binpkg may make us read into memory or decompress. Packages come
//! from workers and mirrors, so every size taken from the file is checked against these
//! before it is trusted.

/// Decompressed metadata (gpkg `metadata.tar.*` or the whole xpak segment), in total.
pub const METADATA_TOTAL_MAX: u64 = 64 * 1024 * 1024;
/// One decompressed metadata file.
pub const METADATA_FILE_MAX: u64 = 64 * 1024 * 1024;
/// Entries in the metadata archive (real packages have about 40).
pub const METADATA_ENTRIES_MAX: usize = 4096;
/// A compressed metadata member, held in memory until the Manifest has vouched for it.
pub const METADATA_COMPRESSED_MAX: u64 = 64 * 1024 * 1024;
/// The Manifest member (a few hundred bytes per member in practice).
pub const MANIFEST_MAX: u64 = 1024 * 1024;
/// One `.sig` member (an armored signature is under 1 KiB; RSA-4096 about 1 KiB).
pub const SIGNATURE_MAX: u64 = 64 * 1024;
/// The `gpkg-1` identifier file (normally empty).
pub const IDENTIFIER_MAX: u64 = 64 * 1024;
/// Members of the outer container (six in a signed package).
pub const MEMBERS_MAX: usize = 64;
/// Entries listed from an image archive.
pub const IMAGE_ENTRIES_MAX: usize = 4_000_000;
