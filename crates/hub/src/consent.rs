//! The consent register (`/consent`; Dutch: OTV, online toestemmingsvoorziening, cf. Mitz):
//! what a citizen decided about sharing their data, and the decisions that follow from it.
//!
//! A citizen's wishes are *directives*, keyed by the referral index's pseudonym (never a
//! BSN): a general opt-out, an opt-out of one category, explicit consent (yes or no) for a
//! named organisation (optionally for one category), and an emergency opt-out. Directives
//! are versioned and never updated in place: every change (recording, revoking) is a new
//! version with who made it and when, and each has a validity period.
//!
//! [`decide`] is the one policy that answers "may organisation A's professional with role R
//! see category C of this person, for purpose P?", with the reason. The referral index
//! applies the same policy to filter lookups; nodes ask `/consent/decision` before serving
//! other organisations.
//!
//! Tables (component `consent`): `consent_directives`.

use crate::HubState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::prs::TokenJson;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zorgnet_db::sql::{Conn, SqlValue};
use zorgnet_db::{DbError, Migration};
use zorgnet_fhir::categories::DataCategory;
use zorgnet_fhir::datetime::{format_instant, parse_date_range};

/// The consent register's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "consent",
    version: 1,
    sql: "
CREATE TABLE consent_directives (
    directive_id {text} NOT NULL,
    version {int} NOT NULL,
    pseudonym {text} NOT NULL,
    kind {text} NOT NULL,
    category {text},
    ura {text},
    decision {text} NOT NULL,
    status {text} NOT NULL,
    valid_from_ms {int} NOT NULL,
    valid_until_ms {int},
    recorded_at_ms {int} NOT NULL,
    recorded_by {text} NOT NULL,
    PRIMARY KEY (directive_id, version)
);
CREATE INDEX consent_by_pseudonym ON consent_directives (pseudonym, directive_id, version)",
}];

/// What kind of wish a directive records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectiveKind {
    /// No sharing of one category, or of anything when no category is given (EHDS opt-out).
    OptOut,
    /// Explicit consent, yes or no, for a named organisation (Wabvpz).
    Consent,
    /// No access in emergencies (no break-the-glass).
    EmergencyOptOut,
}

impl DirectiveKind {
    fn code(self) -> &'static str {
        match self {
            DirectiveKind::OptOut => "opt-out",
            DirectiveKind::Consent => "consent",
            DirectiveKind::EmergencyOptOut => "emergency-opt-out",
        }
    }

    fn from_code(code: &str) -> Option<DirectiveKind> {
        [
            DirectiveKind::OptOut,
            DirectiveKind::Consent,
            DirectiveKind::EmergencyOptOut,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }
}

/// Permit or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed.
    Permit,
    /// Not allowed.
    Deny,
}

/// Why a read is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Regular care within a treatment relation.
    #[default]
    Treatment,
    /// Break-the-glass in an emergency.
    Emergency,
}

/// One version of a directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Stable id across versions.
    pub directive_id: String,
    /// Version, from 1.
    pub version: i64,
    /// Kind.
    pub kind: DirectiveKind,
    /// The category it is about; `None` for all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The organisation it is about (consent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ura: Option<String>,
    /// For consent: permit (yes) or deny (no); opt-outs are deny.
    pub decision: Decision,
    /// `active` or `revoked`.
    pub status: String,
    /// Start of validity (RFC 3339).
    pub valid_from: String,
    /// End of validity, exclusive (RFC 3339); absent for open-ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// When this version was recorded.
    pub recorded_at: String,
    /// Who recorded it: an organisation's URA or `operator`.
    pub recorded_by: String,
    #[serde(skip)]
    valid_from_ms: i64,
    #[serde(skip)]
    valid_until_ms: Option<i64>,
}

impl Directive {
    fn in_force(&self, now_ms: i64) -> bool {
        self.status == "active"
            && self.valid_from_ms <= now_ms
            && self.valid_until_ms.is_none_or(|until| now_ms < until)
    }

    fn covers(&self, category: DataCategory) -> bool {
        self.category
            .as_deref()
            .is_none_or(|c| c == category.code())
    }
}

/// The answer of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionResult {
    /// Permit or deny.
    pub decision: Decision,
    /// Why, for the professional and the audit log.
    pub reason: String,
    /// The directive that decided it, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directive_id: Option<String>,
}

impl DecisionResult {
    fn new(decision: Decision, reason: String, directive: Option<&Directive>) -> Self {
        DecisionResult {
            decision,
            reason,
            directive_id: directive.map(|d| d.directive_id.clone()),
        }
    }
}

/// The question [`decide`] answers.
#[derive(Debug, Clone)]
pub struct AccessQuestion<'a> {
    /// The organisation whose professional wants to read.
    pub requester_ura: &'a str,
    /// The organisation holding the data, when known (a referral-index lookup result).
    pub holder_ura: Option<&'a str>,
    /// The professional's UZI role code; `None` when the question is about organisations
    /// only (a referral-index lookup).
    pub role: Option<&'a str>,
    /// The category.
    pub category: DataCategory,
    /// Why.
    pub purpose: Purpose,
}

/// Whether a professional with UZI role code `role` may see `category` at all.
/// Physicians (`01.*`) see everything; pharmacists (`17.*`) medication, allergies and lab
/// results; nurses (`30.*`) the summary, medication, allergies, lab results and nursing
/// transfers; dentists (`02.*`) the summary, medication and allergies; others nothing.
pub fn role_may_see(role: &str, category: DataCategory) -> bool {
    use DataCategory::*;
    let profession = role.split('.').next().unwrap_or("");
    match profession {
        "01" => true,
        "17" => matches!(category, Medication | Allergies | LabResults),
        "30" => matches!(
            category,
            PatientSummary | Medication | Allergies | LabResults | NursingTransfer
        ),
        "02" => matches!(category, PatientSummary | Medication | Allergies),
        _ => false,
    }
}

/// The policy: decides `question` against a person's current directives at `now_ms`.
/// Opt-outs always win (EHDS: a citizen's opt-out holds in emergencies too); an explicit
/// "no" for the requesting or the holding organisation denies; an emergency read is allowed
/// unless the person opted out of emergency access; otherwise explicit consent or a
/// treatment relation (established at the source) is the basis.
pub fn decide(
    directives: &[Directive],
    question: &AccessQuestion<'_>,
    now_ms: i64,
) -> DecisionResult {
    let category = question.category;
    if let Some(role) = question.role
        && !role_may_see(role, category)
    {
        return DecisionResult::new(
            Decision::Deny,
            format!("role {role} may not see {category}"),
            None,
        );
    }
    let in_force: Vec<&Directive> = directives.iter().filter(|d| d.in_force(now_ms)).collect();
    let find =
        |predicate: &dyn Fn(&Directive) -> bool| in_force.iter().copied().find(|d| predicate(d));
    if let Some(d) = find(&|d| d.kind == DirectiveKind::OptOut && d.category.is_none()) {
        return DecisionResult::new(
            Decision::Deny,
            "the person opted out of all sharing".into(),
            Some(d),
        );
    }
    if let Some(d) = find(&|d| d.kind == DirectiveKind::OptOut && d.covers(category)) {
        return DecisionResult::new(
            Decision::Deny,
            format!("the person opted out of sharing {category}"),
            Some(d),
        );
    }
    let refused = |ura: &str| {
        find(&|d| {
            d.kind == DirectiveKind::Consent
                && d.decision == Decision::Deny
                && d.ura.as_deref() == Some(ura)
                && d.covers(category)
        })
    };
    if let Some(d) = refused(question.requester_ura) {
        return DecisionResult::new(
            Decision::Deny,
            format!(
                "the person refused consent for organisation {}",
                question.requester_ura
            ),
            Some(d),
        );
    }
    if let Some(holder) = question.holder_ura
        && let Some(d) = refused(holder)
    {
        return DecisionResult::new(
            Decision::Deny,
            format!("the person refused consent for organisation {holder}"),
            Some(d),
        );
    }
    if question.purpose == Purpose::Emergency {
        if let Some(d) = find(&|d| d.kind == DirectiveKind::EmergencyOptOut) {
            return DecisionResult::new(
                Decision::Deny,
                "the person opted out of emergency access".into(),
                Some(d),
            );
        }
        return DecisionResult::new(
            Decision::Permit,
            "emergency access (break-the-glass); no emergency opt-out".into(),
            None,
        );
    }
    if let Some(d) = find(&|d| {
        d.kind == DirectiveKind::Consent
            && d.decision == Decision::Permit
            && d.ura.as_deref() == Some(question.requester_ura)
            && d.covers(category)
    }) {
        return DecisionResult::new(
            Decision::Permit,
            format!(
                "explicit consent for organisation {}",
                question.requester_ura
            ),
            Some(d),
        );
    }
    DecisionResult::new(
        Decision::Permit,
        "no objection recorded; basis: a treatment relation, established at the source".into(),
        None,
    )
}

/// The current version of every directive of one person, oldest first. Blocking; runs on
/// the caller's connection so a lookup reads registrations and directives consistently.
pub fn current_directives(conn: &mut dyn Conn, pseudonym: &str) -> Result<Vec<Directive>, DbError> {
    Ok(current_of(directive_versions(conn, pseudonym)?))
}

/// The columns of a directive version, in the order [`directive_from_row`] reads them.
pub(crate) const DIRECTIVE_COLUMNS: &str = "directive_id, version, kind, category, ura, decision, \
     status, valid_from_ms, valid_until_ms, recorded_at_ms, recorded_by";

/// How many columns [`DIRECTIVE_COLUMNS`] names.
pub(crate) const DIRECTIVE_COLUMN_COUNT: usize = 11;

/// The current version of each directive among `versions` (every version of a person's
/// directives, in any order).
pub(crate) fn current_of(mut versions: Vec<Directive>) -> Vec<Directive> {
    versions.sort_by(|a, b| {
        (a.directive_id.as_str(), a.version).cmp(&(b.directive_id.as_str(), b.version))
    });
    let mut current: Vec<Directive> = Vec::new();
    for directive in versions {
        match current.last_mut() {
            Some(last) if last.directive_id == directive.directive_id => *last = directive,
            _ => current.push(directive),
        }
    }
    current
}

/// Every version of every directive of one person, by directive then version.
fn directive_versions(conn: &mut dyn Conn, pseudonym: &str) -> Result<Vec<Directive>, DbError> {
    let sql = format!(
        "SELECT {DIRECTIVE_COLUMNS} FROM consent_directives WHERE pseudonym = {} \
         ORDER BY directive_id, version",
        conn.dialect().placeholder(1)
    );
    let rows = conn.query(&sql, &[pseudonym.into()])?;
    Ok(rows.into_iter().filter_map(directive_from_row).collect())
}

fn optional_text(value: &mut SqlValue) -> Option<String> {
    match value {
        SqlValue::Null => None,
        other => Some(other.take_text()),
    }
}

/// A directive version from its [`DIRECTIVE_COLUMNS`]; `None` for an unknown kind.
pub(crate) fn directive_from_row(mut row: Vec<SqlValue>) -> Option<Directive> {
    let kind = DirectiveKind::from_code(&row[2].take_text())?;
    let decision = if row[5].take_text() == "permit" {
        Decision::Permit
    } else {
        Decision::Deny
    };
    let valid_from_ms = row[7].int();
    let valid_until_ms = match row[8] {
        SqlValue::Null => None,
        ref v => Some(v.int()),
    };
    Some(Directive {
        directive_id: row[0].take_text(),
        version: row[1].int(),
        kind,
        category: optional_text(&mut row[3]),
        ura: optional_text(&mut row[4]),
        decision,
        status: row[6].take_text(),
        valid_from: format_instant(valid_from_ms),
        valid_until: valid_until_ms.map(format_instant),
        recorded_at: format_instant(row[9].int()),
        recorded_by: row[10].take_text(),
        valid_from_ms,
        valid_until_ms,
    })
}

fn insert_version(
    conn: &mut dyn Conn,
    pseudonym: &str,
    d: &Directive,
    recorded_at_ms: i64,
) -> Result<(), DbError> {
    let placeholders: Vec<String> = (1..=12).map(|n| conn.dialect().placeholder(n)).collect();
    let sql = format!(
        "INSERT INTO consent_directives (directive_id, version, pseudonym, kind, category, ura, decision, \
         status, valid_from_ms, valid_until_ms, recorded_at_ms, recorded_by) VALUES ({})",
        placeholders.join(", ")
    );
    let text = |v: &Option<String>| v.clone().map_or(SqlValue::Null, SqlValue::Text);
    conn.execute(
        &sql,
        &[
            d.directive_id.as_str().into(),
            d.version.into(),
            pseudonym.into(),
            d.kind.code().into(),
            text(&d.category),
            text(&d.ura),
            match d.decision {
                Decision::Permit => "permit",
                Decision::Deny => "deny",
            }
            .into(),
            d.status.as_str().into(),
            d.valid_from_ms.into(),
            d.valid_until_ms.map_or(SqlValue::Null, SqlValue::Int),
            recorded_at_ms.into(),
            d.recorded_by.as_str().into(),
        ],
    )?;
    Ok(())
}

/// The consent register's routes, under `/consent`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route("/directives", post(record))
        .route("/directives/query", post(query))
        .route("/directives/{id}/revoke", post(revoke))
        .route("/decision", post(decision))
}

/// A new directive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDirective {
    /// Exchange token for the referral index, identifying the person.
    pub token: TokenJson,
    /// Kind.
    pub kind: DirectiveKind,
    /// Category; absent for all.
    pub category: Option<String>,
    /// Organisation (consent only).
    pub ura: Option<String>,
    /// Consent only: permit or deny.
    pub decision: Option<Decision>,
    /// Start (RFC 3339 or a date); default now.
    pub valid_from: Option<String>,
    /// End, exclusive (RFC 3339 or a date); default open-ended.
    pub valid_until: Option<String>,
}

fn recorded_by(caller: &Caller) -> Result<String, ApiError> {
    match caller {
        Caller::Organisation(ura) => Ok(ura.clone()),
        Caller::Admin => Ok("operator".into()),
        Caller::Anonymous => Err(ApiError::unauthenticated(
            "missing credentials: send Authorization: Bearer <key>",
        )),
    }
}

fn instant(field: &str, text: &str) -> Result<i64, ApiError> {
    parse_date_range(text)
        .map(|range| range.low_ms)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{field} {text:?} is not a date or date-time"))
        })
}

async fn record(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewDirective>, JsonRejection>,
) -> Result<(StatusCode, Json<Directive>), ApiError> {
    let recorded_by = recorded_by(&caller)?;
    let Json(request) = body?;
    if let Some(category) = &request.category
        && DataCategory::from_code(category).is_none()
    {
        return Err(ApiError::bad_request(format!(
            "unknown data category {category:?}"
        )));
    }
    let decision = match (request.kind, request.decision) {
        (DirectiveKind::Consent, Some(decision)) => decision,
        (DirectiveKind::Consent, None) => {
            return Err(ApiError::bad_request(
                "consent needs a decision: permit or deny",
            ));
        }
        (_, Some(Decision::Permit)) => {
            return Err(ApiError::bad_request("an opt-out is always a deny"));
        }
        (_, _) => Decision::Deny,
    };
    match (request.kind, &request.ura) {
        (DirectiveKind::Consent, Some(ura)) => crate::registry::check_ura(ura)?,
        (DirectiveKind::Consent, None) => {
            return Err(ApiError::bad_request("consent names an organisation: ura"));
        }
        (_, Some(_)) => {
            return Err(ApiError::bad_request("only consent names an organisation"));
        }
        (_, None) => {}
    }
    if request.kind == DirectiveKind::EmergencyOptOut && request.category.is_some() {
        return Err(ApiError::bad_request(
            "an emergency opt-out covers all categories",
        ));
    }
    let now = zorgnet_db::now_ms();
    let valid_from_ms = request
        .valid_from
        .as_deref()
        .map(|t| instant("valid_from", t))
        .transpose()?
        .unwrap_or(now);
    let valid_until_ms = request
        .valid_until
        .as_deref()
        .map(|t| instant("valid_until", t))
        .transpose()?;
    if valid_until_ms.is_some_and(|until| until <= valid_from_ms) {
        return Err(ApiError::bad_request(
            "valid_until must be after valid_from",
        ));
    }
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let directive = Directive {
        directive_id: uuid::Uuid::new_v4().to_string(),
        version: 1,
        kind: request.kind,
        category: request.category,
        ura: request.ura,
        decision,
        status: "active".into(),
        valid_from: format_instant(valid_from_ms),
        valid_until: valid_until_ms.map(format_instant),
        recorded_at: format_instant(now),
        recorded_by,
        valid_from_ms,
        valid_until_ms,
    };
    let db = state.db.clone();
    let stored = directive.clone();
    crate::blocking(move || {
        Ok(db.write_transaction(|conn| insert_version(conn, &pseudonym, &stored, now))?)
    })
    .await?;
    metrics::counter!("zorgnet_consent_changes_total").increment(1);
    tracing::info!(directive = %directive.directive_id, kind = directive.kind.code(), "recorded consent directive");
    Ok((StatusCode::CREATED, Json(directive)))
}

/// Identifies the person by token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonRequest {
    /// Exchange token for the referral index.
    pub token: TokenJson,
}

async fn revoke(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(directive_id): Path<String>,
    body: Result<Json<PersonRequest>, JsonRejection>,
) -> Result<Json<Directive>, ApiError> {
    let recorded_by = recorded_by(&caller)?;
    let Json(request) = body?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    crate::blocking(move || {
        db.write_transaction(|conn| -> Result<Directive, ApiError> {
            let current = current_directives(conn, &pseudonym)?;
            let Some(mut directive) = current.into_iter().find(|d| d.directive_id == directive_id)
            else {
                return Err(ApiError::not_found("this person has no such directive"));
            };
            if directive.status == "revoked" {
                return Err(ApiError::conflict("the directive is already revoked"));
            }
            let now = zorgnet_db::now_ms();
            directive.version += 1;
            directive.status = "revoked".into();
            directive.recorded_at = format_instant(now);
            directive.recorded_by = recorded_by;
            insert_version(conn, &pseudonym, &directive, now)?;
            metrics::counter!("zorgnet_consent_changes_total").increment(1);
            Ok(directive)
        })
    })
    .await
    .map(Json)
}

/// A person's directives: current versions and the full history.
#[derive(Debug, Serialize, Deserialize)]
pub struct DirectivesResponse {
    /// Current version of each directive.
    pub current: Vec<Directive>,
    /// Every version, by directive then version.
    pub history: Vec<Directive>,
}

async fn query(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PersonRequest>, JsonRejection>,
) -> Result<Json<DirectivesResponse>, ApiError> {
    caller.authenticated()?;
    let Json(request) = body?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    let (current, history) = crate::blocking(move || {
        Ok(db.with_reader(|conn| -> Result<_, DbError> {
            Ok((
                current_directives(conn, &pseudonym)?,
                directive_versions(conn, &pseudonym)?,
            ))
        })?)
    })
    .await?;
    Ok(Json(DirectivesResponse { current, history }))
}

/// A decision request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Exchange token for the referral index.
    pub token: TokenJson,
    /// The organisation whose professional wants to read.
    pub requester_ura: String,
    /// The organisation holding the data.
    pub holder_ura: Option<String>,
    /// UZI role code of the professional; absent when the requester names no professional
    /// (an organisation's own access token without a role), and then the role rule of
    /// [`role_may_see`] is not applied.
    pub role: Option<String>,
    /// Category.
    pub category: String,
    /// Purpose; default treatment.
    #[serde(default)]
    pub purpose: Purpose,
}

async fn decision(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<DecisionRequest>, JsonRejection>,
) -> Result<Json<DecisionResult>, ApiError> {
    caller.organisation()?;
    let Json(request) = body?;
    crate::registry::check_ura(&request.requester_ura)?;
    if let Some(holder) = &request.holder_ura {
        crate::registry::check_ura(holder)?;
    }
    let category = DataCategory::from_code(&request.category).ok_or_else(|| {
        ApiError::bad_request(format!("unknown data category {:?}", request.category))
    })?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    let directives =
        crate::blocking(move || Ok(db.with_reader(|conn| current_directives(conn, &pseudonym))?))
            .await?;
    let result = decide(
        &directives,
        &AccessQuestion {
            requester_ura: &request.requester_ura,
            holder_ura: request.holder_ura.as_deref(),
            role: request.role.as_deref(),
            category,
            purpose: request.purpose,
        },
        zorgnet_db::now_ms(),
    );
    metrics::counter!("zorgnet_consent_decisions_total", "decision" => match result.decision {
        Decision::Permit => "permit",
        Decision::Deny => "deny",
    })
    .increment(1);
    Ok(Json(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(
        kind: DirectiveKind,
        category: Option<&str>,
        ura: Option<&str>,
        decision: Decision,
    ) -> Directive {
        Directive {
            directive_id: format!("{kind:?}-{category:?}-{ura:?}"),
            version: 1,
            kind,
            category: category.map(String::from),
            ura: ura.map(String::from),
            decision,
            status: "active".into(),
            valid_from: String::new(),
            valid_until: None,
            recorded_at: String::new(),
            recorded_by: "operator".into(),
            valid_from_ms: 1_000,
            valid_until_ms: Some(2_000),
        }
    }

    fn ask(
        role: Option<&'static str>,
        category: DataCategory,
        purpose: Purpose,
    ) -> AccessQuestion<'static> {
        AccessQuestion {
            requester_ura: "00000001",
            holder_ura: Some("00000002"),
            role,
            category,
            purpose,
        }
    }

    #[test]
    fn the_policy_answers_with_its_reason() {
        let q = ask(Some("01.015"), DataCategory::Medication, Purpose::Treatment);
        assert_eq!(decide(&[], &q, 1_500).decision, Decision::Permit);

        let pharmacist = ask(Some("17.000"), DataCategory::Imaging, Purpose::Treatment);
        let denied = decide(&[], &pharmacist, 1_500);
        assert_eq!(denied.decision, Decision::Deny);
        assert!(denied.reason.contains("17.000"), "{}", denied.reason);

        let category_opt_out = [directive(
            DirectiveKind::OptOut,
            Some("medication"),
            None,
            Decision::Deny,
        )];
        assert_eq!(
            decide(&category_opt_out, &q, 1_500).decision,
            Decision::Deny
        );
        let allergies = ask(Some("01.015"), DataCategory::Allergies, Purpose::Treatment);
        assert_eq!(
            decide(&category_opt_out, &allergies, 1_500).decision,
            Decision::Permit
        );
        assert_eq!(
            decide(&category_opt_out, &q, 2_000).decision,
            Decision::Permit,
            "validity ends"
        );
        assert_eq!(
            decide(&category_opt_out, &q, 999).decision,
            Decision::Permit,
            "not yet valid"
        );

        let general = [directive(DirectiveKind::OptOut, None, None, Decision::Deny)];
        let emergency = ask(Some("01.015"), DataCategory::Allergies, Purpose::Emergency);
        assert_eq!(decide(&general, &emergency, 1_500).decision, Decision::Deny);

        let no_emergency = [directive(
            DirectiveKind::EmergencyOptOut,
            None,
            None,
            Decision::Deny,
        )];
        assert_eq!(
            decide(&no_emergency, &emergency, 1_500).decision,
            Decision::Deny
        );
        assert_eq!(
            decide(&no_emergency, &allergies, 1_500).decision,
            Decision::Permit
        );

        let refused_holder = [directive(
            DirectiveKind::Consent,
            None,
            Some("00000002"),
            Decision::Deny,
        )];
        let result = decide(&refused_holder, &q, 1_500);
        assert_eq!(result.decision, Decision::Deny);
        assert!(result.reason.contains("00000002"));

        let consented = [directive(
            DirectiveKind::Consent,
            Some("medication"),
            Some("00000001"),
            Decision::Permit,
        )];
        assert!(
            decide(&consented, &q, 1_500)
                .reason
                .contains("explicit consent")
        );

        let mut revoked = directive(DirectiveKind::OptOut, None, None, Decision::Deny);
        revoked.status = "revoked".into();
        assert_eq!(decide(&[revoked], &q, 1_500).decision, Decision::Permit);
    }
}
