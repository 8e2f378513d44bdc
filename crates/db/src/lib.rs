//! The SQL layer every zorgnet store shares: the node's resource store, its outbox and the
//! hub's registers.
//!
//! What it is: a [`Database`] that is either an embedded SQLite file (one writer, a pool of
//! readers, WAL) or a PostgreSQL pool, the small [`sql::Conn`] trait that all storage logic
//! is written against once, and versioned [`Migration`]s kept per component, so that several
//! components can share one database without sharing a schema history.
//! What it is not: an ORM or a query builder beyond numbered placeholders; it knows nothing
//! about FHIR or any register.
#![deny(missing_docs)]

mod postgres;
pub mod sql;
mod sqlite;

pub use postgres::{ASYNC_READERS_PER_CORE, PgAsyncReaders};
use sql::{Conn, Dialect, Row, SqlValue};
use std::path::Path;
use std::sync::Arc;

/// Database errors.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database failed or refused the statement.
    #[error("{0}")]
    Backend(String),
    /// A concurrent transaction got in the way; retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    /// The database, or a component's tables in it, is not there (only from
    /// [`Database::open_existing_sqlite`] and [`Database::open_existing_postgres`]).
    #[error("{0}")]
    Missing(String),
}

/// One numbered schema change of one component. Released migrations are never edited; a new
/// change is a new number.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The component the migration belongs to (`store`, `outbox`, `nvi`, …).
    pub component: &'static str,
    /// Its number within the component, starting at 1.
    pub version: i64,
    /// SQL statements separated by `;`. `{id}` (an auto-numbered primary key), `{int}`,
    /// `{text}`, `{real}`, `{blob}` and `{without_rowid}` are replaced per dialect: PostgreSQL gets
    /// BIGINT for every integer (so one i64 binding works on both) and `COLLATE "C"` on text,
    /// so that range comparisons follow byte order exactly as in SQLite.
    pub sql: &'static str,
}

/// Which engine a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

enum Pool {
    Sqlite(sqlite::SqlitePool),
    Postgres(postgres::PgPool),
}

/// An open, migrated database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Arc<Pool>,
}

impl Database {
    /// Opens (creating if needed) a SQLite file and applies `migrations`.
    pub fn open_sqlite(path: &Path, migrations: &[Migration]) -> Result<Database, DbError> {
        Ok(Database {
            pool: Arc::new(Pool::Sqlite(sqlite::SqlitePool::open(path, migrations)?)),
        })
    }

    /// Connects to PostgreSQL and applies `migrations` (serialised across processes by an
    /// advisory lock).
    pub fn open_postgres(url: &str, migrations: &[Migration]) -> Result<Database, DbError> {
        Ok(Database {
            pool: Arc::new(Pool::Postgres(postgres::PgPool::open(url, migrations)?)),
        })
    }

    /// Opens a SQLite file that exists already, creating and migrating nothing: for commands
    /// that only look (`zorgnet node status`). Fails with [`DbError::Missing`] unless the file
    /// is there and records every component of `migrations`, and unless each is at the version
    /// this build knows.
    pub fn open_existing_sqlite(
        path: &Path,
        migrations: &[Migration],
    ) -> Result<Database, DbError> {
        let pool = sqlite::SqlitePool::open_existing(path)?;
        pool.with_reader(|conn| check_schema(conn, migrations))?;
        Ok(Database {
            pool: Arc::new(Pool::Sqlite(pool)),
        })
    }

    /// Connects to a PostgreSQL database without creating or migrating anything; like
    /// [`Database::open_existing_sqlite`], every component of `migrations` must be there.
    pub fn open_existing_postgres(
        url: &str,
        migrations: &[Migration],
    ) -> Result<Database, DbError> {
        let pool = postgres::PgPool::open_existing(url);
        pool.with_reader(|conn| check_schema(conn, migrations))?;
        Ok(Database {
            pool: Arc::new(Pool::Postgres(pool)),
        })
    }

    /// The engine.
    pub fn kind(&self) -> BackendKind {
        match *self.pool {
            Pool::Sqlite(_) => BackendKind::Sqlite,
            Pool::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The SQL dialect.
    pub fn dialect(&self) -> Dialect {
        match self.kind() {
            BackendKind::Sqlite => Dialect::Sqlite,
            BackendKind::Postgres => Dialect::Postgres,
        }
    }

    /// Applies `migrations` of further components to an open database: how a component that
    /// keeps tables beside another's (the node's outbox beside its resources) sets them up.
    /// Blocking.
    pub fn migrate(&self, migrations: &[Migration]) -> Result<(), DbError> {
        match &*self.pool {
            Pool::Sqlite(pool) => pool.with_writer(|conn| migrate(conn, migrations)),
            Pool::Postgres(pool) => pool.migrate(migrations),
        }
    }

    /// Runs `f` as the single writer. Blocking: call it from a blocking thread.
    pub fn with_writer<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        match &*self.pool {
            Pool::Sqlite(pool) => pool.with_writer(f),
            Pool::Postgres(pool) => pool.with_writer(f),
        }
    }

    /// Runs `f` on a reader connection. Blocking: call it from a blocking thread.
    pub fn with_reader<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        match &*self.pool {
            Pool::Sqlite(pool) => pool.with_reader(f),
            Pool::Postgres(pool) => pool.with_reader(f),
        }
    }

    /// Runs one short read statement from async code without a blocking thread: on SQLite
    /// on a reader connection right here (a keyed read of a few cached pages costs less than
    /// a hand-off to another thread), on PostgreSQL over pipelined async connections
    /// ([`PgAsyncReaders`]). Not for long reads: on SQLite it holds up the async worker.
    pub async fn read_async(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        match &*self.pool {
            Pool::Sqlite(pool) => pool.with_reader(|conn| conn.query(sql, params)),
            Pool::Postgres(pool) => pool.async_readers.query(sql, params).await,
        }
    }

    /// Runs `f` inside one write transaction: committed when it returns `Ok`, rolled back
    /// otherwise. Blocking: call it from a blocking thread.
    pub fn write_transaction<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.with_writer(|conn| in_transaction(conn, f))
    }
}

/// Runs `f` between `BEGIN` and `COMMIT` on `conn`, rolling back when it fails.
pub fn in_transaction<T, E: From<DbError>>(
    conn: &mut dyn Conn,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
) -> Result<T, E> {
    conn.begin()?;
    match f(conn) {
        Ok(value) => {
            conn.commit()?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = conn.rollback() {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Renders a migration's SQL for `dialect`.
fn render(sql: &str, dialect: Dialect) -> String {
    let (id, int, text, real, blob, without_rowid) = match dialect {
        Dialect::Sqlite => (
            "INTEGER PRIMARY KEY",
            "INTEGER",
            "TEXT",
            "REAL",
            "BLOB",
            "WITHOUT ROWID",
        ),
        Dialect::Postgres => (
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "BIGINT",
            "TEXT COLLATE \"C\"",
            "DOUBLE PRECISION",
            "BYTEA",
            "",
        ),
    };
    sql.replace("{id}", id)
        .replace("{int}", int)
        .replace("{text}", text)
        .replace("{real}", real)
        .replace("{blob}", blob)
        .replace("{without_rowid}", without_rowid)
}

/// Checks, reading only, that the database records every component of `migrations` at the
/// newest version this build knows.
fn check_schema(conn: &mut dyn Conn, migrations: &[Migration]) -> Result<(), DbError> {
    let exists = match conn.dialect() {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        }
        Dialect::Postgres => {
            "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 ELSE 1 END::BIGINT"
        }
    };
    let found = conn.query(exists, &[])?;
    if found
        .first()
        .and_then(|r| r.first())
        .map_or(0, SqlValue::int)
        == 0
    {
        return Err(DbError::Missing(
            "no zorgnet tables in this database (no schema_migrations)".into(),
        ));
    }
    let select = format!(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = {}",
        conn.dialect().placeholder(1)
    );
    for migration in migrations {
        let known = migrations
            .iter()
            .filter(|m| m.component == migration.component)
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        if migration.version != known {
            continue;
        }
        let rows = conn.query(&select, &[migration.component.into()])?;
        let current = rows
            .first()
            .and_then(|r| r.first())
            .map_or(0, SqlValue::int);
        if current == 0 {
            return Err(DbError::Missing(format!(
                "the database has no {} tables",
                migration.component
            )));
        }
        if current != known {
            return Err(DbError::Backend(format!(
                "the database's {} schema is at version {current}, this build's at {known}",
                migration.component
            )));
        }
    }
    Ok(())
}

/// Applies every migration newer than what the database records, each in its own
/// transaction. Fails when the database has a newer migration of a component than this
/// build knows.
fn migrate(conn: &mut dyn Conn, migrations: &[Migration]) -> Result<(), DbError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version BIGINT NOT NULL, \
         applied_at_ms BIGINT NOT NULL, PRIMARY KEY (component, version))",
        &[],
    )?;
    let select = format!(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = {}",
        conn.dialect().placeholder(1)
    );
    let mut components: Vec<&str> = Vec::new();
    for migration in migrations {
        if !components.contains(&migration.component) {
            components.push(migration.component);
        }
    }
    for component in components {
        let rows = conn.query(&select, &[component.into()])?;
        let current = rows.first().and_then(|r| r.first()).map_or(0, |v| v.int());
        let known = migrations
            .iter()
            .filter(|m| m.component == component)
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        if current > known {
            return Err(DbError::Backend(format!(
                "the database's {component} schema is at version {current}, newer than this build ({known}); upgrade zorgnet"
            )));
        }
        for migration in migrations
            .iter()
            .filter(|m| m.component == component && m.version > current)
        {
            in_transaction(conn, |conn| -> Result<(), DbError> {
                for statement in render(migration.sql, conn.dialect()).split(';') {
                    if !statement.trim().is_empty() {
                        conn.execute(statement, &[])?;
                    }
                }
                let insert = format!(
                    "INSERT INTO schema_migrations (component, version, applied_at_ms) VALUES ({}, {}, {})",
                    conn.dialect().placeholder(1),
                    conn.dialect().placeholder(2),
                    conn.dialect().placeholder(3)
                );
                conn.execute(
                    &insert,
                    &[component.into(), migration.version.into(), now_ms().into()],
                )?;
                Ok(())
            })?;
            tracing::info!(
                component,
                version = migration.version,
                "applied schema migration"
            );
        }
    }
    Ok(())
}

/// Creates a fresh PostgreSQL schema named `schema` and returns a URL whose connections use
/// it as their search path: how tests and benchmarks get an empty database of their own.
/// Blocking.
pub fn postgres_fresh_schema(url: &str, schema: &str) -> Result<String, DbError> {
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(DbError::Backend(format!(
            "schema name {schema:?} must be ASCII letters, digits and underscores"
        )));
    }
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls)
        .map_err(|e| DbError::Backend(format!("postgres: {e}")))?;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .map_err(|e| DbError::Backend(format!("postgres: create schema {schema}: {e}")))?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &[Migration] = &[Migration {
        component: "a",
        version: 1,
        sql: "CREATE TABLE a_items (n {int} NOT NULL)",
    }];

    #[test]
    fn migrations_apply_once_per_component_and_refuse_a_newer_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let db = Database::open_sqlite(&path, FIRST).unwrap();
        db.write_transaction(|conn| {
            conn.execute("INSERT INTO a_items (n) VALUES (?1)", &[7_i64.into()])
        })
        .unwrap();
        drop(db);

        let both = [
            FIRST[0],
            Migration {
                component: "a",
                version: 2,
                sql: "ALTER TABLE a_items ADD COLUMN label {text}",
            },
            Migration {
                component: "b",
                version: 1,
                sql: "CREATE TABLE b_items (n {int})",
            },
        ];
        let db = Database::open_sqlite(&path, &both).unwrap();
        let rows: Vec<_> = db
            .with_reader(|conn| conn.query("SELECT n, label FROM a_items", &[]))
            .unwrap();
        assert_eq!(rows, vec![vec![7_i64.into(), sql::SqlValue::Null]]);
        drop(db);

        let Err(error) = Database::open_sqlite(&path, FIRST) else {
            panic!("an older build must refuse a newer schema");
        };
        assert!(
            error.to_string().contains("newer than this build"),
            "{error}"
        );
    }

    #[test]
    fn a_failing_transaction_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("db.sqlite"), FIRST).unwrap();
        let result = db.write_transaction(|conn| -> Result<(), DbError> {
            conn.execute("INSERT INTO a_items (n) VALUES (?1)", &[1_i64.into()])?;
            conn.execute("INSERT INTO no_such_table (n) VALUES (?1)", &[2_i64.into()])?;
            Ok(())
        });
        assert!(result.is_err());
        let rows = db
            .with_reader(|conn| conn.query("SELECT COUNT(*) FROM a_items", &[]))
            .unwrap();
        assert_eq!(rows[0][0].int(), 0);
    }
}
