//! The `Packages` index (what Portage's binhost clients read): parse, write, incremental update.

#[doc(hidden)]
pub fn placeholder() {}
