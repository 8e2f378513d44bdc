//! The zorgnet node: a care provider's FHIR R4 server in a zorgnet network.
//!
//! What it is: the FHIR REST server of `zorgnet-rest` over the provider's
//! [`zorgnet_store::Store`], with what membership of a network adds: the access layer in
//! front of every handler ([`access`]), the operations that find and fetch a patient's data
//! elsewhere (`$localize`, `$fetch`: [`network`]), the outbox that registers at the referral
//! index what the node holds ([`outbox`]), the client of the hub ([`hub_client`]), the
//! cached address book ([`addressing`]), and the access log as FHIR AuditEvents with their
//! inclusion proofs ([`audit_api`]).
//! What it is not: the REST interactions themselves (`zorgnet-rest`), storage
//! (`zorgnet-store`), FHIR knowledge (`zorgnet-fhir`) or token formats (`zorgnet-trust`).
//!
//! A request's path: `serve` accepts the connection → `zorgnet_rest::finish`'s layers (request
//! id, trace, metrics, media types) → [`audit::record`] → [`authn::authenticate`] →
//! [`access::enforce`] → axum route → handler → `Store`; the answer goes back out through
//! the access log, which lets it leave once its record is durable.
#![deny(missing_docs)]

pub mod access;
pub mod addressing;
pub mod audit;
pub mod audit_api;
pub mod authn;
pub mod checkpoints;
pub mod hub_client;
pub mod network;
pub mod outbox;

pub use zorgnet_rest::{NodeIdentity, REQUEST_BODY_LIMIT_BYTES, error, request_span, serve};

use axum::Router;
use axum::middleware;
use axum::routing::get;
use std::sync::Arc;
use zorgnet_rest::OperationRef;
use zorgnet_store::Store;

/// The resource types a node's store never holds (AuditEvent: the access log is its only
/// source); the node's FHIR server refuses to store or read them there, and `zorgnet import`
/// refuses them too.
pub const EXTERNAL_TYPES: [zorgnet_rest::ExternalType; 1] = [audit_api::EXTERNAL];

/// Shared state of the node's own handlers and its access layer.
pub struct AppState {
    /// The resource store.
    pub store: Store,
    /// Whose node this is.
    pub identity: NodeIdentity,
    /// The public base URL of its FHIR API (`https://host/fhir`).
    pub base_url: String,
    /// The hub and the cached address book, when the node is part of a network.
    pub network: Option<Arc<network::Network>>,
    /// Whether another organisation's token is accepted only over mutual TLS with that
    /// organisation's certificate: always, except under `--insecure-dev`
    /// ([`authn::LocalClients::InsecureDev`]), where the node speaks plain HTTP.
    pub require_peer_certificate: bool,
}

/// Builds the node's router: every request passes [`authn`] (no anonymous caller, unless
/// `local` is [`authn::LocalClients::InsecureDev`]; tokens of the OpenID Connect providers
/// in `oidc` are its staff's and citizens') and then the access policy ([`access`]); with a
/// `network`, `$localize` and `$fetch` are served too. Every request for FHIR data is logged
/// through `audit` ([`audit::record`]) before its answer leaves.
pub fn router_in_network(
    store: Store,
    identity: NodeIdentity,
    base_url: String,
    network: Option<Arc<network::Network>>,
    local: authn::LocalClients,
    oidc: authn::NodeOidc,
    audit: zorgnet_audit::AuditSink,
) -> Router {
    router_exporting(
        store,
        identity,
        base_url,
        network,
        local,
        oidc,
        audit,
        FhirOptions::default(),
    )
}

/// What a node's FHIR server offers beyond the REST interactions.
#[derive(Default)]
pub struct FhirOptions {
    /// Serve the bulk export (`$export`, for the organisation's own systems only) with its
    /// jobs' files under this directory.
    pub export_dir: Option<std::path::PathBuf>,
    /// Profiles `$validate` and enforcement use beside those stored in the node.
    pub profiles: Option<zorgnet_profiles::ProfileSet>,
    /// Refuse creates and updates that break a profile they declare.
    pub enforce_profiles: bool,
    /// Deliver the notifications of the Subscriptions stored in the node (REST-hook; see
    /// `zorgnet_rest::subscriptions`). Needs a Tokio runtime: the dispatcher is spawned.
    pub subscriptions: bool,
}

/// As [`router_in_network`], with the FHIR server's `options`.
#[allow(clippy::too_many_arguments)]
pub fn router_exporting(
    store: Store,
    identity: NodeIdentity,
    base_url: String,
    network: Option<Arc<network::Network>>,
    local: authn::LocalClients,
    oidc: authn::NodeOidc,
    audit: zorgnet_audit::AuditSink,
    options: FhirOptions,
) -> Router {
    let require_peer_certificate = !matches!(local, authn::LocalClients::InsecureDev);
    let authentication = Arc::new(authn::Authentication {
        local,
        own_ura: identity.ura.clone(),
        in_network: network.is_some(),
        oidc,
    });
    let operations = if network.is_some() {
        vec![
            OperationRef {
                name: "localize",
                definition: network::LOCALIZE_DEFINITION,
            },
            OperationRef {
                name: "fetch",
                definition: network::FETCH_DEFINITION,
            },
        ]
    } else {
        Vec::new()
    };
    let fhir = match options.export_dir {
        Some(export_dir) => zorgnet_rest::AppState::with_export_dir(
            store.clone(),
            identity.clone(),
            base_url.clone(),
            operations,
            EXTERNAL_TYPES.to_vec(),
            export_dir,
        ),
        None => zorgnet_rest::AppState::with_external(
            store.clone(),
            identity.clone(),
            base_url.clone(),
            operations,
            EXTERNAL_TYPES.to_vec(),
        ),
    };
    if let Some(profiles) = options.profiles {
        fhir.validation.set_startup_profiles(profiles);
    }
    fhir.validation.enforce_profiles(options.enforce_profiles);
    if options.subscriptions {
        // Runs as long as the process: the node serves until it exits.
        drop(zorgnet_rest::subscriptions::spawn_dispatcher(fhir.clone()));
    }
    let state = Arc::new(AppState {
        store,
        identity,
        base_url,
        network,
        require_peer_certificate,
    });
    let own = Router::new()
        .route(
            "/fhir/$localize",
            get(network::localize_operation).post(network::localize_operation),
        )
        .route(
            "/fhir/$fetch",
            get(network::fetch_operation).post(network::fetch_operation),
        )
        .merge(audit_api::routes())
        .with_state(state.clone());
    zorgnet_rest::finish(
        zorgnet_rest::routes(fhir)
            .merge(own)
            .layer(middleware::from_fn_with_state(state, access::enforce))
            .layer(middleware::from_fn_with_state(
                authentication,
                authn::authenticate,
            ))
            .layer(middleware::from_fn_with_state(audit, audit::record)),
    )
}
