//! The portal as an OpenID Connect client: the authorization code flow with PKCE `S256`,
//! `state` and `nonce`, against the provider's discovery document.
//! The ID token is verified by `zorgnet_trust::oidc` (the provider's key set, `iss`, `aud` =
//! the client id, `exp`); its `nonce` must be the one this login sent. Who the citizen is
//! comes from that verified token; the access token is only passed on to the nodes, which
//! verify it themselves.
//! What it is not: a general OAuth client (no refresh tokens, no client secrets: the portal is
//! a public client, as the development provider registers it).

use crate::citizen::CitizenId;
use crate::session::PendingLogin;
use crate::{PROVIDER_TIMEOUT, PortalConfig, PortalError, RESPONSE_BYTES_MAX, SCOPE};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use zorgnet_trust::oidc::{DISCOVERY_PATH, OidcConfig, OidcVerifier};

/// Why a login did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// The provider cannot be reached or answered something unusable.
    #[error("the identity provider: {0}")]
    Provider(String),
    /// The answer does not belong to the login this browser started.
    #[error("the login does not match: {0}")]
    Mismatch(&'static str),
    /// The ID token does not verify, or names no citizen.
    #[error("the ID token: {0}")]
    Token(String),
}

/// The endpoints of the discovery document the portal uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    id_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The claims of a verified ID token the portal reads beyond `zorgnet_trust`'s.
#[derive(Deserialize)]
struct ExtraClaims {
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    bsn: Option<String>,
    #[serde(default)]
    zvn: Option<String>,
}

/// A completed login.
pub(crate) struct LoggedIn {
    pub(crate) access_token: String,
    pub(crate) citizen: CitizenId,
    pub(crate) name: Option<String>,
    pub(crate) expires_in_s: Option<u64>,
}

/// The provider: its discovery document (read once, at the first login that reaches it) and
/// the verifier of its ID tokens.
#[derive(Clone)]
pub(crate) struct Provider {
    issuer: String,
    client_id: String,
    redirect_uri: String,
    discovery: Arc<tokio::sync::OnceCell<Discovery>>,
    verifier: Arc<OidcVerifier>,
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636).
pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Reads an answer's body, at most [`RESPONSE_BYTES_MAX`].
pub(crate) async fn body_bytes(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(format!(
                "the answer is larger than {RESPONSE_BYTES_MAX} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Provider {
    pub(crate) fn new(config: &PortalConfig) -> Result<Provider, PortalError> {
        let verifier = OidcVerifier::with_tls(
            OidcConfig {
                issuer: config.issuer.clone(),
                audience: config.client_id.clone(),
            },
            config.tls.clone(),
        )
        .map_err(|e| PortalError::Client(e.to_string()))?;
        Ok(Provider {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            redirect_uri: format!("{}/callback", config.base_url),
            discovery: Arc::default(),
            verifier: Arc::new(verifier),
        })
    }

    async fn discovery(&self, http: &reqwest::Client) -> Result<&Discovery, LoginError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}{DISCOVERY_PATH}", self.issuer);
                let answer = http
                    .get(&url)
                    .timeout(PROVIDER_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| LoginError::Provider(format!("discovery: {e}")))?;
                if !answer.status().is_success() {
                    return Err(LoginError::Provider(format!(
                        "discovery answered {}",
                        answer.status()
                    )));
                }
                let body = body_bytes(answer).await.map_err(LoginError::Provider)?;
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

    /// The verifier of the provider's tokens for the portal's client id (the apps' bearer
    /// tokens too: `fhir_api`, `json_api`).
    pub(crate) fn verifier(&self) -> &OidcVerifier {
        &self.verifier
    }

    /// The provider's authorization and token endpoints, from its discovery document.
    pub(crate) async fn endpoints(
        &self,
        http: &reqwest::Client,
    ) -> Result<(String, String), String> {
        let discovery = self.discovery(http).await.map_err(|e| e.to_string())?;
        Ok((
            discovery.authorization_endpoint.clone(),
            discovery.token_endpoint.clone(),
        ))
    }

    /// Where to send the browser for `login`.
    pub(crate) async fn authorization_url(
        &self,
        http: &reqwest::Client,
        login: &PendingLogin,
    ) -> Result<String, LoginError> {
        let discovery = self.discovery(http).await?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", SCOPE)
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

    /// Exchanges `code` of `login` for tokens and verifies the ID token.
    pub(crate) async fn complete(
        &self,
        http: &reqwest::Client,
        login: &PendingLogin,
        code: &str,
    ) -> Result<LoggedIn, LoginError> {
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
            .map_err(|e| LoginError::Provider(format!("token endpoint: {e}")))?;
        let status = answer.status();
        let body = body_bytes(answer).await.map_err(LoginError::Provider)?;
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
        let person = match (&verified.uzi, verified.person) {
            (None, Some(person)) => person,
            _ => {
                return Err(LoginError::Token(
                    "the portal is for citizens: the token names no BSN or zorgverificatienummer"
                        .into(),
                ));
            }
        };
        // The signature has been verified above: the payload can be read as it stands.
        let extra = tokens
            .id_token
            .split('.')
            .nth(1)
            .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
            .and_then(|json| serde_json::from_slice::<ExtraClaims>(&json).ok())
            .ok_or(LoginError::Token("unreadable claims".into()))?;
        if extra.nonce.as_deref() != Some(login.nonce.as_str()) {
            return Err(LoginError::Mismatch("the ID token's nonce"));
        }
        let citizen = CitizenId::of_claims(extra.bsn.as_deref(), extra.zvn.as_deref())
            .filter(|citizen| *citizen.person() == person)
            .ok_or(LoginError::Token("unreadable bsn or zvn claim".into()))?;
        Ok(LoggedIn {
            access_token: tokens.access_token,
            citizen,
            name: extra.name,
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
}
