//! Who is calling: the one place where the hub authenticates requests.
//!
//! Every request passes [`authenticate`], which turns an `Authorization: Bearer <key>` header
//! into a [`Caller`] in the request's extensions. Handlers never read credentials themselves;
//! they ask the `Caller` for what they need ([`Caller::organisation`], [`Caller::admin`]).
//!
//! Keys are random 256-bit secrets shown once when issued; the hub stores only their SHA-256
//! (a hash is the right tool for a high-entropy secret: nothing to brute-force).
//!
//! Over mutual TLS the TLS layer has already verified the client's certificate against the
//! network CA and its revocation list, and put its [`PeerIdentity`] in the request. A
//! registered organisation's certificate alone authenticates it; a key sent over it must be
//! the same organisation's (or the operator's), else the request is a 401: a key stolen from
//! one organisation is useless over another's connection.

use crate::HubState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use zorgnet_trust::certificate::PeerIdentity;

/// Prefix of every issued key, so that a leaked key is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "zn_";
/// How long a verified organisation key is trusted from memory before it is checked against
/// the database again (so a key revoked by another hub process stops working within this).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// The hub's operator (the admin key in the hub's data directory).
    Admin,
    /// A registered organisation, by URA number.
    Organisation(String),
}

impl Caller {
    /// The calling organisation's URA, or 401.
    pub fn organisation(&self) -> Result<&str, ApiError> {
        match self {
            Caller::Organisation(ura) => Ok(ura),
            Caller::Admin => Err(ApiError::forbidden(
                "this API is for organisations; use an organisation's key",
            )),
            Caller::Anonymous => Err(ApiError::unauthenticated(
                "missing credentials: send Authorization: Bearer <organisation key>",
            )),
        }
    }

    /// Ok when the operator calls, else 401/403.
    pub fn admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Organisation(_) => {
                Err(ApiError::forbidden("only the hub operator may do this"))
            }
            Caller::Anonymous => Err(ApiError::unauthenticated(
                "missing credentials: send Authorization: Bearer <admin key>",
            )),
        }
    }

    /// Ok for the operator or any registered organisation, else 401.
    pub fn authenticated(&self) -> Result<(), ApiError> {
        match self {
            Caller::Anonymous => Err(ApiError::unauthenticated(
                "missing credentials: send Authorization: Bearer <key>",
            )),
            _ => Ok(()),
        }
    }
}

/// A new random organisation or operator key.
pub fn new_key() -> String {
    zorgnet_trust::secret::new_key(KEY_PREFIX)
}

/// The stored form of a key: hex SHA-256. Runs on every authenticated request.
pub fn key_hash(key: &str) -> String {
    zorgnet_trust::secret::key_hash(key)
}

/// Verified organisation keys, by key hash.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (String, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(ura, _)| ura.clone())
    }

    fn put(&self, hash: String, ura: String) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.insert(hash, (ura, Instant::now()));
    }

    /// Forgets every cached key of `ura` (after a rotation in this process).
    pub fn forget(&self, ura: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (cached, _)| cached != ura);
    }
}

/// Middleware: resolves the caller and stores it in the request's extensions.
pub async fn authenticate(
    State(state): State<Arc<HubState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let certified = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|peer| peer.ura.clone());
    let caller = match bearer(&request) {
        None => match certified {
            None => Caller::Anonymous,
            Some(ura) => match registered(&state, ura).await {
                Ok(Some(caller)) => caller,
                Ok(None) => {
                    metrics::counter!("zorgnet_hub_rejected_credentials_total").increment(1);
                    return ApiError::unauthenticated(
                        "the client certificate's organisation is not registered at this hub",
                    )
                    .into_response();
                }
                Err(e) => return e.into_response(),
            },
        },
        Some(key) => match resolve(&state, key).await {
            Ok(Some(Caller::Organisation(ura)))
                if certified
                    .as_ref()
                    .is_some_and(|certified| *certified != ura) =>
            {
                metrics::counter!("zorgnet_hub_rejected_credentials_total").increment(1);
                return ApiError::unauthenticated(
                    "the key and the client certificate name different organisations",
                )
                .into_response();
            }
            Ok(Some(caller)) => caller,
            Ok(None) => {
                metrics::counter!("zorgnet_hub_rejected_credentials_total").increment(1);
                return ApiError::unauthenticated("unknown or revoked key").into_response();
            }
            Err(e) => return e.into_response(),
        },
    };
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    // For the access log's layer outside this one, which records who called.
    response.extensions_mut().insert(caller);
    response
}

fn bearer(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_string())
}

/// The organisation a verified client certificate names, when it is registered here.
async fn registered(state: &Arc<HubState>, ura: String) -> Result<Option<Caller>, ApiError> {
    let cached = format!("certificate:{ura}");
    if let Some(ura) = state.keys.get(&cached) {
        return Ok(Some(Caller::Organisation(ura)));
    }
    let db = state.db.clone();
    let lookup = ura.clone();
    let found = crate::blocking(move || {
        crate::registry::organisation(&db, &lookup).map_err(ApiError::from)
    })
    .await?;
    Ok(found.map(|_| {
        state.keys.put(cached, ura.clone());
        Caller::Organisation(ura)
    }))
}

async fn resolve(state: &Arc<HubState>, key: String) -> Result<Option<Caller>, ApiError> {
    let hash = key_hash(&key);
    if hash == state.admin_key_hash {
        return Ok(Some(Caller::Admin));
    }
    if let Some(ura) = state.keys.get(&hash) {
        return Ok(Some(Caller::Organisation(ura)));
    }
    let db = state.db.clone();
    let lookup = hash.clone();
    let found = crate::blocking(move || crate::registry::organisation_by_key(&db, &lookup)).await?;
    Ok(found.map(|ura| {
        state.keys.put(hash, ura.clone());
        Caller::Organisation(ura)
    }))
}
