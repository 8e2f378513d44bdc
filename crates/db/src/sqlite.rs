//! SQLite backend: one writer connection and a pool of readers, in WAL mode.
//!
//! SQLite allows one writer at a time, so writes queue on a mutex rather than on SQLite's busy
//! handler. Readers never block the writer (WAL). `synchronous=FULL` makes every acknowledged
//! commit survive power loss as well as `kill -9`. The log is copied back into the database
//! file (checkpointed) by a thread of its own, beside the writer instead of inside its commits.

use crate::sql::{Conn, Dialect, MAX_CACHED_SQL_BYTES, Row, SqlValue, cacheable};
use crate::{DbError, Migration};
use rusqlite::types::{ToSqlOutput, Value as RValue, ValueRef};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Page size of new database files (SQLite's default is 4,096; an existing file keeps its own).
/// Bigger pages mean shallower B-trees and fewer page splits and WAL frames per row: a bulk
/// import of 1,000,000 resources ran 22,600 → 27,300–28,900 /s, reads by id stayed level.
/// 16,384 imported a little faster still but cost reads by id a fifth.
const PAGE_SIZE_BYTES: u32 = 8_192;
/// Page cache of the writer connection.
const WRITER_CACHE_SIZE_KIB: i64 = 64 * 1024;
/// Page cache of each reader connection; the kernel's page cache holds the rest of the file.
/// Memory-mapped I/O stays off: every connection's mapping would count in resident memory.
const READER_CACHE_SIZE_KIB: i64 = 8 * 1024;
/// WAL pages after which a commit of the writer copies the log back into the database file
/// itself (SQLite's default is 1,000). The [`Checkpointer`] normally has done so already; this
/// bounds the log when it cannot keep up, and lets the log start over from its beginning (that
/// needs a writer that begins while everything in the log is checkpointed, which a busy
/// writer otherwise never does).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 32_768;
/// The least time between two checkpoints of the [`Checkpointer`]: commits in between are
/// copied back together, so small writes do not cost a checkpoint (and its `fsync`) each.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(100);
/// Reader connections kept open for reuse: at least as many as requests served at once, or
/// every request beyond them pays for opening a connection (and parsing the schema).
const MAX_IDLE_READERS: usize = 32;

/// Prepared statements each connection keeps (least recently used first out), each at
/// most [`crate::sql::MAX_CACHED_STATEMENT_BYTES`] of SQL text, together at most
/// [`MAX_CACHED_SQL_BYTES`].
const MAX_CACHED_STATEMENTS: usize = 256;

/// A SQLite connection.
pub struct SqliteConn {
    conn: rusqlite::Connection,
    /// The texts of the statements put in `conn`'s cache since it was last emptied, and
    /// their total length: the cache is emptied before it would pass
    /// [`MAX_CACHED_SQL_BYTES`]. (Statements the cache dropped on its own still count, so
    /// it is emptied early at worst.)
    cached_texts: HashSet<String>,
    cached_bytes: usize,
}

impl SqliteConn {
    fn open(path: &Path, cache_size_kib: i64) -> Result<SqliteConn, DbError> {
        SqliteConn::open_with(path, cache_size_kib, WAL_AUTOCHECKPOINT_PAGES)
    }

    fn open_with(
        path: &Path,
        cache_size_kib: i64,
        autocheckpoint_pages: u32,
    ) -> Result<SqliteConn, DbError> {
        let conn = rusqlite::Connection::open(path).map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(backend)?;
        conn.execute_batch(&format!(
            "PRAGMA page_size={PAGE_SIZE_BYTES}; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;
             PRAGMA cache_size=-{cache_size_kib}; PRAGMA temp_store=MEMORY;
             PRAGMA wal_autocheckpoint={autocheckpoint_pages};"
        ))
        .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(MAX_CACHED_STATEMENTS);
        Ok(SqliteConn {
            conn,
            cached_texts: HashSet::new(),
            cached_bytes: 0,
        })
    }
}

impl SqliteConn {
    /// Runs `f` on the prepared statement for `sql`: from the connection's cache when the
    /// text is short enough to keep ([`cacheable`]), else prepared for this one use. The
    /// cache holds at most [`MAX_CACHED_SQL_BYTES`] of text.
    fn with_statement<T>(
        &mut self,
        sql: &str,
        f: impl FnOnce(&mut rusqlite::Statement<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if !cacheable(sql) {
            return f(&mut self.conn.prepare(sql).map_err(backend)?);
        }
        if !self.cached_texts.contains(sql) {
            if self.cached_bytes + sql.len() > MAX_CACHED_SQL_BYTES {
                self.conn.flush_prepared_statement_cache();
                self.cached_texts.clear();
                self.cached_bytes = 0;
            }
            self.cached_texts.insert(sql.to_string());
            self.cached_bytes += sql.len();
        }
        f(&mut *self.conn.prepare_cached(sql).map_err(backend)?)
    }
}

fn backend(e: rusqlite::Error) -> DbError {
    DbError::Backend(format!("sqlite: {e}"))
}

fn to_sql(value: &SqlValue) -> ToSqlOutput<'_> {
    match value {
        SqlValue::Null => ToSqlOutput::Owned(RValue::Null),
        SqlValue::Int(i) => ToSqlOutput::Owned(RValue::Integer(*i)),
        SqlValue::Real(r) => ToSqlOutput::Owned(RValue::Real(*r)),
        SqlValue::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        SqlValue::Shared(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        SqlValue::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
    }
}

struct Param<'a>(&'a SqlValue);
impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(to_sql(self.0))
    }
}

/// Runs a prepared statement and reads all its rows.
fn query_rows(
    statement: &mut rusqlite::Statement<'_>,
    params: &[SqlValue],
) -> Result<Vec<Row>, DbError> {
    let columns = statement.column_count();
    let bound: Vec<Param> = params.iter().map(Param).collect();
    let mut rows = statement
        .query(rusqlite::params_from_iter(bound.iter()))
        .map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i).map_err(backend)? {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(v) => SqlValue::Int(v),
                ValueRef::Real(v) => SqlValue::Real(v),
                // Text is checked as UTF-8 (the file may have been edited); the common valid
                // case takes the standard library's fast check.
                ValueRef::Text(t) => SqlValue::Text(match std::str::from_utf8(t) {
                    Ok(text) => text.to_owned(),
                    Err(_) => String::from_utf8_lossy(t).into_owned(),
                }),
                ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
            });
        }
        out.push(values);
    }
    Ok(out)
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        self.with_statement(sql, |statement| query_rows(statement, params))
    }

    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, DbError> {
        if params.is_empty() && !sql.contains('?') {
            self.conn.execute_batch(sql).map_err(backend)?;
            return Ok(0);
        }
        self.with_statement(sql, |statement| {
            let bound: Vec<Param> = params.iter().map(Param).collect();
            let n = statement
                .execute(rusqlite::params_from_iter(bound.iter()))
                .map_err(backend)?;
            Ok(n as u64)
        })
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch("COMMIT").map_err(backend)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch("ROLLBACK").map_err(backend)
    }
}

/// A SQLite database file.
pub struct SqlitePool {
    path: PathBuf,
    writer: Mutex<SqliteConn>,
    readers: Mutex<Vec<SqliteConn>>,
    checkpointer: Checkpointer,
}

impl SqlitePool {
    /// Opens (creating if needed) the database file and runs migrations.
    pub fn open(path: &Path, migrations: &[Migration]) -> Result<SqlitePool, DbError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| DbError::Backend(format!("create {}: {e}", parent.display())))?;
        }
        let mut writer = SqliteConn::open(path, WRITER_CACHE_SIZE_KIB)?;
        crate::migrate(&mut writer, migrations)?;
        Ok(SqlitePool {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            checkpointer: Checkpointer::start(path)?,
        })
    }

    /// Opens a database file that exists already, without creating or migrating anything.
    pub fn open_existing(path: &Path) -> Result<SqlitePool, DbError> {
        if !path.is_file() {
            return Err(DbError::Missing(format!(
                "no database file at {}",
                path.display()
            )));
        }
        Ok(SqlitePool {
            path: path.to_path_buf(),
            writer: Mutex::new(SqliteConn::open(path, WRITER_CACHE_SIZE_KIB)?),
            readers: Mutex::new(Vec::new()),
            checkpointer: Checkpointer::start(path)?,
        })
    }

    /// Runs `f` on the writer connection, then tells the checkpointer the log may have grown.
    pub fn with_writer<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let result = {
            let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut *conn)
        };
        self.checkpointer.wake();
        result
    }

    /// Runs `f` on a reader connection.
    pub fn with_reader<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => SqliteConn::open(&self.path, READER_CACHE_SIZE_KIB)?,
        };
        let result = f(&mut conn);
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }
}

/// What the writer and the checkpointer thread share.
#[derive(Default)]
struct CheckpointSignal {
    /// The writer wrote since the last checkpoint began.
    pending: bool,
    /// The pool is closing.
    stop: bool,
}

/// Copies the WAL back into the database file on a thread and connection of its own
/// (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks the writer or readers), woken after the
/// writer's transactions and at most once per [`CHECKPOINT_PAUSE`]. Without it every commit
/// that grows the log past the threshold copies it back on the writer's time: a quarter of
/// the writer's work in a bulk import.
struct Checkpointer {
    shared: Arc<(Mutex<CheckpointSignal>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, DbError> {
        let conn = SqliteConn::open_with(path, READER_CACHE_SIZE_KIB, 0)?;
        let shared = Arc::new((Mutex::new(CheckpointSignal::default()), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(conn, &theirs))
            .map_err(|e| DbError::Backend(format!("start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    fn wake(&self) {
        let (signal, condvar) = &*self.shared;
        signal.lock().unwrap_or_else(|p| p.into_inner()).pending = true;
        condvar.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (signal, condvar) = &*self.shared;
        signal.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        condvar.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite checkpoint thread panicked");
        }
    }
}

fn checkpoint_loop(conn: SqliteConn, shared: &(Mutex<CheckpointSignal>, Condvar)) {
    let (signal, condvar) = shared;
    loop {
        {
            let mut state = signal.lock().unwrap_or_else(|p| p.into_inner());
            while !state.pending && !state.stop {
                state = condvar.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.stop {
                return;
            }
            state.pending = false;
        }
        if let Err(e) = conn
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!("WAL checkpoint failed (the next one retries): {e}");
        }
        let state = signal.lock().unwrap_or_else(|p| p.into_inner());
        if state.stop {
            return;
        }
        let (state, _) = condvar
            .wait_timeout_while(state, CHECKPOINT_PAUSE, |s| !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        if state.stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEMS: &[Migration] = &[Migration {
        component: "items",
        version: 1,
        sql: "CREATE TABLE items (n {int} NOT NULL, body {text} NOT NULL)",
    }];

    /// The writer's own automatic checkpoint starts only at [`WAL_AUTOCHECKPOINT_PAGES`], far
    /// beyond what this test writes: the rows reach the database file only through the
    /// checkpoint thread.
    #[test]
    fn the_checkpoint_thread_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let pool = SqlitePool::open(&path, ITEMS).unwrap();
        let page_size: i64 = pool
            .writer
            .lock()
            .unwrap()
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page_size, i64::from(PAGE_SIZE_BYTES));
        let body = "x".repeat(1_000);
        pool.with_writer(|conn| -> Result<(), DbError> {
            conn.begin()?;
            for n in 0..4_000_i64 {
                conn.execute(
                    "INSERT INTO items (n, body) VALUES (?1, ?2)",
                    &[n.into(), body.as_str().into()],
                )?;
            }
            conn.commit()
        })
        .unwrap();
        let written = 4_000 * 1_000;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let file = std::fs::metadata(&path).unwrap().len();
            if file >= written {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file holds {file} bytes 10 s after a commit of {written}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(pool);
        let reopened = SqlitePool::open(&path, ITEMS).unwrap();
        let rows = reopened
            .with_reader(|conn| conn.query("SELECT COUNT(*) FROM items", &[]))
            .unwrap();
        assert_eq!(rows, vec![vec![4_000_i64.into()]]);
    }
    /// Statements of ever new shapes never hold more than [`MAX_CACHED_SQL_BYTES`] of text
    /// in a connection's cache, and a statement too long to keep never enters it.
    #[test]
    fn the_statement_cache_stays_within_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConn::open(&dir.path().join("db.sqlite"), 1_024).unwrap();
        let shape = |n: usize| {
            let list: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
            format!("SELECT 1 WHERE 1 IN ({})", list.join(", "))
        };
        let mut largest = 0;
        for n in 1..2_000 {
            let sql = shape(n);
            let params: Vec<SqlValue> = (1..=n as i64).map(SqlValue::Int).collect();
            assert_eq!(
                conn.query(&sql, &params).unwrap(),
                vec![vec![SqlValue::Int(1)]]
            );
            assert_eq!(conn.cached_texts.contains(&sql), cacheable(&sql), "{n}");
            largest = largest.max(conn.cached_bytes);
            assert!(conn.cached_bytes <= MAX_CACHED_SQL_BYTES);
        }
        assert!(largest > MAX_CACHED_SQL_BYTES / 2, "the budget was reached");
        // A repeated statement is not counted twice.
        let before = conn.cached_bytes;
        conn.query("SELECT 1 WHERE 1 IN (?1)", &[SqlValue::Int(1)])
            .unwrap();
        conn.query("SELECT 1 WHERE 1 IN (?1)", &[SqlValue::Int(1)])
            .unwrap();
        assert!(conn.cached_bytes <= before + shape(1).len());
    }
}
