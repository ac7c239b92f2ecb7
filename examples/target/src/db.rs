//! SQLite schema and read-only access to a target database.
//!
//! `resources` contains one row per PUT path with the latest body and the
//! number of PUTs that path received since it was created; a DELETE removes
//! the row, so a later PUT starts counting at 1 again. `posts` contains every
//! row inserted by POST, in insertion order, with the `Idempotency-Key` it
//! was sent with, if any. `idempotency_keys` contains one row per key of a
//! successful POST: a SHA-256 hash of the request, and the status and body
//! of the response to replay when the request is repeated.
//!
//! The server opens the file in WAL mode, so these readers see every
//! committed write while the server runs and after it stops.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS resources (
        path TEXT PRIMARY KEY NOT NULL,
        body TEXT NOT NULL,
        writes INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS posts (
        id INTEGER PRIMARY KEY,
        collection TEXT NOT NULL,
        body TEXT NOT NULL,
        idempotency_key TEXT
    );
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY NOT NULL,
        request_hash BLOB NOT NULL,
        status INTEGER NOT NULL,
        response_body TEXT NOT NULL
    );
";

/// Time a connection waits for a lock held by another connection, such as
/// the writer's checkpoint.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Row inserted by `POST`.
#[derive(Clone, Debug, PartialEq)]
pub struct PostedRow {
    /// Id returned to the client in `{"id": ...}`.
    pub id: i64,
    /// Request path of the POST.
    pub collection: String,
    /// Request body.
    pub body: Value,
    /// `Idempotency-Key` header of the POST, if it had one.
    pub idempotency_key: Option<String>,
}

/// Opens a target database for reading.
///
/// # Errors
///
/// Fails when the file is missing or is not a target database.
pub(crate) fn open_read_only(db_path: &Path) -> anyhow::Result<Connection> {
    if !db_path.exists() {
        bail!(
            "target database {} not found; pass the file given to `sluice-target serve --db`",
            db_path.display()
        );
    }

    // A connection opened with SQLITE_OPEN_READ_ONLY cannot remove the -wal
    // and -shm files when it is the last to close, so open for writing
    // where the file permits and forbid writes with `query_only` instead.
    // SQLite opens a write-protected file read-only.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db_path, flags)
        .with_context(|| format!("failed to open target database {}", db_path.display()))?;
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;

    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('resources', 'posts')",
            [],
            |row| row.get(0),
        )
        .with_context(|| format!("failed to read target database {}", db_path.display()))?;
    if tables != 2 {
        bail!(
            "{} is not a target database: it lacks the resources and posts tables; \
             pass the file given to `sluice-target serve --db`",
            db_path.display()
        );
    }
    Ok(conn)
}

/// Reads every PUT resource: path as received (still percent-encoded) to
/// body.
///
/// # Errors
///
/// Fails when the database cannot be read.
pub fn read_resources(db_path: &Path) -> anyhow::Result<BTreeMap<String, Value>> {
    let conn = open_read_only(db_path)?;
    let mut resources = BTreeMap::new();
    for_each_resource(&conn, |path, body| {
        resources.insert(path, body);
        Ok(())
    })?;
    Ok(resources)
}

/// Reads the number of committed PUTs per path. A count above 1 means the
/// path was written more than once, for example by a retried request.
///
/// # Errors
///
/// Fails when the database cannot be read.
pub fn read_write_counts(db_path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let conn = open_read_only(db_path)?;
    let mut statement = conn.prepare("SELECT path, writes FROM resources")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;

    let mut counts = BTreeMap::new();
    for row in rows {
        let (path, writes) = row?;
        counts.insert(path, u64::try_from(writes).unwrap_or(0));
    }
    Ok(counts)
}

/// Reads every row inserted by POST, in insertion order.
///
/// # Errors
///
/// Fails when the database cannot be read or a stored body is not JSON.
pub fn read_posts(db_path: &Path) -> anyhow::Result<Vec<PostedRow>> {
    let conn = open_read_only(db_path)?;
    // A database that no server has opened since idempotency keys were
    // added lacks the column; its rows have no key.
    let query = if has_column(&conn, "posts", "idempotency_key")? {
        "SELECT id, collection, body, idempotency_key FROM posts ORDER BY id"
    } else {
        "SELECT id, collection, body, NULL FROM posts ORDER BY id"
    };
    let mut statement = conn.prepare(query)?;
    let mut rows = statement.query([])?;

    let mut posts = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let body: String = row.get(2)?;
        let body = serde_json::from_str(&body)
            .with_context(|| format!("stored body of posted row {id} is not valid JSON"))?;
        posts.push(PostedRow {
            id,
            collection: row.get(1)?,
            body,
            idempotency_key: row.get(3)?,
        });
    }
    Ok(posts)
}

/// Returns true when `table` has a column named `column`.
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        (table, column),
        |row| row.get::<_, i64>(0),
    )
    .map(|count| count > 0)
}

/// Calls `visit` with each PUT resource in path order.
pub(crate) fn for_each_resource(
    conn: &Connection,
    mut visit: impl FnMut(String, Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut statement = conn.prepare("SELECT path, body FROM resources ORDER BY path")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let path: String = row.get(0)?;
        let body: String = row.get(1)?;
        let body = serde_json::from_str(&body)
            .with_context(|| format!("stored body of {path} is not valid JSON"))?;
        visit(path, body)?;
    }
    Ok(())
}
