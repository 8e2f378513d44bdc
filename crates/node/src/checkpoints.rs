//! The access log's checkpoints: the node signs one every [`CHECKPOINT_INTERVAL`], so that
//! its history is pinned (see `zorgnet_audit`), and, in a network, publishes it to the hub,
//! which keeps every checkpoint of every node and refuses one that does not extend the
//! history it holds (`/audit/checkpoints` at the hub).
//!
//! A publication asks the hub for the latest checkpoint it holds of this log, proves from the
//! local log that the new one extends it (an RFC 6962 consistency proof) and sends both. What
//! fails is logged and counted, and tried again at the next interval: the checkpoint signed
//! then covers everything since.
//! What it is not: the log's verification (`zorgnet_audit::verify`).

use crate::hub_client::{HubClient, HubClientError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Arc;
use zorgnet_audit::{
    AuditError, AuditLog, CHECKPOINT_INTERVAL, Checkpoint, CheckpointJson, Hash, SigningKey,
    VerifyingKey, sign_checkpoint,
};

/// Why a checkpoint could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The hub could not be reached or refused the checkpoint (a 409 means it does not
    /// extend the history the hub holds).
    #[error(transparent)]
    Hub(#[from] HubClientError),
    /// The local log could not give the consistency proof.
    #[error(transparent)]
    Log(#[from] AuditError),
    /// The hub's answer about its latest checkpoint is not one.
    #[error("the hub's latest checkpoint is unreadable: {0}")]
    Unreadable(String),
}

/// What a publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The hub kept the checkpoint.
    Kept,
    /// The hub held this checkpoint already.
    Held,
}

/// Signs a checkpoint of `log` every [`CHECKPOINT_INTERVAL`] for as long as it runs and, when
/// the node is in a network (`hub`), publishes it there (a failure is logged and tried again
/// at the next interval). `origin` is the organisation's URA.
pub async fn keep_checkpoints(
    log: Arc<AuditLog>,
    signer: SigningKey,
    origin: String,
    hub: Option<HubClient>,
) {
    let key = signer.verifying_key();
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        let Some(checkpoint) = sign_checkpoint(&log, &signer, &origin).await else {
            continue;
        };
        if let Some(hub) = &hub {
            match publish_once(&log, hub, &checkpoint, &key).await {
                Ok(published) => {
                    metrics::counter!("zorgnet_audit_checkpoint_publications_total").increment(1);
                    tracing::debug!(
                        size = checkpoint.size,
                        ?published,
                        "published a checkpoint of the access log"
                    );
                }
                Err(e) => {
                    metrics::counter!("zorgnet_audit_checkpoint_publication_failures_total")
                        .increment(1);
                    tracing::warn!(error = %e, size = checkpoint.size, "could not publish a checkpoint of the access log; trying again at the next interval");
                }
            }
        }
    }
}

/// Publishes `checkpoint` of `log` (signed with the key `key` verifies, its origin the
/// organisation's URA) to the hub: asks for the hub's latest checkpoint of the log, proves
/// consistency from it, and sends both. A log smaller than the hub's latest is sent without a
/// proof, so that the hub records the loss.
pub async fn publish_once(
    log: &Arc<AuditLog>,
    hub: &HubClient,
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
) -> Result<Published, PublishError> {
    let path = format!("/audit/checkpoints/{}", checkpoint.origin);
    let held = match hub.get(&format!("{path}/latest")).await {
        Ok(answer) => Some(held_head(&answer)?),
        Err(HubClientError::Refused { status: 404, .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if held == Some((checkpoint.size, checkpoint.root)) {
        return Ok(Published::Held);
    }
    let previous_size = held.map(|(size, _)| size);
    let proof = match previous_size {
        Some(old) if old > 0 && old < checkpoint.size => {
            let (log, new) = (log.clone(), checkpoint.size);
            tokio::task::spawn_blocking(move || log.consistency_proof(old, new))
                .await
                .map_err(|e| AuditError::Unavailable(e.to_string()))??
        }
        _ => Vec::new(),
    };
    let body = json!({
        "checkpoint": CheckpointJson::of(checkpoint),
        "key": STANDARD.encode(key.to_bytes()),
        "previous_size": previous_size,
        "proof": proof.iter().map(|hash| STANDARD.encode(hash.0)).collect::<Vec<_>>(),
    });
    hub.post(&path, &body).await?;
    Ok(Published::Kept)
}

/// The size and root of the hub's answer to `GET /audit/checkpoints/{ura}/latest`.
fn held_head(answer: &Value) -> Result<(u64, Hash), PublishError> {
    let size = answer
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| PublishError::Unreadable("no size".into()))?;
    let root = answer
        .get("root")
        .and_then(Value::as_str)
        .and_then(|root| STANDARD.decode(root).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| PublishError::Unreadable("no root of 32 bytes".into()))?;
    Ok((size, Hash(root)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hubs_latest_checkpoint_is_read_or_refused() {
        let root = Hash([4; 32]);
        let answer = json!({"origin": "00000011", "size": 12, "root": STANDARD.encode(root.0)});
        assert_eq!(held_head(&answer).unwrap(), (12, root));
        for broken in [
            json!({"root": STANDARD.encode(root.0)}),
            json!({"size": 12, "root": STANDARD.encode([4; 31])}),
            json!({"size": -1, "root": STANDARD.encode(root.0)}),
        ] {
            assert!(
                matches!(held_head(&broken), Err(PublishError::Unreadable(_))),
                "{broken}"
            );
        }
    }
}
