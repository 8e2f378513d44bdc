//! Group commit: records from many requests at once share one transaction, and each
//! request learns that its record is durable before it answers.

use crate::log::{AuditError, AuditLog};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most records one transaction takes.
pub const MAX_RECORDS_PER_COMMIT: usize = 1_024;
/// Records that may wait for the writer; beyond it, callers wait to hand theirs over.
pub const QUEUED_RECORDS: usize = 16_384;

/// A record waiting for its transaction, and whom to tell when it committed.
struct Waiting {
    record: String,
    done: oneshot::Sender<Result<u64, String>>,
}

/// Appends records to an [`AuditLog`] from async code. One writer thread takes whatever
/// records are waiting (up to [`MAX_RECORDS_PER_COMMIT`]) into one append, so concurrent
/// requests share a commit; [`AuditSink::record`] returns only after the commit that holds
/// its record. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct AuditSink {
    queue: mpsc::Sender<Waiting>,
}

impl AuditSink {
    /// Starts the writer thread for `log`.
    pub fn start(log: Arc<AuditLog>) -> std::io::Result<AuditSink> {
        let (queue, mut waiting) = mpsc::channel::<Waiting>(QUEUED_RECORDS);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = waiting.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_RECORDS_PER_COMMIT {
                        match waiting.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let records: Vec<String> =
                        batch.iter_mut().map(|w| std::mem::take(&mut w.record)).collect();
                    match log.append(&records) {
                        Ok(first_seq) => {
                            for (offset, w) in (0_u64..).zip(batch) {
                                let _ = w.done.send(Ok(first_seq + offset));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, records = records.len(), "the access log could not append");
                            let message = e.to_string();
                            for w in batch {
                                let _ = w.done.send(Err(message.clone()));
                            }
                        }
                    }
                }
            })?;
        Ok(AuditSink { queue })
    }

    /// Appends `record` and returns its sequence number once it is committed.
    pub async fn record(&self, record: String) -> Result<u64, AuditError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Waiting { record, done })
            .await
            .map_err(|_| AuditError::Unavailable("the writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| AuditError::Unavailable("the writer stopped before the commit".into()))?
            .map_err(AuditError::Unavailable)
    }
}
