//! **zorgnet's development identity provider — for demos and tests only.**
//!
//! What it is: a small OpenID Connect provider (axum) that lets one log in as any of a
//! configured list of demo people — citizens with a BSN or zorgverificatienummer,
//! professionals with a UZI number — by picking them on a page. There are no passwords:
//! whoever reaches it can be anyone on the list. Every page and document it serves says so.
//! It exists so that `zorgnet demo` and the tests can exercise the real OpenID Connect path
//! of a node (`zorgnet_trust::oidc`) without an outside provider; it is never the default
//! outside `zorgnet demo`, and a real deployment points its nodes at a real provider (a
//! DigiD-like one for citizens, the organisation's own for its staff) by URL.
//!
//! What it serves ([`router`]):
//! - `GET /.well-known/openid-configuration`: discovery; the issuer is [`IdpConfig::issuer`].
//! - `GET /jwks`: the one ES256 signing key, generated at start or kept in
//!   [`KeySource::Directory`] as [`KEY_FILE`] (PKCS#8 PEM, mode 0600).
//! - `GET /authorize`: the authorization code flow with PKCE (`S256` only, required) for a
//!   registered client and one of its registered redirect URIs: a form to pick the demo
//!   user. `POST /authorize` (the form) redirects back with a one-time `code` valid for
//!   [`AUTHORIZATION_CODE_LIFETIME_S`]. A redirect URI matches a registered one exactly,
//!   except that a registered `http` URI on a loopback address (`127.0.0.1`, `[::1]`) matches
//!   it on any port, as RFC 8252 §7.3 asks for native apps, which listen on a port the
//!   system gives them. An app may name the FHIR server it wants a token for by SMART's
//!   `aud` parameter (or RFC 8707's `resource`): it must be a URL of one of
//!   [`IdpConfig::resources`], else the request is refused.
//! - `POST /token`: `grant_type=authorization_code` with the `code`, the same
//!   `redirect_uri` and `client_id`, and the `code_verifier`: an ID token and an access token
//!   (both JWTs, valid [`TOKEN_LIFETIME_S`]). The ID token's `aud` is the client id; the
//!   access token's is the audience of the resource server the request named, or else the
//!   client id. Clients are public (no secret; PKCE binds the code to whoever started the
//!   flow). A code works once.
//!
//! The tokens carry the claims `zorgnet_trust::oidc` reads: `bsn` or `zvn` for a citizen,
//! `uzi` for a professional, `name`, and in the access token the granted `scope`. The scopes
//! are the ones asked for, except that a citizen is never given `user/` or `system/` scopes.
//! [`DevIdp::access_token`] and [`DevIdp::sign`] mint tokens directly, for tests.
//! What it is not: a real identity provider (no authentication, no consent screen, no
//! refresh tokens, no sessions, no client secrets), or anything a real person should log in
//! to.
#![deny(missing_docs)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zorgnet_pseudonym::{Bsn, Zvn};

/// What every page and document of this provider says about itself.
pub const DEVELOPMENT_NOTICE: &str = "zorgnet development identity provider: for demos and \
    tests only. There are no passwords: anyone who reaches it can log in as anyone on its \
    list. Never use it for real people or real data.";
/// The signing key's file in [`KeySource::Directory`].
pub const KEY_FILE: &str = "dev-idp-signing-key.pem";
/// How long an authorization code may be exchanged, in seconds.
pub const AUTHORIZATION_CODE_LIFETIME_S: u64 = 60;
/// How long an ID token and an access token are valid, in seconds.
pub const TOKEN_LIFETIME_S: u64 = 15 * 60;
/// Most authorization codes waiting to be exchanged; beyond, new logins are refused until
/// some expire.
pub const MAX_PENDING_CODES: usize = 1_000;
/// Largest form body read, in bytes.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Longest value of any one request parameter, in characters.
pub const MAX_PARAMETER_CHARS: usize = 2_048;
/// PKCE code verifier length, in characters (RFC 7636).
pub const CODE_VERIFIER_CHARS: std::ops::RangeInclusive<usize> = 43..=128;
/// Random bytes in an authorization code.
const CODE_BYTES: usize = 32;

/// Why the provider cannot start, or a token cannot be minted.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The configuration is unusable.
    #[error("invalid development identity provider configuration: {0}")]
    Configuration(String),
    /// The key file cannot be read or written.
    #[error("the development identity provider's key file: {0}")]
    KeyFile(#[from] std::io::Error),
    /// The signing key is unusable.
    #[error("the development identity provider's signing key: {0}")]
    Key(String),
}

/// Where the signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum KeySource {
    /// A new key at every start: tokens of an earlier run no longer verify.
    Ephemeral,
    /// [`KEY_FILE`] in this directory, created (mode 0600) when missing.
    Directory(PathBuf),
}

/// A client that may ask for logins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClientRegistration {
    /// The client id: the `aud` of its ID tokens, and of its access tokens when it names no
    /// resource server.
    pub client_id: String,
    /// Where it may be sent back to: compared exactly, except for the port of a loopback
    /// `http` URI (see the crate documentation).
    pub redirect_uris: Vec<String>,
}

/// A server that accepts this provider's access tokens for an audience of its own (a FHIR
/// endpoint an app asks for by SMART's `aud` parameter).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResourceServer {
    /// The `aud` its access tokens carry: what the server's token verifier expects.
    pub audience: String,
    /// The URLs an app may name it by (its FHIR base URLs), compared without a trailing
    /// slash.
    pub urls: Vec<String>,
}

/// One person on the login page. A citizen has `bsn` or `zvn`; a professional `uzi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoUser {
    /// The subject identifier (`sub`).
    pub subject: String,
    /// The name shown and put in the `name` claim.
    pub name: String,
    /// A citizen's BSN.
    #[serde(default)]
    pub bsn: Option<String>,
    /// A citizen's zorgverificatienummer.
    #[serde(default)]
    pub zvn: Option<String>,
    /// A professional's UZI number.
    #[serde(default)]
    pub uzi: Option<String>,
}

impl DemoUser {
    /// A citizen with a BSN.
    pub fn citizen(subject: &str, name: &str, bsn: &str) -> DemoUser {
        DemoUser {
            subject: subject.into(),
            name: name.into(),
            bsn: Some(bsn.into()),
            zvn: None,
            uzi: None,
        }
    }

    /// A professional with a UZI number.
    pub fn professional(subject: &str, name: &str, uzi: &str) -> DemoUser {
        DemoUser {
            subject: subject.into(),
            name: name.into(),
            bsn: None,
            zvn: None,
            uzi: Some(uzi.into()),
        }
    }

    fn is_citizen(&self) -> bool {
        self.bsn.is_some() || self.zvn.is_some()
    }

    fn check(&self) -> Result<(), String> {
        let who = &self.subject;
        if who.is_empty() || who.len() > MAX_PARAMETER_CHARS {
            return Err("a demo user without a subject".into());
        }
        match (&self.bsn, &self.zvn, &self.uzi) {
            (Some(bsn), None, None) => Bsn::parse(bsn)
                .map(|_| ())
                .map_err(|_| format!("{who}: the BSN fails the 11-check")),
            (None, Some(zvn), None) => Zvn::parse(zvn)
                .map(|_| ())
                .map_err(|_| format!("{who}: not a zorgverificatienummer")),
            (None, None, Some(uzi)) if zorgnet_trust::is_uzi_number(uzi) => Ok(()),
            (None, None, Some(_)) => Err(format!("{who}: a UZI number has nine digits")),
            _ => Err(format!(
                "{who}: a demo user is a citizen (bsn or zvn) or a professional (uzi)"
            )),
        }
    }
}

/// How the provider is set up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdpConfig {
    /// The issuer: the URL the provider is reached at, exactly as verifiers are configured
    /// with it (no trailing slash).
    pub issuer: String,
    /// The clients that may ask for logins.
    pub clients: Vec<ClientRegistration>,
    /// The servers an app may ask an access token for by name.
    #[serde(default)]
    pub resources: Vec<ResourceServer>,
    /// The people one can log in as.
    pub users: Vec<DemoUser>,
    /// The signing key.
    pub key: KeySource,
}

/// A running provider's state; [`DevIdp::router`] serves it.
#[derive(Clone)]
pub struct DevIdp {
    inner: Arc<Inner>,
}

struct Inner {
    config: IdpConfig,
    key: EncodingKey,
    jwk: Jwk,
    key_id: String,
    codes: Mutex<HashMap<String, PendingCode>>,
}

/// A code waiting to be exchanged.
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    /// The access token's audience.
    audience: String,
    subject: String,
    scope: String,
    nonce: Option<String>,
    challenge: String,
    issued: Instant,
}

/// The provider for `config` as an axum router (see the crate documentation).
pub fn router(config: IdpConfig) -> Result<Router, IdpError> {
    Ok(DevIdp::new(config)?.router())
}

impl DevIdp {
    /// Checks `config` and loads or makes the signing key (blocking, when it reads a file).
    pub fn new(config: IdpConfig) -> Result<DevIdp, IdpError> {
        check_config(&config).map_err(IdpError::Configuration)?;
        let pkcs8 = signing_key(&config.key)?;
        let key = EncodingKey::from_ec_der(&pkcs8);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| IdpError::Key(e.to_string()))?;
        let key_id = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| IdpError::Key(e.to_string()))?;
        jwk.common.key_id = Some(key_id.clone());
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        tracing::warn!(issuer = %config.issuer, "{DEVELOPMENT_NOTICE}");
        Ok(DevIdp {
            inner: Arc::new(Inner {
                config,
                key,
                jwk,
                key_id,
                codes: Mutex::default(),
            }),
        })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.inner.config.issuer
    }

    /// The routes of the crate documentation.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize_page).post(authorize_choice))
            .route("/token", axum::routing::post(token))
            .route("/", get(home))
            .with_state(self.inner.clone())
    }

    /// An access token for the demo user `subject` and `client_id` with `scope`, as the token
    /// endpoint would give it: for tests.
    pub fn access_token(
        &self,
        client_id: &str,
        subject: &str,
        scope: &str,
    ) -> Result<String, IdpError> {
        let user = self.inner.user(subject).ok_or_else(|| {
            IdpError::Configuration(format!("no demo user with subject {subject:?}"))
        })?;
        Ok(self
            .inner
            .access_token(client_id, client_id, user, &granted_scope(user, scope)))
    }

    /// `claims` signed with the provider's key, whatever they say: for tests of what a
    /// verifier refuses (an expired token, another audience).
    pub fn sign(&self, claims: &Value) -> String {
        self.inner.sign(claims, false)
    }

    /// The public key as a JWK.
    pub fn public_key(&self) -> &Jwk {
        &self.inner.jwk
    }
}

fn check_config(config: &IdpConfig) -> Result<(), String> {
    if config.issuer.is_empty() || config.issuer.ends_with('/') {
        return Err("the issuer is a URL without a trailing slash".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    for client in &config.clients {
        if client.client_id.is_empty() || !ids.insert(client.client_id.as_str()) {
            return Err(format!(
                "client ids are non-empty and unique: {:?}",
                client.client_id
            ));
        }
        if client.redirect_uris.is_empty() {
            return Err(format!("client {:?} has no redirect URI", client.client_id));
        }
        if let Some(odd) = client.redirect_uris.iter().find(|uri| {
            url::Url::parse(uri).map_or(true, |url| {
                !matches!(url.scheme(), "http" | "https") || url.fragment().is_some()
            })
        }) {
            return Err(format!(
                "redirect URI {odd:?} is not an http(s) URL without a fragment"
            ));
        }
    }
    for resource in &config.resources {
        if resource.audience.trim().is_empty() || resource.urls.is_empty() {
            return Err("a resource server has an audience and at least one URL".into());
        }
        if let Some(odd) = resource.urls.iter().find(|u| url::Url::parse(u).is_err()) {
            return Err(format!("resource server URL {odd:?} is not a URL"));
        }
    }
    let mut subjects = std::collections::BTreeSet::new();
    for user in &config.users {
        user.check()?;
        if !subjects.insert(user.subject.as_str()) {
            return Err(format!("two demo users are {:?}", user.subject));
        }
    }
    Ok(())
}

/// The PKCS#8 DER of the P-256 signing key.
fn signing_key(source: &KeySource) -> Result<Vec<u8>, IdpError> {
    let generate = || {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IdpError::Key(e.to_string()))
    };
    let pair = match source {
        KeySource::Ephemeral => generate()?,
        KeySource::Directory(directory) => {
            std::fs::create_dir_all(directory)?;
            let fresh = generate()?.serialize_pem();
            let pem = zorgnet_trust::secret::read_or_create(&directory.join(KEY_FILE), || fresh)?;
            let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| IdpError::Key(e.to_string()))?;
            if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
                return Err(IdpError::Key(format!(
                    "{} is not a P-256 key",
                    directory.join(KEY_FILE).display()
                )));
            }
            pair
        }
    };
    Ok(pair.serialize_der())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `asked` may stand for the registered redirect URI `registered`: the same text, or,
/// for a registered `http` URI on a loopback IP address, the same but for the port (RFC 8252
/// §7.3). `localhost` gets no such allowance (RFC 8252 §8.3: it may not resolve to loopback).
fn redirect_matches(registered: &str, asked: &str) -> bool {
    if registered == asked {
        return true;
    }
    let (Ok(registered), Ok(asked)) = (url::Url::parse(registered), url::Url::parse(asked)) else {
        return false;
    };
    let loopback = |url: &url::Url| match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    registered.scheme() == "http"
        && asked.scheme() == "http"
        && loopback(&registered)
        && registered.host() == asked.host()
        && asked.username().is_empty()
        && asked.password().is_none()
        && registered.path() == asked.path()
        && registered.query() == asked.query()
        && asked.fragment().is_none()
}

/// The scopes a user is given of those asked: a citizen never gets `user/` or `system/`.
fn granted_scope(user: &DemoUser, asked: &str) -> String {
    asked
        .split_ascii_whitespace()
        .filter(|s| !(user.is_citizen() && (s.starts_with("user/") || s.starts_with("system/"))))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Inner {
    fn user(&self, subject: &str) -> Option<&DemoUser> {
        self.config.users.iter().find(|u| u.subject == subject)
    }

    /// The audience of the resource server `url` names, if it names one.
    fn resource_audience(&self, url: &str) -> Option<&str> {
        let url = url.trim_end_matches('/');
        self.config
            .resources
            .iter()
            .find(|r| r.urls.iter().any(|u| u.trim_end_matches('/') == url))
            .map(|r| r.audience.as_str())
    }

    fn client(&self, client_id: &str) -> Option<&ClientRegistration> {
        self.config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    fn sign(&self, claims: &Value, access_token: bool) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        if access_token {
            header.typ = Some("at+jwt".into());
        }
        // Signing a JSON value with a key checked at start fails only if aws-lc-rs does.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }

    fn identity_claims(user: &DemoUser, claims: &mut serde_json::Map<String, Value>) {
        claims.insert("name".into(), json!(user.name));
        for (name, value) in [("bsn", &user.bsn), ("zvn", &user.zvn), ("uzi", &user.uzi)] {
            if let Some(value) = value {
                claims.insert(name.into(), json!(value));
            }
        }
    }

    fn access_token(
        &self,
        client_id: &str,
        audience: &str,
        user: &DemoUser,
        scope: &str,
    ) -> String {
        let now = now_s();
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), json!(self.config.issuer));
        claims.insert("sub".into(), json!(user.subject));
        claims.insert("aud".into(), json!(audience));
        claims.insert("client_id".into(), json!(client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_S));
        claims.insert("jti".into(), json!(random_token()));
        claims.insert("scope".into(), json!(scope));
        Inner::identity_claims(user, &mut claims);
        self.sign(&Value::Object(claims), true)
    }

    fn id_token(&self, client_id: &str, user: &DemoUser, nonce: Option<&str>) -> String {
        let now = now_s();
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), json!(self.config.issuer));
        claims.insert("sub".into(), json!(user.subject));
        claims.insert("aud".into(), json!(client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("auth_time".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_S));
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        Inner::identity_claims(user, &mut claims);
        self.sign(&Value::Object(claims), false)
    }

    /// Stores a new code; `None` when too many are waiting.
    fn issue_code(&self, pending: PendingCode) -> Option<String> {
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        let lifetime = Duration::from_secs(AUTHORIZATION_CODE_LIFETIME_S);
        codes.retain(|_, c| c.issued.elapsed() < lifetime);
        if codes.len() >= MAX_PENDING_CODES {
            return None;
        }
        let code = random_token();
        codes.insert(code.clone(), pending);
        Some(code)
    }

    /// Takes a code: it works once, and only within its lifetime.
    fn take_code(&self, code: &str) -> Option<PendingCode> {
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes
            .remove(code)
            .filter(|c| c.issued.elapsed() < Duration::from_secs(AUTHORIZATION_CODE_LIFETIME_S))
    }
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; CODE_BYTES]>())
}

/// Request parameters, each at most once and at most [`MAX_PARAMETER_CHARS`] long.
fn parameters(encoded: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut parameters = HashMap::new();
    for (name, value) in form_urlencoded::parse(encoded) {
        if value.chars().count() > MAX_PARAMETER_CHARS {
            return Err(format!("the parameter {name} is too long"));
        }
        if parameters
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(format!("the parameter {name} is given twice"));
        }
    }
    Ok(parameters)
}

async fn discovery(State(idp): State<Arc<Inner>>) -> Json<Value> {
    let issuer = &idp.config.issuer;
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "profile", "fhirUser", "patient/*.read", "patient/*.rs",
            "user/*.read", "user/*.rs", "user/*.write", "user/*.cruds"],
        "claims_supported": ["sub", "name", "bsn", "zvn", "uzi"],
        "zorgnet_development_only": DEVELOPMENT_NOTICE,
    }))
}

async fn jwks(State(idp): State<Arc<Inner>>) -> Json<Value> {
    Json(json!({"keys": [idp.jwk], "zorgnet_development_only": DEVELOPMENT_NOTICE}))
}

/// HTML-escapes `text` for an element's content or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page, with the development notice at its top.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} — zorgnet development identity provider</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem;line-height:1.5}}\
         .notice{{border:3px solid #b00;background:#fee;padding:.5rem 1rem}}\
         fieldset{{margin:1rem 0}} label{{margin-left:.4rem}} button{{font-size:1.1rem;padding:.4rem 1.2rem}}</style></head>\n\
         <body>\n<div class=\"notice\" role=\"note\"><strong>Development only.</strong> {notice}</div>\n\
         <main>\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
        notice = escape(DEVELOPMENT_NOTICE),
    )
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        Html(page(
            "Login refused",
            &format!("<p role=\"alert\">{}</p>\n", escape(message)),
        )),
    )
        .into_response()
}

async fn home() -> Html<String> {
    Html(page(
        "zorgnet development identity provider",
        "<p>An OpenID Connect provider for demos and tests. Clients start a login at \
         <code>/authorize</code>; its discovery document is at \
         <code>/.well-known/openid-configuration</code>.</p>\n",
    ))
}

/// The parameters of an authorization request, checked.
struct AuthorizationRequest {
    client_id: String,
    redirect_uri: String,
    audience: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    challenge: String,
}

/// Checks an authorization request's parameters. Every failure is shown on a page, never
/// sent to a redirect URI that may not be the client's.
fn authorization_request(
    idp: &Inner,
    parameters: &HashMap<String, String>,
) -> Result<AuthorizationRequest, String> {
    let get = |name: &str| parameters.get(name).map(String::as_str);
    let client_id = get("client_id").ok_or("client_id is missing")?;
    let client = idp
        .client(client_id)
        .ok_or_else(|| format!("{client_id:?} is not a registered client"))?;
    let redirect_uri = get("redirect_uri").ok_or("redirect_uri is missing")?;
    if !client
        .redirect_uris
        .iter()
        .any(|uri| redirect_matches(uri, redirect_uri))
    {
        return Err(format!(
            "{redirect_uri:?} is not a redirect URI registered for {client_id:?}"
        ));
    }
    if get("response_type") != Some("code") {
        return Err("response_type must be code".into());
    }
    let scope = get("scope").unwrap_or_default();
    if !scope.split_ascii_whitespace().any(|s| s == "openid") {
        return Err("scope must include openid".into());
    }
    if get("code_challenge_method") != Some("S256") {
        return Err("PKCE is required: code_challenge_method=S256".into());
    }
    let challenge = get("code_challenge").unwrap_or_default();
    if URL_SAFE_NO_PAD
        .decode(challenge)
        .map_or(true, |hash| hash.len() != 32)
    {
        return Err("code_challenge must be the base64url SHA-256 of the code verifier".into());
    }
    let audience = match (get("aud"), get("resource")) {
        (Some(_), Some(_)) => return Err("name the server by aud or by resource, not both".into()),
        (Some(url), None) | (None, Some(url)) => idp
            .resource_audience(url)
            .ok_or_else(|| format!("{url:?} is not a FHIR server this provider issues tokens for"))?
            .to_string(),
        (None, None) => client_id.to_string(),
    };
    Ok(AuthorizationRequest {
        client_id: client_id.into(),
        redirect_uri: redirect_uri.into(),
        audience,
        scope: scope.into(),
        state: get("state").map(String::from),
        nonce: get("nonce").map(String::from),
        challenge: challenge.into(),
    })
}

/// The request's parameters carried through the login form.
const CARRIED: [&str; 9] = [
    "client_id",
    "redirect_uri",
    "aud",
    "resource",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
];

async fn authorize_page(State(idp): State<Arc<Inner>>, RawQuery(query): RawQuery) -> Response {
    let parameters = match parameters(query.unwrap_or_default().as_bytes()) {
        Ok(parameters) => parameters,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let request = match authorization_request(&idp, &parameters) {
        Ok(request) => request,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let mut form = String::from("<form method=\"post\" action=\"authorize\">\n");
    for name in CARRIED
        .iter()
        .chain(["code_challenge_method"].iter())
        .copied()
    {
        if let Some(value) = parameters.get(name) {
            form.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            ));
        }
    }
    let groups = [
        ("Log in as a demo citizen", true),
        ("Log in as a demo professional", false),
    ];
    for (legend, citizens) in groups {
        let users: Vec<(usize, &DemoUser)> = idp
            .config
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| u.is_citizen() == citizens)
            .collect();
        if users.is_empty() {
            continue;
        }
        form.push_str(&format!("<fieldset>\n<legend>{legend}</legend>\n"));
        for (i, user) in users {
            let detail = match (&user.bsn, &user.zvn, &user.uzi) {
                (Some(bsn), _, _) => format!("BSN {bsn}"),
                (_, Some(zvn), _) => format!("zorgverificatienummer {zvn}"),
                (_, _, Some(uzi)) => format!("UZI {uzi}"),
                _ => String::new(),
            };
            form.push_str(&format!(
                "<div><input type=\"radio\" id=\"user-{i}\" name=\"user\" value=\"{}\" required>\
                 <label for=\"user-{i}\">{} ({})</label></div>\n",
                escape(&user.subject),
                escape(&user.name),
                escape(&detail)
            ));
        }
        form.push_str("</fieldset>\n");
    }
    form.push_str("<button type=\"submit\">Log in</button>\n</form>\n");
    let server = match parameters.get("aud").or(parameters.get("resource")) {
        Some(url) => format!(" to use <code>{}</code>", escape(url)),
        None => String::new(),
    };
    let body = format!(
        "<p>The application <strong>{}</strong> asks who you are{server}, with the scopes \
         <code>{}</code>. Choose a demo person; no password is asked.</p>\n{form}",
        escape(&request.client_id),
        escape(&request.scope)
    );
    Html(page("Development login", &body)).into_response()
}

async fn authorize_choice(State(idp): State<Arc<Inner>>, body: Bytes) -> Response {
    if body.len() > MAX_FORM_BYTES {
        return error_page(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    }
    let parameters = match parameters(&body) {
        Ok(parameters) => parameters,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let request = match authorization_request(&idp, &parameters) {
        Ok(request) => request,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let Some(user) = parameters.get("user").and_then(|s| idp.user(s)) else {
        return error_page(StatusCode::BAD_REQUEST, "choose one of the demo people");
    };
    let scope = granted_scope(user, &request.scope);
    let Some(code) = idp.issue_code(PendingCode {
        client_id: request.client_id,
        redirect_uri: request.redirect_uri.clone(),
        audience: request.audience,
        subject: user.subject.clone(),
        scope,
        nonce: request.nonce,
        challenge: request.challenge,
        issued: Instant::now(),
    }) else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins are waiting to be completed; try again in a minute",
        );
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("code", &code);
    if let Some(state) = &request.state {
        query.append_pair("state", state);
    }
    let separator = if request.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{separator}{}", request.redirect_uri, query.finish());
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => error_page(StatusCode::BAD_REQUEST, "the redirect URI is not usable"),
    }
}

/// An OAuth2 error answer of the token endpoint (RFC 6749 §5.2).
fn token_error(error: &str, description: &str) -> Response {
    let mut response = (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn token(State(idp): State<Arc<Inner>>, body: Bytes) -> Response {
    if body.len() > MAX_FORM_BYTES {
        return token_error("invalid_request", "the form is too large");
    }
    let parameters = match parameters(&body) {
        Ok(parameters) => parameters,
        Err(e) => return token_error("invalid_request", &e),
    };
    let get = |name: &str| parameters.get(name).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return token_error(
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    let Some(pending) = idp.take_code(get("code")) else {
        return token_error(
            "invalid_grant",
            "unknown, expired or already used authorization code",
        );
    };
    if pending.client_id != get("client_id") {
        return token_error("invalid_grant", "the code was issued to another client");
    }
    if pending.redirect_uri != get("redirect_uri") {
        return token_error(
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    let verifier = get("code_verifier");
    let well_formed = CODE_VERIFIER_CHARS.contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)) != pending.challenge {
        return token_error(
            "invalid_grant",
            "the code_verifier does not match the code_challenge",
        );
    }
    let Some(user) = idp.user(&pending.subject) else {
        return token_error("invalid_grant", "the demo user is no longer configured");
    };
    let access_token =
        idp.access_token(&pending.client_id, &pending.audience, user, &pending.scope);
    let id_token = idp.id_token(&pending.client_id, user, pending.nonce.as_deref());
    let mut response = Json(json!({
        "access_token": access_token,
        "id_token": id_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_S,
        "scope": pending.scope,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: KeySource) -> IdpConfig {
        IdpConfig {
            resources: Vec::new(),
            issuer: "http://127.0.0.1:9".into(),
            clients: vec![ClientRegistration {
                client_id: "portal".into(),
                redirect_uris: vec!["http://127.0.0.1:9/callback".into()],
            }],
            users: vec![
                DemoUser::citizen("c1", "Citizen <One>", "999911120"),
                DemoUser::professional("p1", "Dr. Two", "123456789"),
            ],
            key,
        }
    }

    #[test]
    fn a_persisted_key_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevIdp::new(config(KeySource::Directory(dir.path().into()))).unwrap();
        let second = DevIdp::new(config(KeySource::Directory(dir.path().into()))).unwrap();
        assert_eq!(first.public_key(), second.public_key());
        let ephemeral = DevIdp::new(config(KeySource::Ephemeral)).unwrap();
        assert_ne!(first.public_key(), ephemeral.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut bad_bsn = config(KeySource::Ephemeral);
        bad_bsn
            .users
            .push(DemoUser::citizen("c2", "x", "123456789"));
        let mut both = config(KeySource::Ephemeral);
        both.users[0].uzi = Some("123456789".into());
        let mut twice = config(KeySource::Ephemeral);
        twice
            .users
            .push(DemoUser::professional("p1", "again", "987654321"));
        let mut slash = config(KeySource::Ephemeral);
        slash.issuer.push('/');
        for config in [bad_bsn, both, twice, slash] {
            assert!(matches!(
                DevIdp::new(config),
                Err(IdpError::Configuration(_))
            ));
        }
    }

    #[test]
    fn citizens_never_get_user_or_system_scopes() {
        let citizen = DemoUser::citizen("c1", "x", "999911120");
        let professional = DemoUser::professional("p1", "y", "123456789");
        let asked = "openid patient/*.read user/*.write system/*.*";
        assert_eq!(granted_scope(&citizen, asked), "openid patient/*.read");
        assert_eq!(granted_scope(&professional, asked), asked);
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else_does() {
        let registered = "http://127.0.0.1/callback";
        for asked in [
            "http://127.0.0.1/callback",
            "http://127.0.0.1:49152/callback",
            "http://127.0.0.1:1/callback",
        ] {
            assert!(redirect_matches(registered, asked), "{asked}");
        }
        assert!(redirect_matches(
            "http://[::1]/cb?x=1",
            "http://[::1]:8080/cb?x=1"
        ));
        for asked in [
            "http://127.0.0.1:8080/callback/",
            "http://127.0.0.1:8080/other",
            "http://127.0.0.1:8080/callback?extra=1",
            "http://127.0.0.1:8080/callback#fragment",
            "http://localhost:8080/callback",
            "http://127.0.0.2:8080/callback",
            "https://127.0.0.1:8080/callback",
            "http://user@127.0.0.1:8080/callback",
            "http://[::1]:8080/callback",
            "not a url",
        ] {
            assert!(!redirect_matches(registered, asked), "{asked}");
        }
        // Only loopback IP addresses get the allowance: other hosts match exactly.
        for (registered, asked) in [
            ("https://app.example/cb", "https://app.example:8443/cb"),
            ("http://localhost/cb", "http://localhost:8080/cb"),
            ("http://10.0.0.1/cb", "http://10.0.0.1:8080/cb"),
        ] {
            assert!(!redirect_matches(registered, asked), "{asked}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        let html = page("<script>", "");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<title><script>"));
        assert!(html.contains(DEVELOPMENT_NOTICE.split('.').next().unwrap()));
    }
}
