//! The state directory's database: WAL mode, migrations in order and once, newer schemas refused.

use binfarm::store::{migrate, Store, StoreError, DB_FILE};
use rusqlite::Connection;

fn tables(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare");
    let rows = stmt.query_map([], |row| row.get(0)).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

#[test]
fn fresh_state_dir_gets_every_migration_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open fresh store");
    assert!(dir.path().join(DB_FILE).is_file());
    assert!(dir.path().join("blobs/sha512").is_dir());

    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open db");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let names = tables(&conn);
    for table in [
        "blobs",
        "build_ids",
        "builds",
        "requests",
        "schema_migrations",
        "step_attempts",
        "step_deps",
        "step_results",
        "steps",
        "worker_profiles",
        "workers",
    ] {
        assert!(
            names.iter().any(|n| n == table),
            "missing table {table}: {names:?}"
        );
    }
    let versions: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .expect("prepare");
        let rows = stmt.query_map([], |row| row.get(0)).expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    };
    let known: Vec<String> = migrate::MIGRATIONS
        .iter()
        .map(|m| m.version.to_string())
        .collect();
    assert_eq!(versions, known);

    let db = store.connect().expect("connect");
    let (journal, busy_ms) = db.connection_settings().expect("settings");
    assert_eq!(journal, "wal");
    assert!(busy_ms >= 1000, "busy_timeout is {busy_ms} ms");
}

#[test]
fn applying_twice_is_a_no_op_and_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("first open");
    let mut db = store.connect().expect("connect");
    let worker = db.create_worker("w1", 100).expect("create worker");
    drop(db);

    let again = Store::open(dir.path()).expect("second open");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open db");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM schema_migrations", [], |row| {
            row.get(0)
        })
        .expect("count");
    assert_eq!(rows, migrate::MIGRATIONS.len() as i64);

    let mut conn2 = Connection::open(dir.path().join(DB_FILE)).expect("open db");
    let applied = migrate::apply(&mut conn2, &dir.path().join(DB_FILE)).expect("apply again");
    assert!(applied.is_empty(), "nothing to apply, got {applied:?}");

    let db = again.connect().expect("connect");
    let found = db
        .worker_by_name("w1")
        .expect("query")
        .expect("worker kept");
    assert_eq!(found.id, worker.worker_id);
}

#[test]
fn database_from_a_newer_binfarm_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    Store::open(dir.path()).expect("open");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open db");
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at)
         VALUES ('2999-01-01-000001', 'from_the_future', 0)",
        [],
    )
    .expect("insert future migration");
    drop(conn);

    let err = Store::open(dir.path()).expect_err("a newer schema must be refused");
    assert!(
        matches!(&err, StoreError::SchemaTooNew { found, .. } if found == "2999-01-01-000001"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("newer binfarm"), "{message}");
    assert!(
        message.contains(DB_FILE),
        "message names the database: {message}"
    );
}

#[test]
fn migration_failure_names_the_version_and_leaves_nothing_half_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join(DB_FILE);
    // A table the first migration creates already exists: the migration must fail whole.
    let conn = Connection::open(&db_path).expect("open db");
    conn.execute_batch("CREATE TABLE workers (x INTEGER);")
        .expect("pre-create");
    drop(conn);
    let err = Store::open(dir.path()).expect_err("the migration must fail");
    let message = err.to_string();
    assert!(
        message.contains(migrate::MIGRATIONS[0].version),
        "message names the migration: {message}"
    );
    let conn = Connection::open(&db_path).expect("open db");
    let applied: i64 = conn
        .query_row("SELECT count(*) FROM schema_migrations", [], |row| {
            row.get(0)
        })
        .expect("count");
    assert_eq!(applied, 0);
    assert!(
        !tables(&conn).iter().any(|t| t == "blobs"),
        "the failed migration's other tables must be rolled back"
    );
}
