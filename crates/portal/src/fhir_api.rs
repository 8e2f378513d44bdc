//! The citizen's merged record for apps: a read-only FHIR R4 endpoint at `/fhir` with SMART on
//! FHIR scopes, so that a citizen's PGO app or a record system reads with a standard FHIR
//! client what the portal's pages show.
//!
//! - `GET /fhir/metadata`: a CapabilityStatement (read-only, FHIR 4.0.1, each type served with
//!   `read` and `search-type` and the parameters below, `rest.security` with the SMART
//!   `oauth-uris` extension naming the provider's endpoints).
//! - `GET /fhir/.well-known/smart-configuration`: SMART App Launch 2.0 discovery.
//! - `GET /fhir/{type}` (`patient`, `_id`, `_count`, `_format`): a `searchset` Bundle of the
//!   citizen's resources of that type at every source, each entry with its `fullUrl` at its
//!   source, `search.mode` `match`, and the resource's `meta.source` set to its source's FHIR
//!   base; an OperationOutcome entry (`search.mode` `outcome`) names the sources that did not
//!   answer, the parameters ignored and a record cut short. `patient` keeps the resources of
//!   that Patient id (the citizen's Patient at any source; another person's id finds
//!   nothing, since only the citizen's own data is ever fetched). `_count` cuts the answer
//!   (there is no paging: `total` counts every match). Another parameter is ignored with a
//!   warning, or refused (400) under `Prefer: handling=strict`.
//! - `GET /fhir/{type}/{id}`: the resource of that type and id in the merged record. Ids are
//!   each node's own and may collide across nodes (the same Patient at two nodes, say): a
//!   read answers only when exactly one source holds that type and id; otherwise `300
//!   Multiple Choices` with an OperationOutcome naming every `fullUrl` (search with `_id` to
//!   get them all), or 404.
//! - Any other method: 405 with an OperationOutcome; anything else under `/fhir`: 404.
//!
//! Authentication: `Authorization: Bearer` with an access token of the portal's provider for
//! the portal's client id (the audience the nodes accept). An app gets one by itself through
//! SMART App Launch (standalone, a public client with PKCE): it finds the provider in
//! `.well-known/smart-configuration` and names this endpoint's URL as `aud` in its
//! authorization request, for which the provider issues the token with the portal's
//! audience (the demo's provider: `zorgnet_idp::ResourceServer`). The token is verified here first through
//! `zorgnet_trust::oidc`: it must name a citizen, by a BSN (`bsn`) or a zorgverificatienummer
//! (`zvn`), whose data is then found at the nodes by that number alike (a professional's
//! token is 403, no token or an invalid one 401 with `WWW-Authenticate: Bearer`). Its
//! `patient/` or `user/` SMART scopes (`zorgnet_trust::smart`, v1 and v2) must permit
//! searching (for a search) or reading (for a read) the type, else 403. The token is then
//! passed to the nodes, which verify it again and decide (the portal never decides access):
//! with a scope for every type (`patient/*.read`, `patient/*.rs`) the record is read as the
//! pages read it (`Patient/{id}/$everything` at every source, [`Question::Record`]); with
//! scopes for some types only, by a search of the asked type alone ([`Question::Search`]),
//! which only the types of the Patient compartment allow: the reference data
//! (practitioners, organisations, locations, medications) is reached only through
//! `$everything`, so it needs a scope for every type.
//! What it is not: a FHIR server of its own (nothing is stored; every request asks the
//! sources again), writable, paged, or a place to read anyone else's data.

use crate::Inner;
use crate::citizen::CitizenId;
use crate::sources::{Failure, Found, Gathered, Question, gather};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zorgnet_trust::oidc::{BSN_CLAIM, CITIZEN_CONTEXTS, CitizenIdentity, ZVN_CLAIM};
use zorgnet_trust::smart::Interaction;

/// The FHIR JSON media type of every answer.
pub(crate) const FHIR_JSON: &str = "application/fhir+json";
/// The FHIR version served.
pub(crate) const FHIR_VERSION: &str = "4.0.1";
/// The types of the Patient compartment served: found by a search of the type alone at each
/// source (each has a `patient` search parameter in R4), or in `$everything`.
pub(crate) const COMPARTMENT_TYPES: [&str; 17] = [
    "Patient",
    "AllergyIntolerance",
    "Composition",
    "Condition",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Flag",
    "ImagingStudy",
    "Immunization",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
];
/// The reference data served: found only in `$everything` (a scope for every type).
pub(crate) const REFERENCE_TYPES: [&str; 5] = [
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
];
/// The search parameters supported, on every type but Patient (which has no `patient`).
const SEARCH_PARAMETERS: [(&str, &str, &str); 3] = [
    (
        "patient",
        "reference",
        "The resources of this Patient id (one of the citizen's Patients at any source)",
    ),
    ("_id", "token", "The resources with this id (at any source)"),
    (
        "_count",
        "number",
        "At most this many entries; there is no paging (total counts every match)",
    ),
];
/// Parameters accepted and not searched by (`_format` only as JSON).
const RESULT_PARAMETERS: [&str; 1] = ["_format"];
/// The SMART extension naming the OAuth endpoints.
const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// A served type by name.
fn served_type(name: &str) -> Option<&'static str> {
    COMPARTMENT_TYPES
        .iter()
        .chain(REFERENCE_TYPES.iter())
        .find(|t| **t == name)
        .copied()
}

/// Every served type.
fn served_types() -> impl Iterator<Item = &'static str> {
    COMPARTMENT_TYPES
        .iter()
        .chain(REFERENCE_TYPES.iter())
        .copied()
}

/// The routes, for `pages::router` to merge.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/fhir", read_only(get(not_found)))
        .route("/fhir/metadata", read_only(get(metadata)))
        .route(
            "/fhir/.well-known/smart-configuration",
            read_only(get(smart_configuration)),
        )
        .route("/fhir/{resource_type}", read_only(get(search)))
        .route("/fhir/{resource_type}/{id}", read_only(get(read)))
        .route("/fhir/{resource_type}/{id}/{*rest}", any(not_found))
}

/// `route` with every method it does not name refused with 405.
fn read_only(route: MethodRouter<Arc<Inner>>) -> MethodRouter<Arc<Inner>> {
    route.fallback(method_not_allowed)
}

/// An OperationOutcome of one issue.
pub(crate) fn outcome(severity: &str, code: &str, text: &str) -> Value {
    json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}]})
}

/// `body` as FHIR JSON with `status`.
pub(crate) fn fhir(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// An error as an OperationOutcome.
fn error(status: StatusCode, code: &str, text: &str) -> Response {
    fhir(status, &outcome("error", code, text))
}

async fn method_not_allowed() -> Response {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "this FHIR endpoint is read-only: only GET (and HEAD) are served",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not-supported",
        "not served here: see /fhir/metadata for what is (read and search of a type)",
    )
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The FHIR base of the endpoint.
fn base(inner: &Inner) -> String {
    format!("{}/fhir", inner.config.base_url)
}

/// A citizen's verified bearer token.
pub(crate) struct App {
    /// The token, as given (passed on to the sources only).
    pub(crate) token: String,
    /// The citizen, from the verified token's `bsn` or `zvn` claim.
    pub(crate) citizen: CitizenId,
    pub(crate) identity: CitizenIdentity,
}

impl App {
    /// Whether a `patient/` or `user/` scope permits `interaction` on `resource_type`.
    pub(crate) fn permits(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.identity.permits(resource_type, interaction)
    }

    /// Whether a wildcard `patient/` or `user/` scope permits `interaction` on every type.
    fn permits_every_type(&self, interaction: Interaction) -> bool {
        self.identity
            .scopes
            .permits_every_type(&CITIZEN_CONTEXTS, interaction)
    }
}

/// Why a bearer token is not accepted.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// No `Authorization: Bearer`: 401.
    Missing,
    /// It does not verify: 401.
    Invalid(String),
    /// The provider could not be asked: 503.
    Provider,
    /// It is not a citizen's (no BSN or zorgverificatienummer): 403.
    NotCitizen(&'static str),
}

impl AuthError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
            AuthError::Provider => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::NotCitizen(_) => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            AuthError::Missing => "an access token is required: Authorization: Bearer …".into(),
            AuthError::Invalid(why) => format!("the access token is not accepted: {why}"),
            AuthError::Provider => "the identity provider could not be asked".into(),
            AuthError::NotCitizen(why) => (*why).into(),
        }
    }

    /// The `WWW-Authenticate` header of a 401.
    pub(crate) fn challenge(&self) -> Option<HeaderValue> {
        match self {
            AuthError::Missing => Some(HeaderValue::from_static("Bearer realm=\"zorgnet-portal\"")),
            AuthError::Invalid(_) => Some(HeaderValue::from_static(
                "Bearer realm=\"zorgnet-portal\", error=\"invalid_token\"",
            )),
            _ => None,
        }
    }
}

/// The `WWW-Authenticate` header of a 403 for want of a scope.
pub(crate) const INSUFFICIENT_SCOPE: &str =
    "Bearer realm=\"zorgnet-portal\", error=\"insufficient_scope\"";

/// Verifies the request's bearer token: a citizen's, with a BSN or a zorgverificatienummer,
/// for the portal's client id.
pub(crate) async fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<App, AuthError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)?;
    let verified = inner.provider.verifier().verify(token).await.map_err(|e| {
        if e.is_provider_failure() {
            tracing::warn!("the identity provider could not be asked to verify a token");
            AuthError::Provider
        } else {
            AuthError::Invalid(e.to_string())
        }
    })?;
    let identity = verified.into_citizen().map_err(|_| {
        AuthError::NotCitizen("this endpoint is for citizens: the token names no citizen")
    })?;
    // The signature has been verified above: the payload can be read as it stands.
    let citizen = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .and_then(|claims| {
            CitizenId::of_claims(claims[BSN_CLAIM].as_str(), claims[ZVN_CLAIM].as_str())
        })
        .filter(|citizen| *citizen.person() == identity.person)
        .ok_or(AuthError::Invalid("unreadable claims".into()))?;
    Ok(App {
        token: token.to_string(),
        citizen,
        identity,
    })
}

/// A refused token as an OperationOutcome.
fn refused(e: &AuthError) -> Response {
    let code = match e {
        AuthError::Missing | AuthError::Invalid(_) => "login",
        AuthError::Provider => "transient",
        AuthError::NotCitizen(_) => "forbidden",
    };
    let mut response = error(e.status(), code, &e.text());
    if let Some(challenge) = e.challenge() {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// 403 for want of a scope.
fn scope_refused(resource_type: &str, interaction: Interaction) -> Response {
    let what = if interaction == Interaction::Read {
        "read"
    } else {
        "search"
    };
    let mut response = error(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("the token's SMART scopes do not permit to {what} {resource_type}"),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(INSUFFICIENT_SCOPE),
    );
    response
}

/// The provider's authorization and token endpoints, or 503.
async fn endpoints(inner: &Inner) -> Result<(String, String), Response> {
    inner.provider.endpoints(&inner.http).await.map_err(|e| {
        tracing::warn!(error = %e, "the identity provider's discovery document");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "the identity provider's discovery document could not be read",
        )
    })
}

/// `GET /fhir/metadata`.
async fn metadata(State(inner): State<Arc<Inner>>) -> Response {
    let (authorize, token) = match endpoints(&inner).await {
        Ok(endpoints) => endpoints,
        Err(response) => return response,
    };
    let resources: Vec<Value> = served_types()
        .map(|t| {
            let parameters: Vec<Value> = SEARCH_PARAMETERS
                .iter()
                .filter(|(name, _, _)| t != "Patient" || *name != "patient")
                .map(
                    |(name, kind, text)| json!({"name": name, "type": kind, "documentation": text}),
                )
                .collect();
            json!({"type": t,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "versioning": "no-version",
                "readHistory": false,
                "updateCreate": false,
                "searchParam": parameters})
        })
        .collect();
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now(),
        "publisher": "zorgnet",
        "kind": "instance",
        "software": {"name": "zorgnet-portal", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "Mijn Gezondheidsoverzicht: the citizen's merged record from every \
                care provider's node, read-only",
            "url": base(&inner)},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read-only. Every answer is the token's citizen's own data, asked of \
                every source at the time of the request; ids are the sources' own, and a read \
                by id answers only when one source holds it (see fullUrl and meta.source).",
            "security": {
                "cors": false,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}]}],
                "description": "OAuth2 bearer tokens of the portal's OpenID provider for the \
                    portal's client id, naming a citizen (bsn or zvn); SMART patient/ or user/ \
                    scopes (v1 read, v2 rs) per type",
                "extension": [{"url": OAUTH_URIS, "extension": [
                    {"url": "authorize", "valueUri": authorize},
                    {"url": "token", "valueUri": token}]}]},
            "resource": resources}]});
    fhir(StatusCode::OK, &statement)
}

/// `GET /fhir/.well-known/smart-configuration`.
async fn smart_configuration(State(inner): State<Arc<Inner>>) -> Response {
    let (authorize, token) = match endpoints(&inner).await {
        Ok(endpoints) => endpoints,
        Err(response) => return response,
    };
    let mut scopes = vec![
        "openid".to_string(),
        "patient/*.read".to_string(),
        "patient/*.rs".to_string(),
    ];
    for t in COMPARTMENT_TYPES {
        scopes.push(format!("patient/{t}.read"));
        scopes.push(format!("patient/{t}.rs"));
    }
    // What the JSON API (`/api/v1`) asks of a token.
    for scope in [
        "patient/AuditEvent.read",
        "patient/Consent.read",
        "patient/Consent.write",
        "patient/Consent.cruds",
    ] {
        scopes.push(scope.to_string());
    }
    let configuration = json!({
        "issuer": inner.config.issuer,
        "authorization_endpoint": authorize,
        "token_endpoint": token,
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["authorization_code"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes,
        "capabilities": [
            "launch-standalone",
            "client-public",
            "sso-openid-connect",
            "permission-patient",
            "permission-v1",
            "permission-v2"
        ]
    });
    let mut response = (StatusCode::OK, configuration.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why a type cannot be fetched for a token.
fn needs_every_type(resource_type: &str) -> Response {
    let mut response = error(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!(
            "{resource_type} is reference data, found only in the whole record: it needs a \
             scope for every type (patient/*.read)"
        ),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(INSUFFICIENT_SCOPE),
    );
    response
}

/// The citizen's resources of `resource_type` at every source (and the sources that did not
/// answer), asked as the token's scopes allow (see the module documentation).
async fn fetch(
    inner: &Arc<Inner>,
    app: &App,
    resource_type: &'static str,
) -> Result<Gathered, Response> {
    let question = if app.permits_every_type(Interaction::Search) {
        Question::Record
    } else if COMPARTMENT_TYPES.contains(&resource_type) {
        Question::Search(resource_type)
    } else {
        return Err(needs_every_type(resource_type));
    };
    let mut gathered = gather(inner, &app.token, &app.citizen, question).await;
    gathered
        .found
        .retain(|found| found.resource["resourceType"] == resource_type);
    Ok(gathered)
}

/// `found`'s resource with `meta.source` naming its source.
fn with_source(inner: &Inner, found: &Found) -> Value {
    let mut resource = found.resource.clone();
    if let Some(object) = resource.as_object_mut() {
        let meta = object
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                "source".into(),
                Value::String(inner.config.sources[found.source].fhir_base.clone()),
            );
        }
    }
    resource
}

/// A source that did not answer, as an issue.
fn failure_issue(inner: &Inner, source: &str, failure: &Failure) -> Value {
    let base = inner
        .config
        .sources
        .iter()
        .find(|s| s.name == source)
        .map(|s| s.fhir_base.as_str())
        .unwrap_or_default();
    let (code, why) = match failure {
        Failure::Timeout => ("timeout", "did not answer in time".to_string()),
        Failure::Unreachable => ("transient", "could not be reached".to_string()),
        Failure::Status(status) => ("transient", format!("answered HTTP {status}")),
        Failure::Invalid => ("transient", "answered something unusable".to_string()),
    };
    json!({"severity": "warning", "code": code,
        "details": {"text": source},
        "diagnostics": format!("the source {source} ({base}) {why}: its data is missing")})
}

/// Whether the Patient named by a `patient` parameter value (`id`, `Patient/id` or a URL
/// ending so) is the Patient `resource` refers to as its subject or patient.
fn of_patient(resource: &Value, wanted: &str) -> bool {
    let id = wanted.rsplit("Patient/").next().unwrap_or(wanted);
    ["subject", "patient", "beneficiary"].iter().any(|field| {
        resource[*field]["reference"]
            .as_str()
            .and_then(|r| r.rsplit_once("Patient/"))
            .is_some_and(|(_, referenced)| referenced == id)
    })
}

/// Whether the request asks for strict handling (`Prefer: handling=strict`).
fn strict(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
}

/// A search's criteria.
#[derive(Default)]
struct Criteria {
    patient: Vec<String>,
    ids: Vec<String>,
    count: Option<usize>,
    ignored: Vec<String>,
}

fn criteria(resource_type: &str, query: &str, strict: bool) -> Result<Criteria, Box<Response>> {
    let mut criteria = Criteria::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "patient" if resource_type != "Patient" => criteria
                .patient
                .extend(value.split(',').map(str::trim).map(String::from)),
            "_id" => criteria
                .ids
                .extend(value.split(',').map(str::trim).map(String::from)),
            "_count" => match value.parse::<usize>() {
                Ok(count) => criteria.count = Some(count),
                Err(_) => {
                    return Err(Box::new(error(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "_count is a number",
                    )));
                }
            },
            name if RESULT_PARAMETERS.contains(&name) => {
                if !value.contains("json") {
                    return Err(Box::new(error(
                        StatusCode::NOT_ACCEPTABLE,
                        "not-supported",
                        "only JSON is served",
                    )));
                }
            }
            other => {
                if strict {
                    return Err(Box::new(error(
                        StatusCode::BAD_REQUEST,
                        "not-supported",
                        &format!(
                            "the search parameter {other} is not supported on {resource_type} \
                             (see /fhir/metadata)"
                        ),
                    )));
                }
                criteria.ignored.push(other.to_string());
            }
        }
    }
    Ok(criteria)
}

/// `GET /fhir/{type}`.
async fn search(
    State(inner): State<Arc<Inner>>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let app = match authenticate(&inner, &headers).await {
        Ok(app) => app,
        Err(e) => return refused(&e),
    };
    let Some(resource_type) = served_type(&resource_type) else {
        return not_found().await;
    };
    if !app.permits(resource_type, Interaction::Search) {
        return scope_refused(resource_type, Interaction::Search);
    }
    let query = query.unwrap_or_default();
    let criteria = match criteria(resource_type, &query, strict(&headers)) {
        Ok(criteria) => criteria,
        Err(response) => return *response,
    };
    let gathered = match fetch(&inner, &app, resource_type).await {
        Ok(gathered) => gathered,
        Err(response) => return response,
    };
    let matches: Vec<&Found> = gathered
        .found
        .iter()
        .filter(|f| {
            criteria.ids.is_empty()
                || f.resource["id"]
                    .as_str()
                    .is_some_and(|id| criteria.ids.iter().any(|i| i == id))
        })
        .filter(|f| {
            criteria.patient.is_empty()
                || criteria.patient.iter().any(|p| of_patient(&f.resource, p))
        })
        .collect();
    let total = matches.len();
    let mut entries: Vec<Value> = matches
        .iter()
        .take(criteria.count.unwrap_or(usize::MAX))
        .map(|found| {
            json!({"fullUrl": found.full_url, "resource": with_source(&inner, found),
                "search": {"mode": "match"}})
        })
        .collect();
    let mut issues: Vec<Value> = gathered
        .failures
        .iter()
        .map(|f| failure_issue(&inner, &f.source, &f.failure))
        .collect();
    for source in &gathered.truncated {
        issues.push(json!({"severity": "warning", "code": "incomplete",
            "details": {"text": source},
            "diagnostics": format!("the record at {source} was cut short")}));
    }
    for name in &criteria.ignored {
        issues.push(json!({"severity": "warning", "code": "not-supported",
            "diagnostics": format!("the search parameter {name} is not supported and was ignored")}));
    }
    if entries.len() < total {
        issues.push(json!({"severity": "information", "code": "informational",
            "diagnostics": format!("the first {} of {total} matches: there is no paging", entries.len())}));
    }
    if !issues.is_empty() {
        let id = uuid::Uuid::new_v4();
        entries.push(json!({"fullUrl": format!("urn:uuid:{id}"),
            "resource": {"resourceType": "OperationOutcome", "id": id.to_string(), "issue": issues},
            "search": {"mode": "outcome"}}));
    }
    let self_url = if query.is_empty() {
        format!("{}/{resource_type}", base(&inner))
    } else {
        format!("{}/{resource_type}?{query}", base(&inner))
    };
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": now()},
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries});
    fhir(StatusCode::OK, &bundle)
}

/// `GET /fhir/{type}/{id}`.
async fn read(
    State(inner): State<Arc<Inner>>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let app = match authenticate(&inner, &headers).await {
        Ok(app) => app,
        Err(e) => return refused(&e),
    };
    let Some(resource_type) = served_type(&resource_type) else {
        return not_found().await;
    };
    if !zorgnet_fhir::validate::is_valid_id(&id) {
        return error(StatusCode::BAD_REQUEST, "invalid", "not a valid FHIR id");
    }
    if !app.permits(resource_type, Interaction::Read) {
        return scope_refused(resource_type, Interaction::Read);
    }
    let gathered = match fetch(&inner, &app, resource_type).await {
        Ok(gathered) => gathered,
        Err(response) => return response,
    };
    let found: Vec<&Found> = gathered
        .found
        .iter()
        .filter(|f| f.resource["id"] == id.as_str())
        .collect();
    match found.as_slice() {
        [one] => {
            let mut response = fhir(StatusCode::OK, &with_source(&inner, one));
            if let Ok(location) = HeaderValue::from_str(&one.full_url) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LOCATION, location);
            }
            response
        }
        [] => {
            let mut issues = vec![json!({"severity": "error", "code": "not-found",
                "diagnostics": format!("{resource_type}/{id} is not in your record")})];
            issues.extend(
                gathered
                    .failures
                    .iter()
                    .map(|f| failure_issue(&inner, &f.source, &f.failure)),
            );
            fhir(
                StatusCode::NOT_FOUND,
                &json!({"resourceType": "OperationOutcome", "issue": issues}),
            )
        }
        several => {
            let urls: Vec<&str> = several.iter().map(|f| f.full_url.as_str()).collect();
            fhir(
                StatusCode::MULTIPLE_CHOICES,
                &json!({"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "multiple-matches",
                    "diagnostics": format!(
                        "{resource_type}/{id} is held by several sources ({}): search with _id={id} for all",
                        urls.join(", "))}]}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_references_are_matched_by_id() {
        let observation = json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/p1"}});
        assert!(of_patient(&observation, "p1"));
        assert!(of_patient(&observation, "Patient/p1"));
        assert!(of_patient(&observation, "https://x/fhir/Patient/p1"));
        assert!(!of_patient(&observation, "p2"));
        assert!(!of_patient(
            &json!({"subject": {"reference": "Group/p1"}}),
            "p1"
        ));
    }

    #[test]
    fn strict_handling_is_read_from_prefer() {
        let mut headers = HeaderMap::new();
        assert!(!strict(&headers));
        headers.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, handling=strict"),
        );
        assert!(strict(&headers));
    }

    #[test]
    fn unknown_parameters_are_refused_only_when_strict() {
        assert!(criteria("Observation", "code=1&patient=p", true).is_err());
        let lenient = criteria("Observation", "code=1&patient=p&_count=2", false)
            .ok()
            .unwrap();
        assert_eq!(lenient.ignored, vec!["code".to_string()]);
        assert_eq!(lenient.patient, vec!["p".to_string()]);
        assert_eq!(lenient.count, Some(2));
        assert!(criteria("Patient", "patient=p", true).is_err());
    }
}
