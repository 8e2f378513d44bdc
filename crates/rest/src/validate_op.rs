//! `$validate` (FHIR R4 `Resource/$validate`): `POST [base]/{Type}/$validate` with a resource
//! (or a `Parameters` holding `resource`, `mode`, `profile`), and `GET`/`POST
//! [base]/{Type}/{id}/$validate` on the stored resource (or on a resource sent for it).
//!
//! The answer is always `200 OK` with an OperationOutcome when validation could be done,
//! errors or not, as the R4 OperationDefinition says ("This operation returns a 200 OK whether
//! or not the resource is valid. A 4xx or 5xx error means that the validation itself could not
//! be performed"): a body that is not JSON, a `profile` the node does not know ("SHALL return
//! an error"), an unknown `mode`, a stored resource that does not exist are 4xx. A valid
//! resource gets one `information` issue, "no issues".
//!
//! What is checked: the base structural validation of `zorgnet_fhir`, the base R4
//! invariants, and the profiles the resource declares in `meta.profile` and the one named by
//! `profile`, with the StructureDefinitions, ValueSets and CodeSystems stored in the node
//! (`POST StructureDefinition`, …) together with those loaded at start
//! ([`set_startup_profiles`]). The stored ones are read per request only when they changed:
//! three one-row searches tell (count and newest version of each type), and the compiled set
//! is kept per server until then. `mode=create` adds only a note when the resource
//! carries an `id` (a create ignores it; the node has no uniqueness rules to check),
//! `mode=update` requires the `id` to match the URL's (and notes when the update would create
//! the resource), and `mode=delete` only checks that the resource exists: references to it
//! are not checked, and the outcome says so.
//!
//! With [`Validation::enforce_profiles`] (`zorgnet node --enforce-profiles`), creates and
//! updates, also in Bundles and by PATCH, must conform to the profiles they declare in
//! `meta.profile` ([`enforce_declared_profiles`]), or are refused with 422.

use crate::AppState;
use crate::error::{FHIR_JSON, FhirError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use zorgnet_fhir::{Issue, IssueCode, operation_outcome};
use zorgnet_profiles::{ProfileSet, ValidationOptions, has_errors};
use zorgnet_store::ReadOutcome;

/// Most StructureDefinitions, ValueSets and CodeSystems read from the store, in resources
/// (all three types together).
pub const MAX_STORED_CONFORMANCE_RESOURCES: usize = 20_000;
/// Page size of the reads of stored definitions, in resources.
const STORED_PAGE_SIZE: usize = 1_000;
/// The types `$validate` reads from the store to validate with.
const CONFORMANCE_TYPES: [&str; 3] = ["StructureDefinition", "ValueSet", "CodeSystem"];

/// The routes: add them to the server's router (`.merge(validate_op::routes())`). Static
/// `$validate` segments take precedence over `{id}` and `{operation}`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/fhir/{resource_type}/$validate", post(type_validate))
        .route(
            "/fhir/{resource_type}/{id}/$validate",
            post(instance_validate).get(instance_validate),
        )
}

/// What `$validate` and profile enforcement keep per server ([`AppState::validation`]).
#[derive(Default)]
pub struct Validation {
    /// The profiles loaded at start (`--profiles DIR`), used with the stored ones.
    startup: RwLock<Option<Arc<ProfileSet>>>,
    /// Whether writes must conform to the profiles they declare (`--enforce-profiles`).
    enforce: AtomicBool,
    /// The set last compiled, and the stored definitions it was compiled from.
    cache: Mutex<Option<(Fingerprint, Arc<ProfileSet>)>>,
}

impl Validation {
    /// Sets the profiles loaded at start ([`ProfileSet::load_dir`]); they are used together
    /// with the StructureDefinitions stored in the node.
    pub fn set_startup_profiles(&self, profiles: ProfileSet) {
        *self
            .startup
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(profiles));
        // A set compiled with the old start-up profiles is stale.
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Makes creates and updates (also in Bundles) conform to the profiles they declare in
    /// `meta.profile`, or be refused with 422.
    pub fn enforce_profiles(&self, enforce: bool) {
        self.enforce.store(enforce, Ordering::Relaxed);
    }

    /// Whether writes must conform to the profiles they declare.
    pub fn enforcing(&self) -> bool {
        self.enforce.load(Ordering::Relaxed)
    }

    fn startup(&self) -> Option<Arc<ProfileSet>> {
        self.startup
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What tells whether the stored definitions changed: per type, the count and the newest
/// version (id, version, time).
type Fingerprint = Vec<(Option<i64>, Option<(String, i64, i64)>)>;

/// The profiles to validate with on this server: those loaded at start and those stored.
pub async fn profiles(state: &AppState) -> Result<Arc<ProfileSet>, FhirError> {
    let validation = &state.validation;
    let fingerprint = fingerprint(state).await?;
    let counted = fingerprint.iter().all(|(count, _)| count.is_some());
    if counted
        && let Some((known, profiles)) = validation
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        && *known == fingerprint
    {
        return Ok(profiles.clone());
    }
    let nothing_stored = fingerprint
        .iter()
        .all(|(count, newest)| newest.is_none() && count.is_none_or(|c| c == 0));
    let startup = validation.startup();
    let profiles = if nothing_stored {
        startup.unwrap_or_else(|| Arc::new(ProfileSet::new()))
    } else {
        let mut set = startup.map(|s| (*s).clone()).unwrap_or_default();
        for resource in stored_conformance_resources(state).await? {
            // A stored resource the set cannot take (no url) is passed over: it was
            // accepted by the store, and validation should not fail for it.
            let _ = set.add(resource);
        }
        Arc::new(set)
    };
    if counted {
        *validation
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((fingerprint, profiles.clone()));
    }
    Ok(profiles)
}

async fn fingerprint(state: &AppState) -> Result<Fingerprint, FhirError> {
    let mut fingerprint = Vec::new();
    for resource_type in CONFORMANCE_TYPES {
        let pairs = [
            ("_count".to_string(), "1".to_string()),
            ("_sort".to_string(), "-_lastUpdated".to_string()),
        ];
        let query = zorgnet_fhir::search::parse_search_query(
            &state.store.registry(),
            Some(resource_type),
            &pairs,
        )
        .map_err(FhirError::from_issue)?;
        let result = state.store.search(query).await?;
        let newest = result
            .matches
            .first()
            .map(|r| (r.id.clone(), r.version, r.last_updated_ms));
        fingerprint.push((result.total, newest));
    }
    Ok(fingerprint)
}

async fn stored_conformance_resources(state: &AppState) -> Result<Vec<Value>, FhirError> {
    let mut resources = Vec::new();
    for resource_type in CONFORMANCE_TYPES {
        let pairs = [("_count".to_string(), STORED_PAGE_SIZE.to_string())];
        let mut cursor: Option<String> = None;
        loop {
            let mut query = zorgnet_fhir::search::parse_search_query(
                &state.store.registry(),
                Some(resource_type),
                &pairs,
            )
            .map_err(FhirError::from_issue)?;
            query.cursor = cursor.take();
            let result = state.store.search(query).await?;
            for stored in &result.matches {
                if let Ok(value) = serde_json::from_str::<Value>(&stored.json) {
                    resources.push(value);
                }
            }
            if resources.len() > MAX_STORED_CONFORMANCE_RESOURCES {
                return Err(FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::TooCostly,
                    format!(
                        "the node stores more than MAX_STORED_CONFORMANCE_RESOURCES \
                         ({MAX_STORED_CONFORMANCE_RESOURCES}) StructureDefinitions, ValueSets \
                         and CodeSystems; $validate does not read them all"
                    ),
                ));
            }
            match result.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(resources)
}

/// For `--enforce-profiles`: validates a resource about to be written against the profiles
/// it declares in `meta.profile` (with the node's stored and start-up profiles). An error is
/// a 422 carrying the issues; warnings (an unknown declared profile among them) let the write
/// go ahead. Base invariants are not evaluated here (the write path's base validation stays
/// what it was).
pub async fn enforce_declared_profiles(
    state: &AppState,
    resource: &Value,
) -> Result<(), FhirError> {
    if !state.validation.enforcing() {
        return Ok(());
    }
    let declared = resource
        .pointer("/meta/profile")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    if !declared {
        return Ok(());
    }
    let profiles = profiles(state).await?;
    enforce_with(&profiles, resource)
}

/// [`enforce_declared_profiles`] with a given set.
pub fn enforce_with(profiles: &ProfileSet, resource: &Value) -> Result<(), FhirError> {
    let options = ValidationOptions {
        base_invariants: false,
        declared_profiles: true,
        extensions: true,
    };
    let issues: Vec<Issue> = profiles
        .validate_with(resource, &[], &options)
        .into_iter()
        .filter(|i| i.severity == zorgnet_fhir::Severity::Error)
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(FhirError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            issues,
        })
    }
}

/// The `mode` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    General,
    Create,
    Update,
    Delete,
}

/// What the request asks: the resource (if sent), mode and profile.
struct Request {
    resource: Option<Value>,
    mode: Mode,
    profile: Option<String>,
}

async fn type_validate(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, FhirError> {
    check_type(&resource_type)?;
    let request = read_request(&resource_type, raw.as_deref(), body).await?;
    if matches!(request.mode, Mode::Update | Mode::Delete) {
        return Err(FhirError::bad_request(
            "$validate with mode update or delete is invoked on an instance: \
             [base]/{Type}/{id}/$validate",
        ));
    }
    let Some(resource) = request.resource else {
        return Err(FhirError::bad_request(
            "$validate needs a resource: the body, or a Parameters with a 'resource' parameter",
        ));
    };
    check_resource_type(&resource, &resource_type)?;
    let mut notes = Vec::new();
    if request.mode == Mode::Create && resource.get("id").is_some() {
        notes.push(Issue::information(
            "mode create: the id in the resource is ignored by a create",
        ));
    }
    validate_and_answer(&state, resource, request.profile, notes).await
}

async fn instance_validate(
    State(state): State<Arc<AppState>>,
    method: Method,
    Path((resource_type, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, FhirError> {
    check_type(&resource_type)?;
    let request = if method == Method::POST {
        read_request(&resource_type, raw.as_deref(), body).await?
    } else {
        read_request(&resource_type, raw.as_deref(), Body::empty()).await?
    };
    let mut notes = Vec::new();
    if request.mode == Mode::Delete {
        state.refuse_external(&resource_type)?;
        stored(&state, &resource_type, &id).await?;
        return Ok(outcome_response(&[Issue::information(format!(
            "mode delete: {resource_type}/{id} exists and may be deleted; references to it \
             from other resources are not checked by this server"
        ))]));
    }
    let resource = match request.resource {
        Some(resource) => {
            check_resource_type(&resource, &resource_type)?;
            match resource.get("id").and_then(Value::as_str) {
                Some(given) if given != id => {
                    return Err(FhirError::bad_request(format!(
                        "the resource's id '{given}' does not match the id in the URL"
                    )));
                }
                None if request.mode == Mode::Update => {
                    return Err(FhirError::bad_request(
                        "mode update: the resource needs the id of the URL",
                    ));
                }
                _ => {}
            }
            if request.mode == Mode::Update {
                state.refuse_external(&resource_type)?;
                match state.store.read(&resource_type, &id).await? {
                    ReadOutcome::Found(_) => {}
                    _ => notes.push(Issue::information(format!(
                        "mode update: {resource_type}/{id} does not exist yet; the update \
                         would create it"
                    ))),
                }
            }
            resource
        }
        None => {
            state.refuse_external(&resource_type)?;
            stored(&state, &resource_type, &id).await?
        }
    };
    validate_and_answer(&state, resource, request.profile, notes).await
}

async fn stored(state: &AppState, resource_type: &str, id: &str) -> Result<Value, FhirError> {
    match state.store.read(resource_type, id).await? {
        ReadOutcome::Found(stored) => serde_json::from_str(&stored.json).map_err(|e| {
            FhirError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                IssueCode::Exception,
                format!("stored resource is not JSON: {e}"),
            )
        }),
        ReadOutcome::Deleted { .. } => Err(FhirError::new(
            StatusCode::GONE,
            IssueCode::Deleted,
            format!("{resource_type}/{id} is deleted"),
        )),
        ReadOutcome::NotFound => Err(FhirError::not_found(format!(
            "{resource_type}/{id} is not known"
        ))),
    }
}

async fn validate_and_answer(
    state: &AppState,
    resource: Value,
    profile: Option<String>,
    mut notes: Vec<Issue>,
) -> Result<Response, FhirError> {
    let profiles = profiles(state).await?;
    if let Some(url) = &profile {
        let base_type = url
            .strip_prefix("http://hl7.org/fhir/StructureDefinition/")
            .is_some_and(|t| zorgnet_fhir::model::r4().types.contains_key(t));
        match profiles.definition(url) {
            Some(Ok(_)) => {}
            _ if base_type => {}
            Some(Err(why)) => {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueCode::NotSupported,
                    format!("profile {url} cannot be used: {why}"),
                ));
            }
            None => {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueCode::NotSupported,
                    format!(
                        "profile {url} is not known to this server: store its \
                         StructureDefinition first"
                    ),
                ));
            }
        }
    }
    // Validation is CPU work: off the async threads.
    let issues = tokio::task::spawn_blocking(move || {
        let named: Vec<&str> = profile.iter().map(String::as_str).collect();
        profiles.validate_full(&resource, &named)
    })
    .await
    .map_err(|e| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            format!("validation failed: {e}"),
        )
    })?;
    notes.extend(issues);
    if !has_errors(&notes) && notes.iter().all(|i| i.code == IssueCode::Informational) {
        notes.insert(0, Issue::information("no issues: the resource is valid"));
    }
    Ok(outcome_response(&notes))
}

fn outcome_response(issues: &[Issue]) -> Response {
    let body = operation_outcome(issues).to_string();
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

fn check_type(resource_type: &str) -> Result<(), FhirError> {
    if zorgnet_fhir::model::r4().is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "unknown resource type '{resource_type}'"
        )))
    }
}

fn check_resource_type(resource: &Value, resource_type: &str) -> Result<(), FhirError> {
    let actual = resource.get("resourceType").and_then(Value::as_str);
    if actual == Some(resource_type) {
        return Ok(());
    }
    Err(FhirError::bad_request(format!(
        "resourceType {} does not match the URL's type {resource_type}",
        actual.map_or("(missing)".to_string(), |a| format!("'{a}'"))
    )))
}

/// Reads the request: `mode` and `profile` from the query, then the body — the resource
/// itself, or a `Parameters` with `resource`, `mode` and `profile` (which win over the
/// query's).
async fn read_request(
    resource_type: &str,
    raw_query: Option<&str>,
    body: Body,
) -> Result<Request, FhirError> {
    let mut mode = None;
    let mut profile = None;
    for (name, value) in crate::interactions::query_pairs(raw_query) {
        match name.as_str() {
            "mode" => mode = Some(value),
            "profile" => profile = Some(value),
            _ => {}
        }
    }
    let bytes = axum::body::to_bytes(body, crate::REQUEST_BODY_LIMIT_BYTES)
        .await
        .map_err(|_| {
            FhirError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueCode::TooCostly,
                format!(
                    "request body larger than {} bytes",
                    crate::REQUEST_BODY_LIMIT_BYTES
                ),
            )
        })?;
    let mut resource = None;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
            FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Structure,
                format!("malformed JSON: {e}"),
            )
        })?;
        if is_parameters_wrapper(&body, resource_type) {
            for parameter in body
                .get("parameter")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let text = |keys: &[&str]| {
                    keys.iter()
                        .find_map(|k| parameter.get(*k).and_then(Value::as_str))
                        .map(String::from)
                };
                match parameter.get("name").and_then(Value::as_str) {
                    Some("resource") => resource = parameter.get("resource").cloned(),
                    Some("mode") => mode = text(&["valueCode", "valueString"]).or(mode),
                    Some("profile") => {
                        profile = text(&["valueUri", "valueCanonical", "valueUrl", "valueString"])
                            .or(profile)
                    }
                    _ => {}
                }
            }
        } else {
            resource = Some(body);
        }
    }
    let mode = match mode.as_deref() {
        None => Mode::General,
        Some("create") => Mode::Create,
        Some("update") => Mode::Update,
        Some("delete") => Mode::Delete,
        Some(other) => {
            return Err(FhirError::bad_request(format!(
                "unknown $validate mode '{other}' (create, update or delete)"
            )));
        }
    };
    Ok(Request {
        resource,
        mode,
        profile,
    })
}

/// Whether a body is the operation's `Parameters` rather than the resource to validate: it
/// is a Parameters, and either the URL's type is not Parameters or it has a `resource`
/// parameter holding a resource.
fn is_parameters_wrapper(body: &Value, resource_type: &str) -> bool {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return false;
    }
    if resource_type != "Parameters" {
        return true;
    }
    body.get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| {
            p.get("name").and_then(Value::as_str) == Some("resource") && p.get("resource").is_some()
        })
}
