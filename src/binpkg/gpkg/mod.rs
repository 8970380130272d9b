//! GLEP 78 gpkg: read (streaming, Manifest-checked), write, sign, verify.

pub mod read;
pub mod sign;
pub mod write;
