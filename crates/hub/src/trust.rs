//! Organisation identity towards other nodes (`/trust`): the hub signs short-lived access
//! tokens that an organisation presents to other organisations' nodes, and publishes the key
//! that verifies them.
//!
//! An organisation authenticated with its API key asks `POST /trust/token` for a token for
//! one audience (the URA of the one node that may accept it; required, and a registered
//! organisation), naming the professional it acts for (`uzi`), the role the professional
//! holds at the organisation, the purpose (treatment or emergency, as the consent register's
//! purposes) and, for an emergency, the professional's break-the-glass `reason`. The role
//! must be one the professional register ([`crate::professionals`]) gives that professional
//! at the calling organisation, or the request is refused (403). A token without a
//! professional is a system token: it carries no role, cannot break the glass, and the
//! nodes' policy lets it read no patient data. The node that receives the token checks it
//! with the hub's public key from `GET /trust/keys` (a JWK set; no credentials needed) and
//! then asks the consent register before serving (the node's access layer). The token's
//! format (a JWT signed with Ed25519, `alg: EdDSA`) is `zorgnet_trust::token`, one
//! definition for the issuer and the verifiers. Tokens live [`ACCESS_TOKEN_LIFETIME`]: short
//! enough that none needs revoking.
//!
//! When the request arrived with a client certificate (a [`PeerIdentity`] in its
//! extensions, put there by the TLS layer), the token is bound to it (RFC 8705 `cnf` with
//! `x5t#S256`): a token stolen from the organisation is useless over another's connection.
//!
//! The signing key is generated at first start and kept in the data directory
//! ([`SIGNING_KEY_FILE`], mode 0600, like the operator's key); it is never logged. There is
//! one key: replacing the file and restarting the hub rotates it, and nodes fetch the new
//! key set when a token names a key id they have not seen.
//! What it is not: the network CA, authentication of professionals (the organisation
//! authenticates its staff; the hub checks only that the register gives them the role), or
//! a register of issued tokens.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{HubError, HubState};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_trust::certificate::PeerIdentity;
use zorgnet_trust::token::{
    self, AccessClaims, Confirmation, MAX_REASON_CHARS, Purpose, TokenRequest,
};
use zorgnet_trust::{is_role_code, is_uzi_number};

/// How long an access token is valid.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// File in the data directory holding the token-signing key (a base64url Ed25519 seed).
pub const SIGNING_KEY_FILE: &str = "trust-signing.key";
/// Bytes in an Ed25519 secret key (seed).
const SIGNING_KEY_BYTES: usize = 32;

/// The hub's token signer.
pub struct TokenIssuer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Loads the signing key from `data_dir`, generating it on first start. Blocking.
    pub fn open(data_dir: &Path) -> Result<TokenIssuer, HubError> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        let stored = crate::read_or_create_secret(&path, || {
            let mut seed = [0u8; SIGNING_KEY_BYTES];
            rand::rng().fill_bytes(&mut seed);
            URL_SAFE_NO_PAD.encode(seed)
        })?;
        let seed: [u8; SIGNING_KEY_BYTES] = URL_SAFE_NO_PAD
            .decode(stored.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                HubError::Setup(format!(
                    "{}: not a base64url Ed25519 key of {SIGNING_KEY_BYTES} bytes",
                    path.display()
                ))
            })?;
        let key = SigningKey::from_bytes(&seed);
        let key_id = token::key_id(&key.verifying_key());
        Ok(TokenIssuer { key, key_id })
    }

    /// The id of the signing key (its JWK thumbprint).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key set, as `GET /trust/keys` serves it.
    pub fn key_set(&self) -> Value {
        json!({"keys": [token::public_jwk(&self.key.verifying_key())]})
    }

    /// Signs `claims` (the token endpoint's claims are made by [`issue_token`]; tests use
    /// this to make tokens the endpoint would not, such as expired ones).
    pub fn issue(&self, claims: &AccessClaims) -> String {
        token::sign(&self.key, claims)
    }
}

/// The trust module's routes, under `/trust`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route("/token", post(issue_token))
        .route("/keys", get(keys))
        .route("/crl", get(revocation_list))
}

/// An issued token, in the shape of an OAuth 2.0 token response.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

async fn issue_token(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    certificate: Option<Extension<PeerIdentity>>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    let ura = caller.organisation()?.to_string();
    let Json(request) = body?;
    let professional = check_request(&request)?;
    let db = state.db.clone();
    let (audience, asked) = (request.audience.clone(), professional.clone());
    let caller_ura = ura.clone();
    let (audience_known, role_held) = crate::blocking(move || {
        let audience_known = crate::registry::organisation(&db, &audience)?.is_some();
        let role_held = match &asked {
            Some((uzi, role)) => crate::professionals::holds_role(&db, uzi, &caller_ura, role)?,
            None => true,
        };
        Ok((audience_known, role_held))
    })
    .await?;
    if !audience_known {
        return Err(ApiError::unprocessable(format!(
            "audience {} is not a registered organisation",
            request.audience
        )));
    }
    if !role_held {
        metrics::counter!("zorgnet_trust_tokens_refused_total").increment(1);
        return Err(ApiError::forbidden(
            "the professional register does not give this professional that role at your organisation",
        ));
    }
    let issued_at = zorgnet_db::now_ms() / 1000;
    let lifetime = ACCESS_TOKEN_LIFETIME.as_secs();
    let (uzi, role) = professional.unzip();
    let claims = AccessClaims {
        ura,
        uzi,
        role,
        purpose: request.purpose,
        reason: request.reason.map(|r| r.trim().to_string()),
        iat: issued_at,
        exp: issued_at.saturating_add_unsigned(lifetime),
        aud: request.audience,
        cnf: certificate.map(|Extension(c)| Confirmation {
            x5t_s256: c.thumbprint,
        }),
    };
    let access_token = state.trust.issue(&claims);
    metrics::counter!("zorgnet_trust_tokens_issued_total").increment(1);
    tracing::info!(
        ura = %claims.ura,
        audience = %claims.aud,
        professional = claims.uzi.is_some(),
        role = claims.role.as_deref().unwrap_or("-"),
        purpose = claims.purpose.code(),
        bound = claims.cnf.is_some(),
        "issued an access token"
    );
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in: lifetime,
    }))
}

/// Checks a token request's form; answers the professional and role it names, if any.
fn check_request(request: &TokenRequest) -> Result<Option<(String, String)>, ApiError> {
    crate::registry::check_ura(&request.audience)
        .map_err(|e| ApiError::bad_request(format!("audience: {}", e.detail)))?;
    let professional = match (&request.uzi, &request.role) {
        (None, None) => None,
        (Some(uzi), Some(role)) => {
            if !is_uzi_number(uzi) {
                return Err(ApiError::bad_request(format!(
                    "uzi {uzi:?} is not a UZI number (9 digits)"
                )));
            }
            if !is_role_code(role) {
                return Err(ApiError::bad_request(format!(
                    "role {role:?} is not a UZI role code (like 01.015)"
                )));
            }
            Some((uzi.clone(), role.clone()))
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "a professional's token names their role (role)",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "a role belongs to a professional: name them (uzi); a system token has no role",
            ));
        }
    };
    match (request.purpose, &request.reason) {
        (Purpose::Emergency, None) => Err(ApiError::bad_request(
            "purpose emergency needs the professional's break-the-glass reason (reason)",
        )),
        (Purpose::Emergency, Some(_)) if professional.is_none() => Err(ApiError::bad_request(
            "only a professional breaks the glass: name them (uzi, role)",
        )),
        (Purpose::Emergency, Some(reason)) => {
            let reason = reason.trim();
            if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
                return Err(ApiError::bad_request(format!(
                    "reason must be 1 to {MAX_REASON_CHARS} characters"
                )));
            }
            if reason.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "reason may not contain control characters",
                ));
            }
            Ok(professional)
        }
        (Purpose::Treatment, Some(_)) => Err(ApiError::bad_request(
            "a reason is given only for purpose emergency (break-the-glass)",
        )),
        (Purpose::Treatment, None) => Ok(professional),
    }
}

async fn keys(State(state): State<Arc<HubState>>) -> Json<Value> {
    Json(state.trust.key_set())
}

/// The network CA's revocation list in force at this hub, PEM: public, like any CRL (the CA
/// signed it; a node checks that before using it). 404 when the hub serves without TLS.
async fn revocation_list(State(state): State<Arc<HubState>>) -> Result<Response, ApiError> {
    let verifier = state
        .revocations
        .get()
        .ok_or_else(|| ApiError::not_found("this hub publishes no revocation list"))?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        verifier.crl_pem(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_is_created_private_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = TokenIssuer::open(dir.path()).unwrap();
        let again = TokenIssuer::open(dir.path()).unwrap();
        assert_eq!(first.key_id(), again.key_id(), "survives a restart");
        let other = TokenIssuer::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(first.key_id(), other.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            !format!("{first:?}")
                .contains(&std::fs::read_to_string(dir.path().join(SIGNING_KEY_FILE)).unwrap())
        );

        let claims = AccessClaims {
            ura: "00000022".into(),
            uzi: None,
            role: None,
            purpose: Purpose::Treatment,
            reason: None,
            iat: 1_800_000_000,
            exp: 1_800_000_300,
            aud: "00000011".into(),
            cnf: None,
        };
        let keys = token::parse_key_set(&first.key_set());
        let key = keys.get(first.key_id()).unwrap();
        let signed = again.issue(&claims);
        assert_eq!(
            token::verify(&signed, key, "00000011", 1_800_000_001).unwrap(),
            claims
        );
    }

    #[test]
    fn a_damaged_key_file_stops_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SIGNING_KEY_FILE), "not a key").unwrap();
        assert!(matches!(
            TokenIssuer::open(dir.path()),
            Err(HubError::Setup(_))
        ));
    }
}
