//! The FHIR R4 REST server of zorgnet, in front of a [`zorgnet_store::Store`].
//!
//! What it is: routing of the RESTful interactions, content negotiation, body limits,
//! validation before storage, bundles (search, history, transaction, batch), the
//! CapabilityStatement, [`error::FhirError`] (every failure as an OperationOutcome),
//! Prometheus metrics, request spans that never carry a path, and [`mcsd`]'s reader of
//! another server's `_history`. The node serves its care provider's data through it; the hub
//! serves its address book through it.
//! What it is not: storage (`zorgnet-store`), FHIR knowledge (`zorgnet-fhir`), or access
//! control: who may call is decided by a layer the embedding server puts around
//! [`routes`] (the node's `access` layer) before [`finish`] adds the outer layers.
//!
//! A request's path: `serve` (or a TLS accept loop) accepts the connection → [`finish`]'s
//! layers (request id, trace, metrics, media types (`format`)) → the embedder's layers →
//! axum route → handler in `interactions` parses and validates → `Store` runs one
//! transaction on the blocking pool → handler renders the stored JSON into the response.
#![deny(missing_docs)]

mod bundle;
pub mod capability;
pub mod constraint;
pub mod error;
pub mod export;
mod fhirpath_patch;
mod format;
pub mod interactions;
pub mod mcsd;
pub mod operation;
pub mod patch;
mod reindex;
pub mod subscriptions;
pub mod validate_op;

pub use bundle::subset;

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

/// Who serves this FHIR API.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// URA number of the organisation.
    pub ura: String,
    /// Organisation name.
    pub name: String,
}

/// An operation the embedding server adds, listed in the CapabilityStatement.
#[derive(Debug, Clone, Copy)]
pub struct OperationRef {
    /// The operation's name, without `$`.
    pub name: &'static str,
    /// The canonical URL of its OperationDefinition.
    pub definition: &'static str,
}

/// A resource type the store never holds: its resources come from a source of the embedder's
/// (the node's access log is the only source of its AuditEvents), served, if at all, by the
/// embedder's own routes. Every interaction the store would answer for it is refused with 405
/// ([`AppState::refuse_external`]): create, update, delete, their conditional forms, read,
/// vread, history and search, also as entries of a transaction (which then fails whole) or a
/// batch (whose other entries proceed), and as a `_type` of a system search or `$everything`.
/// The CapabilityStatement lists it only as [`capability::ServedTypes`] describes it.
#[derive(Debug, Clone, Copy)]
pub struct ExternalType {
    /// The resource type.
    pub resource_type: &'static str,
    /// Where its resources come from and where they are read, for the refusals' text
    /// (`"AuditEvents are the node's access log, read at /fhir/AuditEvent"`).
    pub source: &'static str,
}

impl ExternalType {
    /// Why a resource of this type is not stored (the refusals' text).
    pub fn refusal(&self) -> String {
        format!(
            "{} is not kept in the resource store: {}",
            self.resource_type, self.source
        )
    }
}

/// Shared state of the FHIR handlers.
pub struct AppState {
    /// The resource store.
    pub store: Store,
    /// Whose server this is.
    pub identity: NodeIdentity,
    /// The public base URL (`https://host/fhir`) of links and `fullUrl`s. Always configured,
    /// never taken from a request's `Host` header, which the client chooses.
    pub base_url: String,
    /// Operations served beside the REST interactions (by the embedder's own routes).
    pub operations: Vec<OperationRef>,
    /// Resource types the store never holds.
    pub external: Vec<ExternalType>,
    /// The bulk export's jobs and directory; `None`: `$export` answers 501.
    pub exports: Option<Arc<export::Exports>>,
    /// `$validate`'s profiles and whether writes must conform to those they declare.
    pub validation: validate_op::Validation,
    metrics: PrometheusHandle,
}

impl AppState {
    /// The state of a FHIR server over `store`.
    pub fn new(
        store: Store,
        identity: NodeIdentity,
        base_url: String,
        operations: Vec<OperationRef>,
    ) -> Arc<AppState> {
        AppState::with_external(store, identity, base_url, operations, Vec::new())
    }

    /// The state of a FHIR server over `store` that never stores resources of the
    /// `external` types.
    pub fn with_external(
        store: Store,
        identity: NodeIdentity,
        base_url: String,
        operations: Vec<OperationRef>,
        external: Vec<ExternalType>,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            identity,
            base_url,
            operations,
            external,
            exports: None,
            validation: validate_op::Validation::default(),
            metrics: prometheus(),
        })
    }

    /// As [`AppState::with_external`], serving the bulk export (`$export`,
    /// [`export`]) with its job directories under `export_dir`, a directory of its own.
    pub fn with_export_dir(
        store: Store,
        identity: NodeIdentity,
        base_url: String,
        operations: Vec<OperationRef>,
        external: Vec<ExternalType>,
        export_dir: std::path::PathBuf,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            identity,
            base_url,
            operations,
            external,
            exports: Some(Arc::new(export::Exports::new(export_dir))),
            validation: validate_op::Validation::default(),
            metrics: prometheus(),
        })
    }

    /// The external type `resource_type` is, if it is one.
    pub fn external(&self, resource_type: &str) -> Option<&ExternalType> {
        self.external
            .iter()
            .find(|e| e.resource_type == resource_type)
    }

    /// 405 when `resource_type` is an external type: the store is never asked about it.
    pub fn refuse_external(&self, resource_type: &str) -> Result<(), error::FhirError> {
        match self.external(resource_type) {
            None => Ok(()),
            Some(external) => Err(error::FhirError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                zorgnet_fhir::IssueCode::NotSupported,
                external.refusal(),
            )),
        }
    }
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
            // Another recorder may already be installed (tests embedding several servers):
            // then this handle renders nothing, which is acceptable there.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A plain FHIR server over `store`: [`routes`] with [`finish`]'s layers and no access
/// control (the hub's read-only address book, a node outside a network).
pub fn router(store: Store, identity: NodeIdentity, base_url: String) -> Router {
    finish(routes(AppState::new(store, identity, base_url, Vec::new())))
}

/// The REST interactions, `/metrics` and `/health`, without the outer layers: an embedder
/// merges its own routes and puts its access layer around them, then calls [`finish`].
pub fn routes(state: Arc<AppState>) -> Router {
    interactions::routes()
        .merge(validate_op::routes())
        .merge(subscriptions::routes())
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "UP" }))
        .with_state(state)
}

/// Adds the outer layers every FHIR server has: request id, trace span, metrics, and media
/// types (406/415 before any handler or access layer runs).
pub fn finish(router: Router) -> Router {
    router
        .layer(middleware::from_fn(format::negotiate))
        .layer(middleware::from_fn(track_metrics))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
