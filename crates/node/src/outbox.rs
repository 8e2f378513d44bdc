//! The node's durable outbox of referral-index registrations.
//!
//! What it is: a [`WriteHook`] that, inside every write transaction, keeps track of which
//! (patient, data category) pairs this node holds data for and under which identity each is
//! registered, and queues a `register` when a pair appears and a `deregister` when its last
//! resource goes, in the same transaction as the data write; and a delivery task that sends
//! the queue to the hub's referral index in order, with retries and backoff, deleting an
//! entry only after the hub confirmed it. Registration is idempotent at the hub, so a
//! delivery repeated after a crash changes nothing: exactly once in effect. Writes never
//! wait for the hub.
//!
//! Identity: the referral index knows a person by a pseudonym of the BSN (or of the
//! zorgverificatienummer the pseudonym service derives from a sédula number and birth date),
//! so a registration made under one identity must be withdrawn under that same identity.
//! Every registered pair and every queue entry therefore names the Patient *version* whose
//! identifier it is made under, and delivery reads the identifier from that version (the
//! store's `versions` table keeps every version, also after a delete). A change of a
//! Patient's identity — BSN or sédula number (or the birth date under it) added, changed or
//! removed, or the Patient deleted — queues a `deregister` under the old version and, when
//! there is a new identity, a `register` under the new version; a resource that moves to
//! another patient moves its pairs the same way. Entries queued earlier keep the version
//! they were queued with, so a delivery that is behind still acts on the identity each
//! entry was meant for. A Patient edit that keeps the identity keeps the registered version
//! and queues nothing. Pairs of a patient without an identity (no Patient yet, or one
//! without a usable identifier) are held but not registered, until the identity appears.
//!
//! Several local Patients may name one person (duplicate records, or a BSN corrected to one
//! another Patient already has), while the hub keys a registration by person, category and
//! organisation only. Each Patient registers its own pairs (the hub takes a repeated
//! registration as one), and delivery withdraws a pair only when no other local Patient
//! naming the same person still has that category registered ([`NAMESAKES_LOOKED_AT`]).
//!
//! A Patient known by a sédula number has no identifier the rest of the network can name it
//! by: the hub derives the person's zorgverificatienummer from the sédula number and birth
//! date, keyed and one way. Delivery keeps the number it was given per Patient, so that a
//! search naming the person by it ([`patients_of_zvn`]) finds the Patient; what it names is
//! a candidate, which the access policy confirms with the hub against the Patient's current
//! identity before serving anything.
//!
//! What it is not: a general message queue, or a second store of BSNs: the tables hold
//! local ids, version numbers and derived zorgverificatienummers only; the BSN and the
//! sédula number stay in the Patient's own versions.
//!
//! Tables (component `outbox`): `outbox_holdings` (resource → patient, category),
//! `outbox_registered` (pairs the hub has been asked to hold, with the Patient version they
//! were registered under), `outbox` (the queue, in order), `outbox_failed` (entries the
//! hub refused for good, kept for the operator) and `outbox_zvn` (Patient → the
//! zorgverificatienummer its sédula number was last delivered under).

use crate::hub_client::{HubClient, HubClientError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use zorgnet_db::sql::{Conn, Dialect, SqlValue};
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_fhir::categories::DataCategory;
use zorgnet_fhir::identifiers::{BSN_SYSTEM, SEDULA_SYSTEM};
use zorgnet_fhir::search::parse_search_query;
use zorgnet_pseudonym::{PersonalId, RecipientId, Zvn};
use zorgnet_store::{Change, PersonIdentity, ReadOutcome, Store, StoreError, WriteHook};

/// The outbox's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    // Registrations and queue entries name the Patient version whose identifier they are
    // made under. Until now delivery read the Patient's latest version, so that is what
    // existing rows get; a registered pair without any Patient version was never delivered
    // (delivery set it aside), so it is dropped and registers once a Patient appears.
    Migration {
        component: "outbox",
        version: 2,
        sql: "
ALTER TABLE outbox ADD COLUMN patient_version {int};
ALTER TABLE outbox_failed ADD COLUMN patient_version {int};
ALTER TABLE outbox_registered ADD COLUMN patient_version {int};
UPDATE outbox_registered SET patient_version = (
    SELECT MAX(v.version) FROM resources r JOIN versions v ON v.rid = r.rid
    WHERE r.res_type = 'Patient' AND r.id = outbox_registered.patient_id AND v.content IS NOT NULL);
UPDATE outbox SET patient_version = (
    SELECT MAX(v.version) FROM resources r JOIN versions v ON v.rid = r.rid
    WHERE r.res_type = 'Patient' AND r.id = outbox.patient_id AND v.content IS NOT NULL);
DELETE FROM outbox_registered WHERE patient_version IS NULL",
    },
    // The zorgverificatienummer the hub derived for a Patient with a sédula number, so that a
    // search naming the person by it finds the Patient ([`patients_of_zvn`]).
    Migration {
        component: "outbox",
        version: 3,
        sql: "
CREATE TABLE outbox_zvn (
    patient_id {text} NOT NULL PRIMARY KEY,
    zvn {text} NOT NULL
);
CREATE INDEX outbox_zvn_by_zvn ON outbox_zvn (zvn)",
    },
];

/// Queue entries sent to the hub in one round.
pub const DELIVERY_BATCH_ENTRIES: usize = 500;
/// How often an idle delivery task looks at the queue even without being woken.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// First wait after a failed delivery; doubled per failure up to [`MAX_RETRY_BACKOFF`].
pub const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between delivery attempts while the hub is unreachable.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// Most local Patients naming one person that delivery looks at before withdrawing a
/// registration of that person: duplicate records of one person are a handful.
pub const NAMESAKES_LOOKED_AT: usize = 100;

const REGISTER: &str = "register";
const DEREGISTER: &str = "deregister";
const PATIENT: &str = "Patient";

/// The resource types that can belong to some data category; writes of other types (an
/// Organization) cost the outbox nothing. A Patient is looked at for its identity.
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

/// The hook's statements, in one dialect.
struct Statements {
    release: String,
    hold: String,
    still_held: String,
    registered: String,
    mark_registered: String,
    unmark_registered: String,
    enqueue: String,
    version_content: String,
    current_content: String,
}

impl Statements {
    fn new(d: Dialect) -> Statements {
        let (p1, p2, p3, p4, p5) = (
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3),
            d.placeholder(4),
            d.placeholder(5),
        );
        Statements {
            release: format!(
                "DELETE FROM outbox_holdings WHERE resource = {p1} RETURNING patient_id, category"
            ),
            hold: format!(
                "INSERT INTO outbox_holdings (resource, patient_id, category) VALUES ({p1}, {p2}, {p3}) ON CONFLICT DO NOTHING"
            ),
            still_held: format!(
                "SELECT 1 FROM outbox_holdings WHERE patient_id = {p1} AND category = {p2} LIMIT 1"
            ),
            registered: format!(
                "SELECT category, patient_version FROM outbox_registered WHERE patient_id = {p1}"
            ),
            mark_registered: format!(
                "INSERT INTO outbox_registered (patient_id, category, patient_version) VALUES ({p1}, {p2}, {p3})"
            ),
            unmark_registered: format!(
                "DELETE FROM outbox_registered WHERE patient_id = {p1} AND category = {p2}"
            ),
            enqueue: format!(
                "INSERT INTO outbox (patient_id, category, action, patient_version, enqueued_at_ms) VALUES ({p1}, {p2}, {p3}, {p4}, {p5})"
            ),
            version_content: format!(
                "SELECT v.content FROM resources r JOIN versions v ON v.rid = r.rid \
                 WHERE r.res_type = '{PATIENT}' AND r.id = {p1} AND v.version = {p2}"
            ),
            current_content: format!(
                "SELECT r.version, v.content FROM resources r JOIN versions v ON v.seq = r.current_seq \
                 WHERE r.res_type = '{PATIENT}' AND r.id = {p1} AND r.deleted = 0"
            ),
        }
    }
}

/// One queue entry the hook is about to write: a pair and the Patient version whose
/// identity it acts under.
struct Queued {
    patient: String,
    category: String,
    version: i64,
}

/// What a transaction changes about one patient's registrations.
#[derive(Default)]
struct Plan {
    deregister: Vec<Queued>,
    register: Vec<Queued>,
}

impl WriteHook for RegistrationHook {
    fn after_write(&self, conn: &mut dyn Conn, changes: &[Change]) -> Result<(), StoreError> {
        let sql = Statements::new(conn.dialect());
        let mut touched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut reidentified: BTreeMap<String, (i64, Option<PersonIdentity>)> = BTreeMap::new();
        for change in changes {
            if change.resource_type == PATIENT {
                // A later write of the same Patient in the transaction supersedes an earlier.
                let identity = change.current.as_ref().and_then(|c| c.identity.clone());
                reidentified.insert(change.id.clone(), (change.version, identity));
                continue;
            }
            if !may_have_categories(&change.resource_type) {
                continue;
            }
            let resource = format!("{}/{}", change.resource_type, change.id);
            for mut row in conn.query(&sql.release, &[resource.as_str().into()])? {
                touched
                    .entry(row[0].take_text())
                    .or_default()
                    .insert(row[1].take_text());
            }
            let Some(current) = &change.current else {
                continue;
            };
            for patient in &current.patients {
                for category in &current.categories {
                    conn.execute(
                        &sql.hold,
                        &[
                            resource.as_str().into(),
                            patient.as_str().into(),
                            category.code().into(),
                        ],
                    )?;
                    touched
                        .entry(patient.clone())
                        .or_default()
                        .insert(category.code().to_string());
                }
            }
        }
        let patients: BTreeSet<&String> = touched.keys().chain(reidentified.keys()).collect();
        let mut plan = Plan::default();
        for patient in patients {
            reconcile(
                conn,
                &sql,
                patient,
                touched.get(patient),
                reidentified.get(patient),
                &mut plan,
            )?;
        }
        // Every deregistration of the transaction before its registrations: a pair that
        // changes identity is withdrawn under the old one before it appears under the new,
        // and delivery sends each action's run in one request.
        let now = zorgnet_db::now_ms();
        let queued = !plan.deregister.is_empty() || !plan.register.is_empty();
        for (action, entries) in [(DEREGISTER, plan.deregister), (REGISTER, plan.register)] {
            for entry in entries {
                conn.execute(
                    &sql.enqueue,
                    &[
                        entry.patient.into(),
                        entry.category.into(),
                        action.into(),
                        entry.version.into(),
                        now.into(),
                    ],
                )?;
            }
        }
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// Brings one patient's registered pairs in line with what the node holds and who the
/// Patient now names. `touched`: the categories this transaction's resources added or took
/// away; `reidentified`: the Patient's last version in this transaction and its identity,
/// when the transaction wrote the Patient.
fn reconcile(
    conn: &mut dyn Conn,
    sql: &Statements,
    patient: &str,
    touched: Option<&BTreeSet<String>>,
    reidentified: Option<&(i64, Option<PersonIdentity>)>,
    plan: &mut Plan,
) -> Result<(), StoreError> {
    let registered: BTreeMap<String, i64> = conn
        .query(&sql.registered, &[patient.into()])?
        .into_iter()
        .map(|mut row| (row[0].take_text(), row[1].int()))
        .collect();
    // Registered versions that name nobody were never delivered (set aside as failed), so
    // there is nothing at the hub to withdraw.
    let mut undeliverable: BTreeSet<i64> = BTreeSet::new();
    let (target, candidates): (Option<i64>, BTreeSet<String>) = match reidentified {
        Some((version, identity)) => {
            let mut kept = None;
            for registered_version in registered.values().collect::<BTreeSet<_>>() {
                let named = identity_at(conn, sql, patient, *registered_version)?;
                if named.is_none() {
                    undeliverable.insert(*registered_version);
                } else if named.as_ref() == identity.as_ref() {
                    kept = Some(*registered_version);
                }
            }
            let target = identity.as_ref().map(|_| kept.unwrap_or(*version));
            let mut candidates: BTreeSet<String> = registered.keys().cloned().collect();
            if target.is_some() {
                candidates.extend(DataCategory::ALL.map(|c| c.code().to_string()));
            }
            (target, candidates)
        }
        None => {
            let target = match registered.values().max() {
                Some(version) => Some(*version),
                None => current_identity_version(conn, sql, patient)?,
            };
            (target, touched.cloned().unwrap_or_default())
        }
    };
    for category in candidates {
        let pair = [SqlValue::from(patient), SqlValue::from(category.as_str())];
        let wanted = match target {
            Some(version) if !conn.query(&sql.still_held, &pair)?.is_empty() => Some(version),
            _ => None,
        };
        let have = registered.get(&category).copied();
        if have == wanted {
            continue;
        }
        if let Some(version) = have {
            conn.execute(&sql.unmark_registered, &pair)?;
            if !undeliverable.contains(&version) {
                plan.deregister.push(Queued {
                    patient: patient.to_string(),
                    category: category.clone(),
                    version,
                });
            }
        }
        if let Some(version) = wanted {
            conn.execute(
                &sql.mark_registered,
                &[patient.into(), category.as_str().into(), version.into()],
            )?;
            plan.register.push(Queued {
                patient: patient.to_string(),
                category,
                version,
            });
        }
    }
    Ok(())
}

/// The person a stored Patient version names.
fn identity_at(
    conn: &mut dyn Conn,
    sql: &Statements,
    patient: &str,
    version: i64,
) -> Result<Option<PersonIdentity>, StoreError> {
    let mut rows = conn.query(&sql.version_content, &[patient.into(), version.into()])?;
    Ok(rows
        .pop()
        .and_then(|mut row| identity_in(&row[0].take_text())))
}

/// The current Patient version, when it exists and names a person.
fn current_identity_version(
    conn: &mut dyn Conn,
    sql: &Statements,
    patient: &str,
) -> Result<Option<i64>, StoreError> {
    let mut rows = conn.query(&sql.current_content, &[patient.into()])?;
    Ok(rows
        .pop()
        .and_then(|mut row| identity_in(&row[1].take_text()).map(|_| row[0].int())))
}

fn identity_in(json: &str) -> Option<PersonIdentity> {
    serde_json::from_str::<Value>(json)
        .ok()
        .as_ref()
        .and_then(PersonIdentity::of_patient)
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
    /// The Patient version whose identifier the entry acts under; `None` only for an entry
    /// queued before versions were recorded whose Patient never existed.
    patient_version: Option<i64>,
}

impl Entry {
    /// Who the entry is about: the patient as one of its versions named them.
    fn named(&self) -> (&str, Option<i64>) {
        (&self.patient_id, self.patient_version)
    }
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
                "SELECT seq, patient_id, category, action, patient_version FROM outbox ORDER BY seq LIMIT {DELIVERY_BATCH_ENTRIES}"
            );
            Ok(db
                .with_reader(|conn| conn.query(&sql, &[]))?
                .into_iter()
                .map(|mut row| Entry {
                    seq: row[0].int(),
                    patient_id: row[1].take_text(),
                    category: row[2].take_text(),
                    action: row[3].take_text(),
                    patient_version: match row[4] {
                        SqlValue::Null => None,
                        ref v => Some(v.int()),
                    },
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
    let named: BTreeSet<(&str, Option<i64>)> = run.iter().map(Entry::named).collect();
    let mut people = Vec::new();
    let mut unidentified = BTreeSet::new();
    // Withdrawals of a person's category that another local Patient of the same person still
    // holds: done without asking the hub, which would withdraw that Patient's data too.
    let mut still_held: BTreeSet<i64> = BTreeSet::new();
    for (patient, version) in named {
        let Some(identity) = identity_of_version(store, patient, version).await? else {
            unidentified.insert((patient, version));
            continue;
        };
        if !register {
            let kept = registered_by_namesakes(store, patient, &identity).await?;
            still_held.extend(
                run.iter()
                    .filter(|e| e.named() == (patient, version) && kept.contains(&e.category))
                    .map(|e| e.seq),
            );
            if run
                .iter()
                .filter(|e| e.named() == (patient, version))
                .all(|e| still_held.contains(&e.seq))
            {
                continue;
            }
        }
        match crate::hub_client::person_of(hub, &identity).await? {
            Some(person) => people.push(((patient, version), person)),
            None => {
                unidentified.insert((patient, version));
            }
        }
    }
    let mut failed: Vec<(i64, String)> = run
        .iter()
        .filter(|e| unidentified.contains(&e.named()))
        .map(|e| {
            (
                e.seq,
                format!(
                    "Patient/{} version {} has no BSN and no sédula number with a birth date",
                    e.patient_id,
                    e.patient_version
                        .map_or_else(|| "(none)".to_string(), |v| v.to_string())
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
                .map(|((named, _), token)| {
                    let categories: Vec<String> = run
                        .iter()
                        .filter(|e| e.named() == *named && !still_held.contains(&e.seq))
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
                        .filter(|e| !unidentified.contains(&e.named()))
                        .map(|entry| (entry.seq, e.to_string())),
                );
            }
        }
    }
    let db = store.database().clone();
    let seqs: Vec<i64> = run.iter().map(|e| e.seq).collect();
    let delivered = seqs.len() - failed.len();
    let zvns: Vec<(String, String)> = people
        .iter()
        .filter_map(|((patient, _), person)| match person {
            PersonalId::Zvn(zvn) => Some((patient.to_string(), zvn.as_str().to_string())),
            PersonalId::Bsn(_) => None,
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        db.write_transaction(|conn| -> Result<(), DbError> {
            let d = conn.dialect();
            let now = zorgnet_db::now_ms();
            for (patient, zvn) in &zvns {
                conn.execute(
                    &format!(
                        "DELETE FROM outbox_zvn WHERE patient_id = {}",
                        d.placeholder(1)
                    ),
                    &[patient.as_str().into()],
                )?;
                conn.execute(
                    &format!(
                        "INSERT INTO outbox_zvn (patient_id, zvn) VALUES ({}, {})",
                        d.placeholder(1),
                        d.placeholder(2)
                    ),
                    &[patient.as_str().into(), zvn.as_str().into()],
                )?;
            }
            for (seq, reason) in &failed {
                conn.execute(
                    &format!(
                        "INSERT INTO outbox_failed (seq, patient_id, category, action, patient_version, enqueued_at_ms, failed_at_ms, reason) \
                         SELECT seq, patient_id, category, action, patient_version, enqueued_at_ms, {}, {} FROM outbox WHERE seq = {}",
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

/// The identity a Patient version names (the hub turns it into the person: the BSN, or a
/// zorgverificatienummer for a sédula number and birth date). Versions stay stored after
/// the Patient changes or is deleted, so an entry always acts on the identity it was queued
/// under.
async fn identity_of_version(
    store: &Store,
    patient_id: &str,
    version: Option<i64>,
) -> Result<Option<PersonIdentity>, StoreError> {
    let Some(version) = version else {
        return Ok(None);
    };
    let ReadOutcome::Found(stored) = store.vread(PATIENT, patient_id, version).await? else {
        return Ok(None);
    };
    Ok(identity_in(&stored.json))
}

/// The categories that other local Patients now naming `identity` have registered: the
/// hub holds them for the person as long as any of them does. A Patient's registered pairs
/// always name its current identity (the hook moves them in the transaction that changes
/// it), so the Patients to look at are those whose current version names the person.
async fn registered_by_namesakes(
    store: &Store,
    patient_id: &str,
    identity: &PersonIdentity,
) -> Result<BTreeSet<String>, StoreError> {
    let (system, value) = match identity {
        PersonIdentity::Bsn(bsn) => (BSN_SYSTEM, bsn),
        PersonIdentity::Sedula { number, .. } => (SEDULA_SYSTEM, number),
    };
    let pairs = [
        (
            "identifier".to_string(),
            format!("{system}|{}", search_escaped(value)),
        ),
        ("_count".to_string(), NAMESAKES_LOOKED_AT.to_string()),
    ];
    let query = parse_search_query(&store.registry(), Some(PATIENT), &pairs)
        .map_err(|issue| StoreError::Invalid(issue.diagnostics))?;
    let namesakes: Vec<String> = store
        .search(query)
        .await?
        .matches
        .into_iter()
        .filter(|s| s.id != patient_id && identity_in(&s.json).as_ref() == Some(identity))
        .map(|s| s.id)
        .collect();
    if namesakes.is_empty() {
        return Ok(BTreeSet::new());
    }
    let db = store.database().clone();
    tokio::task::spawn_blocking(move || {
        db.with_reader(|conn| {
            let sql = format!(
                "SELECT category FROM outbox_registered WHERE patient_id = {}",
                conn.dialect().placeholder(1)
            );
            let mut categories = BTreeSet::new();
            for patient in &namesakes {
                for mut row in conn.query(&sql, &[patient.as_str().into()])? {
                    categories.insert(row[0].take_text());
                }
            }
            Ok::<_, DbError>(categories)
        })
    })
    .await
    .map_err(|e| StoreError::Backend(format!("outbox task failed: {e}")))?
    .map_err(StoreError::from)
}

/// A value as a token search takes it literally (FHIR search escaping).
fn search_escaped(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '$' | '|') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The local Patients whose sédula number was last delivered as the person with `zvn`, at
/// most `limit`: candidates, whose current identity the caller still has to confirm.
pub async fn patients_of_zvn(
    store: &Store,
    zvn: &Zvn,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let db = store.database().clone();
    let zvn = zvn.as_str().to_string();
    tokio::task::spawn_blocking(move || {
        db.with_reader(|conn| {
            let sql = format!(
                "SELECT patient_id FROM outbox_zvn WHERE zvn = {} ORDER BY patient_id LIMIT {limit}",
                conn.dialect().placeholder(1)
            );
            Ok::<_, DbError>(
                conn.query(&sql, &[zvn.as_str().into()])?
                    .into_iter()
                    .map(|mut row| row[0].take_text())
                    .collect(),
            )
        })
    })
    .await
    .map_err(|e| StoreError::Backend(format!("outbox task failed: {e}")))?
    .map_err(StoreError::from)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zorgnet_fhir::search::SearchRegistry;
    use zorgnet_store::WriteOp;

    const BSN_A: &str = "123456782";
    const BSN_B: &str = "111222333";
    const BSN_C: &str = "999999990";

    /// A queue entry as the tests compare it: action, patient, category, Patient version.
    type Queued = (String, String, String, i64);

    /// Runs `case` against a fresh store with the outbox installed, on SQLite and, when
    /// `ZORGNET_TEST_POSTGRES_URL` is set, on PostgreSQL. The stores are dropped outside
    /// the runtime: a PostgreSQL client may not be dropped on an async worker.
    fn on_both_backends<F: std::future::Future<Output = ()>>(case: impl Fn(Store) -> F) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut stores = vec![
            Store::open_sqlite(&dir.path().join("node.sqlite"), SearchRegistry::r4()).unwrap(),
        ];
        match std::env::var("ZORGNET_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => {
                let schema = format!(
                    "zorgnet_test_outbox_{}_{}",
                    std::process::id(),
                    uuid::Uuid::now_v7().simple()
                );
                let url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
                stores.push(Store::open_postgres(&url, SearchRegistry::r4()).unwrap());
            }
            _ => eprintln!(
                "\n*** SKIPPED: PostgreSQL half of this test (ZORGNET_TEST_POSTGRES_URL is not set) ***\n"
            ),
        }
        for store in &stores {
            install(store).unwrap();
            runtime.block_on(case(store.clone()));
        }
        drop(runtime);
        drop(stores);
    }

    fn patient(id: &str, bsn: Option<&str>) -> Value {
        let mut patient =
            json!({"resourceType": "Patient", "id": id, "name": [{"family": "Jansen"}]});
        if let Some(bsn) = bsn {
            patient["identifier"] =
                json!([{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}]);
        }
        patient
    }

    fn sedula_patient(id: &str, sedula: &str, birth_date: &str) -> Value {
        json!({"resourceType": "Patient", "id": id, "birthDate": birth_date,
            "identifier": [{"system": "http://zorgnet.nl/fhir/NamingSystem/sedula", "value": sedula}]})
    }

    fn medication(id: &str, patient_id: &str) -> Value {
        json!({"resourceType": "MedicationStatement", "id": id, "status": "active",
            "medicationCodeableConcept": {"text": "metformine 500 mg"},
            "subject": {"reference": format!("Patient/{patient_id}")}})
    }

    fn put(resource: Value) -> WriteOp {
        WriteOp::Update {
            id: resource["id"].as_str().unwrap().to_string(),
            resource,
            if_match: None,
        }
    }

    async fn write(store: &Store, resource: Value) {
        store.write(put(resource)).await.unwrap();
    }

    async fn delete(store: &Store, resource_type: &str, id: &str) {
        store
            .write(WriteOp::Delete {
                resource_type: resource_type.into(),
                id: id.into(),
            })
            .await
            .unwrap();
    }

    async fn query(store: &Store, sql: &'static str) -> Vec<Vec<SqlValue>> {
        let db = store.database().clone();
        tokio::task::spawn_blocking(move || db.with_reader(|conn| conn.query(sql, &[])))
            .await
            .unwrap()
            .unwrap()
    }

    /// The queue, in order, and emptied, so a test can look at what each write added.
    async fn take_queue(store: &Store) -> Vec<Queued> {
        let queue = query(
            store,
            "SELECT action, patient_id, category, patient_version FROM outbox ORDER BY seq",
        )
        .await
        .into_iter()
        .map(|mut row| {
            (
                row[0].take_text(),
                row[1].take_text(),
                row[2].take_text(),
                row[3].int(),
            )
        })
        .collect();
        let db = store.database().clone();
        tokio::task::spawn_blocking(move || {
            db.write_transaction(|conn| conn.execute("DELETE FROM outbox", &[]))
        })
        .await
        .unwrap()
        .unwrap();
        queue
    }

    /// The entries a MedicationStatement's two categories give one action.
    fn both(action: &str, patient: &str, version: i64) -> Vec<Queued> {
        ["medication", "patient-summary"]
            .into_iter()
            .map(|c| (action.into(), patient.into(), c.into(), version))
            .collect()
    }

    fn then(mut first: Vec<Queued>, second: Vec<Queued>) -> Vec<Queued> {
        first.extend(second);
        first
    }

    #[test]
    fn a_bsn_change_deregisters_under_the_old_version_and_registers_under_the_new() {
        on_both_backends(|store| async move {
            write(&store, patient("p", Some(BSN_A))).await;
            write(&store, medication("m", "p")).await;
            assert_eq!(take_queue(&store).await, both(REGISTER, "p", 1));

            write(&store, patient("p", Some(BSN_B))).await;
            assert_eq!(
                take_queue(&store).await,
                then(both(DEREGISTER, "p", 1), both(REGISTER, "p", 2))
            );
            let registered = query(
                &store,
                "SELECT category, patient_version FROM outbox_registered ORDER BY category",
            )
            .await;
            assert_eq!(
                registered,
                vec![
                    vec![SqlValue::Text("medication".into()), SqlValue::Int(2)],
                    vec![SqlValue::Text("patient-summary".into()), SqlValue::Int(2)],
                ]
            );
        });
    }

    #[test]
    fn changes_before_delivery_queue_each_step_in_order() {
        on_both_backends(|store| async move {
            write(&store, patient("p", Some(BSN_A))).await;
            write(&store, medication("m", "p")).await;
            write(&store, patient("p", Some(BSN_B))).await;
            write(&store, patient("p", Some(BSN_C))).await;
            assert_eq!(
                take_queue(&store).await,
                [
                    both(REGISTER, "p", 1),
                    both(DEREGISTER, "p", 1),
                    both(REGISTER, "p", 2),
                    both(DEREGISTER, "p", 2),
                    both(REGISTER, "p", 3),
                ]
                .concat()
            );
            // A → none → A: withdrawn, nothing registered while there is no identity, then
            // registered again under the version that brought the BSN back.
            write(&store, patient("p", None)).await;
            assert_eq!(take_queue(&store).await, both(DEREGISTER, "p", 3));
            write(&store, medication("m2", "p")).await;
            assert_eq!(take_queue(&store).await, vec![]);
            write(&store, patient("p", Some(BSN_C))).await;
            assert_eq!(take_queue(&store).await, both(REGISTER, "p", 5));
        });
    }

    #[test]
    fn an_edit_that_keeps_the_identity_queues_nothing_and_keeps_the_registered_version() {
        on_both_backends(|store| async move {
            write(&store, patient("p", Some(BSN_A))).await;
            write(&store, medication("m", "p")).await;
            take_queue(&store).await;
            let mut renamed = patient("p", Some(BSN_A));
            renamed["name"] = json!([{"family": "de Vries"}]);
            write(&store, renamed).await;
            assert_eq!(take_queue(&store).await, vec![]);
            write(&store, patient("p", Some(BSN_B))).await;
            assert_eq!(
                take_queue(&store).await,
                then(both(DEREGISTER, "p", 1), both(REGISTER, "p", 3))
            );
        });
    }

    #[test]
    fn a_patient_created_after_its_resources_registers_when_its_identity_appears() {
        on_both_backends(|store| async move {
            write(&store, medication("m", "p")).await;
            assert_eq!(take_queue(&store).await, vec![]);
            write(&store, patient("p", None)).await;
            assert_eq!(take_queue(&store).await, vec![]);
            write(&store, patient("p", Some(BSN_A))).await;
            assert_eq!(take_queue(&store).await, both(REGISTER, "p", 2));
            delete(&store, "MedicationStatement", "m").await;
            assert_eq!(take_queue(&store).await, both(DEREGISTER, "p", 2));
        });
    }

    #[test]
    fn a_deleted_patient_deregisters_and_registers_again_when_recreated() {
        on_both_backends(|store| async move {
            write(&store, patient("p", Some(BSN_A))).await;
            write(&store, medication("m", "p")).await;
            take_queue(&store).await;
            delete(&store, "Patient", "p").await;
            assert_eq!(take_queue(&store).await, both(DEREGISTER, "p", 1));
            write(&store, patient("p", Some(BSN_A))).await;
            assert_eq!(take_queue(&store).await, both(REGISTER, "p", 3));
        });
    }

    #[test]
    fn a_resource_moved_to_another_patient_moves_its_registrations() {
        on_both_backends(|store| async move {
            write(&store, patient("p1", Some(BSN_A))).await;
            write(&store, patient("p2", Some(BSN_B))).await;
            write(&store, medication("m", "p1")).await;
            take_queue(&store).await;
            write(&store, medication("m", "p2")).await;
            assert_eq!(
                take_queue(&store).await,
                then(both(DEREGISTER, "p1", 1), both(REGISTER, "p2", 1))
            );
        });
    }

    #[test]
    fn a_sedula_or_birth_date_change_is_an_identity_change() {
        on_both_backends(|store| async move {
            write(&store, sedula_patient("p", "196104120123", "1961-04-12")).await;
            write(&store, medication("m", "p")).await;
            assert_eq!(take_queue(&store).await, both(REGISTER, "p", 1));
            write(&store, sedula_patient("p", "196104120123", "1961-04-13")).await;
            assert_eq!(
                take_queue(&store).await,
                then(both(DEREGISTER, "p", 1), both(REGISTER, "p", 2))
            );
            // A BSN outranks the sédula number: another identity.
            let mut with_bsn = sedula_patient("p", "196104120123", "1961-04-13");
            with_bsn["identifier"]
                .as_array_mut()
                .unwrap()
                .push(json!({"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN_A}));
            write(&store, with_bsn).await;
            assert_eq!(
                take_queue(&store).await,
                then(both(DEREGISTER, "p", 2), both(REGISTER, "p", 3))
            );
        });
    }

    #[test]
    fn one_transaction_changing_patient_and_resources_deregisters_first() {
        on_both_backends(|store| async move {
            write(&store, patient("p", Some(BSN_A))).await;
            write(&store, medication("m", "p")).await;
            take_queue(&store).await;
            let lab = json!({"resourceType": "Observation", "id": "o", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"text": "HbA1c"}, "subject": {"reference": "Patient/p"}});
            store
                .transaction(vec![put(lab), put(patient("p", Some(BSN_B)))])
                .await
                .unwrap();
            assert_eq!(
                take_queue(&store).await,
                vec![
                    (DEREGISTER.into(), "p".into(), "medication".into(), 1),
                    (DEREGISTER.into(), "p".into(), "patient-summary".into(), 1),
                    (REGISTER.into(), "p".into(), "lab-results".into(), 2),
                    (REGISTER.into(), "p".into(), "medication".into(), 2),
                    (REGISTER.into(), "p".into(), "patient-summary".into(), 2),
                ]
            );
        });
    }

    #[test]
    fn an_import_queues_like_a_write() {
        on_both_backends(|store| async move {
            let mut batch = store.import_batch();
            batch.push(medication("m", "p")).unwrap();
            batch.push(patient("p", Some(BSN_A))).unwrap();
            store.import(batch).await.unwrap();
            assert_eq!(take_queue(&store).await, both(REGISTER, "p", 1));
            let mut batch = store.import_batch();
            batch.push(patient("p", Some(BSN_B))).unwrap();
            store.import(batch).await.unwrap();
            assert_eq!(
                take_queue(&store).await,
                then(both(DEREGISTER, "p", 1), both(REGISTER, "p", 2))
            );
        });
    }

    #[test]
    fn an_outbox_from_before_versions_upgrades() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_sqlite(&dir.path().join("node.sqlite"), SearchRegistry::r4()).unwrap();
        store.database().migrate(&MIGRATIONS[..1]).unwrap();
        runtime.block_on(async {
            write(&store, patient("p", Some(BSN_A))).await;
            let mut renamed = patient("p", Some(BSN_A));
            renamed["name"] = json!([{"family": "de Vries"}]);
            write(&store, renamed).await;
            write(&store, medication("m", "p")).await;
        });
        store
            .database()
            .write_transaction(|conn| -> Result<(), DbError> {
                for sql in [
                    "INSERT INTO outbox_holdings VALUES ('MedicationStatement/m', 'p', 'medication')",
                    "INSERT INTO outbox_registered VALUES ('p', 'medication')",
                    "INSERT INTO outbox_registered VALUES ('ghost', 'medication')",
                    "INSERT INTO outbox (patient_id, category, action, enqueued_at_ms) VALUES ('p', 'medication', 'register', 1)",
                ] {
                    conn.execute(sql, &[])?;
                }
                Ok(())
            })
            .unwrap();
        install(&store).unwrap();
        runtime.block_on(async {
            let registered = query(
                &store,
                "SELECT patient_id, patient_version FROM outbox_registered",
            )
            .await;
            assert_eq!(
                registered,
                vec![vec![SqlValue::Text("p".into()), SqlValue::Int(2)]]
            );
            assert_eq!(
                take_queue(&store).await,
                vec![(REGISTER.into(), "p".into(), "medication".into(), 2)]
            );
            write(&store, patient("p", Some(BSN_B))).await;
            assert_eq!(
                take_queue(&store).await,
                vec![
                    (DEREGISTER.into(), "p".into(), "medication".into(), 2),
                    (REGISTER.into(), "p".into(), "medication".into(), 3),
                ]
            );
        });
    }
}
