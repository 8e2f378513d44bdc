//! FHIR REST interactions: create, read, vread, update, delete, search, history,
//! `$everything` (by `GET`, or by `POST` with a `Parameters` body). Each handler parses and
//! validates, asks the store, and renders. Media types are checked before any handler runs
//! (`crate::format`).

use crate::AppState;
use crate::bundle::{self, BundleEntry, EntryMode};
use crate::capability;
use crate::constraint::SearchConstraint;
use crate::error::{FHIR_JSON, FhirError};
use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use std::sync::Arc;
use zorgnet_fhir::search::{SearchQuery, Summary, parse_search_query};
use zorgnet_fhir::{Issue, IssueCode, validate_resource};
use zorgnet_store::{
    HistoryScope, ReadOutcome, SearchResult, StoredResource, WriteOp, WriteOutcome,
};

type AppResult = Result<Response, FhirError>;
type AppStateRef = State<Arc<AppState>>;

/// Most entries in one history page.
const MAX_HISTORY_PAGE_SIZE: usize = 1_000;
/// History page size when `_count` is absent.
const DEFAULT_HISTORY_PAGE_SIZE: usize = 100;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/fhir/metadata", get(capability::metadata))
        .route(
            "/fhir",
            post(bundle::transaction_or_batch).get(system_search),
        )
        .route(
            "/fhir/",
            post(bundle::transaction_or_batch).get(system_search),
        )
        .route("/fhir/_history", get(system_history))
        .route(
            "/fhir/{resource_type}",
            get(search_get)
                .post(create)
                .put(conditional_update)
                .patch(crate::patch::conditional_patch)
                .delete(conditional_delete),
        )
        .route("/fhir/{resource_type}/_search", post(search_post))
        .route("/fhir/{resource_type}/_history", get(type_history))
        .route(
            "/fhir/{resource_type}/{id}",
            get(read)
                .put(update)
                .patch(crate::patch::patch)
                .delete(delete)
                .post(type_operation),
        )
        .route(
            "/fhir/{resource_type}/{id}/{operation}",
            get(instance_operation).post(instance_operation),
        )
        .route("/fhir/{resource_type}/{id}/_history/{version}", get(vread))
        .merge(crate::export::routes())
        .merge(crate::reindex::routes())
        .fallback(|| async { FhirError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
}

pub(crate) fn check_type(resource_type: &str) -> Result<(), FhirError> {
    if zorgnet_fhir::model::r4().is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::NOT_FOUND,
            IssueCode::NotSupported,
            format!("unknown resource type '{resource_type}'"),
        ))
    }
}

/// A known type whose resources the store holds (not one of the embedder's
/// [`crate::ExternalType`]s, which are refused with 405).
pub(crate) fn check_stored(state: &AppState, resource_type: &str) -> Result<(), FhirError> {
    check_type(resource_type)?;
    state.refuse_external(resource_type)
}

pub(crate) fn check_id(id: &str) -> Result<(), FhirError> {
    if zorgnet_fhir::validate::is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::bad_request(format!(
            "'{id}' is not a valid FHIR id"
        )))
    }
}

/// Largest `POST …/_search` body read: a search's decoded text may not exceed
/// `MAX_QUERY_BYTES`, and percent-encoding at most triples it, so a larger body can only be
/// refused; reading 64 MiB first would only cost memory.
pub const SEARCH_BODY_LIMIT_BYTES: usize = 3 * zorgnet_fhir::search::MAX_QUERY_BYTES;

/// Reads a JSON body (its media type was checked by `crate::format`), refusing oversized
/// and empty bodies.
pub(crate) async fn read_json_body(body: Body) -> Result<Value, FhirError> {
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
    if bytes.is_empty() {
        return Err(FhirError::bad_request("request body is empty"));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Structure,
            format!("malformed JSON: {e}"),
        )
    })
}

/// Validates a resource meant for `resource_type`.
pub(crate) fn validate_for(resource: &Value, resource_type: &str) -> Result<(), FhirError> {
    let actual = resource.get("resourceType").and_then(Value::as_str);
    if actual != Some(resource_type) {
        return Err(FhirError::bad_request(format!(
            "resourceType {} does not match the URL's type {resource_type}",
            actual.map_or("(missing)".to_string(), |a| format!("'{a}'"))
        )));
    }
    let issues = validate_resource(resource);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(FhirError::from_validation(issues))
    }
}

/// Headers every single-resource response carries.
pub(crate) fn resource_headers(stored: &StoredResource, base: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version)) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(stored.last_updated_ms)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{base}/{}/{}/_history/{}",
        stored.resource_type, stored.id, stored.version
    )) {
        headers.insert(header::CONTENT_LOCATION, v);
    }
    headers
}

fn http_date(epoch_ms: i64) -> String {
    let moment = time::OffsetDateTime::from_unix_timestamp(epoch_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    moment.format(&format).unwrap_or_default()
}

/// `Prefer: return=…`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReturnPreference {
    Minimal,
    Representation,
    OperationOutcome,
}

pub(crate) fn return_preference(headers: &HeaderMap) -> ReturnPreference {
    let prefer = prefer_values(headers);
    if prefer.iter().any(|p| p == "return=minimal") {
        ReturnPreference::Minimal
    } else if prefer.iter().any(|p| p == "return=OperationOutcome") {
        ReturnPreference::OperationOutcome
    } else {
        ReturnPreference::Representation
    }
}

pub(crate) fn prefer_values(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .map(|s| s.trim().replace(' ', ""))
        .collect()
}

fn strict_handling(headers: &HeaderMap) -> bool {
    prefer_values(headers)
        .iter()
        .any(|p| p == "handling=strict")
}

/// Renders a write's result as the REST response.
pub(crate) fn write_response(
    status: StatusCode,
    stored: &StoredResource,
    base: &str,
    preference: ReturnPreference,
    location: bool,
) -> Response {
    let mut headers = resource_headers(stored, base);
    if location && let Some(v) = headers.get(header::CONTENT_LOCATION).cloned() {
        headers.insert(header::LOCATION, v);
    }
    match preference {
        ReturnPreference::Minimal => {
            headers.remove(header::CONTENT_TYPE);
            (status, headers).into_response()
        }
        ReturnPreference::Representation => (status, headers, stored.json.clone()).into_response(),
        ReturnPreference::OperationOutcome => {
            let outcome = zorgnet_fhir::operation_outcome(&[Issue::information(format!(
                "{}/{} version {} stored",
                stored.resource_type, stored.id, stored.version
            ))]);
            (status, headers, outcome.to_string()).into_response()
        }
    }
}

/// Decodes `a=b&c=d` into pairs.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Parses a condition (`If-None-Exist: identifier=x|y`, or the query of a conditional update
/// or delete) into a query on `resource_type`. An empty condition, one with unknown
/// parameters, or one with only result parameters (`_count`, `_sort`) would match everything:
/// all are refused.
pub(crate) fn conditional_query(
    state: &AppState,
    resource_type: &str,
    condition: &str,
) -> Result<SearchQuery, FhirError> {
    let condition = condition.trim_start_matches('?');
    let pairs = query_pairs(Some(condition));
    if pairs.is_empty() {
        return Err(FhirError::bad_request(
            "an empty condition matches everything",
        ));
    }
    let query = parse_search_query(&state.store.registry(), Some(resource_type), &pairs)
        .map_err(FhirError::from_issue)?;
    if !query.unknown.is_empty() {
        return Err(FhirError::bad_request(format!(
            "unknown search parameter(s) in condition: {}",
            query.unknown.join(", ")
        )));
    }
    if query.criteria.is_empty() {
        return Err(FhirError::bad_request(
            "a condition must name at least one search parameter",
        ));
    }
    Ok(query)
}

/// The condition in the query string of a conditional update or delete.
fn url_condition(
    state: &AppState,
    resource_type: &str,
    raw: Option<&str>,
    interaction: &str,
) -> Result<Box<SearchQuery>, FhirError> {
    match raw.filter(|q| !q.is_empty()) {
        Some(condition) => Ok(Box::new(conditional_query(
            state,
            resource_type,
            condition,
        )?)),
        None => Err(FhirError::bad_request(format!(
            "a conditional {interaction} needs a condition: {resource_type}?parameter=value"
        ))),
    }
}

async fn create(
    State(state): AppStateRef,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    let resource = read_json_body(body).await?;
    validate_for(&resource, &resource_type)?;
    crate::validate_op::enforce_declared_profiles(&state, &resource).await?;
    let if_none_exist = match headers.get("if-none-exist").and_then(|v| v.to_str().ok()) {
        Some(condition) => Some(Box::new(conditional_query(
            &state,
            &resource_type,
            condition,
        )?)),
        None => None,
    };
    let base = state.base_url.clone();
    let outcome = state
        .store
        .write(WriteOp::Create {
            resource,
            id: None,
            if_none_exist,
        })
        .await?;
    let preference = return_preference(&headers);
    Ok(match outcome {
        WriteOutcome::Created(stored) => {
            write_response(StatusCode::CREATED, &stored, &base, preference, true)
        }
        WriteOutcome::Unchanged(stored) => {
            write_response(StatusCode::OK, &stored, &base, preference, false)
        }
        // The outcome is not quoted: it holds the resource, and this text goes to the log.
        _ => {
            return Err(FhirError::from(zorgnet_store::StoreError::Backend(
                "a create reported an update or a delete".into(),
            )));
        }
    })
}

pub(crate) fn parse_if_match(headers: &HeaderMap) -> Result<Option<i64>, FhirError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let version = text.trim().trim_start_matches("W/").trim_matches('"');
    version.parse().map(Some).map_err(|_| {
        FhirError::bad_request(format!("If-Match must look like W/\"3\", not '{text}'"))
    })
}

async fn update(
    State(state): AppStateRef,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    check_id(&id)?;
    let resource = read_json_body(body).await?;
    validate_for(&resource, &resource_type)?;
    crate::validate_op::enforce_declared_profiles(&state, &resource).await?;
    match resource.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(FhirError::bad_request(format!(
                "resource id '{body_id}' does not match the URL's id '{id}'"
            )));
        }
        None => {
            return Err(FhirError::bad_request(
                "the resource must carry its id for an update",
            ));
        }
    }
    let if_match = parse_if_match(&headers)?;
    let base = state.base_url.clone();
    let outcome = state
        .store
        .write(WriteOp::Update {
            resource,
            id,
            if_match,
        })
        .await?;
    update_response(outcome, &base, return_preference(&headers))
}

/// Renders the outcome of an update, conditional or not.
fn update_response(outcome: WriteOutcome, base: &str, preference: ReturnPreference) -> AppResult {
    Ok(match outcome {
        WriteOutcome::Created(stored) => {
            write_response(StatusCode::CREATED, &stored, base, preference, true)
        }
        WriteOutcome::Updated(stored) | WriteOutcome::Unchanged(stored) => {
            write_response(StatusCode::OK, &stored, base, preference, false)
        }
        WriteOutcome::Deleted(_) => {
            return Err(FhirError::from(zorgnet_store::StoreError::Backend(
                "update reported a delete".into(),
            )));
        }
    })
}

/// `PUT /fhir/Type?condition`: the store resolves the condition inside the write's
/// transaction (no match creates, one match is updated, more are 412).
async fn conditional_update(
    State(state): AppStateRef,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    let condition = url_condition(&state, &resource_type, raw.as_deref(), "update")?;
    let resource = read_json_body(body).await?;
    validate_for(&resource, &resource_type)?;
    crate::validate_op::enforce_declared_profiles(&state, &resource).await?;
    if let Some(id) = resource.get("id").and_then(Value::as_str) {
        check_id(id)?;
    }
    let if_match = parse_if_match(&headers)?;
    let base = state.base_url.clone();
    let outcome = state
        .store
        .write(WriteOp::UpdateWhere {
            resource,
            condition,
            id: None,
            if_match,
        })
        .await?;
    update_response(outcome, &base, return_preference(&headers))
}

/// `DELETE /fhir/Type?condition`, single mode: no match is 204 as for an ordinary delete of
/// nothing, one match is deleted, more are 412.
async fn conditional_delete(
    State(state): AppStateRef,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    let condition = url_condition(&state, &resource_type, raw.as_deref(), "delete")?;
    let outcome = state
        .store
        .write(WriteOp::DeleteWhere {
            resource_type,
            condition,
        })
        .await?;
    Ok(delete_response(&outcome))
}

/// 204, with the ETag of the delete's version when something was deleted.
fn delete_response(outcome: &WriteOutcome) -> Response {
    let mut headers = HeaderMap::new();
    if let WriteOutcome::Deleted(Some(version)) = outcome
        && let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\""))
    {
        headers.insert(header::ETAG, v);
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

async fn delete(
    State(state): AppStateRef,
    Path((resource_type, id)): Path<(String, String)>,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    check_id(&id)?;
    let outcome = state
        .store
        .write(WriteOp::Delete { resource_type, id })
        .await?;
    Ok(delete_response(&outcome))
}

fn read_response(outcome: ReadOutcome, resource_type: &str, id: &str, base: &str) -> AppResult {
    match outcome {
        ReadOutcome::Found(stored) => {
            let mut response =
                (StatusCode::OK, resource_headers(&stored, base), stored.json).into_response();
            if let Some(policy) = stored.policy {
                response.extensions_mut().insert(policy);
            }
            Ok(response)
        }
        ReadOutcome::Deleted { version, .. } => {
            let mut response = FhirError::new(
                StatusCode::GONE,
                IssueCode::Deleted,
                format!("{resource_type}/{id} was deleted"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
                response.headers_mut().insert(header::ETAG, v);
            }
            Ok(response)
        }
        ReadOutcome::NotFound => Err(FhirError::not_found(format!(
            "{resource_type}/{id} is not known"
        ))),
    }
}

async fn read(
    State(state): AppStateRef,
    Path((resource_type, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    if resource_type == "Patient" && id == "$export" {
        return crate::export::kick_off_patients(&state, raw.as_deref(), &headers);
    }
    if id.starts_with('$') {
        return Err(unsupported_operation(&id, &resource_type));
    }
    check_id(&id)?;
    let shaping = ReadShaping::of(raw.as_deref())?;
    let outcome = state.store.read(&resource_type, &id).await?;
    let outcome = match outcome {
        ReadOutcome::Found(stored) => match not_modified(&headers, &stored) {
            Some(response) => return Ok(response),
            None => ReadOutcome::Found(shaping.apply(stored)),
        },
        other => other,
    };
    read_response(outcome, &resource_type, &id, &state.base_url)
}

/// `_summary` and `_elements` of a read, as a search applies them to its matches.
struct ReadShaping {
    summary: Option<Summary>,
    elements: Option<Vec<String>>,
}

impl ReadShaping {
    fn of(raw: Option<&str>) -> Result<ReadShaping, FhirError> {
        let mut shaping = ReadShaping {
            summary: None,
            elements: None,
        };
        for (name, value) in query_pairs(raw) {
            match name.as_str() {
                "_summary" => {
                    shaping.summary = Some(match value.as_str() {
                        "true" => Summary::True,
                        "data" => Summary::Data,
                        "text" => Summary::Text,
                        "false" => Summary::False,
                        other => {
                            return Err(FhirError::bad_request(format!(
                                "_summary={other} does not apply to a read (true, data, text \
                                 or false)"
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

    /// The resource as asked, marked `SUBSETTED` when something was left out.
    fn apply(&self, mut stored: StoredResource) -> StoredResource {
        if self.summary.is_none() && self.elements.is_none() {
            return stored;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(&stored.json) else {
            return stored;
        };
        if bundle::subset(&mut value, self.summary, self.elements.as_deref(), true) {
            stored.json = value.to_string();
        }
        stored
    }
}

/// A 304 for a conditional read whose `If-None-Match` names the stored version (or `*`),
/// or, without `If-None-Match`, whose `If-Modified-Since` is not before its last update
/// (RFC 9110 §13.1.2 and §13.1.3; an unreadable date is ignored, as RFC 9110 says). The
/// 304 carries the ETag, Last-Modified and Content-Location of the version, and the
/// store's policy facts, so that an access policy decides on it as on the read.
fn not_modified(headers: &HeaderMap, stored: &StoredResource) -> Option<Response> {
    let matches = if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
        let tags = tags.to_str().ok()?;
        let version = stored.version.to_string();
        tags.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == version)
    } else {
        let since = headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
        let since = parse_http_date(since)?;
        stored.last_updated_ms.div_euclid(1000) <= since
    };
    if !matches {
        return None;
    }
    let mut response = (StatusCode::NOT_MODIFIED, resource_headers(stored, "")).into_response();
    response.headers_mut().remove(header::CONTENT_TYPE);
    response.headers_mut().remove(header::CONTENT_LOCATION);
    if let Some(policy) = stored.policy.clone() {
        response.extensions_mut().insert(policy);
    }
    Some(response)
}

/// An HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), &format)
        .ok()
        .map(|moment| moment.assume_utc().unix_timestamp())
}

async fn vread(
    State(state): AppStateRef,
    Path((resource_type, id, version)): Path<(String, String, String)>,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    check_id(&id)?;
    let version: i64 = version
        .parse()
        .map_err(|_| FhirError::bad_request(format!("'{version}' is not a version number")))?;
    let outcome = state.store.vread(&resource_type, &id, version).await?;
    if matches!(outcome, ReadOutcome::NotFound) {
        return Err(FhirError::not_found(format!(
            "{resource_type}/{id} has no version {version}"
        )));
    }
    read_response(outcome, &resource_type, &id, &state.base_url)
}

/// `GET` or `POST` on `/fhir/Type/id/$operation` (and `GET` on `_history`); `GET` of
/// `Group/id/$export` starts a bulk export (`crate::export`).
async fn instance_operation(
    State(state): AppStateRef,
    Path((resource_type, id, operation)): Path<(String, String, String)>,
    method: Method,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    check_id(&id)?;
    match operation.as_str() {
        "_history" if method != Method::GET => Err(method_not_allowed()),
        "_history" => {
            history(
                &state,
                &headers,
                HistoryScope::Instance(resource_type, id),
                raw.as_deref(),
            )
            .await
        }
        "$everything" if resource_type == "Patient" => {
            let pairs = crate::operation::parameters(&method, raw.as_deref(), body).await?;
            let links_query = match method {
                Method::GET => raw,
                _ => Some(crate::operation::as_query(&pairs)),
            };
            everything(&state, &id, pairs, links_query.as_deref()).await
        }
        "$export" if resource_type == "Group" && method != Method::GET => Err(method_not_allowed()),
        "$export" if resource_type == "Group" => {
            crate::export::kick_off_group(&state, &id, raw.as_deref(), &headers).await
        }
        other => Err(unsupported_operation(other, &resource_type)),
    }
}

/// `POST /fhir/Type/$operation`: no type-level operation is served (`$everything` is
/// served per Patient only); a `POST` on `Type/id` is not an interaction.
async fn type_operation(Path((resource_type, id)): Path<(String, String)>) -> AppResult {
    check_type(&resource_type)?;
    if id.starts_with('$') {
        Err(unsupported_operation(&id, &resource_type))
    } else {
        Err(method_not_allowed())
    }
}

fn unsupported_operation(operation: &str, resource_type: &str) -> FhirError {
    FhirError::new(
        StatusCode::NOT_FOUND,
        IssueCode::NotSupported,
        format!("operation '{operation}' is not supported on {resource_type}"),
    )
}

fn method_not_allowed() -> FhirError {
    FhirError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueCode::NotSupported,
        "method not allowed on this endpoint",
    )
}

async fn system_history(
    State(state): AppStateRef,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> AppResult {
    history(&state, &headers, HistoryScope::System, raw.as_deref()).await
}

async fn type_history(
    State(state): AppStateRef,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    history(
        &state,
        &headers,
        HistoryScope::Type(resource_type),
        raw.as_deref(),
    )
    .await
}

fn parse_count(value: &str, max: usize) -> Result<usize, FhirError> {
    value.parse::<usize>().map(|c| c.min(max)).map_err(|_| {
        FhirError::bad_request(format!(
            "_count must be a non-negative integer, not '{value}'"
        ))
    })
}

pub(crate) fn parse_instant_param(name: &str, value: &str) -> Result<i64, FhirError> {
    zorgnet_fhir::datetime::parse_date_range(value)
        .map(|r| r.low_ms)
        .ok_or_else(|| {
            FhirError::bad_request(format!("{name} must be a FHIR instant, not '{value}'"))
        })
}

async fn history(
    state: &AppState,
    headers: &HeaderMap,
    scope: HistoryScope,
    raw: Option<&str>,
) -> AppResult {
    let pairs = query_pairs(raw);
    let mut since = None;
    let mut count = DEFAULT_HISTORY_PAGE_SIZE;
    let mut cursor = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "_since" => since = Some(parse_instant_param("_since", value)?),
            "_count" => count = parse_count(value, MAX_HISTORY_PAGE_SIZE)?,
            "_cursor" => cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            other => {
                if strict_handling(headers) {
                    return Err(FhirError::bad_request(format!(
                        "unknown history parameter '{other}'"
                    )));
                }
            }
        }
    }
    let page = state
        .store
        .history(scope.clone(), since, count, cursor)
        .await?;
    let base = state.base_url.clone();
    let self_path = match &scope {
        HistoryScope::System => "_history".to_string(),
        HistoryScope::Type(t) => format!("{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{t}/{id}/_history"),
    };
    let body = bundle::history_bundle(
        bundle::PageLinks {
            base: &base,
            path: &self_path,
            raw,
            pairs: &pairs,
            next: page.next_cursor.as_deref(),
            previous: page.previous_cursor.as_deref(),
        },
        &page.entries,
    );
    Ok(bundle::bundle_response(body))
}

/// `Patient/id/$everything` with its parameters (`pairs`); `raw` is their query text for
/// the paging links.
async fn everything(
    state: &AppState,
    id: &str,
    pairs: Vec<(String, String)>,
    raw: Option<&str>,
) -> AppResult {
    let mut since = None;
    let mut types = Vec::new();
    let mut count = zorgnet_fhir::search::MAX_PAGE_SIZE;
    let mut cursor = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "_since" => since = Some(parse_instant_param("_since", value)?),
            "_type" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    check_type(t).map_err(|_| {
                        FhirError::bad_request(format!("unknown resource type '{t}' in _type"))
                    })?;
                    state.refuse_external(t)?;
                    // Each distinct type once: a type repeated (tens of thousands of times
                    // fit in a body) would otherwise become as many bound values.
                    if !types.iter().any(|known| known == t) {
                        types.push(t.to_string());
                    }
                }
            }
            "_count" => count = parse_count(value, zorgnet_fhir::search::MAX_PAGE_SIZE)?,
            "_cursor" => cursor = Some(value.clone()),
            _ => {}
        }
    }
    if matches!(
        state.store.read("Patient", id).await?,
        ReadOutcome::NotFound | ReadOutcome::Deleted { .. }
    ) {
        return Err(FhirError::not_found(format!("Patient/{id} is not known")));
    }
    let result = state
        .store
        .everything(id, since, types, count, cursor)
        .await?;
    let base = state.base_url.clone();
    let self_path = format!("Patient/{id}/$everything");
    let body = bundle::searchset(
        bundle::PageLinks {
            base: &base,
            path: &self_path,
            raw,
            pairs: &pairs,
            next: result.next_cursor.as_deref(),
            previous: result.previous_cursor.as_deref(),
        },
        None,
        &page_entries(&result),
        None,
        None,
    );
    Ok(bundle::bundle_response(body))
}

/// A page's entries: its matches, then the resources included with them.
fn page_entries(result: &SearchResult) -> Vec<BundleEntry<'_>> {
    let matches = result.matches.iter().map(|r| BundleEntry {
        resource: r,
        mode: EntryMode::Match,
    });
    let included = result.included.iter().map(|r| BundleEntry {
        resource: r,
        mode: EntryMode::Include,
    });
    matches.chain(included).collect()
}

async fn search_get(
    State(state): AppStateRef,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
    constraint: Option<Extension<SearchConstraint>>,
    headers: HeaderMap,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    let pairs = query_pairs(raw.as_deref());
    run_search(
        &state,
        &headers,
        Some(&resource_type),
        pairs,
        raw.as_deref(),
        constraint.as_deref(),
    )
    .await
}

async fn search_post(
    State(state): AppStateRef,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
    constraint: Option<Extension<SearchConstraint>>,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    let bytes = axum::body::to_bytes(body, SEARCH_BODY_LIMIT_BYTES)
        .await
        .map_err(|_| {
            FhirError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueCode::TooCostly,
                format!("a _search body may be at most {SEARCH_BODY_LIMIT_BYTES} bytes"),
            )
        })?;
    let form = String::from_utf8(bytes.to_vec())
        .map_err(|_| FhirError::bad_request("search body is not UTF-8"))?;
    let mut pairs = query_pairs(raw.as_deref());
    pairs.extend(query_pairs(Some(&form)));
    crate::format::check_format_parameters(&pairs)?;
    let combined: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    run_search(
        &state,
        &headers,
        Some(&resource_type),
        pairs,
        Some(&combined),
        constraint.as_deref(),
    )
    .await
}

async fn system_search(
    State(state): AppStateRef,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> AppResult {
    let pairs = query_pairs(raw.as_deref());
    run_search(&state, &headers, None, pairs, raw.as_deref(), None).await
}

async fn run_search(
    state: &AppState,
    headers: &HeaderMap,
    resource_type: Option<&str>,
    pairs: Vec<(String, String)>,
    raw: Option<&str>,
    constraint: Option<&SearchConstraint>,
) -> AppResult {
    let mut query = parse_search_query(&state.store.registry(), resource_type, &pairs)
        .map_err(FhirError::from_issue)?;
    if let Some(constraint) = constraint {
        query.within_categories = constraint.categories;
        query.within_compartments = Some(constraint.compartments_of.clone());
        query.without_total = true;
        query.cursor = query
            .cursor
            .map(|sealed| constraint.cursors.open(&sealed))
            .transpose()?;
    }
    for t in &query.types {
        check_type(t)
            .map_err(|_| FhirError::bad_request(format!("unknown resource type '{t}' in _type")))?;
        state.refuse_external(t)?;
    }
    for include in query.include.iter().chain(&query.revinclude) {
        state.refuse_external(&include.source_type)?;
        if let Some(target) = &include.target_type {
            state.refuse_external(target)?;
        }
    }
    let mut warnings = Vec::new();
    if !query.unknown.is_empty() {
        let message = format!(
            "unknown search parameter(s) ignored: {}",
            query.unknown.join(", ")
        );
        if strict_handling(headers) {
            return Err(FhirError::bad_request(message.replace(" ignored", "")));
        }
        warnings.push(Issue::warning(IssueCode::NotSupported, message));
    }
    warnings.extend(constraint.iter().flat_map(|c| c.notices.iter().cloned()));
    let summary = query.summary;
    let elements = query.elements.clone();
    let mut result = state.store.search(query).await?;
    if let Some(constraint) = constraint {
        for cursor in [&mut result.next_cursor, &mut result.previous_cursor] {
            *cursor = cursor
                .take()
                .map(|c| constraint.cursors.seal(&c))
                .transpose()?;
        }
    }
    let base = state.base_url.clone();
    let self_path = resource_type.unwrap_or("").to_string();
    let entries = page_entries(&result);
    let outcome = (!warnings.is_empty()).then(|| zorgnet_fhir::operation_outcome(&warnings));
    let body = bundle::searchset(
        bundle::PageLinks {
            base: &base,
            path: &self_path,
            raw,
            pairs: &pairs,
            next: result.next_cursor.as_deref(),
            previous: result.previous_cursor.as_deref(),
        },
        result.total,
        &entries,
        outcome.as_ref(),
        Some(bundle::Shaping {
            summary,
            elements: elements.as_deref(),
        }),
    );
    Ok(bundle::bundle_response(body))
}
