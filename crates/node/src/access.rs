//! The node's access policy towards other organisations, its own staff and citizens: one
//! tower layer ([`enforce`], installed by [`crate::router_in_network`]) in front of every
//! handler, so no handler decides who may see what.
//!
//! Who is calling was settled by [`crate::authn`], the layer in front of this one:
//! - **A [`Caller`] in the request's extensions**: a professional, system or citizen whose
//!   OpenID Connect token authentication verified. Staff are served like the organisation's
//!   administrator within their SMART scopes; a citizen reads their own data and nothing
//!   else. Both policies are in `access/own_callers.rs` (its module documentation says
//!   exactly what each may ask); a citizen's reads go through the same classification,
//!   patient lookup and filter as another organisation's, below, without the consent
//!   register and without withholding categories.
//! - **The access log's routes** (`/fhir/AuditEvent…`, [`crate::audit_api`]) have a policy of
//!   their own, whoever calls: `access/audit_events.rs` (the organisation's own systems read
//!   every record, a citizen only the records of their own Patients, nobody else anything).
//! - **No `Authorization` header** (and no caller): the node's own administrator (the node
//!   key, whose header authentication removed), a node started with `--insecure-dev`, or a
//!   read that carries no patient data. Served as is.
//! - **`Authorization: Bearer <access token>`** issued by the hub (`POST /trust/token`, the
//!   format is [`token`]): the signature is checked with the hub's Ed25519 key (fetched from
//!   `GET /trust/keys` once, fetched again when a token names a key id not seen before, at
//!   most every [`KEY_REFETCH_MIN_INTERVAL`]), then the expiry and the audience (a token that
//!   passed is remembered by the hash of its text until it expires, at most
//!   [`MAX_VERIFIED_TOKENS`] of them, so kept-alive clients are not re-verified at every
//!   request; the connection check below runs every time), then the
//!   connection it came over: a token bound to a client certificate (RFC 8705 `cnf`) only
//!   over that certificate, and every token only over a client certificate naming its URA
//!   (the TLS layer's `PeerIdentity`; not checked under `--insecure-dev`, which has no TLS).
//!   A bad, expired or foreign token, one over another organisation's connection, or any
//!   other kind of `Authorization`, is a 401. A token of this node's own URA is served like
//!   a local client; a token of another organisation goes through the policy below.
//!
//! The policy for other organisations fails closed, and an answer never depends on data the
//! requester may not see:
//! - **What may be asked.** Only reads of one named patient's data: `GET /fhir/{type}?…`
//!   (and `POST /fhir/{type}/_search`) naming the patient exactly once, by id (`patient`,
//!   `subject`, with `:Patient`; on `Patient` itself `_id`) or by one complete identifier
//!   (`patient.identifier`, `subject.identifier`; on `Patient` `identifier`) written
//!   `system|value` with both parts, without modifiers, OR-lists or escapes;
//!   `GET /fhir/Patient/{id}`; `Patient/{id}/$everything` (`GET`, or `POST` with a
//!   `Parameters` body read exactly as the handler reads it). Other parameters on the
//!   patient (`patient:missing`, `subject:identifier`, `patient.name`, …) are refused, and
//!   so are chains into anything but reference data ([`REFERENCE_DATA_TYPES`]): a chain
//!   into a withheld resource would let its values be probed. Counts (`_summary=count`,
//!   `_count=0`) are refused and no Bundle carries `total`: a count is over the search's
//!   matches, permitted or not. `GET /fhir/metadata` and `/health` are open; everything
//!   else (writes, history, vread, reads by id of other types, the node's own operations)
//!   is a 403.
//! - **The role.** The token must name a UZI role ([`zorgnet_trust::roles`]); a token
//!   without one reads no patient data, and `purpose=emergency` is refused to roles that may
//!   not break the glass. A category the role may not see is withheld exactly like a denied
//!   one, with reason class `role`, and is never put to the consent register. A request all
//!   of whose types the role may not see is refused before the patient is looked up.
//! - **The decision.** For each local Patient the request names, each data category the
//!   request can return (all of them for `$everything`, `_include` and `_revinclude`) is put
//!   to the hub's consent register (`POST /consent/decision`: requester = the token's URA,
//!   holder = this node, the token's role and purpose), after turning the patient's BSN (or
//!   zorgverificatienummer) into an exchange token for the referral index. Answers are cached
//!   in memory per (patient, requester URA, role, category, purpose) for
//!   [`AccessConfig::decision_ttl`]. When the hub cannot be reached and no cached answer is
//!   fresh, the request is refused with 503; nothing is served on a guess.
//! - **Refusals look alike.** A resource type is refused when a category all its resources
//!   belong to is denied, or every category it can belong to is. A request all of whose
//!   types are refused, a patient unknown here (or deleted, or named by an identifier that
//!   several people share) and a read of a Patient whose summary is denied all get the same
//!   403 ([`NOT_PERMITTED`]): a requester cannot tell "not here" from "not for you", and a
//!   refusal names a reason class, never the patient's choice (the hub's reason goes to the
//!   log only).
//! - **Narrowing.** A search of one type without `_include` or `_revinclude` is narrowed in
//!   the store rather than filtered after it: the layer hands the search handler a
//!   [`zorgnet_rest::constraint::SearchConstraint`], so the store returns only resources of
//!   the named Patients' compartments and of no other's, of at least one category and none
//!   withheld (a citizen's own data of any), which is exactly what the filter below keeps.
//!   The store keeps these facts of each resource beside it ([`PolicyFacts`]), so narrowing
//!   compares columns of the rows the search reads anyway, and a read by id is decided from
//!   the same facts without parsing the answer. Its pages are the store's, cut where the requester's part of the search is,
//!   uncounted, and their cursors sealed as below.
//!   When a decision for a Patient named by id is remembered for every category asked, the
//!   Patient is not read first: a deleted one answers a read with the one refusal and a
//!   search with what is left of its compartment, as it could within a remembered
//!   decision's lifetime anyway.
//! - **Filtering.** Otherwise the handler runs and its answer is filtered: an entry is kept
//!   only when every patient it belongs to is the named one and every category it belongs
//!   to is permitted; reference data without a patient is kept only when a kept entry refers
//!   to it or it to a kept entry (an include of a withheld match would betray that match). A
//!   Bundle gets one OperationOutcome notice, derived from the decisions alone: the
//!   categories this request could return that are withheld from this requester, each with
//!   its reason class. It is the same whether or not any withheld resource matched, and
//!   counts nothing.
//! - **Paging.** A page is filled with permitted entries: the layer reads the handler's
//!   pages on (each read asks for what is still missing, then twice as many rows, at most
//!   [`MAX_READS_PER_PAGE`] reads) until the page is full or the search has ended, and a
//!   full page looks on (within the same reads) for one more permitted match before it gets
//!   a link onward, so a page ends where the requester's part of the search does. Its `next` and
//!   `previous` links point past what it read, and their cursors are sealed (AES-256-GCM,
//!   a key per process, bound to the requester's URA): a store cursor carries the sort
//!   values of the row it continues from, which may be a withheld one. A cursor from a
//!   previous process is refused (400). Only a run of more withheld matches than those
//!   reads cover (about 3,000 with `_count=1`, 7,000 with `_count=20`) ends a page early
//!   with a `next` link. The cost is in the reading: measured (release build, SQLite,
//!   loopback) a filtered `_count=20` page took 0.3 ms with nothing withheld (0.16 ms for a
//!   local client), 2.4 ms behind 100 withheld matches, 18 ms behind 1,000 and 75 ms behind
//!   4,000.
//!   `_summary` and `_elements` are applied by this layer after the filter, so the filter
//!   always sees whole resources (a narrowed search leaves them to the handler). A read of
//!   `Patient/{id}` is checked on the parts of the answer the policy reads, the rest skipped
//!   unparsed.
//! - Every decision is a `tracing` event with the requester, role, category, purpose,
//!   outcome and reason; never a BSN or a patient id. A break-the-glass access that is served
//!   is marked: a WARN event naming the requester, the professional and the role (not the
//!   free-text reason, which may name the patient), and `zorgnet_emergency_accesses_total`
//!   at `/metrics`.
//!
//! What it is not: authentication of the professional (whether the token's role is the
//! professional's is the hub's to check when it issues the token), the audit log (NEN 7513
//! AuditEvents come with the audit issue), or the TLS handshake (`zorgnet_trust::tls`
//! verifies certificates; this layer only compares them with tokens). A node without a
//! hub ([`crate::router`]) has no keys to verify tokens with and no other organisations to
//! tell apart: the layer lets everything through there, as before.

use crate::AppState;
use crate::hub_client::{ConsentQuestion, HubClient, HubClientError};
use crate::network::Network;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use zorgnet_audit::AgentKind;
use zorgnet_fhir::categories::{CategorySet, DataCategory, access_categories_of, categories_of};
use zorgnet_fhir::identifiers::ZVN_SYSTEM;
use zorgnet_fhir::search::{
    Criterion, DEFAULT_PAGE_SIZE, MAX_CURSOR_BYTES, MAX_PAGE_SIZE, SearchRegistry, Summary,
    parse_search_query,
};
use zorgnet_fhir::{Issue, IssueCode, Severity};
use zorgnet_pseudonym::{PersonalId, Zvn};
use zorgnet_rest::constraint::{CursorCodec, SearchConstraint};
use zorgnet_rest::error::FhirError;
use zorgnet_store::{PolicyFacts, ReadOutcome, StoreError};
use zorgnet_trust::certificate::PeerIdentity;
use zorgnet_trust::roles::Role;
use zorgnet_trust::token::{self, AccessClaims, Purpose};

mod audit_events;
mod own_callers;
use crate::authn::Caller;
use own_callers::serve_oidc_caller;

/// How long a consent decision is reused when the operator sets nothing else.
pub const DEFAULT_DECISION_TTL: Duration = Duration::from_secs(30);
/// Most consent decisions kept in memory; a full cache first drops its stale answers, and
/// forgets everything if that is not enough (the hub is asked again: slower, never wrong).
pub const MAX_CACHED_DECISIONS: usize = 100_000;
/// Shortest time between two fetches of the hub's token keys, so that tokens naming
/// unknown key ids cannot make the node hammer the hub.
pub const KEY_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Most verified access tokens remembered (by the SHA-256 of their text) until they expire,
/// so that a token is checked with Ed25519 once rather than at every request over a
/// kept-alive connection. A full memory first drops its expired tokens, then everything.
pub const MAX_VERIFIED_TOKENS: usize = 10_000;
/// Largest answer the filter reads: a search page of `MAX_PAGE_SIZE` resources with its
/// included resources fits with room to spare.
pub const MAX_FILTERED_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Most local Patients one identifier may name before a request is refused (they must all
/// be the same person, several records of whom a node may hold).
pub const MAX_PATIENTS_PER_IDENTIFIER: usize = 10;
/// Most reads of the handler's pages the layer makes to fill one page with permitted
/// entries. The reads grow (what is missing, then twice the previous read, up to
/// `MAX_PAGE_SIZE` rows), so with `_count=1` they cover 1 + 2 + … + 1,000 rows.
pub const MAX_READS_PER_PAGE: usize = 12;

/// The one refusal for a patient this requester may not see, whatever the reason: unknown
/// here, nothing permitted, an opt-out, no basis. It names the reason class only.
pub const NOT_PERMITTED: &str = "not permitted for this requester (reason class: policy; this answer does not say whether \
     the patient is known here)";
/// The refusal of a request whose types the requester's role may not see.
pub const ROLE_NOT_PERMITTED: &str = "not permitted for this requester's role (reason class: role)";
const NO_ROLE: &str = "an access token without a professional's UZI role reads no patient data \
    (reason class: role)";
const NO_EMERGENCY: &str =
    "this role may not ask for emergency access (break-the-glass) (reason class: role)";
const NO_COUNTS: &str = "counts (_summary=count, _count=0) are not given to other \
    organisations: they would count resources withheld from them";

/// Resource types that belong to no patient and no category but that a patient's data
/// refers to; they may travel with the data (as `_include`d entries) and be chained into.
pub const REFERENCE_DATA_TYPES: [&str; 5] = [
    "Medication",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
];

/// Search parameters that name the patient of a search on any type but `Patient`, by the
/// patient's id.
const PATIENT_ID_PARAMS: [&str; 4] = ["patient", "subject", "patient:Patient", "subject:Patient"];
/// Search parameters that name the patient of a search on any type but `Patient`, by one of
/// the patient's identifiers.
const PATIENT_IDENTIFIER_PARAMS: [&str; 3] = [
    "patient.identifier",
    "subject.identifier",
    "subject:Patient.identifier",
];
/// The search parameters, on types other than `Patient`, that lead to the patient: any
/// other use of them (a modifier, another chain) is refused.
const PATIENT_PARAM_BASES: [&str; 2] = ["patient", "subject"];

/// How the node's access policy is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessConfig {
    /// How long a consent decision is reused before the hub is asked again; zero asks for
    /// every request. A citizen's change takes effect at this node within this time.
    pub decision_ttl: Duration,
}

impl Default for AccessConfig {
    fn default() -> AccessConfig {
        AccessConfig {
            decision_ttl: DEFAULT_DECISION_TTL,
        }
    }
}

/// The state of the access policy: the hub's token keys, the cached consent decisions and
/// the key that seals paging cursors.
pub struct AccessControl {
    config: AccessConfig,
    keys: HubKeys,
    decisions: DecisionCache,
    cursors: CursorSeal,
}

impl AccessControl {
    /// An empty policy state with `config`.
    pub fn new(config: AccessConfig) -> AccessControl {
        AccessControl {
            config,
            keys: HubKeys::default(),
            decisions: DecisionCache::new(config.decision_ttl),
            cursors: CursorSeal::new(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> AccessConfig {
        self.config
    }
}

/// Why a request of another organisation is not served.
#[derive(Debug, thiserror::Error)]
enum AccessError {
    /// No usable credentials: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// Known caller, not allowed: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is malformed: 400.
    #[error("{0}")]
    Invalid(String),
    /// The hub is needed and cannot be reached: 503.
    #[error("{0}")]
    Unavailable(String),
    /// The hub answered with an error: 502.
    #[error("{0}")]
    HubRefused(String),
    /// This node failed: 500.
    #[error("{0}")]
    Internal(String),
    /// The node's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<HubClientError> for AccessError {
    fn from(e: HubClientError) -> AccessError {
        if e.is_transient() {
            AccessError::Unavailable(format!(
                "the consent register cannot be asked, and no recent answer is cached: {e}"
            ))
        } else {
            AccessError::HubRefused(format!("the hub refused the consent question: {e}"))
        }
    }
}

impl AccessError {
    /// The refusal as an OperationOutcome; an internal failure is logged, not shown.
    fn into_fhir(self) -> FhirError {
        let (status, code, message) = match self {
            AccessError::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, IssueCode::Forbidden, m),
            AccessError::Forbidden(m) => (StatusCode::FORBIDDEN, IssueCode::Forbidden, m),
            AccessError::Invalid(m) => (StatusCode::BAD_REQUEST, IssueCode::Invalid, m),
            AccessError::Unavailable(m) => {
                (StatusCode::SERVICE_UNAVAILABLE, IssueCode::Exception, m)
            }
            AccessError::HubRefused(m) => (StatusCode::BAD_GATEWAY, IssueCode::Exception, m),
            AccessError::Internal(detail) => {
                tracing::error!(error = %zorgnet_rest::error::loggable(&detail), "access layer failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::Exception,
                    "the access check failed; see the server log".to_string(),
                )
            }
            AccessError::Store(e) => return FhirError::from(e),
        };
        FhirError::new(status, code, message)
    }
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        let unauthenticated = matches!(self, AccessError::Unauthenticated(_));
        let mut response = self.into_fhir().into_response();
        if unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

/// The layer: serves local clients and the node's own organisation as before, and applies
/// the policy of the module documentation to every other organisation.
pub(crate) async fn enforce(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let reads_log = crate::audit_api::is_log_path(request.uri().path());
    if let Some(caller) = request.extensions().get::<Caller>().cloned() {
        if reads_log {
            return audit_events::serve_oidc_caller(&state, caller, request, next).await;
        }
        return serve_oidc_caller(&state, caller, request, next).await;
    }
    let Some(network) = state.network.clone() else {
        if reads_log {
            return audit_events::serve_own_system(request, next).await;
        }
        return next.run(request).await;
    };
    let Some(authorization) = request.headers().get(header::AUTHORIZATION) else {
        if reads_log {
            return audit_events::serve_own_system(request, next).await;
        }
        return next.run(request).await;
    };
    let Some(token) = bearer(authorization) else {
        metrics::counter!("zorgnet_access_rejected_tokens_total").increment(1);
        return AccessError::Unauthenticated(
            "Authorization must be `Bearer <access token from the hub>`".into(),
        )
        .into_response();
    };
    let claims = match network
        .access()
        .keys
        .verify(&network.hub, &token, &state.identity.ura)
        .await
    {
        Ok(claims) => claims,
        Err(e) => {
            if matches!(e, AccessError::Unauthenticated(_)) {
                metrics::counter!("zorgnet_access_rejected_tokens_total").increment(1);
                tracing::warn!(error = %e, "refused an access token");
            }
            return e.into_response();
        }
    };
    note_claims(&request, &claims);
    if let Err(e) = check_peer(&state, &claims, request.extensions().get::<PeerIdentity>()) {
        metrics::counter!("zorgnet_access_rejected_tokens_total").increment(1);
        tracing::warn!(error = %e, requester = %claims.ura, "refused a token over the wrong connection");
        return e.into_response();
    }
    if reads_log {
        return audit_events::refuse_token(&claims, &state.identity.ura);
    }
    if claims.ura == state.identity.ura {
        return next.run(request).await;
    }
    match serve_other_organisation(&state, &network, &claims, request, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Notes the caller a verified token names, for the access log.
fn note_claims(request: &Request, claims: &AccessClaims) {
    crate::audit::note(request, |note| {
        let mut agent = crate::audit::agent(match claims.uzi {
            Some(_) => AgentKind::Professional,
            None => AgentKind::Organisation,
        });
        agent.id = claims.uzi.clone();
        agent.role = claims.role.clone();
        agent.organisation = Some(claims.ura.clone());
        note.agent = agent;
        note.purpose = Some(claims.purpose.code().to_string());
        note.reason = claims.reason.clone();
    });
}

/// Notes the Patients a request is about, for the access log.
pub(crate) fn note_patients(request: &Request, patients: impl IntoIterator<Item = String>) {
    let patients: Vec<String> = patients.into_iter().collect();
    crate::audit::note(request, |note| note.patients = patients);
}

/// A token is honoured only over the connection of the organisation it names: bound tokens
/// over the certificate they are bound to (RFC 8705), and, unless the node speaks plain HTTP
/// for development, every token over a client certificate naming its URA.
fn check_peer(
    state: &AppState,
    claims: &AccessClaims,
    peer: Option<&PeerIdentity>,
) -> Result<(), AccessError> {
    token::check_binding(claims, peer.map(|p| p.thumbprint.as_str()))
        .map_err(|e| AccessError::Unauthenticated(format!("access token refused: {e}")))?;
    if !state.require_peer_certificate {
        return Ok(());
    }
    match peer {
        None => Err(AccessError::Unauthenticated(
            "an access token is accepted only over mutual TLS with its organisation's certificate"
                .into(),
        )),
        Some(peer) if peer.ura.as_deref() != Some(claims.ura.as_str()) => {
            Err(AccessError::Unauthenticated(
                "the access token and the client certificate name different organisations".into(),
            ))
        }
        Some(_) => Ok(()),
    }
}

fn bearer(value: &HeaderValue) -> Option<String> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

async fn serve_other_organisation(
    state: &AppState,
    network: &Network,
    claims: &AccessClaims,
    request: Request,
    next: Next,
) -> Result<Response, AccessError> {
    let (request, pairs) = with_search_pairs(request).await?;
    let refused = |e: AccessError, method: &Method| {
        tracing::info!(
            requester = %claims.ura,
            method = %method,
            "refused a request of another organisation that is not a read of one patient's data"
        );
        e
    };
    let scope = match classify(
        Requester::Organisation,
        request.method(),
        request.uri().path(),
        &pairs,
    ) {
        Ok(Target::Open) => return Ok(next.run(request).await),
        Ok(Target::Patient(scope)) => scope,
        Err(e) => return Err(refused(e, request.method())),
    };
    note_patients(&request, scope.named_id().map(String::from));
    let role = requester_role(claims)?;
    let categories = scope.categories();
    let by_role: BTreeMap<DataCategory, Decision> = categories
        .iter()
        .filter(|c| !role.may_see(c.code()))
        .map(|&c| (c, Decision::Deny(ReasonClass::Role)))
        .collect();
    let role_alone: BTreeMap<DataCategory, Decision> = DataCategory::ALL
        .into_iter()
        .map(|c| (c, by_role.get(&c).copied().unwrap_or(Decision::Permit)))
        .collect();
    if scope.types.iter().all(|t| type_refused(t, &role_alone)) {
        return Err(AccessError::Forbidden(ROLE_NOT_PERMITTED.into()));
    }
    if scope.kind == Kind::Search {
        check_search(&state.store.registry(), &scope.types[0], &pairs)
            .map_err(|e| refused(e, request.method()))?;
    }
    if scope.kind != Kind::Read && refuses_counts(&pairs) {
        return Err(AccessError::Forbidden(NO_COUNTS.into()));
    }
    let asked: BTreeSet<DataCategory> = categories
        .iter()
        .filter(|c| !by_role.contains_key(c))
        .copied()
        .collect();
    let (allowed, (mut decisions, bases)) =
        match remembered(network, claims, &scope.patient, &asked) {
            Some(remembered) => remembered,
            None => {
                let patients = local_patients(state, &scope.patient).await?;
                if patients.is_empty() {
                    return Err(AccessError::Forbidden(NOT_PERMITTED.into()));
                }
                let decisions =
                    decide(network, &state.identity.ura, claims, &patients, &asked).await?;
                let allowed = patients.into_iter().map(|(id, _)| id).collect();
                (allowed, decisions)
            }
        };
    note_patients(&request, allowed.iter().cloned());
    crate::audit::note(&request, |note| note.bases = bases.into_iter().collect());
    let (mut request, mut pairs) = (request, pairs);
    by_local_ids(&mut request, &mut pairs, &allowed)?;
    decisions.extend(by_role);
    if scope.types.iter().all(|t| type_refused(t, &decisions)) {
        return Err(AccessError::Forbidden(NOT_PERMITTED.into()));
    }
    if claims.purpose == Purpose::Emergency {
        metrics::counter!("zorgnet_emergency_accesses_total").increment(1);
        tracing::warn!(
            requester = %claims.ura,
            professional = claims.uzi.as_deref().unwrap_or("-"),
            role = claims.role.as_deref().unwrap_or("-"),
            "break-the-glass access served"
        );
    }
    let registry = state.store.registry();
    let policy = Policy {
        registry: &registry,
        allowed,
        decisions,
        notice: categories,
        every_category: false,
    };
    if scope.kind == Kind::Read {
        let response = next.run(request).await;
        return read_response(response, &policy, scope.named_id()).await;
    }
    let seal = &network.access().cursors;
    serve_search(request, pairs, &scope, &policy, seal, &claims.ura, next).await
}

/// The requester's role, when its token names one that may ask what the token asks.
fn requester_role(claims: &AccessClaims) -> Result<Role, AccessError> {
    let role = claims
        .role
        .as_deref()
        .and_then(Role::parse)
        .ok_or_else(|| AccessError::Forbidden(NO_ROLE.into()))?;
    if claims.purpose == Purpose::Emergency && !role.may_ask_emergency() {
        return Err(AccessError::Forbidden(NO_EMERGENCY.into()));
    }
    Ok(role)
}

/// Whether a search or `$everything` asks for a count (`_summary=count`, `_count=0`).
fn refuses_counts(pairs: &[(String, String)]) -> bool {
    pairs.iter().any(|(name, value)| {
        (name == "_summary" && value == "count")
            || (name == "_count" && value.trim().parse::<usize>().is_ok_and(|c| c == 0))
    })
}

/// Refuses chains into anything but reference data: a chain's condition is evaluated on
/// resources the requester may not see (`DiagnosticReport?result.code=…`), so its answer
/// would tell their values. The patient's own chain (`patient.identifier`) was checked by
/// [`classify`].
fn check_search(
    registry: &SearchRegistry,
    resource_type: &str,
    pairs: &[(String, String)],
) -> Result<(), AccessError> {
    let criteria_pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| name != "_cursor")
        .cloned()
        .collect();
    let query = parse_search_query(registry, Some(resource_type), &criteria_pairs)
        .map_err(|issue| AccessError::Invalid(issue.diagnostics))?;
    let names_patient = |criterion: &Criterion| {
        matches!(criterion, Criterion::Chain(chain)
            if PATIENT_PARAM_BASES.contains(&chain.reference.code.as_str()))
    };
    for criterion in query.criteria.iter().filter(|c| !names_patient(c)) {
        if !chains_into_reference_data(criterion) {
            return Err(AccessError::Forbidden(
                "other organisations may chain searches only into reference data (Medication, \
                 Organization, Practitioner, PractitionerRole, Location), and not in reverse \
                 (_has)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Whether every chain in `criterion` leads only to reference data (true without chains).
/// A reverse chain (`_has`) never does: its condition is on the resources that refer to the
/// searched ones, which may be anyone's.
fn chains_into_reference_data(criterion: &Criterion) -> bool {
    match criterion {
        Criterion::Chain(chain) => chain.targets.iter().all(|(target, inner)| {
            REFERENCE_DATA_TYPES.contains(&target.as_str()) && chains_into_reference_data(inner)
        }),
        Criterion::Has(_) => false,
        Criterion::Id(_)
        | Criterion::LastUpdated(_)
        | Criterion::Param { .. }
        | Criterion::Missing { .. } => true,
    }
}

/// Reads the parameters of a request as its handler will: the query string's, then a
/// `POST …/_search` body's form parameters or a `POST …/$operation` body's `Parameters`
/// (putting the body back for the handler).
async fn with_search_pairs(
    request: Request,
) -> Result<(Request, Vec<(String, String)>), AccessError> {
    let mut pairs = zorgnet_rest::interactions::query_pairs(request.uri().query());
    if request.method() != Method::POST {
        return Ok((request, pairs));
    }
    let last_segment = request.uri().path().rsplit('/').next().unwrap_or("");
    let search = last_segment == "_search";
    let operation = last_segment.starts_with('$') || last_segment.starts_with("%24");
    if !(search || operation) {
        return Ok((request, pairs));
    }
    let limit = if search {
        zorgnet_rest::interactions::SEARCH_BODY_LIMIT_BYTES
    } else {
        zorgnet_rest::operation::OPERATION_BODY_LIMIT_BYTES
    };
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AccessError::Invalid("request body too large or unreadable".into()))?;
    if search {
        pairs.extend(form_urlencoded::parse(&bytes).into_owned());
    } else {
        let parameters = zorgnet_rest::operation::body_parameters(&bytes).map_err(|e| {
            AccessError::Invalid(
                e.issues
                    .iter()
                    .map(|i| i.diagnostics.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        pairs.extend(parameters);
    }
    Ok((Request::from_parts(parts, Body::from(bytes)), pairs))
}
/// What a request of another organisation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Nothing about patients.
    Open,
    /// One patient's data.
    Patient(PatientScope),
}

/// How a request reads a patient's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Patient/{id}`: one resource.
    Read,
    /// A search of one type: a searchset of pages.
    Search,
    /// `Patient/{id}/$everything`: a searchset of pages.
    Everything,
}

/// The patient a request names, and what it can return about them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PatientScope {
    /// Who.
    patient: PatientRef,
    /// The resource types asked for directly.
    types: Vec<String>,
    /// Whether the answer may hold resources of other types too (`$everything`,
    /// `_include`, `_revinclude`), so that every category is put to the consent register.
    wide: bool,
    kind: Kind,
}

impl PatientScope {
    /// The Patient's id, when the request named it by id.
    fn named_id(&self) -> Option<&str> {
        match &self.patient {
            PatientRef::Id(id) => Some(id),
            PatientRef::Identifier(_) => None,
        }
    }

    /// The categories the answer can hold: those put to the consent register and named
    /// in the notice when withheld.
    fn categories(&self) -> BTreeSet<DataCategory> {
        if self.wide {
            return DataCategory::ALL.into_iter().collect();
        }
        self.types
            .iter()
            .flat_map(|t| possible_categories(t))
            .collect()
    }
}

/// How a request names its patient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatientRef {
    /// By the local Patient's id.
    Id(String),
    /// By an identifier (`system|value`, both present), as a token search parameter takes it.
    Identifier(String),
}

const WRITE_REFUSED: &str = "other organisations may not change data at this node";
const ONE_PATIENT: &str = "a request from another organisation or a citizen must name exactly one patient, \
    once: patient, subject (by id) or patient.identifier, subject.identifier (system|value), \
    on Patient _id or identifier; without modifiers or lists, and no other parameter on the \
    patient";

/// Whose request [`classify`] sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requester {
    /// Another organisation: only the types of the shared data categories.
    Organisation,
    /// A citizen about themself: any type of their own data.
    Citizen,
}

/// Sorts a request of another organisation or a citizen: open, one patient's data, or
/// refused.
fn classify(
    requester: Requester,
    method: &Method,
    path: &str,
    pairs: &[(String, String)],
) -> Result<Target, AccessError> {
    let not_available = || {
        AccessError::Forbidden(format!(
            "{method} {path} is not available to other organisations; read one patient's data \
             by searching with patient=…, or read Patient/{{id}} or Patient/{{id}}/$everything"
        ))
    };
    let segments: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
        })
        .collect::<Result<_, _>>()
        .map_err(|_| AccessError::Invalid("the path is not UTF-8".into()))?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if *method == Method::POST
        && let ["fhir", resource_type, "_search"] = segments.as_slice()
    {
        return search(requester, resource_type, pairs);
    }
    if matches!(*method, Method::GET | Method::POST)
        && let ["fhir", "Patient", id, "$everything"] = segments.as_slice()
    {
        return everything(id, pairs);
    }
    let operation = segments.last().is_some_and(|s| s.starts_with('$'));
    if *method == Method::POST && operation {
        return Err(not_available());
    }
    if matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Err(AccessError::Forbidden(WRITE_REFUSED.into()));
    }
    if *method != Method::GET {
        return Err(not_available());
    }
    match segments.as_slice() {
        ["health"] | ["fhir", "metadata"] => Ok(Target::Open),
        // A type-level operation (`Patient/$export`), not a read of an id.
        ["fhir", _, operation] if operation.starts_with('$') => Err(not_available()),
        ["fhir", "Patient", id] => Ok(Target::Patient(PatientScope {
            patient: PatientRef::Id(valid_id(id)?),
            types: vec!["Patient".into()],
            wide: false,
            kind: Kind::Read,
        })),
        ["fhir", resource_type] if !resource_type.starts_with('$') => {
            search(requester, resource_type, pairs)
        }
        _ => Err(not_available()),
    }
}

/// `Patient/{id}/$everything`: the patient of the path (whatever the parameters say), the
/// types of every `_type` parameter or else every shareable type.
fn everything(id: &str, pairs: &[(String, String)]) -> Result<Target, AccessError> {
    // Each type once, however often a request repeats it: the decision work per request
    // is bounded by the number of resource types, not by the request's size.
    let mut types: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name == "_type")
        .flat_map(|(_, list)| list.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(String::from)
        .collect();
    if types.is_empty() {
        types = shareable_types();
    }
    Ok(Target::Patient(PatientScope {
        patient: PatientRef::Id(valid_id(id)?),
        types,
        wide: true,
        kind: Kind::Everything,
    }))
}

fn valid_id(id: &str) -> Result<String, AccessError> {
    if zorgnet_fhir::validate::is_valid_id(id) {
        Ok(id.to_string())
    } else {
        Err(AccessError::Invalid(format!(
            "'{id}' is not a valid FHIR id"
        )))
    }
}

/// A search of another organisation: a shareable type and exactly one patient, named once
/// and exactly.
fn search(
    requester: Requester,
    resource_type: &str,
    pairs: &[(String, String)],
) -> Result<Target, AccessError> {
    if requester == Requester::Organisation && possible_categories(resource_type).is_empty() {
        return Err(AccessError::Forbidden(format!(
            "{resource_type} belongs to no data category that is shared with other organisations"
        )));
    }
    let one_patient = || AccessError::Forbidden(ONE_PATIENT.into());
    let mut named = Vec::new();
    for (name, value) in pairs {
        let base = name.split([':', '.']).next().unwrap_or("");
        let (by_id, by_identifier, on_patient) = if resource_type == "Patient" {
            (
                name == "_id",
                name == "identifier",
                ["_id", "identifier"].contains(&base),
            )
        } else {
            (
                PATIENT_ID_PARAMS.contains(&name.as_str()),
                PATIENT_IDENTIFIER_PARAMS.contains(&name.as_str()),
                PATIENT_PARAM_BASES.contains(&base),
            )
        };
        if !(by_id || by_identifier) {
            if on_patient {
                return Err(one_patient());
            }
            continue;
        }
        if value.contains([',', '\\']) {
            return Err(one_patient());
        }
        named.push(if by_id {
            PatientRef::Id(referenced_patient(value).ok_or_else(one_patient)?)
        } else {
            PatientRef::Identifier(complete_identifier(value).ok_or_else(one_patient)?)
        });
    }
    let [patient] = <[PatientRef; 1]>::try_from(named).map_err(|_| one_patient())?;
    let wide = pairs
        .iter()
        .any(|(name, _)| name.starts_with("_include") || name.starts_with("_revinclude"));
    Ok(Target::Patient(PatientScope {
        patient,
        types: vec![resource_type.to_string()],
        wide,
        kind: Kind::Search,
    }))
}

/// An identifier search value that names one identifier exactly: `system|value`, both
/// non-empty.
fn complete_identifier(value: &str) -> Option<String> {
    let (system, code) = value.split_once('|')?;
    (!system.trim().is_empty() && !code.trim().is_empty() && !code.contains('|'))
        .then(|| value.to_string())
}

/// The Patient id in a reference search value: `123`, `Patient/123` or a URL ending so.
fn referenced_patient(value: &str) -> Option<String> {
    let id = match value.rfind("Patient/") {
        Some(at) => &value[at + "Patient/".len()..],
        None if !value.contains('/') => value,
        None => return None,
    };
    zorgnet_fhir::validate::is_valid_id(id).then(|| id.to_string())
}

/// Every resource type another organisation may ask for.
fn shareable_types() -> Vec<String> {
    let mut types: Vec<String> = DataCategory::ALL
        .iter()
        .flat_map(|c| c.resource_types().iter().map(|t| t.to_string()))
        .chain(["Patient".to_string()])
        .collect();
    types.sort();
    types.dedup();
    types
}

/// The categories a resource of `resource_type` can belong to.
fn possible_categories(resource_type: &str) -> Vec<DataCategory> {
    if resource_type == "Patient" {
        return vec![DataCategory::PatientSummary];
    }
    DataCategory::ALL
        .into_iter()
        .filter(|c| c.resource_types().contains(&resource_type))
        .collect()
}

/// The categories every resource of `resource_type` belongs to, whatever its content.
fn definite_categories(resource_type: &str) -> Vec<DataCategory> {
    if resource_type == "Patient" {
        return vec![DataCategory::PatientSummary];
    }
    categories_of(&json!({"resourceType": resource_type}))
}

pub use zorgnet_hub_client::Verdict;

/// Why a category is withheld, as far as a requester is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReasonClass {
    /// The consent register said no: an opt-out, a refusal, no basis. Which one is the
    /// patient's business and is not told.
    Policy,
    /// The requester's role may not see the category.
    Role,
}

impl ReasonClass {
    fn code(self) -> &'static str {
        match self {
            ReasonClass::Policy => "policy",
            ReasonClass::Role => "role",
        }
    }
}

/// What the policy decided for one category of this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Permit,
    Deny(ReasonClass),
}

fn permitted(decisions: &BTreeMap<DataCategory, Decision>, category: DataCategory) -> bool {
    decisions.get(&category) == Some(&Decision::Permit)
}

/// Whether nothing of `resource_type` may be served under `decisions`.
fn type_refused(resource_type: &str, decisions: &BTreeMap<DataCategory, Decision>) -> bool {
    definite_categories(resource_type)
        .into_iter()
        .any(|c| !permitted(decisions, c))
        || !possible_categories(resource_type)
            .into_iter()
            .any(|c| permitted(decisions, c))
}

/// The local Patients a request names, with their stored JSON: none when the patient is
/// unknown, deleted, or the identifier names Patients of more than one person (the caller
/// answers all of these alike).
async fn local_patients(
    state: &AppState,
    patient: &PatientRef,
) -> Result<Vec<(String, Value)>, AccessError> {
    let stored = match patient {
        PatientRef::Id(id) => match state.store.read("Patient", id).await? {
            ReadOutcome::Found(stored) => vec![stored],
            _ => Vec::new(),
        },
        PatientRef::Identifier(identifier) if zvn_of(identifier).is_some() => {
            return patients_of_zvn(state, zvn_of(identifier).into_iter().flatten()).await;
        }
        PatientRef::Identifier(identifier) => {
            let pairs = [
                ("identifier".to_string(), identifier.clone()),
                (
                    "_count".to_string(),
                    (MAX_PATIENTS_PER_IDENTIFIER + 1).to_string(),
                ),
            ];
            let query = parse_search_query(&state.store.registry(), Some("Patient"), &pairs)
                .map_err(|issue| AccessError::Invalid(issue.diagnostics))?;
            let found = state.store.search(query).await?.matches;
            if found.len() > MAX_PATIENTS_PER_IDENTIFIER {
                return Ok(Vec::new());
            }
            found
        }
    };
    let patients: Vec<(String, Value)> = stored
        .into_iter()
        .map(|s| {
            serde_json::from_str(&s.json)
                .map(|json| (s.id.clone(), json))
                .map_err(|e| {
                    AccessError::Internal(format!("stored Patient/{} is not JSON: {e}", s.id))
                })
        })
        .collect::<Result<_, _>>()?;
    if let [(_, first), rest @ ..] = patients.as_slice()
        && !rest.is_empty()
    {
        let person = zorgnet_store::PersonIdentity::of_patient(first);
        let one_person = person.is_some()
            && rest
                .iter()
                .all(|(_, p)| zorgnet_store::PersonIdentity::of_patient(p) == person);
        if !one_person {
            return Ok(Vec::new());
        }
    }
    Ok(patients)
}

/// The zorgverificatienummer an identifier (`system|value`) names, when its system is
/// [`ZVN_SYSTEM`]: `Some(None)` for a value that is not one (it names nobody).
fn zvn_of(identifier: &str) -> Option<Option<Zvn>> {
    let (system, value) = identifier.split_once('|')?;
    (system == ZVN_SYSTEM).then(|| Zvn::parse(value).ok())
}

/// The local Patients whose current identity is the person with `zvn`: the outbox's
/// candidates ([`crate::outbox::patients_of_zvn`]), each confirmed with the hub from the
/// Patient's sédula number and birth date as they are now. None without a hub.
async fn patients_of_zvn(
    state: &AppState,
    zvn: impl IntoIterator<Item = Zvn>,
) -> Result<Vec<(String, Value)>, AccessError> {
    let (Some(zvn), Some(network)) = (zvn.into_iter().next(), &state.network) else {
        return Ok(Vec::new());
    };
    let person = PersonalId::Zvn(zvn.clone());
    let candidates =
        crate::outbox::patients_of_zvn(&state.store, &zvn, MAX_PATIENTS_PER_IDENTIFIER + 1).await?;
    if candidates.len() > MAX_PATIENTS_PER_IDENTIFIER {
        return Ok(Vec::new());
    }
    let mut patients = Vec::new();
    for id in candidates {
        let ReadOutcome::Found(stored) = state.store.read("Patient", &id).await? else {
            continue;
        };
        let json: Value = serde_json::from_str(&stored.json)
            .map_err(|e| AccessError::Internal(format!("stored Patient/{id} is not JSON: {e}")))?;
        let Some(identity @ zorgnet_store::PersonIdentity::Sedula { .. }) =
            zorgnet_store::PersonIdentity::of_patient(&json)
        else {
            continue;
        };
        if crate::hub_client::person_of(&network.hub, &identity)
            .await?
            .as_ref()
            == Some(&person)
        {
            patients.push((id, json));
        }
    }
    Ok(patients)
}

/// A search that names its patient by zorgverificatienummer, asked of the handler by the
/// local Patients found for it (`allowed`): the store knows the Patients, not the number.
/// `identifier=` on `Patient` becomes `_id=`, `patient.identifier=` (and the other
/// [`PATIENT_IDENTIFIER_PARAMS`]) the reference parameter by id, all in the query (a
/// `POST _search` loses its body to it). Other searches are left as they are.
fn by_local_ids(
    request: &mut Request,
    pairs: &mut [(String, String)],
    allowed: &BTreeSet<String>,
) -> Result<(), AccessError> {
    let mut changed = false;
    for (name, value) in pairs.iter_mut() {
        if zvn_of(value).is_none() {
            continue;
        }
        let ids = allowed.iter();
        if name == "identifier" {
            *name = "_id".into();
            *value = ids.cloned().collect::<Vec<_>>().join(",");
        } else if let Some(base) = PATIENT_IDENTIFIER_PARAMS
            .contains(&name.as_str())
            .then(|| name.strip_suffix(".identifier"))
            .flatten()
        {
            *name = base.to_string();
            *value = ids
                .map(|id| format!("Patient/{id}"))
                .collect::<Vec<_>>()
                .join(",");
        } else {
            continue;
        }
        changed = true;
    }
    if !changed {
        return Ok(());
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    let uri = format!("{}?{query}", request.uri().path())
        .parse()
        .map_err(|e| AccessError::Internal(format!("rewritten search: {e}")))?;
    *request.uri_mut() = uri;
    if request.method() == Method::POST {
        // `POST _search`: the body's parameters are among `pairs`, now all in the query.
        *request.body_mut() = Body::empty();
        request.headers_mut().remove(header::CONTENT_LENGTH);
    }
    Ok(())
}

/// The decisions for a patient named by id, when every one asked is still remembered: then
/// the Patient is not read at all (a Patient deleted since answers the read with the one
/// refusal, and a search with what is left of its compartment, as within the decisions'
/// lifetime anyway).
fn remembered(
    network: &Network,
    claims: &AccessClaims,
    patient: &PatientRef,
    categories: &BTreeSet<DataCategory>,
) -> Option<(BTreeSet<String>, Decided)> {
    let PatientRef::Id(id) = patient else {
        return None;
    };
    let cache = &network.access().decisions;
    let now = Instant::now();
    let answers: Vec<(DecisionKey, Verdict)> = categories
        .iter()
        .map(|&category| {
            let key = DecisionKey::of(claims, id, category);
            cache.get(&key, now).map(|verdict| (key, verdict))
        })
        .collect::<Option<_>>()?;
    let mut combined = Decided::default();
    for (key, verdict) in answers {
        trace_decision(&key, &verdict, true);
        combine(&mut combined, key.category, &verdict);
    }
    Some((BTreeSet::from([id.clone()]), combined))
}

/// Asks (or remembers) the consent register's answer for every patient and category;
/// a category is permitted only when it is for every patient.
async fn decide(
    network: &Network,
    holder_ura: &str,
    claims: &AccessClaims,
    patients: &[(String, Value)],
    categories: &BTreeSet<DataCategory>,
) -> Result<Decided, AccessError> {
    let cache = &network.access().decisions;
    let mut combined = Decided::default();
    for (patient_id, patient) in patients {
        let mut missing = Vec::new();
        let now = Instant::now();
        for &category in categories {
            let key = DecisionKey::of(claims, patient_id, category);
            match cache.get(&key, now) {
                Some(verdict) => {
                    trace_decision(&key, &verdict, true);
                    combine(&mut combined, category, &verdict);
                }
                None => missing.push(key),
            }
        }
        if missing.is_empty() {
            continue;
        }
        let Some(person) = crate::hub_client::person_of_patient(&network.hub, patient).await?
        else {
            for key in missing {
                let verdict = Verdict {
                    permit: false,
                    reason: "the patient has neither a BSN nor a sédula number with a birth \
                             date, so the consent register cannot be asked"
                        .into(),
                };
                trace_decision(&key, &verdict, false);
                combine(&mut combined, key.category, &verdict);
            }
            continue;
        };
        let exchange = network.hub.referral_index_token(&person).await?;
        let mut asked = tokio::task::JoinSet::new();
        for key in missing {
            let (hub, exchange, holder) = (
                network.hub.clone(),
                exchange.clone(),
                holder_ura.to_string(),
            );
            asked.spawn(async move {
                let answer = hub
                    .consent_decision(
                        &exchange,
                        &ConsentQuestion {
                            requester_ura: &key.requester,
                            holder_ura: &holder,
                            role: key.role.as_deref(),
                            category: key.category,
                            purpose: key.purpose,
                        },
                    )
                    .await;
                (key, answer)
            });
        }
        for (key, answer) in asked.join_all().await {
            let verdict = answer?;
            trace_decision(&key, &verdict, false);
            combine(&mut combined, key.category, &verdict);
            cache.put(key, verdict, Instant::now());
        }
    }
    Ok(combined)
}

/// The decisions per category, and the bases (the consent register's reasons) of the
/// permits among them.
type Decided = (BTreeMap<DataCategory, Decision>, BTreeSet<String>);

/// Adds one patient's answer for `category`: a denial for any patient denies.
fn combine(combined: &mut Decided, category: DataCategory, verdict: &Verdict) {
    let (combined, bases) = (&mut combined.0, &mut combined.1);
    let decision = if verdict.permit {
        bases.insert(verdict.reason.clone());
        Decision::Permit
    } else {
        Decision::Deny(ReasonClass::Policy)
    };
    if combined.get(&category) != Some(&Decision::Deny(ReasonClass::Policy)) {
        combined.insert(category, decision);
    }
}

fn trace_decision(key: &DecisionKey, verdict: &Verdict, cached: bool) {
    let decision = if verdict.permit { "permit" } else { "deny" };
    metrics::counter!("zorgnet_access_decisions_total", "decision" => decision).increment(1);
    // A decision the hub made is logged once; its reuses from the cache only at debug, or
    // every read of another organisation would add a line.
    macro_rules! decision_event {
        ($level:expr) => {
            tracing::event!(
                $level,
                requester = %key.requester,
                role = key.role.as_deref().unwrap_or("-"),
                category = %key.category,
                purpose = key.purpose.code(),
                decision,
                cached,
                reason = %verdict.reason,
                "consent decision"
            )
        };
    }
    if cached {
        decision_event!(tracing::Level::DEBUG);
    } else {
        decision_event!(tracing::Level::INFO);
    }
}

/// What one request of another organisation may be given.
struct Policy<'a> {
    registry: &'a SearchRegistry,
    /// The local Patients the request named.
    allowed: BTreeSet<String>,
    /// Per category: permitted, or withheld and why.
    decisions: BTreeMap<DataCategory, Decision>,
    /// The categories the request can return, named in the notice when withheld.
    notice: BTreeSet<DataCategory>,
    /// Whether every resource of the allowed patients may be shared, whatever its
    /// category (a citizen's own data).
    every_category: bool,
}

impl Policy<'_> {
    /// Whether one resource may go to the requester: every patient it belongs to is one the
    /// request named and every category it belongs to is permitted. Resources without a
    /// patient are for [`Policy::reference_data`]; anything that cannot be placed may not.
    fn may_share(&self, resource: &Value) -> bool {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let patients: Vec<String> = if resource_type == "Patient" {
            resource
                .get("id")
                .and_then(Value::as_str)
                .map(String::from)
                .into_iter()
                .collect()
        } else {
            self.registry.patient_compartments(resource)
        };
        self.shares(&patients, access_categories_of(resource))
    }

    /// [`Policy::may_share`] of a resource in the compartments of `patients` (for a Patient,
    /// its own id only) and of `categories`.
    fn shares(&self, patients: &[String], categories: CategorySet) -> bool {
        if patients.is_empty() || !patients.iter().all(|p| self.allowed.contains(p)) {
            return false;
        }
        self.every_category
            || (!categories.is_empty() && categories.iter().all(|c| permitted(&self.decisions, c)))
    }

    /// Whether `resource` is reference data that may travel with permitted data.
    fn reference_data(&self, resource: &Value) -> bool {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        REFERENCE_DATA_TYPES.contains(&resource_type)
            && self.registry.patient_compartments(resource).is_empty()
    }

    /// The notice of a Bundle: the categories this request could return that are withheld
    /// from this requester, with their reason classes. It depends on the decisions only,
    /// never on what the search found.
    fn notice(&self) -> Option<Issue> {
        let withheld: Vec<String> = self
            .notice
            .iter()
            .filter_map(|c| match self.decisions.get(c) {
                Some(Decision::Permit) => None,
                Some(Decision::Deny(class)) => Some(format!("{c} ({})", class.code())),
                None => Some(format!("{c} ({})", ReasonClass::Policy.code())),
            })
            .collect();
        (!withheld.is_empty()).then(|| Issue {
            severity: Severity::Information,
            ..Issue::error(
                IssueCode::Suppressed,
                format!(
                    "not shared with this requester, whatever this search matched: {}",
                    withheld.join(", ")
                ),
            )
        })
    }

    /// [`Policy::notice`] as a Bundle's outcome entry.
    fn notice_entry(&self) -> Option<Value> {
        self.notice().map(|issue| {
            json!({
                "resource": zorgnet_fhir::operation_outcome(&[issue]),
                "search": {"mode": "outcome"}
            })
        })
    }
}

/// A read of one Patient (`read_id`, when the request named it by id): served when the
/// requester may see it, else the one refusal. The store's [`PolicyFacts`] on the answer
/// decide without parsing it; an answer without them is refused.
async fn read_response(
    response: Response,
    policy: &Policy<'_>,
    read_id: Option<&str>,
) -> Result<Response, AccessError> {
    // A 304 of a conditional read is decided as the read itself (it carries the same facts),
    // so that it tells nothing the read would not.
    if !(response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED) {
        return Err(AccessError::Forbidden(NOT_PERMITTED.into()));
    }
    let (Some(facts), Some(id)) = (response.extensions().get::<PolicyFacts>(), read_id) else {
        return Err(AccessError::Internal(
            "a read's answer came without the store's policy facts".into(),
        ));
    };
    // A Patient's compartments are its own and those of the Patients it links to; the
    // policy places it by its own id.
    let own = [id.to_string()];
    if facts.patients.iter().any(|p| p == id) && policy.shares(&own, facts.categories) {
        Ok(response)
    } else {
        Err(AccessError::Forbidden(NOT_PERMITTED.into()))
    }
}

/// Longest sealed cursor accepted, in bytes: the base64 of a nonce, a store cursor of
/// `MAX_CURSOR_BYTES` and a tag.
const MAX_SEALED_CURSOR_BYTES: usize = (MAX_CURSOR_BYTES + NONCE_BYTES + TAG_BYTES) * 4 / 3 + 4;
/// AES-GCM's nonce and tag, in bytes.
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Seals the paging cursors given to other organisations, so that a link tells nothing of
/// the rows it continues from and only this node process can read it back.
#[derive(Clone)]
struct CursorSeal {
    cipher: Arc<Aes256Gcm>,
}

impl CursorSeal {
    fn new() -> CursorSeal {
        CursorSeal {
            cipher: Arc::new(Aes256Gcm::new(&Aes256Gcm::generate_key(OsRng))),
        }
    }

    /// `cursor` sealed for `requester` (the URA, as associated data).
    fn seal(&self, cursor: &str, requester: &str) -> Result<String, AccessError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: cursor.as_bytes(),
                    aad: requester.as_bytes(),
                },
            )
            .map_err(|_| AccessError::Internal("sealing a paging cursor failed".into()))?;
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The store's cursor in `sealed`, if this process sealed it for `requester`.
    fn open(&self, sealed: &str, requester: &str) -> Result<String, AccessError> {
        let invalid = || {
            AccessError::Invalid(
                "invalid paging cursor: a cursor holds only for the organisation it was given \
                 to, until the node restarts"
                    .into(),
            )
        };
        if sealed.len() > MAX_SEALED_CURSOR_BYTES {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| invalid())?;
        if bytes.len() < NONCE_BYTES + TAG_BYTES {
            return Err(invalid());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| invalid())?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: requester.as_bytes(),
                },
            )
            .map_err(|_| invalid())?;
        String::from_utf8(plain).map_err(|_| invalid())
    }
}

/// The sealed cursors of one requester's narrowed searches, for the search handler.
struct RequesterCursors {
    seal: CursorSeal,
    requester: String,
}

impl CursorCodec for RequesterCursors {
    fn seal(&self, cursor: &str) -> Result<String, FhirError> {
        self.seal
            .seal(cursor, &self.requester)
            .map_err(AccessError::into_fhir)
    }

    fn open(&self, sealed: &str) -> Result<String, FhirError> {
        self.seal
            .open(sealed, &self.requester)
            .map_err(AccessError::into_fhir)
    }
}

/// Serves a search or `$everything` of `scope` under `policy`: as the store's own search,
/// narrowed to what the requester may see, when the policy can be said as a search (see
/// [`narrowing`]); else page by page through the filter ([`serve_pages`]).
async fn serve_search(
    mut request: Request,
    pairs: Vec<(String, String)>,
    scope: &PatientScope,
    policy: &Policy<'_>,
    seal: &CursorSeal,
    requester: &str,
    next: Next,
) -> Result<Response, AccessError> {
    let Some(categories) = narrowing(scope, policy) else {
        return serve_pages(request, pairs, scope, policy, seal, requester, next).await;
    };
    request.extensions_mut().insert(SearchConstraint {
        compartments_of: policy.allowed.iter().cloned().collect(),
        categories,
        notices: policy.notice().into_iter().collect(),
        cursors: Arc::new(RequesterCursors {
            seal: seal.clone(),
            requester: requester.to_string(),
        }),
    });
    Ok(next.run(request).await)
}

/// How `policy` is said for a search of `scope` as a search, when it can be: a search of one
/// type without `_include` or `_revinclude` (whose included resources the filter must
/// place). The store then keeps the resources of the named Patients' compartments and of no
/// other's ([`SearchQuery::within_compartments`]), of at least one category and of none that
/// is withheld ([`SearchQuery::within_categories`], the permitted categories; `None` for the
/// citizen's own data, of any category or none): exactly what [`Policy::may_share`] keeps.
///
/// [`SearchQuery::within_compartments`]: zorgnet_fhir::search::SearchQuery::within_compartments
/// [`SearchQuery::within_categories`]: zorgnet_fhir::search::SearchQuery::within_categories
fn narrowing(scope: &PatientScope, policy: &Policy<'_>) -> Option<Option<CategorySet>> {
    if scope.types.len() != 1 || scope.kind != Kind::Search || scope.wide {
        return None;
    }
    if policy.every_category {
        return Some(None);
    }
    Some(Some(CategorySet::of(
        DataCategory::ALL
            .into_iter()
            .filter(|c| permitted(&policy.decisions, *c)),
    )))
}

/// `_summary` and `_elements` as the client asked them, applied by the layer after the
/// filter (the handler is asked for whole resources).
#[derive(Default)]
struct Shaping {
    summary: Option<Summary>,
    elements: Option<Vec<String>>,
}

/// The parameters the layer takes over from the handler.
const LAYER_PARAMS: [&str; 4] = ["_cursor", "_count", "_summary", "_elements"];

impl Shaping {
    fn of(pairs: &[(String, String)]) -> Result<Shaping, AccessError> {
        let mut shaping = Shaping::default();
        for (name, value) in pairs {
            match name.as_str() {
                "_summary" => {
                    shaping.summary = Some(match value.as_str() {
                        "true" => Summary::True,
                        "data" => Summary::Data,
                        "text" => Summary::Text,
                        "false" => Summary::False,
                        other => {
                            return Err(AccessError::Invalid(format!(
                                "unknown _summary value '{other}'"
                            )));
                        }
                    })
                }
                "_elements" => {
                    shaping.elements = Some(
                        value
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                _ => {}
            }
        }
        Ok(shaping)
    }

    /// Shapes one resource as a searchset's are shaped (`_elements` for matches only),
    /// marking it `SUBSETTED`.
    fn apply(&self, resource: &mut Value, is_match: bool) {
        zorgnet_rest::subset(resource, self.summary, self.elements.as_deref(), is_match);
    }
}

/// The page size a client asked for (the handler's default when it did not).
fn page_size(pairs: &[(String, String)], kind: Kind) -> Result<usize, AccessError> {
    let default = if kind == Kind::Everything {
        MAX_PAGE_SIZE
    } else {
        DEFAULT_PAGE_SIZE
    };
    pairs
        .iter()
        .rev()
        .find(|(name, _)| name == "_count")
        .map_or(Ok(default), |(_, value)| {
            value.trim().parse::<usize>().map_err(|_| {
                AccessError::Invalid(format!(
                    "_count must be a non-negative integer, not '{value}'"
                ))
            })
        })
        .map(|count| count.min(MAX_PAGE_SIZE))
}

/// One page the handler answered, split up.
struct HandlerPage {
    /// The Bundle without its entries and links.
    head: Map<String, Value>,
    /// The URL of the page's `self` link, without its query.
    base: String,
    matches: Vec<Value>,
    includes: Vec<Value>,
    next: Option<String>,
    previous: Option<String>,
}

/// Reads pages from the handler as the request would have, with the layer's cursor and
/// page size.
struct HandlerReader<'a> {
    method: Method,
    path: String,
    headers: axum::http::HeaderMap,
    extensions: axum::http::Extensions,
    /// The request's parameters but the layer's own.
    pairs: Vec<(String, String)>,
    next: &'a Next,
}

impl HandlerReader<'_> {
    /// One page of `count` rows from `cursor`; a failed answer is handed back whole.
    async fn read(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<Result<HandlerPage, Response>, AccessError> {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(self.pairs.iter());
            query.append_pair("_count", &count.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("_cursor", cursor);
            }
            query.finish()
        };
        let uri = format!("{}?{query}", self.path);
        let mut request = Request::new(Body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri
            .parse()
            .map_err(|e| AccessError::Internal(format!("rebuilding the request: {e}")))?;
        *request.headers_mut() = self.headers.clone();
        request.headers_mut().remove(header::CONTENT_LENGTH);
        *request.extensions_mut() = self.extensions.clone();
        let response = self.next.clone().run(request).await;
        if !response.status().is_success() {
            return Ok(Err(response));
        }
        let bytes = axum::body::to_bytes(response.into_body(), MAX_FILTERED_RESPONSE_BYTES)
            .await
            .map_err(|e| AccessError::Internal(format!("reading the answer to filter it: {e}")))?;
        let Value::Object(mut head) = serde_json::from_slice(&bytes)
            .map_err(|e| AccessError::Internal(format!("the answer to filter is not JSON: {e}")))?
        else {
            return Err(AccessError::Internal(
                "the answer to filter is no Bundle".into(),
            ));
        };
        let link = |relation: &str| -> Option<String> {
            head.get("link")?
                .as_array()?
                .iter()
                .find(|l| l.get("relation").and_then(Value::as_str) == Some(relation))?
                .get("url")?
                .as_str()
                .map(String::from)
        };
        let cursor_of = |url: Option<String>| {
            url.and_then(|url| {
                let (_, query) = url.split_once('?')?;
                form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "_cursor")
                    .map(|(_, value)| value.into_owned())
            })
        };
        let base = link("self")
            .map(|url| url.split('?').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        let (next, previous) = (cursor_of(link("next")), cursor_of(link("previous")));
        head.remove("link");
        head.remove("total");
        let entries = match head.remove("entry") {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        };
        let (mut matches, mut includes) = (Vec::new(), Vec::new());
        for entry in entries {
            match entry.pointer("/search/mode").and_then(Value::as_str) {
                Some("match") => matches.push(entry),
                Some("include") => includes.push(entry),
                _ => {}
            }
        }
        Ok(Ok(HandlerPage {
            head,
            base,
            matches,
            includes,
            next,
            previous,
        }))
    }
}

/// Serves a search or `$everything` page by page, as the module documentation says.
async fn serve_pages(
    request: Request,
    pairs: Vec<(String, String)>,
    scope: &PatientScope,
    policy: &Policy<'_>,
    seal: &CursorSeal,
    requester: &str,
    next: Next,
) -> Result<Response, AccessError> {
    let want = page_size(&pairs, scope.kind)?;
    let shaping = Shaping::of(&pairs)?;
    let mut cursor = pairs
        .iter()
        .rev()
        .find(|(name, _)| name == "_cursor")
        .map(|(_, sealed)| seal.open(sealed, requester))
        .transpose()?;
    // The store's cursors name their direction first: `p` reads the rows before.
    let backward = cursor.as_deref().is_some_and(|c| c.starts_with('p'));
    let (parts, _) = request.into_parts();
    let reader = HandlerReader {
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        extensions: parts.extensions,
        pairs: pairs
            .iter()
            .filter(|(name, _)| !LAYER_PARAMS.contains(&name.as_str()))
            .cloned()
            .collect(),
        next: &next,
    };
    let mut kept: std::collections::VecDeque<Value> = std::collections::VecDeque::new();
    let mut includes: Vec<Value> = Vec::new();
    let mut first: Option<(Map<String, Value>, String, Option<String>)> = None;
    let mut onward;
    let mut size = want;
    let mut reads = 0;
    loop {
        let room = want - kept.len();
        let mut page = match reader.read(cursor.as_deref(), size.max(room)).await? {
            Ok(page) => page,
            Err(failed) => return Ok(failed),
        };
        let shareable = |page: &HandlerPage| -> Vec<bool> {
            page.matches
                .iter()
                .map(|e| e.get("resource").is_some_and(|r| policy.may_share(r)))
                .collect()
        };
        let mut flags = shareable(&page);
        let found = flags.iter().filter(|f| **f).count();
        if found > room {
            // More than the page has room for: read again exactly the rows up to the last
            // one that fits, so the link continues right after it.
            let positions: Vec<usize> = (0..flags.len()).filter(|&i| flags[i]).collect();
            let rows = if backward {
                flags.len() - positions[found - room]
            } else {
                positions[room - 1] + 1
            };
            page = match reader.read(cursor.as_deref(), rows).await? {
                Ok(page) => page,
                Err(failed) => return Ok(failed),
            };
            flags = shareable(&page);
        }
        reads += 1;
        let mut taken: Vec<Value> = page
            .matches
            .into_iter()
            .zip(flags)
            .filter_map(|(entry, shared)| shared.then_some(entry))
            .collect();
        if taken.len() > room {
            // The rows changed between the two reads: keep what fits.
            if backward {
                taken.drain(..taken.len() - room);
            } else {
                taken.truncate(room);
            }
        }
        if backward {
            for entry in taken.into_iter().rev() {
                kept.push_front(entry);
            }
        } else {
            kept.extend(taken);
        }
        includes.extend(page.includes);
        let (ahead, behind) = if backward {
            (page.previous, page.next)
        } else {
            (page.next, page.previous)
        };
        if first.is_none() {
            first = Some((page.head, page.base, behind));
        }
        onward = ahead;
        if kept.len() >= want || onward.is_none() || reads >= MAX_READS_PER_PAGE {
            break;
        }
        cursor = onward.clone();
        size = (size.max(room) * 2).min(MAX_PAGE_SIZE);
    }
    if kept.len() >= want
        && let Some(from) = onward.clone()
    {
        onward = permitted_beyond(&reader, policy, from, backward, want, reads).await?;
    }
    let Some((mut bundle, base, behind)) = first else {
        return Err(AccessError::Internal("no page was read".into()));
    };
    let (next_cursor, previous_cursor) = if backward {
        (behind, onward)
    } else {
        (onward, behind)
    };
    let link = |relation: &str, cursor: Option<&str>| -> Value {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &pairs {
            if cursor.is_none() || name != "_cursor" {
                query.append_pair(name, value);
            }
        }
        if let Some(cursor) = cursor {
            query.append_pair("_cursor", cursor);
        }
        let query = query.finish();
        let url = if query.is_empty() {
            base.clone()
        } else {
            format!("{base}?{query}")
        };
        json!({"relation": relation, "url": url})
    };
    let mut links = vec![link("self", None)];
    for (relation, cursor) in [("next", next_cursor), ("previous", previous_cursor)] {
        if let Some(cursor) = cursor {
            links.push(link(relation, Some(&seal.seal(&cursor, requester)?)));
        }
    }
    let mut entries: Vec<Value> = kept.into_iter().collect();
    entries.extend(travelling_with(&entries, includes, policy));
    for entry in &mut entries {
        let is_match = entry.pointer("/search/mode").and_then(Value::as_str) == Some("match");
        if let Some(resource) = entry.get_mut("resource") {
            shaping.apply(resource, is_match);
        }
    }
    entries.extend(policy.notice_entry());
    bundle.insert("link".into(), Value::Array(links));
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    let mut response = Response::new(Body::from(Value::Object(bundle).to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(zorgnet_rest::error::FHIR_JSON),
    );
    Ok(response)
}

/// `from` when a permitted match lies beyond it (or the reads run out first), `None` when
/// the search ends with withheld matches only: a full page gets a link onward only when
/// there is something there for the requester.
async fn permitted_beyond(
    reader: &HandlerReader<'_>,
    policy: &Policy<'_>,
    from: String,
    backward: bool,
    want: usize,
    mut reads: usize,
) -> Result<Option<String>, AccessError> {
    let mut cursor = from.clone();
    let mut size = want;
    while reads < MAX_READS_PER_PAGE {
        let page = match reader.read(Some(&cursor), size).await? {
            Ok(page) => page,
            Err(_) => return Ok(Some(from)),
        };
        reads += 1;
        if page
            .matches
            .iter()
            .any(|e| e.get("resource").is_some_and(|r| policy.may_share(r)))
        {
            return Ok(Some(from));
        }
        let ahead = if backward { page.previous } else { page.next };
        match ahead {
            Some(next) => cursor = next,
            None => return Ok(None),
        }
        size = (size * 2).min(MAX_PAGE_SIZE);
    }
    Ok(Some(from))
}

/// The included entries that may travel with `matches`: each one the requester may see,
/// or reference data, and linked to a kept entry (referring to one or referred to by one),
/// directly or through other such includes. An include of a withheld match stays behind.
fn travelling_with(matches: &[Value], includes: Vec<Value>, policy: &Policy<'_>) -> Vec<Value> {
    let key = |resource: &Value| -> Option<String> {
        Some(format!(
            "{}/{}",
            resource.get("resourceType")?.as_str()?,
            resource.get("id")?.as_str()?
        ))
    };
    let mut linked: BTreeSet<String> = BTreeSet::new();
    let mut kept_keys: BTreeSet<String> = BTreeSet::new();
    for entry in matches {
        if let Some(resource) = entry.get("resource") {
            kept_keys.extend(key(resource));
            references(resource, &mut linked);
        }
    }
    let mut candidates: Vec<(String, BTreeSet<String>, Value)> = Vec::new();
    for entry in includes {
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        let Some(k) = key(resource) else { continue };
        if kept_keys.contains(&k)
            || candidates.iter().any(|(c, _, _)| *c == k)
            || !(policy.may_share(resource) || policy.reference_data(resource))
        {
            continue;
        }
        let mut refers_to = BTreeSet::new();
        references(resource, &mut refers_to);
        candidates.push((k, refers_to, entry));
    }
    let mut taken = Vec::new();
    loop {
        let before = taken.len();
        let mut waiting = Vec::new();
        for (k, refers_to, entry) in candidates {
            if linked.contains(&k) || !refers_to.is_disjoint(&kept_keys) {
                kept_keys.insert(k);
                linked.extend(refers_to);
                taken.push(entry);
            } else {
                waiting.push((k, refers_to, entry));
            }
        }
        candidates = waiting;
        if taken.len() == before {
            return taken;
        }
    }
}

/// Adds the `Type/id` of every reference in `value` (relative or ending an absolute URL).
fn references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (name, inner) in object {
                if name == "reference"
                    && let Some(reference) = inner.as_str()
                {
                    let current = reference.split("/_history/").next().unwrap_or(reference);
                    let mut tail = current.rsplit('/');
                    if let (Some(id), Some(resource_type)) = (tail.next(), tail.next()) {
                        out.insert(format!("{resource_type}/{id}"));
                    }
                } else {
                    references(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, out)),
        _ => {}
    }
}

/// What a cached decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    /// The local Patient id.
    pub patient: String,
    /// The requesting organisation.
    pub requester: String,
    /// The professional's role, when the token names one.
    pub role: Option<String>,
    /// The data category asked about.
    pub category: DataCategory,
    /// Why the requester reads.
    pub purpose: Purpose,
}

impl DecisionKey {
    /// The decision `claims` asks about `patient`'s `category`.
    fn of(claims: &AccessClaims, patient: &str, category: DataCategory) -> DecisionKey {
        DecisionKey {
            patient: patient.to_string(),
            requester: claims.ura.clone(),
            role: claims.role.clone(),
            category,
            purpose: claims.purpose,
        }
    }
}

/// Consent decisions, each reused for the configured time (public for its benchmark,
/// `benches/decisions.rs`).
pub struct DecisionCache {
    ttl: Duration,
    entries: Mutex<HashMap<DecisionKey, (Verdict, Instant)>>,
}

impl DecisionCache {
    /// An empty cache whose answers hold for `ttl`.
    pub fn new(ttl: Duration) -> DecisionCache {
        DecisionCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The answer for `key` if it was given less than the TTL before `now`.
    pub fn get(&self, key: &DecisionKey, now: Instant) -> Option<Verdict> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(verdict, _)| verdict.clone())
    }

    /// Remembers an answer given at `at` (not at all with a zero TTL).
    pub fn put(&self, key: DecisionKey, verdict: Verdict, at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_DECISIONS {
            entries.retain(|_, (_, given)| at.saturating_duration_since(*given) < self.ttl);
            if entries.len() >= MAX_CACHED_DECISIONS {
                entries.clear();
            }
        }
        entries.insert(key, (verdict, at));
    }
}

/// The hub's token-verification keys, by key id, and the tokens verified with them.
#[derive(Default)]
struct HubKeys {
    known: RwLock<KnownKeys>,
    refresh: tokio::sync::Mutex<()>,
    /// Tokens whose signature, audience and times checked out, by the SHA-256 of their text.
    verified: RwLock<HashMap<[u8; 32], AccessClaims>>,
}

#[derive(Default)]
struct KnownKeys {
    keys: HashMap<String, VerifyingKey>,
    fetched_at: Option<Instant>,
}

impl HubKeys {
    fn key(&self, key_id: &str) -> Option<VerifyingKey> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        known.keys.get(key_id).copied()
    }

    /// Verifies `token` for this node (`audience`), fetching the hub's keys when the token
    /// names a key id not seen yet.
    async fn verify(
        &self,
        hub: &HubClient,
        token: &str,
        audience: &str,
    ) -> Result<AccessClaims, AccessError> {
        let invalid = |e: token::TokenError| {
            AccessError::Unauthenticated(format!("access token refused: {e}"))
        };
        let now_s = zorgnet_db::now_ms() / 1000;
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        if let Some(claims) = self.remembered(&digest, now_s) {
            return Ok(claims);
        }
        let key_id = token::key_id_of(token).map_err(invalid)?;
        let key = match self.key(&key_id) {
            Some(key) => key,
            None => self
                .fetch(hub, &key_id)
                .await?
                .ok_or_else(|| invalid(token::TokenError::UnknownKey))?,
        };
        let claims = token::verify(token, &key, audience, now_s).map_err(invalid)?;
        self.remember(digest, &claims, now_s);
        Ok(claims)
    }

    /// The claims of a token verified before, while it has not expired (without the clock
    /// skew the first verification allows).
    fn remembered(&self, digest: &[u8; 32], now_s: i64) -> Option<AccessClaims> {
        let verified = self.verified.read().unwrap_or_else(|p| p.into_inner());
        verified
            .get(digest)
            .filter(|claims| now_s < claims.exp)
            .cloned()
    }

    fn remember(&self, digest: [u8; 32], claims: &AccessClaims, now_s: i64) {
        let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_VERIFIED_TOKENS {
            verified.retain(|_, claims| now_s < claims.exp);
            if verified.len() >= MAX_VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(digest, claims.clone());
    }

    /// Fetches the hub's key set (at most once per [`KEY_REFETCH_MIN_INTERVAL`]) and returns
    /// the key `key_id`, if the hub has it.
    async fn fetch(
        &self,
        hub: &HubClient,
        key_id: &str,
    ) -> Result<Option<VerifyingKey>, AccessError> {
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(key) = self.key(key_id) {
            return Ok(Some(key));
        }
        let recently = {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            known
                .fetched_at
                .is_some_and(|at| at.elapsed() < KEY_REFETCH_MIN_INTERVAL)
        };
        if recently {
            return Ok(None);
        }
        let set = hub.trust_keys().await.map_err(|e| {
            AccessError::Unavailable(format!(
                "the hub's token keys cannot be fetched, so the token cannot be checked: {e}"
            ))
        })?;
        let keys = token::parse_key_set(&set);
        let found = keys.get(key_id).copied();
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.keys = keys;
        known.fetched_at = Some(Instant::now());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        zorgnet_rest::interactions::query_pairs(Some(query))
    }

    fn scope(
        patient: PatientRef,
        types: &[&str],
        wide: bool,
        kind: Kind,
    ) -> Result<Target, AccessError> {
        Ok(Target::Patient(PatientScope {
            patient,
            types: types.iter().map(|t| t.to_string()).collect(),
            wide,
            kind,
        }))
    }

    fn check(method: Method, path: &str, query: &str, expected: Result<Target, AccessError>) {
        let got = classify(Requester::Organisation, &method, path, &pairs(query));
        match (&got, &expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{method} {path}?{query}"),
            (Err(got), Err(expected)) => assert_eq!(
                std::mem::discriminant(got),
                std::mem::discriminant(expected),
                "{method} {path}?{query}: {got}"
            ),
            _ => panic!("{method} {path}?{query}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn bulk_export_and_reindex_are_refused_to_other_organisations_and_citizens() {
        let job = "6f1c1b4e-0000-4000-8000-000000000000";
        let asks = [
            (Method::GET, "/fhir/$export".to_string()),
            (Method::GET, "/fhir/Patient/$export".to_string()),
            (Method::GET, "/fhir/Group/g1/$export".to_string()),
            (Method::POST, "/fhir/Patient/$export".to_string()),
            (Method::GET, format!("/fhir/$export-status/{job}")),
            (Method::DELETE, format!("/fhir/$export-status/{job}")),
            (
                Method::GET,
                format!("/fhir/$export-file/{job}/Patient-1.ndjson"),
            ),
            (Method::GET, "/fhir/$reindex".to_string()),
            (Method::POST, "/fhir/$reindex".to_string()),
            (Method::PUT, "/fhir/SearchParameter/x".to_string()),
        ];
        for requester in [Requester::Organisation, Requester::Citizen] {
            for (method, path) in &asks {
                let got = classify(requester, method, path, &pairs("_type=Patient"));
                assert!(
                    matches!(got, Err(AccessError::Forbidden(_))),
                    "{requester:?} {method} {path}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn requests_of_other_organisations_are_sorted_by_what_they_ask() {
        use PatientRef::{Id, Identifier};
        let forbidden =
            || -> Result<Target, AccessError> { Err(AccessError::Forbidden(String::new())) };
        let invalid =
            || -> Result<Target, AccessError> { Err(AccessError::Invalid(String::new())) };
        let bsn = "http://fhir.nl/fhir/NamingSystem/bsn|123456782";
        check(Method::GET, "/fhir/metadata", "", Ok(Target::Open));
        check(Method::GET, "/health", "", Ok(Target::Open));
        check(
            Method::GET,
            "/fhir/MedicationStatement",
            &format!("patient.identifier={}&_count=1000", bsn.replace('|', "%7C")),
            scope(
                Identifier(bsn.into()),
                &["MedicationStatement"],
                false,
                Kind::Search,
            ),
        );
        check(
            Method::GET,
            "/fhir/Observation",
            "subject=Patient/p1&code=x",
            scope(Id("p1".into()), &["Observation"], false, Kind::Search),
        );
        check(
            Method::GET,
            "/fhir/Observation",
            "patient=http://node/fhir/Patient/p1&_include=Observation:performer",
            scope(Id("p1".into()), &["Observation"], true, Kind::Search),
        );
        check(
            Method::GET,
            "/fhir/Patient",
            "identifier=x|1",
            scope(Identifier("x|1".into()), &["Patient"], false, Kind::Search),
        );
        check(
            Method::GET,
            "/fhir/Patient/p1",
            "",
            scope(Id("p1".into()), &["Patient"], false, Kind::Read),
        );
        check(
            Method::GET,
            "/fhir/Patient/p1/%24everything",
            "_type=Condition,Encounter",
            scope(
                Id("p1".into()),
                &["Condition", "Encounter"],
                true,
                Kind::Everything,
            ),
        );
        check(
            Method::POST,
            "/fhir/AllergyIntolerance/_search",
            "patient=p1",
            scope(
                Id("p1".into()),
                &["AllergyIntolerance"],
                false,
                Kind::Search,
            ),
        );
        check(
            Method::POST,
            "/fhir/Patient/p1/$everything",
            "_type=Condition&_type=Encounter&patient=p2",
            scope(
                Id("p1".into()),
                &["Condition", "Encounter"],
                true,
                Kind::Everything,
            ),
        );
        for one_patient_only in [
            "identifier=x|",
            "identifier=|1",
            "identifier=1",
            "identifier=x|1,x|2",
            "identifier=x|1&identifier:not=x|2",
            "_id=p1&_id:not=p2",
            "identifier:missing=false",
            "identifier=x|1%5C,2",
        ] {
            check(Method::GET, "/fhir/Patient", one_patient_only, forbidden());
        }
        for one_patient_only in [
            "patient.identifier=x|",
            "subject.identifier=x%7C",
            "patient=p1&patient:missing=false",
            "patient=p1&subject:identifier=x|1",
            "patient=p1&patient.name=Jansen",
            "patient.identifier:not=x|1",
            "patient=p1&patient=p1",
        ] {
            check(
                Method::GET,
                "/fhir/Observation",
                one_patient_only,
                forbidden(),
            );
        }
        check(
            Method::GET,
            "/fhir/Observation",
            "patient=p1&performer:missing=false&code:not=x",
            scope(Id("p1".into()), &["Observation"], false, Kind::Search),
        );
        check(Method::POST, "/fhir/Patient/p1/$other", "", forbidden());
        check(Method::POST, "/fhir/$localize", "", forbidden());
        check(Method::GET, "/fhir/Observation", "code=x", forbidden());
        check(
            Method::GET,
            "/fhir/Observation",
            "patient=p1,p2",
            forbidden(),
        );
        check(
            Method::GET,
            "/fhir/Observation",
            "patient=p1&subject=Patient/p2",
            forbidden(),
        );
        check(
            Method::GET,
            "/fhir/Observation",
            "subject=Group/g1",
            forbidden(),
        );
        check(Method::GET, "/fhir/Encounter", "patient=p1", forbidden());
        check(Method::GET, "/fhir/Organization", "", forbidden());
        check(Method::GET, "/fhir/Observation/o1", "", forbidden());
        check(Method::GET, "/fhir/Patient/p1/_history", "", forbidden());
        check(Method::GET, "/fhir/_history", "", forbidden());
        check(
            Method::GET,
            "/fhir",
            "_type=Observation&patient=p1",
            forbidden(),
        );
        check(
            Method::GET,
            "/fhir/$fetch",
            "patient.identifier=1",
            forbidden(),
        );
        check(Method::GET, "/metrics", "", forbidden());
        check(Method::HEAD, "/fhir/Patient/p1", "", forbidden());
        check(Method::POST, "/fhir/Observation", "patient=p1", forbidden());
        check(Method::PUT, "/fhir/Patient/p1", "", forbidden());
        check(Method::DELETE, "/fhir/Patient/p1", "", forbidden());
        check(Method::POST, "/fhir", "", forbidden());
        check(Method::GET, "/fhir/Patient/bad%20id", "", invalid());
    }

    fn verdicts(denied: &[DataCategory]) -> BTreeMap<DataCategory, Decision> {
        DataCategory::ALL
            .into_iter()
            .map(|c| {
                let decision = if denied.contains(&c) {
                    Decision::Deny(ReasonClass::Policy)
                } else {
                    Decision::Permit
                };
                (c, decision)
            })
            .collect()
    }

    #[test]
    fn a_type_is_refused_when_a_category_all_its_resources_have_is_denied() {
        use DataCategory::*;
        let none = verdicts(&[]);
        assert!(!type_refused("MedicationStatement", &none));
        assert!(type_refused(
            "MedicationStatement",
            &verdicts(&[PatientSummary])
        ));
        assert!(type_refused(
            "MedicationStatement",
            &verdicts(&[Medication])
        ));
        assert!(!type_refused(
            "MedicationRequest",
            &verdicts(&[PatientSummary])
        ));
        assert!(!type_refused("Observation", &verdicts(&[LabResults])));
        assert!(type_refused(
            "Observation",
            &verdicts(&[LabResults, Imaging, PatientSummary])
        ));
        assert!(type_refused("Patient", &verdicts(&[PatientSummary])));
        assert!(type_refused("Encounter", &none));
        assert!(
            type_refused("Condition", &BTreeMap::new()),
            "not asked is not permitted"
        );
    }

    fn policy<'a>(registry: &'a SearchRegistry, denied: &[DataCategory]) -> Policy<'a> {
        Policy {
            registry,
            allowed: ["p1".to_string()].into(),
            decisions: verdicts(denied),
            notice: [DataCategory::LabResults, DataCategory::PatientSummary].into(),
            every_category: false,
        }
    }

    #[test]
    fn the_filter_keeps_only_the_named_patients_permitted_categories() {
        let registry = SearchRegistry::r4();
        let lab = |id: &str, patient: &str| {
            json!({"resourceType": "Observation", "id": id,
                "subject": {"reference": format!("Patient/{patient}")},
                "category": [{"coding": [{"code": "laboratory"}]}]})
        };
        let vitals = json!({"resourceType": "Observation", "id": "v1",
            "subject": {"reference": "Patient/p1"},
            "category": [{"coding": [{"code": "vital-signs"}]}]});
        let uncategorised = json!({"resourceType": "Observation", "id": "u1",
            "subject": {"reference": "Patient/p1"}});
        let all = policy(&registry, &[]);
        assert!(all.may_share(&lab("l1", "p1")));
        assert!(!all.may_share(&lab("l2", "p2")), "another patient's");
        assert!(all.may_share(&vitals));
        assert!(!all.may_share(&uncategorised), "no category");
        assert!(!all.may_share(&json!({"resourceType": "Practitioner", "id": "d1"})));
        assert!(all.reference_data(&json!({"resourceType": "Practitioner", "id": "d1"})));
        assert!(!all.reference_data(&json!({"resourceType": "Encounter", "id": "e1"})));
        assert!(all.may_share(&json!({"resourceType": "Patient", "id": "p1"})));
        assert!(all.notice().is_none(), "nothing withheld: no notice");

        let no_lab = policy(&registry, &[DataCategory::LabResults]);
        assert!(!no_lab.may_share(&lab("l1", "p1")));
        assert!(no_lab.may_share(&vitals));
        let notice = no_lab.notice_entry().unwrap().to_string();
        assert!(notice.contains("lab-results (policy)"), "{notice}");
        assert!(!notice.contains("patient-summary"), "{notice}");
    }

    #[test]
    fn includes_travel_only_with_the_entries_that_refer_to_them() {
        let registry = SearchRegistry::r4();
        let policy = policy(&registry, &[]);
        let entry = |resource: Value| json!({"resource": resource});
        let matches = [entry(json!({"resourceType": "Observation", "id": "v1",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "http://node/fhir/Practitioner/d1"}]}))];
        let includes = vec![
            entry(json!({"resourceType": "Practitioner", "id": "d1"})),
            entry(json!({"resourceType": "Organization", "id": "o1"})),
            entry(json!({"resourceType": "PractitionerRole", "id": "r1",
                "practitioner": {"reference": "Practitioner/d1"}})),
            entry(json!({"resourceType": "Practitioner", "id": "d2"})),
        ];
        let taken: Vec<String> = travelling_with(&matches, includes, &policy)
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            taken,
            ["d1", "r1"],
            "the performer, and what refers to it; not what only a withheld match referred to"
        );
    }

    #[test]
    fn sealed_cursors_open_only_for_their_requester_and_hide_what_they_carry() {
        let seal = CursorSeal::new();
        let cursor = "nWyJsYWJvcmF0b3J5IiwxMl0";
        let sealed = seal.seal(cursor, "00000022").unwrap();
        assert!(!sealed.contains(cursor));
        assert_eq!(seal.open(&sealed, "00000022").unwrap(), cursor);
        assert!(seal.open(&sealed, "00000033").is_err(), "another requester");
        assert!(
            CursorSeal::new().open(&sealed, "00000022").is_err(),
            "another process"
        );
        assert!(seal.open(cursor, "00000022").is_err(), "a store cursor");
        assert!(seal.open("", "00000022").is_err());
        assert!(
            seal.open(&"A".repeat(MAX_SEALED_CURSOR_BYTES + 1), "00000022")
                .is_err()
        );
    }

    #[test]
    fn counts_are_recognised_however_they_are_written() {
        let pairs = |q: &str| zorgnet_rest::interactions::query_pairs(Some(q));
        assert!(refuses_counts(&pairs("patient=p1&_summary=count")));
        assert!(refuses_counts(&pairs("patient=p1&_count=0")));
        assert!(refuses_counts(&pairs("patient=p1&_count=00")));
        assert!(!refuses_counts(&pairs(
            "patient=p1&_count=10&_summary=true"
        )));
    }

    fn key(patient: &str, category: DataCategory) -> DecisionKey {
        DecisionKey {
            patient: patient.into(),
            requester: "00000022".into(),
            role: Some("01.015".into()),
            category,
            purpose: Purpose::Treatment,
        }
    }

    #[test]
    fn verified_tokens_are_remembered_until_they_expire_and_memory_stays_bounded() {
        let keys = HubKeys::default();
        let claims = |exp: i64| AccessClaims {
            ura: "00000022".into(),
            uzi: None,
            role: None,
            purpose: Purpose::Treatment,
            reason: None,
            iat: 0,
            exp,
            aud: "00000011".into(),
            cnf: None,
        };
        keys.remember([1; 32], &claims(100), 50);
        assert_eq!(keys.remembered(&[1; 32], 99), Some(claims(100)));
        assert_eq!(keys.remembered(&[1; 32], 100), None, "expired");
        assert_eq!(keys.remembered(&[2; 32], 50), None, "another token");
        for n in 0..MAX_VERIFIED_TOKENS + 10 {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(n as u64).to_le_bytes());
            keys.remember(digest, &claims(1_000), 50);
        }
        let remembered = keys.verified.read().unwrap().len();
        assert!(remembered <= MAX_VERIFIED_TOKENS, "{remembered}");
    }

    #[test]
    fn decisions_are_reused_for_their_ttl_and_not_at_all_with_a_zero_ttl() {
        let permit = Verdict {
            permit: true,
            reason: "ok".into(),
        };
        let at = Instant::now();
        let cache = DecisionCache::new(Duration::from_secs(30));
        let medication = key("p1", DataCategory::Medication);
        assert_eq!(cache.get(&medication, at), None);
        cache.put(medication.clone(), permit.clone(), at);
        assert_eq!(cache.get(&medication, at), Some(permit.clone()));
        assert_eq!(
            cache.get(&medication, at + Duration::from_secs(29)),
            Some(permit.clone())
        );
        assert_eq!(cache.get(&medication, at + Duration::from_secs(30)), None);
        assert_eq!(cache.get(&key("p2", DataCategory::Medication), at), None);
        assert_eq!(cache.get(&key("p1", DataCategory::Allergies), at), None);
        let mut emergency = medication.clone();
        emergency.purpose = Purpose::Emergency;
        assert_eq!(
            cache.get(&emergency, at),
            None,
            "the purpose is part of the key"
        );
        let mut pharmacist = medication.clone();
        pharmacist.role = Some("17.000".into());
        assert_eq!(
            cache.get(&pharmacist, at),
            None,
            "the role is part of the key"
        );

        let uncached = DecisionCache::new(Duration::ZERO);
        uncached.put(medication.clone(), permit, at);
        assert_eq!(uncached.get(&medication, at), None);
    }
}
