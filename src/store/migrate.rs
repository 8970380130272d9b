//! Schema migrations: dated SQL files embedded in the binary, applied in order, each once.
//!
//! A migration's version is the date-and-sequence prefix of its file name
//! (`2026-11-26-000001_initial.sql` has version `2026-11-26-000001`); versions sort as text.
//! The `schema_migrations` table records which ones a database has. A database that has a
//! version this binary does not know was written by a newer binfarm and is refused.

use std::path::Path;

use rusqlite::{params, Connection, TransactionBehavior};

use super::StoreError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// `YYYY-MM-DD-NNNNNN`: sorts in application order.
    pub version: &'static str,
    /// What the migration does, from the file name.
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: "2026-11-26-000001",
        name: "initial",
        sql: include_str!("migrations/2026-11-26-000001_initial.sql"),
    },
    Migration {
        version: "2026-11-26-000002",
        name: "snapshots",
        sql: include_str!("migrations/2026-11-26-000002_snapshots.sql"),
    },
    Migration {
        version: "2026-11-26-000003",
        name: "worker_load",
        sql: include_str!("migrations/2026-11-26-000003_worker_load.sql"),
    },
    Migration {
        version: "2026-11-26-000004",
        name: "request_unchanged",
        sql: include_str!("migrations/2026-11-26-000004_request_unchanged.sql"),
    },
];

/// The newest schema version this binary knows.
pub fn latest_version() -> &'static str {
    MIGRATIONS.last().map(|m| m.version).unwrap_or("")
}

/// Apply every migration the database does not have yet, each in its own transaction.
/// Returns the versions applied now (empty when the schema was current).
pub fn apply(conn: &mut Connection, db_path: &Path) -> Result<Vec<&'static str>, StoreError> {
    let sql_err = |source| StoreError::Sql {
        path: db_path.to_path_buf(),
        op: "schema migration",
        source,
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    TEXT PRIMARY KEY NOT NULL,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         );",
    )
    .map_err(sql_err)?;

    let applied: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    if let Some(unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|m| m.version == v.as_str()))
    {
        return Err(StoreError::SchemaTooNew {
            path: db_path.to_path_buf(),
            found: unknown.clone(),
            known: latest_version().to_string(),
        });
    }

    let mut newly_applied = Vec::new();
    for migration in MIGRATIONS {
        if applied.iter().any(|v| v == migration.version) {
            continue;
        }
        let migration_err = |source| StoreError::Migration {
            path: db_path.to_path_buf(),
            version: migration.version,
            source,
        };
        // IMMEDIATE: two processes opening the same fresh state dir must not both apply it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migration_err)?;
        let already: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [migration.version],
                |row| row.get(0),
            )
            .map_err(migration_err)?;
        if already {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(migration_err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, super::unix_now()],
        )
        .map_err(migration_err)?;
        tx.commit().map_err(migration_err)?;
        newly_applied.push(migration.version);
    }
    Ok(newly_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_sorted_and_unique() {
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "{} must sort before {}",
                pair[0].version,
                pair[1].version
            );
        }
    }
}
