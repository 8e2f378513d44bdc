//! The small SQL surface both backends implement: a connection that runs parameterised
//! statements inside a transaction, and the dialect differences that SQL text must respect.
//!
//! All storage logic is written once against [`Conn`]; `sqlite.rs` and `postgres.rs` only
//! translate values and placeholders.

use crate::DbError;
use std::sync::Arc;

/// Longest SQL text a connection keeps prepared for reuse. Connections cache statements by
/// their text, and a search's text follows the shape its client chose (how many criteria,
/// values and sort keys): a longer statement is prepared for its one use and dropped after
/// it, so one large search cannot push the statements everyone repeats out of the cache.
/// Every statement the writer repeats (a 128-row `INSERT` is under 7 KiB) and ordinary
/// searches (a hundred OR-ed tokens: 3.5 KiB) fit.
pub const MAX_CACHED_STATEMENT_BYTES: usize = 16 * 1024;

/// Most SQL text, in bytes, of the statements one connection keeps prepared; beyond it the
/// cache is emptied and fills again with what is used next. A prepared statement takes
/// about 15 times its text in memory (SQLite, measured: 3.5 KiB of search text, 48 KB;
/// 10.5 KiB, 160 KB), so this keeps a connection's statements near 4 MB whatever shapes
/// clients send, while the writer's repeated `INSERT`s (about 100 KiB together) stay.
pub const MAX_CACHED_SQL_BYTES: usize = 256 * 1024;

/// Whether a statement is short enough to keep prepared ([`MAX_CACHED_STATEMENT_BYTES`]).
pub fn cacheable(sql: &str) -> bool {
    sql.len() <= MAX_CACHED_STATEMENT_BYTES
}

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// 64-bit integer.
    Int(i64),
    /// Double.
    Real(f64),
    /// Text.
    Text(String),
    /// Text its owner keeps as well, bound without a copy (a resource's JSON on import,
    /// kept for a retry while the statement runs).
    Shared(Arc<str>),
    /// Bytes (a `{blob}` column).
    Blob(Vec<u8>),
}

impl SqlValue {
    /// As integer (0 for anything else).
    pub fn int(&self) -> i64 {
        match self {
            SqlValue::Int(i) => *i,
            SqlValue::Real(r) => *r as i64,
            _ => 0,
        }
    }

    /// Moves out text (empty for anything else).
    pub fn take_text(&mut self) -> String {
        match std::mem::replace(self, SqlValue::Null) {
            SqlValue::Text(t) => t,
            SqlValue::Shared(t) => t.to_string(),
            _ => String::new(),
        }
    }

    /// Moves out bytes (empty for anything but a blob).
    pub fn take_blob(&mut self) -> Vec<u8> {
        match std::mem::replace(self, SqlValue::Null) {
            SqlValue::Blob(b) => b,
            _ => Vec::new(),
        }
    }
}

impl From<&[u8]> for SqlValue {
    fn from(v: &[u8]) -> Self {
        SqlValue::Blob(v.to_vec())
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

/// A result row.
pub type Row = Vec<SqlValue>;

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.35+.
    Sqlite,
    /// PostgreSQL 13+.
    Postgres,
}

impl Dialect {
    /// How a multi-row `INSERT` of rows that must all be new begins. On SQLite `OR FAIL`: a
    /// conflict still fails the statement (and the caller rolls its transaction back), but
    /// SQLite need not keep a statement journal to undo the statement's earlier rows, which
    /// cost a page copy per page the statement touched.
    pub fn bulk_insert_verb(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INSERT OR FAIL INTO",
            Dialect::Postgres => "INSERT INTO",
        }
    }

    /// The placeholder for parameter number `n` (1-based).
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// A statement taking one text parameter, a key, that holds a lock on (`namespace`, key)
    /// in the current schema until the current transaction ends, for writers that must not
    /// interleave across processes. `None` on SQLite, where a write transaction
    /// (`BEGIN IMMEDIATE`) holds the database's write lock already; on PostgreSQL a
    /// transaction-scoped advisory lock on the `hashtext` of schema and key (advisory locks
    /// are per database, and schemas are how databases are shared).
    pub fn transaction_lock_sql(self, namespace: i32) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!(
                "SELECT pg_advisory_xact_lock({namespace}, hashtext(current_schema() || '/' || $1))"
            )),
        }
    }

    /// A query taking one parameter, a count *n*, that returns *n* rows of one column: fresh
    /// values for the auto-numbered key `column` of `table` (an `{id}` column), for rows
    /// inserted with explicit keys. Run it only inside a write transaction that inserts those
    /// rows: SQLite continues after the current maximum, which is safe because the writer
    /// holds the database's write lock until commit; PostgreSQL draws from the column's
    /// identity sequence, which is safe under any concurrency.
    pub fn fresh_keys_sql(self, table: &str, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
                 SELECT (SELECT COALESCE(MAX({column}), 0) FROM {table}) + i FROM n"
            ),
            Dialect::Postgres => format!(
                "SELECT nextval(pg_get_serial_sequence('{table}', '{column}')) FROM generate_series(1, $1::bigint)"
            ),
        }
    }
}

/// One database connection, used inside a transaction the caller opened with [`Conn::begin`].
pub trait Conn {
    /// The dialect.
    fn dialect(&self) -> Dialect;
    /// Runs a statement and returns all rows.
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError>;
    /// Runs a statement and returns the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, DbError>;
    /// Starts a write transaction.
    fn begin(&mut self) -> Result<(), DbError>;
    /// Commits it.
    fn commit(&mut self) -> Result<(), DbError>;
    /// Rolls it back.
    fn rollback(&mut self) -> Result<(), DbError>;
}

/// Builds SQL text with numbered placeholders for the connection's dialect.
#[derive(Debug)]
pub struct SqlBuilder {
    /// Dialect of the placeholders.
    pub dialect: Dialect,
    /// The SQL text so far.
    pub sql: String,
    /// The bound parameters, in order.
    pub params: Vec<SqlValue>,
}

impl SqlBuilder {
    /// An empty builder.
    pub fn new(dialect: Dialect) -> SqlBuilder {
        SqlBuilder {
            dialect,
            sql: String::new(),
            params: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<SqlValue>) -> &mut Self {
        self.params.push(value.into());
        let placeholder = self.dialect.placeholder(self.params.len());
        self.sql.push_str(&placeholder);
        self
    }

    /// Appends a row count (`LIMIT`, `OFFSET`) as a literal. SQLite's planner reads a bound
    /// `LIMIT` value, so a statement with `LIMIT ?` is prepared again on every execution; the
    /// literal keeps one prepared statement per distinct count, which is few.
    pub fn count(&mut self, rows: u64) -> &mut Self {
        self.sql.push_str(&rows.to_string());
        self
    }
}
