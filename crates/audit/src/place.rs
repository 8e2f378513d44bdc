//! Where a log lies: beside its service's data, but in a database file of its own on SQLite.

use std::path::Path;
use zorgnet_db::sql::Dialect;
use zorgnet_db::{Database, DbError};

/// The SQLite file of the access log, in a service's data directory.
///
/// On SQLite the log has a file of its own rather than tables in the service's: every commit
/// to a file makes each of its readers drop its page cache at its next read, so a log
/// committing with every request would make the service's every read start from a cold
/// cache.
pub const AUDIT_DATABASE_FILE: &str = "audit.sqlite";

/// The database the access log of a service whose data is in `db` (and whose data directory
/// is `data`) lives in: [`AUDIT_DATABASE_FILE`] in `data` when `db` is SQLite, `db` itself
/// when it is PostgreSQL (whose readers share one buffer cache). Blocking.
pub fn database_beside(db: &Database, data: &Path) -> Result<Database, DbError> {
    match db.dialect() {
        Dialect::Sqlite => Database::open_sqlite(&data.join(AUDIT_DATABASE_FILE), &[]),
        Dialect::Postgres => Ok(db.clone()),
    }
}
