//! `PATCH`: a change to a stored resource described by a JSON Patch document (RFC 6902,
//! `application/json-patch+json`) or by a FHIRPath Patch (a `Parameters` resource, sent as
//! FHIR JSON or XML; see `crate::fhirpath_patch`), on `Type/id` or, conditionally, on the one
//! resource a search `Type?condition` finds.
//!
//! The patch is applied to the current version as a whole (a failing operation, a `test`
//! included, changes nothing), the result must keep its type and id and pass the same
//! validation as an update, and it is stored as an update of exactly the version it was
//! made from: a client's `If-Match` names that version, and without one a write that came
//! in between makes the patch start again from the newer version, at most
//! [`PATCH_ATTEMPTS_MAX`] times.
//!
//! In a Bundle, a PATCH entry carries a JSON Patch as a `Binary` and a FHIRPath Patch as its
//! `Parameters` resource. A FHIRPath Patch without operations is refused (422): it would
//! change nothing, and is more likely a client's mistake than a wish.

use crate::AppState;
use crate::error::FhirError;
use crate::fhirpath_patch::FhirPathPatch;
use crate::interactions::{
    check_id, check_stored, read_json_body, return_preference, validate_for, write_response,
};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;
use zorgnet_fhir::IssueCode;
use zorgnet_store::{ReadOutcome, StoreError, WriteOp, WriteOutcome};

/// The media type of a JSON Patch document (RFC 6902).
pub(crate) const JSON_PATCH_MEDIA_TYPE: &str = "application/json-patch+json";
/// Most operations one patch document may hold.
pub const PATCH_OPERATIONS_MAX: usize = 1_000;
/// How often a patch without `If-Match` is applied again after another write changed the
/// resource in between.
pub const PATCH_ATTEMPTS_MAX: usize = 3;

type AppResult = Result<Response, FhirError>;

/// A patch document of either kind.
#[derive(Debug, Clone)]
pub(crate) enum PatchDocument {
    /// A JSON Patch (RFC 6902).
    Json(json_patch::Patch),
    /// A FHIRPath Patch.
    FhirPath(FhirPathPatch),
}

impl PatchDocument {
    /// A FHIRPath Patch from its `Parameters` resource; one without operations changes
    /// nothing, as the specification's own test cases have it.
    fn fhirpath(parameters: &Value) -> Result<PatchDocument, FhirError> {
        Ok(PatchDocument::FhirPath(FhirPathPatch::parse(parameters)?))
    }

    /// `resource` with the patch applied as a whole.
    fn apply(&self, resource: &Value) -> Result<Value, FhirError> {
        match self {
            PatchDocument::Json(patch) => apply_patch(resource, patch),
            PatchDocument::FhirPath(patch) => patch.apply(resource),
        }
    }
}

/// `PATCH /fhir/Type/id`.
pub(crate) async fn patch(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    check_id(&id)?;
    let document = read_patch(&headers, body).await?;
    patch_resource(&state, &headers, &resource_type, &id, &document).await
}

/// `PATCH /fhir/Type?condition`: no match is a 404, more than one a 412.
pub(crate) async fn conditional_patch(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    check_stored(&state, &resource_type)?;
    let condition = raw.filter(|q| !q.is_empty()).ok_or_else(|| {
        FhirError::bad_request(format!(
            "a conditional patch needs a condition: {resource_type}?parameter=value"
        ))
    })?;
    let document = read_patch(&headers, body).await?;
    let id = the_one_match(&state, &resource_type, &condition).await?;
    patch_resource(&state, &headers, &resource_type, &id, &document).await
}

/// The patch document of the request, checked for form: a JSON Patch array
/// (`application/json-patch+json`), or a FHIRPath Patch (a `Parameters` resource in FHIR
/// JSON, or in XML, which reaches this point as JSON).
async fn read_patch(headers: &HeaderMap, body: Body) -> Result<PatchDocument, FhirError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let document = read_json_body(body).await?;
    if media == JSON_PATCH_MEDIA_TYPE {
        return parse_patch(document).map(PatchDocument::Json);
    }
    if document.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        return PatchDocument::fhirpath(&document);
    }
    Err(FhirError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IssueCode::NotSupported,
        "a patch is a JSON Patch document (application/json-patch+json) or a FHIRPath Patch \
         (a Parameters resource, application/fhir+json or application/fhir+xml)",
    ))
}

/// A JSON Patch document from its JSON: an array of at most [`PATCH_OPERATIONS_MAX`]
/// operations of RFC 6902's form.
pub fn parse_patch(document: Value) -> Result<json_patch::Patch, FhirError> {
    let Some(operations) = document.as_array() else {
        return Err(FhirError::bad_request(
            "a JSON Patch document is an array of operations",
        ));
    };
    if operations.len() > PATCH_OPERATIONS_MAX {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueCode::TooCostly,
            format!(
                "a patch may hold at most PATCH_OPERATIONS_MAX ({PATCH_OPERATIONS_MAX}) operations"
            ),
        ));
    }
    serde_json::from_value(document)
        .map_err(|e| FhirError::bad_request(format!("not a JSON Patch document: {e}")))
}

/// `resource` with `patch` applied as a whole; the resource unchanged and an error when an
/// operation fails (a `test` that does not hold, a path that is not there).
pub fn apply_patch(resource: &Value, patch: &json_patch::Patch) -> Result<Value, FhirError> {
    let mut patched = resource.clone();
    json_patch::patch(&mut patched, patch).map_err(|e| {
        FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueCode::Processing,
            format!("the patch cannot be applied: {e}"),
        )
    })?;
    Ok(patched)
}

/// Applies `document` to the current version of `resource_type/id` and stores the result
/// as an update of that version.
async fn patch_resource(
    state: &AppState,
    headers: &HeaderMap,
    resource_type: &str,
    id: &str,
    document: &PatchDocument,
) -> AppResult {
    let asked = crate::interactions::parse_if_match(headers)?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let update = patched_update(state, resource_type, id, document, asked).await?;
        match state.store.write(update).await {
            Ok(WriteOutcome::Updated(stored) | WriteOutcome::Unchanged(stored)) => {
                return Ok(write_response(
                    StatusCode::OK,
                    &stored,
                    &state.base_url,
                    return_preference(headers),
                    false,
                ));
            }
            Ok(_) => {
                return Err(FhirError::from(StoreError::Backend(
                    "a patch's update reported a create or a delete".into(),
                )));
            }
            Err(StoreError::VersionConflict { .. })
                if asked.is_none() && attempts < PATCH_ATTEMPTS_MAX =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The update that stores `document` applied to the current version of
/// `resource_type/id`: an update of exactly that version (`if_match`), which `asked` must be
/// when given.
pub(crate) async fn patched_update(
    state: &AppState,
    resource_type: &str,
    id: &str,
    document: &PatchDocument,
    asked: Option<i64>,
) -> Result<WriteOp, FhirError> {
    let current = match state.store.read(resource_type, id).await? {
        ReadOutcome::Found(stored) => stored,
        ReadOutcome::Deleted { .. } => {
            return Err(FhirError::new(
                StatusCode::GONE,
                IssueCode::Deleted,
                format!("{resource_type}/{id} was deleted"),
            ));
        }
        ReadOutcome::NotFound => {
            return Err(FhirError::not_found(format!(
                "{resource_type}/{id} is not known"
            )));
        }
    };
    if let Some(version) = asked
        && version != current.version
    {
        return Err(FhirError::from(StoreError::VersionConflict {
            resource: format!("{resource_type}/{id}"),
            expected: version,
            current: current.version,
        }));
    }
    let before: Value = serde_json::from_str(&current.json).map_err(|e| {
        FhirError::from(StoreError::Backend(format!(
            "stored {resource_type}/{id} is not JSON: {e}"
        )))
    })?;
    let mut patched = document.apply(&before)?;
    for (element, was) in [("resourceType", resource_type), ("id", id)] {
        if patched.get(element).and_then(Value::as_str) != Some(was) {
            return Err(FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueCode::Processing,
                format!("a patch may not change or remove the resource's {element}"),
            ));
        }
    }
    // The store writes its own meta.versionId and meta.lastUpdated.
    if let Some(meta) = patched.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            patched.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    validate_for(&patched, resource_type)?;
    crate::validate_op::enforce_declared_profiles(state, &patched).await?;
    Ok(WriteOp::Update {
        resource: patched,
        id: id.to_string(),
        if_match: Some(current.version),
    })
}

/// The update a Bundle entry `PATCH url` asks for, its patch document carried as FHIR says:
/// a `Binary` of `application/json-patch+json` (the document base64-encoded in `data`), or a
/// FHIRPath Patch as the entry's `Parameters` resource. `url` is `Type/id` or
/// `Type?condition` (one match); `if_match` the entry's `ifMatch` version.
pub(crate) async fn bundle_entry_update(
    state: &AppState,
    url: &str,
    resource: Option<&Value>,
    if_match: Option<i64>,
) -> Result<WriteOp, FhirError> {
    let (path, condition) = match url.split_once('?') {
        Some((path, condition)) => (path, Some(condition)),
        None => (url, None),
    };
    let (resource_type, id) = match path.split_once('/') {
        Some((resource_type, id)) => (resource_type, Some(id)),
        None => (path, None),
    };
    check_stored(state, resource_type)?;
    let document = match resource {
        Some(binary) if binary["resourceType"] == "Binary" => {
            if binary["contentType"].as_str() != Some(JSON_PATCH_MEDIA_TYPE) {
                return Err(FhirError::bad_request(format!(
                    "a PATCH entry's Binary must be {JSON_PATCH_MEDIA_TYPE}"
                )));
            }
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                binary["data"].as_str().unwrap_or_default(),
            )
            .map_err(|_| FhirError::bad_request("the PATCH entry's Binary data is not base64"))?;
            let document: Value = serde_json::from_slice(&bytes).map_err(|e| {
                FhirError::bad_request(format!("the PATCH entry's patch is not JSON: {e}"))
            })?;
            PatchDocument::Json(parse_patch(document)?)
        }
        Some(parameters) if parameters["resourceType"] == "Parameters" => {
            PatchDocument::fhirpath(parameters)?
        }
        _ => {
            return Err(FhirError::bad_request(
                "a PATCH entry carries a JSON Patch document as a Binary resource, or a \
                 FHIRPath Patch as a Parameters resource",
            ));
        }
    };
    let id = match (id, condition) {
        (Some(id), None) => {
            check_id(id)?;
            id.to_string()
        }
        (None, Some(condition)) => the_one_match(state, resource_type, condition).await?,
        _ => {
            return Err(FhirError::bad_request(
                "PATCH needs Type/id or Type?condition",
            ));
        }
    };
    patched_update(state, resource_type, &id, &document, if_match).await
}

/// The id of the one `resource_type` that `condition` finds: none is a 404, more a 412.
async fn the_one_match(
    state: &AppState,
    resource_type: &str,
    condition: &str,
) -> Result<String, FhirError> {
    crate::bundle::resolve_condition(state, resource_type, condition)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("no {resource_type} matches the condition")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON Patch cases of the HL7 test corpus (`fhir-test-cases/r4/patch`), applied as
    /// the server applies a patch: the expected document, or a refusal that changes nothing.
    #[test]
    fn the_hl7_json_patch_cases() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/fhir-test-cases/r4/patch/json-patch-tests.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            assert!(
                std::env::var("ZORGNET_REQUIRE_TESTDATA").is_err(),
                "{} is missing",
                path.display()
            );
            eprintln!(
                "\n*** SKIPPED: the JSON Patch corpus ({} is missing) ***\n",
                path.display()
            );
            return;
        };
        let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(!cases.is_empty());
        for case in &cases {
            let comment = &case["comment"];
            let outcome =
                parse_patch(case["patch"].clone()).and_then(|p| apply_patch(&case["doc"], &p));
            match (&case["expected"], outcome) {
                (Value::Null, Err(_)) => {}
                (Value::Null, Ok(patched)) => {
                    panic!("{comment}: should fail ({}), gave {patched}", case["error"])
                }
                (expected, Ok(patched)) => assert_eq!(&patched, expected, "{comment}"),
                (_, Err(e)) => panic!("{comment}: {e:?}"),
            }
        }
    }

    #[test]
    fn a_patch_is_an_array_of_operations_and_fails_as_a_whole() {
        assert!(parse_patch(json!({"op": "add"})).is_err());
        assert!(parse_patch(json!([{"op": "frobnicate", "path": "/a"}])).is_err());
        let too_many: Vec<Value> = (0..=PATCH_OPERATIONS_MAX)
            .map(|_| json!({"op": "test", "path": "/a", "value": 1}))
            .collect();
        assert_eq!(
            parse_patch(Value::Array(too_many)).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let resource = json!({"resourceType": "Patient", "id": "p", "active": true});
        let patch = parse_patch(json!([
            {"op": "replace", "path": "/active", "value": false},
            {"op": "test", "path": "/gender", "value": "female"}
        ]))
        .unwrap();
        assert!(apply_patch(&resource, &patch).is_err());
    }
}
