//! binfarm: a build farm for Gentoo binary packages.
//!
//! The library holds every part; `main.rs` only parses the command line.
//! Each module owns its types and its error enum.

pub mod atom;
pub mod bench;
pub mod binpkg;
pub mod cli;
pub mod coordinator;
pub mod index;
pub mod metrics;
pub mod mirror;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod publish;
pub mod rollout;
pub mod sign;
pub mod store;
pub mod utc;
pub mod web;
pub mod worker;
