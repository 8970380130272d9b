//! Publishing: snapshots, channels, mirror targets (local directory, FTP), GC.

pub mod ftp;
