//! The zorgnet node: a FHIR R4 REST server in front of a [`zorgnet_store::Store`].
//!
//! What it is: the HTTP edge of a care provider's node — routing, content negotiation, body
//! limits, validation before storage, bundles (search, history, transaction, batch),
//! CapabilityStatement, Prometheus metrics. What it is not: storage (that is `zorgnet-store`)
//! or FHIR knowledge (that is `zorgnet-fhir`).
//!
//! A request's path: `serve` accepts the connection → tower layers (trace, request id, body
//! limit, metrics, media types (`format`), and for a node in a network the access policy
//! towards other organisations, [`access`]) → axum route → handler in `rest` parses and validates →
//! `Store` runs one transaction on the blocking pool → handler renders the stored JSON into
//! the response.
#![deny(missing_docs)]

pub mod access;
pub mod addressing;
mod bundle;
mod capability;
pub mod error;
mod format;
pub mod hub_client;
pub mod network;
mod operation;
pub mod outbox;
mod rest;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use zorgnet_store::Store;

/// Largest request body accepted (a transaction Bundle of a few thousand resources).
pub const REQUEST_BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// Who runs this node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// URA number of the organisation.
    pub ura: String,
    /// Organisation name.
    pub name: String,
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// The resource store.
    pub store: Store,
    /// Whose node this is.
    pub identity: NodeIdentity,
    /// Fixed public base URL (`https://host/fhir`); when `None`, taken from the Host header.
    pub base_url: Option<String>,
    /// The hub and the cached address book, when the node is part of a network.
    pub network: Option<Arc<network::Network>>,
    metrics: PrometheusHandle,
}

/// The process-wide Prometheus recorder (installed once, shared by every router in a process).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several nodes): then
            // this handle renders nothing, which is acceptable there.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Builds the node's router.
pub fn router(store: Store, identity: NodeIdentity, base_url: Option<String>) -> Router {
    router_in_network(store, identity, base_url, None)
}

/// Builds the router of a node that is part of a network: `$localize` and `$fetch` use it,
/// and every request passes the access policy towards other organisations ([`access`]).
pub fn router_in_network(
    store: Store,
    identity: NodeIdentity,
    base_url: Option<String>,
    network: Option<Arc<network::Network>>,
) -> Router {
    let state = Arc::new(AppState {
        store,
        identity,
        base_url,
        network,
        metrics: prometheus(),
    });
    Router::new()
        .route(
            "/fhir/$localize",
            get(network::localize_operation).post(network::localize_operation),
        )
        .route(
            "/fhir/$fetch",
            get(network::fetch_operation).post(network::fetch_operation),
        )
        .merge(rest::routes())
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "UP" }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::enforce,
        ))
        .layer(middleware::from_fn(format::negotiate))
        .layer(middleware::from_fn(track_metrics))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span of one request: method and matched route (`/fhir/{resource_type}/{id}`), never
/// the path or the query string, which carry BSNs (`Patient?identifier=…|BSN`,
/// `$localize?patient.identifier=…`, and a BSN a client chose as an id,
/// `PUT /fhir/Patient/123456782`). A request that matches no route is `unmatched`.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), route)
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.metrics.render()
}

async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("zorgnet_http_requests_total", &labels).increment(1);
    metrics::histogram!("zorgnet_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves the router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
