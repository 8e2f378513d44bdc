//! Where a service's log lies and how it is kept: beside the service's data, in a database
//! file of its own on SQLite, with its keys in the service's data directory and a checkpoint
//! signed every [`CHECKPOINT_INTERVAL`]. The node and the hub open theirs alike.

use crate::chain::{ChainKey, checkpoint_key};
use crate::checkpoint::Checkpoint;
use crate::log::{AuditError, AuditLog};
use crate::sink::AuditSink;
use ed25519_dalek::SigningKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_db::sql::Dialect;
use zorgnet_db::{Database, DbError};

/// The SQLite file of the access log, in a service's data directory.
///
/// On SQLite the log has a file of its own rather than tables in the service's: every commit
/// to a file makes each of its readers drop its page cache at its next read, so a log
/// committing with every request would make the service's every read start from a cold
/// cache.
pub const AUDIT_DATABASE_FILE: &str = "audit.sqlite";
/// The access log's chain key, in a service's data directory.
pub const CHAIN_KEY_FILE: &str = "audit-chain.key";
/// The Ed25519 key that signs the access log's checkpoints, in a service's data directory.
pub const CHECKPOINT_KEY_FILE: &str = "audit-checkpoint.key";
/// How often a service signs a checkpoint of its access log (when records were added).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// The database the access log of a service whose data is in `db` (and whose data directory
/// is `data`) lives in: [`AUDIT_DATABASE_FILE`] in `data` when `db` is SQLite, `db` itself
/// when it is PostgreSQL (whose readers share one buffer cache). Blocking.
pub fn database_beside(db: &Database, data: &Path) -> Result<Database, DbError> {
    match db.dialect() {
        Dialect::Sqlite => Database::open_sqlite(&data.join(AUDIT_DATABASE_FILE), &[]),
        Dialect::Postgres => Ok(db.clone()),
    }
}

/// Opens the access log of a service whose data is in `db` and `data`
/// ([`database_beside`]), chained with the key in `data`'s [`CHAIN_KEY_FILE`] (both keys are
/// made on first use), and starts its writer; returns the log, its sink and the key in
/// [`CHECKPOINT_KEY_FILE`] that signs its checkpoints. Blocking.
pub fn open_beside(
    db: &Database,
    data: &Path,
) -> Result<(Arc<AuditLog>, AuditSink, SigningKey), AuditError> {
    let key_error = |file: &str, e: std::io::Error| {
        AuditError::Key(format!("{}: {e}", data.join(file).display()))
    };
    let key = ChainKey::load_or_create(&data.join(CHAIN_KEY_FILE))
        .map_err(|e| key_error(CHAIN_KEY_FILE, e))?;
    let signer = checkpoint_key(&data.join(CHECKPOINT_KEY_FILE))
        .map_err(|e| key_error(CHECKPOINT_KEY_FILE, e))?;
    let (log, sink) = start(database_beside(db, data)?, key)?;
    Ok((log, sink, signer))
}

/// Opens the access log in `db`, chained with `key`, and starts its writer. Blocking.
pub fn start(db: Database, key: ChainKey) -> Result<(Arc<AuditLog>, AuditSink), AuditError> {
    let log = Arc::new(AuditLog::open(db, key)?);
    let sink = AuditSink::start(log.clone())
        .map_err(|e| AuditError::Unavailable(format!("starting the writer: {e}")))?;
    Ok((log, sink))
}

/// Signs a checkpoint of `log` now, on the blocking pool; a failure is logged and answers
/// `None`, to be tried again at the next interval.
pub async fn sign_checkpoint(
    log: &Arc<AuditLog>,
    signer: &SigningKey,
    origin: &str,
) -> Option<Checkpoint> {
    let (log, signer, origin) = (log.clone(), signer.clone(), origin.to_string());
    match tokio::task::spawn_blocking(move || {
        log.checkpoint(&signer, &origin, zorgnet_db::now_ms())
    })
    .await
    {
        Ok(Ok(checkpoint)) => {
            tracing::debug!(
                size = checkpoint.size,
                origin = %checkpoint.origin,
                "signed a checkpoint of the access log"
            );
            Some(checkpoint)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not sign a checkpoint of the access log");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "the access log's checkpoint task failed");
            None
        }
    }
}
