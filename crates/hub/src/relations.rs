//! The treatment-relation register (`/relations`): which organisation treats which person,
//! the *basis* of SYSTEM.md "Authorisation", rule 2.
//!
//! An organisation registers a relation with a person when it takes them into care: a
//! referral it received, a consultation it was asked for, co-treatment, or its own patient.
//! The person arrives as an exchange token for the referral index (as in the consent
//! register), so relations are keyed by the referral index's pseudonym and the hub never sees
//! a BSN. Each relation has a validity period: from `valid_from` (default now) until
//! `valid_until` (default [`DEFAULT_VALIDITY_MS`] later, never more than
//! [`MAX_VALIDITY_MS`] after `valid_from`), so a relation runs out unless it is renewed.
//!
//! Who may do what: only organisations hold relations. An organisation registers relations
//! for itself (recorded under its own URA, never another's), lists only its own, and ends
//! only its own; ending another's, or an unknown one, is the same 404. The operator has no
//! relations and cannot register any.
//!
//! [`crate::consent::decide`] reads a requester's relations in force as a basis for
//! treatment reads, both for nodes' `/consent/decision` and for referral-index lookups.
//! What it is not: proof of care. A relation is the registering organisation's statement,
//! kept under its URA (and logged); the audit log (next issue) lets a citizen see it.
//!
//! Tables (component `relations`): `treatment_relations`; ending a relation sets its status
//! and the time it ended, the row stays.

use crate::HubState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::prs::TokenJson;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zorgnet_db::sql::{Conn, SqlValue};
use zorgnet_db::{DbError, Migration};
use zorgnet_fhir::datetime::format_instant;

/// The relation register's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "relations",
    version: 1,
    sql: "
CREATE TABLE treatment_relations (
    relation_id {text} NOT NULL PRIMARY KEY,
    pseudonym {text} NOT NULL,
    ura {text} NOT NULL,
    kind {text} NOT NULL,
    status {text} NOT NULL,
    valid_from_ms {int} NOT NULL,
    valid_until_ms {int} NOT NULL,
    recorded_at_ms {int} NOT NULL,
    ended_at_ms {int}
);
CREATE INDEX relations_by_person ON treatment_relations (pseudonym, ura);
CREATE INDEX relations_by_organisation ON treatment_relations (ura, relation_id)",
}];

/// A day in milliseconds.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a relation holds when its registration names no end: a year.
pub const DEFAULT_VALIDITY_MS: i64 = 365 * DAY_MS;
/// The longest validity period a relation may have: two years; longer care is renewed.
pub const MAX_VALIDITY_MS: i64 = 2 * 365 * DAY_MS;
/// Most relations returned by one listing page.
pub const MAX_LIST_PAGE: usize = 1_000;

/// What kind of treatment relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelationKind {
    /// The organisation received a referral for the person.
    Referral,
    /// The organisation was asked for a consultation.
    Consultation,
    /// The organisation treats the person together with others.
    CoTreatment,
    /// The person is the organisation's own patient (registered, admitted).
    OwnPatient,
}

impl RelationKind {
    fn code(self) -> &'static str {
        match self {
            RelationKind::Referral => "referral",
            RelationKind::Consultation => "consultation",
            RelationKind::CoTreatment => "co-treatment",
            RelationKind::OwnPatient => "own-patient",
        }
    }

    fn from_code(code: &str) -> Option<RelationKind> {
        [
            RelationKind::Referral,
            RelationKind::Consultation,
            RelationKind::CoTreatment,
            RelationKind::OwnPatient,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }
}

/// `active` until ended.
const ACTIVE: &str = "active";
/// Ended by its organisation.
const ENDED: &str = "ended";

/// One treatment relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// Its id.
    pub relation_id: String,
    /// The organisation that treats the person (and registered the relation).
    pub ura: String,
    /// Kind.
    pub kind: RelationKind,
    /// `active` or `ended`.
    pub status: String,
    /// Start of validity (RFC 3339).
    pub valid_from: String,
    /// End of validity, exclusive (RFC 3339).
    pub valid_until: String,
    /// When it was registered.
    pub recorded_at: String,
    /// When it was ended, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip)]
    valid_from_ms: i64,
    #[serde(skip)]
    valid_until_ms: i64,
}

impl Relation {
    /// Whether the relation holds at `now_ms`: active and within its validity period.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.status == ACTIVE && self.valid_from_ms <= now_ms && now_ms < self.valid_until_ms
    }
}

/// The columns of a relation, in the order [`relation_from_row`] reads them.
pub(crate) const RELATION_COLUMNS: &str = "relation_id, ura, kind, status, valid_from_ms, \
     valid_until_ms, recorded_at_ms, ended_at_ms";

/// A relation from its [`RELATION_COLUMNS`]; `None` for an unknown kind.
pub(crate) fn relation_from_row(mut row: Vec<SqlValue>) -> Option<Relation> {
    let kind = RelationKind::from_code(&row[2].take_text())?;
    let valid_from_ms = row[4].int();
    let valid_until_ms = row[5].int();
    let ended_at = match row[7] {
        SqlValue::Null => None,
        ref v => Some(format_instant(v.int())),
    };
    Some(Relation {
        relation_id: row[0].take_text(),
        ura: row[1].take_text(),
        kind,
        status: row[3].take_text(),
        valid_from: format_instant(valid_from_ms),
        valid_until: format_instant(valid_until_ms),
        recorded_at: format_instant(row[6].int()),
        ended_at,
        valid_from_ms,
        valid_until_ms,
    })
}

/// A relation's status and validity laid out in the columns of a consent directive (the
/// referral index's lookup reads both in one statement): `status`, `valid_from_ms` and
/// `valid_until_ms` where a directive has its own, `NULL` elsewhere.
pub(crate) const LOOKUP_COLUMNS: &str = "NULL, NULL, NULL, NULL, NULL, NULL, status, \
     valid_from_ms, valid_until_ms, NULL, NULL";

/// Whether a relation read as [`LOOKUP_COLUMNS`] is in force at `now_ms`.
pub(crate) fn in_force_in_lookup(mut row: Vec<SqlValue>, now_ms: i64) -> bool {
    row.len() > 8 && row[6].take_text() == ACTIVE && row[7].int() <= now_ms && now_ms < row[8].int()
}

/// Whether organisation `ura` has a relation in force with the person at `now_ms`. Blocking.
pub fn related(
    conn: &mut dyn Conn,
    pseudonym: &str,
    ura: &str,
    now_ms: i64,
) -> Result<bool, DbError> {
    Ok(relations_of(conn, pseudonym, ura)?
        .iter()
        .any(|r| r.in_force(now_ms)))
}

/// Every relation (in force or not) of organisation `ura` with one person. Blocking.
pub fn relations_of(
    conn: &mut dyn Conn,
    pseudonym: &str,
    ura: &str,
) -> Result<Vec<Relation>, DbError> {
    let d = conn.dialect();
    let sql = format!(
        "SELECT {RELATION_COLUMNS} FROM treatment_relations WHERE pseudonym = {} AND ura = {} \
         ORDER BY relation_id",
        d.placeholder(1),
        d.placeholder(2)
    );
    let rows = conn.query(&sql, &[pseudonym.into(), ura.into()])?;
    Ok(rows.into_iter().filter_map(relation_from_row).collect())
}

/// The relation register's routes, under `/relations`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route("/", post(register).get(list))
        .route("/query", post(query))
        .route("/{id}/end", post(end))
}

/// A new relation of the calling organisation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelation {
    /// Exchange token for the referral index, identifying the person.
    pub token: TokenJson,
    /// Kind.
    pub kind: RelationKind,
    /// Start (RFC 3339 or a date); default now.
    pub valid_from: Option<String>,
    /// End, exclusive (RFC 3339 or a date); default [`DEFAULT_VALIDITY_MS`] after the start.
    pub valid_until: Option<String>,
}

async fn register(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewRelation>, JsonRejection>,
) -> Result<(StatusCode, Json<Relation>), ApiError> {
    let ura = caller.organisation()?.to_string();
    let Json(request) = body?;
    let now = zorgnet_db::now_ms();
    let valid_from_ms = request
        .valid_from
        .as_deref()
        .map(|t| crate::instant("valid_from", t))
        .transpose()?
        .unwrap_or(now);
    let valid_until_ms = request
        .valid_until
        .as_deref()
        .map(|t| crate::instant("valid_until", t))
        .transpose()?
        .unwrap_or(valid_from_ms.saturating_add(DEFAULT_VALIDITY_MS));
    if valid_until_ms <= valid_from_ms {
        return Err(ApiError::bad_request(
            "valid_until must be after valid_from",
        ));
    }
    if valid_until_ms - valid_from_ms > MAX_VALIDITY_MS {
        return Err(ApiError::bad_request(format!(
            "a relation holds at most {} days; renew it when care continues",
            MAX_VALIDITY_MS / DAY_MS
        )));
    }
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let relation = Relation {
        relation_id: uuid::Uuid::new_v4().to_string(),
        ura,
        kind: request.kind,
        status: ACTIVE.into(),
        valid_from: format_instant(valid_from_ms),
        valid_until: format_instant(valid_until_ms),
        recorded_at: format_instant(now),
        ended_at: None,
        valid_from_ms,
        valid_until_ms,
    };
    let db = state.db.clone();
    let stored = relation.clone();
    crate::blocking(move || {
        Ok(db.write_transaction(|conn| {
            let placeholders: Vec<String> =
                (1..=8).map(|n| conn.dialect().placeholder(n)).collect();
            let sql = format!(
                "INSERT INTO treatment_relations (relation_id, pseudonym, ura, kind, status, \
                 valid_from_ms, valid_until_ms, recorded_at_ms) VALUES ({})",
                placeholders.join(", ")
            );
            conn.execute(
                &sql,
                &[
                    stored.relation_id.as_str().into(),
                    pseudonym.as_str().into(),
                    stored.ura.as_str().into(),
                    stored.kind.code().into(),
                    ACTIVE.into(),
                    valid_from_ms.into(),
                    valid_until_ms.into(),
                    now.into(),
                ],
            )
        })?)
    })
    .await?;
    metrics::counter!("zorgnet_relation_changes_total").increment(1);
    tracing::info!(
        relation = %relation.relation_id,
        ura = %relation.ura,
        kind = relation.kind.code(),
        "registered a treatment relation"
    );
    Ok((StatusCode::CREATED, Json(relation)))
}

/// Identifies the person by token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonRequest {
    /// Exchange token for the referral index.
    pub token: TokenJson,
}

/// Relations of the calling organisation.
#[derive(Debug, Serialize, Deserialize)]
pub struct RelationsResponse {
    /// Relations, by id.
    pub relations: Vec<Relation>,
    /// Cursor for the next page of a listing, when there may be more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

async fn query(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PersonRequest>, JsonRejection>,
) -> Result<Json<RelationsResponse>, ApiError> {
    let ura = caller.organisation()?.to_string();
    let Json(request) = body?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    let relations =
        crate::blocking(move || Ok(db.with_reader(|conn| relations_of(conn, &pseudonym, &ura))?))
            .await?;
    Ok(Json(RelationsResponse {
        relations,
        next: None,
    }))
}

/// A listing page request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Cursor from the previous page (the last relation id).
    pub after: Option<String>,
    /// Page size, at most [`MAX_LIST_PAGE`].
    pub limit: Option<usize>,
}

async fn list(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RelationsResponse>, ApiError> {
    let ura = caller.organisation()?.to_string();
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_LIST_PAGE).clamp(1, MAX_LIST_PAGE);
    let after = query.after.unwrap_or_default();
    let db = state.db.clone();
    let relations = crate::blocking(move || {
        Ok(db.with_reader(|conn| -> Result<Vec<Relation>, DbError> {
            let d = conn.dialect();
            let sql = format!(
                "SELECT {RELATION_COLUMNS} FROM treatment_relations WHERE ura = {} AND \
                 relation_id > {} ORDER BY relation_id LIMIT {limit}",
                d.placeholder(1),
                d.placeholder(2)
            );
            let rows = conn.query(&sql, &[ura.into(), after.into()])?;
            Ok(rows.into_iter().filter_map(relation_from_row).collect())
        })?)
    })
    .await?;
    let next = (relations.len() == limit)
        .then(|| relations.last().map(|r| r.relation_id.clone()))
        .flatten();
    Ok(Json(RelationsResponse { relations, next }))
}

async fn end(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(relation_id): Path<String>,
) -> Result<Json<Relation>, ApiError> {
    let ura = caller.organisation()?.to_string();
    let db = state.db.clone();
    let relation = crate::blocking(move || {
        db.write_transaction(|conn| -> Result<Relation, ApiError> {
            let d = conn.dialect();
            let sql = format!(
                "SELECT {RELATION_COLUMNS} FROM treatment_relations WHERE relation_id = {} \
                 AND ura = {}",
                d.placeholder(1),
                d.placeholder(2)
            );
            let rows = conn.query(&sql, &[relation_id.as_str().into(), ura.as_str().into()])?;
            // Another organisation's relation answers exactly as an unknown id.
            let Some(mut relation) = rows.into_iter().find_map(relation_from_row) else {
                return Err(ApiError::not_found("no such relation"));
            };
            if relation.status != ACTIVE {
                return Err(ApiError::conflict("the relation has already ended"));
            }
            let now = zorgnet_db::now_ms();
            let sql = format!(
                "UPDATE treatment_relations SET status = {}, ended_at_ms = {} \
                 WHERE relation_id = {} AND ura = {}",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3),
                d.placeholder(4)
            );
            conn.execute(
                &sql,
                &[
                    ENDED.into(),
                    now.into(),
                    relation_id.as_str().into(),
                    ura.as_str().into(),
                ],
            )?;
            relation.status = ENDED.into();
            relation.ended_at = Some(format_instant(now));
            Ok(relation)
        })
    })
    .await?;
    metrics::counter!("zorgnet_relation_changes_total").increment(1);
    tracing::info!(relation = %relation.relation_id, ura = %relation.ura, "ended a treatment relation");
    Ok(Json(relation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(status: &str, from: i64, until: i64) -> Relation {
        Relation {
            relation_id: "r".into(),
            ura: "00000001".into(),
            kind: RelationKind::Referral,
            status: status.into(),
            valid_from: String::new(),
            valid_until: String::new(),
            recorded_at: String::new(),
            ended_at: None,
            valid_from_ms: from,
            valid_until_ms: until,
        }
    }

    #[test]
    fn a_relation_holds_only_while_active_and_valid() {
        assert!(relation(ACTIVE, 1_000, 2_000).in_force(1_000));
        assert!(
            !relation(ACTIVE, 1_000, 2_000).in_force(2_000),
            "end is exclusive"
        );
        assert!(!relation(ACTIVE, 1_000, 2_000).in_force(999), "not yet");
        assert!(!relation(ENDED, 1_000, 2_000).in_force(1_500));
        for kind in ["referral", "consultation", "co-treatment", "own-patient"] {
            assert_eq!(
                RelationKind::from_code(kind).map(RelationKind::code),
                Some(kind)
            );
        }
    }
}
