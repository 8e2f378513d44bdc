//! The consent register (`/consent`; Dutch: OTV, online toestemmingsvoorziening, cf. Mitz):
//! what a citizen decided about sharing their data, and the decisions that follow from it.
//!
//! A citizen's wishes are *directives*, keyed by the referral index's pseudonym (never a
//! BSN): a general opt-out, an opt-out of one category, explicit consent (yes or no) for a
//! named organisation (optionally for one category), and an emergency opt-out. Directives
//! are versioned and never updated in place: every change (recording, revoking) is a new
//! version with who made it and when, and each has a validity period.
//!
//! Who may do what with directives (enforced here, by `Steward`):
//! - the operator records, revokes and reads every directive, with its full history;
//! - an organisation records directives on the citizen's behalf (kept as recorded by its
//!   URA, and logged as such, without the person), and revokes and reads only the
//!   directives it recorded itself: a query shows it nothing of others' directives, and a
//!   revocation of another's directive is the same 404 as one of an unknown id;
//! - the citizen manages every directive of their own through a citizen portal: an
//!   organisation the operator admitted as one ([`crate::Hub::admit_citizen_portal`]), which
//!   authenticated the citizen and names them by an exchange token like anyone else. What
//!   it records is kept as recorded by the citizen (`recorded_by` [`CITIZEN`]); it reads,
//!   revokes and changes every directive of the person, whoever recorded it.
//!
//! [`decide`] is the one policy that answers "may organisation A's professional with role R
//! see category C of this person, for purpose P?". The referral index applies it to filter
//! lookups (requester = the caller); nodes ask `/consent/decision` before serving other
//! organisations, and only about data they hold themselves (holder = the caller, else 403).
//! A treatment read needs a basis: a treatment relation of the requester
//! ([`crate::relations`]) or the person's explicit consent for it.
//!
//! An answer carries a reason *class*, never the person's choice. The mapping (kept here,
//! not sent):
//!
//! | what decided | class |
//! |---|---|
//! | the requester is the holder | `holder` (permit) |
//! | the role may not see the category ([`role_may_see`]) | `role-not-permitted` |
//! | treatment without a relation in force and without explicit consent | `no-basis` |
//! | general opt-out, category opt-out, refused consent for the requester or the holder, emergency opt-out (emergency only) | `not-permitted` |
//! | break-the-glass, nothing against it | `emergency` (permit) |
//! | a relation in force, nothing against it | `treatment-relation` (permit) |
//! | explicit consent, no relation, nothing against it | `consent` (permit) |
//!
//! The basis is checked before the choices, so that an organisation without one cannot
//! tell an opted-out person from any other.
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
use zorgnet_fhir::datetime::format_instant;

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

/// Why [`decide`] answered as it did, as a *class*: what the requester and the holder of
/// the data learn. A class never tells which choice the person made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Permit: the requester holds the data itself.
    Holder,
    /// Permit: the requester has a treatment relation in force with the person.
    TreatmentRelation,
    /// Permit: the person gave the requester explicit consent.
    Consent,
    /// Permit: break-the-glass in an emergency.
    Emergency,
    /// Deny: the professional's role may not see the category (a rule of the network, not
    /// of the person).
    RoleNotPermitted,
    /// Deny: the requester has no basis (no treatment relation, no explicit consent, no
    /// emergency).
    NoBasis,
    /// Deny: the person's own choices do not allow it (any opt-out, a refusal of consent
    /// for the requester or the holder, an emergency opt-out; which one is not said).
    NotPermitted,
}

impl Reason {
    /// The class's code, as it appears in answers.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Holder => "holder",
            Reason::TreatmentRelation => "treatment-relation",
            Reason::Consent => "consent",
            Reason::Emergency => "emergency",
            Reason::RoleNotPermitted => "role-not-permitted",
            Reason::NoBasis => "no-basis",
            Reason::NotPermitted => "not-permitted",
        }
    }
}

/// The answer of [`decide`]. Only `decision` and `reason` (a class) are ever sent; the
/// detail and the deciding directive stay at the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionResult {
    /// Permit or deny.
    pub decision: Decision,
    /// Why, as a class.
    pub reason: Reason,
    /// Why, in words, for the hub's own log and tests; may name the person's choice, so it
    /// is never sent.
    #[serde(skip)]
    pub detail: String,
    /// The directive that decided it, when one did; never sent.
    #[serde(skip)]
    pub directive_id: Option<String>,
}

impl DecisionResult {
    fn new(
        decision: Decision,
        reason: Reason,
        detail: impl Into<String>,
        directive: Option<&Directive>,
    ) -> Self {
        DecisionResult {
            decision,
            reason,
            detail: detail.into(),
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

/// Whether a professional with UZI role code `role` may see `category`: the network's one
/// table, `zorgnet_trust::roles`, which the nodes apply too.
pub fn role_may_see(role: &str, category: DataCategory) -> bool {
    zorgnet_trust::roles::Role::parse(role).is_some_and(|role| role.may_see(category.code()))
}

/// The policy: decides `question` against a person's current directives at `now_ms`, given
/// whether the requester has a treatment relation in force with the person (`related`, from
/// [`crate::relations::related`]). In this order:
///
/// 1. the holder asking about its own data is permitted (`holder`): sharing is what the
///    rest is about;
/// 2. a role that may not see the category is denied (`role-not-permitted`);
/// 3. there must be a basis: for an emergency, break-the-glass itself; for treatment, a
///    relation of the requester in force ([`crate::relations`]) or the person's explicit
///    consent for the requester covering the category; else `no-basis`. The basis is
///    checked before the person's choices so that an organisation without one learns
///    nothing about them;
/// 4. the person's choices win over any basis (EHDS: an opt-out holds in emergencies too):
///    a general or category opt-out, an explicit "no" for the requester or the holder, and
///    for an emergency an emergency opt-out deny, all as `not-permitted`;
/// 5. otherwise permit, with the basis as the reason (`emergency`, `treatment-relation`,
///    `consent`).
pub fn decide(
    directives: &[Directive],
    related: bool,
    question: &AccessQuestion<'_>,
    now_ms: i64,
) -> DecisionResult {
    let category = question.category;
    let requester = question.requester_ura;
    if question.holder_ura == Some(requester) {
        return DecisionResult::new(
            Decision::Permit,
            Reason::Holder,
            "the requester holds the data",
            None,
        );
    }
    if let Some(role) = question.role
        && !role_may_see(role, category)
    {
        return DecisionResult::new(
            Decision::Deny,
            Reason::RoleNotPermitted,
            format!("role {role} may not see {category}"),
            None,
        );
    }
    let in_force: Vec<&Directive> = directives.iter().filter(|d| d.in_force(now_ms)).collect();
    let find =
        |predicate: &dyn Fn(&Directive) -> bool| in_force.iter().copied().find(|d| predicate(d));
    let consented = find(&|d| {
        d.kind == DirectiveKind::Consent
            && d.decision == Decision::Permit
            && d.ura.as_deref() == Some(requester)
            && d.covers(category)
    });
    let basis = match (question.purpose, related, consented) {
        (Purpose::Emergency, _, _) => Reason::Emergency,
        (Purpose::Treatment, true, _) => Reason::TreatmentRelation,
        (Purpose::Treatment, false, Some(_)) => Reason::Consent,
        (Purpose::Treatment, false, None) => {
            return DecisionResult::new(
                Decision::Deny,
                Reason::NoBasis,
                format!("organisation {requester} has no treatment relation and no consent"),
                None,
            );
        }
    };
    let not_permitted = |detail: String, directive: &Directive| {
        DecisionResult::new(
            Decision::Deny,
            Reason::NotPermitted,
            detail,
            Some(directive),
        )
    };
    if let Some(d) = find(&|d| d.kind == DirectiveKind::OptOut && d.category.is_none()) {
        return not_permitted("the person opted out of all sharing".into(), d);
    }
    if let Some(d) = find(&|d| d.kind == DirectiveKind::OptOut && d.covers(category)) {
        return not_permitted(format!("the person opted out of sharing {category}"), d);
    }
    let refused = |ura: &str| {
        find(&|d| {
            d.kind == DirectiveKind::Consent
                && d.decision == Decision::Deny
                && d.ura.as_deref() == Some(ura)
                && d.covers(category)
        })
    };
    for ura in std::iter::once(requester).chain(question.holder_ura) {
        if let Some(d) = refused(ura) {
            return not_permitted(
                format!("the person refused consent for organisation {ura}"),
                d,
            );
        }
    }
    if question.purpose == Purpose::Emergency
        && let Some(d) = find(&|d| d.kind == DirectiveKind::EmergencyOptOut)
    {
        return not_permitted("the person opted out of emergency access".into(), d);
    }
    let detail = match basis {
        Reason::Emergency => "emergency access (break-the-glass); no emergency opt-out".into(),
        Reason::TreatmentRelation => format!("a treatment relation of organisation {requester}"),
        _ => format!("explicit consent for organisation {requester}"),
    };
    let directive = consented.filter(|_| basis == Reason::Consent);
    DecisionResult::new(Decision::Permit, basis, detail, directive)
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

/// Who acts on directives, and over which of them. [`Steward::of`] is the one place that
/// maps a [`Caller`] to what it may do here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Steward {
    /// The hub's operator: records, revokes and reads every directive.
    Operator,
    /// An organisation, acting on the citizen's behalf: records directives (kept as
    /// recorded by its URA), and revokes and reads only those it recorded.
    Organisation(String),
    /// The citizen, through the citizen portal with this URA: records (kept as recorded by
    /// the citizen), revokes and reads every directive of their own.
    Citizen(String),
}

impl Steward {
    fn of(state: &HubState, caller: &Caller) -> Result<Steward, ApiError> {
        match caller {
            Caller::Admin => Ok(Steward::Operator),
            Caller::Organisation(ura) if state.is_citizen_portal(ura) => {
                Ok(Steward::Citizen(ura.clone()))
            }
            Caller::Organisation(ura) => Ok(Steward::Organisation(ura.clone())),
            Caller::Anonymous => Err(ApiError::unauthenticated(
                "missing credentials: send Authorization: Bearer <key>",
            )),
        }
    }

    /// What `recorded_by` says for a version this steward makes.
    fn name(&self) -> String {
        match self {
            Steward::Operator => OPERATOR.into(),
            Steward::Organisation(ura) => ura.clone(),
            Steward::Citizen(_) => CITIZEN.into(),
        }
    }

    /// Whether this steward may read and change a directive first recorded by `recorder`.
    fn manages(&self, recorder: &str) -> bool {
        match self {
            Steward::Operator | Steward::Citizen(_) => true,
            Steward::Organisation(ura) => ura == recorder,
        }
    }
}

/// `recorded_by` of what the operator records.
const OPERATOR: &str = "operator";
/// `recorded_by` of what the citizen records through a citizen portal.
pub const CITIZEN: &str = "citizen";

/// The versions (every version of a person's directives) of the directives `steward`
/// manages: those whose first version it recorded.
fn managed_by(steward: &Steward, versions: Vec<Directive>) -> Vec<Directive> {
    let mut recorders: std::collections::HashMap<String, (i64, String)> =
        std::collections::HashMap::new();
    for d in &versions {
        let entry = recorders
            .entry(d.directive_id.clone())
            .or_insert_with(|| (d.version, d.recorded_by.clone()));
        if d.version < entry.0 {
            *entry = (d.version, d.recorded_by.clone());
        }
    }
    versions
        .into_iter()
        .filter(|d| {
            recorders
                .get(&d.directive_id)
                .is_some_and(|(_, recorder)| steward.manages(recorder))
        })
        .collect()
}

async fn record(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewDirective>, JsonRejection>,
) -> Result<(StatusCode, Json<Directive>), ApiError> {
    let steward = Steward::of(&state, &caller)?;
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
        .map(|t| crate::instant("valid_from", t))
        .transpose()?
        .unwrap_or(now);
    let valid_until_ms = request
        .valid_until
        .as_deref()
        .map(|t| crate::instant("valid_until", t))
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
        recorded_by: steward.name(),
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
    match &steward {
        Steward::Operator => tracing::info!(
            directive = %directive.directive_id,
            kind = directive.kind.code(),
            "the operator recorded a consent directive"
        ),
        Steward::Organisation(ura) => tracing::info!(
            directive = %directive.directive_id,
            kind = directive.kind.code(),
            recorded_by = %ura,
            "an organisation recorded a consent directive on the citizen's behalf"
        ),
        Steward::Citizen(portal) => tracing::info!(
            directive = %directive.directive_id,
            kind = directive.kind.code(),
            portal = %portal,
            "a citizen recorded a consent directive through a citizen portal"
        ),
    }
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
    let steward = Steward::of(&state, &caller)?;
    let Json(request) = body?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    let revoked = crate::blocking(move || {
        db.write_transaction(|conn| -> Result<Directive, ApiError> {
            let versions = managed_by(&steward, directive_versions(conn, &pseudonym)?);
            // Another's directive answers exactly as one that does not exist.
            let Some(mut directive) = current_of(versions)
                .into_iter()
                .find(|d| d.directive_id == directive_id)
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
            directive.recorded_by = steward.name();
            insert_version(conn, &pseudonym, &directive, now)?;
            Ok(directive)
        })
    })
    .await?;
    metrics::counter!("zorgnet_consent_changes_total").increment(1);
    tracing::info!(directive = %revoked.directive_id, recorded_by = %revoked.recorded_by, "revoked a consent directive");
    Ok(Json(revoked))
}

/// A person's directives that the caller manages (all of them for the operator, those it
/// recorded for an organisation): current versions and their full history.
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
    let steward = Steward::of(&state, &caller)?;
    let Json(request) = body?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    let history =
        crate::blocking(move || Ok(db.with_reader(|conn| directive_versions(conn, &pseudonym))?))
            .await?;
    let history = managed_by(&steward, history);
    let current = current_of(history.clone());
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
    /// The organisation holding the data: the caller itself (a node asks about its own
    /// data only); absent means the caller.
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
    let holder = caller.organisation()?.to_string();
    let Json(request) = body?;
    crate::registry::check_ura(&request.requester_ura)?;
    if let Some(named) = &request.holder_ura {
        crate::registry::check_ura(named)?;
        if *named != holder {
            return Err(ApiError::forbidden(
                "a node asks only about the data it holds: holder_ura must be the caller's URA",
            ));
        }
    }
    let category = DataCategory::from_code(&request.category).ok_or_else(|| {
        ApiError::bad_request(format!("unknown data category {:?}", request.category))
    })?;
    let pseudonym = state
        .prs
        .open_referral_index_token(&request.token)?
        .to_string();
    let db = state.db.clone();
    let requester = request.requester_ura.clone();
    let now = zorgnet_db::now_ms();
    let (directives, related) = crate::blocking(move || {
        Ok(db.with_reader(|conn| -> Result<_, DbError> {
            Ok((
                current_directives(conn, &pseudonym)?,
                crate::relations::related(conn, &pseudonym, &requester, now)?,
            ))
        })?)
    })
    .await?;
    let result = decide(
        &directives,
        related,
        &AccessQuestion {
            requester_ura: &request.requester_ura,
            holder_ura: Some(&holder),
            role: request.role.as_deref(),
            category,
            purpose: request.purpose,
        },
        now,
    );
    tracing::debug!(
        requester = %request.requester_ura,
        holder = %holder,
        category = %category,
        reason = result.reason.code(),
        "consent decision"
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
    fn the_policy_answers_with_a_reason_class() {
        let related = true;
        let q = ask(Some("01.015"), DataCategory::Medication, Purpose::Treatment);
        let permitted = decide(&[], related, &q, 1_500);
        assert_eq!(
            (permitted.decision, permitted.reason),
            (Decision::Permit, Reason::TreatmentRelation)
        );
        assert_eq!(decide(&[], false, &q, 1_500).reason, Reason::NoBasis);

        let pharmacist = ask(Some("17.000"), DataCategory::Imaging, Purpose::Treatment);
        let denied = decide(&[], related, &pharmacist, 1_500);
        assert_eq!(denied.decision, Decision::Deny);
        assert_eq!(denied.reason, Reason::RoleNotPermitted);
        assert!(denied.detail.contains("17.000"), "{}", denied.detail);

        let category_opt_out = [directive(
            DirectiveKind::OptOut,
            Some("medication"),
            None,
            Decision::Deny,
        )];
        let opted_out = decide(&category_opt_out, related, &q, 1_500);
        assert_eq!(
            (opted_out.decision, opted_out.reason),
            (Decision::Deny, Reason::NotPermitted)
        );
        let sent = serde_json::to_value(&opted_out).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"decision": "deny", "reason": "not-permitted"}),
            "neither the choice nor the directive leaves the hub"
        );
        assert_eq!(
            decide(&category_opt_out, false, &q, 1_500).reason,
            Reason::NoBasis,
            "without a basis an organisation learns nothing of the person's choices"
        );
        let allergies = ask(Some("01.015"), DataCategory::Allergies, Purpose::Treatment);
        assert_eq!(
            decide(&category_opt_out, related, &allergies, 1_500).decision,
            Decision::Permit
        );
        assert_eq!(
            decide(&category_opt_out, related, &q, 2_000).decision,
            Decision::Permit,
            "the opt-out's validity ends"
        );
        assert_eq!(
            decide(&category_opt_out, related, &q, 999).decision,
            Decision::Permit,
            "the opt-out is not yet valid"
        );

        let general = [directive(DirectiveKind::OptOut, None, None, Decision::Deny)];
        let emergency = ask(Some("01.015"), DataCategory::Allergies, Purpose::Emergency);
        let result = decide(&general, false, &emergency, 1_500);
        assert_eq!(
            (result.decision, result.reason),
            (Decision::Deny, Reason::NotPermitted)
        );
        let result = decide(&[], false, &emergency, 1_500);
        assert_eq!(
            (result.decision, result.reason),
            (Decision::Permit, Reason::Emergency),
            "an emergency needs no relation"
        );

        let no_emergency = [directive(
            DirectiveKind::EmergencyOptOut,
            None,
            None,
            Decision::Deny,
        )];
        assert_eq!(
            decide(&no_emergency, false, &emergency, 1_500).reason,
            Reason::NotPermitted
        );
        assert_eq!(
            decide(&no_emergency, related, &allergies, 1_500).decision,
            Decision::Permit
        );

        let refused_holder = [directive(
            DirectiveKind::Consent,
            None,
            Some("00000002"),
            Decision::Deny,
        )];
        let result = decide(&refused_holder, related, &q, 1_500);
        assert_eq!(
            (result.decision, result.reason),
            (Decision::Deny, Reason::NotPermitted)
        );
        assert!(result.detail.contains("00000002"));

        let consented = [directive(
            DirectiveKind::Consent,
            Some("medication"),
            Some("00000001"),
            Decision::Permit,
        )];
        let result = decide(&consented, false, &q, 1_500);
        assert_eq!(
            (result.decision, result.reason),
            (Decision::Permit, Reason::Consent),
            "explicit consent is a basis"
        );
        assert_eq!(
            decide(&consented, false, &allergies, 1_500).reason,
            Reason::NoBasis,
            "consent for one category is no basis for another"
        );

        let own = AccessQuestion {
            holder_ura: Some("00000001"),
            ..ask(None, DataCategory::Medication, Purpose::Treatment)
        };
        assert_eq!(
            decide(&general, false, &own, 1_500).reason,
            Reason::Holder,
            "the holder's own data"
        );

        let mut revoked = directive(DirectiveKind::OptOut, None, None, Decision::Deny);
        revoked.status = "revoked".into();
        assert_eq!(
            decide(&[revoked], related, &q, 1_500).decision,
            Decision::Permit
        );
    }

    #[test]
    fn an_organisation_manages_only_what_it_recorded() {
        let mut first = directive(DirectiveKind::OptOut, None, None, Decision::Deny);
        first.recorded_by = "00000001".into();
        let mut revoked_by_operator = first.clone();
        revoked_by_operator.version = 2;
        revoked_by_operator.recorded_by = OPERATOR.into();
        let mut others = directive(DirectiveKind::EmergencyOptOut, None, None, Decision::Deny);
        others.recorded_by = "00000002".into();
        let versions = vec![revoked_by_operator, others, first];
        let mine = managed_by(&Steward::Organisation("00000001".into()), versions.clone());
        assert_eq!(mine.len(), 2, "both versions of its own directive");
        assert!(mine.iter().all(|d| d.kind == DirectiveKind::OptOut));
        assert_eq!(managed_by(&Steward::Operator, versions).len(), 3);
    }
}
