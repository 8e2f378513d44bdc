//! The policy for the access log's routes (`/fhir/AuditEvent…`, served by
//! [`crate::audit_api`]), which no other policy of this layer reaches:
//! - **The organisation's own systems** (the node key, a client certificate naming the
//!   node's URA, `--insecure-dev`, and a system client of the organisation's OpenID provider,
//!   without a UZI number, whose SMART scopes permit reading or searching `AuditEvent`)
//!   reach every record ([`LogScope::Everything`]).
//! - **A citizen** reaches only records that name at least one Patient and no Patient but
//!   theirs. A search must name their Patient(s) with `patient` (each one checked to be the
//!   citizen, as for their other reads: the BSN or zorgverificatienummer equals the
//!   token's), and is confined to those Patients whatever else it asks
//!   ([`LogScope::Patients`]); the records found are checked again on their way out. A read
//!   or a `$proof` is served only when every Patient of the record is the citizen's (the
//!   handler's [`RecordFacts`], as a store read's `PolicyFacts`). Anything else, an unknown
//!   record included, is the one refusal ([`NOT_PERMITTED`]). Their token's scopes must
//!   permit reading `AuditEvent`.
//! - **Professionals**, of this organisation or another, are refused: zorgnet knows no
//!   privacy officer's role yet, and a professional's token would otherwise read every
//!   colleague's accesses.
//! - **Other organisations** (and this organisation's hub tokens): 403.
//!
//! Only `GET` is served, and `POST` of `AuditEvent/{seq}/$report`: a citizen reports a
//! record as suspicious on exactly the terms on which they read it (every Patient of the
//! record theirs, their token permitting reading `AuditEvent`; anything else, an unknown
//! record included, the one refusal), and the handler appends the alert with them as its
//! agent ([`Reporter`]). Nobody else reports: not professionals, not other organisations,
//! and not the organisation's own systems, which do not speak for a citizen (a report is
//! the citizen's own word, and the organisation raises alerts of its own through its
//! monitor). Otherwise the log is written by the access log's layer alone.

use super::*;
use crate::audit_api::{LogScope, RecordFacts, Reporter, ServedLog};
use own_callers::is_the_citizen;
use zorgnet_trust::oidc::CitizenIdentity;
use zorgnet_trust::smart::Interaction;

const NO_PRIVACY_OFFICER: &str = "the access log is read by the organisation's systems and by \
    citizens about themselves; professionals cannot read it (there is no privacy officer's role)";
const NOT_FOR_OTHERS: &str = "the access log is not available to other organisations";
const OWN_SYSTEMS_DIRECTLY: &str = "the organisation's systems read the access log with the node \
    key or the node's certificate, not with a hub token";
const NAME_YOUR_PATIENT: &str = "a citizen searches the access log by their own Patient at this \
    node: patient=Patient/{id} (find it with Patient?identifier=…)";
const READ_ONLY: &str = "the access log is only read";
const REPORTED_BY_THE_CITIZEN: &str = "an access is reported as suspicious by the citizen it was \
    about, with their own token; the organisation's systems and professionals do not report on \
    a citizen's behalf";

/// Whether the request is a citizen's report of a record (`POST AuditEvent/{seq}/$report`).
fn reports(request: &Request) -> bool {
    request.method() == Method::POST && request.uri().path().ends_with("/$report")
}

/// Whether the request reads a record (`AuditEvent/{seq}` or its `$proof`) rather than
/// searching.
fn reads_one(request: &Request) -> bool {
    request.uri().path() != "/fhir/AuditEvent"
}

/// The organisation's own systems: every record.
pub(super) async fn serve_own_system(mut request: Request, next: Next) -> Response {
    if reports(&request) {
        return AccessError::Forbidden(REPORTED_BY_THE_CITIZEN.into()).into_response();
    }
    let patients = if reads_one(&request) {
        let (seq, log) = record_target(&request);
        match read_patients(seq, log).await {
            Ok(patients) => patients.unwrap_or_default(),
            Err(e) => return e.into_response(),
        }
    } else {
        searched_patients(&request)
    };
    if !patients.is_empty() {
        note_patients(&request, patients);
    }
    request.extensions_mut().insert(LogScope::Everything);
    next.run(request).await
}

/// The record a read or `$proof` names, and the log to read it in.
fn record_target(request: &Request) -> (Option<u64>, Option<ServedLog>) {
    let seq = request
        .uri()
        .path()
        .split('/')
        .nth(3)
        .and_then(|s| s.parse::<u64>().ok());
    (seq, request.extensions().get::<ServedLog>().cloned())
}

/// The Patients of record `seq`, read from the log; `None` when the log holds no such
/// record. (Nothing of the request is held across the wait: its body is not `Sync`.)
async fn read_patients(
    seq: Option<u64>,
    log: Option<ServedLog>,
) -> Result<Option<Vec<String>>, AccessError> {
    let (Some(seq), Some(ServedLog(log))) = (seq, log) else {
        return Ok(None);
    };
    let json = tokio::task::spawn_blocking(move || log.record(seq))
        .await
        .map_err(|e| AccessError::Internal(e.to_string()))?
        .map_err(|e| AccessError::Internal(format!("reading the access log: {e}")))?;
    Ok(json
        .and_then(|json| serde_json::from_str::<zorgnet_audit::AuditRecord>(&json).ok())
        .map(|record| record.patients))
}

/// The Patients a search's `patient` parameter names, as the handler reads it.
fn searched_patients(request: &Request) -> Vec<String> {
    zorgnet_rest::interactions::query_pairs(request.uri().query())
        .into_iter()
        .filter(|(name, _)| name == "patient")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(|v| v.strip_prefix("Patient/").unwrap_or(v).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A caller of the organisation's OpenID provider.
pub(super) async fn serve_oidc_caller(
    state: &AppState,
    caller: Caller,
    request: Request,
    next: Next,
) -> Response {
    let reporting = reports(&request);
    if request.method() != Method::GET && !reporting {
        return AccessError::Forbidden(READ_ONLY.into()).into_response();
    }
    // Reporting a record is permitted on the terms of reading it.
    let interaction = if reads_one(&request) {
        Interaction::Read
    } else {
        Interaction::Search
    };
    match caller {
        Caller::Staff(_) if reporting => {
            AccessError::Forbidden(REPORTED_BY_THE_CITIZEN.into()).into_response()
        }
        Caller::Staff(staff) if staff.uzi.is_some() => {
            AccessError::Forbidden(NO_PRIVACY_OFFICER.into()).into_response()
        }
        Caller::Staff(staff) if !staff.permits("AuditEvent", interaction) => {
            AccessError::Forbidden(format!(
                "the token's SMART scopes do not permit this: it needs {interaction:?} on AuditEvent"
            ))
            .into_response()
        }
        Caller::Staff(_) => serve_own_system(request, next).await,
        Caller::Citizen(citizen) => {
            if !citizen.permits("AuditEvent", interaction) {
                return AccessError::Forbidden(format!(
                    "the token's SMART scopes do not permit this: it needs {interaction:?} on AuditEvent"
                ))
                .into_response();
            }
            serve_citizen(state, &citizen, request, next)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
    }
}

/// Another organisation, or a professional or system of this one with a hub token.
pub(super) fn refuse_token(claims: &AccessClaims, own_ura: &str) -> Response {
    let message = if claims.uzi.is_some() {
        NO_PRIVACY_OFFICER
    } else if claims.ura == own_ura {
        OWN_SYSTEMS_DIRECTLY
    } else {
        NOT_FOR_OTHERS
    };
    AccessError::Forbidden(message.into()).into_response()
}

/// Whether every one of `patients` (ids at this node) is the citizen; none is not.
async fn all_the_citizens(
    state: &AppState,
    citizen: &CitizenIdentity,
    patients: &BTreeSet<String>,
) -> Result<bool, AccessError> {
    if patients.is_empty() {
        return Ok(false);
    }
    for id in patients {
        let found = local_patients(state, &PatientRef::Id(id.clone())).await?;
        if found.is_empty() || !is_the_citizen(state, citizen, &found).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn serve_citizen(
    state: &AppState,
    citizen: &CitizenIdentity,
    mut request: Request,
    next: Next,
) -> Result<Response, AccessError> {
    let refused = || AccessError::Forbidden(NOT_PERMITTED.into());
    if reads_one(&request) {
        // Decided on the record's Patients before anything is read for the answer, and
        // checked again on the Patients the answer carries.
        let (seq, log) = record_target(&request);
        let Some(patients) = read_patients(seq, log).await? else {
            return Err(refused());
        };
        note_patients(&request, patients.iter().cloned());
        let patients: BTreeSet<String> = patients.into_iter().collect();
        if !all_the_citizens(state, citizen, &patients).await? {
            tracing::info!(subject = %citizen.subject, "refused a citizen's read of an access record that is not only theirs");
            return Err(refused());
        }
        request
            .extensions_mut()
            .insert(LogScope::Patients(patients.clone()));
        if reports(&request) {
            let mut agent = crate::audit::agent(zorgnet_audit::AgentKind::Citizen);
            agent.id = Some(format!("{} {}", citizen.issuer, citizen.subject));
            request.extensions_mut().insert(Reporter(agent));
        }
        let response = next.run(request).await;
        if let Some(RecordFacts(records)) = response.extensions().get::<RecordFacts>()
            && records
                .iter()
                .any(|answered| answered.iter().any(|p| !patients.contains(p)))
        {
            return Err(AccessError::Internal(
                "the access log answered with another record than the one decided on".into(),
            ));
        }
        return Ok(response);
    }
    let named: BTreeSet<String> = searched_patients(&request).into_iter().collect();
    if named.is_empty() {
        return Err(AccessError::Forbidden(NAME_YOUR_PATIENT.into()));
    }
    if named.len() > crate::audit_api::MAX_PATIENTS_PER_SEARCH {
        return Err(AccessError::Invalid(format!(
            "at most {} patients per search",
            crate::audit_api::MAX_PATIENTS_PER_SEARCH
        )));
    }
    note_patients(&request, named.iter().cloned());
    if !all_the_citizens(state, citizen, &named).await? {
        tracing::info!(subject = %citizen.subject, "refused a citizen's search of the access log for a patient not theirs");
        return Err(refused());
    }
    request
        .extensions_mut()
        .insert(LogScope::Patients(named.clone()));
    let response = next.run(request).await;
    if let Some(RecordFacts(records)) = response.extensions().get::<RecordFacts>()
        && records
            .iter()
            .any(|patients| patients.is_empty() || patients.iter().any(|p| !named.contains(p)))
    {
        // The search is confined to the citizen's Patients; a record of anyone else's here
        // is a fault of this node, and nothing of the page leaves.
        return Err(AccessError::Internal(
            "the access log's search returned a record outside the citizen's Patients".into(),
        ));
    }
    Ok(response)
}
