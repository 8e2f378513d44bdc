//! SQLite backend: one writer connection and a pool of readers, in WAL mode.
//!
//! SQLite allows one writer at a time, so writes queue on a mutex rather than on SQLite's busy
//! handler. Readers never block the writer (WAL). `synchronous=FULL` makes every acknowledged
//! commit survive power loss as well as `kill -9`.

use crate::sql::{Conn, Dialect, Row, SqlValue};
use crate::{DbError, Migration};
use rusqlite::types::{ToSqlOutput, Value as RValue, ValueRef};
use std::path::Path;
use std::sync::Mutex;

/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Page cache of the writer connection.
const WRITER_CACHE_SIZE_KIB: i64 = 64 * 1024;
/// Page cache of each reader connection; the kernel's page cache holds the rest of the file.
/// Memory-mapped I/O stays off: every connection's mapping would count in resident memory.
const READER_CACHE_SIZE_KIB: i64 = 8 * 1024;
/// WAL pages after which a commit copies the log back into the database file (SQLite's
/// default is 1,000). A bulk write dirties the same index pages in many transactions; with a
/// longer log each is copied back once per checkpoint instead of once per transaction.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 8_192;
/// Reader connections kept open for reuse: at least as many as requests served at once, or
/// every request beyond them pays for opening a connection (and parsing the schema).
const MAX_IDLE_READERS: usize = 32;

/// A SQLite connection.
pub struct SqliteConn {
    conn: rusqlite::Connection,
}

impl SqliteConn {
    fn open(path: &Path, cache_size_kib: i64) -> Result<SqliteConn, DbError> {
        let conn = rusqlite::Connection::open(path).map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(backend)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;
             PRAGMA cache_size=-{cache_size_kib}; PRAGMA temp_store=MEMORY;
             PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES};"
        ))
        .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(SqliteConn { conn })
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
    }
}

struct Param<'a>(&'a SqlValue);
impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(to_sql(self.0))
    }
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(backend)?;
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
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, DbError> {
        if params.is_empty() && !sql.contains('?') {
            self.conn.execute_batch(sql).map_err(backend)?;
            return Ok(0);
        }
        let mut statement = self.conn.prepare_cached(sql).map_err(backend)?;
        let bound: Vec<Param> = params.iter().map(Param).collect();
        let n = statement
            .execute(rusqlite::params_from_iter(bound.iter()))
            .map_err(backend)?;
        Ok(n as u64)
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
    path: std::path::PathBuf,
    writer: Mutex<SqliteConn>,
    readers: Mutex<Vec<SqliteConn>>,
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
        })
    }

    /// Runs `f` on the writer connection.
    pub fn with_writer<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut *conn)
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
