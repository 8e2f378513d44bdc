//! Who is calling: the one place where the hub authenticates requests.
//!
//! Every request passes [`authenticate`], which turns an `Authorization: Bearer <key>` header
//! into a [`Caller`] in the request's extensions. Handlers never read credentials themselves;
//! they ask the `Caller` for what they need ([`Caller::organisation`], [`Caller::admin`]).
//!
//! Keys are random 256-bit secrets shown once when issued; the hub stores only their SHA-256
//! (a hash is the right tool for a high-entropy secret: nothing to brute-force). Organisation
//! keys stand in until the trust issue brings client certificates and signed tokens.

use crate::HubState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Prefix of every issued key, so that a leaked key is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "zn_";
/// Random bytes in a key.
const KEY_SECRET_BYTES: usize = 32;
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

/// A new random key.
pub fn new_key() -> String {
    let mut secret = [0u8; KEY_SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The stored form of a key: hex SHA-256. Runs on every authenticated request.
pub fn key_hash(key: &str) -> String {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
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
    let caller = match bearer(&request) {
        None => Caller::Anonymous,
        Some(key) => match resolve(&state, key).await {
            Ok(Some(caller)) => caller,
            Ok(None) => {
                metrics::counter!("zorgnet_hub_rejected_credentials_total").increment(1);
                return ApiError::unauthenticated("unknown or revoked key").into_response();
            }
            Err(e) => return e.into_response(),
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hashed_stably() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(key_hash(&a), key_hash(&a));
        assert_ne!(key_hash(&a), key_hash(&b));
        assert_eq!(key_hash(&a).len(), 64);
    }

    #[test]
    fn key_hash_is_lowercase_hex_sha256() {
        // FIPS 180-2's SHA-256 example: the stored hashes of existing keys must not change.
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
