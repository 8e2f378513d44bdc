//! The addressing directory (`/addressing`): IHE mCSD with the LRZa list of update suppliers.
//!
//! What it is: three parts over the hub's database.
//! - The LRZa list (`/addressing/suppliers`): which organisation (URA) publishes its
//!   directory entries at which FHIR base URL. The operator or the organisation itself sets it.
//! - The address book (`/addressing/fhir`): a FHIR store of Organization, Endpoint, Location,
//!   HealthcareService, Practitioner, PractitionerRole and OrganizationAffiliation, served
//!   read-only for ITI-90 (search, read, `_history`) by the node's own FHIR router behind a
//!   guard that refuses writes.
//! - The update consumer ([`sync_once`], [`spawn_consumer`]): polls every supplier's
//!   `{base}/{Type}/_history?_since=` and applies the changes. Ids are namespaced per supplier
//!   ([`namespaced_id`]) and references rewritten to match, so two suppliers' `Organization/1`
//!   never collide and `_include` works inside one supplier's entries.
//!
//! Binding: a supplier speaks only for the organisation it is listed for (the LRZa model: one
//! supplier per URA, set by that organisation or the operator). An Organization carrying
//! another URA, and an entry whose organisation (`managingOrganization`, `providedBy`,
//! `organization`) is not one of the supplier's own Organizations, are refused and counted
//! ([`SupplierReport::rejected`], `zorgnet_hub_addressing_refused_entries_total`). Addresses
//! the hub polls or nodes call (the supplier's base URL, an Endpoint's `address`) must be
//! absolute `https` URLs ([`check_address`]; plain `http`, loopback and link-local hosts only
//! with [`crate::HubConfig::allow_insecure_endpoints`]), never the hub's own address, and an
//! Endpoint never lies under another supplier's base URL. The consumer's requests carry a
//! per-process marker that the hub refuses when it arrives at itself ([`refuse_own_polls`]),
//! so no alias of the hub's address makes it poll itself. A failing supplier is polled again
//! only after a backoff that doubles per failure ([`POLL_BACKOFF_FIRST`] to
//! [`POLL_BACKOFF_MAX`]); the operator's `POST /addressing/sync` polls every supplier at once.
//! Why a poll failed is shown only to the operator and to that supplier, in a generic form
//! ([`SupplierError::generic`]); the details go to the hub's log.
//!
//! What it is not: an authority on organisations (that is the registry) or a general FHIR
//! server; references between two suppliers' entries are not resolved.
//!
//! Tables (component `addressing`): `addressing_suppliers` (with the last poll's outcome),
//! `addressing_marks`; the address
//! book's resources live in the store's tables in the same database.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::registry::{MAX_NAME_CHARS, check_ura};
use crate::{HubError, HubState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use zorgnet_db::sql::SqlValue;
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_rest::NodeIdentity;
use zorgnet_rest::error::FhirError;
use zorgnet_rest::mcsd::{
    Change, DIRECTORY_TYPES, HistoryPager, MAX_HISTORY_PAGE_BYTES, MAX_HISTORY_PAGES, PollError,
    URA_SYSTEM, ura_of,
};
use zorgnet_store::{ReadOutcome, Store, StoreError, WriteOp, WriteOutcome};

/// The addressing directory's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "addressing",
        version: 1,
        sql: "
CREATE TABLE addressing_suppliers (
    ura {text} PRIMARY KEY,
    name {text} NOT NULL,
    fhir_base_url {text} NOT NULL,
    updated_at_ms {int} NOT NULL,
    last_sync_at_ms {int},
    last_sync_error {text}
);
CREATE TABLE addressing_marks (
    ura {text} NOT NULL,
    res_type {text} NOT NULL,
    mark_ms {int} NOT NULL,
    PRIMARY KEY (ura, res_type)
)",
    },
    Migration {
        component: "addressing",
        version: 2,
        sql: "ALTER TABLE addressing_suppliers ADD COLUMN last_sync_refused {int}",
    },
];

/// Suppliers polled at the same time: enough to hide network latency, few enough not to
/// swamp the hub's two cores and its single database writer.
pub const MAX_SUPPLIERS_IN_FLIGHT: usize = 16;
/// Time limit of one HTTP request to a supplier (a `_history` page of 1,000 entries).
pub const SUPPLIER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for connecting to a supplier, so a dead host fails fast.
pub const SUPPLIER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most changes applied to the address book in one transaction.
pub const APPLY_BATCH_RESOURCES: usize = 1_000;
/// How often the background consumer polls every supplier when the operator sets nothing.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Longest supplier base URL accepted.
pub const MAX_URL_CHARS: usize = 2_000;
/// Longest namespaced id (the FHIR limit).
const MAX_ID_CHARS: usize = 64;
/// How long the consumer waits before polling a supplier again after its first failure;
/// each further failure doubles it, up to [`POLL_BACKOFF_MAX`].
pub const POLL_BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between two polls of a failing supplier.
pub const POLL_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);
/// Header carrying the consumer's per-process marker on every poll, so that the hub
/// recognises (and refuses) a poll that reached itself.
pub const POLL_MARKER_HEADER: &str = "zorgnet-hub-poll";
/// Status with which the hub refuses a poll of its own consumer (508 Loop Detected).
const OWN_POLL_STATUS: StatusCode = StatusCode::LOOP_DETECTED;
/// Bytes of randomness in the consumer's poll marker.
const POLL_MARKER_BYTES: usize = 16;

/// The address book: its store, the HTTP client of the consumer, the lock that keeps two
/// syncs from running at once, and what binds suppliers' addresses.
pub struct AddressBook {
    store: Store,
    client: reqwest::Client,
    sync_lock: tokio::sync::Mutex<()>,
    allow_insecure: bool,
    poll_marker: String,
    own_addresses: std::sync::RwLock<Vec<SocketAddr>>,
    backoff: std::sync::Mutex<HashMap<String, Backoff>>,
}

/// A failing supplier's backoff: how many polls failed in a row, and when to poll again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

impl Backoff {
    /// The backoff after one more failure at `now`.
    fn after_failure(previous: Option<Backoff>, now: Instant) -> Backoff {
        let failures = previous.map_or(1, |b| b.failures.saturating_add(1));
        let wait = POLL_BACKOFF_FIRST
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(31)))
            .min(POLL_BACKOFF_MAX);
        Backoff {
            failures,
            retry_at: now + wait,
        }
    }
}

impl AddressBook {
    /// Opens the address book's store inside the hub's database; with `allow_insecure`
    /// (development only), plain `http` and loopback addresses are accepted. Blocking.
    pub fn open(
        db: Database,
        allow_insecure: bool,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<AddressBook, HubError> {
        let store = Store::open_in(db, SearchRegistry::r4())
            .map_err(|e| HubError::Setup(format!("address book store: {e}")))?;
        let mut marker = [0u8; POLL_MARKER_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut marker);
        let poll_marker =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, marker);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            POLL_MARKER_HEADER,
            reqwest::header::HeaderValue::from_str(&poll_marker)
                .map_err(|e| HubError::Setup(format!("poll marker: {e}")))?,
        );
        let mut client = reqwest::Client::builder();
        if let Some(tls) = tls {
            client = client.tls_backend_preconfigured(tls);
        }
        let client = client
            .timeout(SUPPLIER_REQUEST_TIMEOUT)
            .connect_timeout(SUPPLIER_CONNECT_TIMEOUT)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HubError::Setup(format!("address book HTTP client: {e}")))?;
        Ok(AddressBook {
            store,
            client,
            sync_lock: tokio::sync::Mutex::new(()),
            allow_insecure,
            poll_marker,
            own_addresses: std::sync::RwLock::default(),
            backoff: std::sync::Mutex::default(),
        })
    }

    /// The address book's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tells the address book where the hub listens, so that no supplier or Endpoint can
    /// point there.
    pub fn serving_at(&self, address: SocketAddr) {
        let mut own = self
            .own_addresses
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !own.contains(&address) {
            own.push(address);
        }
    }

    /// Checks an address the hub polls or a node calls: see [`check_address`], and not the
    /// hub's own listen address.
    pub fn check_address(&self, url: &str) -> Result<Url, String> {
        let parsed = check_address(url, self.allow_insecure)?;
        let own = self.own_addresses.read().unwrap_or_else(|p| p.into_inner());
        if own
            .iter()
            .any(|address| is_listen_address(&parsed, address))
        {
            return Err("is the hub's own address".into());
        }
        Ok(parsed)
    }

    /// Whether `ura` waits out a backoff at `now`.
    fn backing_off(&self, ura: &str, now: Instant) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.get(ura).is_some_and(|b| now < b.retry_at)
    }

    /// Records one poll's outcome in the backoff.
    fn record_poll(&self, ura: &str, failed: bool, now: Instant) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            let next = Backoff::after_failure(backoff.get(ura).copied(), now);
            backoff.insert(ura.to_string(), next);
        } else {
            backoff.remove(ura);
        }
    }

    /// Forgets a supplier's backoff (its entry changed: the next tick tries it).
    fn forget_backoff(&self, ura: &str) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.remove(ura);
    }
}

/// Middleware in front of every hub route: refuses a request carrying this hub's own poll
/// marker (508), which means a supplier's address led the consumer back to the hub.
pub async fn refuse_own_polls(
    State(state): State<Arc<HubState>>,
    request: Request,
    next: Next,
) -> Response {
    let own = request
        .headers()
        .get(POLL_MARKER_HEADER)
        .is_some_and(|m| m.as_bytes() == state.addressing.poll_marker.as_bytes());
    if own {
        return ApiError::new(OWN_POLL_STATUS, "this is the hub itself").into_response();
    }
    next.run(request).await
}

/// A URL's host: an IP address or a name.
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

fn host_of(url: &Url) -> Option<Host<'_>> {
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        // `::ffff:127.0.0.1` is 127.0.0.1.
        Ok(ip) => Host::Ip(ip.to_canonical()),
        Err(_) => Host::Name(host),
    })
}

/// Whether `url` names the listen address `address`: the same port, and the same IP, or a
/// loopback host for a loopback listen IP, or any local or unspecified host, or any IP at
/// all for an unspecified listen IP.
fn is_listen_address(url: &Url, address: &SocketAddr) -> bool {
    if url.port_or_known_default() != Some(address.port()) {
        return false;
    }
    let listen = address.ip();
    let local_listen = listen.is_loopback() || listen.is_unspecified();
    match host_of(url) {
        Some(Host::Name(name)) => is_loopback_name(name) && local_listen,
        Some(Host::Ip(ip)) => {
            ip == listen
                || listen.is_unspecified()
                || ip.is_unspecified()
                || (ip.is_loopback() && local_listen)
        }
        None => false,
    }
}

/// Whether a host name is the local machine's (`localhost` and names under it).
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether a URL's host is the local machine, unspecified or link-local (cloud metadata
/// services live there): never an address outside development.
fn is_local_host(url: &Url) -> bool {
    match host_of(url) {
        Some(Host::Name(name)) => is_loopback_name(name),
        Some(Host::Ip(IpAddr::V4(ip))) => {
            ip.is_loopback() || ip.is_unspecified() || ip.is_link_local()
        }
        Some(Host::Ip(IpAddr::V6(ip))) => {
            ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local()
        }
        None => true,
    }
}

/// A supplier in the LRZa list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supplier {
    /// URA number of the organisation.
    pub ura: String,
    /// Organisation name.
    pub name: String,
    /// FHIR base URL of its mCSD update supplier.
    pub fhir_base_url: String,
    /// When the consumer last finished polling it (epoch ms).
    #[serde(default)]
    pub last_sync_at_ms: Option<i64>,
    /// Why the last poll failed, in a generic form; `None` when it succeeded. Shown only to
    /// the operator and to the supplier's own organisation.
    #[serde(default)]
    pub last_sync_error: Option<String>,
    /// How many entries the last poll refused (another organisation's, or a refused
    /// address). Shown only to the operator and to the supplier's own organisation.
    #[serde(default)]
    pub last_sync_refused: Option<i64>,
}

/// Body of `PUT /addressing/suppliers/{ura}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplierInput {
    /// Organisation name.
    pub name: String,
    /// FHIR base URL (`https`; `http` only on a hub in development mode).
    pub fhir_base_url: String,
}

/// What one sync did for one supplier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierReport {
    /// The supplier's URA.
    pub ura: String,
    /// Whether every resource type was read completely.
    pub ok: bool,
    /// Why not, in a generic form (the details are in the hub's log).
    pub error: Option<String>,
    /// Resources created, updated or deleted in the address book.
    pub applied: usize,
    /// Resources refused (invalid, another organisation's, or a refused address).
    pub rejected: usize,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// One report per supplier polled, in URA order (the consumer skips a supplier that
    /// waits out its backoff; the operator's sync polls all).
    pub suppliers: Vec<SupplierReport>,
}

/// The directory's routes, under `/addressing`.
pub fn routes(state: &Arc<HubState>, public_url: &str) -> Router<Arc<HubState>> {
    let identity = NodeIdentity {
        ura: String::new(),
        name: "zorgnet hub address book".into(),
    };
    let fhir: Router<Arc<HubState>> = zorgnet_rest::router(
        state.addressing.store.clone(),
        identity,
        format!("{}/addressing/fhir", public_url.trim_end_matches('/')),
    )
    .layer(middleware::from_fn(read_only))
    .with_state(());
    Router::new()
        .route("/suppliers", get(list_suppliers))
        .route("/suppliers/{ura}", put(put_supplier))
        .route("/sync", post(sync_now))
        .merge(fhir)
}

/// Guard in front of the address book's FHIR API: authenticated callers only, `/fhir` paths
/// only, reads and `_search` only. It also tells the node's router its public base: the node builds links
/// as `http://{Host}/fhir`, so the Host seen here gets the `/addressing` prefix.
async fn read_only(mut request: Request, next: Next) -> Response {
    let anonymous = !matches!(
        request.extensions().get::<Caller>(),
        Some(Caller::Admin | Caller::Organisation(_))
    );
    if anonymous {
        return FhirError::new(
            StatusCode::UNAUTHORIZED,
            IssueCode::Forbidden,
            "missing credentials: send Authorization: Bearer <key>",
        )
        .into_response();
    }
    if !request.uri().path().starts_with("/fhir") {
        // The node router's own /metrics and /health are the node's, not the directory's.
        return FhirError::not_found("no such endpoint").into_response();
    }
    let method = request.method();
    let allowed = method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && request.uri().path().ends_with("/_search"));
    if !allowed {
        return FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            IssueCode::NotSupported,
            "the address book is read-only: it is fed by the organisations' mCSD update suppliers",
        )
        .into_response();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    if let Ok(prefixed) = HeaderValue::from_str(&format!("{host}/addressing")) {
        request.headers_mut().insert(header::HOST, prefixed);
    }
    next.run(request).await
}

async fn list_suppliers(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<Supplier>>, ApiError> {
    caller.authenticated()?;
    let db = state.db.clone();
    let mut listed = crate::blocking(move || Ok(suppliers(&db)?)).await?;
    if let Caller::Organisation(own) = &caller {
        for supplier in listed.iter_mut().filter(|s| s.ura != *own) {
            supplier.last_sync_error = None;
            supplier.last_sync_refused = None;
        }
    }
    Ok(Json(listed))
}

async fn put_supplier(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(ura): Path<String>,
    body: Result<Json<SupplierInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    check_ura(&ura)?;
    match &caller {
        Caller::Organisation(own) if *own == ura => {}
        _ => caller.admin()?,
    }
    let Json(input) = body?;
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let url = check_base_url(&state.addressing, &input.fhir_base_url)?;
    let db = state.db.clone();
    let supplier = Supplier {
        ura: ura.clone(),
        name,
        fhir_base_url: url,
        last_sync_at_ms: None,
        last_sync_error: None,
        last_sync_refused: None,
    };
    let stored = supplier.clone();
    let created = crate::blocking(move || {
        db.write_transaction(|conn| -> Result<bool, ApiError> {
            let d = conn.dialect();
            let exists = format!(
                "SELECT 1 FROM addressing_suppliers WHERE ura = {}",
                d.placeholder(1)
            );
            let created = conn
                .query(&exists, &[stored.ura.as_str().into()])?
                .is_empty();
            let upsert = format!(
                "INSERT INTO addressing_suppliers (ura, name, fhir_base_url, updated_at_ms) \
                 VALUES ({}, {}, {}, {}) ON CONFLICT (ura) DO UPDATE SET name = excluded.name, \
                 fhir_base_url = excluded.fhir_base_url, updated_at_ms = excluded.updated_at_ms",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3),
                d.placeholder(4)
            );
            conn.execute(
                &upsert,
                &[
                    stored.ura.into(),
                    stored.name.into(),
                    stored.fhir_base_url.into(),
                    zorgnet_db::now_ms().into(),
                ],
            )?;
            Ok(created)
        })
    })
    .await?;
    state.addressing.forget_backoff(&ura);
    tracing::info!(%ura, url = %supplier.fhir_base_url, created, "set mCSD update supplier");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(supplier)).into_response())
}

async fn sync_now(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SyncReport>, ApiError> {
    caller.admin()?;
    Ok(Json(sync_once(&state).await))
}

/// Checks a supplier's FHIR base URL for the LRZa list ([`AddressBook::check_address`]).
/// Returns it without a trailing slash.
fn check_base_url(book: &AddressBook, url: &str) -> Result<String, ApiError> {
    if url.trim().chars().count() > MAX_URL_CHARS {
        return Err(ApiError::bad_request(format!(
            "fhir_base_url is longer than {MAX_URL_CHARS} characters"
        )));
    }
    book.check_address(url)
        .map(|_| url.trim().trim_end_matches('/').to_string())
        .map_err(|why| ApiError::bad_request(format!("fhir_base_url {url:?} {why}")))
}

/// Checks an address the hub polls or a node calls (a supplier's base URL, an Endpoint's
/// `address`): an absolute `https` URL with a host, no credentials, query or fragment, and
/// not a loopback, unspecified or link-local host. With `allow_insecure` (development), plain
/// `http` and local hosts pass too. Answers the parsed URL or why not.
pub fn check_address(url: &str, allow_insecure: bool) -> Result<Url, String> {
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.chars().count() > MAX_URL_CHARS {
        return Err(format!("is longer than {MAX_URL_CHARS} characters"));
    }
    let parsed = Url::parse(trimmed).map_err(|e| format!("is not an absolute URL ({e})"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        "http" => return Err("must use https".into()),
        _ if allow_insecure => return Err("must use http or https".into()),
        _ => return Err("must use https".into()),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !allow_insecure && is_local_host(&parsed) {
        return Err("names a local or link-local host".into());
    }
    Ok(parsed)
}

/// Whether `address` is `base` or lies under it (by whole path segments).
fn lies_under(address: &str, base: &str) -> bool {
    let address = address.trim_end_matches('/');
    let base = base.trim_end_matches('/');
    address.eq_ignore_ascii_case(base)
        || address
            .get(..base.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(base))
            && address[base.len()..].starts_with('/')
}

/// The LRZa list, in URA order. Blocking.
pub fn suppliers(db: &Database) -> Result<Vec<Supplier>, DbError> {
    let rows = db.with_reader(|conn| {
        conn.query(
            "SELECT ura, name, fhir_base_url, last_sync_at_ms, last_sync_error, \
             last_sync_refused FROM addressing_suppliers ORDER BY ura",
            &[],
        )
    })?;
    Ok(rows
        .into_iter()
        .map(|mut row| Supplier {
            ura: row[0].take_text(),
            name: row[1].take_text(),
            fhir_base_url: row[2].take_text(),
            last_sync_at_ms: match row[3] {
                SqlValue::Null => None,
                ref v => Some(v.int()),
            },
            last_sync_error: match row[4] {
                SqlValue::Null => None,
                _ => Some(row[4].take_text()),
            },
            last_sync_refused: match row[5] {
                SqlValue::Null => None,
                ref v => Some(v.int()),
            },
        })
        .collect())
}

/// The address-book id of a supplier's resource: `{ura}-{id}` when that is a valid FHIR id,
/// else `{ura}.` and a SHA-256 prefix of the id. Deterministic, and the two forms cannot meet
/// (the character after the eight URA digits differs).
pub fn namespaced_id(ura: &str, id: &str) -> String {
    let plain = format!("{ura}-{id}");
    if zorgnet_fhir::validate::is_valid_id(&plain) {
        return plain;
    }
    let digest: String = Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let room = MAX_ID_CHARS.saturating_sub(ura.len() + 1);
    format!("{ura}.{}", &digest[..room.min(digest.len())])
}

/// Rewrites a supplier's resource for the address book: namespaced id, references to the
/// supplier's own resources (relative, or absolute under its base URL) namespaced the same
/// way, `meta.source` set to the supplier's base. Other references are kept as they are.
pub fn rewrite_resource(resource: &mut Value, ura: &str, base: &str) {
    if let Some(id) = resource.get("id").and_then(Value::as_str) {
        resource["id"] = Value::String(namespaced_id(ura, id));
    }
    rewrite_references(resource, ura, base);
    if let Some(object) = resource.as_object_mut() {
        let meta = object
            .entry("meta")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            meta.insert("source".into(), Value::String(base.to_string()));
        }
    }
}

fn rewrite_references(value: &mut Value, ura: &str, base: &str) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = child
                {
                    if let Some(rewritten) = rewrite_reference(reference, ura, base) {
                        *reference = rewritten;
                    }
                } else {
                    rewrite_references(child, ura, base);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_references(item, ura, base);
            }
        }
        _ => {}
    }
}

/// `Type/id` (optionally `/_history/n`, optionally under the supplier's base) → `Type/{ns id}`.
fn rewrite_reference(reference: &str, ura: &str, base: &str) -> Option<String> {
    let relative = match reference.strip_prefix(base) {
        Some(rest) => rest.strip_prefix('/')?,
        None if reference.contains("://") || reference.starts_with("urn:") => return None,
        None => reference,
    };
    let mut parts = relative.split('/');
    let (resource_type, id) = (parts.next()?, parts.next()?);
    // A version names the supplier's version, which the address book does not have: the
    // reference is made to the current version instead.
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) => {}
        _ => return None,
    }
    let known = zorgnet_fhir::model::r4().is_resource_type(resource_type)
        && zorgnet_fhir::validate::is_valid_id(id);
    known.then(|| format!("{resource_type}/{}", namespaced_id(ura, id)))
}

/// Polls every supplier once (at most [`MAX_SUPPLIERS_IN_FLIGHT`] at a time), backoff or
/// not, and applies their changes to the address book. A failing supplier is reported and
/// does not stop the others. Only one sync runs at a time; a second caller waits for the
/// first.
pub async fn sync_once(state: &Arc<HubState>) -> SyncReport {
    sync(state, false).await
}

/// [`sync_once`] for the suppliers that do not wait out a backoff (`only_due`) or for all.
async fn sync(state: &Arc<HubState>, only_due: bool) -> SyncReport {
    let _running = state.addressing.sync_lock.lock().await;
    let db = state.db.clone();
    let loaded = crate::blocking(move || Ok((suppliers(&db)?, marks(&db)?))).await;
    let (suppliers, mut marks) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e.detail, "address book sync could not read the supplier list");
            return SyncReport::default();
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_SUPPLIERS_IN_FLIGHT));
    let (applier, committer) = Applier::start(state.addressing.store.clone());
    let bases: Arc<Vec<(String, String)>> = Arc::new(
        suppliers
            .iter()
            .map(|s| (s.ura.clone(), s.fhir_base_url.clone()))
            .collect(),
    );
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for supplier in suppliers {
        if only_due && state.addressing.backing_off(&supplier.ura, started) {
            continue;
        }
        let supplier_marks = marks.remove(&supplier.ura).unwrap_or_default();
        let (state, permits, applier) = (state.clone(), permits.clone(), applier.clone());
        let bases = bases.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            sync_supplier(&state, &applier, supplier, supplier_marks, &bases).await
        });
    }
    drop(applier);
    let mut report = SyncReport::default();
    let mut progress = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((supplier_report, new_marks)) => {
                state.addressing.record_poll(
                    &supplier_report.ura,
                    !supplier_report.ok,
                    Instant::now(),
                );
                progress.push(Progress {
                    ura: supplier_report.ura.clone(),
                    marks: new_marks,
                    error: supplier_report.error.clone(),
                    refused: supplier_report.rejected,
                });
                report.suppliers.push(supplier_report);
            }
            Err(e) => tracing::error!(error = %e, "address book sync task failed"),
        }
    }
    if let Err(e) = committer.await {
        tracing::error!(error = %e, "address book committer failed");
    }
    // One transaction for every supplier's marks and status: a commit per supplier would cost
    // more than the polls. A crash before it only means the next sync reads the changes again.
    let db = state.db.clone();
    if let Err(e) = crate::blocking(move || Ok(save_progress(&db, &progress)?)).await {
        for supplier in &mut report.suppliers {
            supplier.ok = false;
            supplier.error = Some("the hub could not save the poll's progress".into());
            tracing::error!(error = %e.detail, "address book sync could not save its progress");
        }
    }
    report.suppliers.sort_by(|a, b| a.ura.cmp(&b.ura));
    let failed = report.suppliers.iter().filter(|s| !s.ok).count();
    let refused = report.suppliers.iter().map(|s| s.rejected).sum::<usize>();
    metrics::counter!("zorgnet_hub_addressing_syncs_total").increment(1);
    metrics::counter!("zorgnet_hub_addressing_supplier_failures_total").increment(failed as u64);
    metrics::counter!("zorgnet_hub_addressing_refused_entries_total").increment(refused as u64);
    let applied = report.suppliers.iter().map(|s| s.applied).sum::<usize>();
    // A sync that changed nothing is the usual case, every interval: not worth a line.
    if applied > 0 || failed > 0 {
        tracing::info!(
            suppliers = report.suppliers.len(),
            failed,
            applied,
            "address book sync finished"
        );
    } else {
        tracing::debug!(
            suppliers = report.suppliers.len(),
            "address book sync found no changes"
        );
    }
    report
}

/// Starts the update consumer: polls every supplier now and then every `interval`, except
/// those waiting out the backoff of a failure.
pub fn spawn_consumer(state: Arc<HubState>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            sync(&state, true).await;
        }
    })
}

/// Why polling one supplier stopped.
#[derive(Debug, thiserror::Error)]
pub enum SupplierError {
    /// Reading the supplier's `_history` failed.
    #[error("{0}")]
    Poll(#[from] PollError),
    /// The address book could not store the changes.
    #[error("address book: {0}")]
    Store(#[from] StoreError),
    /// The supplier's base URL is no longer accepted.
    #[error("base URL {url:?} {why}")]
    Address {
        /// The base URL.
        url: String,
        /// Why it is refused.
        why: String,
    },
}

impl SupplierError {
    /// What the operator and the supplier are shown: the kind of failure, without the
    /// answer's text, the URL or the connection's error (those go to the hub's log only),
    /// so a supplier's address cannot make the hub an oracle for what answers where.
    pub fn generic(&self) -> String {
        match self {
            SupplierError::Poll(PollError::Request { source, .. }) if source.is_timeout() => {
                "the supplier did not answer in time".into()
            }
            SupplierError::Poll(PollError::Request { source, .. }) if source.is_connect() => {
                "could not connect to the supplier".into()
            }
            SupplierError::Poll(PollError::Request { .. }) => {
                "the connection to the supplier failed".into()
            }
            SupplierError::Poll(PollError::Status { status, .. })
                if *status == OWN_POLL_STATUS.as_u16() =>
            {
                "the supplier's address is the hub's own".into()
            }
            SupplierError::Poll(PollError::Status { status, .. }) => {
                format!("the supplier answered HTTP {status}")
            }
            SupplierError::Poll(PollError::TooLarge { .. }) => {
                format!("a history page is larger than {MAX_HISTORY_PAGE_BYTES} bytes")
            }
            SupplierError::Poll(PollError::ForeignLink { .. }) => {
                "a next link leaves the supplier's base URL".into()
            }
            SupplierError::Poll(PollError::TooManyPages { .. }) => {
                format!("more than {MAX_HISTORY_PAGES} history pages")
            }
            SupplierError::Poll(_) => "the answer is not a readable FHIR history Bundle".into(),
            SupplierError::Store(_) => "the hub could not store the changes".into(),
            SupplierError::Address { why, .. } => format!("the base URL {why}"),
        }
    }
}

/// Polls one supplier; returns its report and the new marks of the types read completely.
async fn sync_supplier(
    state: &Arc<HubState>,
    applier: &Applier,
    supplier: Supplier,
    marks: HashMap<String, i64>,
    bases: &[(String, String)],
) -> (SupplierReport, Vec<(String, i64)>) {
    let mut report = SupplierReport {
        ura: supplier.ura.clone(),
        ok: true,
        error: None,
        applied: 0,
        rejected: 0,
    };
    let mut new_marks = Vec::new();
    let result = match state.addressing.check_address(&supplier.fhir_base_url) {
        Err(why) => Err(SupplierError::Address {
            url: supplier.fhir_base_url.clone(),
            why,
        }),
        Ok(_) => {
            poll_supplier(
                state,
                applier,
                &supplier,
                &marks,
                bases,
                &mut report,
                &mut new_marks,
            )
            .await
        }
    };
    if let Err(e) = &result {
        tracing::warn!(ura = %supplier.ura, error = %e, "mCSD update supplier failed");
        report.ok = false;
        report.error = Some(e.generic());
    }
    (report, new_marks)
}

/// Reads every type's changes and applies them in batches; records each type's new mark once
/// all of its pages were read.
async fn poll_supplier(
    state: &Arc<HubState>,
    applier: &Applier,
    supplier: &Supplier,
    marks: &HashMap<String, i64>,
    bases: &[(String, String)],
    report: &mut SupplierReport,
    new_marks: &mut Vec<(String, i64)>,
) -> Result<(), SupplierError> {
    let book = &state.addressing;
    let mut ops = Vec::new();
    // Refusals are summed up in one line per poll: a supplier whose store holds other
    // organisations' entries (a record system's copies of its patients' GP practices)
    // would otherwise log a line for each of them on every poll.
    let mut first_refusal: Option<String> = None;
    for resource_type in DIRECTORY_TYPES {
        let mark = marks.get(resource_type).copied();
        let mut pager = HistoryPager::new(
            &book.client,
            &supplier.fhir_base_url,
            resource_type,
            mark,
            None,
        )?;
        while let Some(changes) = pager.next_page().await? {
            for change in changes {
                match to_op(change, resource_type, supplier, book, bases) {
                    Ok(op) => ops.push(op),
                    Err(reason) => {
                        tracing::debug!(ura = %supplier.ura, %resource_type, %reason, "refused a directory entry");
                        first_refusal.get_or_insert(reason);
                        report.rejected += 1;
                    }
                }
            }
            if ops.len() >= APPLY_BATCH_RESOURCES {
                report.applied += applier.apply(std::mem::take(&mut ops)).await?;
            }
        }
        if let Some(newest) = pager.newest_ms() {
            new_marks.push((resource_type.to_string(), newest.max(mark.unwrap_or(0))));
        }
    }
    report.applied += applier.apply(ops).await?;
    if let Some(first) = first_refusal {
        tracing::warn!(
            ura = %supplier.ura,
            refused = report.rejected,
            %first,
            "refused directory entries of an mCSD update supplier"
        );
    }
    Ok(())
}

/// The elements through which a directory entry names the organisation it belongs to.
const ORGANISATION_ELEMENTS: [(&str, &str); 5] = [
    ("Endpoint", "managingOrganization"),
    ("Location", "managingOrganization"),
    ("HealthcareService", "providedBy"),
    ("PractitionerRole", "organization"),
    ("OrganizationAffiliation", "organization"),
];

/// Why a (rewritten) entry is not the supplier's to publish, if it is not: it names another
/// organisation, or an Endpoint's address is refused.
fn binding_refusal(
    resource: &Value,
    resource_type: &str,
    supplier: &Supplier,
    book: &AddressBook,
    bases: &[(String, String)],
) -> Option<String> {
    if resource_type == "Organization"
        && let Some(claimed) = ura_of(resource)
        && claimed != supplier.ura
    {
        return Some(format!("claims URA {claimed}"));
    }
    for (owner_type, element) in ORGANISATION_ELEMENTS {
        if owner_type != resource_type {
            continue;
        }
        let Some(reference) = resource.get(element) else {
            continue;
        };
        if let Some(literal) = reference.get("reference").and_then(Value::as_str) {
            let own = literal.strip_prefix("Organization/").is_some_and(|id| {
                id.strip_prefix(supplier.ura.as_str())
                    .is_some_and(|rest| rest.starts_with(['-', '.']))
            });
            if !own {
                return Some(format!(
                    "{element} is not one of the supplier's Organizations"
                ));
            }
        }
        let identifier = reference.get("identifier");
        let system = identifier
            .and_then(|i| i.get("system"))
            .and_then(Value::as_str);
        let value = identifier
            .and_then(|i| i.get("value"))
            .and_then(Value::as_str);
        if system == Some(URA_SYSTEM) && value != Some(supplier.ura.as_str()) {
            return Some(format!("{element} names another organisation's URA"));
        }
    }
    if resource_type == "Endpoint"
        && let Some(address) = resource.get("address").and_then(Value::as_str)
    {
        if let Err(why) = book.check_address(address) {
            return Some(format!("address {why}"));
        }
        if let Some((other, _)) = bases
            .iter()
            .find(|(ura, base)| *ura != supplier.ura && lies_under(address, base))
        {
            return Some(format!("address lies at organisation {other}'s supplier"));
        }
    }
    None
}

/// Turns a supplier's change into an address-book write, or says why it is refused.
fn to_op(
    change: Change,
    resource_type: &str,
    supplier: &Supplier,
    book: &AddressBook,
    bases: &[(String, String)],
) -> Result<WriteOp, String> {
    match change {
        Change::Delete { id } => Ok(WriteOp::Delete {
            resource_type: resource_type.to_string(),
            id: namespaced_id(&supplier.ura, &id),
        }),
        Change::Upsert(mut resource) => {
            let original_id = resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            rewrite_resource(&mut resource, &supplier.ura, &supplier.fhir_base_url);
            if let Some(why) = binding_refusal(&resource, resource_type, supplier, book, bases) {
                return Err(format!(
                    "{resource_type}/{original_id} {why}; the supplier is {}",
                    supplier.ura
                ));
            }
            let issues = zorgnet_fhir::validate_resource(&resource);
            if let Some(issue) = issues.first() {
                return Err(format!(
                    "{resource_type}/{original_id} is invalid: {}",
                    issue.diagnostics
                ));
            }
            let id = resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(WriteOp::Update {
                resource,
                id,
                if_match: None,
            })
        }
    }
}

/// Applies the suppliers' writes to the address book. Each supplier's writes stay one
/// all-or-nothing unit, but the units waiting together commit in one transaction (group
/// commit): a sync of 1,000 suppliers with two resources each would otherwise be 1,000
/// commits through the single writer, each waiting for its flush to disk.
#[derive(Clone)]
struct Applier {
    store: Store,
    queue: mpsc::Sender<Unit>,
}

/// One supplier's writes, and where to say how many changed something.
struct Unit {
    ops: Vec<WriteOp>,
    done: oneshot::Sender<Result<usize, StoreError>>,
}

impl Applier {
    /// The applier and its committer task, which ends when every clone of the applier is gone.
    fn start(store: Store) -> (Applier, JoinHandle<()>) {
        let (queue, waiting) = mpsc::channel(MAX_SUPPLIERS_IN_FLIGHT);
        let committer = tokio::spawn(commit_units(store.clone(), waiting));
        (Applier { store, queue }, committer)
    }

    /// Applies `ops` as one unit; returns how many changed something. Writes that would
    /// change nothing (the overlap of `_since` reads changes again) are dropped first by a
    /// read, here on the supplier's task, so that a quiet supplier costs the writer nothing.
    async fn apply(&self, ops: Vec<WriteOp>) -> Result<usize, StoreError> {
        let mut changing = Vec::with_capacity(ops.len());
        for op in ops {
            if !already_applied(&self.store, &op).await? {
                changing.push(op);
            }
        }
        if changing.is_empty() {
            return Ok(0);
        }
        let (done, result) = oneshot::channel();
        let stopped = || StoreError::Invalid("the address book committer stopped".into());
        self.queue
            .send(Unit {
                ops: changing,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// Commits the units that wait together, up to [`APPLY_BATCH_RESOURCES`] writes, in one
/// transaction. When that transaction fails, each of its units is tried on its own, so one
/// supplier's bad write never fails another's.
async fn commit_units(store: Store, mut waiting: mpsc::Receiver<Unit>) {
    while let Some(first) = waiting.recv().await {
        let mut units = vec![first];
        let mut writes = units[0].ops.len();
        while writes < APPLY_BATCH_RESOURCES {
            match waiting.try_recv() {
                Ok(unit) => {
                    writes += unit.ops.len();
                    units.push(unit);
                }
                Err(_) => break,
            }
        }
        let sizes: Vec<usize> = units.iter().map(|u| u.ops.len()).collect();
        let all: Vec<WriteOp> = units.iter().flat_map(|u| u.ops.iter().cloned()).collect();
        match store.transaction(all).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.as_slice();
                for (unit, size) in units.into_iter().zip(sizes) {
                    let (own, rest) = outcomes.split_at(size.min(outcomes.len()));
                    outcomes = rest;
                    let _ = unit.done.send(Ok(changed(own)));
                }
            }
            Err(e) if units.len() == 1 => {
                let _ = units.remove(0).done.send(Err(e));
            }
            Err(_) => {
                for unit in units {
                    let result = store.transaction(unit.ops).await.map(|o| changed(&o));
                    let _ = unit.done.send(result);
                }
            }
        }
    }
}

/// How many of a transaction's outcomes changed something.
fn changed(outcomes: &[WriteOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                WriteOutcome::Created(_)
                    | WriteOutcome::Updated(_)
                    | WriteOutcome::Deleted(Some(_))
            )
        })
        .count()
}

/// Whether the address book already holds what `op` would write (the store's own test for
/// unchanged content: the same JSON once stamped with the current version).
async fn already_applied(store: &Store, op: &WriteOp) -> Result<bool, StoreError> {
    let (resource_type, id) = match op {
        WriteOp::Update { resource, id, .. } => (
            resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            id.as_str(),
        ),
        WriteOp::Delete { resource_type, id } => (resource_type.as_str(), id.as_str()),
        WriteOp::Create { .. } | WriteOp::UpdateWhere { .. } | WriteOp::DeleteWhere { .. } => {
            return Ok(false);
        }
    };
    Ok(match (store.read(resource_type, id).await?, op) {
        (ReadOutcome::Found(stored), WriteOp::Update { resource, .. }) => {
            let mut candidate = resource.clone();
            zorgnet_store::stamp(&mut candidate, id, stored.version, stored.last_updated_ms)
                == stored.json
        }
        (ReadOutcome::Found(_), _) => false,
        (_, WriteOp::Delete { .. }) => true,
        _ => false,
    })
}

/// Every supplier's marks: URA → type → newest change seen (epoch ms). Blocking.
fn marks(db: &Database) -> Result<HashMap<String, HashMap<String, i64>>, DbError> {
    let rows = db.with_reader(|conn| {
        conn.query("SELECT ura, res_type, mark_ms FROM addressing_marks", &[])
    })?;
    let mut marks: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for mut row in rows {
        let mark = row[2].int();
        let resource_type = row[1].take_text();
        marks
            .entry(row[0].take_text())
            .or_default()
            .insert(resource_type, mark);
    }
    Ok(marks)
}

/// Supplier progress to record: URA, new marks per type, the error of its poll and how many
/// entries it refused.
struct Progress {
    ura: String,
    marks: Vec<(String, i64)>,
    error: Option<String>,
    refused: usize,
}

/// Records every polled supplier's new marks and outcome in one transaction. Blocking.
fn save_progress(db: &Database, progress: &[Progress]) -> Result<(), DbError> {
    db.write_transaction(|conn| {
        let d = conn.dialect();
        let upsert = format!(
            "INSERT INTO addressing_marks (ura, res_type, mark_ms) VALUES ({}, {}, {}) \
             ON CONFLICT (ura, res_type) DO UPDATE SET mark_ms = excluded.mark_ms",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3)
        );
        let status = format!(
            "UPDATE addressing_suppliers SET last_sync_at_ms = {}, last_sync_error = {}, \
             last_sync_refused = {} WHERE ura = {}",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3),
            d.placeholder(4)
        );
        let now = zorgnet_db::now_ms();
        for supplier in progress {
            let ura = supplier.ura.as_str();
            for (resource_type, mark) in &supplier.marks {
                conn.execute(
                    &upsert,
                    &[ura.into(), resource_type.as_str().into(), (*mark).into()],
                )?;
            }
            let error = supplier
                .error
                .as_deref()
                .map_or(SqlValue::Null, SqlValue::from);
            let refused = i64::try_from(supplier.refused).unwrap_or(i64::MAX);
            conn.execute(&status, &[now.into(), error, refused.into(), ura.into()])?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Units that wait together commit together; a unit whose write fails fails alone.
    #[tokio::test]
    async fn units_commit_together_and_a_failing_unit_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_sqlite(&dir.path().join("book.sqlite"), SearchRegistry::r4()).unwrap();
        let update = |id: &str, if_match| WriteOp::Update {
            resource: json!({"resourceType": "Organization", "id": id, "name": id}),
            id: id.to_string(),
            if_match,
        };
        let organisation = |id: &str| update(id, None);
        // Version 7 of an organisation that does not exist yet: refused.
        let stale = update("c", Some(7));
        let (queue, waiting) = mpsc::channel(8);
        let mut results = Vec::new();
        for ops in [
            vec![organisation("a")],
            vec![stale, organisation("d")],
            vec![organisation("b")],
        ] {
            let (done, result) = oneshot::channel();
            queue.send(Unit { ops, done }).await.unwrap();
            results.push(result);
        }
        drop(queue);
        commit_units(store.clone(), waiting).await;
        let mut outcomes = Vec::new();
        for result in results {
            outcomes.push(result.await.unwrap().map_err(|e| e.to_string()));
        }
        assert_eq!(outcomes[0], Ok(1));
        assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
        assert_eq!(outcomes[2], Ok(1));
        for (id, stored) in [("a", true), ("b", true), ("c", false), ("d", false)] {
            let found = matches!(
                store.read("Organization", id).await.unwrap(),
                ReadOutcome::Found(_)
            );
            assert_eq!(found, stored, "Organization/{id}");
        }
    }

    #[test]
    fn ids_are_namespaced_deterministically_and_stay_valid() {
        assert_eq!(namespaced_id("12345678", "abc"), "12345678-abc");
        let long = "x".repeat(60);
        let hashed = namespaced_id("12345678", &long);
        assert!(hashed.starts_with("12345678."), "{hashed}");
        assert_eq!(hashed.len(), MAX_ID_CHARS);
        assert!(zorgnet_fhir::validate::is_valid_id(&hashed));
        assert_eq!(hashed, namespaced_id("12345678", &long));
        assert_ne!(hashed, namespaced_id("12345678", &"y".repeat(60)));
        assert_ne!(
            namespaced_id("12345678", "a"),
            namespaced_id("87654321", "a")
        );
    }

    #[test]
    fn references_to_the_supplier_are_rewritten_and_others_kept() {
        let base = "http://node.example/fhir";
        let mut endpoint = json!({
            "resourceType": "Endpoint",
            "id": "e1",
            "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00.000Z"},
            "managingOrganization": {"reference": "Organization/o1"},
            "contact": [{"extension": [{"url": "x", "valueReference": {"reference": "http://node.example/fhir/Location/l1/_history/2"}}]}],
            "extension": [
                {"url": "a", "valueReference": {"reference": "http://elsewhere.example/fhir/Organization/o9"}},
                {"url": "b", "valueReference": {"reference": "#contained"}},
                {"url": "c", "valueReference": {"reference": "urn:uuid:0f0e"}}
            ]
        });
        rewrite_resource(&mut endpoint, "12345678", base);
        assert_eq!(endpoint["id"], "12345678-e1");
        assert_eq!(
            endpoint["managingOrganization"]["reference"],
            "Organization/12345678-o1"
        );
        assert_eq!(
            endpoint["contact"][0]["extension"][0]["valueReference"]["reference"],
            "Location/12345678-l1"
        );
        assert_eq!(
            endpoint["extension"][0]["valueReference"]["reference"],
            "http://elsewhere.example/fhir/Organization/o9"
        );
        assert_eq!(
            endpoint["extension"][1]["valueReference"]["reference"],
            "#contained"
        );
        assert_eq!(
            endpoint["extension"][2]["valueReference"]["reference"],
            "urn:uuid:0f0e"
        );
        assert_eq!(endpoint["meta"], json!({"source": base}));
    }

    #[test]
    fn addresses_are_https_absolute_and_not_local_outside_development() {
        assert_eq!(
            check_address("https://node.example/fhir/", false)
                .unwrap()
                .as_str(),
            "https://node.example/fhir"
        );
        for bad in [
            "",
            "node.example/fhir",
            "ftp://node.example/fhir",
            "http://node.example/fhir",
            "https://user:pw@node.example/fhir",
            "https://node.example/fhir?x=1",
            "https://node.example/fhir#x",
            "https://",
            "https://localhost/fhir",
            "https://LOCALHOST./fhir",
            "https://api.localhost/fhir",
            "https://127.0.0.1/fhir",
            "https://127.1.2.3:8443/fhir",
            "https://0.0.0.0/fhir",
            "https://[::1]/fhir",
            "https://[::ffff:127.0.0.1]/fhir",
            "https://169.254.169.254/latest/meta-data",
            "https://[fe80::1]/fhir",
        ] {
            assert!(check_address(bad, false).is_err(), "{bad:?} accepted");
        }
        let long = format!("https://node.example/{}", "a".repeat(MAX_URL_CHARS));
        assert!(check_address(&long, true).is_err());
        for development in ["http://127.0.0.1:8080/fhir", "http://localhost/fhir"] {
            assert!(check_address(development, true).is_ok(), "{development}");
        }
        assert!(check_address("ftp://node.example", true).is_err());
    }

    #[test]
    fn the_hubs_own_listen_address_is_recognised_under_its_aliases() {
        let url = |u: &str| Url::parse(u).unwrap();
        let loopback: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        for own in [
            "http://127.0.0.1:7000/fhir",
            "http://127.0.0.2:7000/fhir",
            "http://localhost:7000",
            "http://[::1]:7000",
            "http://[::ffff:127.0.0.1]:7000",
            "http://0.0.0.0:7000",
        ] {
            assert!(is_listen_address(&url(own), &loopback), "{own}");
            assert!(is_listen_address(&url(own), &everywhere), "{own}");
        }
        assert!(is_listen_address(&url("http://10.1.2.3:7000"), &everywhere));
        assert!(!is_listen_address(&url("http://10.1.2.3:7000"), &loopback));
        assert!(!is_listen_address(&url("http://127.0.0.1:7001"), &loopback));
        assert!(!is_listen_address(
            &url("https://hub.example:7000"),
            &loopback
        ));
        let https: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert!(is_listen_address(&url("https://localhost/"), &https));
    }

    #[test]
    fn an_address_lies_under_a_base_by_whole_segments() {
        let base = "https://gp.example/fhir";
        assert!(lies_under("https://gp.example/fhir", base));
        assert!(lies_under("https://GP.example/fhir/", base));
        assert!(lies_under("https://gp.example/fhir/other", base));
        assert!(!lies_under("https://gp.example/fhir2", base));
        assert!(!lies_under("https://gp.example", base));
        assert!(!lies_under("https://gp.example.evil/fhir", base));
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_its_maximum() {
        let now = Instant::now();
        let first = Backoff::after_failure(None, now);
        assert_eq!(
            (first.failures, first.retry_at),
            (1, now + POLL_BACKOFF_FIRST)
        );
        let second = Backoff::after_failure(Some(first), now);
        assert_eq!(second.retry_at, now + 2 * POLL_BACKOFF_FIRST);
        let mut many = second;
        for _ in 0..100 {
            many = Backoff::after_failure(Some(many), now);
        }
        assert_eq!(many.retry_at, now + POLL_BACKOFF_MAX);
        assert_eq!(many.failures, 102);
    }
}
