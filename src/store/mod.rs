//! The store: content-addressed blobs on disk plus SQLite metadata (migrations in order).
