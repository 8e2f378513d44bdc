//! A front-end as an OpenID Connect client: the authorization code flow with PKCE `S256`,
//! `state` and `nonce`, against the provider's discovery document (read once, at the first
//! login that reaches it, and shareable between the clients of one provider).
//! The ID token is verified by `zorgnet_trust::oidc` (the provider's key set, `iss`, `aud` =
//! the client id, `exp`); its `nonce` must be the one this login sent, and the callback's
//! `state` the one it was sent with ([`callback_code`]). Whom the token names
//! (a citizen, a professional) and which of its claims count are the front-end's to judge,
//! from the [`LoggedIn`] this answers. The access token is only handed to the front-end,
//! which passes it on to the nodes that verify it themselves. Every answer of the provider
//! is read to a bound ([`ClientConfig::answer_bytes_max`]) within [`PROVIDER_TIMEOUT`];
//! transport errors are kept without their URLs.
//! What it is not: a general OAuth client (no refresh tokens, no client secrets: the
//! front-ends are public clients, as the development provider registers them), or where a
//! login under way is kept ([`crate::session`]).

use crate::client::read_body;
use crate::page::same_token;
use crate::session::PendingLogin;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_trust::oidc::{DISCOVERY_PATH, OidcConfig, OidcError, OidcVerifier, VerifiedToken};

/// How long the provider's discovery and token endpoints may take.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a login did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The provider cannot be reached or answered something unusable.
    #[error("the identity provider: {0}")]
    Provider(String),
    /// The answer does not belong to the login this browser started.
    #[error("the login does not match: {0}")]
    Mismatch(&'static str),
    /// The ID token does not verify, or does not name whom the front-end serves.
    #[error("the ID token: {0}")]
    Token(String),
}

impl LoginError {
    /// Whether the provider failed (try again later), rather than the login itself.
    pub fn is_provider_failure(&self) -> bool {
        matches!(self, LoginError::Provider(_))
    }
}

/// The endpoints of the discovery document a front-end uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The provider's discovery document, read once for every client that shares it.
#[derive(Debug, Clone, Default)]
pub struct SharedDiscovery(Arc<tokio::sync::OnceCell<Discovery>>);

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    id_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The claim of a verified ID token this client checks beyond `zorgnet_trust`'s.
#[derive(Deserialize)]
struct NonceClaim {
    #[serde(default)]
    nonce: Option<String>,
}

/// A completed login: the tokens, and what the verified ID token says (no `Debug`: it holds
/// the access token).
pub struct LoggedIn<E> {
    /// The access token, for the nodes (which verify it themselves); never shown or logged.
    pub access_token: String,
    /// The ID token as `zorgnet_trust::oidc` verified it (its `uzi`, its person).
    pub verified: VerifiedToken,
    /// The ID token's claims the front-end asked for, read from the verified token.
    pub claims: E,
    /// The token endpoint's `expires_in`, in seconds.
    pub expires_in_s: Option<u64>,
}

/// How a front-end's client is registered at its provider.
pub struct ClientConfig {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The client id: the audience of the ID tokens.
    pub client_id: String,
    /// Where the provider sends the browser back with the code.
    pub redirect_uri: String,
    /// The scopes asked of the provider.
    pub scope: &'static str,
    /// How to reach the provider's key set over HTTPS; `None` uses the platform's roots, or
    /// plain HTTP for `http` URLs (tests only).
    pub tls: Option<rustls::ClientConfig>,
    /// Largest answer read from the provider, in bytes.
    pub answer_bytes_max: usize,
}

/// One client at the provider, and the verifier of its ID tokens.
pub struct Client {
    issuer: String,
    client_id: String,
    redirect_uri: String,
    scope: &'static str,
    answer_bytes_max: usize,
    discovery: SharedDiscovery,
    verifier: OidcVerifier,
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The authorization code of the provider's callback with query `parameters` for `login`:
/// `None` (logged as a warning with the provider's `error`) when it carries no code, or a
/// `state` other than the one `login` sent.
pub fn callback_code<'a, P>(
    login: &PendingLogin<P>,
    parameters: &'a HashMap<String, String>,
) -> Option<&'a str> {
    let state_matches = parameters
        .get("state")
        .is_some_and(|state| same_token(state, &login.state));
    match (parameters.get("code"), state_matches) {
        (Some(code), true) => Some(code),
        _ => {
            tracing::warn!(
                provider_error = parameters.get("error").map(String::as_str),
                state_matches,
                "a login came back without a code or with another state"
            );
            None
        }
    }
}

impl Client {
    /// The client `config` describes, reading the provider's discovery document through
    /// `discovery` (shared with the provider's other clients, or a fresh one); nothing is
    /// fetched yet.
    pub fn new(config: ClientConfig, discovery: SharedDiscovery) -> Result<Client, OidcError> {
        let verifier = OidcVerifier::with_tls(
            OidcConfig {
                issuer: config.issuer.clone(),
                audience: config.client_id.clone(),
            },
            config.tls,
        )?;
        Ok(Client {
            issuer: config.issuer,
            client_id: config.client_id,
            redirect_uri: config.redirect_uri,
            scope: config.scope,
            answer_bytes_max: config.answer_bytes_max,
            discovery,
            verifier,
        })
    }

    /// The verifier of the provider's tokens for this client id (for bearer tokens too).
    pub fn verifier(&self) -> &OidcVerifier {
        &self.verifier
    }

    async fn discovery(&self, http: &reqwest::Client) -> Result<&Discovery, LoginError> {
        self.discovery
            .0
            .get_or_try_init(|| async {
                let url = format!("{}{DISCOVERY_PATH}", self.issuer);
                let answer = http
                    .get(&url)
                    .timeout(PROVIDER_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| LoginError::Provider(format!("discovery: {}", e.without_url())))?;
                if !answer.status().is_success() {
                    return Err(LoginError::Provider(format!(
                        "discovery answered {}",
                        answer.status()
                    )));
                }
                let body = read_body(answer, self.answer_bytes_max)
                    .await
                    .map_err(|e| LoginError::Provider(e.without_url().to_string()))?;
                let discovery: Discovery = serde_json::from_slice(&body)
                    .map_err(|e| LoginError::Provider(format!("discovery: {e}")))?;
                if discovery.issuer != self.issuer {
                    return Err(LoginError::Provider(
                        "the discovery document names another issuer".into(),
                    ));
                }
                let secure = self.issuer.starts_with("https://");
                for endpoint in [&discovery.authorization_endpoint, &discovery.token_endpoint] {
                    let usable = endpoint.starts_with("https://")
                        || (!secure && endpoint.starts_with("http://"));
                    if !usable {
                        return Err(LoginError::Provider(format!(
                            "an endpoint of the discovery document is not usable: {endpoint:?}"
                        )));
                    }
                }
                Ok(discovery)
            })
            .await
    }

    /// The provider's authorization and token endpoints, from its discovery document.
    pub async fn endpoints(&self, http: &reqwest::Client) -> Result<(String, String), LoginError> {
        let discovery = self.discovery(http).await?;
        Ok((
            discovery.authorization_endpoint.clone(),
            discovery.token_endpoint.clone(),
        ))
    }

    /// Where to send the browser for `login`.
    pub async fn authorization_url<P>(
        &self,
        http: &reqwest::Client,
        login: &PendingLogin<P>,
    ) -> Result<String, LoginError> {
        let discovery = self.discovery(http).await?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", self.scope)
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &challenge(&login.verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if discovery.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{separator}{query}",
            discovery.authorization_endpoint
        ))
    }

    /// Exchanges `code` of `login` for tokens, verifies the ID token and its `nonce`, and
    /// reads its claims `E`.
    pub async fn complete<E: DeserializeOwned, P>(
        &self,
        http: &reqwest::Client,
        login: &PendingLogin<P>,
        code: &str,
    ) -> Result<LoggedIn<E>, LoginError> {
        let discovery = self.discovery(http).await?;
        let answer = http
            .post(&discovery.token_endpoint)
            .timeout(PROVIDER_TIMEOUT)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.redirect_uri),
                ("client_id", &self.client_id),
                ("code_verifier", &login.verifier),
            ])
            .send()
            .await
            .map_err(|e| LoginError::Provider(format!("token endpoint: {}", e.without_url())))?;
        let status = answer.status();
        let body = read_body(answer, self.answer_bytes_max)
            .await
            .map_err(|e| LoginError::Provider(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(LoginError::Provider(format!(
                "the token endpoint answered {status}"
            )));
        }
        let tokens: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| LoginError::Provider(format!("token endpoint: {e}")))?;
        let verified = self
            .verifier
            .verify(&tokens.id_token)
            .await
            .map_err(|e| LoginError::Token(e.to_string()))?;
        // The signature has been verified above: the payload can be read as it stands.
        let unreadable = || LoginError::Token("unreadable claims".into());
        let payload = tokens
            .id_token
            .split('.')
            .nth(1)
            .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
            .ok_or_else(unreadable)?;
        let nonce = serde_json::from_slice::<NonceClaim>(&payload).map_err(|_| unreadable())?;
        if nonce.nonce.as_deref() != Some(login.nonce.as_str()) {
            return Err(LoginError::Mismatch("the ID token's nonce"));
        }
        let claims = serde_json::from_slice::<E>(&payload).map_err(|_| unreadable())?;
        Ok(LoggedIn {
            access_token: tokens.access_token,
            verified,
            claims,
            expires_in_s: tokens.expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_callback_is_taken_only_with_the_logins_state() {
        let login = PendingLogin::new(());
        let callback = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect()
        };
        let answered = callback(&[("code", "abc"), ("state", &login.state)]);
        assert_eq!(callback_code(&login, &answered), Some("abc"));
        let other_state = callback(&[("code", "abc"), ("state", "def")]);
        assert_eq!(callback_code(&login, &other_state), None);
        let no_state = callback(&[("code", "abc")]);
        assert_eq!(callback_code(&login, &no_state), None);
        let refused = callback(&[("error", "access_denied"), ("state", &login.state)]);
        assert_eq!(callback_code(&login, &refused), None);
    }

    #[test]
    fn only_the_provider_failing_is_a_provider_failure() {
        assert!(LoginError::Provider("down".into()).is_provider_failure());
        assert!(!LoginError::Mismatch("the ID token's nonce").is_provider_failure());
        assert!(!LoginError::Token("expired".into()).is_provider_failure());
    }
}
