//! The citizen's choices and access log for apps: a small JSON API at `/api/v1`, described in
//! OpenAPI 3.1 (`api/openapi.json`, compiled into the binary and served at
//! `/api/v1/openapi.json`).
//!
//! - `GET /api/v1/choices`: the citizen's consent directives at the hub's consent register
//!   (each with a sentence saying what it means, Dutch or, with `Accept-Language: en`,
//!   English); needs a scope reading `Consent` (`patient/Consent.read`, `patient/*.read`).
//! - `POST /api/v1/choices` (`Content-Type: application/json`): records one choice, of the
//!   kinds the `/keuzes` page offers (`opt-out-all`, `opt-out-category`, `deny`, `permit`,
//!   `emergency-opt-out`; a `category` code and an `organisation` URA, one of the portal's
//!   sources, where the kind takes them); 201 with the directive. Needs a scope creating
//!   `Consent` (`patient/Consent.write`, `patient/Consent.c…`).
//! - `POST /api/v1/choices/{id}/revoke`: revokes one of the citizen's directives; needs a
//!   scope updating `Consent`.
//! - `GET /api/v1/access-log`: the access logs of every source about the citizen, newest
//!   first (`access_log`), with the sources that did not answer; needs a scope reading
//!   `AuditEvent` (the nodes check it too).
//!
//! Authentication as the FHIR endpoint's (`fhir_api::authenticate`): a citizen's bearer token
//! for the portal's client id; the citizen the register is asked about is the token's, never
//! one of the body. A bearer token is not sent by a browser on its own, so these requests are
//! not open to cross-site request forgery; a POST still must say `application/json`.
//! Errors are `application/problem+json` (RFC 9457). Without a consent register the choices
//! are 503.
//! What it is not: the policy (the hub decides what a directive means), or a store.

use crate::Inner;
use crate::access_log::accesses;
use crate::choices::{
    CHOICE_ALL, CHOICE_CATEGORY, CHOICE_DENY, CHOICE_EMERGENCY, CHOICE_PERMIT, Choice, describe,
    failure, person_token,
};
use crate::fhir_api::{App, INSUFFICIENT_SCOPE, authenticate};
use crate::i18n::Texts;
use crate::sources::{Failure, Question, gather};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use zorgnet_hub_client::{ConsentDirective, is_directive_id};
use zorgnet_trust::smart::Interaction;
use zorgnet_web::Lang;

/// The API's description, OpenAPI 3.1.
pub(crate) const OPENAPI: &str = include_str!("../api/openapi.json");
/// Every route of the API, (path, method) as the OpenAPI document names them: the router is
/// made from this list, and a test checks it against the document.
pub(crate) const ROUTES: [(&str, &str); 5] = [
    ("/api/v1/choices", "get"),
    ("/api/v1/choices", "post"),
    ("/api/v1/choices/{id}/revoke", "post"),
    ("/api/v1/access-log", "get"),
    ("/api/v1/openapi.json", "get"),
];
/// The kinds of choice the API takes, and the `/keuzes` form's values they are.
const KINDS: [(&str, &str); 5] = [
    ("opt-out-all", CHOICE_ALL),
    ("opt-out-category", CHOICE_CATEGORY),
    ("deny", CHOICE_DENY),
    ("permit", CHOICE_PERMIT),
    ("emergency-opt-out", CHOICE_EMERGENCY),
];

/// The handler of one route of [`ROUTES`].
fn handler(path: &str, method: &str) -> MethodRouter<Arc<Inner>> {
    match (path, method) {
        ("/api/v1/choices", "get") => get(list_choices),
        ("/api/v1/choices", "post") => post(record_choice),
        ("/api/v1/choices/{id}/revoke", "post") => post(revoke_choice),
        ("/api/v1/access-log", "get") => get(access_log),
        ("/api/v1/openapi.json", "get") => get(openapi),
        _ => MethodRouter::new(),
    }
}

/// The routes, for `pages::router` to merge.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    let mut router = Router::new();
    let mut paths: Vec<&str> = ROUTES.iter().map(|(path, _)| *path).collect();
    paths.dedup();
    for path in paths {
        let methods = ROUTES
            .iter()
            .filter(|(p, _)| *p == path)
            .fold(MethodRouter::new(), |route, (_, method)| {
                route.merge(handler(path, method))
            });
        router = router.route(path, methods.fallback(method_not_allowed));
    }
    router.route("/api/v1/{*rest}", axum::routing::any(not_found))
}

/// An RFC 9457 problem.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": title, "status": status.as_u16(),
        "detail": detail});
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// `body` as JSON with `status`.
fn ok_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "see /api/v1/openapi.json",
    )
}

async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "see /api/v1/openapi.json",
    )
}

async fn openapi() -> Response {
    ok_json(
        StatusCode::OK,
        &serde_json::from_str(OPENAPI).unwrap_or(Value::Null),
    )
}

/// The citizen of the request's token, permitted `interaction` on `resource_type`.
async fn app(
    inner: &Inner,
    headers: &HeaderMap,
    resource_type: &str,
    interaction: Interaction,
) -> Result<App, Response> {
    let app = authenticate(inner, headers).await.map_err(|e| {
        let mut response = problem(e.status(), "Not authorised", &e.text());
        if let Some(challenge) = e.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    })?;
    if !app.permits(resource_type, interaction) {
        let mut response = problem(
            StatusCode::FORBIDDEN,
            "Insufficient scope",
            &format!("the token's SMART scopes do not permit this on {resource_type}"),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(INSUFFICIENT_SCOPE),
        );
        return Err(response);
    }
    Ok(app)
}

/// The texts in the language of `Accept-Language` (Dutch unless English comes first).
fn texts(headers: &HeaderMap) -> &'static Texts {
    let english = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("en"));
    if english {
        Texts::of(Lang::En)
    } else {
        Texts::of(Lang::Nl)
    }
}

/// The answer when the portal has no consent register: 503.
fn no_register() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "No consent register",
        "choices cannot be managed through this portal",
    )
}

/// A failed call to the register as a problem.
fn register_failed(error: &zorgnet_hub_client::HubClientError, t: &Texts) -> Response {
    let (status, message) = failure(error, t);
    problem(status, "The consent register", message)
}

/// A directive as the API answers it.
fn directive_json(d: &ConsentDirective, inner: &Inner, t: &Texts) -> Value {
    let mut value = serde_json::to_value(d).unwrap_or(Value::Null);
    value["description"] = Value::String(describe(d, &inner.config.sources, t));
    value
}

/// `GET /api/v1/choices`.
async fn list_choices(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let app = match app(&inner, &headers, "Consent", Interaction::Read).await {
        Ok(app) => app,
        Err(response) => return response,
    };
    let Some(hub) = inner.consent_register() else {
        return no_register();
    };
    let t = texts(&headers);
    let read = async {
        let token = person_token(&hub, &app.citizen).await?;
        hub.consent_directives(&token).await
    };
    match read.await {
        Ok(directives) => {
            let choices: Vec<Value> = directives
                .current
                .iter()
                .map(|d| directive_json(d, &inner, t))
                .collect();
            ok_json(StatusCode::OK, &json!({"choices": choices}))
        }
        Err(e) => register_failed(&e, t),
    }
}

/// The body of `POST /api/v1/choices`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewChoice {
    kind: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    organisation: Option<String>,
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /api/v1/choices`.
async fn record_choice(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let app = match app(&inner, &headers, "Consent", Interaction::Create).await {
        Ok(app) => app,
        Err(response) => return response,
    };
    if !is_json(&headers) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "the body is application/json",
        );
    }
    let t = texts(&headers);
    let choice = serde_json::from_slice::<NewChoice>(&body)
        .ok()
        .and_then(|new| {
            let (_, form) = KINDS.iter().find(|(kind, _)| *kind == new.kind)?;
            Choice::of_form(
                form,
                new.category.as_deref(),
                new.organisation.as_deref(),
                &inner.config.sources,
            )
        });
    let Some(choice) = choice else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Not a choice",
            "kind is one of opt-out-all, opt-out-category (with a category), deny, permit \
             (with the organisation's URA, one of the portal's sources; optionally a \
             category), emergency-opt-out",
        );
    };
    let Some(hub) = inner.consent_register() else {
        return no_register();
    };
    let recorded = async {
        let token = person_token(&hub, &app.citizen).await?;
        hub.record_consent_directive(&token, &choice.directive())
            .await
    };
    match recorded.await {
        Ok(directive) => {
            tracing::info!("a citizen's app recorded a consent directive");
            ok_json(StatusCode::CREATED, &directive_json(&directive, &inner, t))
        }
        Err(e) => register_failed(&e, t),
    }
}

/// `POST /api/v1/choices/{id}/revoke`.
async fn revoke_choice(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let app = match app(&inner, &headers, "Consent", Interaction::Update).await {
        Ok(app) => app,
        Err(response) => return response,
    };
    if !is_directive_id(&id) {
        return problem(
            StatusCode::BAD_REQUEST,
            "Not a directive id",
            "see GET /api/v1/choices",
        );
    }
    let Some(hub) = inner.consent_register() else {
        return no_register();
    };
    let t = texts(&headers);
    let revoked = async {
        let token = person_token(&hub, &app.citizen).await?;
        hub.revoke_consent_directive(&token, &id).await
    };
    match revoked.await {
        Ok(directive) => {
            tracing::info!("a citizen's app revoked a consent directive");
            ok_json(StatusCode::OK, &directive_json(&directive, &inner, t))
        }
        Err(e) => register_failed(&e, t),
    }
}

/// `GET /api/v1/access-log`.
async fn access_log(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let app = match app(&inner, &headers, "AuditEvent", Interaction::Search).await {
        Ok(app) => app,
        Err(response) => return response,
    };
    let t = texts(&headers);
    let gathered = gather(&inner, &app.token, &app.citizen, Question::AccessLog).await;
    let names: Vec<String> = inner
        .config
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let entries: Vec<Value> = accesses(&gathered.found, &names, t)
        .into_iter()
        .map(|a| {
            json!({"when": a.when, "who": a.who, "role": a.role,
                "organisation": a.organisation, "what": a.what, "why": a.why,
                "emergency": a.emergency, "outcome": a.outcome, "succeeded": a.succeeded,
                "source": a.source})
        })
        .collect();
    let unavailable: Vec<Value> = gathered
        .failures
        .iter()
        .map(|f| {
            let reason = match f.failure {
                Failure::Timeout => "timeout".to_string(),
                Failure::Unreachable => "unreachable".to_string(),
                Failure::Status(status) => format!("HTTP {status}"),
                Failure::Invalid => "invalid answer".to_string(),
            };
            json!({"source": f.source, "reason": reason})
        })
        .collect();
    ok_json(
        StatusCode::OK,
        &json!({"entries": entries, "unavailable": unavailable,
            "truncated": gathered.truncated}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"].as_str().unwrap().get(..3), Some("3.1"));
        let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|method| methods.contains(&method.as_str()))
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn the_documented_kinds_and_categories_are_those_taken() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        let new_choice = &document["components"]["schemas"]["NewChoice"]["properties"];
        let listed = |name: &str| -> BTreeSet<String> {
            new_choice[name]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let kinds: BTreeSet<String> = KINDS.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(listed("kind"), kinds);
        let categories: BTreeSet<String> = zorgnet_fhir::categories::DataCategory::ALL
            .iter()
            .map(|c| c.code().to_string())
            .collect();
        assert_eq!(listed("category"), categories);
    }
}
