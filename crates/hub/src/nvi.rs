//! The referral index (`/nvi`; Dutch: NVI, Nationale Verwijsindex): which organisations hold
//! data of which category about a person.
//!
//! Organisations register and deregister (person, category) pairs for themselves; the person
//! arrives as an exchange token made for the referral index, which this module opens into
//! the referral index's own pseudonym (it never sees a BSN). A lookup answers which
//! organisations hold data of the asked categories, after the consent register's policy
//! ([`crate::consent::decide`]) has removed what the person's opt-outs and refusals exclude;
//! an empty answer is an answer.
//! What it is not: a store of the data itself, or of where an organisation's server is (that
//! is the addressing directory).
//!
//! Binding: a registration is keyed by the authenticated caller's URA ([`Caller::organisation`];
//! today its API key, with the trust issue its certificate), never by anything in the body
//! (the bodies deny unknown fields, so a `ura` there is a 400), and a deregistration removes
//! only the caller's own rows: no organisation can register or withdraw for another, and the
//! operator registers for nobody. The hub cannot know whether a node really holds the data
//! it registers: a registration is that organisation's claim, bound to its authenticated
//! identity, so a false one names the organisation that made it (and a lookup can only lead
//! a requester to that organisation's own endpoint, with a token valid there alone).
//!
//! Tables (component `nvi`): `nvi_registrations`, keyed by (pseudonym, category, URA), so a
//! registration is idempotent and a lookup is one index range.

use crate::HubState;
use crate::auth::Caller;
use crate::consent::{self, AccessQuestion, Decision, Purpose};
use crate::error::ApiError;
use crate::prs::TokenJson;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use zorgnet_db::sql::{Conn, Dialect, Row, SqlValue};
use zorgnet_db::{DbError, Migration};
use zorgnet_fhir::categories::{DataCategory, parse_categories};
use zorgnet_pseudonym::ExchangeToken;

/// The referral index's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "nvi",
    version: 1,
    sql: "
CREATE TABLE nvi_registrations (
    pseudonym {text} NOT NULL,
    category {text} NOT NULL,
    ura {text} NOT NULL,
    registered_at_ms {int} NOT NULL,
    PRIMARY KEY (pseudonym, category, ura)
) {without_rowid};
CREATE INDEX nvi_by_organisation ON nvi_registrations (ura, pseudonym, category)",
}];

/// Rows per multi-row INSERT or DELETE statement (4 parameters each, well under SQLite's
/// 32,766-parameter limit).
const ROWS_PER_STATEMENT: usize = 500;
/// Most registrations returned by one listing page.
pub const MAX_LIST_PAGE: usize = 1_000;

/// The referral index's routes, under `/nvi`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route("/registrations", post(register).get(list))
        .route("/deregistrations", post(deregister))
        .route("/lookup", post(lookup))
}

/// One person and the categories an organisation holds (or no longer holds) about them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationItem {
    /// Exchange token for the referral index.
    pub token: TokenJson,
    /// Category codes.
    pub categories: Vec<String>,
}

/// A batch of registrations or deregistrations for the calling organisation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBatch {
    /// Items, at most [`crate::MAX_BATCH_ITEMS`].
    pub registrations: Vec<RegistrationItem>,
}

/// What a batch changed.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchResult {
    /// (person, category) pairs in the batch.
    pub pairs: usize,
    /// Pairs that were not yet registered (register) or were registered (deregister).
    pub changed: usize,
}

/// Opens every token of a batch (on all cores: opening is the costly part) and checks every
/// category, before anything is stored.
async fn pairs_of(
    state: &Arc<HubState>,
    batch: RegistrationBatch,
) -> Result<Vec<(String, DataCategory)>, ApiError> {
    if batch.registrations.is_empty() || batch.registrations.len() > crate::MAX_BATCH_ITEMS {
        return Err(ApiError::bad_request(format!(
            "registrations must hold 1 to {} items",
            crate::MAX_BATCH_ITEMS
        )));
    }
    let mut tokens = Vec::with_capacity(batch.registrations.len());
    let mut categories = Vec::with_capacity(batch.registrations.len());
    for (i, item) in batch.registrations.into_iter().enumerate() {
        let at = |e: ApiError| ApiError::new(e.status, format!("registrations[{i}]: {}", e.detail));
        let parsed = parse_categories(item.categories.iter().map(String::as_str))
            .map_err(|e| at(ApiError::bad_request(e)))?;
        if parsed.is_empty() {
            return Err(at(ApiError::bad_request("no categories")));
        }
        tokens.push(crate::prs::parse_token(&item.token).map_err(at)?);
        categories.push(parsed);
    }
    let state = state.clone();
    crate::blocking(move || {
        let per_core: Vec<&[ExchangeToken]> = tokens
            .chunks(tokens.len().div_ceil(crate::prs::cores()))
            .collect();
        let opened = crate::prs::on_all_cores(&per_core, |_, part| {
            Ok(state.prs.open_referral_index_tokens(part))
        })?;
        let mut pairs = Vec::with_capacity(categories.iter().map(Vec::len).sum());
        for (i, (opened, categories)) in opened.into_iter().flatten().zip(categories).enumerate() {
            let pseudonym = opened
                .map_err(|e| ApiError::new(e.status, format!("registrations[{i}]: {}", e.detail)))?
                .to_string();
            pairs.extend(categories.into_iter().map(|c| (pseudonym.clone(), c)));
        }
        Ok(pairs)
    })
    .await
}

async fn register(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<RegistrationBatch>, JsonRejection>,
) -> Result<Json<BatchResult>, ApiError> {
    apply_batch(&state, &caller, body, true).await
}

async fn deregister(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<RegistrationBatch>, JsonRejection>,
) -> Result<Json<BatchResult>, ApiError> {
    apply_batch(&state, &caller, body, false).await
}

/// Opens a batch's tokens and stores (`register`) or removes its pairs for the calling
/// organisation in one transaction.
async fn apply_batch(
    state: &Arc<HubState>,
    caller: &Caller,
    body: Result<Json<RegistrationBatch>, JsonRejection>,
    register: bool,
) -> Result<Json<BatchResult>, ApiError> {
    let ura = caller.organisation()?.to_string();
    let Json(batch) = body?;
    let pairs = pairs_of(state, batch).await?;
    let db = state.db.clone();
    let total = pairs.len();
    let changed = crate::blocking(move || {
        let now = zorgnet_db::now_ms();
        Ok(db.write_transaction(|conn| {
            if register {
                insert_registrations(conn, &ura, &pairs, now)
            } else {
                delete_registrations(conn, &ura, &pairs)
            }
        })?)
    })
    .await?;
    if register {
        metrics::counter!("zorgnet_nvi_registrations_total").increment(changed as u64);
    } else {
        metrics::counter!("zorgnet_nvi_deregistrations_total").increment(changed as u64);
    }
    Ok(Json(BatchResult {
        pairs: total,
        changed,
    }))
}

/// Stores registrations of `ura` for (pseudonym, category) pairs, skipping those already
/// there; returns how many were new. Runs on the caller's connection and transaction (the
/// registration API and bulk loads share it). Blocking.
pub fn insert_registrations(
    conn: &mut dyn Conn,
    ura: &str,
    pairs: &[(String, DataCategory)],
    now: i64,
) -> Result<usize, DbError> {
    let mut changed = 0;
    for rows in pairs.chunks(ROWS_PER_STATEMENT) {
        let d = conn.dialect();
        let mut params: Vec<SqlValue> = Vec::with_capacity(rows.len() * 4);
        let mut values = Vec::with_capacity(rows.len());
        for (pseudonym, category) in rows {
            let n = params.len();
            values.push(format!(
                "({}, {}, {}, {})",
                d.placeholder(n + 1),
                d.placeholder(n + 2),
                d.placeholder(n + 3),
                d.placeholder(n + 4)
            ));
            params.extend([
                pseudonym.as_str().into(),
                category.code().into(),
                ura.into(),
                now.into(),
            ]);
        }
        let sql = format!(
            "INSERT INTO nvi_registrations (pseudonym, category, ura, registered_at_ms) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        changed += usize::try_from(conn.execute(&sql, &params)?).unwrap_or(0);
    }
    Ok(changed)
}

/// Removes registrations of `ura` for (pseudonym, category) pairs; returns how many were
/// there. Blocking.
fn delete_registrations(
    conn: &mut dyn Conn,
    ura: &str,
    pairs: &[(String, DataCategory)],
) -> Result<usize, DbError> {
    let d = conn.dialect();
    let sql = format!(
        "DELETE FROM nvi_registrations WHERE pseudonym = {} AND category = {} AND ura = {}",
        d.placeholder(1),
        d.placeholder(2),
        d.placeholder(3)
    );
    let mut changed = 0;
    for (pseudonym, category) in pairs {
        changed += conn.execute(
            &sql,
            &[
                pseudonym.as_str().into(),
                category.code().into(),
                ura.into(),
            ],
        )?;
    }
    Ok(usize::try_from(changed).unwrap_or(0))
}

/// A lookup.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// Exchange token for the referral index.
    pub token: TokenJson,
    /// Category codes; at least one.
    pub categories: Vec<String>,
    /// Why; default treatment.
    #[serde(default)]
    pub purpose: Purpose,
}

/// One organisation holding data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// URA number.
    pub ura: String,
    /// The asked categories it holds and may share.
    pub categories: Vec<String>,
}

/// The answer to a lookup.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LookupResponse {
    /// Organisations, by URA.
    pub organisations: Vec<Holder>,
}

async fn lookup(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<LookupRequest>, JsonRejection>,
) -> Result<Json<LookupResponse>, ApiError> {
    let requester = caller.organisation()?.to_string();
    let Json(request) = body?;
    let categories = parse_categories(request.categories.iter().map(String::as_str))
        .map_err(ApiError::bad_request)?;
    if categories.is_empty() {
        return Err(ApiError::bad_request(
            "categories must name at least one category",
        ));
    }
    let purpose = request.purpose;
    // Opening the token is public-key arithmetic (about 0.1 ms) and runs right here on the
    // async worker, with as many workers as cores. On the blocking pool it cost more than it
    // saved: two thread wake-ups per lookup, and under load dozens of threads contending for
    // the cores (docs/benchmarks.md, "Hub: referral index and pseudonym service").
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let rows = state
        .db
        .read_async(
            holders_sql(state.db.dialect()),
            &[pseudonym.into(), requester.as_str().into()],
        )
        .await?;
    let organisations = holders_from_rows(rows, &categories, &requester, purpose);
    metrics::counter!("zorgnet_nvi_lookups_total").increment(1);
    Ok(Json(LookupResponse { organisations }))
}

/// The organisations holding `categories` about the person whose registrations, consent
/// directives and requester's treatment relations are `rows` (read by [`holders_sql`]) that
/// [`consent::decide`] lets `requester` learn about.
///
/// A lookup for treatment needs the same basis as a read at the source: a treatment
/// relation of the requester (or the person's explicit consent for it). The relation is the
/// requester's own with the person (a referral received, a patient admitted), so it is
/// registered before the requester looks for sources, not found through them; without it
/// the answer is empty, exactly as for a person nobody holds data about, so the referral
/// index does not tell any key holder where a person receives care. An emergency lookup
/// needs no relation (but respects the emergency opt-out).
///
/// One statement reads all of the person's registrations (about ten, by the primary key's
/// prefix), every version of their consent directives (by `consent_by_pseudonym`, usually
/// none) and the requester's relations with them (by `relations_by_person`, usually one):
/// one round trip on PostgreSQL, one read on SQLite. The asked categories are kept
/// here: a `category IN (…)` in the statement would make SQLite build a temporary b-tree of
/// the list on every lookup.
pub fn holders_from_rows(
    rows: Vec<Row>,
    categories: &[DataCategory],
    requester: &str,
    purpose: Purpose,
) -> Vec<Holder> {
    let now = zorgnet_db::now_ms();
    let mut asked: Vec<(String, DataCategory)> = Vec::new();
    let mut versions = Vec::new();
    let mut related = false;
    for mut row in rows {
        if row[0] == SqlValue::Null && row[1] == SqlValue::Null {
            versions.extend(consent::directive_from_row(row.split_off(2)));
        } else if row[0] == SqlValue::Null {
            related |= crate::relations::in_force_in_lookup(row.split_off(2), now);
        } else if let Some(category) = DataCategory::from_code(&row[1].take_text())
            && categories.contains(&category)
        {
            asked.push((row[0].take_text(), category));
        }
    }
    if asked.is_empty() {
        return Vec::new();
    }
    let directives = consent::current_of(versions);
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ura, category) in asked {
        let question = AccessQuestion {
            requester_ura: requester,
            holder_ura: Some(&ura),
            role: None,
            category,
            purpose,
        };
        if consent::decide(&directives, related, &question, now).decision == Decision::Permit {
            holders
                .entry(ura)
                .or_default()
                .push(category.code().to_string());
        }
    }
    holders
        .into_iter()
        .map(|(ura, mut categories)| {
            categories.sort_unstable();
            Holder { ura, categories }
        })
        .collect()
}

/// The statement [`holders_from_rows`] reads: a person's registrations, consent directives
/// and relations by pseudonym (the first parameter), the relations only of the requester
/// (the second). Written once per dialect; it runs on every lookup.
pub fn holders_sql(dialect: Dialect) -> &'static str {
    static SQL: LazyLock<[String; 2]> =
        LazyLock::new(|| [Dialect::Sqlite, Dialect::Postgres].map(write_holders_sql));
    match dialect {
        Dialect::Sqlite => &SQL[0],
        Dialect::Postgres => &SQL[1],
    }
}

fn write_holders_sql(dialect: Dialect) -> String {
    let p = dialect.placeholder(1);
    let requester = dialect.placeholder(2);
    let nulls = ["NULL"; consent::DIRECTIVE_COLUMN_COUNT].join(", ");
    format!(
        "SELECT ura, category, {nulls} FROM nvi_registrations WHERE pseudonym = {p} \
         UNION ALL SELECT NULL, NULL, {columns} FROM consent_directives WHERE pseudonym = {p} \
         UNION ALL SELECT NULL, 'relation', {relations} FROM treatment_relations \
         WHERE pseudonym = {p} AND ura = {requester}",
        columns = consent::DIRECTIVE_COLUMNS,
        relations = crate::relations::LOOKUP_COLUMNS
    )
}

/// A listing page request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Cursor from the previous page.
    pub after: Option<String>,
    /// Page size, at most [`MAX_LIST_PAGE`].
    pub limit: Option<usize>,
}

/// One registration of the calling organisation.
#[derive(Debug, Serialize, Deserialize)]
pub struct OwnRegistration {
    /// The referral index's pseudonym.
    pub pseudonym: String,
    /// Category.
    pub category: String,
}

/// A page of the calling organisation's registrations.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    /// Registrations, by pseudonym then category.
    pub registrations: Vec<OwnRegistration>,
    /// Cursor for the next page, when there may be more.
    pub next: Option<String>,
}

async fn list(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let ura = caller.organisation()?.to_string();
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_LIST_PAGE).clamp(1, MAX_LIST_PAGE);
    let (after_pseudonym, after_category) = match &query.after {
        None => (String::new(), String::new()),
        Some(cursor) => cursor
            .split_once('|')
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .ok_or_else(|| ApiError::bad_request("after is not a cursor from a previous page"))?,
    };
    let db = state.db.clone();
    let rows = crate::blocking(move || {
        Ok(db.with_reader(|conn| {
            let d = conn.dialect();
            let sql = format!(
                "SELECT pseudonym, category FROM nvi_registrations WHERE ura = {p1} AND \
                 (pseudonym > {p2} OR (pseudonym = {p2} AND category > {p3})) \
                 ORDER BY pseudonym, category LIMIT {limit}",
                p1 = d.placeholder(1),
                p2 = d.placeholder(2),
                p3 = d.placeholder(3)
            );
            conn.query(
                &sql,
                &[ura.into(), after_pseudonym.into(), after_category.into()],
            )
        })?)
    })
    .await?;
    let registrations: Vec<OwnRegistration> = rows
        .into_iter()
        .map(|mut row| OwnRegistration {
            pseudonym: row[0].take_text(),
            category: row[1].take_text(),
        })
        .collect();
    let next = (registrations.len() == limit)
        .then(|| {
            registrations
                .last()
                .map(|r| format!("{}|{}", r.pseudonym, r.category))
        })
        .flatten();
    Ok(Json(ListResponse {
        registrations,
        next,
    }))
}
