//! Gentoo package atoms, CPVs and version comparison (PMS rules).
