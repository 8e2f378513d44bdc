//! The access log's layer (NEN 7513): every request for the node's FHIR data, served or
//! refused, becomes one [`AuditRecord`], and no answer leaves before its record is durable.
//!
//! It is the outermost of the node's own layers, so it sees what [`crate::authn`] refuses
//! too. It puts an [`AuditNote`] into the request's extensions; the layers after it write
//! there what only they know (who the caller is, which Patients the request is about, the
//! purpose and a break-the-glass reason), and no handler does. After the answer it adds what
//! the answer shows (the store's [`PolicyFacts`] of a resource read by id), hands the record
//! to the [`AuditSink`] and waits for its commit; when the record cannot be made durable, the
//! answer is replaced by a 503, so nothing is served unlogged.
//!
//! Monitoring: a router wrapped by [`monitored`] carries the node's [`Monitor`] in every
//! request; once a record is durable the layer feeds it to the monitor, and each alert the
//! monitor raises is appended to the same log (as [`zorgnet_audit::Alert::to_record`]
//! makes it, so it is chained and proven like an access), counted in
//! `zorgnet_audit_alerts_total{rule}` and logged as a warning naming the professional (a
//! UZI number, never a BSN). The answer waits for the alert's record too, which takes a
//! commit only when an alert is raised.
//!
//! Not logged: `/health`, `/metrics` and `GET /fhir/metadata`, which hold no patient data.

use axum::Extension;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::{Arc, Mutex};
use zorgnet_audit::{
    Agent, AgentKind, AuditError, AuditLog, AuditRecord, AuditSink, ChainKey, Monitor, Rule,
    SigningKey,
};
use zorgnet_fhir::IssueCode;
use zorgnet_rest::error::FhirError;
use zorgnet_store::{PolicyFacts, Store};
use zorgnet_trust::certificate::PeerIdentity;

/// Opens the node's access log beside its store ([`zorgnet_audit::open_beside`]: its own
/// SQLite file in `data`, or the store's PostgreSQL database, the keys in `data`), and starts
/// its writer; returns the log, its sink and the key that signs its checkpoints. Blocking.
pub fn open(
    store: &Store,
    data: &Path,
) -> Result<(Arc<AuditLog>, AuditSink, SigningKey), AuditError> {
    zorgnet_audit::open_beside(store.database(), data)
}

/// [`open`] with a key at hand, the log in the store's own database (tests). Blocking.
pub fn open_with_key(
    store: &Store,
    key: ChainKey,
) -> Result<(Arc<AuditLog>, AuditSink), AuditError> {
    zorgnet_audit::start(store.database().clone(), key)
}

/// What the layers after the access log's learned of a request, for its record.
#[derive(Debug, Clone)]
pub struct AuditNote {
    /// Who, as far as known.
    pub agent: Agent,
    /// The Patients the request is about.
    pub patients: Vec<String>,
    /// The purpose of use.
    pub purpose: Option<String>,
    /// The break-the-glass reason.
    pub reason: Option<String>,
    /// On what the access was permitted: the consent register's reasons for another
    /// organisation (`treatment-relation`, `consent`, `emergency`).
    pub bases: Vec<String>,
}

/// The note as the request carries it.
#[derive(Clone)]
pub(crate) struct SharedNote(Arc<Mutex<AuditNote>>);

/// Writes into the request's note, when the access log's layer put one there.
pub(crate) fn note(request: &Request, write: impl FnOnce(&mut AuditNote)) {
    if let Some(SharedNote(note)) = request.extensions().get::<SharedNote>() {
        write(&mut note.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// An agent of `kind` with nothing else known yet.
pub(crate) fn agent(kind: AgentKind) -> Agent {
    Agent {
        kind,
        id: None,
        role: None,
        organisation: None,
        certificate: None,
    }
}

/// The node's access log writer, in every logged request, for the handlers that append an
/// alert of their own (a citizen's `$report`, [`crate::audit_api`]).
#[derive(Clone)]
pub(crate) struct LogWriter(pub(crate) AuditSink);

/// The node's monitor of its access log, shared by all requests.
#[derive(Clone)]
struct Monitoring(Arc<Mutex<Monitor>>);

/// Watches the accesses `router` (a node's, from [`crate::router_in_network`]) logs with
/// `monitor`: the access log's layer finds it in every request. Registers the alert counter
/// of every rule at zero, so `/metrics` shows it before the first alert.
pub fn monitored(router: Router, monitor: Monitor) -> Router {
    for rule in Rule::ALL {
        metrics::counter!("zorgnet_audit_alerts_total", "rule" => rule.name()).increment(0);
    }
    router.layer(Extension(Monitoring(Arc::new(Mutex::new(monitor)))))
}

/// Feeds `record`, durable as `seq`, to the monitor, and appends, counts and logs the alerts
/// it raises. An alert that cannot be appended is counted as a failure of the log; the
/// access it is about is durable already, so its answer is served.
async fn watch(sink: &AuditSink, monitoring: &Monitoring, record: &AuditRecord, seq: u64) {
    let alerts = {
        let mut monitor = monitoring.0.lock().unwrap_or_else(|p| p.into_inner());
        monitor.observe(record, seq)
    };
    for alert in alerts {
        metrics::counter!("zorgnet_audit_alerts_total", "rule" => alert.rule.name()).increment(1);
        tracing::warn!(
            rule = %alert.rule,
            professional = alert.agent.id.as_deref().unwrap_or("-"),
            organisation = alert.agent.organisation.as_deref().unwrap_or("-"),
            count = alert.count,
            max = alert.max,
            window_s = alert.window_s,
            seq,
            "the access log's monitor raised an alert"
        );
        if let Err(e) = sink.record(alert.to_record().to_json()).await {
            metrics::counter!("zorgnet_audit_failures_total").increment(1);
            tracing::error!(error = %e, rule = %alert.rule, "an alert could not be logged");
        }
    }
}

/// The layer.
pub(crate) async fn record(
    State(sink): State<AuditSink>,
    mut request: Request,
    next: Next,
) -> Response {
    if !logged(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<PeerIdentity>();
    let certificate = peer.map(|p| p.thumbprint.clone());
    let mut unauthenticated = agent(AgentKind::Unauthenticated);
    unauthenticated.organisation = peer.and_then(|p| p.ura.clone());
    let shared = SharedNote(Arc::new(Mutex::new(AuditNote {
        agent: unauthenticated,
        patients: Vec::new(),
        purpose: None,
        reason: None,
        bases: Vec::new(),
    })));
    request.extensions_mut().insert(shared.clone());
    request.extensions_mut().insert(LogWriter(sink.clone()));
    let monitoring = request.extensions().get::<Monitoring>().cloned();
    let asked = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map_or(request.uri().path(), |p| p.as_str())
    );
    let action = action(request.method(), request.uri().path());
    let response = next.run(request).await;
    let mut note = shared.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if note.patients.is_empty()
        && let Some(facts) = response.extensions().get::<PolicyFacts>()
    {
        note.patients = facts.patients.clone();
    }
    note.agent.certificate = certificate;
    let record = AuditRecord {
        at_ms: zorgnet_db::now_ms(),
        agent: note.agent,
        patients: note.patients,
        action,
        request: asked,
        purpose: note.purpose,
        reason: note.reason,
        bases: note.bases,
        status: response.status().as_u16(),
    };
    match sink.record(record.to_json()).await {
        Ok(seq) => {
            if let Some(monitoring) = monitoring {
                watch(&sink, &monitoring, &record, seq).await;
            }
            response
        }
        Err(e) => {
            metrics::counter!("zorgnet_audit_failures_total").increment(1);
            tracing::error!(error = %e, "an access could not be logged; its answer is withheld");
            FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueCode::Exception,
                "the access could not be logged, so it is not served; try again later",
            )
            .into_response()
        }
    }
}

/// Whether a request is logged: everything under `/fhir/` but the CapabilityStatement.
fn logged(method: &Method, path: &str) -> bool {
    match path.strip_prefix("/fhir/") {
        Some("metadata") => method != Method::GET,
        Some(_) => true,
        None => path == "/fhir",
    }
}

/// The interaction a request asks for, in FHIR's words.
fn action(method: &Method, path: &str) -> String {
    let parts: Vec<&str> = path
        .trim_start_matches("/fhir")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(operation) = parts.last().and_then(|p| p.strip_prefix('$')) {
        return format!("operation:{operation}");
    }
    let history = parts.contains(&"_history");
    let name = match *method {
        Method::GET | Method::HEAD if history && parts.len() == 4 => "vread",
        Method::GET | Method::HEAD if history => "history",
        Method::GET | Method::HEAD if parts.len() == 2 => "read",
        Method::GET | Method::HEAD => "search",
        Method::POST if parts.is_empty() => "transaction",
        Method::POST if parts.last() == Some(&"_search") => "search",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return method.as_str().to_lowercase(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_their_interaction() {
        for (method, path, expected) in [
            (Method::GET, "/fhir/Patient/p1", "read"),
            (Method::GET, "/fhir/Observation", "search"),
            (Method::POST, "/fhir/Observation/_search", "search"),
            (Method::POST, "/fhir/Observation", "create"),
            (Method::PUT, "/fhir/Observation/o1", "update"),
            (Method::DELETE, "/fhir/Observation/o1", "delete"),
            (Method::GET, "/fhir/Observation/o1/_history/2", "vread"),
            (Method::GET, "/fhir/Observation/o1/_history", "history"),
            (
                Method::GET,
                "/fhir/Patient/p1/$everything",
                "operation:everything",
            ),
            (Method::POST, "/fhir/$fetch", "operation:fetch"),
            (Method::POST, "/fhir", "transaction"),
        ] {
            assert_eq!(action(&method, path), expected, "{method} {path}");
        }
        assert!(logged(&Method::GET, "/fhir/Patient"));
        assert!(!logged(&Method::GET, "/fhir/metadata"));
        assert!(!logged(&Method::GET, "/health"));
        assert!(!logged(&Method::GET, "/metrics"));
    }
}
