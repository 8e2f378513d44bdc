//! The professional register (`/professionals`): which professional (by UZI number) holds
//! which role (UZI role code) at which organisation (URA), the source of truth the token
//! endpoint ([`crate::trust`]) asks before it names a role in an access token.
//!
//! The operator adds, changes and removes entries (`PUT` replaces a professional's name and
//! all of their roles; `DELETE` removes them). An organisation reads only what it needs: the
//! professionals holding a role at that organisation, with those roles only; another
//! organisation's staff and roles are not shown to it (a professional without a role there is
//! "not found").
//! What it is not: an identity provider (it does not authenticate professionals; the
//! organisation does, and asks for a token naming them), or the UZI register itself (the
//! operator keeps this copy of what it needs).
//!
//! Tables (component `professionals`): `professionals`, `professional_roles`, keyed by
//! (UZI number, URA, role) so "does this professional hold this role here" is one probe.

use crate::HubState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::registry::{MAX_NAME_CHARS, check_ura};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use zorgnet_db::sql::{Row, SqlValue};
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_trust::{is_role_code, is_uzi_number};

/// The professional register's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "professionals",
    version: 1,
    sql: "
CREATE TABLE professionals (
    uzi {text} PRIMARY KEY,
    name {text} NOT NULL,
    updated_at_ms {int} NOT NULL
);
CREATE TABLE professional_roles (
    uzi {text} NOT NULL,
    ura {text} NOT NULL,
    role {text} NOT NULL,
    PRIMARY KEY (uzi, ura, role)
) {without_rowid};
CREATE INDEX professional_roles_by_organisation ON professional_roles (ura, uzi)",
}];

/// Most roles one professional may hold (across organisations).
pub const MAX_ROLES_PER_PROFESSIONAL: usize = 100;
/// Most professionals on one listing page.
pub const MAX_LIST_PAGE: usize = 1_000;

/// One role of a professional at one organisation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The organisation's URA number.
    pub ura: String,
    /// The UZI role code (`01.015`).
    pub role: String,
}

/// A professional as the register shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Professional {
    /// UZI number (nine digits).
    pub uzi: String,
    /// Name.
    pub name: String,
    /// Roles, by URA then role code (to an organisation: its own only).
    pub roles: Vec<Role>,
}

/// Body of `PUT /professionals/{uzi}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfessionalInput {
    /// Name.
    pub name: String,
    /// Every role the professional holds; replaces what the register had.
    pub roles: Vec<Role>,
}

/// A listing page request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The last UZI number of the previous page.
    pub after: Option<String>,
    /// Page size, at most [`MAX_LIST_PAGE`].
    pub limit: Option<usize>,
}

/// A page of professionals.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    /// Professionals, by UZI number.
    pub professionals: Vec<Professional>,
    /// Cursor (`after`) for the next page, when there may be more.
    pub next: Option<String>,
}

/// The register's routes, under `/professionals`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new().route("/", get(list)).route(
        "/{uzi}",
        get(show).put(put_professional).delete(remove_professional),
    )
}

/// Checks the form of a UZI number: nine digits.
pub fn check_uzi(uzi: &str) -> Result<(), ApiError> {
    if is_uzi_number(uzi) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "UZI number {uzi:?} must be 9 digits"
        )))
    }
}

/// Whose roles a caller may see: the operator every organisation's, an organisation its own.
fn visible_to(caller: &Caller) -> Result<Option<String>, ApiError> {
    match caller {
        Caller::Admin => Ok(None),
        other => Ok(Some(other.organisation()?.to_string())),
    }
}

async fn list(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let organisation = visible_to(&caller)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_LIST_PAGE).clamp(1, MAX_LIST_PAGE);
    let after = query.after.unwrap_or_default();
    let db = state.db.clone();
    let professionals =
        crate::blocking(move || Ok(page(&db, organisation.as_deref(), &after, limit)?)).await?;
    let next = (professionals.len() == limit)
        .then(|| professionals.last().map(|p| p.uzi.clone()))
        .flatten();
    Ok(Json(ListResponse {
        professionals,
        next,
    }))
}

async fn show(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(uzi): Path<String>,
) -> Result<Json<Professional>, ApiError> {
    let organisation = visible_to(&caller)?;
    check_uzi(&uzi)?;
    let db = state.db.clone();
    let found =
        crate::blocking(move || Ok(professional(&db, &uzi, organisation.as_deref())?)).await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such professional"))
}

async fn put_professional(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(uzi): Path<String>,
    body: Result<Json<ProfessionalInput>, JsonRejection>,
) -> Result<(StatusCode, Json<Professional>), ApiError> {
    caller.admin()?;
    check_uzi(&uzi)?;
    let Json(input) = body?;
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if input.roles.len() > MAX_ROLES_PER_PROFESSIONAL {
        return Err(ApiError::bad_request(format!(
            "a professional holds at most {MAX_ROLES_PER_PROFESSIONAL} roles"
        )));
    }
    for (i, role) in input.roles.iter().enumerate() {
        check_ura(&role.ura)
            .map_err(|e| ApiError::bad_request(format!("roles[{i}]: {}", e.detail)))?;
        if !is_role_code(&role.role) {
            return Err(ApiError::bad_request(format!(
                "roles[{i}]: {:?} is not a UZI role code (like 01.015)",
                role.role
            )));
        }
    }
    let roles: Vec<Role> = input
        .roles
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let db = state.db.clone();
    let stored = Professional {
        uzi: uzi.clone(),
        name,
        roles,
    };
    let writing = stored.clone();
    let created = crate::blocking(move || write(&db, &writing)).await?;
    tracing::info!(
        roles = stored.roles.len(),
        created,
        "set a professional's roles"
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)))
}

async fn remove_professional(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(uzi): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    check_uzi(&uzi)?;
    let db = state.db.clone();
    let removed = crate::blocking(move || {
        db.write_transaction(|conn| -> Result<u64, ApiError> {
            let p = conn.dialect().placeholder(1);
            conn.execute(
                &format!("DELETE FROM professional_roles WHERE uzi = {p}"),
                &[uzi.as_str().into()],
            )?;
            Ok(conn.execute(
                &format!("DELETE FROM professionals WHERE uzi = {p}"),
                &[uzi.as_str().into()],
            )?)
        })
    })
    .await?;
    if removed == 0 {
        return Err(ApiError::not_found("no such professional"));
    }
    tracing::info!("removed a professional from the register");
    Ok(StatusCode::NO_CONTENT)
}

/// Stores `professional`, replacing their name and roles; true when they are new. Every
/// organisation named must be registered. Blocking.
fn write(db: &Database, professional: &Professional) -> Result<bool, ApiError> {
    db.write_transaction(|conn| -> Result<bool, ApiError> {
        let d = conn.dialect();
        let registered = format!(
            "SELECT 1 FROM registry_organisations WHERE ura = {}",
            d.placeholder(1)
        );
        for (i, role) in professional.roles.iter().enumerate() {
            if conn
                .query(&registered, &[role.ura.as_str().into()])?
                .is_empty()
            {
                return Err(ApiError::unprocessable(format!(
                    "roles[{i}]: organisation {} is not registered",
                    role.ura
                )));
            }
        }
        let uzi = SqlValue::from(professional.uzi.as_str());
        let created = conn
            .query(
                &format!(
                    "SELECT 1 FROM professionals WHERE uzi = {}",
                    d.placeholder(1)
                ),
                std::slice::from_ref(&uzi),
            )?
            .is_empty();
        conn.execute(
            &format!(
                "INSERT INTO professionals (uzi, name, updated_at_ms) VALUES ({}, {}, {}) \
                 ON CONFLICT (uzi) DO UPDATE SET name = excluded.name, \
                 updated_at_ms = excluded.updated_at_ms",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3)
            ),
            &[
                uzi.clone(),
                professional.name.as_str().into(),
                zorgnet_db::now_ms().into(),
            ],
        )?;
        conn.execute(
            &format!(
                "DELETE FROM professional_roles WHERE uzi = {}",
                d.placeholder(1)
            ),
            std::slice::from_ref(&uzi),
        )?;
        let insert = format!(
            "INSERT INTO professional_roles (uzi, ura, role) VALUES ({}, {}, {})",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3)
        );
        for role in &professional.roles {
            conn.execute(
                &insert,
                &[
                    uzi.clone(),
                    role.ura.as_str().into(),
                    role.role.as_str().into(),
                ],
            )?;
        }
        Ok(created)
    })
}

/// Whether the register gives professional `uzi` role `role` at organisation `ura`.
/// Blocking.
pub fn holds_role(db: &Database, uzi: &str, ura: &str, role: &str) -> Result<bool, DbError> {
    let d = db.dialect();
    let sql = format!(
        "SELECT 1 FROM professional_roles WHERE uzi = {} AND ura = {} AND role = {}",
        d.placeholder(1),
        d.placeholder(2),
        d.placeholder(3)
    );
    let rows = db.with_reader(|conn| conn.query(&sql, &[uzi.into(), ura.into(), role.into()]))?;
    Ok(!rows.is_empty())
}

/// One professional with the roles `organisation` may see (all for `None`); `None` when
/// the register does not have them, or they hold no role at `organisation`. Blocking.
pub fn professional(
    db: &Database,
    uzi: &str,
    organisation: Option<&str>,
) -> Result<Option<Professional>, DbError> {
    let d = db.dialect();
    let (sql, params): (String, Vec<SqlValue>) = match organisation {
        None => (
            format!(
                "SELECT p.uzi, p.name, r.ura, r.role FROM professionals p \
                 LEFT JOIN professional_roles r ON r.uzi = p.uzi WHERE p.uzi = {} \
                 ORDER BY r.ura, r.role",
                d.placeholder(1)
            ),
            vec![uzi.into()],
        ),
        Some(ura) => (
            format!(
                "SELECT p.uzi, p.name, r.ura, r.role FROM professionals p \
                 JOIN professional_roles r ON r.uzi = p.uzi WHERE p.uzi = {} AND r.ura = {} \
                 ORDER BY r.role",
                d.placeholder(1),
                d.placeholder(2)
            ),
            vec![uzi.into(), ura.into()],
        ),
    };
    let rows = db.with_reader(|conn| conn.query(&sql, &params))?;
    Ok(group(rows).into_iter().next())
}

/// A page of professionals after UZI number `after`, with the roles `organisation` may see
/// (all for `None`; for an organisation only professionals holding a role there). Blocking.
fn page(
    db: &Database,
    organisation: Option<&str>,
    after: &str,
    limit: usize,
) -> Result<Vec<Professional>, DbError> {
    let d = db.dialect();
    let (sql, params): (String, Vec<SqlValue>) = match organisation {
        None => (
            format!(
                "SELECT p.uzi, p.name, r.ura, r.role FROM professionals p \
                 LEFT JOIN professional_roles r ON r.uzi = p.uzi WHERE p.uzi IN \
                 (SELECT uzi FROM professionals WHERE uzi > {p1} ORDER BY uzi LIMIT {limit}) \
                 ORDER BY p.uzi, r.ura, r.role",
                p1 = d.placeholder(1)
            ),
            vec![after.into()],
        ),
        Some(ura) => (
            format!(
                "SELECT p.uzi, p.name, r.ura, r.role FROM professionals p \
                 JOIN professional_roles r ON r.uzi = p.uzi WHERE r.ura = {p1} AND p.uzi IN \
                 (SELECT DISTINCT uzi FROM professional_roles WHERE ura = {p1} AND uzi > {p2} \
                 ORDER BY uzi LIMIT {limit}) ORDER BY p.uzi, r.role",
                p1 = d.placeholder(1),
                p2 = d.placeholder(2)
            ),
            vec![ura.into(), after.into()],
        ),
    };
    let rows = db.with_reader(|conn| conn.query(&sql, &params))?;
    Ok(group(rows))
}

/// Rows of (uzi, name, ura, role), ordered by UZI number, as professionals.
fn group(rows: Vec<Row>) -> Vec<Professional> {
    let mut professionals: Vec<Professional> = Vec::new();
    for mut row in rows {
        let uzi = row[0].take_text();
        if professionals.last().is_none_or(|p| p.uzi != uzi) {
            professionals.push(Professional {
                uzi,
                name: row[1].take_text(),
                roles: Vec::new(),
            });
        }
        if row[2] != SqlValue::Null
            && let Some(last) = professionals.last_mut()
        {
            last.roles.push(Role {
                ura: row[2].take_text(),
                role: row[3].take_text(),
            });
        }
    }
    professionals
}
