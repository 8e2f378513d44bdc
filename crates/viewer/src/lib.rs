//! The professional's viewer (**Zorgverlenersinzage**) and emergency view: server-rendered
//! pages where a professional of a care provider logs in, finds a patient by BSN or
//! zorgverificatienummer, registers a
//! treatment relation, and sees the patient's data from every source the network's policy
//! allows, through their own organisation's node.
//!
//! What it is: an axum [`Router`] ([`Viewer::router`]) with relative routes, so a caller
//! nests it under any prefix (`nest("/zorgverlener", viewer.router())`; the prefix is the path
//! of [`ViewerConfig::base_url`]). Dutch by default, English with `?lang=en` (kept in a
//! cookie). Per organisation (`{ura}`):
//! - `/`: pick the organisation; `/{ura}/login` starts the authorization code flow with PKCE
//!   `S256`, `state` and `nonce` with the organisation's staff client
//!   ([`Organisation::client_id`]); `/{ura}/callback` verifies the **ID token** through
//!   `zorgnet_trust::oidc` (the UZI number comes from it) and asks the hub's professional
//!   register (`GET /professionals/{uzi}` with the organisation's key) for the professional's
//!   roles there: without one, the login is refused. The session is bound to the
//!   organisation: its cookie is scoped to `{prefix}/{ura}`, every page checks the session's
//!   organisation, and its access token is only ever sent to that organisation's node.
//! - `/{ura}/` (search): a BSN (11-check) or a zorgverificatienummer (sixteen digits, MOD
//!   97-10) and, with several roles, the role to act in
//!   (`POST /{ura}/zoeken`); the patient is kept in the session, never in a URL.
//! - `/{ura}/patient`: whether the organisation has a treatment relation with the patient at
//!   the hub (the number blinded here through `zorgnet_hub_client`; the hub never sees it
//!   in clear), a button that registers one (`POST /{ura}/relatie`), and the patient's data
//!   from the node's `$fetch` (purpose treatment, the professional's UZI number and role):
//!   a timeline, the Basisgegevensset Zorg (problems, medication, allergies, alerts, the last
//!   lab results, contacts), a medication overview grouped by medication code across
//!   sources, and for every category the professional may not see a notice that says so;
//!   sources that refused or did not answer are named.
//! - `/{ura}/nood`: break the glass with a required reason, then one screen of allergies,
//!   current medication, problems, recent lab, alerts and contacts, through `$fetch` with
//!   `purpose=emergency` and the reason, flagged as an emergency access.
//!
//! Every POST carries the session's CSRF token; every answer has a Content-Security-Policy
//! without scripts and `Cache-Control: no-store`; patients' numbers and tokens never reach
//! the log.
//!
//! What it is not: an access policy (the sources decide, the viewer shows what they
//! answered and why something is missing), a store of health data (nothing outlives the
//! request but the session: token, roles, the patient's number), or a clinical decision
//! system (medication lines are grouped by code, not by substance or strength).
#![deny(missing_docs)]

mod hub;
mod i18n;
mod pages;
mod patient_number;
mod record;
mod session;

use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_web::client::{http_client, is_http_url};
pub use zorgnet_web::oidc::PROVIDER_TIMEOUT;
use zorgnet_web::oidc::{Client, ClientConfig, SharedDiscovery};
pub use zorgnet_web::session::{
    LOGIN_LIFETIME, PENDING_LOGINS_MAX, SESSION_LIFETIME_MAX, SESSIONS_MAX,
};

/// How long the node's `$fetch` may take (the node waits up to its own per-source timeout,
/// the node's `$fetch` source timeout, plus the token requests).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read from the node or the provider, in bytes.
pub const RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Largest form body read (the search, relation, emergency and logout forms), in bytes.
pub const FORM_BYTES_MAX: usize = 8 * 1024;
/// Longest break-the-glass reason accepted, in characters (the access token's limit).
pub const REASON_CHARS_MAX: usize = zorgnet_trust::token::MAX_REASON_CHARS;
/// Lab results in the summary: the most recent ones.
pub const RECENT_LAB_RESULTS: usize = 10;
/// The scopes asked of the provider: reading at the organisation's own node, which also
/// permits `$fetch` (the node requires a wildcard read scope for it).
pub const SCOPE: &str = "openid user/*.read";

/// Why the viewer cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewerError {
    /// The configuration is unusable.
    #[error("invalid viewer configuration: {0}")]
    Configuration(String),
    /// An HTTP client or a token verifier cannot be built.
    #[error("the viewer's HTTP client: {0}")]
    Client(String),
}

/// A care provider whose professionals use the viewer.
#[derive(Clone)]
pub struct Organisation {
    /// The organisation's URA number (eight digits).
    pub ura: String,
    /// Its name, shown on the pages.
    pub name: String,
    /// The organisation's staff client at the provider: the audience of its professionals'
    /// tokens, the only one its node accepts from staff.
    pub client_id: String,
    /// The organisation's own node's FHIR base URL, without a trailing slash.
    pub fhir_base: String,
    /// The hub's base URL, without a trailing slash.
    pub hub_url: String,
    /// The organisation's API key at the hub (professional register, relation register).
    pub hub_key: String,
}

impl std::fmt::Debug for Organisation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Organisation")
            .field("ura", &self.ura)
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("fhir_base", &self.fhir_base)
            .field("hub_url", &self.hub_url)
            .finish_non_exhaustive()
    }
}

/// How the viewer is set up.
#[derive(Clone)]
pub struct ViewerConfig {
    /// Where the viewer is reached, without a trailing slash, with the path prefix it is
    /// nested under (`https://host:8080/zorgverlener`); the redirect URI of organisation
    /// `ura` is `{base_url}/{ura}/callback`.
    pub base_url: String,
    /// The OpenID provider's issuer URL.
    pub issuer: String,
    /// The organisations whose professionals log in here.
    pub organisations: Vec<Organisation>,
    /// How to reach the provider, the nodes and the hub over HTTPS (trusting the network
    /// CA); `None` uses plain HTTP for `http` URLs (tests only) or the platform's roots.
    pub tls: Option<rustls::ClientConfig>,
}

impl std::fmt::Debug for ViewerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerConfig")
            .field("base_url", &self.base_url)
            .field("issuer", &self.issuer)
            .field("organisations", &self.organisations)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The viewer: its configuration, HTTP client, providers, hub clients and sessions.
#[derive(Clone)]
pub struct Viewer {
    inner: Arc<Inner>,
}

/// One organisation as the viewer works with it.
pub(crate) struct Org {
    pub(crate) config: Organisation,
    pub(crate) provider: Client,
    pub(crate) hub: zorgnet_hub_client::HubClient,
}

pub(crate) struct Inner {
    /// The path prefix of every link (`/zorgverlener`, or empty).
    pub(crate) prefix: String,
    pub(crate) secure: bool,
    pub(crate) organisations: Vec<Org>,
    pub(crate) http: reqwest::Client,
    pub(crate) sessions: session::Sessions,
}

impl Inner {
    pub(crate) fn organisation(&self, ura: &str) -> Option<&Org> {
        self.organisations.iter().find(|o| o.config.ura == ura)
    }
}

impl Viewer {
    /// Checks `config` and builds the clients; nothing is fetched yet (the provider's
    /// discovery document is read at the first login).
    pub fn new(config: ViewerConfig) -> Result<Viewer, ViewerError> {
        let prefix = check_config(&config).map_err(ViewerError::Configuration)?;
        let http =
            http_client(config.tls.clone()).map_err(|e| ViewerError::Client(e.to_string()))?;
        let discovery = SharedDiscovery::default();
        let mut organisations = Vec::with_capacity(config.organisations.len());
        for organisation in &config.organisations {
            let provider = Client::new(
                ClientConfig {
                    issuer: config.issuer.clone(),
                    client_id: organisation.client_id.clone(),
                    redirect_uri: format!("{}/{}/callback", config.base_url, organisation.ura),
                    scope: SCOPE,
                    tls: config.tls.clone(),
                    answer_bytes_max: RESPONSE_BYTES_MAX,
                },
                discovery.clone(),
            )
            .map_err(|e| ViewerError::Client(e.to_string()))?;
            let hub = zorgnet_hub_client::HubClient::with_tls(
                &organisation.hub_url,
                organisation.hub_key.trim(),
                config.tls.clone(),
            )
            .map_err(|e| ViewerError::Client(e.to_string()))?;
            organisations.push(Org {
                config: organisation.clone(),
                provider,
                hub,
            });
        }
        Ok(Viewer {
            inner: Arc::new(Inner {
                prefix,
                secure: config.base_url.starts_with("https://"),
                organisations,
                http,
                sessions: session::Sessions::default(),
            }),
        })
    }

    /// The viewer's pages (see the crate documentation), with routes relative to the prefix.
    pub fn router(&self) -> Router {
        pages::router(self.inner.clone())
    }
}

/// Checks `config`; answers the path prefix of its base URL.
fn check_config(config: &ViewerConfig) -> Result<String, String> {
    for (what, url) in [("base_url", &config.base_url), ("issuer", &config.issuer)] {
        if !is_http_url(url) {
            return Err(format!(
                "{what} must be an http(s) URL without a trailing slash: {url:?}"
            ));
        }
    }
    let after_scheme = config
        .base_url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let prefix = after_scheme
        .find('/')
        .map(|at| after_scheme[at..].to_string())
        .unwrap_or_default();
    if prefix.contains(['?', '#', '"', '<', '>', ' ']) {
        return Err(format!("base_url's path is not usable: {prefix:?}"));
    }
    if config.organisations.is_empty() {
        return Err("no organisations".into());
    }
    let mut uras = std::collections::BTreeSet::new();
    for organisation in &config.organisations {
        let ura = &organisation.ura;
        if ura.len() != 8 || !ura.bytes().all(|b| b.is_ascii_digit()) || !uras.insert(ura) {
            return Err(format!("URAs are eight digits and unique: {ura:?}"));
        }
        if organisation.name.trim().is_empty() || organisation.client_id.trim().is_empty() {
            return Err(format!("organisation {ura} needs a name and a client id"));
        }
        if organisation.hub_key.trim().is_empty() {
            return Err(format!("organisation {ura} needs its hub key"));
        }
        for (what, url) in [
            ("fhir_base", &organisation.fhir_base),
            ("hub_url", &organisation.hub_url),
        ] {
            if !is_http_url(url) {
                return Err(format!(
                    "{what} of {ura} must be an http(s) URL without a trailing slash"
                ));
            }
        }
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ViewerConfig {
        ViewerConfig {
            base_url: "http://127.0.0.1:9/zorgverlener".into(),
            issuer: "http://127.0.0.1:8".into(),
            organisations: vec![Organisation {
                ura: "00000022".into(),
                name: "Ziekenhuis".into(),
                client_id: "ziekenhuis-staff".into(),
                fhir_base: "http://127.0.0.1:7/fhir".into(),
                hub_url: "http://127.0.0.1:6".into(),
                hub_key: "key".into(),
            }],
            tls: None,
        }
    }

    #[test]
    fn the_prefix_comes_from_the_base_url() {
        assert_eq!(check_config(&config()).unwrap(), "/zorgverlener");
        let mut bare = config();
        bare.base_url = "https://viewer.example".into();
        assert_eq!(check_config(&bare).unwrap(), "");
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(Viewer::new(config()).is_ok());
        let mut slash = config();
        slash.base_url.push('/');
        let mut twice = config();
        twice.organisations.push(twice.organisations[0].clone());
        let mut short_ura = config();
        short_ura.organisations[0].ura = "123".into();
        let mut no_key = config();
        no_key.organisations[0].hub_key = " ".into();
        let mut none = config();
        none.organisations.clear();
        for config in [slash, twice, short_ura, no_key, none] {
            assert!(matches!(
                Viewer::new(config),
                Err(ViewerError::Configuration(_))
            ));
        }
    }
}
