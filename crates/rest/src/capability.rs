//! The CapabilityStatement: generated from what the server actually does — the resource
//! types the model knows, the search parameters the registry can evaluate for each, and the
//! interactions and operations the router serves. Nothing is listed that does not work:
//! `$localize` and `$fetch` only when the node runs in a network, `$export` only when the
//! server has an export directory, and JSON and XML as the formats.
//! An [`crate::ExternalType`] is listed only as the embedder's routes serve it, when the
//! request carries a [`ServedTypes`] describing it (the node's access log, served as
//! AuditEvent); otherwise not at all.

use crate::error::FHIR_JSON;
use crate::{AppState, OperationRef};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use zorgnet_fhir::model::r4;

/// The R4 OperationDefinition of `$validate` on every resource type.
const RESOURCE_VALIDATE: &str = "http://hl7.org/fhir/OperationDefinition/Resource-validate";
/// The Bulk Data IG's OperationDefinition of the system-level `$export`.
const SYSTEM_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export";
/// The Bulk Data IG's OperationDefinition of `Patient/$export`.
const PATIENT_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export";
/// The Bulk Data IG's OperationDefinition of `Group/{id}/$export`.
const GROUP_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export";

/// A search parameter an embedder's routes take for a [`ServedType`].
#[derive(Debug, Clone, Copy)]
pub struct ServedParam {
    /// Its name in a query.
    pub name: &'static str,
    /// Its FHIR search parameter type (`reference`, `token`, `date`, …).
    pub param_type: &'static str,
    /// The canonical URL of the SearchParameter it implements, when it implements one.
    pub definition: Option<&'static str>,
    /// How it is written, as served.
    pub documentation: &'static str,
}

/// What an embedder's own routes serve of an [`crate::ExternalType`]: the CapabilityStatement's
/// entry for that type.
#[derive(Debug, Clone, Copy)]
pub struct ServedType {
    /// The resource type.
    pub resource_type: &'static str,
    /// The interactions served, as CapabilityStatement codes (`read`, `search-type`).
    pub interactions: &'static [&'static str],
    /// The search parameters served.
    pub search_params: &'static [ServedParam],
    /// The operations served on the type or its instances.
    pub operations: &'static [OperationRef],
}

/// The external types a router serves, in its requests' extensions (put there by the layer
/// that serves them; the outermost such layer's list is the one listed).
#[derive(Debug, Clone, Default)]
pub struct ServedTypes(pub Vec<ServedType>);

impl ServedType {
    fn to_json(self) -> Value {
        let params: Vec<Value> = self
            .search_params
            .iter()
            .map(|p| {
                let mut param =
                    json!({"name": p.name, "type": p.param_type, "documentation": p.documentation});
                if let Some(definition) = p.definition {
                    param["definition"] = json!(definition);
                }
                param
            })
            .collect();
        let mut resource = json!({
            "type": self.resource_type,
            "interaction": self.interactions.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
            "versioning": "no-version",
            "readHistory": false,
            "updateCreate": false,
            "conditionalCreate": false,
            "conditionalRead": "not-supported",
            "conditionalUpdate": false,
            "conditionalDelete": "not-supported",
            "searchParam": params,
        });
        if !self.operations.is_empty() {
            resource["operation"] = self
                .operations
                .iter()
                .map(|op| json!({"name": op.name, "definition": op.definition}))
                .collect();
        }
        resource
    }
}

const TYPE_INTERACTIONS: [&str; 8] = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
];

pub(crate) async fn metadata(
    State(state): State<Arc<AppState>>,
    served: Option<Extension<ServedTypes>>,
) -> Response {
    let base = state.base_url.clone();
    let registry = state.store.registry();
    let served = served
        .map(|Extension(ServedTypes(served))| served)
        .unwrap_or_default();
    let resources: Vec<Value> = r4()
        .resource_types()
        .into_iter()
        .filter_map(|resource_type| {
            if state.external(resource_type).is_some() {
                return served
                    .iter()
                    .find(|s| s.resource_type == resource_type)
                    .map(|s| s.to_json());
            }
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
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            });
            // FHIR has no empty arrays (and XML no way to write one): an empty list is left out.
            if !includes.is_empty() {
                resource["searchInclude"] = json!(includes);
            }
            let exporting = state.exports.is_some();
            if resource_type == "Patient" {
                let mut operations = vec![json!({"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"})];
                if exporting {
                    operations.push(json!({"name": "export", "definition": PATIENT_EXPORT}));
                }
                resource["operation"] = Value::Array(operations);
            }
            if resource_type == "Group" && exporting {
                resource["operation"] = json!([{"name": "export", "definition": GROUP_EXPORT}]);
            }
            Some(resource)
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
    let mut operations: Vec<Value> = state
        .operations
        .iter()
        .map(|op| json!({"name": op.name, "definition": op.definition}))
        .collect();
    if state.exports.is_some() {
        operations.push(json!({"name": "export", "definition": SYSTEM_EXPORT}));
    }
    operations.push(json!({"name": "validate", "definition": RESOURCE_VALIDATE}));
    if !operations.is_empty() {
        rest["operation"] = Value::Array(operations);
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
        "format": ["application/fhir+json", "application/json", "application/fhir+xml", "application/xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"],
        "rest": [rest]
    });
    let mut response = (StatusCode::OK, capability.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}
