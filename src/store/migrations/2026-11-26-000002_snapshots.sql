-- Publishing (issue 5): snapshots, channels, local mirror trees.
-- Times are Unix seconds (UTC).

-- An immutable set of binpkgs of one profile, with its Packages index (a blob).
CREATE TABLE snapshots (
    id              INTEGER PRIMARY KEY,
    profile         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    request_id      INTEGER REFERENCES requests(id),
    -- How it was made: 'nightly', 'manual' (rebuild), 'resign', 'import'.
    origin          TEXT NOT NULL CHECK (origin IN ('nightly', 'manual', 'resign', 'import')),
    -- The snapshot it was derived from (manual rebuild, resign). No foreign key: GC may
    -- remove that one first.
    based_on        INTEGER,
    note            TEXT,
    index_blob      TEXT NOT NULL REFERENCES blobs(sha512),
    index_timestamp INTEGER NOT NULL,
    packages        INTEGER NOT NULL,
    total_size      INTEGER NOT NULL
);
CREATE INDEX snapshots_by_profile ON snapshots(profile, id);

-- The packages of a snapshot. path is `<cat>/<pn>/<pf>-<build_id>.gpkg.tar`.
CREATE TABLE snapshot_entries (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    cpv         TEXT NOT NULL,
    slot        TEXT NOT NULL,
    build_id    INTEGER NOT NULL,
    blob        TEXT NOT NULL REFERENCES blobs(sha512),
    size        INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, path)
);
CREATE INDEX snapshot_entries_by_blob ON snapshot_entries(blob);
CREATE INDEX snapshot_entries_by_cpv ON snapshot_entries(cpv, build_id);

-- Where each channel of each profile points now.
CREATE TABLE channels (
    profile     TEXT NOT NULL,
    name        TEXT NOT NULL,
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (profile, name)
);

-- Every pointer move, newest last. A rollback sets rolled_back_at on the newest row not
-- yet rolled back; the channel then points at the snapshot of the next such row.
-- No foreign key on snapshot_id: GC removes old snapshots, their rows stay as history.
CREATE TABLE channel_history (
    id             INTEGER PRIMARY KEY,
    profile        TEXT NOT NULL,
    channel        TEXT NOT NULL,
    snapshot_id    INTEGER NOT NULL,
    action         TEXT NOT NULL CHECK (action IN ('publish', 'promote')),
    at             INTEGER NOT NULL,
    rolled_back_at INTEGER
);
CREATE INDEX channel_history_by_channel ON channel_history(profile, channel, id);

-- What each local mirror tree (`<root>/<profile>/<channel>`) shows, as last published.
CREATE TABLE mirror_trees (
    tree            TEXT PRIMARY KEY NOT NULL,
    profile         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    snapshot_id     INTEGER NOT NULL,
    index_timestamp INTEGER NOT NULL,
    published_at    INTEGER NOT NULL
);

-- Files of a mirror tree that its index no longer names, and since when: GC deletes them
-- once the grace period has passed (clients may still hold the older index).
CREATE TABLE mirror_orphans (
    tree  TEXT NOT NULL,
    path  TEXT NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (tree, path)
);
