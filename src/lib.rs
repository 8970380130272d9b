//! binfarm: a build farm for Gentoo binary packages.
//!
//! The library holds every part; `main.rs` only parses the command line.
//! Each module owns its types and its error enum.

pub mod atom;
pub mod binpkg;
pub mod index;
pub mod sign;
pub mod profile;
pub mod worker;
