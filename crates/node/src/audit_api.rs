//! The access log as FHIR, for the people it is about and the organisation that keeps it:
//! - `GET /fhir/AuditEvent?patient=…&agent=…&date=…&entity=…&_count=…&_sort=…`: a
//!   searchset Bundle of the records as IHE BALP `AuditEvent`s ([`zorgnet_audit::balp`]),
//!   newest first (`_sort=date` for oldest first), at most [`MAX_PAGE_SIZE`] a page, with a
//!   `next` link while the search may go on (no `total`: a count would be over records the
//!   caller may not see);
//! - `GET /fhir/AuditEvent/{seq}`: one record;
//! - `GET /fhir/AuditEvent/{seq}/$proof`: a `Parameters` with what a citizen needs to check,
//!   without trusting the node, that the record is in the log the node published: the
//!   record's exact bytes, its leaf index, the size and root of the latest signed
//!   checkpoint, the RFC 6962 inclusion proof, and the checkpoint's signed text and Ed25519
//!   signature (whose key, and whose earlier checkpoints, the hub keeps);
//! - `POST /fhir/AuditEvent/{seq}/$report`: the citizen the record is about reports it as
//!   suspicious (an empty body, or a `Parameters` with an optional `reason` of at most
//!   [`REPORT_REASON_CHARS_MAX`] characters). The report becomes an alert at this
//!   organisation: a record of the same log ([`CitizenReport::to_record`], rule
//!   `citizen-report`, agent the citizen, the reported record's Patients, and in its JSON
//!   the reported record's sequence number and the reason), appended through the node's
//!   `AuditSink` before the answer, counted in `zorgnet_audit_alerts_total{rule}` and
//!   logged as a warning (never a BSN, nor the citizen's free text). The answer is 201 with
//!   the alert as an `AuditEvent`; a citizen who reports the same record again gets 200
//!   with their earlier alert and nothing is appended (reports are idempotent per citizen
//!   and record). Who may report is decided where reads are (`access/audit_events.rs`): only
//!   the citizen who may read the record.
//!
//! Search parameters: `patient` (`Patient/{id}` or `{id}`, a comma-separated list for any of
//! them, at most [`MAX_PATIENTS_PER_SEARCH`]); `agent` (`{uzi-nr-pers system}|{UZI number}`,
//! `{ura system}|{URA}`, `{issuer}|{subject}` of a citizen, or a bare value for either an
//! agent's id or its organisation); `date` with `eq`, `ge`, `gt`, `le`, `lt` (repeatable);
//! `entity` (`Type` or `Type/id` the request was about). Anything else is a 400.
//!
//! These handlers never decide who may read what: the access layer (`access.rs`) puts a
//! [`LogScope`] in the request, which the search applies whatever the parameters say (a
//! request without one is refused), and a read's answer carries the record's Patients
//! ([`RecordFacts`]) for the layer to decide on, as the store's reads carry `PolicyFacts`.
//! Reading the log is itself logged, by the access log's layer like every request.
//!
//! The log is served by a router wrapped with [`served`]; without it these routes answer
//! 404, and the CapabilityStatement does not name AuditEvent. With it, the
//! CapabilityStatement lists AuditEvent with exactly what these routes serve ([`SERVED`]).
//! Either way the node's resource store never holds an AuditEvent ([`EXTERNAL`]): no write,
//! direct or in a Bundle, puts one there, and no read asks the store for one.

use crate::AppState;
use axum::Extension;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use zorgnet_audit::balp::{LogSource, URA_SYSTEM, UZI_SYSTEM, audit_event};
use zorgnet_audit::{
    Agent, AgentFilter, AuditError, AuditLog, AuditRecord, CITIZEN_REPORT_RULE, CitizenReport,
    EntityFilter, LogPage, LogQuery, MAX_RECORDS_PER_PAGE, Order, REPORT_REASON_CHARS_MAX,
    check_inclusion,
};
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::datetime::parse_date_range;
use zorgnet_rest::capability::{ServedParam, ServedType, ServedTypes};
use zorgnet_rest::error::{FHIR_JSON, FhirError};
use zorgnet_rest::{ExternalType, OperationRef};

/// Records a page holds when `_count` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most records a page holds; a larger `_count` gets this many.
pub const MAX_PAGE_SIZE: usize = 200;
const _: () = assert!(DEFAULT_PAGE_SIZE <= MAX_PAGE_SIZE);
const _: () = assert!(MAX_PAGE_SIZE <= zorgnet_audit::MAX_RECORDS_PER_PAGE);
/// Most Patients one search names.
pub const MAX_PATIENTS_PER_SEARCH: usize = 10;

/// AuditEvent as a type the node's store never holds: the access log is its only source.
pub const EXTERNAL: ExternalType = ExternalType {
    resource_type: "AuditEvent",
    source: "AuditEvents are this node's access log, written by the node alone and read at \
        GET /fhir/AuditEvent (search), /fhir/AuditEvent/{id} and /fhir/AuditEvent/{id}/$proof; \
        a citizen reports one as suspicious at POST /fhir/AuditEvent/{id}/$report",
};

/// The canonical URL of the `$proof` operation's definition.
pub const PROOF_DEFINITION: &str = "http://zorgnet.nl/fhir/OperationDefinition/AuditEvent-proof";
/// The canonical URL of the `$report` operation's definition.
pub const REPORT_DEFINITION: &str = "http://zorgnet.nl/fhir/OperationDefinition/AuditEvent-report";

/// What these routes serve, as the CapabilityStatement of a router wrapped with [`served`]
/// lists it.
pub const SERVED: ServedType = ServedType {
    resource_type: "AuditEvent",
    interactions: &["read", "search-type"],
    search_params: &[
        ServedParam {
            name: "patient",
            param_type: "reference",
            definition: Some("http://hl7.org/fhir/SearchParameter/AuditEvent-patient"),
            documentation: "Patient/{id} or {id}; a comma-separated list for any of them",
        },
        ServedParam {
            name: "agent",
            param_type: "token",
            definition: None,
            documentation: "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|{UZI number}, \
                http://fhir.nl/fhir/NamingSystem/ura|{URA}, {issuer}|{subject} of a citizen, \
                or a bare value for an agent's id or its organisation",
        },
        ServedParam {
            name: "date",
            param_type: "date",
            definition: Some("http://hl7.org/fhir/SearchParameter/AuditEvent-date"),
            documentation: "with the prefixes eq, ge, gt, le and lt; repeatable",
        },
        ServedParam {
            name: "entity",
            param_type: "reference",
            definition: Some("http://hl7.org/fhir/SearchParameter/AuditEvent-entity"),
            documentation: "Type or Type/id the request was about",
        },
    ],
    operations: &[
        OperationRef {
            name: "proof",
            definition: PROOF_DEFINITION,
        },
        OperationRef {
            name: "report",
            definition: REPORT_DEFINITION,
        },
    ],
};

/// The log a node serves, in every request of a router wrapped with [`served`].
#[derive(Clone)]
pub(crate) struct ServedLog(pub(crate) Arc<AuditLog>);

/// Serves `log` (the node's own, from [`crate::audit::open`]) at `/fhir/AuditEvent` of
/// `router` (a node's, from [`crate::router_in_network`]).
pub fn served(router: Router, log: Arc<AuditLog>) -> Router {
    metrics::counter!("zorgnet_audit_alerts_total", "rule" => CITIZEN_REPORT_RULE).increment(0);
    router
        .layer(Extension(ServedLog(log)))
        .layer(Extension(ServedTypes(vec![SERVED])))
}

/// Which records a request may reach, as the access layer decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogScope {
    /// Every record (the organisation's own systems).
    Everything,
    /// Only records that name at least one Patient and none but these (a citizen's own
    /// Patients at this node); a search names these Patients whatever its parameters say.
    Patients(BTreeSet<String>),
}

/// The citizen who reports a record with `$report`, as the access layer put them in the
/// request once it decided they may read that record.
#[derive(Debug, Clone)]
pub(crate) struct Reporter(pub(crate) Agent);

/// The Patients of the records an answer holds (one list per record), for the access layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts(pub Vec<Vec<String>>);

/// The routes, with the node's state (mounted by [`crate::router_in_network`] inside the
/// access layer).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    use axum::routing::{get, post};
    Router::new()
        .route("/fhir/AuditEvent", get(search))
        .route("/fhir/AuditEvent/{seq}", get(read))
        .route("/fhir/AuditEvent/{seq}/$proof", get(proof))
        .route("/fhir/AuditEvent/{seq}/$report", post(report))
        .method_not_allowed_fallback(|| async { only_read() })
}

/// Every method but `GET` on the log's routes (and `POST` of `$report`): nothing writes
/// the log but the node.
fn only_read() -> FhirError {
    FhirError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueCode::NotSupported,
        EXTERNAL.refusal(),
    )
}

/// Whether `path` is one of the access log's (the access layer's question).
pub(crate) fn is_log_path(path: &str) -> bool {
    path == "/fhir/AuditEvent" || path.starts_with("/fhir/AuditEvent/")
}

fn fhir_json(status: StatusCode, body: &Value, facts: RecordFacts) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response.extensions_mut().insert(facts);
    response
}

fn not_served() -> FhirError {
    FhirError::not_found("this server keeps no access log")
}

fn no_scope() -> FhirError {
    // The access layer puts a scope in every request it lets through to the log; without
    // one, nothing is served.
    FhirError::new(
        StatusCode::FORBIDDEN,
        IssueCode::Forbidden,
        "the access log is not available to this requester",
    )
}

fn log_failed(e: impl std::fmt::Display) -> FhirError {
    tracing::error!(error = %e, "reading the access log failed");
    FhirError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        IssueCode::Exception,
        "the access log could not be read; see the server log",
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, FhirError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(log_failed)?
        .map_err(log_failed)
}

fn source(state: &AppState) -> LogSource<'_> {
    LogSource {
        ura: &state.identity.ura,
        name: &state.identity.name,
        base_url: &state.base_url,
    }
}

/// The parameters of a search, checked.
struct SearchParams {
    query: LogQuery,
    /// The query string again, without `_cursor`, for the links.
    kept: Vec<(String, String)>,
}

fn parse_search(raw: Option<&str>) -> Result<SearchParams, FhirError> {
    let pairs = zorgnet_rest::interactions::query_pairs(raw);
    let mut query = LogQuery {
        limit: DEFAULT_PAGE_SIZE,
        order: Order::Descending,
        ..LogQuery::default()
    };
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for (name, value) in pairs {
        if name != "date" && !seen.insert(name.clone()) {
            return Err(FhirError::bad_request(format!(
                "give {name} once (a comma-separated list where it takes one)"
            )));
        }
        match name.as_str() {
            "patient" => {
                let ids: Vec<String> = value
                    .split(',')
                    .map(|v| v.strip_prefix("Patient/").unwrap_or(v).to_string())
                    .collect();
                if ids.len() > MAX_PATIENTS_PER_SEARCH {
                    return Err(FhirError::bad_request(format!(
                        "at most {MAX_PATIENTS_PER_SEARCH} patients per search"
                    )));
                }
                if let Some(bad) = ids
                    .iter()
                    .find(|id| !zorgnet_fhir::validate::is_valid_id(id))
                {
                    return Err(FhirError::bad_request(format!(
                        "patient: '{bad}' is not Patient/{{id}} or {{id}}"
                    )));
                }
                query.patients = ids;
            }
            "agent" => query.agent = Some(agent_filter(&value)?),
            "date" => date_bound(&mut query, &value)?,
            "entity" => {
                query.entity = Some(EntityFilter::parse(&value).ok_or_else(|| {
                    FhirError::bad_request(format!("entity: '{value}' is not Type or Type/id"))
                })?)
            }
            "_count" => {
                let count: usize = value.parse().map_err(|_| {
                    FhirError::bad_request(format!("_count: '{value}' is not a number"))
                })?;
                if count == 0 {
                    return Err(FhirError::bad_request(
                        "_count=0 asks for a count, which the access log does not give",
                    ));
                }
                query.limit = count.min(MAX_PAGE_SIZE);
            }
            "_sort" => {
                query.order = match value.as_str() {
                    "date" => Order::Ascending,
                    "-date" => Order::Descending,
                    other => {
                        return Err(FhirError::bad_request(format!(
                            "_sort: '{other}' is not date or -date"
                        )));
                    }
                }
            }
            "_cursor" => {
                query.after = Some(value.parse().map_err(|_| {
                    FhirError::bad_request(format!(
                        "_cursor: '{value}' is not a cursor of this search"
                    ))
                })?);
                continue;
            }
            other => {
                return Err(FhirError::bad_request(format!(
                    "AuditEvent is searched by patient, agent, date, entity, _count and _sort; not '{other}'"
                )));
            }
        }
        kept.push((name, value));
    }
    Ok(SearchParams { query, kept })
}

/// `system|value` or `value`: a UZI number, a URA, a citizen's `issuer|subject`, or either an
/// agent's id or organisation.
fn agent_filter(value: &str) -> Result<AgentFilter, FhirError> {
    let filter = match value.split_once('|') {
        Some((UZI_SYSTEM, uzi)) => AgentFilter::Id(uzi.to_string()),
        Some((URA_SYSTEM, ura)) => AgentFilter::Organisation(ura.to_string()),
        Some(("", value)) => AgentFilter::Any(value.to_string()),
        Some((issuer, subject)) => AgentFilter::Id(format!("{issuer} {subject}")),
        None => AgentFilter::Any(value.to_string()),
    };
    match &filter {
        AgentFilter::Id(v) | AgentFilter::Organisation(v) | AgentFilter::Any(v)
            if v.is_empty() || v.ends_with(' ') =>
        {
            Err(FhirError::bad_request("agent: no value"))
        }
        _ => Ok(filter),
    }
}

/// Narrows the query by one `date` parameter.
fn date_bound(query: &mut LogQuery, value: &str) -> Result<(), FhirError> {
    let (prefix, date) = match value.get(..2) {
        Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &value[2..]),
        Some(p) if p.chars().all(|c| c.is_ascii_lowercase()) => {
            return Err(FhirError::bad_request(format!(
                "date: the prefix '{p}' is not one of eq, ge, gt, le, lt"
            )));
        }
        _ => ("eq", value),
    };
    let range = parse_date_range(date)
        .ok_or_else(|| FhirError::bad_request(format!("date: '{date}' is not a FHIR date")))?;
    let since = |q: &mut LogQuery, ms: i64| q.since_ms = Some(q.since_ms.map_or(ms, |s| s.max(ms)));
    let until = |q: &mut LogQuery, ms: i64| q.until_ms = Some(q.until_ms.map_or(ms, |u| u.min(ms)));
    match prefix {
        "ge" => since(query, range.low_ms),
        "gt" => since(query, range.high_ms.saturating_add(1)),
        "le" => until(query, range.high_ms),
        "lt" => until(query, range.low_ms.saturating_sub(1)),
        _ => {
            since(query, range.low_ms);
            until(query, range.high_ms);
        }
    }
    Ok(())
}

fn link(base: &str, pairs: &[(String, String)], cursor: Option<u64>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    if let Some(cursor) = cursor {
        query.append_pair("_cursor", &cursor.to_string());
    }
    let query = query.finish();
    if query.is_empty() {
        format!("{base}/AuditEvent")
    } else {
        format!("{base}/AuditEvent?{query}")
    }
}

async fn search(
    State(state): State<Arc<AppState>>,
    log: Option<Extension<ServedLog>>,
    scope: Option<Extension<LogScope>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    let Some(Extension(ServedLog(log))) = log else {
        return Err(not_served());
    };
    let Some(Extension(scope)) = scope else {
        return Err(no_scope());
    };
    let SearchParams { mut query, kept } = parse_search(raw.as_deref())?;
    if let LogScope::Patients(own) = scope {
        query.patients = own.iter().cloned().collect();
        query.within = Some(own);
    }
    let asked = query.clone();
    let LogPage { found, next } = blocking(move || log.search(&asked)).await?;
    let base = &state.base_url;
    let mut links = vec![json!({"relation": "self", "url": link(base, &kept, query.after)})];
    if let Some(next) = next {
        links.push(json!({"relation": "next", "url": link(base, &kept, Some(next))}));
    }
    let entries: Vec<Value> = found
        .iter()
        .map(|f| {
            json!({
                "fullUrl": format!("{base}/AuditEvent/{}", f.seq),
                "resource": audit_event(f.seq, &f.record, &source(&state)),
                "search": {"mode": "match"},
            })
        })
        .collect();
    let facts = RecordFacts(found.into_iter().map(|f| f.record.patients).collect());
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(fhir_json(StatusCode::OK, &bundle, facts))
}

/// The record `seq` names, as appended and parsed; 404 for an id that names none.
async fn stored(log: &Arc<AuditLog>, seq: &str) -> Result<(u64, String, AuditRecord), FhirError> {
    let missing = || FhirError::not_found(format!("AuditEvent/{seq} is not known"));
    let seq: u64 = seq.parse().map_err(|_| missing())?;
    let reading = log.clone();
    let json = blocking(move || reading.record(seq))
        .await?
        .ok_or_else(missing)?;
    let record = serde_json::from_str::<AuditRecord>(&json).map_err(|_| missing())?;
    Ok((seq, json, record))
}

async fn read(
    State(state): State<Arc<AppState>>,
    log: Option<Extension<ServedLog>>,
    scope: Option<Extension<LogScope>>,
    Path(seq): Path<String>,
) -> Result<Response, FhirError> {
    let Some(Extension(ServedLog(log))) = log else {
        return Err(not_served());
    };
    if scope.is_none() {
        return Err(no_scope());
    }
    let (seq, _, record) = stored(&log, &seq).await?;
    let event = audit_event(seq, &record, &source(&state));
    Ok(fhir_json(
        StatusCode::OK,
        &event,
        RecordFacts(vec![record.patients]),
    ))
}

async fn proof(
    log: Option<Extension<ServedLog>>,
    scope: Option<Extension<LogScope>>,
    Path(seq): Path<String>,
) -> Result<Response, FhirError> {
    let Some(Extension(ServedLog(log))) = log else {
        return Err(not_served());
    };
    if scope.is_none() {
        return Err(no_scope());
    }
    let (seq, json, record) = stored(&log, &seq).await?;
    let reading = log.clone();
    let checkpoint = blocking(move || reading.latest_checkpoint())
        .await?
        .filter(|c| c.size > seq)
        .ok_or_else(|| {
            FhirError::new(
                StatusCode::CONFLICT,
                IssueCode::Conflict,
                format!(
                    "AuditEvent/{seq} is not yet in a signed checkpoint; the node signs one every {} s",
                    zorgnet_audit::CHECKPOINT_INTERVAL.as_secs()
                ),
            )
        })?;
    let size = checkpoint.size;
    let proving = log.clone();
    let proof = blocking(move || proving.inclusion_proof(seq, size)).await?;
    if !check_inclusion(&proof, size, checkpoint.root, seq, json.as_bytes()) {
        return Err(log_failed(format!(
            "the inclusion proof of record {seq} does not hold against the checkpoint of size {size}"
        )));
    }
    let mut parameter = vec![
        json!({"name": "record", "valueBase64Binary": STANDARD.encode(json.as_bytes())}),
        json!({"name": "leafIndex", "valueDecimal": seq}),
        json!({"name": "treeSize", "valueDecimal": size}),
        json!({"name": "treeRoot", "valueBase64Binary": STANDARD.encode(checkpoint.root.0)}),
    ];
    parameter.extend(
        proof
            .iter()
            .map(|hash| json!({"name": "proofHash", "valueBase64Binary": STANDARD.encode(hash.0)})),
    );
    parameter.extend([
        json!({"name": "checkpoint", "valueString": checkpoint.body()}),
        json!({"name": "signature", "valueBase64Binary": STANDARD.encode(checkpoint.signature)}),
    ]);
    let parameters = json!({"resourceType": "Parameters", "parameter": parameter});
    Ok(fhir_json(
        StatusCode::OK,
        &parameters,
        RecordFacts(vec![record.patients]),
    ))
}

/// The reason a `$report`'s body gives: `None` for an empty body or none given; a 400 for
/// anything but a `Parameters` with at most one `reason` (`valueString`, at most
/// [`REPORT_REASON_CHARS_MAX`] characters, no control characters but line breaks and tabs).
fn report_reason(body: &[u8]) -> Result<Option<String>, FhirError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let not_parameters = || {
        FhirError::bad_request(
            "the body of $report is empty or a Parameters resource with an optional reason",
        )
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| not_parameters())?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(not_parameters());
    }
    let parameters = match value.get("parameter") {
        None => &Vec::new(),
        Some(Value::Array(parameters)) => parameters,
        Some(_) => return Err(not_parameters()),
    };
    let mut reason = None;
    for parameter in parameters {
        match parameter.get("name").and_then(Value::as_str) {
            Some("reason") if reason.is_none() => {
                let text = parameter
                    .get("valueString")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FhirError::bad_request("reason: give it as valueString"))?;
                reason = Some(text);
            }
            Some("reason") => return Err(FhirError::bad_request("give reason once")),
            _ => {
                return Err(FhirError::bad_request(
                    "$report takes one parameter, reason",
                ));
            }
        }
    }
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().count() > REPORT_REASON_CHARS_MAX {
        return Err(FhirError::bad_request(format!(
            "reason: at most {REPORT_REASON_CHARS_MAX} characters"
        )));
    }
    if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(FhirError::bad_request("reason: no control characters"));
    }
    Ok(Some(reason.to_string()))
}

/// One report at a time, so a citizen's second report of a record finds their first.
static REPORTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The alert of an earlier report of record `seq` (about `reported`) by `agent`, if any.
async fn earlier_report(
    log: &Arc<AuditLog>,
    agent: &Agent,
    reported: &AuditRecord,
    seq: u64,
) -> Result<Option<(u64, AuditRecord)>, FhirError> {
    let Some(id) = agent.id.clone() else {
        return Ok(None);
    };
    let mut query = LogQuery {
        patients: reported.patients.clone(),
        agent: Some(AgentFilter::Id(id)),
        since_ms: Some(reported.at_ms),
        order: Order::Ascending,
        limit: MAX_RECORDS_PER_PAGE,
        ..LogQuery::default()
    };
    loop {
        let (searching, asked) = (log.clone(), query.clone());
        let LogPage { found, next } = blocking(move || searching.search(&asked)).await?;
        if let Some(earlier) = found.into_iter().find(|f| {
            CitizenReport::from_record(&f.record)
                .is_some_and(|r| r.seq == seq && r.agent.id == agent.id)
        }) {
            return Ok(Some((earlier.seq, earlier.record)));
        }
        match next {
            Some(next) => query.after = Some(next),
            None => return Ok(None),
        }
    }
}

fn alert_answer(state: &AppState, status: StatusCode, seq: u64, record: AuditRecord) -> Response {
    let event = audit_event(seq, &record, &source(state));
    let mut response = fhir_json(status, &event, RecordFacts(vec![record.patients]));
    if let Ok(location) = HeaderValue::from_str(&format!("{}/AuditEvent/{seq}", state.base_url)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn report(
    State(state): State<Arc<AppState>>,
    log: Option<Extension<ServedLog>>,
    scope: Option<Extension<LogScope>>,
    reporter: Option<Extension<Reporter>>,
    writer: Option<Extension<crate::audit::LogWriter>>,
    Path(seq): Path<String>,
    body: Bytes,
) -> Result<Response, FhirError> {
    let Some(Extension(ServedLog(log))) = log else {
        return Err(not_served());
    };
    // The access layer names a reporter only for a citizen it let read this record.
    let (Some(Extension(LogScope::Patients(own))), Some(Extension(Reporter(agent)))) =
        (scope, reporter)
    else {
        return Err(no_scope());
    };
    let Some(Extension(crate::audit::LogWriter(sink))) = writer else {
        return Err(log_failed("no access log writer in the request"));
    };
    let reason = report_reason(&body)?;
    let (seq, _, reported) = stored(&log, &seq).await?;
    if reported.patients.is_empty() || reported.patients.iter().any(|p| !own.contains(p)) {
        return Err(no_scope());
    }
    let _one_at_a_time = REPORTING.lock().await;
    if let Some((alert_seq, alert)) = earlier_report(&log, &agent, &reported, seq).await? {
        return Ok(alert_answer(&state, StatusCode::OK, alert_seq, alert));
    }
    let report = CitizenReport::new(
        agent,
        reported.patients.clone(),
        seq,
        reason,
        zorgnet_db::now_ms(),
    );
    let alert = report.to_record();
    let alert_seq = sink.record(alert.to_json()).await.map_err(|e| {
        metrics::counter!("zorgnet_audit_failures_total").increment(1);
        tracing::error!(error = %e, rule = CITIZEN_REPORT_RULE, "a citizen's report could not be logged");
        FhirError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueCode::Exception,
            "the report could not be logged; try again later",
        )
    })?;
    metrics::counter!("zorgnet_audit_alerts_total", "rule" => CITIZEN_REPORT_RULE).increment(1);
    tracing::warn!(
        rule = CITIZEN_REPORT_RULE,
        reported = seq,
        alert = alert_seq,
        organisation = %state.identity.ura,
        reason_given = report.reason.is_some(),
        "a citizen reported an access to their data as suspicious"
    );
    Ok(alert_answer(&state, StatusCode::CREATED, alert_seq, alert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reports_body_is_empty_or_parameters_with_a_reason() {
        assert_eq!(report_reason(b"").unwrap(), None);
        assert_eq!(report_reason(b" \n").unwrap(), None);
        assert_eq!(
            report_reason(br#"{"resourceType":"Parameters"}"#).unwrap(),
            None
        );
        assert_eq!(
            report_reason(
                br#"{"resourceType":"Parameters","parameter":[{"name":"reason","valueString":" onbekend "}]}"#
            )
            .unwrap()
            .as_deref(),
            Some("onbekend")
        );
        let long = json!({"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "x".repeat(REPORT_REASON_CHARS_MAX + 1)}]});
        for bad in [
            "{",
            "[]",
            r#"{"resourceType":"Patient"}"#,
            r#"{"resourceType":"Parameters","parameter":{}}"#,
            r#"{"resourceType":"Parameters","parameter":[{"name":"other","valueString":"x"}]}"#,
            r#"{"resourceType":"Parameters","parameter":[{"name":"reason","valueInteger":1}]}"#,
            r#"{"resourceType":"Parameters","parameter":[{"name":"reason","valueString":"a"},{"name":"reason","valueString":"b"}]}"#,
            r#"{"resourceType":"Parameters","parameter":[{"name":"reason","valueString":"a\u0000b"}]}"#,
            &long.to_string(),
        ] {
            assert!(report_reason(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn search_parameters_are_read_or_refused() {
        let params = parse_search(Some(
            "patient=Patient/p1,p2&agent=http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900000001\
             &date=ge2026-01-01&date=lt2026-02&entity=Observation/o1&_count=500&_sort=date&_cursor=7",
        ))
        .unwrap();
        let q = params.query;
        assert_eq!(q.patients, ["p1", "p2"]);
        assert_eq!(q.agent, Some(AgentFilter::Id("900000001".into())));
        assert_eq!(q.since_ms, Some(1_767_225_600_000));
        assert_eq!(q.until_ms, Some(1_769_904_000_000 - 1));
        assert_eq!(q.entity, EntityFilter::parse("Observation/o1"));
        assert_eq!(q.limit, MAX_PAGE_SIZE);
        assert_eq!(q.order, Order::Ascending);
        assert_eq!(q.after, Some(7));
        assert!(
            params.kept.iter().all(|(name, _)| name != "_cursor"),
            "links carry their own cursor"
        );
        assert_eq!(
            parse_search(Some("agent=https://idp|anna"))
                .unwrap()
                .query
                .agent,
            Some(AgentFilter::Id("https://idp anna".into()))
        );
        assert_eq!(
            parse_search(Some("agent=00000011")).unwrap().query.agent,
            Some(AgentFilter::Any("00000011".into()))
        );
        assert_eq!(
            parse_search(Some("agent=http://fhir.nl/fhir/NamingSystem/ura|00000011"))
                .unwrap()
                .query
                .agent,
            Some(AgentFilter::Organisation("00000011".into()))
        );
        assert_eq!(parse_search(None).unwrap().query.order, Order::Descending);
        for bad in [
            "patient=a&patient=b",
            "patient=Patient/a b",
            "patient=1,2,3,4,5,6,7,8,9,10,11",
            "agent=",
            "agent=https://idp|",
            "date=ap2026",
            "date=yesterday",
            "entity=observation",
            "_count=0",
            "_count=x",
            "_sort=_id",
            "_cursor=abc",
            "_total=accurate",
            "subject=p1",
        ] {
            assert!(parse_search(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_keep_the_search_and_add_the_cursor() {
        let kept = vec![("patient".to_string(), "Patient/p1".to_string())];
        assert_eq!(
            link("https://n/fhir", &kept, Some(9)),
            "https://n/fhir/AuditEvent?patient=Patient%2Fp1&_cursor=9"
        );
        assert_eq!(
            link("https://n/fhir", &[], None),
            "https://n/fhir/AuditEvent"
        );
        assert!(is_log_path("/fhir/AuditEvent"));
        assert!(is_log_path("/fhir/AuditEvent/12/$proof"));
        assert!(!is_log_path("/fhir/AuditEventX"));
    }
}
