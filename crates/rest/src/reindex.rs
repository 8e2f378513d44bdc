//! `$reindex`: where the stored SearchParameters stand, and a new look at them.
//!
//! The store indexes every stored `SearchParameter` it can evaluate, reindexing the resources
//! already stored in the background when one is added or changed (`zorgnet_store`'s
//! `custom_params`); a write of a SearchParameter starts that by itself. This endpoint shows
//! it: `GET /fhir/$reindex` answers a `Parameters` resource with one `searchParameter` per
//! stored parameter and resource type (`url`, `resourceType`, `code`, `status` — `ready` once
//! searches use it, `reindexing` before — and `reindexed`, the resources done so far while it
//! reindexes), and one `notUsed` per stored parameter the store does not use, with the
//! `reason` (a `special` or `composite` type, an expression it cannot evaluate, a code a
//! built-in parameter takes). `POST /fhir/$reindex` first reads the stored SearchParameters again (after
//! they were loaded into the database some other way, say) and answers the same.
//! What it is not: access control (the node's layer lets only its own systems ask), or a
//! way to reindex the built-in parameters, whose rows every write keeps.

use crate::AppState;
use crate::error::FhirError;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes of `$reindex`.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/fhir/$reindex", get(status).post(refresh))
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Response, FhirError> {
    Ok(answer(&state))
}

async fn refresh(State(state): State<Arc<AppState>>) -> Result<Response, FhirError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.refresh_search_parameters())
        .await
        .map_err(|e| {
            FhirError::from(zorgnet_store::StoreError::Backend(format!(
                "storage task failed: {e}"
            )))
        })??;
    Ok(answer(&state))
}

/// The `Parameters` answer of both methods.
fn answer(state: &AppState) -> Response {
    let parameters: Vec<Value> = state
        .store
        .reindex_status()
        .into_iter()
        .map(|s| {
            json!({
                "name": "searchParameter",
                "part": [
                    {"name": "url", "valueUri": s.url},
                    {"name": "resourceType", "valueCode": s.resource_type},
                    {"name": "code", "valueCode": s.code},
                    {"name": "status", "valueCode": if s.ready { "ready" } else { "reindexing" }},
                    {"name": "reindexed", "valueInteger": s.done},
                ]
            })
        })
        .chain(state.store.unused_search_parameters().into_iter().map(|u| {
            json!({
                "name": "notUsed",
                "part": [
                    {"name": "url", "valueUri": u.url},
                    {"name": "code", "valueCode": u.code},
                    {"name": "reason", "valueString": u.reason},
                ]
            })
        }))
        .collect();
    let body = json!({"resourceType": "Parameters", "parameter": parameters});
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    response
}
