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
//!   signature (whose key, and whose earlier checkpoints, the hub keeps).
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
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use zorgnet_audit::balp::{LogSource, URA_SYSTEM, UZI_SYSTEM, audit_event};
use zorgnet_audit::{
    AgentFilter, AuditError, AuditLog, AuditRecord, EntityFilter, LogPage, LogQuery, Order,
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
        GET /fhir/AuditEvent (search), /fhir/AuditEvent/{id} and /fhir/AuditEvent/{id}/$proof",
};

/// The canonical URL of the `$proof` operation's definition.
pub const PROOF_DEFINITION: &str = "http://zorgnet.nl/fhir/OperationDefinition/AuditEvent-proof";

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
    operations: &[OperationRef {
        name: "proof",
        definition: PROOF_DEFINITION,
    }],
};

/// The log a node serves, in every request of a router wrapped with [`served`].
#[derive(Clone)]
pub(crate) struct ServedLog(pub(crate) Arc<AuditLog>);

/// Serves `log` (the node's own, from [`crate::audit::open`]) at `/fhir/AuditEvent` of
/// `router` (a node's, from [`crate::router_in_network`]).
pub fn served(router: Router, log: Arc<AuditLog>) -> Router {
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

/// The Patients of the records an answer holds (one list per record), for the access layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts(pub Vec<Vec<String>>);

/// The routes, with the node's state (mounted by [`crate::router_in_network`] inside the
/// access layer).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    use axum::routing::get;
    Router::new()
        .route("/fhir/AuditEvent", get(search))
        .route("/fhir/AuditEvent/{seq}", get(read))
        .route("/fhir/AuditEvent/{seq}/$proof", get(proof))
        .method_not_allowed_fallback(|| async { only_read() })
}

/// Every method but `GET` on the log's routes: nothing writes the log but the node.
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

#[cfg(test)]
mod tests {
    use super::*;

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
