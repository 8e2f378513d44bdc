//! The node's access policy towards other organisations: one tower layer ([`enforce`],
//! installed by [`crate::router_in_network`]) in front of every handler, so no handler
//! decides who may see what.
//!
//! Who is calling is read from the request's `Authorization` header:
//! - **No `Authorization` header**: one of the node's own local clients (the organisation's
//!   record system, its professionals' viewer, the operator's tools). Served exactly as
//!   before this layer existed. Until the trust issue brings mTLS, *the listen address is
//!   the trust boundary*: anyone who reaches the node without a token is treated as local,
//!   so a node must listen for its own organisation only, and expose itself to the network
//!   only through something (a reverse proxy, a firewall rule) that lets through requests
//!   carrying a token and nothing else. This layer enforces the policy for requests that
//!   identify themselves; it cannot stop one that hides who it is.
//! - **`Authorization: Bearer <access token>`** issued by the hub (`POST /trust/token`, the
//!   format is [`token`]): the signature is checked with the hub's Ed25519 key (fetched from
//!   `GET /trust/keys` once, fetched again when a token names a key id not seen before, at
//!   most every [`KEY_REFETCH_MIN_INTERVAL`]), then the expiry and the audience. A bad,
//!   expired or foreign token, or any other kind of `Authorization`, is a 401. A token of
//!   this node's own URA is served like a local client; a token of another organisation
//!   goes through the policy below.
//!
//! The policy for other organisations fails closed:
//! - Only reads of one named patient's data are served: `GET /fhir/{type}?patient=…` (also
//!   `subject=Patient/…`, `patient.identifier=system|value`, `subject.identifier=…`, and for
//!   `Patient` itself `_id=…` or `identifier=…`; the same as `POST /fhir/{type}/_search`),
//!   `GET /fhir/Patient/{id}` and `Patient/{id}/$everything` (by `GET`, or by `POST` with a
//!   `Parameters` body, read here exactly as the handler reads it), for resource types
//!   that belong to a data category (the Patient resource counts as `patient-summary`).
//!   `GET /fhir/metadata` and `/health` are open. Everything else is a 403: writes, history,
//!   reads by id of other types, searches that do not name exactly one patient, and the
//!   node's own operations (`$localize`, `$fetch`).
//! - For each local Patient the request names, each data category the request can return
//!   is put to the hub's consent register (`POST /consent/decision`: requester = the
//!   token's URA, holder = this node, the token's role and purpose), after turning the
//!   patient's BSN (or zorgverificatienummer) into an exchange token for the referral index.
//!   Answers are cached in memory per (patient, requester URA, role, category, purpose) for
//!   [`AccessConfig::decision_ttl`]. When the hub cannot be reached and no cached answer is
//!   fresh, the request is refused with 503; nothing is served on a guess.
//! - A resource type is refused when a category that all its resources belong to is denied
//!   (every `MedicationStatement` is both `medication` and `patient-summary`), or when every
//!   category it can belong to is denied. A request all of whose types are refused is a 403
//!   naming the reasons. Otherwise the handler runs and its answer is filtered: an entry is
//!   kept only when every patient it belongs to is the named one and every category it
//!   belongs to is permitted (an opt-out of either category withholds a resource that is in
//!   both); reference data without a patient (Medication, Organization, Practitioner,
//!   PractitionerRole, Location) is kept. Filtering was chosen over failing a whole search or
//!   `$everything` that spans several categories: the rule is per resource and the same for
//!   every request. When anything was denied, `total` is removed (it would count withheld
//!   entries) and an OperationOutcome entry says what was withheld and why. Entries whose
//!   patient or category elements were removed by `_elements` or `_summary` cannot be
//!   checked and are withheld too.
//! - Every decision is a `tracing` event with the requester, role, category, purpose,
//!   outcome and reason; never a BSN or a patient id.
//!
//! What it is not: authentication of the professional (the role is the organisation's claim
//! in its token until UZI passes are checked), the audit log (NEN 7513 AuditEvents come with
//! the audit issue), or TLS client authentication. A node without a hub ([`crate::router`])
//! has no keys to verify tokens with and no other organisations to tell apart: the layer
//! lets everything through there, as before.

use crate::AppState;
use crate::hub_client::{ConsentQuestion, HubClient, HubClientError};
use crate::network::Network;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ed25519_dalek::VerifyingKey;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::categories::{DataCategory, categories_of};
use zorgnet_fhir::search::{SearchRegistry, parse_search_query};
use zorgnet_rest::error::FhirError;
use zorgnet_store::{ReadOutcome, StoreError};
use zorgnet_trust::token::{self, AccessClaims, Purpose};

/// How long a consent decision is reused when the operator sets nothing else.
pub const DEFAULT_DECISION_TTL: Duration = Duration::from_secs(30);
/// Most consent decisions kept in memory; a full cache first drops its stale answers, and
/// forgets everything if that is not enough (the hub is asked again: slower, never wrong).
pub const MAX_CACHED_DECISIONS: usize = 100_000;
/// Shortest time between two fetches of the hub's token keys, so that tokens naming
/// unknown key ids cannot make the node hammer the hub.
pub const KEY_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Largest answer the filter reads: a search page of `MAX_PAGE_SIZE` resources with its
/// included resources fits with room to spare.
pub const MAX_FILTERED_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Most local Patients one identifier may name before a request is refused as ambiguous.
pub const MAX_PATIENTS_PER_IDENTIFIER: usize = 10;

/// Resource types that belong to no patient and no category but that a patient's data
/// refers to; they may travel with the data (as `_include`d entries).
const REFERENCE_DATA_TYPES: [&str; 5] = [
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

/// The state of the access policy: the hub's token keys and the cached consent decisions.
pub struct AccessControl {
    config: AccessConfig,
    keys: HubKeys,
    decisions: DecisionCache,
}

impl AccessControl {
    /// An empty policy state with `config`.
    pub fn new(config: AccessConfig) -> AccessControl {
        AccessControl {
            config,
            keys: HubKeys::default(),
            decisions: DecisionCache::new(config.decision_ttl),
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

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
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
                return FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::Exception,
                    "the access check failed; see the server log",
                )
                .into_response();
            }
            AccessError::Store(e) => return FhirError::from(e).into_response(),
        };
        let mut response = FhirError::new(status, code, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
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
    let Some(network) = state.network.clone() else {
        return next.run(request).await;
    };
    let Some(authorization) = request.headers().get(header::AUTHORIZATION) else {
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
    if claims.ura == state.identity.ura {
        return next.run(request).await;
    }
    match serve_other_organisation(&state, &network, &claims, request, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
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
    let scope = match classify(request.method(), request.uri().path(), &pairs) {
        Ok(Target::Open) => return Ok(next.run(request).await),
        Ok(Target::Patient(scope)) => scope,
        Err(e) => {
            tracing::info!(
                requester = %claims.ura,
                method = %request.method(),
                "refused a request of another organisation that is not a read of one patient's data"
            );
            return Err(e);
        }
    };
    let patients = local_patients(state, &scope.patient).await?;
    let allowed: BTreeSet<String> = patients.iter().map(|(id, _)| id.clone()).collect();
    let verdicts = if patients.is_empty() {
        BTreeMap::new()
    } else {
        let verdicts = decide(
            network,
            &state.identity.ura,
            claims,
            &patients,
            &scope.categories(),
        )
        .await?;
        if scope.types.iter().all(|t| type_refused(t, &verdicts)) {
            return Err(AccessError::Forbidden(denial_reasons(&verdicts)));
        }
        verdicts
    };
    let response = next.run(request).await;
    filter_response(response, state.store.registry(), &allowed, &verdicts).await
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
}

impl PatientScope {
    /// The categories to put to the consent register.
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
    /// By an identifier (`system|value`), as a token search parameter takes it.
    Identifier(String),
}

const WRITE_REFUSED: &str = "other organisations may not change data at this node";
const ONE_PATIENT: &str = "a request from another organisation must name exactly one patient: \
    patient, subject or patient.identifier (on Patient: _id or identifier)";

/// Sorts a request of another organisation: open, one patient's data, or refused.
fn classify(
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
        return search(resource_type, pairs);
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
        ["fhir", "Patient", id] => Ok(Target::Patient(PatientScope {
            patient: PatientRef::Id(valid_id(id)?),
            types: vec!["Patient".into()],
            wide: false,
        })),
        ["fhir", resource_type] if !resource_type.starts_with('$') => search(resource_type, pairs),
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

/// A search of another organisation: a shareable type and exactly one patient.
fn search(resource_type: &str, pairs: &[(String, String)]) -> Result<Target, AccessError> {
    if possible_categories(resource_type).is_empty() {
        return Err(AccessError::Forbidden(format!(
            "{resource_type} belongs to no data category that is shared with other organisations"
        )));
    }
    let mut named = Vec::new();
    for (name, value) in pairs {
        let by_id = if resource_type == "Patient" {
            name == "_id"
        } else {
            PATIENT_ID_PARAMS.contains(&name.as_str())
        };
        let by_identifier = if resource_type == "Patient" {
            name == "identifier"
        } else {
            PATIENT_IDENTIFIER_PARAMS.contains(&name.as_str())
        };
        if !(by_id || by_identifier) {
            continue;
        }
        if value.is_empty() || value.contains(',') {
            return Err(AccessError::Forbidden(ONE_PATIENT.into()));
        }
        named.push(if by_id {
            PatientRef::Id(referenced_patient(value).ok_or_else(|| {
                AccessError::Forbidden(format!("{name}={value} does not name a Patient"))
            })?)
        } else {
            PatientRef::Identifier(value.clone())
        });
    }
    let [patient] = <[PatientRef; 1]>::try_from(named)
        .map_err(|_| AccessError::Forbidden(ONE_PATIENT.into()))?;
    let wide = pairs
        .iter()
        .any(|(name, _)| name.starts_with("_include") || name.starts_with("_revinclude"));
    Ok(Target::Patient(PatientScope {
        patient,
        types: vec![resource_type.to_string()],
        wide,
    }))
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

/// The categories of one resource as the policy sees them (a Patient is `patient-summary`).
fn resource_categories(resource: &Value) -> Vec<DataCategory> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => vec![DataCategory::PatientSummary],
        _ => categories_of(resource),
    }
}

/// One answer of the consent register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Permit (true) or deny.
    pub permit: bool,
    /// Why, in words for the professional and the log.
    pub reason: String,
}

fn permitted(verdicts: &BTreeMap<DataCategory, Verdict>, category: DataCategory) -> bool {
    verdicts.get(&category).is_some_and(|v| v.permit)
}

/// Whether nothing of `resource_type` may be served under `verdicts`.
fn type_refused(resource_type: &str, verdicts: &BTreeMap<DataCategory, Verdict>) -> bool {
    definite_categories(resource_type)
        .into_iter()
        .any(|c| !permitted(verdicts, c))
        || !possible_categories(resource_type)
            .into_iter()
            .any(|c| permitted(verdicts, c))
}

fn denial_reasons(verdicts: &BTreeMap<DataCategory, Verdict>) -> String {
    let mut reasons: Vec<&str> = verdicts
        .values()
        .filter(|v| !v.permit)
        .map(|v| v.reason.as_str())
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    if reasons.is_empty() {
        "no data category of this request may be shared".into()
    } else {
        reasons.join("; ")
    }
}

/// The local Patients a request names, with their stored JSON.
async fn local_patients(
    state: &AppState,
    patient: &PatientRef,
) -> Result<Vec<(String, Value)>, AccessError> {
    let stored = match patient {
        PatientRef::Id(id) => match state.store.read("Patient", id).await? {
            ReadOutcome::Found(stored) => vec![stored],
            _ => Vec::new(),
        },
        PatientRef::Identifier(identifier) => {
            let pairs = [
                ("identifier".to_string(), identifier.clone()),
                (
                    "_count".to_string(),
                    (MAX_PATIENTS_PER_IDENTIFIER + 1).to_string(),
                ),
            ];
            let query = parse_search_query(state.store.registry(), Some("Patient"), &pairs)
                .map_err(|issue| AccessError::Invalid(issue.diagnostics))?;
            let found = state.store.search(query).await?.matches;
            if found.len() > MAX_PATIENTS_PER_IDENTIFIER {
                return Err(AccessError::Forbidden(format!(
                    "the identifier names more than {MAX_PATIENTS_PER_IDENTIFIER} patients here"
                )));
            }
            found
        }
    };
    stored
        .into_iter()
        .map(|s| {
            serde_json::from_str(&s.json)
                .map(|json| (s.id.clone(), json))
                .map_err(|e| {
                    AccessError::Internal(format!("stored Patient/{} is not JSON: {e}", s.id))
                })
        })
        .collect()
}

/// Asks (or remembers) the consent register's answer for every patient and category;
/// a category is permitted only when it is for every patient.
async fn decide(
    network: &Network,
    holder_ura: &str,
    claims: &AccessClaims,
    patients: &[(String, Value)],
    categories: &BTreeSet<DataCategory>,
) -> Result<BTreeMap<DataCategory, Verdict>, AccessError> {
    let cache = &network.access().decisions;
    let mut combined: BTreeMap<DataCategory, Verdict> = BTreeMap::new();
    for (patient_id, patient) in patients {
        let mut missing = Vec::new();
        let now = Instant::now();
        for &category in categories {
            let key = DecisionKey {
                patient: patient_id.clone(),
                requester: claims.ura.clone(),
                role: claims.role.clone(),
                category,
                purpose: claims.purpose,
            };
            match cache.get(&key, now) {
                Some(verdict) => {
                    trace_decision(&key, &verdict, true);
                    combine(&mut combined, category, verdict);
                }
                None => missing.push(key),
            }
        }
        if missing.is_empty() {
            continue;
        }
        let Some(person) = network.hub.person_of_patient(patient).await? else {
            for key in missing {
                combine(
                    &mut combined,
                    key.category,
                    Verdict {
                        permit: false,
                        reason: "the patient has neither a BSN nor a sédula number with a birth \
                                 date, so the consent register cannot be asked"
                            .into(),
                    },
                );
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
            cache.put(key.clone(), verdict.clone(), Instant::now());
            combine(&mut combined, key.category, verdict);
        }
    }
    Ok(combined)
}

fn combine(
    combined: &mut BTreeMap<DataCategory, Verdict>,
    category: DataCategory,
    verdict: Verdict,
) {
    match combined.get(&category) {
        Some(existing) if !existing.permit => {}
        _ => {
            combined.insert(category, verdict);
        }
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

/// Withholds from a successful answer what the requester may not see.
async fn filter_response(
    response: Response,
    registry: &SearchRegistry,
    allowed: &BTreeSet<String>,
    verdicts: &BTreeMap<DataCategory, Verdict>,
) -> Result<Response, AccessError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FILTERED_RESPONSE_BYTES)
        .await
        .map_err(|e| AccessError::Internal(format!("reading the answer to filter it: {e}")))?;
    let mut answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| AccessError::Internal(format!("the answer to filter is not JSON: {e}")))?;
    if answer.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        if may_share(&answer, registry, allowed, verdicts) {
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        }
        return Err(AccessError::Forbidden(denial_reasons(verdicts)));
    }
    filter_bundle(&mut answer, registry, allowed, verdicts);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(answer.to_string())))
}

/// Keeps the entries the requester may see; when anything was denied, drops `total` and
/// adds an OperationOutcome entry saying what was withheld and why. Returns how many
/// entries were withheld.
fn filter_bundle(
    bundle: &mut Value,
    registry: &SearchRegistry,
    allowed: &BTreeSet<String>,
    verdicts: &BTreeMap<DataCategory, Verdict>,
) -> usize {
    let Some(object) = bundle.as_object_mut() else {
        return 0;
    };
    let entries = object
        .entry("entry")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(entries) = entries.as_array_mut() else {
        return 0;
    };
    let before = entries.len();
    entries.retain(|entry| {
        entry
            .get("resource")
            .is_some_and(|resource| may_share(resource, registry, allowed, verdicts))
    });
    let withheld = before - entries.len();
    let denied = verdicts.values().any(|v| !v.permit);
    if withheld > 0 || denied {
        let mut diagnostics = format!("{withheld} entries withheld from another organisation");
        if denied {
            diagnostics.push_str(": ");
            diagnostics.push_str(&denial_reasons(verdicts));
        }
        entries.push(json!({
            "resource": {"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "suppressed", "diagnostics": diagnostics}]},
            "search": {"mode": "outcome"}
        }));
        object.shift_remove("total");
    }
    if object
        .get("entry")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        object.shift_remove("entry");
    }
    withheld
}

/// Whether one resource may go to the requester: every patient it belongs to is one the
/// request named, and every category it belongs to is permitted; reference data without a
/// patient may go; anything that cannot be placed may not.
fn may_share(
    resource: &Value,
    registry: &SearchRegistry,
    allowed: &BTreeSet<String>,
    verdicts: &BTreeMap<DataCategory, Verdict>,
) -> bool {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if resource_type == "OperationOutcome" {
        return true;
    }
    let patients: Vec<String> = if resource_type == "Patient" {
        resource
            .get("id")
            .and_then(Value::as_str)
            .map(String::from)
            .into_iter()
            .collect()
    } else {
        registry.patient_compartments(resource)
    };
    if patients.is_empty() {
        return REFERENCE_DATA_TYPES.contains(&resource_type);
    }
    if !patients.iter().all(|p| allowed.contains(p)) {
        return false;
    }
    let categories = resource_categories(resource);
    !categories.is_empty() && categories.into_iter().all(|c| permitted(verdicts, c))
}

/// What a cached decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    /// The local Patient id.
    patient: String,
    /// The requesting organisation.
    requester: String,
    /// The professional's role, when the token names one.
    role: Option<String>,
    category: DataCategory,
    purpose: Purpose,
}

/// Consent decisions, each reused for the configured time.
struct DecisionCache {
    ttl: Duration,
    entries: Mutex<HashMap<DecisionKey, (Verdict, Instant)>>,
}

impl DecisionCache {
    fn new(ttl: Duration) -> DecisionCache {
        DecisionCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The answer for `key` if it was given less than the TTL before `now`.
    fn get(&self, key: &DecisionKey, now: Instant) -> Option<Verdict> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(verdict, _)| verdict.clone())
    }

    /// Remembers an answer given at `at` (not at all with a zero TTL).
    fn put(&self, key: DecisionKey, verdict: Verdict, at: Instant) {
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

/// The hub's token-verification keys, by key id.
#[derive(Default)]
struct HubKeys {
    known: RwLock<KnownKeys>,
    refresh: tokio::sync::Mutex<()>,
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
        let key_id = token::key_id_of(token).map_err(invalid)?;
        let key = match self.key(&key_id) {
            Some(key) => key,
            None => self
                .fetch(hub, &key_id)
                .await?
                .ok_or_else(|| invalid(token::TokenError::UnknownKey))?,
        };
        token::verify(token, &key, audience, zorgnet_db::now_ms() / 1000).map_err(invalid)
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

    fn scope(patient: PatientRef, types: &[&str], wide: bool) -> Result<Target, AccessError> {
        Ok(Target::Patient(PatientScope {
            patient,
            types: types.iter().map(|t| t.to_string()).collect(),
            wide,
        }))
    }

    fn check(method: Method, path: &str, query: &str, expected: Result<Target, AccessError>) {
        let got = classify(&method, path, &pairs(query));
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
            scope(Identifier(bsn.into()), &["MedicationStatement"], false),
        );
        check(
            Method::GET,
            "/fhir/Observation",
            "subject=Patient/p1&code=x",
            scope(Id("p1".into()), &["Observation"], false),
        );
        check(
            Method::GET,
            "/fhir/Observation",
            "patient=http://node/fhir/Patient/p1&_include=Observation:performer",
            scope(Id("p1".into()), &["Observation"], true),
        );
        check(
            Method::GET,
            "/fhir/Patient",
            "identifier=x|1",
            scope(Identifier("x|1".into()), &["Patient"], false),
        );
        check(
            Method::GET,
            "/fhir/Patient/p1",
            "",
            scope(Id("p1".into()), &["Patient"], false),
        );
        check(
            Method::GET,
            "/fhir/Patient/p1/%24everything",
            "_type=Condition,Encounter",
            scope(Id("p1".into()), &["Condition", "Encounter"], true),
        );
        check(
            Method::POST,
            "/fhir/AllergyIntolerance/_search",
            "patient=p1",
            scope(Id("p1".into()), &["AllergyIntolerance"], false),
        );
        check(
            Method::POST,
            "/fhir/Patient/p1/$everything",
            "_type=Condition&_type=Encounter&patient=p2",
            scope(Id("p1".into()), &["Condition", "Encounter"], true),
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

    fn verdicts(denied: &[DataCategory]) -> BTreeMap<DataCategory, Verdict> {
        DataCategory::ALL
            .into_iter()
            .map(|c| {
                let permit = !denied.contains(&c);
                (
                    c,
                    Verdict {
                        permit,
                        reason: if permit {
                            "ok".into()
                        } else {
                            format!("no {c}")
                        },
                    },
                )
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

    #[test]
    fn the_filter_keeps_only_the_named_patients_permitted_categories() {
        let registry = SearchRegistry::r4();
        let lab = |id: &str, patient: &str| {
            json!({"resource": {"resourceType": "Observation", "id": id,
                "subject": {"reference": format!("Patient/{patient}")},
                "category": [{"coding": [{"code": "laboratory"}]}]}})
        };
        let vitals = json!({"resource": {"resourceType": "Observation", "id": "v1",
            "subject": {"reference": "Patient/p1"},
            "category": [{"coding": [{"code": "vital-signs"}]}]}});
        let uncategorised = json!({"resource": {"resourceType": "Observation", "id": "u1",
            "subject": {"reference": "Patient/p1"}}});
        let practitioner = json!({"resource": {"resourceType": "Practitioner", "id": "d1"}});
        let encounter = json!({"resource": {"resourceType": "Encounter", "id": "e1"}});
        let patient = json!({"resource": {"resourceType": "Patient", "id": "p1"}});
        let bundle = || {
            json!({"resourceType": "Bundle", "type": "searchset", "total": 6, "entry": [
                lab("l1", "p1"), lab("l2", "p2"), vitals.clone(), uncategorised.clone(),
                practitioner.clone(), encounter.clone(), patient.clone()]})
        };
        let allowed: BTreeSet<String> = ["p1".to_string()].into();
        let ids = |b: &Value| -> Vec<String> {
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    e["resource"]["id"]
                        .as_str()
                        .unwrap_or("outcome")
                        .to_string()
                })
                .collect()
        };

        let mut all_permitted = bundle();
        let withheld = filter_bundle(&mut all_permitted, &registry, &allowed, &verdicts(&[]));
        assert_eq!(
            withheld, 3,
            "another patient's, one without category, one without patient"
        );
        assert_eq!(ids(&all_permitted), ["l1", "v1", "d1", "p1", "outcome"]);
        assert!(all_permitted.get("total").is_none());

        let mut no_summary = bundle();
        filter_bundle(
            &mut no_summary,
            &registry,
            &allowed,
            &verdicts(&[DataCategory::PatientSummary]),
        );
        assert_eq!(ids(&no_summary), ["l1", "d1", "outcome"]);
        let outcome = &no_summary["entry"][2]["resource"]["issue"][0]["diagnostics"];
        assert!(
            outcome.as_str().unwrap().contains("no patient-summary"),
            "{outcome}"
        );

        let mut clean = json!({"resourceType": "Bundle", "type": "searchset", "total": 1,
            "entry": [lab("l1", "p1")]});
        assert_eq!(
            filter_bundle(&mut clean, &registry, &allowed, &verdicts(&[])),
            0
        );
        assert_eq!(
            clean["total"], 1,
            "nothing withheld, nothing denied: untouched"
        );
        assert_eq!(ids(&clean), ["l1"]);
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
