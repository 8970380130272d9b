-- A finished request whose packages are exactly those of the snapshot `testing` points at
-- makes no new snapshot (a nightly where nothing changed). The snapshot it matched is
-- recorded here, so restart recovery does not take the request for an unpublished one.
-- No foreign key: GC may later remove that snapshot; the record stays true.
ALTER TABLE requests ADD COLUMN unchanged_snapshot_id INTEGER;
