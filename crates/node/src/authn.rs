//! Who may call the node at all: the layer in front of the access policy that refuses every
//! request without credentials.
//!
//! A node serves nobody anonymously. A request is let through to the access layer
//! ([`crate::access`]) only when it is
//! - from the node's own systems: `Authorization: Bearer <node key>`, the key the node created
//!   in its data directory at first start ([`NODE_KEY_FILE`], mode 0600, stored here only as
//!   its SHA-256). It acts as the organisation's administrator (the record system, the
//!   import, the operator's tools). The header is removed before the request goes on, so that
//!   no later layer or log sees the key;
//! - from the node's own systems over mutual TLS: no `Authorization`, but a client
//!   certificate of the network CA naming the node's own URA (the TLS layer verified it and
//!   put its `PeerIdentity` in the request). It acts as the administrator too;
//! - from one of the organisation's professionals or systems, or from a citizen: a bearer
//!   token of an OpenID Connect provider the node is configured with ([`NodeOidc`]: the
//!   organisation's own provider for its staff, a DigiD-like one for citizens). The token's
//!   (unverified) `iss` picks the verifier; the verifier checks signature, issuer, audience
//!   and times with the provider's published keys (`zorgnet_trust::oidc`). A token that
//!   verifies becomes a [`Caller`] in the request's extensions (a [`Caller::Staff`] with its
//!   SMART scopes and UZI number, or a [`Caller::Citizen`] with their BSN or
//!   zorgverificatienummer), the header is removed, and the access layer applies the policy
//!   for that kind of caller. A token of a configured issuer that does not verify is a 401
//!   here; when the provider cannot be reached to fetch its keys, a 503;
//! - from another organisation: any other `Authorization`, which the access layer verifies
//!   as a hub token (and refuses with 401 when it is not a valid token). On a node outside a
//!   network there is nobody to verify such a token with, so it is refused here;
//! - for what carries no patient data: `GET /health`, the CapabilityStatement
//!   (`GET /fhir/metadata`), which FHIR clients read before they authenticate, and the
//!   directory the node publishes as an IHE mCSD update supplier (`GET
//!   /fhir/{type}/_history` of the `zorgnet_rest::mcsd::DIRECTORY_TYPES`: organisations,
//!   endpoints, locations, services, practitioners and their roles), which the hub's address
//!   book polls;
//! - on a node started with `--insecure-dev` ([`LocalClients::InsecureDev`], accepted only on
//!   a loopback address, with a warning at every start): a request without credentials acts
//!   as the administrator. For development, benchmarks and tests of the FHIR layer alone.
//!
//! Everything else is a 401 OperationOutcome with `WWW-Authenticate: Bearer`.
//! What it is not: the policy (what a caller may see is [`crate::access`]'s, which reads the
//! [`Caller`] this layer found; no handler does), or TLS client authentication (the TLS layer,
//! `zorgnet_trust::tls::serve`, verifies client certificates before a request exists; the
//! access layer compares them with the hub's tokens).

use crate::audit;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use zorgnet_audit::AgentKind;
use zorgnet_fhir::IssueCode;
use zorgnet_rest::error::FhirError;
use zorgnet_rest::mcsd::DIRECTORY_TYPES;
use zorgnet_trust::certificate::PeerIdentity;
use zorgnet_trust::oidc::{CitizenIdentity, OidcError, OidcVerifier, StaffIdentity};

/// File in the node's data directory that holds its key.
pub const NODE_KEY_FILE: &str = "node-admin.key";
/// Prefix of a node key, so that a leaked one is recognisable.
pub const NODE_KEY_PREFIX: &str = "zn_node_";

/// How the node's own systems prove who they are.
#[derive(Clone)]
pub enum LocalClients {
    /// With the node key, checked against its SHA-256.
    Key {
        /// `zorgnet_trust::secret::key_hash` of the key.
        hash: String,
    },
    /// Without credentials (`--insecure-dev`): anyone who reaches the port is the
    /// administrator. Never in a network that holds real data.
    InsecureDev,
}

impl std::fmt::Debug for LocalClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalClients::Key { .. } => f.write_str("LocalClients::Key"),
            LocalClients::InsecureDev => f.write_str("LocalClients::InsecureDev"),
        }
    }
}

impl LocalClients {
    /// Clients holding `key`.
    pub fn key(key: &str) -> LocalClients {
        LocalClients::Key {
            hash: zorgnet_trust::secret::key_hash(key.trim()),
        }
    }
}

/// The OpenID Connect providers whose tokens a node accepts; none by default.
#[derive(Debug, Clone, Default)]
pub struct NodeOidc {
    /// The organisation's own provider: its professionals and systems, limited by their
    /// SMART scopes (`user/…`, `system/…`).
    pub staff: Option<Arc<OidcVerifier>>,
    /// The citizens' provider (DigiD-like): a citizen reads their own data, nothing else.
    pub citizens: Option<Arc<OidcVerifier>>,
}

/// Who a request with an OpenID Connect token is from, as this layer verified it. It is put
/// in the request's extensions for the access layer; a request without one is the node's
/// own administrator, an open read, or another organisation's (the hub's token, which the
/// access layer verifies itself).
#[derive(Debug, Clone)]
pub enum Caller {
    /// A professional or system of the node's own organisation.
    Staff(Arc<StaffIdentity>),
    /// A citizen.
    Citizen(Arc<CitizenIdentity>),
}

impl NodeOidc {
    /// The caller `token` names, when it claims to be of a configured provider: `None` for a
    /// token of none of them (left to the hub-token path).
    async fn identify(&self, token: &str) -> Option<Result<Caller, OidcError>> {
        let staff = self.staff.as_ref().filter(|v| v.claims_issuer(token));
        let citizens = self.citizens.as_ref().filter(|v| v.claims_issuer(token));
        if staff.is_none() && citizens.is_none() {
            return None;
        }
        let mut refusal = None;
        if let Some(verifier) = staff {
            match verifier.verify(token).await.and_then(|t| t.into_staff()) {
                Ok(staff) => return Some(Ok(Caller::Staff(Arc::new(staff)))),
                Err(e) => refusal = Some(e),
            }
        }
        if let Some(verifier) = citizens {
            match verifier.verify(token).await.and_then(|t| t.into_citizen()) {
                Ok(citizen) => return Some(Ok(Caller::Citizen(Arc::new(citizen)))),
                Err(e) if refusal.is_none() || !matches!(e, OidcError::WrongKind(_)) => {
                    refusal = Some(e)
                }
                Err(_) => {}
            }
        }
        refusal.map(Err)
    }
}

/// What the layer needs: the local clients' proof, whether hub tokens can be verified, and
/// the OpenID Connect providers.
pub(crate) struct Authentication {
    pub(crate) local: LocalClients,
    /// The node's organisation: a client certificate naming it is the node's own system.
    pub(crate) own_ura: String,
    pub(crate) in_network: bool,
    pub(crate) oidc: NodeOidc,
}

/// The layer.
pub(crate) async fn authenticate(
    State(auth): State<Arc<Authentication>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).map(bearer);
    match presented {
        Some(Some(token))
            if matches!(&auth.local, LocalClients::Key { hash: own }
                if *own == zorgnet_trust::secret::key_hash(&token)) =>
        {
            request.headers_mut().remove(header::AUTHORIZATION);
            note_own_system(&request, auth.own_ura.as_str());
            next.run(request).await
        }
        Some(Some(token)) => match auth.oidc.identify(&token).await {
            Some(Ok(caller)) => {
                request.headers_mut().remove(header::AUTHORIZATION);
                note_caller(&request, &caller, &auth.own_ura);
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
            Some(Err(e)) if e.is_provider_failure() => {
                tracing::warn!(error = %e, "an OpenID provider cannot be asked");
                FhirError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    IssueCode::Exception,
                    "the identity provider cannot be asked, so the token cannot be checked",
                )
                .into_response()
            }
            Some(Err(e)) => {
                metrics::counter!("zorgnet_node_rejected_credentials_total").increment(1);
                tracing::info!(error = %e, "refused an OpenID Connect token");
                unauthenticated(&format!("token refused: {e}"))
            }
            None if auth.in_network => next.run(request).await,
            None => refuse_unknown(),
        },
        Some(None) if auth.in_network => next.run(request).await,
        Some(None) => refuse_unknown(),
        None if open_without_credentials(&request) => next.run(request).await,
        None if request
            .extensions()
            .get::<PeerIdentity>()
            .is_some_and(|peer| peer.ura.as_deref() == Some(auth.own_ura.as_str())) =>
        {
            note_own_system(&request, auth.own_ura.as_str());
            next.run(request).await
        }
        None if matches!(auth.local, LocalClients::InsecureDev) => {
            note_own_system(&request, auth.own_ura.as_str());
            next.run(request).await
        }
        None => unauthenticated(
            "this node serves no one anonymously: send Authorization: Bearer <node key or access token>",
        ),
    }
}

/// Notes the organisation's own system as the caller, for the access log.
fn note_own_system(request: &Request, own_ura: &str) {
    audit::note(request, |note| {
        note.agent = audit::agent(AgentKind::System);
        note.agent.organisation = Some(own_ura.to_string());
    });
}

/// Notes a professional, system client or citizen of an OpenID Connect provider as the
/// caller, for the access log.
fn note_caller(request: &Request, caller: &Caller, own_ura: &str) {
    audit::note(request, |note| {
        note.agent = match caller {
            Caller::Staff(staff) => {
                let mut agent = audit::agent(match staff.uzi {
                    Some(_) => AgentKind::Professional,
                    None => AgentKind::System,
                });
                agent.id = Some(staff.uzi.clone().unwrap_or_else(|| staff.subject.clone()));
                agent.organisation = Some(own_ura.to_string());
                agent
            }
            Caller::Citizen(citizen) => {
                let mut agent = audit::agent(AgentKind::Citizen);
                agent.id = Some(format!("{} {}", citizen.issuer, citizen.subject));
                agent
            }
        };
    });
}

fn refuse_unknown() -> Response {
    metrics::counter!("zorgnet_node_rejected_credentials_total").increment(1);
    unauthenticated("unknown credentials: send Authorization: Bearer <node key>")
}

/// What any client may read before authenticating: no patient data.
fn open_without_credentials(request: &Request) -> bool {
    if request.method() != Method::GET {
        return false;
    }
    let path = request.uri().path().trim_end_matches('/');
    matches!(path, "/health" | "/fhir/metadata")
        || path
            .strip_prefix("/fhir/")
            .and_then(|rest| rest.strip_suffix("/_history"))
            .is_some_and(|resource_type| DIRECTORY_TYPES.contains(&resource_type))
}

fn bearer(value: &HeaderValue) -> Option<String> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

fn unauthenticated(message: &str) -> Response {
    let mut response =
        FhirError::new(StatusCode::UNAUTHORIZED, IssueCode::Forbidden, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"zorgnet\""),
    );
    response
}
