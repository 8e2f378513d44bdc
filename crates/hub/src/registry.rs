//! The organisation registry (`/registry`): which organisations (by URA number) take part in
//! the network, and their API keys. The operator registers an organisation and hands its key
//! over out of band; the organisation can rotate its own key.
//!
//! Tables (component `registry`): `registry_organisations`.

use crate::HubState;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zorgnet_db::sql::SqlValue;
use zorgnet_db::{Database, DbError, Migration};

/// The registry's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "registry",
    version: 1,
    sql: "
CREATE TABLE registry_organisations (
    ura {text} PRIMARY KEY,
    name {text} NOT NULL,
    key_hash {text} NOT NULL UNIQUE,
    registered_at_ms {int} NOT NULL,
    key_issued_at_ms {int} NOT NULL
)",
}];

/// Longest organisation name accepted.
pub const MAX_NAME_CHARS: usize = 200;

/// An organisation as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    /// URA number (8 digits).
    pub ura: String,
    /// Name.
    pub name: String,
}

/// Answer to registering an organisation or rotating its key: the key is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedKey {
    /// URA number.
    pub ura: String,
    /// The new API key; the hub keeps only its hash.
    pub api_key: String,
}

/// The registry's routes, under `/registry`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route("/organisations", post(register).get(list))
        .route("/organisations/{ura}", get(show))
        .route("/organisations/{ura}/key", post(rotate_key))
}

/// Checks the form of a URA number: 8 digits.
pub fn check_ura(ura: &str) -> Result<(), ApiError> {
    if ura.len() == 8 && ura.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "URA number {ura:?} must be 8 digits"
        )))
    }
}

async fn register(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Organisation>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    caller.admin()?;
    let Json(organisation) = body?;
    check_ura(&organisation.ura)?;
    let name = organisation.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let key = auth::new_key();
    let hash = auth::key_hash(&key);
    let db = state.db.clone();
    let ura = organisation.ura.clone();
    let inserted = crate::blocking(move || {
        let now = zorgnet_db::now_ms();
        db.write_transaction(|conn| -> Result<u64, ApiError> {
            let d = conn.dialect();
            let sql = format!(
                "INSERT INTO registry_organisations (ura, name, key_hash, registered_at_ms, key_issued_at_ms) \
                 VALUES ({}, {}, {}, {}, {}) ON CONFLICT (ura) DO NOTHING",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3),
                d.placeholder(4),
                d.placeholder(4)
            );
            Ok(conn.execute(
                &sql,
                &[ura.into(), name.into(), hash.into(), now.into()],
            )?)
        })
    })
    .await?;
    if inserted == 0 {
        return Err(ApiError::conflict(format!(
            "organisation {} is already registered; rotate its key instead",
            organisation.ura
        )));
    }
    tracing::info!(ura = %organisation.ura, "registered organisation");
    Ok((
        StatusCode::CREATED,
        Json(IssuedKey {
            ura: organisation.ura,
            api_key: key,
        }),
    ))
}

async fn list(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<Organisation>>, ApiError> {
    caller.authenticated()?;
    let db = state.db.clone();
    let organisations = crate::blocking(move || {
        Ok(db.with_reader(|conn| {
            conn.query(
                "SELECT ura, name FROM registry_organisations ORDER BY ura",
                &[],
            )
        })?)
    })
    .await?
    .into_iter()
    .map(|mut row| Organisation {
        ura: row[0].take_text(),
        name: row[1].take_text(),
    })
    .collect();
    Ok(Json(organisations))
}

async fn show(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
) -> Result<Json<Organisation>, ApiError> {
    caller.authenticated()?;
    check_ura(&ura)?;
    let db = state.db.clone();
    let found = crate::blocking(move || Ok(organisation(&db, &ura)?)).await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such organisation"))
}

async fn rotate_key(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
) -> Result<Json<IssuedKey>, ApiError> {
    check_ura(&ura)?;
    match &caller {
        Caller::Organisation(own) if *own == ura => {}
        _ => caller.admin()?,
    }
    let key = auth::new_key();
    let hash = auth::key_hash(&key);
    let db = state.db.clone();
    let target = ura.clone();
    let changed = crate::blocking(move || {
        let now = zorgnet_db::now_ms();
        db.write_transaction(|conn| -> Result<u64, ApiError> {
            let d = conn.dialect();
            let sql = format!(
                "UPDATE registry_organisations SET key_hash = {}, key_issued_at_ms = {} WHERE ura = {}",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3)
            );
            Ok(conn.execute(&sql, &[hash.into(), now.into(), target.into()])?)
        })
    })
    .await?;
    if changed == 0 {
        return Err(ApiError::not_found("no such organisation"));
    }
    state.keys.forget(&ura);
    tracing::info!(%ura, "rotated organisation key");
    Ok(Json(IssuedKey { ura, api_key: key }))
}

/// One organisation by URA. Blocking.
pub fn organisation(db: &Database, ura: &str) -> Result<Option<Organisation>, DbError> {
    let sql = format!(
        "SELECT ura, name FROM registry_organisations WHERE ura = {}",
        db.dialect().placeholder(1)
    );
    let rows = db.with_reader(|conn| conn.query(&sql, &[SqlValue::from(ura)]))?;
    Ok(rows.into_iter().next().map(|mut row| Organisation {
        ura: row[0].take_text(),
        name: row[1].take_text(),
    }))
}

/// The URA whose current key has this hash. Blocking.
pub fn organisation_by_key(db: &Database, key_hash: &str) -> Result<Option<String>, ApiError> {
    let sql = format!(
        "SELECT ura FROM registry_organisations WHERE key_hash = {}",
        db.dialect().placeholder(1)
    );
    let rows = db.with_reader(|conn| conn.query(&sql, &[SqlValue::from(key_hash)]))?;
    Ok(rows.into_iter().next().map(|mut row| row[0].take_text()))
}
