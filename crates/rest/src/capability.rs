//! The CapabilityStatement: generated from what the server actually does — the resource
//! types the model knows, the search parameters the registry can evaluate for each, and the
//! interactions and operations the router serves. Nothing is listed that does not work:
//! `$localize` and `$fetch` only when the node runs in a network, and JSON as the one format.

use crate::AppState;
use crate::error::FHIR_JSON;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use zorgnet_fhir::model::r4;

const TYPE_INTERACTIONS: [&str; 7] = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
];

pub(crate) async fn metadata(State(state): State<Arc<AppState>>) -> Response {
    let base = state.base_url.clone();
    let registry = state.store.registry();
    let resources: Vec<Value> = r4()
        .resource_types()
        .into_iter()
        .map(|resource_type| {
            let mut params: Vec<Value> = vec![
                json!({"name": "_id", "type": "token"}),
                json!({"name": "_lastUpdated", "type": "date"}),
            ];
            params.extend(registry.params(resource_type).map(|p| {
                json!({"name": p.code, "definition": p.url, "type": p.param_type.as_str()})
            }));
            let includes: Vec<String> = registry
                .params(resource_type)
                .filter(|p| p.param_type == zorgnet_fhir::search::ParamType::Reference)
                .map(|p| format!("{resource_type}:{}", p.code))
                .collect();
            let mut resource = json!({
                "type": resource_type,
                "interaction": TYPE_INTERACTIONS.iter().chain(["search-type"].iter()).map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes,
                "searchParam": params,
            });
            if resource_type == "Patient" {
                resource["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]);
            }
            resource
        })
        .collect();
    let mut rest = json!({
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}, {"code": "search-system"}],
        "searchParam": [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
            {"name": "_type", "type": "token"}
        ]
    });
    if !state.operations.is_empty() {
        rest["operation"] = state
            .operations
            .iter()
            .map(|op| json!({"name": op.name, "definition": op.definition}))
            .collect();
    }
    let capability = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": zorgnet_fhir::datetime::format_instant(zorgnet_store::now_ms()),
        "publisher": state.identity.name,
        "kind": "instance",
        "software": {"name": "zorgnet", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": format!("zorgnet node of {} (URA {})", state.identity.name, state.identity.ura), "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "rest": [rest]
    });
    let mut response = (StatusCode::OK, capability.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}
