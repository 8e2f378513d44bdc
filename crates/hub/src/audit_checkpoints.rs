//! The witness of the nodes' access logs (`/audit/checkpoints`): every organisation publishes
//! the signed checkpoints of its node's access log here, and the hub keeps them all, so that
//! a node cannot show a citizen a history other than the one it published.
//!
//! A publication carries a checkpoint (the log's size, Merkle root and chain head, signed with
//! Ed25519 by the node; see `zorgnet_audit::Checkpoint`), the node's verifying key, and an
//! RFC 6962 consistency proof from the latest checkpoint the hub holds of that log (the node
//! asks for it first: `GET /audit/checkpoints/{ura}/latest`). The hub checks the signature
//! and the proof against what it holds and keeps the checkpoint, or refuses it with a 409
//! when it does not extend the history: a smaller log, another root at the same size, a proof
//! that does not hold, or another key. That is how a node that rewrote its log and publishes
//! again is caught. Each refusal of a correctly signed checkpoint is kept as a *conflict*
//! (two checkpoints signed by one key that no single history can explain are proof of the
//! rewrite, whoever asks), counted in `zorgnet_hub_audit_inconsistent_checkpoints_total` and
//! logged at WARN.
//!
//! The verifying key is pinned at the first publication (trust on first use): a node makes its
//! checkpoint key itself at first start, and the organisation's credentials (its certificate
//! or key, as for everything it registers) already authenticate that publication. From then
//! on only checkpoints signed with that key are accepted, so neither the organisation nor
//! anyone holding its credentials later can restart the history under another key unnoticed.
//!
//! Who may do what: an organisation publishes only for its own URA; anyone authenticated reads
//! every log's history and conflicts (checkpoints hold no patient data; citizens' portals check
//! the nodes' proofs against them).
//! What it is not: the log itself (the nodes keep their records), nor a judge of what a node
//! recorded.
//!
//! Tables (component `audit_checkpoints`): `audit_checkpoint_keys` (the pinned key per URA),
//! `audit_published_checkpoints` (every accepted checkpoint), `audit_checkpoint_conflicts`
//! (every refused, correctly signed one).

use crate::HubState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::registry::check_ura;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zorgnet_audit::{Checkpoint, CheckpointJson, Hash, VerifyingKey, check_consistency};
use zorgnet_db::sql::{Conn, Row, SqlValue};
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_fhir::datetime::format_instant;

/// The witness's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "audit_checkpoints",
    version: 1,
    sql: "
CREATE TABLE audit_checkpoint_keys (
    ura {text} NOT NULL PRIMARY KEY,
    verifying_key {blob} NOT NULL,
    pinned_at_ms {int} NOT NULL
);
CREATE TABLE audit_published_checkpoints (
    ura {text} NOT NULL,
    size {int} NOT NULL,
    root {blob} NOT NULL,
    chain {blob} NOT NULL,
    signed_ms {int} NOT NULL,
    signature {blob} NOT NULL,
    received_at_ms {int} NOT NULL,
    PRIMARY KEY (ura, size)
);
CREATE TABLE audit_checkpoint_conflicts (
    conflict_id {id},
    ura {text} NOT NULL,
    reason {text} NOT NULL,
    detail {text} NOT NULL,
    verifying_key {blob} NOT NULL,
    size {int} NOT NULL,
    root {blob} NOT NULL,
    chain {blob} NOT NULL,
    signed_ms {int} NOT NULL,
    signature {blob} NOT NULL,
    received_at_ms {int} NOT NULL
);
CREATE INDEX audit_checkpoint_conflicts_by_ura ON audit_checkpoint_conflicts (ura, conflict_id)",
}];

/// Most checkpoints (or conflicts) one listing page holds.
pub const MAX_LIST_PAGE: usize = 1_000;
/// Most hashes a consistency proof may hold: one between trees of up to 2⁶⁴ records needs at
/// most two per level.
pub const MAX_PROOF_HASHES: usize = 2 * 64;
/// Bytes of an Ed25519 verifying key.
const KEY_BYTES: usize = 32;
/// The PostgreSQL advisory-lock namespace that serialises publications for one URA across hub
/// processes (distinct from every other namespace in the workspace).
const PUBLICATION_LOCK_NAMESPACE: i32 = 727_276;

const CHECKPOINT_COLUMNS: &str = "size, root, chain, signed_ms, signature, received_at_ms";

/// The witness's routes, under `/audit/checkpoints`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route("/{ura}", get(list).post(publish))
        .route("/{ura}/latest", get(latest))
        .route("/{ura}/conflicts", get(conflicts))
}

/// The checkpoint `json` names, or a 400 naming the malformed field.
fn parsed(json: &CheckpointJson) -> Result<Checkpoint, ApiError> {
    json.parse()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A request to keep a checkpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publication {
    /// The signed checkpoint.
    pub checkpoint: CheckpointJson,
    /// The Ed25519 key that verifies it (base64 of its 32 bytes).
    pub key: String,
    /// The size of the hub's latest checkpoint of this log the proof starts from; absent at
    /// the first publication.
    pub previous_size: Option<u64>,
    /// The consistency proof from that checkpoint to this one (base64 hashes).
    #[serde(default)]
    pub proof: Vec<String>,
}

/// A checkpoint the hub keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedCheckpoint {
    /// The checkpoint as signed.
    #[serde(flatten)]
    pub checkpoint: CheckpointJson,
    /// When the hub accepted it.
    pub received_at: String,
}

/// A page of one log's history.
#[derive(Debug, Serialize, Deserialize)]
pub struct History {
    /// Whose log.
    pub ura: String,
    /// The pinned verifying key (base64).
    pub key: String,
    /// Checkpoints, smallest first.
    pub checkpoints: Vec<PublishedCheckpoint>,
    /// `after` for the next page, when there may be one.
    pub next: Option<u64>,
}

/// A refused, correctly signed checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct Conflict {
    /// Its number.
    pub id: i64,
    /// Why it was refused: `smaller`, `fork`, `proof` or `key`.
    pub reason: String,
    /// In words.
    pub detail: String,
    /// The key it is signed with (base64).
    pub key: String,
    /// The checkpoint as signed.
    pub checkpoint: CheckpointJson,
    /// When it was refused.
    pub received_at: String,
}

/// A page of one log's conflicts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Conflicts {
    /// Whose log.
    pub ura: String,
    /// Conflicts, oldest first.
    pub conflicts: Vec<Conflict>,
    /// `after` for the next page, when there may be one.
    pub next: Option<i64>,
}

/// A listing page request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The last size (or conflict id) of the previous page.
    pub after: Option<i64>,
    /// Page size, at most [`MAX_LIST_PAGE`].
    pub limit: Option<usize>,
}

/// Why a checkpoint does not extend the history the hub holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconsistency {
    /// Fewer records than a checkpoint already kept: the log lost records.
    Smaller,
    /// The size of a kept checkpoint, but another root or chain: the log was rewritten.
    Fork,
    /// The consistency proof from the latest kept checkpoint does not hold.
    Proof,
    /// Signed with another key than the pinned one.
    Key,
}

impl Inconsistency {
    /// The reason's code, in the conflicts and the metric's label.
    pub fn code(self) -> &'static str {
        match self {
            Inconsistency::Smaller => "smaller",
            Inconsistency::Fork => "fork",
            Inconsistency::Proof => "proof",
            Inconsistency::Key => "key",
        }
    }
}

/// What became of a publication.
enum Outcome {
    /// Kept.
    Kept(PublishedCheckpoint),
    /// The hub holds this checkpoint already.
    Held(PublishedCheckpoint),
    /// The proof starts from another checkpoint than the latest (another publication came
    /// first): ask again.
    Stale { latest: u64, sent: Option<u64> },
    /// Refused and kept as a conflict.
    Inconsistent {
        reason: Inconsistency,
        detail: String,
    },
}

/// A checked publication, ready for storage.
struct Checked {
    ura: String,
    checkpoint: Checkpoint,
    key: [u8; KEY_BYTES],
    previous_size: Option<u64>,
    proof: Vec<Hash>,
}

async fn publish(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
    body: Result<Json<Publication>, JsonRejection>,
) -> Result<(StatusCode, Json<PublishedCheckpoint>), ApiError> {
    check_ura(&ura)?;
    let own = caller.organisation()?;
    if own != ura {
        return Err(ApiError::forbidden(format!(
            "an organisation publishes only its own access log's checkpoints; you are {own}"
        )));
    }
    let Json(publication) = body?;
    let checked = check(ura, publication)?;
    let db = state.db.clone();
    let outcome = crate::blocking(move || keep(&db, checked)).await?;
    match outcome {
        Outcome::Kept(kept) => {
            metrics::counter!("zorgnet_hub_audit_checkpoints_total").increment(1);
            Ok((StatusCode::CREATED, Json(kept)))
        }
        Outcome::Held(held) => Ok((StatusCode::OK, Json(held))),
        Outcome::Stale { latest, sent } => Err(ApiError::conflict(format!(
            "the proof starts from {}, but the latest checkpoint the hub holds of this log has \
             size {latest}: prove consistency from that one",
            sent.map_or("no checkpoint".to_string(), |size| format!("size {size}"))
        ))),
        Outcome::Inconsistent { reason, detail } => {
            metrics::counter!(
                "zorgnet_hub_audit_inconsistent_checkpoints_total",
                "reason" => reason.code()
            )
            .increment(1);
            tracing::warn!(
                ura = %own,
                reason = reason.code(),
                "refused an access log checkpoint that does not extend the published history"
            );
            Err(ApiError::conflict(detail))
        }
    }
}

/// Checks a publication's form and signature (a 400 or 422 when they do not hold).
fn check(ura: String, publication: Publication) -> Result<Checked, ApiError> {
    let checkpoint = parsed(&publication.checkpoint)?;
    if checkpoint.origin != ura {
        return Err(ApiError::unprocessable(format!(
            "the checkpoint's origin {:?} is not the organisation's URA {ura}",
            checkpoint.origin
        )));
    }
    if i64::try_from(checkpoint.size).is_err() {
        return Err(ApiError::bad_request(format!(
            "checkpoint.size {} is beyond any log",
            checkpoint.size
        )));
    }
    if publication.proof.len() > MAX_PROOF_HASHES {
        return Err(ApiError::bad_request(format!(
            "a consistency proof has at most {MAX_PROOF_HASHES} hashes"
        )));
    }
    let proof = publication
        .proof
        .iter()
        .map(|hash| decode("proof", hash).map(Hash))
        .collect::<Result<Vec<_>, _>>()?;
    let key: [u8; KEY_BYTES] = decode("key", &publication.key)?;
    let verifying = VerifyingKey::from_bytes(&key)
        .map_err(|_| ApiError::bad_request("key is not an Ed25519 public key"))?;
    if checkpoint.verify(&verifying).is_err() {
        metrics::counter!("zorgnet_hub_audit_refused_checkpoints_total", "reason" => "signature")
            .increment(1);
        return Err(ApiError::unprocessable(
            "the checkpoint's signature does not verify with the key sent",
        ));
    }
    Ok(Checked {
        ura,
        checkpoint,
        key,
        previous_size: publication.previous_size,
        proof,
    })
}

/// Keeps a checked publication if it extends the history held, in one transaction that holds
/// the URA's lock. Blocking.
fn keep(db: &Database, checked: Checked) -> Result<Outcome, ApiError> {
    let now = zorgnet_db::now_ms();
    db.write_transaction(|conn| -> Result<Outcome, ApiError> {
        let d = conn.dialect();
        if let Some(lock) = d.transaction_lock_sql(PUBLICATION_LOCK_NAMESPACE) {
            conn.execute(&lock, &[checked.ura.as_str().into()])?;
        }
        let Some(pinned) = pinned_key(conn, &checked.ura)? else {
            let sql = format!(
                "INSERT INTO audit_checkpoint_keys (ura, verifying_key, pinned_at_ms) \
                 VALUES ({}, {}, {})",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3)
            );
            conn.execute(
                &sql,
                &[
                    checked.ura.as_str().into(),
                    checked.key.as_slice().into(),
                    now.into(),
                ],
            )?;
            return Ok(Outcome::Kept(insert(conn, &checked, now)?));
        };
        let refuse = |conn: &mut dyn Conn, reason: Inconsistency, detail: String| {
            insert_conflict(conn, &checked, reason, &detail, now)?;
            Ok::<_, ApiError>(Outcome::Inconsistent { reason, detail })
        };
        if pinned != checked.key {
            return refuse(
                conn,
                Inconsistency::Key,
                "the checkpoint is signed with another key than the one this organisation's \
                 log was first published with"
                    .into(),
            );
        }
        let new = &checked.checkpoint;
        let Some(held) = latest_of(conn, &checked.ura)? else {
            return Ok(Outcome::Kept(insert(conn, &checked, now)?));
        };
        let old = parsed(&held.checkpoint)?;
        if new.size < old.size {
            return refuse(
                conn,
                Inconsistency::Smaller,
                format!(
                    "the log has {} records, but the hub holds a checkpoint of {} records: \
                     records were removed",
                    new.size, old.size
                ),
            );
        }
        if new.size == old.size {
            if new.root == old.root && new.chain == old.chain {
                return Ok(Outcome::Held(held));
            }
            return refuse(
                conn,
                Inconsistency::Fork,
                format!(
                    "the hub holds another checkpoint of {} records: the log was rewritten",
                    new.size
                ),
            );
        }
        if checked.previous_size != Some(old.size) {
            return Ok(Outcome::Stale {
                latest: old.size,
                sent: checked.previous_size,
            });
        }
        let consistent = old.size == 0
            || check_consistency(&checked.proof, new.size, new.root, old.size, old.root);
        if !consistent {
            return refuse(
                conn,
                Inconsistency::Proof,
                format!(
                    "the log of {} records does not extend the checkpoint of {} records the \
                     hub holds: the consistency proof does not hold",
                    new.size, old.size
                ),
            );
        }
        Ok(Outcome::Kept(insert(conn, &checked, now)?))
    })
}

fn pinned_key(conn: &mut dyn Conn, ura: &str) -> Result<Option<[u8; KEY_BYTES]>, ApiError> {
    let sql = format!(
        "SELECT verifying_key FROM audit_checkpoint_keys WHERE ura = {}",
        conn.dialect().placeholder(1)
    );
    let rows = conn.query(&sql, &[ura.into()])?;
    rows.into_iter()
        .next()
        .map(|mut row| {
            row[0]
                .take_blob()
                .try_into()
                .map_err(|_| ApiError::internal("a pinned checkpoint key of the wrong length"))
        })
        .transpose()
}

fn insert(
    conn: &mut dyn Conn,
    checked: &Checked,
    now: i64,
) -> Result<PublishedCheckpoint, ApiError> {
    let d = conn.dialect();
    let c = &checked.checkpoint;
    let placeholders: Vec<String> = (1..=7).map(|n| d.placeholder(n)).collect();
    let sql = format!(
        "INSERT INTO audit_published_checkpoints (ura, {CHECKPOINT_COLUMNS}) VALUES ({})",
        placeholders.join(", ")
    );
    conn.execute(
        &sql,
        &[
            checked.ura.as_str().into(),
            size_value(c.size)?,
            c.root.0.as_slice().into(),
            c.chain.0.as_slice().into(),
            c.signed_ms.into(),
            c.signature.as_slice().into(),
            now.into(),
        ],
    )?;
    Ok(PublishedCheckpoint {
        checkpoint: CheckpointJson::of(c),
        received_at: format_instant(now),
    })
}

fn insert_conflict(
    conn: &mut dyn Conn,
    checked: &Checked,
    reason: Inconsistency,
    detail: &str,
    now: i64,
) -> Result<(), ApiError> {
    let d = conn.dialect();
    let c = &checked.checkpoint;
    let placeholders: Vec<String> = (1..=10).map(|n| d.placeholder(n)).collect();
    let sql = format!(
        "INSERT INTO audit_checkpoint_conflicts (ura, reason, detail, verifying_key, \
         {CHECKPOINT_COLUMNS}) VALUES ({})",
        placeholders.join(", ")
    );
    conn.execute(
        &sql,
        &[
            checked.ura.as_str().into(),
            reason.code().into(),
            detail.into(),
            checked.key.as_slice().into(),
            size_value(c.size)?,
            c.root.0.as_slice().into(),
            c.chain.0.as_slice().into(),
            c.signed_ms.into(),
            c.signature.as_slice().into(),
            now.into(),
        ],
    )?;
    Ok(())
}

/// The latest checkpoint kept of `ura`'s log.
fn latest_of(conn: &mut dyn Conn, ura: &str) -> Result<Option<PublishedCheckpoint>, ApiError> {
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_published_checkpoints WHERE ura = {} \
         ORDER BY size DESC LIMIT 1",
        conn.dialect().placeholder(1)
    );
    let rows = conn.query(&sql, &[ura.into()])?;
    rows.into_iter()
        .next()
        .map(|row| published_from_row(ura, row))
        .transpose()
}

/// A kept checkpoint from the columns [`CHECKPOINT_COLUMNS`].
fn published_from_row(ura: &str, mut row: Row) -> Result<PublishedCheckpoint, ApiError> {
    let size = u64::try_from(row[0].int())
        .map_err(|_| ApiError::internal("a checkpoint of negative size"))?;
    Ok(PublishedCheckpoint {
        checkpoint: CheckpointJson {
            origin: ura.to_string(),
            size,
            root: STANDARD.encode(row[1].take_blob()),
            chain: STANDARD.encode(row[2].take_blob()),
            signed_ms: row[3].int(),
            signature: STANDARD.encode(row[4].take_blob()),
        },
        received_at: format_instant(row[5].int()),
    })
}

async fn latest(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
) -> Result<Json<PublishedCheckpoint>, ApiError> {
    caller.authenticated()?;
    check_ura(&ura)?;
    let db = state.db.clone();
    let lookup = ura.clone();
    let found = crate::blocking(move || db.with_reader(|conn| latest_of(conn, &lookup))).await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("the hub holds no checkpoint of {ura}'s log")))
}

async fn list(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    caller.authenticated()?;
    check_ura(&ura)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_LIST_PAGE).clamp(1, MAX_LIST_PAGE);
    let after = query.after.unwrap_or(-1);
    let db = state.db.clone();
    let lookup = ura.clone();
    let (key, checkpoints) = crate::blocking(move || {
        db.with_reader(|conn| {
            let Some(key) = pinned_key(conn, &lookup)? else {
                return Ok((None, Vec::new()));
            };
            let d = conn.dialect();
            let sql = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM audit_published_checkpoints WHERE ura = {} \
                 AND size > {} ORDER BY size LIMIT {limit}",
                d.placeholder(1),
                d.placeholder(2)
            );
            let rows = conn.query(&sql, &[lookup.as_str().into(), after.into()])?;
            let checkpoints = rows
                .into_iter()
                .map(|row| published_from_row(&lookup, row))
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok((Some(key), checkpoints))
        })
    })
    .await?;
    let key = key.ok_or_else(|| {
        ApiError::not_found(format!("the hub holds no checkpoint of {ura}'s log"))
    })?;
    let next = (checkpoints.len() == limit)
        .then(|| checkpoints.last().map(|c| c.checkpoint.size))
        .flatten();
    Ok(Json(History {
        ura,
        key: STANDARD.encode(key),
        checkpoints,
        next,
    }))
}

async fn conflicts(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Conflicts>, ApiError> {
    caller.authenticated()?;
    check_ura(&ura)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_LIST_PAGE).clamp(1, MAX_LIST_PAGE);
    let after = query.after.unwrap_or(0);
    let db = state.db.clone();
    let lookup = ura.clone();
    let conflicts = crate::blocking(move || {
        let rows = db.with_reader(|conn| {
            let d = conn.dialect();
            let sql = format!(
                "SELECT conflict_id, reason, detail, verifying_key, {CHECKPOINT_COLUMNS} \
                 FROM audit_checkpoint_conflicts WHERE ura = {} AND conflict_id > {} \
                 ORDER BY conflict_id LIMIT {limit}",
                d.placeholder(1),
                d.placeholder(2)
            );
            conn.query(&sql, &[lookup.as_str().into(), after.into()])
        })?;
        rows.into_iter()
            .map(|mut row| {
                let id = row[0].int();
                let reason = row[1].take_text();
                let detail = row[2].take_text();
                let key = STANDARD.encode(row[3].take_blob());
                let published = published_from_row(&lookup, row.split_off(4))?;
                Ok(Conflict {
                    id,
                    reason,
                    detail,
                    key,
                    checkpoint: published.checkpoint,
                    received_at: published.received_at,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    let next = (conflicts.len() == limit)
        .then(|| conflicts.last().map(|c| c.id))
        .flatten();
    Ok(Json(Conflicts {
        ura,
        conflicts,
        next,
    }))
}

/// `N` bytes from standard base64, or a 400 naming `field`.
fn decode<const N: usize>(field: &str, text: &str) -> Result<[u8; N], ApiError> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be {N} bytes in base64")))
}

fn size_value(size: u64) -> Result<SqlValue, DbError> {
    i64::try_from(size)
        .map(SqlValue::Int)
        .map_err(|_| DbError::Backend(format!("size {size} is beyond the database's integers")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorgnet_audit::SigningKey;

    fn signed(size: u64) -> (Checkpoint, SigningKey) {
        let key = SigningKey::from_bytes(&[5; 32]);
        let checkpoint = Checkpoint::sign(&key, "00000011", size, Hash([1; 32]), Hash([2; 32]), 9);
        (checkpoint, key)
    }

    fn publication(checkpoint: &Checkpoint, key: &SigningKey) -> Publication {
        Publication {
            checkpoint: CheckpointJson::of(checkpoint),
            key: STANDARD.encode(key.verifying_key().to_bytes()),
            previous_size: None,
            proof: Vec::new(),
        }
    }

    #[test]
    fn a_checkpoint_reads_back_from_its_wire_form() {
        let (checkpoint, _) = signed(7);
        assert_eq!(
            parsed(&CheckpointJson::of(&checkpoint)).unwrap(),
            checkpoint
        );
        let mut broken = CheckpointJson::of(&checkpoint);
        broken.root = "not base64!".into();
        assert_eq!(
            parsed(&broken).unwrap_err().detail,
            "checkpoint.root must be 32 bytes in base64"
        );
        broken.root = STANDARD.encode([1; 31]);
        assert_eq!(parsed(&broken).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_publication_is_checked_before_storage() {
        let (checkpoint, key) = signed(7);
        let checked = check("00000011".into(), publication(&checkpoint, &key)).unwrap();
        assert_eq!(checked.checkpoint, checkpoint);
        assert_eq!(checked.key, key.verifying_key().to_bytes());

        let other = SigningKey::from_bytes(&[6; 32]);
        let mut forged = publication(&checkpoint, &key);
        forged.key = STANDARD.encode(other.verifying_key().to_bytes());
        let refused = check("00000011".into(), forged).err().unwrap();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);

        let refused = check("00000022".into(), publication(&checkpoint, &key))
            .err()
            .unwrap();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.detail.contains("origin"), "{}", refused.detail);

        let mut long = publication(&checkpoint, &key);
        long.proof = vec![STANDARD.encode([0; 32]); MAX_PROOF_HASHES + 1];
        let refused = check("00000011".into(), long).err().unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    }
}
