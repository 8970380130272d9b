//! Typed operations on the publishing tables: snapshots and their entries, channel pointers
//! with their history, local mirror trees and the files they no longer need (GC).
//!
//! What these rows mean and how they are used is `crate::publish`'s business; this file only
//! reads and writes them, each change in one IMMEDIATE transaction.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::db::Db;
use super::StoreError;

/// How a snapshot was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOrigin {
    /// The packages of a nightly request.
    Nightly,
    /// A previous snapshot with the packages of a manual rebuild replaced.
    Manual,
    /// A previous snapshot re-signed with the current key (new BUILD_IDs).
    Resign,
    /// Made from packages given by hand (tests, imports).
    Import,
}

impl SnapshotOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotOrigin::Nightly => "nightly",
            SnapshotOrigin::Manual => "manual",
            SnapshotOrigin::Resign => "resign",
            SnapshotOrigin::Import => "import",
        }
    }

    pub fn parse(text: &str) -> Option<SnapshotOrigin> {
        match text {
            "nightly" => Some(SnapshotOrigin::Nightly),
            "manual" => Some(SnapshotOrigin::Manual),
            "resign" => Some(SnapshotOrigin::Resign),
            "import" => Some(SnapshotOrigin::Import),
            _ => None,
        }
    }
}

impl std::fmt::Display for SnapshotOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a channel pointer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelAction {
    /// A new snapshot went to the channel (new snapshots go to `testing`).
    Publish,
    /// An existing snapshot was promoted to the channel.
    Promote,
}

impl ChannelAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelAction::Publish => "publish",
            ChannelAction::Promote => "promote",
        }
    }
}

/// One package of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotEntry {
    /// `<cat>/<pn>/<pf>-<build_id>.gpkg.tar`, relative to the tree.
    pub path: String,
    pub cpv: String,
    /// The full SLOT (`0`, `8.3`, `0/1.2`).
    pub slot: String,
    pub build_id: i64,
    /// sha512 of the binpkg blob.
    pub blob: String,
    pub size: u64,
}

/// A snapshot to insert.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub profile: String,
    pub request_id: Option<i64>,
    pub origin: SnapshotOrigin,
    pub based_on: Option<i64>,
    pub note: Option<String>,
    /// The Packages index text, already stored as a blob.
    pub index_blob: String,
    pub index_timestamp: i64,
    pub entries: Vec<SnapshotEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotRow {
    pub id: i64,
    pub profile: String,
    pub created_at: i64,
    pub request_id: Option<i64>,
    pub origin: SnapshotOrigin,
    pub based_on: Option<i64>,
    pub note: Option<String>,
    pub index_blob: String,
    pub index_timestamp: i64,
    pub packages: u64,
    pub total_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelRow {
    pub profile: String,
    pub name: String,
    pub snapshot_id: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelHistoryRow {
    pub id: i64,
    pub profile: String,
    pub channel: String,
    pub snapshot_id: i64,
    /// `publish` or `promote`.
    pub action: String,
    pub at: i64,
    pub rolled_back_at: Option<i64>,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// The channel now points at `to` (it pointed at `from`).
    Moved { from: i64, to: i64 },
    /// The channel has no earlier pointer left in its history.
    NothingEarlier { current: i64 },
    /// The earlier snapshot was removed by GC: nothing changed.
    TargetRemoved { from: i64, to: i64 },
    /// The channel does not exist.
    NoChannel,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MirrorTreeRow {
    /// The tree directory, `<root>/<profile>/<channel>`.
    pub tree: String,
    pub profile: String,
    pub channel: String,
    pub snapshot_id: i64,
    pub index_timestamp: i64,
    pub published_at: i64,
}

/// A succeeded request whose packages never reached a channel: the coordinator stopped (or
/// publishing failed) between the request's end and its publish. See
/// [`Db::unpublished_requests`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnpublishedRequest {
    pub request_id: i64,
    pub profile: String,
    pub finished_at: i64,
    /// Its newest snapshot, when one was made but no channel ever pointed at it: publish
    /// that one rather than making another.
    pub snapshot_id: Option<i64>,
}

/// Where a succeeded request's packages were published. See [`Db::request_published`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RequestPublished {
    /// The request's snapshot, or (unchanged) the snapshot that already had its packages.
    pub snapshot_id: i64,
    /// No snapshot was made: `testing` already held exactly the request's packages.
    pub unchanged: bool,
}

/// A stored blob, as the blobs table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub sha512: String,
    pub size: u64,
    pub kind: String,
    pub created_at: i64,
}

const SNAPSHOT_COLUMNS: &str = "id, profile, created_at, request_id, origin, based_on, note, \
     index_blob, index_timestamp, packages, total_size";

fn snapshot_from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    let origin: String = row.get(4)?;
    Ok(SnapshotRow {
        id: row.get(0)?,
        profile: row.get(1)?,
        created_at: row.get(2)?,
        request_id: row.get(3)?,
        origin: SnapshotOrigin::parse(&origin).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("{origin:?} is not a snapshot origin").into(),
            )
        })?,
        based_on: row.get(5)?,
        note: row.get(6)?,
        index_blob: row.get(7)?,
        index_timestamp: row.get(8)?,
        packages: row.get::<_, i64>(9)?.max(0) as u64,
        total_size: row.get::<_, i64>(10)?.max(0) as u64,
    })
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotEntry> {
    Ok(SnapshotEntry {
        path: row.get(0)?,
        cpv: row.get(1)?,
        slot: row.get(2)?,
        build_id: row.get(3)?,
        blob: row.get(4)?,
        size: row.get::<_, i64>(5)?.max(0) as u64,
    })
}

fn history_from_row(row: &Row<'_>) -> rusqlite::Result<ChannelHistoryRow> {
    Ok(ChannelHistoryRow {
        id: row.get(0)?,
        profile: row.get(1)?,
        channel: row.get(2)?,
        snapshot_id: row.get(3)?,
        action: row.get(4)?,
        at: row.get(5)?,
        rolled_back_at: row.get(6)?,
    })
}

impl Db {
    fn sql_error(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Runs `body` in one IMMEDIATE transaction and commits on Ok.
    fn publish_write<T>(
        &mut self,
        op: &'static str,
        body: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        self.write(op, |tx, _| {
            body(tx).map_err(|source| StoreError::Sql { path, op, source })
        })
    }

    fn query_list<T, P: rusqlite::Params>(
        &self,
        op: &'static str,
        sql: &str,
        params: P,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.sql_error(op))?;
        let rows = stmt.query_map(params, map).map_err(self.sql_error(op))?;
        rows.collect::<Result<_, _>>().map_err(self.sql_error(op))
    }

    // ----- snapshots -----

    /// Inserts a snapshot and its entries; returns its id. Every blob (packages and index)
    /// must be recorded already.
    pub fn insert_snapshot(&mut self, snapshot: &NewSnapshot, now: i64) -> Result<i64, StoreError> {
        let total_size: u64 = snapshot.entries.iter().map(|e| e.size).sum();
        self.publish_write("insert snapshot", |tx| {
            tx.execute(
                "INSERT INTO snapshots (profile, created_at, request_id, origin, based_on, note,
                    index_blob, index_timestamp, packages, total_size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    snapshot.profile,
                    now,
                    snapshot.request_id,
                    snapshot.origin.as_str(),
                    snapshot.based_on,
                    snapshot.note,
                    snapshot.index_blob,
                    snapshot.index_timestamp,
                    snapshot.entries.len() as i64,
                    total_size as i64,
                ],
            )?;
            let id = tx.last_insert_rowid();
            let mut insert = tx.prepare_cached(
                "INSERT INTO snapshot_entries (snapshot_id, path, cpv, slot, build_id, blob, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in &snapshot.entries {
                insert.execute(params![
                    id,
                    e.path,
                    e.cpv,
                    e.slot,
                    e.build_id,
                    e.blob,
                    e.size as i64
                ])?;
            }
            Ok(id)
        })
    }

    pub fn snapshot(&self, id: i64) -> Result<Option<SnapshotRow>, StoreError> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], snapshot_from_row)
            .optional()
            .map_err(self.sql_error("read snapshot"))
    }

    /// Snapshots, oldest first; of one profile or of all.
    pub fn list_snapshots(&self, profile: Option<&str>) -> Result<Vec<SnapshotRow>, StoreError> {
        match profile {
            Some(p) => self.query_list(
                "list snapshots",
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE profile = ?1 ORDER BY id"),
                [p],
                snapshot_from_row,
            ),
            None => self.query_list(
                "list snapshots",
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots ORDER BY profile, id"),
                [],
                snapshot_from_row,
            ),
        }
    }

    /// The packages of a snapshot, by path.
    pub fn snapshot_entries(&self, snapshot_id: i64) -> Result<Vec<SnapshotEntry>, StoreError> {
        self.query_list(
            "read snapshot entries",
            "SELECT path, cpv, slot, build_id, blob, size FROM snapshot_entries
             WHERE snapshot_id = ?1 ORDER BY path",
            [snapshot_id],
            entry_from_row,
        )
    }

    /// An entry some snapshot of `profile` already has for this blob (what reading the
    /// package would give), so a new snapshot need not read it again.
    pub fn known_snapshot_entry(
        &self,
        profile: &str,
        blob: &str,
    ) -> Result<Option<SnapshotEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.path, e.cpv, e.slot, e.build_id, e.blob, e.size
                 FROM snapshot_entries e JOIN snapshots s ON s.id = e.snapshot_id
                 WHERE e.blob = ?1 AND s.profile = ?2 LIMIT 1",
            )
            .map_err(self.sql_error("look up snapshot entry"))?;
        stmt.query_row(params![blob, profile], entry_from_row)
            .optional()
            .map_err(self.sql_error("look up snapshot entry"))
    }

    /// Deletes snapshots (and their entries). Channel pointers must not name them.
    pub fn delete_snapshots(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        self.publish_write("delete snapshots", |tx| {
            let mut entries =
                tx.prepare_cached("DELETE FROM snapshot_entries WHERE snapshot_id = ?1")?;
            let mut snapshots = tx.prepare_cached("DELETE FROM snapshots WHERE id = ?1")?;
            for id in ids {
                entries.execute([id])?;
                snapshots.execute([id])?;
            }
            Ok(())
        })
    }

    // ----- channels -----

    pub fn channel(&self, profile: &str, name: &str) -> Result<Option<ChannelRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT profile, name, snapshot_id, updated_at FROM channels
                 WHERE profile = ?1 AND name = ?2",
                params![profile, name],
                |row| {
                    Ok(ChannelRow {
                        profile: row.get(0)?,
                        name: row.get(1)?,
                        snapshot_id: row.get(2)?,
                        updated_at: row.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.sql_error("read channel"))
    }

    /// Channels, by profile and name; of one profile or of all.
    pub fn list_channels(&self, profile: Option<&str>) -> Result<Vec<ChannelRow>, StoreError> {
        let map = |row: &Row<'_>| {
            Ok(ChannelRow {
                profile: row.get(0)?,
                name: row.get(1)?,
                snapshot_id: row.get(2)?,
                updated_at: row.get(3)?,
            })
        };
        match profile {
            Some(p) => self.query_list(
                "list channels",
                "SELECT profile, name, snapshot_id, updated_at FROM channels
                 WHERE profile = ?1 ORDER BY name",
                [p],
                map,
            ),
            None => self.query_list(
                "list channels",
                "SELECT profile, name, snapshot_id, updated_at FROM channels
                 ORDER BY profile, name",
                [],
                map,
            ),
        }
    }

    /// Points a channel at a snapshot (creating the channel) and records the move.
    /// Returns the snapshot it pointed at before.
    pub fn point_channel(
        &mut self,
        profile: &str,
        name: &str,
        snapshot_id: i64,
        action: ChannelAction,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.publish_write("move channel", |tx| {
            let previous: Option<i64> = tx
                .query_row(
                    "SELECT snapshot_id FROM channels WHERE profile = ?1 AND name = ?2",
                    params![profile, name],
                    |row| row.get(0),
                )
                .optional()?;
            // Pointing a channel where it points already is not a move: no history row
            // (else a rollback would "go back" to the same snapshot).
            if previous == Some(snapshot_id) {
                return Ok(previous);
            }
            tx.execute(
                "INSERT INTO channels (profile, name, snapshot_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (profile, name) DO UPDATE SET snapshot_id = ?3, updated_at = ?4",
                params![profile, name, snapshot_id, now],
            )?;
            tx.execute(
                "INSERT INTO channel_history (profile, channel, snapshot_id, action, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![profile, name, snapshot_id, action.as_str(), now],
            )?;
            Ok(previous)
        })
    }

    /// Moves a channel back to the snapshot it pointed at before its newest move that was
    /// not rolled back already (so repeated rollbacks walk further back).
    pub fn rollback_channel(
        &mut self,
        profile: &str,
        name: &str,
        now: i64,
    ) -> Result<Rollback, StoreError> {
        self.publish_write("roll back channel", |tx| {
            let active: Vec<(i64, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, snapshot_id FROM channel_history
                     WHERE profile = ?1 AND channel = ?2 AND rolled_back_at IS NULL
                     ORDER BY id DESC LIMIT 2",
                )?;
                let rows =
                    stmt.query_map(params![profile, name], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let current: Option<i64> = tx
                .query_row(
                    "SELECT snapshot_id FROM channels WHERE profile = ?1 AND name = ?2",
                    params![profile, name],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(current) = current else {
                return Ok(Rollback::NoChannel);
            };
            let (Some(&(newest_row, from)), Some(&(_, to))) = (active.first(), active.get(1))
            else {
                return Ok(Rollback::NothingEarlier { current });
            };
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM snapshots WHERE id = ?1)",
                [to],
                |row| row.get(0),
            )?;
            if !exists {
                return Ok(Rollback::TargetRemoved { from, to });
            }
            tx.execute(
                "UPDATE channel_history SET rolled_back_at = ?1 WHERE id = ?2",
                params![now, newest_row],
            )?;
            tx.execute(
                "UPDATE channels SET snapshot_id = ?1, updated_at = ?2
                 WHERE profile = ?3 AND name = ?4",
                params![to, now, profile, name],
            )?;
            Ok(Rollback::Moved { from, to })
        })
    }

    /// The pointer moves of a channel, oldest first.
    pub fn channel_history(
        &self,
        profile: &str,
        name: &str,
    ) -> Result<Vec<ChannelHistoryRow>, StoreError> {
        self.query_list(
            "read channel history",
            "SELECT id, profile, channel, snapshot_id, action, at, rolled_back_at
             FROM channel_history WHERE profile = ?1 AND channel = ?2 ORDER BY id",
            params![profile, name],
            history_from_row,
        )
    }

    /// Every pointer move of every channel, oldest first.
    pub fn all_channel_history(&self) -> Result<Vec<ChannelHistoryRow>, StoreError> {
        self.query_list(
            "read channel history",
            "SELECT id, profile, channel, snapshot_id, action, at, rolled_back_at
             FROM channel_history ORDER BY id",
            [],
            history_from_row,
        )
    }

    /// Succeeded requests to publish to `channel` (the channel new snapshots go to), oldest
    /// first: no snapshot of theirs was ever pointed at by a channel, and `channel` of
    /// their profile has not moved since they finished. A move at or after the end (same
    /// second included) means something as new is published already; a request whose
    /// snapshot GC removed is one of those (its publish is in the history, which GC keeps),
    /// so it is never published twice. Requests found unchanged (same packages as the
    /// snapshot `testing` pointed at) are settled.
    pub fn unpublished_requests(
        &self,
        channel: &str,
    ) -> Result<Vec<UnpublishedRequest>, StoreError> {
        self.query_list(
            "find unpublished requests",
            "WITH last_move AS (
                SELECT profile, max(at) AS at FROM channel_history
                WHERE channel = ?1 GROUP BY profile
             )
             SELECT r.id, r.profile, coalesce(r.finished_at, r.created_at) AS done,
                (SELECT max(s.id) FROM snapshots s WHERE s.request_id = r.id)
             FROM requests r LEFT JOIN last_move m ON m.profile = r.profile
             WHERE r.state = 'succeeded'
               AND (m.at IS NULL OR m.at < coalesce(r.finished_at, r.created_at))
               AND r.unchanged_snapshot_id IS NULL
               AND NOT EXISTS (SELECT 1 FROM snapshots s
                               JOIN channel_history h ON h.snapshot_id = s.id
                               WHERE s.request_id = r.id)
             ORDER BY done, r.id",
            [channel],
            |row| {
                Ok(UnpublishedRequest {
                    request_id: row.get(0)?,
                    profile: row.get(1)?,
                    finished_at: row.get(2)?,
                    snapshot_id: row.get(3)?,
                })
            },
        )
    }

    /// Where request `request_id` was published: its newest snapshot a channel pointed at,
    /// or the snapshot it was found equal to. None: not (yet) published.
    pub fn request_published(
        &self,
        request_id: i64,
    ) -> Result<Option<RequestPublished>, StoreError> {
        let rows = self.query_list(
            "find where a request was published",
            "SELECT (SELECT max(s.id) FROM snapshots s
                     JOIN channel_history h ON h.snapshot_id = s.id
                     WHERE s.request_id = r.id),
                    r.unchanged_snapshot_id
             FROM requests r WHERE r.id = ?1",
            [request_id],
            |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)),
        )?;
        Ok(match rows.first() {
            Some((Some(snapshot_id), _)) => Some(RequestPublished {
                snapshot_id: *snapshot_id,
                unchanged: false,
            }),
            Some((None, Some(snapshot_id))) => Some(RequestPublished {
                snapshot_id: *snapshot_id,
                unchanged: true,
            }),
            _ => None,
        })
    }

    /// Records that request `request_id` made no snapshot because its packages are those
    /// of snapshot `snapshot_id` (see [`Db::unpublished_requests`]).
    pub fn mark_request_unchanged(
        &mut self,
        request_id: i64,
        snapshot_id: i64,
    ) -> Result<(), StoreError> {
        self.publish_write("record an unchanged request", |tx| {
            tx.execute(
                "UPDATE requests SET unchanged_snapshot_id = ?2 WHERE id = ?1",
                params![request_id, snapshot_id],
            )
            .map(drop)
        })
    }

    /// A BUILD_ID never used for this profile and CPV: above the last one handed out to a
    /// build and above every one in a snapshot.
    pub fn next_build_id(&mut self, profile: &str, cpv: &str) -> Result<i64, StoreError> {
        self.publish_write("allocate build id", |tx| {
            let in_snapshots: i64 = tx.query_row(
                "SELECT coalesce(max(e.build_id), 0) FROM snapshot_entries e
                 JOIN snapshots s ON s.id = e.snapshot_id
                 WHERE e.cpv = ?1 AND s.profile = ?2",
                params![cpv, profile],
                |row| row.get(0),
            )?;
            let in_builds: i64 = tx.query_row(
                "SELECT coalesce(max(build_id), 0) FROM builds WHERE cpv = ?1 AND profile = ?2",
                params![cpv, profile],
                |row| row.get(0),
            )?;
            let floor = in_snapshots.max(in_builds);
            tx.query_row(
                "INSERT INTO build_ids (profile, cpv, last_build_id) VALUES (?1, ?2, ?3 + 1)
                 ON CONFLICT (profile, cpv)
                 DO UPDATE SET last_build_id = max(last_build_id, ?3) + 1
                 RETURNING last_build_id",
                params![profile, cpv, floor],
                |row| row.get(0),
            )
        })
    }

    // ----- mirror trees -----

    pub fn record_mirror_tree(&mut self, row: &MirrorTreeRow) -> Result<(), StoreError> {
        self.publish_write("record mirror tree", |tx| {
            tx.execute(
                "INSERT INTO mirror_trees (tree, profile, channel, snapshot_id, index_timestamp,
                    published_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tree) DO UPDATE SET profile = ?2, channel = ?3, snapshot_id = ?4,
                    index_timestamp = ?5, published_at = ?6",
                params![
                    row.tree,
                    row.profile,
                    row.channel,
                    row.snapshot_id,
                    row.index_timestamp,
                    row.published_at
                ],
            )?;
            Ok(())
        })
    }

    pub fn list_mirror_trees(&self) -> Result<Vec<MirrorTreeRow>, StoreError> {
        self.query_list(
            "list mirror trees",
            "SELECT tree, profile, channel, snapshot_id, index_timestamp, published_at
             FROM mirror_trees ORDER BY tree",
            [],
            |row| {
                Ok(MirrorTreeRow {
                    tree: row.get(0)?,
                    profile: row.get(1)?,
                    channel: row.get(2)?,
                    snapshot_id: row.get(3)?,
                    index_timestamp: row.get(4)?,
                    published_at: row.get(5)?,
                })
            },
        )
    }

    /// Files of `tree` that its index stopped naming, with the time that happened.
    pub fn mirror_orphans(&self, tree: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.query_list(
            "read mirror orphans",
            "SELECT path, since FROM mirror_orphans WHERE tree = ?1 ORDER BY path",
            [tree],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }

    /// Records files of `tree` as unreferenced since `now` (keeping an earlier time).
    pub fn add_mirror_orphans(
        &mut self,
        tree: &str,
        paths: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        if paths.is_empty() {
            return Ok(());
        }
        self.publish_write("record mirror orphans", |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO mirror_orphans (tree, path, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tree, path) DO NOTHING",
            )?;
            for path in paths {
                insert.execute(params![tree, path, now])?;
            }
            Ok(())
        })
    }

    /// Forgets orphan records (the files are referenced again, or were deleted).
    pub fn remove_mirror_orphans(
        &mut self,
        tree: &str,
        paths: &[String],
    ) -> Result<(), StoreError> {
        if paths.is_empty() {
            return Ok(());
        }
        self.publish_write("forget mirror orphans", |tx| {
            let mut delete =
                tx.prepare_cached("DELETE FROM mirror_orphans WHERE tree = ?1 AND path = ?2")?;
            for path in paths {
                delete.execute(params![tree, path])?;
            }
            Ok(())
        })
    }

    // ----- blobs, for GC -----

    pub fn list_blobs(&self) -> Result<Vec<BlobRow>, StoreError> {
        self.query_list(
            "list blobs",
            "SELECT sha512, size, kind, created_at FROM blobs ORDER BY sha512",
            [],
            |row| {
                Ok(BlobRow {
                    sha512: row.get(0)?,
                    size: row.get::<_, i64>(1)?.max(0) as u64,
                    kind: row.get(2)?,
                    created_at: row.get(3)?,
                })
            },
        )
    }

    /// Blobs the build tables refer to (steps, attempts, results, builds): the store keeps
    /// these whatever the snapshots say.
    pub fn blobs_used_by_builds(&self) -> Result<HashSet<String>, StoreError> {
        let list: Vec<String> = self.query_list(
            "list build blobs",
            "SELECT log_blob FROM steps WHERE log_blob IS NOT NULL
             UNION SELECT log_blob FROM step_attempts WHERE log_blob IS NOT NULL
             UNION SELECT blob FROM step_results
             UNION SELECT binpkg_blob FROM builds WHERE binpkg_blob IS NOT NULL",
            [],
            |row| row.get(0),
        )?;
        Ok(list.into_iter().collect())
    }

    /// Blobs the given snapshots refer to (packages and index).
    pub fn blobs_of_snapshots(&self, ids: &[i64]) -> Result<HashSet<String>, StoreError> {
        let mut used = HashSet::new();
        let mut entries = self
            .conn
            .prepare_cached("SELECT blob FROM snapshot_entries WHERE snapshot_id = ?1")
            .map_err(self.sql_error("list snapshot blobs"))?;
        let mut index = self
            .conn
            .prepare_cached("SELECT index_blob FROM snapshots WHERE id = ?1")
            .map_err(self.sql_error("list snapshot blobs"))?;
        for id in ids {
            let rows = entries
                .query_map([id], |row| row.get::<_, String>(0))
                .map_err(self.sql_error("list snapshot blobs"))?;
            for blob in rows {
                used.insert(blob.map_err(self.sql_error("list snapshot blobs"))?);
            }
            if let Some(blob) = index
                .query_row([id], |row| row.get::<_, String>(0))
                .optional()
                .map_err(self.sql_error("list snapshot blobs"))?
            {
                used.insert(blob);
            }
        }
        Ok(used)
    }

    /// Deletes blob rows (the files go after, so a row never names a missing file).
    pub fn delete_blob_rows(&mut self, digests: &[String]) -> Result<(), StoreError> {
        self.publish_write("delete blob rows", |tx| {
            let mut delete = tx.prepare_cached("DELETE FROM blobs WHERE sha512 = ?1")?;
            for d in digests {
                delete.execute([d])?;
            }
            Ok(())
        })
    }
}
