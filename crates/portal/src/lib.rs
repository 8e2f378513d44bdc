//! The citizen portal **Mijn Gezondheidsoverzicht** ("my health overview"): server-rendered
//! pages where a citizen logs in with OpenID Connect and sees what the care providers' nodes
//! hold about them, who looked at it, and the proof of each of those access-log records, and
//! manages their choices about sharing their data at the network's consent register; and the
//! same data for the citizen's apps, as read-only FHIR R4 with SMART scopes and a small JSON
//! API.
//!
//! What it is: an axum [`Router`] ([`Portal::router`]) that a caller serves, with these pages
//! (Dutch by default, English with `?lang=en` or the language cookie; a switch on every page):
//! - `/`: the start page; `/login` starts the authorization code flow with PKCE `S256`,
//!   `state` and `nonce` at the provider named by [`PortalConfig::issuer`] (its discovery
//!   document); `/callback` exchanges the code, verifies the **ID token** (signature against
//!   the provider's key set, `iss`, `aud` = [`PortalConfig::client_id`], `exp`, and the
//!   `nonce`) through `zorgnet_trust::oidc`, and keeps the access token server-side in an
//!   in-memory session; the browser holds only a random 256-bit session id (cookie `HttpOnly`,
//!   `SameSite=Lax`, `Path=/`, and `Secure` when [`PortalConfig::base_url`] is `https`).
//!   `POST /logout` (with the session's CSRF token) ends the session.
//! - `/overzicht`: every [`Source`] asked in parallel with the citizen's access token (each
//!   within [`PortalConfig::source_timeout`]): the citizen's Patients there by their
//!   identifier (a BSN, or a zorgverificatienummer for a citizen without a usable BSN), then
//!   `Patient/{id}/$everything`, page by page (at most [`PAGES_PER_PATIENT_MAX`]); shown as a
//!   timeline and by topic (problems, medication, allergies, lab results with a chart per
//!   test, vaccinations, encounters, documents), each item with its source and date. A source
//!   that does not answer in time or answers with an error is named in a notice.
//! - `/download.json`: the whole record as one FHIR `collection` Bundle (an attachment), every
//!   entry with its `fullUrl` at its source; `/afdrukken`: the record for printing.
//! - `/wie-keek`: the access logs of all sources (`AuditEvent?patient=…`), newest first, with
//!   emergency access marked in words and style; `/wie-keek/bewijs?source=…&id=…` fetches the
//!   node's `$proof` of one record and checks it with `zorgnet_audit` (the inclusion proof
//!   against the signed checkpoint's root, and the checkpoint's signature when the node's
//!   checkpoint key is known: [`Portal::add_checkpoint_keys`]).
//! - `/keuzes` ("mijn keuzes"), when the portal has a consent register
//!   ([`Portal::with_consent_register`]): the citizen's consent directives at the hub, each in
//!   a plain sentence ("U deelt geen gegevens over medicatie") with since when and who recorded
//!   it (the citizen, a care provider named when it is one of the sources, the operator), the
//!   revoked ones apart, and forms (fieldsets with legends, labelled fields, the session's CSRF
//!   token, no scripts) to opt out of everything, of one category (every category the
//!   register knows), of exchange with one of the sources (consent `deny`), of emergency
//!   access, to give one of the sources explicit consent (`permit`; both optionally for one
//!   category), and a button per directive to revoke it. `POST /keuzes` and
//!   `POST /keuzes/intrekken` answer with a redirect to `/keuzes`, which confirms the change
//!   once and says when it takes effect: at once at the referral index, and at the nodes
//!   within [`CHOICE_EFFECT_PROMISED`] (they reuse a consent decision for a while). A register
//!   that fails or refuses becomes a notice with a 4xx/5xx status saying nothing changed;
//!   without a register the page says choices cannot be managed here.
//! - `/fhir` (`fhir_api`): the same merged record for apps (a citizen's PGO app, a record
//!   system) as a read-only FHIR R4 endpoint with SMART on FHIR scopes: `GET /fhir/metadata`
//!   (CapabilityStatement, `oauth-uris`), `GET /fhir/.well-known/smart-configuration`,
//!   `GET /fhir/{type}` (`patient`, `_id`, `_count`; a `searchset` Bundle with every entry's
//!   `fullUrl` at its source, `meta.source`, and an outcome entry naming the sources that did
//!   not answer) and `GET /fhir/{type}/{id}` (only when one source holds that id; 300
//!   otherwise). Writes are 405. The caller's `Authorization: Bearer` token is an access
//!   token of the provider for [`PortalConfig::client_id`], verified here (a citizen with a
//!   BSN or a zorgverificatienummer, else 401/403) and its `patient/`/`user/` scopes checked
//!   per type (v1 and v2) before it is passed to the nodes, which verify it again; with
//!   scopes for some types only, each node is asked by a search of that type instead of
//!   `$everything`.
//! - `/api/v1` (`json_api`): the choices (`GET`/`POST /api/v1/choices`,
//!   `POST /api/v1/choices/{id}/revoke`, scopes on `Consent`) and the access log
//!   (`GET /api/v1/access-log`, a scope on `AuditEvent`) as JSON with the same bearer token,
//!   errors as RFC 9457 problems, described in OpenAPI 3.1 (`api/openapi.json`, compiled in,
//!   served at `/api/v1/openapi.json`).
//!
//! Who the citizen is comes from the verified ID token's `bsn` or `zvn` claim (for apps: the
//! verified access token's), one identifier (`citizen::CitizenId`) used alike everywhere: a
//! citizen without a usable BSN (Caribbean Netherlands) logs in with a zorgverificatienummer,
//! the nodes resolve it to their Patients known by a sédula number and birth date, and the hub
//! takes it as it takes a BSN. A token with neither is refused. The nodes verify the access
//! token themselves and serve only the citizen's own data, so the portal never decides
//! access. For the choices the portal is trusted with one thing more, by the hub's operator
//! (who admits its organisation as a citizen portal): that it acts only for the citizen who
//! is logged in. Every call to the consent register names the session's own citizen, by an
//! exchange token made from the session's BSN or zorgverificatienummer (blinded locally
//! through `zorgnet_hub_client`; the hub never sees it in clear); no form field names a
//! person, and the hub itself refuses a directive id that is not that person's. Every page
//! with data needs a session and is sent `Cache-Control: no-store`; every response carries a
//! `Content-Security-Policy` without scripts. Tokens, BSNs and zorgverificatienummers never
//! reach the log.
//!
//! What it is not: a FHIR server of its own (`/fhir` stores nothing and asks the sources at
//! every request), a place that stores health data or choices (nothing
//! outlives the request but the session's token and a confirmation shown once; the directives
//! live at the hub), the consent policy (the hub's `consent::decide` decides what a directive
//! means; the page only describes it), or a way to change health data.
#![deny(missing_docs)]

mod access_log;
mod choices;
mod citizen;
mod fhir_api;
mod i18n;
mod json_api;
mod pages;
mod proof;
mod record;
mod session;
mod sources;

use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zorgnet_audit::VerifyingKey;
use zorgnet_hub_client::HubClient;
use zorgnet_web::client::{http_client, is_http_url};
pub use zorgnet_web::oidc::PROVIDER_TIMEOUT;
use zorgnet_web::oidc::{Client, ClientConfig, SharedDiscovery};
pub use zorgnet_web::session::{
    LOGIN_LIFETIME, PENDING_LOGINS_MAX, SESSION_LIFETIME_MAX, SESSIONS_MAX,
};

/// How long a source may take to answer all of one page's questions, when the configuration
/// does not say.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pages of `$everything` read per Patient at a source; beyond, the overview says the record
/// was cut short.
pub const PAGES_PER_PATIENT_MAX: usize = 20;
/// Pages of the access log read per source.
pub const AUDIT_PAGES_PER_SOURCE_MAX: usize = 10;
/// A citizen's Patients asked about at one source (a node's access-log search names at most
/// this many).
pub const PATIENTS_PER_SOURCE_MAX: usize = 10;
/// Largest answer read from a source or the provider, in bytes.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest form body the portal reads (logout, the choices), in bytes.
pub const FORM_BYTES_MAX: usize = 4 * 1024;
/// How soon, at the latest, the choices page promises a change of consent applies at every
/// care provider's node ("binnen een minuut"): a node reuses a consent decision for its
/// `decision_ttl` (`zorgnet_node::access::DEFAULT_DECISION_TTL`, 30 s; the tests check it
/// stays within this).
pub const CHOICE_EFFECT_PROMISED: Duration = Duration::from_secs(60);
/// The scopes asked of the provider: the citizen's own data, read only.
pub const SCOPE: &str = "openid patient/*.read";

/// Why the portal cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortalError {
    /// The configuration is unusable.
    #[error("invalid portal configuration: {0}")]
    Configuration(String),
    /// The HTTP client or the token verifier cannot be built.
    #[error("the portal's HTTP client: {0}")]
    Client(String),
}

/// A care provider's node the portal asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The organisation's name, shown with every item from it.
    pub name: String,
    /// The organisation's URA (the origin of its access log's checkpoints).
    pub ura: String,
    /// The node's FHIR base URL, without a trailing slash (e.g. `https://host:8443/fhir`).
    pub fhir_base: String,
}

/// How the portal is set up.
#[derive(Clone)]
pub struct PortalConfig {
    /// Where the portal is reached, without a trailing slash; the redirect URI is
    /// `{base_url}/callback`.
    pub base_url: String,
    /// The OpenID provider's issuer URL.
    pub issuer: String,
    /// The portal's client id at the provider: the audience of the citizens' tokens.
    pub client_id: String,
    /// The nodes to ask.
    pub sources: Vec<Source>,
    /// How to reach the provider and the nodes over HTTPS (trusting the network CA); `None`
    /// uses the platform's roots, or plain HTTP for `http` URLs (tests only).
    pub tls: Option<rustls::ClientConfig>,
    /// How long one source may take ([`DEFAULT_SOURCE_TIMEOUT`] is the usual value).
    pub source_timeout: Duration,
}

impl std::fmt::Debug for PortalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalConfig")
            .field("base_url", &self.base_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("sources", &self.sources)
            .field("tls", &self.tls.is_some())
            .field("source_timeout", &self.source_timeout)
            .finish()
    }
}

/// The portal: its configuration, HTTP client, token verifier and sessions.
#[derive(Clone)]
pub struct Portal {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: PortalConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) provider: Client,
    pub(crate) sessions: session::Sessions,
    pub(crate) checkpoint_keys: RwLock<HashMap<String, VerifyingKey>>,
    pub(crate) consent: RwLock<Option<HubClient>>,
}

impl Inner {
    /// The client of the hub's consent register, when the portal was given one.
    pub(crate) fn consent_register(&self) -> Option<HubClient> {
        self.consent
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Portal {
    /// Checks `config` and builds the HTTP client; nothing is fetched yet (the provider's
    /// discovery document is read at the first login).
    pub fn new(config: PortalConfig) -> Result<Portal, PortalError> {
        check_config(&config).map_err(PortalError::Configuration)?;
        let http =
            http_client(config.tls.clone()).map_err(|e| PortalError::Client(e.to_string()))?;
        let provider = Client::new(
            ClientConfig {
                issuer: config.issuer.clone(),
                client_id: config.client_id.clone(),
                redirect_uri: format!("{}/callback", config.base_url),
                scope: SCOPE,
                tls: config.tls.clone(),
                answer_bytes_max: RESPONSE_BYTES_MAX,
            },
            SharedDiscovery::default(),
        )
        .map_err(|e| PortalError::Client(e.to_string()))?;
        Ok(Portal {
            inner: Arc::new(Inner {
                config,
                http,
                provider,
                sessions: session::Sessions::default(),
                checkpoint_keys: RwLock::default(),
                consent: RwLock::default(),
            }),
        })
    }

    /// Checks from now on the signatures of the checkpoints of the organisations named (URA →
    /// the Ed25519 key their node signs its access log's checkpoints with, as the hub's
    /// witness keeps it). Without a key a proof is checked against the checkpoint's root
    /// only, and the page says the signature was not checked.
    pub fn add_checkpoint_keys(&self, keys: impl IntoIterator<Item = (String, VerifyingKey)>) {
        self.inner
            .checkpoint_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keys);
    }

    /// Lets citizens manage their consent directives at the hub's consent register on
    /// `/keuzes`, through `hub`: a client with the portal's own API key at the hub (over TLS
    /// trusting the network CA), an organisation the hub's operator admitted as a citizen
    /// portal. The portal calls the register only for the session's own citizen, named by an
    /// exchange token made from the BSN or zorgverificatienummer of their verified ID token.
    /// Takes effect for every router of this portal and its clones; without it, `/keuzes`
    /// says choices cannot be managed here.
    pub fn with_consent_register(self, hub: HubClient) -> Portal {
        *self
            .inner
            .consent
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(hub);
        self
    }

    /// The portal's pages, its FHIR endpoint and its JSON API (see the crate documentation).
    pub fn router(&self) -> Router {
        pages::router(self.inner.clone())
    }
}

fn check_config(config: &PortalConfig) -> Result<(), String> {
    for (what, url) in [("base_url", &config.base_url), ("issuer", &config.issuer)] {
        if !is_http_url(url) {
            return Err(format!(
                "{what} must be an http(s) URL without a trailing slash: {url:?}"
            ));
        }
    }
    if config.client_id.trim().is_empty() {
        return Err("client_id is empty".into());
    }
    if config.source_timeout.is_zero() {
        return Err("source_timeout is zero".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for source in &config.sources {
        if source.name.trim().is_empty() || !names.insert(source.name.as_str()) {
            return Err(format!(
                "source names are non-empty and unique: {:?}",
                source.name
            ));
        }
        if !is_http_url(&source.fhir_base) {
            return Err(format!(
                "the FHIR base of {:?} must be an http(s) URL without a trailing slash",
                source.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PortalConfig {
        PortalConfig {
            base_url: "http://127.0.0.1:9".into(),
            issuer: "http://127.0.0.1:8".into(),
            client_id: "portal".into(),
            sources: vec![Source {
                name: "Huisarts".into(),
                ura: "00000011".into(),
                fhir_base: "http://127.0.0.1:7/fhir".into(),
            }],
            tls: None,
            source_timeout: DEFAULT_SOURCE_TIMEOUT,
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(Portal::new(config()).is_ok());
        let mut slash = config();
        slash.base_url.push('/');
        let mut twice = config();
        twice.sources.push(twice.sources[0].clone());
        let mut no_client = config();
        no_client.client_id = " ".into();
        let mut ftp = config();
        ftp.sources[0].fhir_base = "ftp://x/fhir".into();
        for config in [slash, twice, no_client, ftp] {
            assert!(matches!(
                Portal::new(config),
                Err(PortalError::Configuration(_))
            ));
        }
    }
}
