//! The zorgnet hub: the generic functions of the network, run by a network operator.
//!
//! What it is: one process hosting independent modules, each with its own tables (in one
//! `zorgnet-db` database, migrations per component) and its own HTTP API under its own path:
//! `/registry` (organisations and their keys), `/prs` (pseudonym service), `/nvi` (referral
//! index), `/consent` (consent register), `/relations` (treatment relations), `/addressing`
//! (IHE mCSD address book fed by the nodes), `/professionals` (which professional holds
//! which role where), `/trust` (signed access tokens organisations show to each other's
//! nodes) and `/audit/checkpoints` (the witness of the nodes' access logs: every signed
//! checkpoint, each consistent with the one before). The API is described in `/openapi.json`.
//! The hub keeps its own access log too ([`audit`]), in its database.
//! What it is not: a store of patient data. The hub never sees a BSN in clear and keeps no
//! clinical resources; data stays at the nodes.
//!
//! A request's path: `serve` → tower layers (trace, body limit) → [`audit::record`] (the
//! access log's layer, for the modules about people: the answer waits for its record) →
//! [`auth::authenticate`] resolves the [`auth::Caller`] → the module's handler checks what the
//! caller may do → the module's storage functions run on the blocking pool in one transaction.
#![deny(missing_docs)]

pub mod addressing;
pub mod audit;
pub mod audit_checkpoints;
pub mod auth;
pub mod consent;
pub mod error;
pub mod nvi;
pub mod professionals;
pub mod prs;
pub mod registry;
pub mod relations;
pub mod trust;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use error::ApiError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zorgnet_db::{Database, DbError, Migration};

/// Largest request body a hub API accepts (a registration batch of
/// [`MAX_BATCH_ITEMS`] items fits comfortably).
pub const REQUEST_BODY_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// Most items in one batch request (registrations, pseudonym evaluations).
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// File in the data directory holding the operator's key.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// The SQLite database in the data directory (unless the hub keeps its data in PostgreSQL).
pub const DATABASE_FILE: &str = "hub.sqlite";

/// Errors opening a hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The database could not be opened or migrated.
    #[error("hub database: {0}")]
    Database(#[from] DbError),
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Anything else that stops the hub from starting.
    #[error("{0}")]
    Setup(String),
}

/// Where the hub keeps its state.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Directory for keys (and the SQLite database unless `postgres` is set).
    pub data_dir: PathBuf,
    /// PostgreSQL URL; `None` means SQLite in `data_dir/`[`DATABASE_FILE`].
    pub postgres: Option<String>,
    /// Development only: accept plain `http` supplier and Endpoint addresses in the address
    /// book (otherwise only `https`).
    pub allow_insecure_endpoints: bool,
    /// The hub's TLS client configuration towards the suppliers it polls (the network CA as
    /// the only root, the hub's certificate as client certificate); `None` polls with the
    /// platform's defaults, for development over plain HTTP.
    pub client_tls: Option<rustls::ClientConfig>,
}

/// Shared state of the hub's handlers.
pub struct HubState {
    /// The hub's database.
    pub db: Database,
    /// SHA-256 of the operator's key.
    pub admin_key_hash: String,
    /// Verified organisation keys.
    pub keys: auth::KeyCache,
    /// The pseudonym service and the hub's own recipient keys.
    pub prs: prs::PseudonymService,
    /// The addressing directory's address book.
    pub addressing: addressing::AddressBook,
    /// The signer of organisations' access tokens.
    pub trust: trust::TokenIssuer,
    /// The verifier of client certificates whose revocation list the hub publishes.
    pub revocations: std::sync::OnceLock<zorgnet_trust::tls::ClientVerifier>,
    /// The hub's own access log.
    pub audit: audit::HubAudit,
    /// The URAs of the organisations the operator admitted as citizen portals.
    pub citizen_portals: std::sync::RwLock<std::collections::BTreeSet<String>>,
}

impl HubState {
    /// Whether the organisation `ura` acts for citizens (see [`Hub::admit_citizen_portal`]).
    pub fn is_citizen_portal(&self, ura: &str) -> bool {
        self.citizen_portals
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(ura)
    }

    /// See [`Hub::admit_citizen_portal`].
    pub fn admit_citizen_portal(&self, ura: &str) {
        self.citizen_portals
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(ura.to_string());
    }
}

/// An opened hub.
pub struct Hub {
    state: Arc<HubState>,
    admin_key_path: PathBuf,
}

/// Every module's migrations.
fn migrations() -> Vec<Migration> {
    [
        registry::MIGRATIONS,
        prs::MIGRATIONS,
        nvi::MIGRATIONS,
        consent::MIGRATIONS,
        relations::MIGRATIONS,
        addressing::MIGRATIONS,
        professionals::MIGRATIONS,
        audit_checkpoints::MIGRATIONS,
    ]
    .concat()
}

impl Hub {
    /// Opens (creating on first start) the hub's database and keys. Blocking.
    pub fn open(config: &HubConfig) -> Result<Hub, HubError> {
        create_private_dir(&config.data_dir)?;
        let migrations = migrations();
        let db = match &config.postgres {
            Some(url) => Database::open_postgres(url, &migrations)?,
            None => Database::open_sqlite(&config.data_dir.join(DATABASE_FILE), &migrations)?,
        };
        let admin_key_path = config.data_dir.join(ADMIN_KEY_FILE);
        let admin_key = read_or_create_secret(&admin_key_path, auth::new_key)?;
        let prs = prs::PseudonymService::open(&config.data_dir, &db)?;
        let addressing = addressing::AddressBook::open(
            db.clone(),
            config.allow_insecure_endpoints,
            config.client_tls.clone(),
        )?;
        let trust = trust::TokenIssuer::open(&config.data_dir)?;
        let audit = audit::HubAudit::open(&db, &config.data_dir)?;
        let state = Arc::new(HubState {
            db,
            admin_key_hash: auth::key_hash(admin_key.trim()),
            keys: auth::KeyCache::default(),
            prs,
            addressing,
            trust,
            revocations: std::sync::OnceLock::new(),
            audit,
            citizen_portals: std::sync::RwLock::default(),
        });
        Ok(Hub {
            state,
            admin_key_path,
        })
    }

    /// Where the operator's key is (the key itself is never logged).
    pub fn admin_key_path(&self) -> &Path {
        &self.admin_key_path
    }

    /// The shared state, for embedding and tests.
    pub fn state(&self) -> Arc<HubState> {
        self.state.clone()
    }

    /// Tells the hub the address it listens on, so that the address book refuses suppliers
    /// and Endpoints pointing there.
    pub fn serving_at(&self, address: std::net::SocketAddr) {
        self.state.addressing.serving_at(address);
    }

    /// Publishes the revocation list in force in `verifier` at `GET /trust/crl`, for the
    /// nodes to refresh theirs from; set once, when the hub serves over mutual TLS.
    pub fn publish_revocations(&self, verifier: zorgnet_trust::tls::ClientVerifier) {
        let _ = self.state.revocations.set(verifier);
    }

    /// Admits the registered organisation `ura` as a citizen portal: a service that
    /// authenticates citizens itself and then manages every consent directive of the citizen
    /// it names (see [`consent`]). The operator's choice, made at start.
    pub fn admit_citizen_portal(&self, ura: &str) {
        self.state.admit_citizen_portal(ura);
    }

    /// Starts the addressing directory's update consumer (needs a tokio runtime): it polls
    /// every mCSD update supplier now and then every `interval`.
    pub fn spawn_addressing_consumer(
        &self,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        addressing::spawn_consumer(self.state.clone(), interval)
    }

    /// Starts signing a checkpoint of the hub's own access log every
    /// [`audit::CHECKPOINT_INTERVAL`] (needs a tokio runtime).
    pub fn spawn_audit_checkpoints(&self) -> tokio::task::JoinHandle<()> {
        let (log, signer) = self.state.audit.checkpointing();
        tokio::spawn(audit::HubAudit::keep_checkpoints(log, signer))
    }

    /// The hub's HTTP API, reached by others at `public_url` (`https://hub.example`, no
    /// trailing slash): the base of the address book's links, never taken from a request.
    pub fn router(&self, public_url: &str) -> Router {
        Router::new()
            .nest("/registry", registry::routes())
            .nest("/prs", prs::routes())
            .nest("/nvi", nvi::routes())
            .nest("/consent", consent::routes())
            .nest("/relations", relations::routes())
            .nest("/addressing", addressing::routes(&self.state, public_url))
            .nest("/professionals", professionals::routes())
            .nest("/trust", trust::routes())
            .nest("/audit/checkpoints", audit_checkpoints::routes())
            .route("/health", get(|| async { "UP" }))
            .route("/openapi.json", get(openapi))
            .layer(middleware::from_fn(refuse_nul_text))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                addressing::refuse_own_polls,
            ))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                auth::authenticate,
            ))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                audit::record,
            ))
            .layer(DefaultBodyLimit::max(REQUEST_BODY_LIMIT_BYTES))
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(zorgnet_rest::request_span),
            )
            .with_state(self.state.clone())
    }
}

/// Refuses a body holding a NUL character (`\u0000`) with a 400: the hub's text columns
/// cannot store one on PostgreSQL, and a client's mistake must not become a storage failure.
async fn refuse_nul_text(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, REQUEST_BODY_LIMIT_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {REQUEST_BODY_LIMIT_BYTES} bytes"),
            )
            .into_response();
        }
    };
    if json_has_nul(&bytes) {
        return ApiError::bad_request("text may not contain a NUL character (\\u0000)")
            .into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
        .await
}

/// Whether JSON text holds the escape of U+0000 (a NUL character can appear in JSON only as
/// `\u0000`; an escaped backslash before `u0000` is text, not the escape). PostgreSQL's text cannot
/// store it, so the hub refuses bodies holding it up front as the client's mistake instead of
/// failing in storage.
fn json_has_nul(json: &[u8]) -> bool {
    const ESCAPE: &[u8] = b"u0000";
    json.windows(ESCAPE.len())
        .enumerate()
        .filter(|(_, window)| *window == ESCAPE)
        .any(|(at, _)| {
            let backslashes = json[..at].iter().rev().take_while(|b| **b == b'\\').count();
            backslashes % 2 == 1
        })
}

/// The hub's API description (OpenAPI 3.1), kept beside the code in `api/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../api/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
}

/// Runs blocking database work off the async workers.
/// The moment a request's date or date-time field `field` names (its start, for a date),
/// or a 400 naming the field.
pub(crate) fn instant(field: &str, text: &str) -> Result<i64, ApiError> {
    zorgnet_fhir::datetime::parse_date_range(text)
        .map(|range| range.low_ms)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{field} {text:?} is not a date or date-time"))
        })
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Creates `dir` (and parents) readable only by the owner.
fn create_private_dir(dir: &Path) -> Result<(), HubError> {
    let io = |source| HubError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Reads a secret file, or creates it (mode 0600) with `make()` on first start.
fn read_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String, HubError> {
    zorgnet_trust::secret::read_or_create(path, make).map_err(|source| HubError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nul_escape_counts_as_a_nul() {
        assert!(json_has_nul(br#"{"a":"x\u0000"}"#));
        assert!(json_has_nul(br#"{"a":"\u0000"}"#));
        assert!(json_has_nul(br#"{"a":"\\\u0000"}"#));
        assert!(
            !json_has_nul(br#"{"a":"\\u0000"}"#),
            "a backslash, then text"
        );
        assert!(!json_has_nul(br#"{"a":"u0000 \u0001"}"#));
        assert!(!json_has_nul(b""));
    }
}
