//! The access log's checkpoints: the node signs one every [`CHECKPOINT_INTERVAL`], so that
//! its history is pinned (see `zorgnet_audit`).

use std::sync::Arc;
use std::time::Duration;
use zorgnet_audit::{AuditLog, SigningKey};

/// How often a node signs a checkpoint of its access log (when records were added).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Signs a checkpoint of `log` every [`CHECKPOINT_INTERVAL`] for as long as it runs (a
/// failure is logged and tried again at the next interval).
pub async fn keep_checkpoints(log: Arc<AuditLog>, signer: SigningKey, origin: String) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        let (log, signer, origin) = (log.clone(), signer.clone(), origin.clone());
        match tokio::task::spawn_blocking(move || {
            log.checkpoint(&signer, &origin, zorgnet_db::now_ms())
        })
        .await
        {
            Ok(Ok(checkpoint)) => {
                tracing::debug!(
                    size = checkpoint.size,
                    "signed a checkpoint of the access log"
                )
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not sign a checkpoint of the access log")
            }
            Err(e) => tracing::error!(error = %e, "the access log's checkpoint task failed"),
        }
    }
}
