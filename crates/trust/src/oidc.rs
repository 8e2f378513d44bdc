//! Verifying OAuth2 bearer tokens and ID tokens of an OpenID Connect provider: a node's
//! professionals (the organisation's own provider) and citizens (a DigiD-like provider).
//!
//! An [`OidcVerifier`] is configured by the provider's issuer URL and the audience it expects
//! (the client id the node is registered under). On first use it reads the provider's
//! discovery document (`{issuer}/.well-known/openid-configuration`, whose `issuer` must
//! equal the configured one exactly) and its JWK set (`jwks_uri`); it keeps the keys, and
//! fetches the set again when a token names a key id it does not know, at most once per
//! [`JWKS_REFETCH_MIN_INTERVAL`]. Both URLs must be `https`, or `http` on a loopback address
//! (a development provider on the same machine). No redirects are followed; answers are
//! held to [`MAX_DISCOVERY_BYTES`] and [`MAX_JWKS_BYTES`].
//!
//! A token is accepted when it is at most [`MAX_OIDC_TOKEN_BYTES`], its header names a key
//! id (`kid`) of the set and one of [`ACCEPTED_ALGORITHMS`] (ES256, RS256, EdDSA: never
//! `none`, never an HMAC, whose "secret" would be the public key), the key is of that
//! algorithm's kind (and names the same `alg`, when it names one), the signature verifies
//! (`jsonwebtoken` on aws-lc-rs), and its claims hold: `iss` the configured issuer, `aud`
//! (a string or a list) containing the configured audience, `sub`, `exp` not past and `nbf`
//! not ahead, `iat` not ahead, each with [`CLOCK_SKEW_S`] of leeway.
//!
//! The claims zorgnet reads besides the registered ones:
//! - `scope` (a space-separated string, RFC 9068) or `scp` (a list): SMART on FHIR scopes,
//!   [`crate::smart`]. An ID token usually has none, and then permits nothing at a node.
//! - `uzi`: a professional's UZI number (nine digits) — [`UZI_CLAIM`].
//! - `bsn`: a citizen's BSN (nine digits passing the 11-check) — [`BSN_CLAIM`].
//! - `zvn`: a citizen's zorgverificatienummer (Caribbean Netherlands, no usable BSN) —
//!   [`ZVN_CLAIM`].
//!
//! A verified token becomes a [`StaffIdentity`] (no `bsn`/`zvn`; `uzi` optional, absent for
//! a system client) or a [`CitizenIdentity`] (exactly one of `bsn`/`zvn`, no `uzi`), so that
//! one token can never be both.
//! What it is not: an OpenID provider (`zorgnet-idp` is a development one), a login client
//! (no authorization requests, no sessions), or the policy (what a caller may see is the
//! node's access layer's to decide).

use crate::smart::{Interaction, ScopeContext, Scopes};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};

/// Longest token accepted, in bytes.
pub const MAX_OIDC_TOKEN_BYTES: usize = 16 * 1024;
/// Largest discovery document read, in bytes.
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// Largest JWK set read, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWK set.
pub const MAX_JWKS_KEYS: usize = 32;
/// Shortest time between two fetches of a provider's key set, so that tokens naming unknown
/// key ids cannot make the verifier hammer the provider.
pub const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How long one request to the provider may take.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How far the verifier's and the provider's clocks may disagree, in seconds.
pub const CLOCK_SKEW_S: u64 = 60;
/// The signature algorithms accepted: asymmetric only.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA];
/// The path of the discovery document below the issuer.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The claim that carries a professional's UZI number.
pub const UZI_CLAIM: &str = "uzi";
/// The claim that carries a citizen's BSN.
pub const BSN_CLAIM: &str = "bsn";
/// The claim that carries a citizen's zorgverificatienummer.
pub const ZVN_CLAIM: &str = "zvn";

/// Why a token is not accepted, or the provider could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// Not a JWT, or a claim of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed with an algorithm that is not accepted (`none`, HMAC, …), or with a key of
    /// another kind than its algorithm.
    #[error("the token's signature algorithm is not accepted")]
    Algorithm,
    /// Names no key id, or one the provider does not publish.
    #[error("signed with a key the provider does not publish")]
    UnknownKey,
    /// The signature does not match.
    #[error("the signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Not valid yet (`nbf` or `iat` ahead).
    #[error("not valid yet")]
    NotYetValid,
    /// Issued by another provider.
    #[error("issued by another provider")]
    WrongIssuer,
    /// Meant for another client.
    #[error("meant for another audience")]
    WrongAudience,
    /// A required claim is missing.
    #[error("the claim {0} is missing")]
    MissingClaim(String),
    /// A claim zorgnet reads has an invalid value.
    #[error("the claim {0} is invalid")]
    InvalidClaim(&'static str),
    /// The token is valid, but not of the kind asked for (a citizen's where a
    /// professional's was expected, or the other way round).
    #[error("{0}")]
    WrongKind(&'static str),
    /// The provider could not be reached or answered nonsense; nothing was decided.
    #[error("the identity provider could not be asked: {0}")]
    Provider(String),
    /// The verifier's configuration is unusable.
    #[error("invalid OpenID Connect configuration: {0}")]
    Configuration(String),
}

impl OidcError {
    /// Whether the failure is the provider's (unreachable, nonsense), not the token's.
    pub fn is_provider_failure(&self) -> bool {
        matches!(self, OidcError::Provider(_))
    }
}

/// What a verified token says, before it is read as a professional or a citizen.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// The SMART scopes (`scope` or `scp`).
    pub scopes: Scopes,
    /// [`UZI_CLAIM`], checked to be a UZI number.
    pub uzi: Option<String>,
    /// [`BSN_CLAIM`] or [`ZVN_CLAIM`], checked.
    pub person: Option<PersonalId>,
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("uzi", &self.uzi)
            .field("person", &self.person.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The contexts of SMART scopes that count for a professional.
pub const STAFF_CONTEXTS: [ScopeContext; 2] = [ScopeContext::User, ScopeContext::System];
/// The contexts of SMART scopes that count for a citizen (about themself).
pub const CITIZEN_CONTEXTS: [ScopeContext; 2] = [ScopeContext::Patient, ScopeContext::User];

/// A professional or system of the node's own organisation, as its OpenID provider says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffIdentity {
    /// The provider.
    pub issuer: String,
    /// The provider's subject identifier.
    pub subject: String,
    /// The professional's UZI number; `None` for a system client.
    pub uzi: Option<String>,
    /// What the token may do.
    pub scopes: Scopes,
}

impl StaffIdentity {
    /// Whether a `user/` or `system/` scope permits `interaction` on `resource_type`.
    pub fn permits(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.scopes
            .permits(&STAFF_CONTEXTS, resource_type, interaction)
    }

    /// Whether a wildcard `user/` or `system/` scope permits `interaction` on every type.
    pub fn permits_every_type(&self, interaction: Interaction) -> bool {
        self.scopes.permits_every_type(&STAFF_CONTEXTS, interaction)
    }
}

/// A citizen, as their (DigiD-like) OpenID provider says.
#[derive(Clone, PartialEq, Eq)]
pub struct CitizenIdentity {
    /// The provider.
    pub issuer: String,
    /// The provider's subject identifier.
    pub subject: String,
    /// The citizen's BSN or zorgverificatienummer.
    pub person: PersonalId,
    /// What the token may do.
    pub scopes: Scopes,
}

impl std::fmt::Debug for CitizenIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CitizenIdentity")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("person", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl CitizenIdentity {
    /// Whether a `patient/` or `user/` scope permits `interaction` on `resource_type`.
    pub fn permits(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.scopes
            .permits(&CITIZEN_CONTEXTS, resource_type, interaction)
    }
}

impl VerifiedToken {
    /// The token as a professional's or a system's: refused when it names a citizen.
    pub fn into_staff(self) -> Result<StaffIdentity, OidcError> {
        if self.person.is_some() {
            return Err(OidcError::WrongKind(
                "a citizen's token (bsn or zvn) is not a professional's",
            ));
        }
        Ok(StaffIdentity {
            issuer: self.issuer,
            subject: self.subject,
            uzi: self.uzi,
            scopes: self.scopes,
        })
    }

    /// The token as a citizen's: refused without a BSN or zorgverificatienummer, or when
    /// it names a professional.
    pub fn into_citizen(self) -> Result<CitizenIdentity, OidcError> {
        if self.uzi.is_some() {
            return Err(OidcError::WrongKind(
                "a professional's token (uzi) is not a citizen's",
            ));
        }
        let person = self.person.ok_or(OidcError::WrongKind(
            "a citizen's token names a bsn or a zvn",
        ))?;
        Ok(CitizenIdentity {
            issuer: self.issuer,
            subject: self.subject,
            person,
            scopes: self.scopes,
        })
    }
}

/// The claims zorgnet reads; the registered ones are checked by `jsonwebtoken` first.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default)]
    uzi: Option<String>,
    #[serde(default)]
    bsn: Option<String>,
    #[serde(default)]
    zvn: Option<String>,
}

/// The part of a discovery document the verifier reads.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// What a verifier is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The provider's issuer URL, exactly as its tokens name it.
    pub issuer: String,
    /// The audience the tokens must name: the client id this verifier's holder is
    /// registered under at the provider.
    pub audience: String,
}

/// The verifier of one provider's tokens for one audience (see the module documentation).
pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    known: RwLock<KnownKeys>,
    refresh: tokio::sync::Mutex<()>,
    /// A fixed key set: never fetched.
    fixed: bool,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish()
    }
}

#[derive(Default)]
struct KnownKeys {
    jwks_uri: Option<String>,
    keys: HashMap<String, Jwk>,
    fetched_at: Option<Instant>,
}

impl OidcVerifier {
    /// A verifier of `config.issuer`'s tokens for `config.audience`; the provider is asked
    /// on first use.
    pub fn new(config: OidcConfig) -> Result<OidcVerifier, OidcError> {
        OidcVerifier::with_tls(config, None)
    }

    /// A verifier that reaches the provider over `tls` (a root of the operator's choosing,
    /// [`crate::tls::anchor_only_client_config`]) instead of the platform's roots.
    pub fn with_tls(
        config: OidcConfig,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<OidcVerifier, OidcError> {
        check_provider_url(&config.issuer)?;
        if config.audience.trim().is_empty() {
            return Err(OidcError::Configuration("the audience is empty".into()));
        }
        let mut client = reqwest::Client::builder();
        if let Some(tls) = tls {
            client = client.tls_backend_preconfigured(tls);
        }
        let client = client
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Configuration(format!("HTTP client: {e}")))?;
        Ok(OidcVerifier {
            config,
            client,
            known: RwLock::default(),
            refresh: tokio::sync::Mutex::default(),
            fixed: false,
        })
    }

    /// A verifier with a fixed key set that never asks the provider (for a provider whose
    /// keys are configured rather than discovered, and for tests).
    pub fn with_key_set(config: OidcConfig, set: &JwkSet) -> Result<OidcVerifier, OidcError> {
        let mut verifier = OidcVerifier::new(config)?;
        verifier.fixed = true;
        let known = verifier.known.get_mut().unwrap_or_else(|p| p.into_inner());
        known.keys = usable_keys(set);
        Ok(verifier)
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Whether `token` claims to come from this verifier's provider (its unverified `iss`):
    /// which verifier to ask, never whether to believe it.
    pub fn claims_issuer(&self, token: &str) -> bool {
        unverified_issuer(token).as_deref() == Some(self.config.issuer.as_str())
    }

    /// Verifies `token` (see the module documentation), fetching the provider's keys when
    /// they are not known yet or the token names an unknown key id.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, OidcError> {
        if token.len() > MAX_OIDC_TOKEN_BYTES {
            return Err(OidcError::Malformed(format!(
                "longer than {MAX_OIDC_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => OidcError::Algorithm,
            _ => OidcError::Malformed("not a JWT".into()),
        })?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(OidcError::Algorithm);
        }
        let key_id = header.kid.ok_or(OidcError::UnknownKey)?;
        let jwk = match self.key(&key_id) {
            Some(jwk) => jwk,
            None => self.fetch(&key_id).await?.ok_or(OidcError::UnknownKey)?,
        };
        verify_with_key(token, header.alg, &jwk, &self.config)
    }

    fn key(&self, key_id: &str) -> Option<Jwk> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        known.keys.get(key_id).cloned()
    }

    /// Reads the discovery document (once) and the key set (at most once per
    /// [`JWKS_REFETCH_MIN_INTERVAL`]); the key `key_id`, if the provider publishes it.
    async fn fetch(&self, key_id: &str) -> Result<Option<Jwk>, OidcError> {
        if self.fixed {
            return Ok(None);
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(jwk) = self.key(key_id) {
            return Ok(Some(jwk));
        }
        let (jwks_uri, recently) = {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            (
                known.jwks_uri.clone(),
                known
                    .fetched_at
                    .is_some_and(|at| at.elapsed() < JWKS_REFETCH_MIN_INTERVAL),
            )
        };
        if recently {
            return Ok(None);
        }
        let jwks_uri = match jwks_uri {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let set: JwkSet =
            serde_json::from_slice(&get_limited(&self.client, &jwks_uri, MAX_JWKS_BYTES).await?)
                .map_err(|e| OidcError::Provider(format!("the key set is not a JWK set: {e}")))?;
        let keys = usable_keys(&set);
        let found = keys.get(key_id).cloned();
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.jwks_uri = Some(jwks_uri);
        known.keys = keys;
        known.fetched_at = Some(Instant::now());
        Ok(found)
    }

    /// Reads the discovery document and returns its `jwks_uri`.
    async fn discover(&self) -> Result<String, OidcError> {
        let url = format!(
            "{}{DISCOVERY_PATH}",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery =
            serde_json::from_slice(&get_limited(&self.client, &url, MAX_DISCOVERY_BYTES).await?)
                .map_err(|e| {
                    OidcError::Provider(format!("the discovery document is unreadable: {e}"))
                })?;
        if discovery.issuer != self.config.issuer {
            return Err(OidcError::Provider(format!(
                "the discovery document names issuer {:?}, not the configured {:?}",
                discovery.issuer, self.config.issuer
            )));
        }
        check_provider_url(&discovery.jwks_uri).map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(discovery.jwks_uri)
    }
}

/// The keys of a set that can verify an accepted algorithm and name a key id (at most
/// [`MAX_JWKS_KEYS`]).
fn usable_keys(set: &JwkSet) -> HashMap<String, Jwk> {
    set.keys
        .iter()
        .filter(|jwk| algorithm_of(jwk).is_some())
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk.clone())))
        .take(MAX_JWKS_KEYS)
        .collect()
}

/// The one accepted algorithm a key can verify: P-256 ES256, RSA RS256, Ed25519 EdDSA;
/// `None` for other keys (HMAC secrets, other curves) and for a key whose own `alg` says
/// otherwise.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let named = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return None,
    };
    named.is_none_or(|n| n == algorithm).then_some(algorithm)
}

/// Verifies `token`, whose header names `algorithm`, with `jwk`, against `config`.
fn verify_with_key(
    token: &str,
    algorithm: Algorithm,
    jwk: &Jwk,
    config: &OidcConfig,
) -> Result<VerifiedToken, OidcError> {
    if algorithm_of(jwk) != Some(algorithm) {
        return Err(OidcError::Algorithm);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| OidcError::UnknownKey)?;
    let mut validation = Validation::new(algorithm);
    validation.leeway = CLOCK_SKEW_S;
    validation.validate_nbf = true;
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.into_kind() {
            ErrorKind::InvalidSignature => OidcError::BadSignature,
            ErrorKind::ExpiredSignature => OidcError::Expired,
            ErrorKind::ImmatureSignature => OidcError::NotYetValid,
            ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
            ErrorKind::InvalidAudience => OidcError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim(claim),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => OidcError::Algorithm,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => OidcError::UnknownKey,
            other => OidcError::Malformed(format!("{other:?}")),
        }
    })?;
    let claims = data.claims;
    let now = jsonwebtoken::get_current_timestamp();
    if claims
        .iat
        .is_some_and(|iat| iat > now.saturating_add(CLOCK_SKEW_S))
    {
        return Err(OidcError::NotYetValid);
    }
    let scopes = match (&claims.scope, &claims.scp) {
        (Some(scope), _) => Scopes::parse(scope),
        (None, Some(list)) => Scopes::from_list(list.iter().map(String::as_str)),
        (None, None) => Ok(Scopes::default()),
    }
    .map_err(|_| OidcError::InvalidClaim("scope"))?;
    if let Some(uzi) = &claims.uzi
        && !crate::is_uzi_number(uzi)
    {
        return Err(OidcError::InvalidClaim(UZI_CLAIM));
    }
    let person = match (&claims.bsn, &claims.zvn) {
        (Some(_), Some(_)) => return Err(OidcError::InvalidClaim("bsn and zvn")),
        (Some(bsn), None) => Some(PersonalId::Bsn(
            Bsn::parse(bsn).map_err(|_| OidcError::InvalidClaim(BSN_CLAIM))?,
        )),
        (None, Some(zvn)) => Some(PersonalId::Zvn(
            Zvn::parse(zvn).map_err(|_| OidcError::InvalidClaim(ZVN_CLAIM))?,
        )),
        (None, None) => None,
    };
    let missing = |claim: &str| OidcError::MissingClaim(claim.into());
    Ok(VerifiedToken {
        issuer: claims.iss.ok_or_else(|| missing("iss"))?,
        subject: claims.sub.ok_or_else(|| missing("sub"))?,
        expires_at: claims.exp.ok_or_else(|| missing("exp"))?,
        scopes,
        uzi: claims.uzi,
        person,
    })
}

/// The `iss` a token claims, unverified: which verifier to ask.
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Issuer {
        iss: String,
    }
    if token.len() > MAX_OIDC_TOKEN_BYTES {
        return None;
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Issuer>(token)
        .ok()
        .map(|claims| claims.iss)
}

/// A provider URL must be `https`, or `http` on a loopback address.
fn check_provider_url(url: &str) -> Result<(), OidcError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| OidcError::Configuration(format!("{url:?} is not a URL: {e}")))?;
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(OidcError::Configuration(format!(
            "{url:?}: an OpenID provider is reached over https (http only on a loopback address)"
        ))),
    }
}

/// GETs `url` and reads at most `limit` bytes of a successful answer.
async fn get_limited(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, OidcError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| OidcError::Provider(format!("GET {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(OidcError::Provider(format!(
            "GET {url}: {}",
            response.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OidcError::Provider(format!("GET {url}: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(OidcError::Provider(format!(
                "GET {url}: the answer is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    const ISSUER: &str = "http://127.0.0.1:1/realms/zorg";
    const AUDIENCE: &str = "node-client";
    const BSN: &str = "999911120";

    struct Signer {
        key: EncodingKey,
        jwk: Jwk,
        algorithm: Algorithm,
    }

    impl Signer {
        fn es256(kid: &str) -> Signer {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let key = EncodingKey::from_ec_der(&pair.serialize_der());
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
            jwk.common.key_id = Some(kid.into());
            Signer {
                key,
                jwk,
                algorithm: Algorithm::ES256,
            }
        }

        fn ed25519(kid: &str) -> Signer {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let key = EncodingKey::from_ed_der(&pair.serialize_der());
            let jwk: Jwk = serde_json::from_value(json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }))
            .unwrap();
            Signer {
                key,
                jwk,
                algorithm: Algorithm::EdDSA,
            }
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(self.algorithm);
            header.kid = self.jwk.common.key_id.clone();
            jsonwebtoken::encode(&header, claims, &self.key).unwrap()
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER, "sub": "citizen-1", "aud": AUDIENCE,
            "iat": now(), "exp": now() + 300,
            "bsn": BSN, "scope": "openid patient/*.read",
        })
    }

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
        }
    }

    fn verifier(signers: &[&Signer]) -> OidcVerifier {
        let set = JwkSet {
            keys: signers.iter().map(|s| s.jwk.clone()).collect(),
        };
        OidcVerifier::with_key_set(config(), &set).unwrap()
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    #[tokio::test]
    async fn a_good_token_verifies_as_a_citizen() {
        let signer = Signer::es256("k1");
        let verified = verifier(&[&signer])
            .verify(&signer.sign(&claims()))
            .await
            .unwrap();
        assert_eq!(verified.subject, "citizen-1");
        let citizen = verified.clone().into_citizen().unwrap();
        assert_eq!(citizen.person, PersonalId::Bsn(Bsn::parse(BSN).unwrap()));
        assert!(citizen.permits("Observation", Interaction::Read));
        assert!(!citizen.permits("Observation", Interaction::Create));
        assert!(matches!(
            verified.into_staff(),
            Err(OidcError::WrongKind(_))
        ));
    }

    #[tokio::test]
    async fn eddsa_tokens_and_audience_lists_verify_as_staff() {
        let signer = Signer::ed25519("ed");
        let mut staff = claims();
        let object = staff.as_object_mut().unwrap();
        object.remove("bsn");
        object.insert("uzi".into(), json!("123456789"));
        object.insert("aud".into(), json!(["other", AUDIENCE]));
        object.insert(
            "scp".into(),
            json!(["user/*.read", "system/Observation.cruds"]),
        );
        object.remove("scope");
        let staff = verifier(&[&signer])
            .verify(&signer.sign(&staff))
            .await
            .unwrap()
            .into_staff()
            .unwrap();
        assert_eq!(staff.uzi.as_deref(), Some("123456789"));
        assert!(staff.permits("Condition", Interaction::Search));
        assert!(!staff.permits("Condition", Interaction::Update));
        assert!(staff.permits("Observation", Interaction::Update));
    }

    #[tokio::test]
    async fn expired_future_and_not_yet_valid_tokens_are_refused() {
        let signer = Signer::es256("k1");
        let verifier = verifier(&[&signer]);
        let old = now() - 2 * CLOCK_SKEW_S - 300;
        for (claims, expected) in [
            (
                with(claims(), "exp", json!(now() - CLOCK_SKEW_S - 1)),
                OidcError::Expired,
            ),
            (
                with(with(claims(), "iat", json!(old)), "exp", json!(old + 300)),
                OidcError::Expired,
            ),
            (
                with(claims(), "nbf", json!(now() + CLOCK_SKEW_S + 60)),
                OidcError::NotYetValid,
            ),
            (
                with(claims(), "iat", json!(now() + CLOCK_SKEW_S + 60)),
                OidcError::NotYetValid,
            ),
        ] {
            assert_eq!(verifier.verify(&signer.sign(&claims)).await, Err(expected));
        }
        let within_skew = with(claims(), "exp", json!(now() - CLOCK_SKEW_S / 2));
        assert!(verifier.verify(&signer.sign(&within_skew)).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_or_missing_issuer_audience_and_subject_are_refused() {
        let signer = Signer::es256("k1");
        let verifier = verifier(&[&signer]);
        let cases = [
            (
                with(claims(), "aud", json!("another-client")),
                OidcError::WrongAudience,
            ),
            (
                with(claims(), "aud", json!(["a", "b"])),
                OidcError::WrongAudience,
            ),
            (
                with(claims(), "iss", json!(format!("{ISSUER}/"))),
                OidcError::WrongIssuer,
            ),
            (
                with(claims(), "iss", json!("https://evil.example")),
                OidcError::WrongIssuer,
            ),
        ];
        for (claims, expected) in cases {
            assert_eq!(verifier.verify(&signer.sign(&claims)).await, Err(expected));
        }
        for missing in ["aud", "iss", "sub", "exp"] {
            let mut claims = claims();
            claims.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                verifier.verify(&signer.sign(&claims)).await,
                Err(OidcError::MissingClaim(missing.into())),
                "{missing}"
            );
        }
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let signer = Signer::es256("k1");
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k1"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let refused = verifier(&[&signer]).verify(&token).await.unwrap_err();
            assert!(
                matches!(refused, OidcError::Algorithm | OidcError::Malformed(_)),
                "{refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_refused() {
        let signer = Signer::es256("k1");
        let public = serde_json::to_vec(&signer.jwk).unwrap();
        let AlgorithmParameters::EllipticCurve(ec) = &signer.jwk.algorithm else {
            panic!("an EC key")
        };
        let verifier = verifier(&[&signer]);
        for secret in [public.clone(), ec.x.as_bytes().to_vec()] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("k1".into());
            let forged =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret))
                    .unwrap();
            assert_eq!(verifier.verify(&forged).await, Err(OidcError::Algorithm));
        }
    }

    #[tokio::test]
    async fn a_key_of_another_algorithm_than_the_header_is_refused() {
        let ec = Signer::es256("k1");
        let ed = Signer::ed25519("k1");
        // An EdDSA token whose kid names the EC key.
        let token = ed.sign(&claims());
        assert_eq!(
            verifier(&[&ec]).verify(&token).await,
            Err(OidcError::Algorithm)
        );
    }

    #[tokio::test]
    async fn unknown_key_ids_and_other_keys_are_refused() {
        let known = Signer::es256("k1");
        let stranger = Signer::es256("k2");
        let impostor = Signer::es256("k1");
        let verifier = verifier(&[&known]);
        assert_eq!(
            verifier.verify(&stranger.sign(&claims())).await,
            Err(OidcError::UnknownKey)
        );
        assert_eq!(
            verifier.verify(&impostor.sign(&claims())).await,
            Err(OidcError::BadSignature)
        );
        let mut header = Header::new(Algorithm::ES256);
        header.kid = None;
        let without_kid = jsonwebtoken::encode(&header, &claims(), &known.key).unwrap();
        assert_eq!(
            verifier.verify(&without_kid).await,
            Err(OidcError::UnknownKey)
        );
    }

    #[tokio::test]
    async fn a_tampered_token_is_refused() {
        let signer = Signer::es256("k1");
        let verifier = verifier(&[&signer]);
        let token = signer.sign(&claims());
        let [header, _, signature]: [&str; 3] =
            token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let other = URL_SAFE_NO_PAD.encode(with(claims(), "bsn", json!("111222333")).to_string());
        assert_eq!(
            verifier
                .verify(&format!("{header}.{other}.{signature}"))
                .await,
            Err(OidcError::BadSignature)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[10] ^= 1;
        let flipped = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            verifier
                .verify(&format!(
                    "{header}.{}.{flipped}",
                    token.split('.').nth(1).unwrap()
                ))
                .await,
            Err(OidcError::BadSignature)
        );
        let long = "a".repeat(MAX_OIDC_TOKEN_BYTES + 1);
        assert!(matches!(
            verifier.verify(&long).await,
            Err(OidcError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn identity_claims_are_checked() {
        let signer = Signer::es256("k1");
        let verifier = verifier(&[&signer]);
        let cases = [
            (
                with(claims(), "bsn", json!("123456789")),
                OidcError::InvalidClaim(BSN_CLAIM),
            ),
            (
                with(claims(), "zvn", json!("9000000000000001")),
                OidcError::InvalidClaim("bsn and zvn"),
            ),
            (
                with(claims(), "uzi", json!("12345")),
                OidcError::InvalidClaim(UZI_CLAIM),
            ),
        ];
        for (claims, expected) in cases {
            assert_eq!(verifier.verify(&signer.sign(&claims)).await, Err(expected));
        }
        let both = verifier
            .verify(&signer.sign(&with(claims(), "uzi", json!("123456789"))))
            .await
            .unwrap();
        assert!(matches!(
            both.clone().into_citizen(),
            Err(OidcError::WrongKind(_))
        ));
        assert!(matches!(both.into_staff(), Err(OidcError::WrongKind(_))));
        let mut anonymous = claims();
        anonymous.as_object_mut().unwrap().remove("bsn");
        let anonymous = verifier.verify(&signer.sign(&anonymous)).await.unwrap();
        assert!(matches!(
            anonymous.into_citizen(),
            Err(OidcError::WrongKind(_))
        ));
    }

    #[test]
    fn provider_urls_are_https_or_loopback() {
        for good in [
            "https://login.example.nl",
            "https://login.example.nl/realms/x",
            "http://127.0.0.1:8080",
            "http://localhost:9000/idp",
            "http://[::1]:80",
        ] {
            assert!(check_provider_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://login.example.nl",
            "ftp://x",
            "not a url",
            "http://10.0.0.1",
        ] {
            assert!(check_provider_url(bad).is_err(), "{bad}");
        }
    }

    mod provider {
        use super::*;
        use axum::Json;
        use axum::routing::get;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Served {
            issuer: String,
            keys: std::sync::Mutex<JwkSet>,
            key_fetches: AtomicUsize,
        }

        async fn start(named_issuer: Option<&str>, keys: JwkSet) -> (String, Arc<Served>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let served = Arc::new(Served {
                issuer: named_issuer.map_or(issuer.clone(), String::from),
                keys: std::sync::Mutex::new(keys),
                key_fetches: AtomicUsize::new(0),
            });
            let (discovery, jwks) = (served.clone(), served.clone());
            let base = issuer.clone();
            let app = axum::Router::new()
                .route(
                    DISCOVERY_PATH,
                    get(move || async move {
                        Json(
                            json!({"issuer": discovery.issuer, "jwks_uri": format!("{base}/jwks")}),
                        )
                    }),
                )
                .route(
                    "/jwks",
                    get(move || async move {
                        jwks.key_fetches.fetch_add(1, Ordering::SeqCst);
                        Json(jwks.keys.lock().unwrap().clone())
                    }),
                );
            tokio::spawn(async move { axum::serve(listener, app).await });
            (issuer, served)
        }

        fn claims_for(issuer: &str) -> Value {
            with(claims(), "iss", json!(issuer))
        }

        #[tokio::test]
        async fn keys_are_discovered_cached_and_refetched_at_most_once_per_interval() {
            let (first, second) = (Signer::es256("k1"), Signer::es256("k2"));
            let (issuer, served) = start(
                None,
                JwkSet {
                    keys: vec![first.jwk.clone()],
                },
            )
            .await;
            let verifier = OidcVerifier::new(OidcConfig {
                issuer: issuer.clone(),
                audience: AUDIENCE.into(),
            })
            .unwrap();
            for _ in 0..3 {
                verifier
                    .verify(&first.sign(&claims_for(&issuer)))
                    .await
                    .unwrap();
            }
            assert_eq!(served.key_fetches.load(Ordering::SeqCst), 1);
            served.keys.lock().unwrap().keys.push(second.jwk.clone());
            for _ in 0..3 {
                assert_eq!(
                    verifier.verify(&second.sign(&claims_for(&issuer))).await,
                    Err(OidcError::UnknownKey)
                );
            }
            assert_eq!(
                served.key_fetches.load(Ordering::SeqCst),
                1,
                "an unknown kid within the interval does not fetch again"
            );
        }

        #[tokio::test]
        async fn a_discovery_document_of_another_issuer_is_refused() {
            let signer = Signer::es256("k1");
            let (issuer, served) = start(
                Some("https://someone-else.example"),
                JwkSet {
                    keys: vec![signer.jwk.clone()],
                },
            )
            .await;
            let verifier = OidcVerifier::new(OidcConfig {
                issuer: issuer.clone(),
                audience: AUDIENCE.into(),
            })
            .unwrap();
            let refused = verifier
                .verify(&signer.sign(&claims_for(&issuer)))
                .await
                .unwrap_err();
            assert!(refused.is_provider_failure(), "{refused:?}");
            assert_eq!(served.key_fetches.load(Ordering::SeqCst), 0);
        }

        #[tokio::test]
        async fn an_unreachable_provider_is_a_provider_failure() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            drop(listener);
            let signer = Signer::es256("k1");
            let verifier = OidcVerifier::new(OidcConfig {
                issuer: issuer.clone(),
                audience: AUDIENCE.into(),
            })
            .unwrap();
            let refused = verifier
                .verify(&signer.sign(&claims_for(&issuer)))
                .await
                .unwrap_err();
            assert!(refused.is_provider_failure(), "{refused:?}");
        }
    }
}
