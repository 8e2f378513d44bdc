//! The hub's own access log (NEN 7513): every request to a module that holds data about
//! people becomes one record in the hub's [`AuditLog`], and no answer leaves before its record
//! is durable.
//!
//! Logged: `/nvi`, `/consent`, `/relations`, `/prs` (people, as pseudonyms and exchange
//! tokens), `/professionals` (professionals' names and roles) and `/trust/token` (a token
//! names a professional). Not logged: `/registry`, `/addressing`, `/trust/keys`,
//! `/trust/crl`, `/audit/checkpoints`, `/health` and `/openapi.json`, which hold no data about
//! people.
//!
//! One layer, [`record`], outside authentication so that it sees what
//! [`crate::auth::authenticate`] refuses too, writes every record; no handler does. A record
//! says who (the organisation by URA, the operator, or an unauthenticated caller, with the
//! client certificate's thumbprint when there was one), what (method, path and query string,
//! with anything that reads as a BSN masked: the hub never receives one in clear, but a client
//! can put one where it does not belong), when, and the outcome (the status). When the record
//! cannot be made durable the answer is replaced by a 503, so nothing is served unlogged.
//!
//! The log lies beside the hub's database and is kept as a node keeps its own
//! ([`zorgnet_audit::open_beside`]: the same files in the data directory, so
//! `zorgnet audit verify` reads both), checkpointed every [`CHECKPOINT_INTERVAL`].
//! What it is not: a log of the nodes' accesses (each node keeps its own; the hub keeps their
//! checkpoints, [`crate::audit_checkpoints`]).

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{HubError, HubState};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;
use zorgnet_audit::{
    Agent, AgentKind, AuditLog, AuditRecord, AuditSink, CHECKPOINT_INTERVAL, SigningKey,
    sign_checkpoint,
};
use zorgnet_db::Database;
use zorgnet_trust::certificate::PeerIdentity;

/// The origin line of the hub's checkpoints.
pub const CHECKPOINT_ORIGIN: &str = "zorgnet-hub";
/// The agent id of the hub's operator in its records.
pub const OPERATOR_AGENT_ID: &str = "hub-operator";
/// What stands in a record for a number that reads as a BSN.
pub const MASKED_BSN: &str = "[bsn]";
/// Digits in a BSN.
const BSN_DIGITS: usize = 9;

/// Path prefixes whose requests are logged (each a whole segment or more).
const LOGGED_PREFIXES: &[&str] = &[
    "/nvi",
    "/consent",
    "/relations",
    "/prs",
    "/professionals",
    "/trust/token",
];

/// The hub's access log, its writer and its checkpoint key.
pub struct HubAudit {
    log: Arc<AuditLog>,
    sink: AuditSink,
    signer: SigningKey,
}

impl HubAudit {
    /// Opens (creating on first start) the access log beside `db`, with the keys in `data`
    /// (made on first use), as [`zorgnet_audit::open_beside`] does, and starts its writer.
    /// Blocking.
    pub fn open(db: &Database, data: &Path) -> Result<HubAudit, HubError> {
        let (log, sink, signer) = zorgnet_audit::open_beside(db, data)
            .map_err(|e| HubError::Setup(format!("the access log: {e}")))?;
        Ok(HubAudit { log, sink, signer })
    }

    /// The log, for reading and proofs.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// Signs a checkpoint of the log every [`CHECKPOINT_INTERVAL`] for as long as it runs (a
    /// failure is logged and tried again at the next interval).
    pub(crate) async fn keep_checkpoints(log: Arc<AuditLog>, signer: SigningKey) {
        loop {
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
            sign_checkpoint(&log, &signer, CHECKPOINT_ORIGIN).await;
        }
    }

    /// The log and the key for [`HubAudit::keep_checkpoints`].
    pub(crate) fn checkpointing(&self) -> (Arc<AuditLog>, SigningKey) {
        (self.log.clone(), self.signer.clone())
    }
}

/// The layer: records a logged request after its answer and withholds the answer (503) when the
/// record cannot be made durable.
pub async fn record(State(state): State<Arc<HubState>>, request: Request, next: Next) -> Response {
    if !logged(request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<PeerIdentity>().cloned();
    let method = request.method().clone();
    let asked = format!(
        "{method} {}",
        masked(
            request
                .uri()
                .path_and_query()
                .map_or(request.uri().path(), |p| p.as_str())
        )
    );
    let action = action(&method, request.uri().path());
    let response = next.run(request).await;
    let mut agent = agent(response.extensions().get::<Caller>());
    if let Some(peer) = peer {
        agent.certificate = Some(peer.thumbprint);
        if agent.organisation.is_none() {
            agent.organisation = peer.ura;
        }
    }
    let record = AuditRecord {
        at_ms: zorgnet_db::now_ms(),
        agent,
        patients: Vec::new(),
        action,
        request: asked,
        purpose: None,
        reason: None,
        bases: Vec::new(),
        status: response.status().as_u16(),
    };
    match state.audit.sink.record(record.to_json()).await {
        Ok(_) => response,
        Err(e) => {
            metrics::counter!("zorgnet_hub_audit_failures_total").increment(1);
            tracing::error!(error = %e, "an access could not be logged; its answer is withheld");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the access could not be logged, so it is not served; try again later",
            )
            .into_response()
        }
    }
}

/// Whether requests to `path` are logged.
fn logged(path: &str) -> bool {
    LOGGED_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Who called, as far as the answer tells: authentication puts the [`Caller`] in it.
fn agent(caller: Option<&Caller>) -> Agent {
    let (kind, id, organisation) = match caller {
        Some(Caller::Organisation(ura)) => (AgentKind::Organisation, None, Some(ura.clone())),
        Some(Caller::Admin) => (AgentKind::System, Some(OPERATOR_AGENT_ID.to_string()), None),
        Some(Caller::Anonymous) | None => (AgentKind::Unauthenticated, None, None),
    };
    Agent {
        kind,
        id,
        role: None,
        organisation,
        certificate: None,
    }
}

/// What a request does: `read` (GET), `update` (PUT), `delete`, or for a POST the operation
/// its path ends in (`operation:lookup`, `operation:registrations`, `operation:revoke`).
fn action(method: &Method, path: &str) -> String {
    match *method {
        Method::GET | Method::HEAD => "read".into(),
        Method::PUT | Method::PATCH => "update".into(),
        Method::DELETE => "delete".into(),
        Method::POST => {
            let last = path.rsplit('/').find(|part| !part.is_empty()).unwrap_or("");
            format!("operation:{}", masked(last))
        }
        _ => method.as_str().to_lowercase(),
    }
}

/// `text` with every run of exactly [`BSN_DIGITS`] digits that passes the BSN's 11-check
/// replaced by [`MASKED_BSN`].
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let digits = &rest[start..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let run = &digits[..end];
        if run.len() == BSN_DIGITS && zorgnet_fhir::identifiers::bsn_is_valid(run) {
            out.push_str(MASKED_BSN);
        } else {
            out.push_str(run);
        }
        rest = &digits[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modules_about_people_are_logged() {
        for path in [
            "/nvi/lookup",
            "/consent/decision",
            "/relations",
            "/relations/r1/end",
            "/prs/evaluate",
            "/professionals/900000017",
            "/trust/token",
        ] {
            assert!(logged(path), "{path}");
        }
        for path in [
            "/health",
            "/openapi.json",
            "/registry/organisations",
            "/trust/keys",
            "/trust/crl",
            "/addressing/fhir/Organization",
            "/audit/checkpoints/00000011",
            "/nvix",
            "/professionalsx",
        ] {
            assert!(!logged(path), "{path}");
        }
    }

    #[test]
    fn what_reads_as_a_bsn_is_masked() {
        assert_eq!(
            masked("/relations?after=123456782&limit=5"),
            "/relations?after=[bsn]&limit=5"
        );
        assert_eq!(masked("/professionals/123456782"), "/professionals/[bsn]");
        assert_eq!(
            masked("/professionals/900000017"),
            "/professionals/900000017",
            "a UZI number that fails the 11-check stays"
        );
        assert_eq!(masked("a1234567820b"), "a1234567820b", "ten digits");
        assert_eq!(masked("x123456782"), "x[bsn]");
        assert_eq!(masked(""), "");
    }

    #[test]
    fn requests_are_named_by_what_they_do() {
        assert_eq!(action(&Method::GET, "/relations"), "read");
        assert_eq!(action(&Method::PUT, "/professionals/9"), "update");
        assert_eq!(action(&Method::POST, "/nvi/lookup"), "operation:lookup");
        assert_eq!(action(&Method::POST, "/relations/"), "operation:relations");
        assert_eq!(
            action(&Method::POST, "/consent/directives/d1/revoke"),
            "operation:revoke"
        );
        assert_eq!(action(&Method::DELETE, "/prs/x"), "delete");
        let operator = agent(Some(&Caller::Admin));
        assert_eq!(operator.kind, AgentKind::System);
        assert_eq!(operator.id.as_deref(), Some(OPERATOR_AGENT_ID));
        let organisation = agent(Some(&Caller::Organisation("00000011".into())));
        assert_eq!(organisation.organisation.as_deref(), Some("00000011"));
        assert_eq!(agent(None).kind, AgentKind::Unauthenticated);
    }
}
