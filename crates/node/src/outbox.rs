//! The node's durable outbox of referral-index registrations.
//!
//! What it is: a [`WriteHook`] that, inside every write transaction, keeps track of which
//! (patient, data category) pairs this node holds data for, and queues a `register` when a
//! pair appears and a `deregister` when its last resource goes, in the same transaction as
//! the data write; and a delivery task that sends the queue to the hub's referral index in
//! order, with retries and backoff, deleting an entry only after the hub confirmed it.
//! Registration is idempotent at the hub, so a delivery repeated after a crash changes
//! nothing: exactly once in effect. Writes never wait for the hub.
//! What it is not: a general message queue, or a place where a BSN is stored twice: the
//! queue names patients by their local id; the BSN is read from the Patient at delivery.
//!
//! Tables (component `outbox`): `outbox_holdings` (resource → patient, category),
//! `outbox_registered` (pairs the hub has been asked to hold), `outbox` (the queue, in
//! order) and `outbox_failed` (entries the hub refused for good, kept for the operator).

use crate::hub_client::{HubClient, HubClientError};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use zorgnet_db::sql::{Conn, SqlValue};
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_fhir::categories::DataCategory;
use zorgnet_pseudonym::{PersonalId, RecipientId};
use zorgnet_store::{Change, HistoryScope, ReadOutcome, Store, StoreError, WriteHook};

/// The outbox's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "outbox",
    version: 1,
    sql: "
CREATE TABLE outbox_holdings (
    resource {text} NOT NULL,
    patient_id {text} NOT NULL,
    category {text} NOT NULL,
    PRIMARY KEY (resource, patient_id, category)
) {without_rowid};
CREATE INDEX outbox_holdings_by_pair ON outbox_holdings (patient_id, category);
CREATE TABLE outbox_registered (
    patient_id {text} NOT NULL,
    category {text} NOT NULL,
    PRIMARY KEY (patient_id, category)
) {without_rowid};
CREATE TABLE outbox (
    seq {id},
    patient_id {text} NOT NULL,
    category {text} NOT NULL,
    action {text} NOT NULL,
    enqueued_at_ms {int} NOT NULL
);
CREATE TABLE outbox_failed (
    seq {int} PRIMARY KEY,
    patient_id {text} NOT NULL,
    category {text} NOT NULL,
    action {text} NOT NULL,
    enqueued_at_ms {int} NOT NULL,
    failed_at_ms {int} NOT NULL,
    reason {text} NOT NULL
)",
}];

/// Queue entries sent to the hub in one round.
pub const DELIVERY_BATCH_ENTRIES: usize = 500;
/// How often an idle delivery task looks at the queue even without being woken.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// First wait after a failed delivery; doubled per failure up to [`MAX_RETRY_BACKOFF`].
pub const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between delivery attempts while the hub is unreachable.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

const REGISTER: &str = "register";
const DEREGISTER: &str = "deregister";

/// The resource types that can belong to some data category; writes of other types (a
/// Patient, an Organization) cost the outbox nothing.
fn may_have_categories(resource_type: &str) -> bool {
    DataCategory::ALL
        .iter()
        .any(|c| c.resource_types().contains(&resource_type))
}

/// The write hook: keeps holdings and queues (de)registrations in the write's transaction.
#[derive(Debug, Default)]
pub struct RegistrationHook {
    wake: Arc<Notify>,
}

impl RegistrationHook {
    /// A hook that wakes `wake` when it queued something.
    pub fn new(wake: Arc<Notify>) -> RegistrationHook {
        RegistrationHook { wake }
    }
}

impl WriteHook for RegistrationHook {
    fn after_write(&self, conn: &mut dyn Conn, changes: &[Change]) -> Result<(), StoreError> {
        let d = conn.dialect();
        let (p1, p2, p3, p4) = (
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3),
            d.placeholder(4),
        );
        let release = format!(
            "DELETE FROM outbox_holdings WHERE resource = {p1} RETURNING patient_id, category"
        );
        let hold = format!(
            "INSERT INTO outbox_holdings (resource, patient_id, category) VALUES ({p1}, {p2}, {p3}) ON CONFLICT DO NOTHING"
        );
        let still_held = format!(
            "SELECT 1 FROM outbox_holdings WHERE patient_id = {p1} AND category = {p2} LIMIT 1"
        );
        let is_registered =
            format!("SELECT 1 FROM outbox_registered WHERE patient_id = {p1} AND category = {p2}");
        let mark_registered =
            format!("INSERT INTO outbox_registered (patient_id, category) VALUES ({p1}, {p2})");
        let unmark_registered =
            format!("DELETE FROM outbox_registered WHERE patient_id = {p1} AND category = {p2}");
        let enqueue = format!(
            "INSERT INTO outbox (patient_id, category, action, enqueued_at_ms) VALUES ({p1}, {p2}, {p3}, {p4})"
        );
        let mut affected: BTreeSet<(String, String)> = BTreeSet::new();
        for change in changes {
            if !may_have_categories(&change.resource_type) {
                continue;
            }
            let resource = format!("{}/{}", change.resource_type, change.id);
            let released = conn.query(&release, &[resource.as_str().into()])?;
            affected.extend(
                released
                    .into_iter()
                    .map(|mut row| (row[0].take_text(), row[1].take_text())),
            );
            let Some(current) = &change.current else {
                continue;
            };
            for patient in &current.patients {
                for category in &current.categories {
                    conn.execute(
                        &hold,
                        &[
                            resource.as_str().into(),
                            patient.as_str().into(),
                            category.code().into(),
                        ],
                    )?;
                    affected.insert((patient.clone(), category.code().to_string()));
                }
            }
        }
        let mut queued = false;
        for (patient, category) in affected {
            let pair = [
                SqlValue::from(patient.as_str()),
                SqlValue::from(category.as_str()),
            ];
            let held = !conn.query(&still_held, &pair)?.is_empty();
            let registered = !conn.query(&is_registered, &pair)?.is_empty();
            let action = match (held, registered) {
                (true, false) => {
                    conn.execute(&mark_registered, &pair)?;
                    REGISTER
                }
                (false, true) => {
                    conn.execute(&unmark_registered, &pair)?;
                    DEREGISTER
                }
                _ => continue,
            };
            conn.execute(
                &enqueue,
                &[
                    patient.as_str().into(),
                    category.as_str().into(),
                    action.into(),
                    zorgnet_db::now_ms().into(),
                ],
            )?;
            queued = true;
        }
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// Sets the outbox up in a node's store: its tables, and the hook on every write. Blocking.
/// Returns the signal the hook raises when it queued something (for the delivery task).
pub fn install(store: &Store) -> Result<Arc<Notify>, StoreError> {
    store.database().migrate(MIGRATIONS)?;
    let wake = Arc::new(Notify::new());
    store.install_write_hook(Arc::new(RegistrationHook::new(wake.clone())))?;
    Ok(wake)
}

/// How full the outbox is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStatus {
    /// Entries waiting for delivery.
    pub pending: i64,
    /// Entries the hub refused for good.
    pub failed: i64,
    /// When the oldest waiting entry was queued (epoch ms).
    pub oldest_pending_ms: Option<i64>,
}

/// Reads the outbox's depth, writing nothing: the outbox's tables must be there ([`install`],
/// or a database opened with [`MIGRATIONS`] checked). Blocking.
pub fn status(db: &Database) -> Result<OutboxStatus, DbError> {
    db.with_reader(|conn| {
        let pending = conn.query("SELECT COUNT(*), MIN(enqueued_at_ms) FROM outbox", &[])?;
        let failed = conn.query("SELECT COUNT(*) FROM outbox_failed", &[])?;
        let first = pending.into_iter().next().unwrap_or_default();
        Ok(OutboxStatus {
            pending: first.first().map_or(0, SqlValue::int),
            failed: failed
                .first()
                .and_then(|r| r.first())
                .map_or(0, SqlValue::int),
            oldest_pending_ms: match first.get(1) {
                Some(SqlValue::Null) | None => None,
                Some(v) => Some(v.int()),
            },
        })
    })
}

#[derive(Debug, Clone)]
struct Entry {
    seq: i64,
    patient_id: String,
    category: String,
    action: String,
}

/// Why a delivery round stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The hub could not be reached or failed: the entries stay queued.
    #[error("{0}")]
    Hub(#[from] HubClientError),
    /// The node's own storage failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Delivers queue entries to the hub until the queue is empty; returns how many were
/// delivered or set aside. Entries go in order, in runs of one action, so a register and a
/// later deregister of one pair are never swapped.
pub async fn deliver(store: &Store, hub: &HubClient) -> Result<usize, DeliveryError> {
    let mut done = 0;
    loop {
        let db = store.database().clone();
        let entries = tokio::task::spawn_blocking(move || -> Result<Vec<Entry>, StoreError> {
            let sql = format!(
                "SELECT seq, patient_id, category, action FROM outbox ORDER BY seq LIMIT {DELIVERY_BATCH_ENTRIES}"
            );
            Ok(db
                .with_reader(|conn| conn.query(&sql, &[]))?
                .into_iter()
                .map(|mut row| Entry {
                    seq: row[0].int(),
                    patient_id: row[1].take_text(),
                    category: row[2].take_text(),
                    action: row[3].take_text(),
                })
                .collect())
        })
        .await
        .map_err(|e| StoreError::Backend(format!("outbox task failed: {e}")))??;
        let Some(first) = entries.first() else {
            return Ok(done);
        };
        let run: Vec<Entry> = entries
            .iter()
            .take_while(|e| e.action == first.action)
            .cloned()
            .collect();
        done += deliver_run(store, hub, &run).await?;
    }
}

async fn deliver_run(
    store: &Store,
    hub: &HubClient,
    run: &[Entry],
) -> Result<usize, DeliveryError> {
    let register = run[0].action == REGISTER;
    let mut patients: Vec<String> = run.iter().map(|e| e.patient_id.clone()).collect();
    patients.sort();
    patients.dedup();
    let mut people = Vec::new();
    let mut unidentified = Vec::new();
    for patient in &patients {
        match person_of(store, hub, patient).await? {
            Some(person) => people.push((patient.clone(), person)),
            None => unidentified.push(patient.clone()),
        }
    }
    let mut failed: Vec<(i64, String)> = run
        .iter()
        .filter(|e| unidentified.contains(&e.patient_id))
        .map(|e| {
            (
                e.seq,
                format!(
                    "Patient/{} has no BSN and no sédula number with a birth date",
                    e.patient_id
                ),
            )
        })
        .collect();
    if !people.is_empty() {
        let ids: Vec<PersonalId> = people.iter().map(|(_, p)| p.clone()).collect();
        let sent = async {
            let tokens = hub
                .exchange_tokens(&ids, &RecipientId::referral_index())
                .await?;
            let items: Vec<_> = people
                .iter()
                .zip(tokens)
                .map(|((patient, _), token)| {
                    let categories: Vec<String> = run
                        .iter()
                        .filter(|e| &e.patient_id == patient)
                        .map(|e| e.category.clone())
                        .collect();
                    (token, categories)
                })
                .collect();
            hub.update_registrations(&items, register).await
        }
        .await;
        match sent {
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, entries = run.len(), "the hub refused outbox entries; set aside");
                failed.extend(
                    run.iter()
                        .filter(|e| !unidentified.contains(&e.patient_id))
                        .map(|entry| (entry.seq, e.to_string())),
                );
            }
        }
    }
    let db = store.database().clone();
    let seqs: Vec<i64> = run.iter().map(|e| e.seq).collect();
    let delivered = seqs.len() - failed.len();
    tokio::task::spawn_blocking(move || {
        db.write_transaction(|conn| -> Result<(), DbError> {
            let d = conn.dialect();
            let now = zorgnet_db::now_ms();
            for (seq, reason) in &failed {
                conn.execute(
                    &format!(
                        "INSERT INTO outbox_failed (seq, patient_id, category, action, enqueued_at_ms, failed_at_ms, reason) \
                         SELECT seq, patient_id, category, action, enqueued_at_ms, {}, {} FROM outbox WHERE seq = {}",
                        d.placeholder(1),
                        d.placeholder(2),
                        d.placeholder(3)
                    ),
                    &[now.into(), reason.as_str().into(), (*seq).into()],
                )?;
            }
            for seq in &seqs {
                conn.execute(&format!("DELETE FROM outbox WHERE seq = {}", d.placeholder(1)), &[(*seq).into()])?;
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| StoreError::Backend(format!("outbox task failed: {e}")))?
    .map_err(StoreError::from)?;
    metrics::counter!("zorgnet_outbox_delivered_total").increment(delivered as u64);
    Ok(run.len())
}

/// The person behind a local Patient: the BSN, or for a patient without one a
/// zorgverificatienummer from the hub (sédula number and birth date). A deleted Patient
/// is identified by its last stored version, so its deregistrations still go out.
async fn person_of(
    store: &Store,
    hub: &HubClient,
    patient_id: &str,
) -> Result<Option<PersonalId>, DeliveryError> {
    let json = match store.read("Patient", patient_id).await? {
        ReadOutcome::Found(stored) => Some(stored.json),
        _ => {
            let history = store
                .history(
                    HistoryScope::Instance("Patient".into(), patient_id.into()),
                    None,
                    100,
                    None,
                )
                .await?;
            history.entries.into_iter().find_map(|entry| entry.json)
        }
    };
    let Some(patient) = json.and_then(|j| serde_json::from_str::<Value>(&j).ok()) else {
        return Ok(None);
    };
    Ok(hub.person_of_patient(&patient).await?)
}

/// Runs delivery until `shutdown` resolves: wakes when the hook queued something or every
/// [`IDLE_POLL_INTERVAL`], and backs off exponentially while the hub is unreachable.
pub async fn run_delivery(
    store: Store,
    hub: HubClient,
    wake: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = FIRST_RETRY_BACKOFF;
    loop {
        let wait = match deliver(&store, &hub).await {
            Ok(count) => {
                if count > 0 {
                    tracing::info!(count, "delivered outbox entries");
                }
                backoff = FIRST_RETRY_BACKOFF;
                IDLE_POLL_INTERVAL
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox delivery failed; will retry");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = wake.notified(), if backoff == FIRST_RETRY_BACKOFF => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
