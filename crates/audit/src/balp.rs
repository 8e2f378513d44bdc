//! A record as a FHIR R4 `AuditEvent`, following IHE's Basic Audit Log Patterns (BALP,
//! `https://profiles.ihe.net/ITI/BALP/`): the RESTful interaction as type `rest` and a
//! `restful-interaction` subtype, the action (C, R, U, D, E), the outcome from the HTTP
//! status, the agents (the client, this server, the requesting professional, citizen or
//! system, and the organisation it acts for), the source, and the entities (each Patient
//! with role 1, the resource with role 4, or the query with role 24 and the request in
//! base64). Alerts of the log's monitor become `Security Alert` events.
//!
//! The events claim no BALP profile in `meta.profile`: a record does not hold the client's
//! network address (which BALP's client agent requires) nor the request id, and for a
//! create not the new resource's id. What it holds is placed where BALP puts it.
//!
//! What it is not: a parser of AuditEvents, or storage (the log keeps the record's own
//! bytes, which are what its proofs are about).

use crate::monitor::ALERT_ACTION_PREFIX;
use crate::record::{AgentKind, AuditRecord};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// DICOM's code system (agent types, the security alert event type).
pub const DCM_SYSTEM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The audit event types of FHIR (`rest`).
pub const EVENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// The RESTful interactions of FHIR, the subtype of a `rest` event.
pub const INTERACTION_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";
/// HL7 v3 participation types (the requesting user's agent type).
pub const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// HL7 v3 role classes (the organisation acted for; a patient acting themself).
pub const ROLE_CLASS_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleClass";
/// HL7 v3 act reasons (purposes of use).
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// Entity types.
pub const ENTITY_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
/// Entity roles.
pub const OBJECT_ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// Kinds of audit source.
pub const SOURCE_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// Provenance participant types (the custodian of a deleted resource, as BALP's Delete).
pub const PROVENANCE_PARTICIPANT_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
/// UZI numbers of professionals.
pub const UZI_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers";
/// URA numbers of care providers.
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
/// The UZI role codes (`01.015`, …), RoleCodeNL-UZI.
pub const UZI_ROLE_SYSTEM: &str = "urn:oid:2.16.840.1.113883.2.4.15.111";
/// The operation a `operation` subtype names (`everything`, `localize`, …).
pub const OPERATION_SYSTEM: &str = "https://zorgnet.nl/fhir/CodeSystem/operation";
/// The rule of an alert of the log's monitor.
pub const ALERT_RULE_SYSTEM: &str = "https://zorgnet.nl/fhir/CodeSystem/audit-alert-rule";
/// The basis on which the consent register permitted an access, as an agent's policy URI
/// (`urn:zorgnet:basis:treatment-relation`).
pub const BASIS_URI_PREFIX: &str = "urn:zorgnet:basis:";

/// Whose log it is: the event's source and the server agent.
#[derive(Debug, Clone, Copy)]
pub struct LogSource<'a> {
    /// The organisation's URA (empty when not known).
    pub ura: &'a str,
    /// The organisation's name.
    pub name: &'a str,
    /// The server's FHIR base URL (empty when not known: the server agent then has no
    /// network address).
    pub base_url: &'a str,
}

/// What an interaction is in BALP's terms.
struct Interaction {
    /// The `restful-interaction` code.
    code: &'static str,
    /// C, R, U, D or E.
    action: &'static str,
    /// Whether the entity is a query (role 24) rather than a resource (role 4).
    query: bool,
}

fn interaction(record: &AuditRecord) -> Option<Interaction> {
    let (code, action, query) = match record.action.as_str() {
        "read" => ("read", "R", false),
        "vread" => ("vread", "R", false),
        "history" => (history_kind(&record.request), "R", true),
        "search" => ("search", "E", true),
        "create" => ("create", "C", false),
        "update" => ("update", "U", false),
        "patch" => ("patch", "U", false),
        "delete" => ("delete", "D", false),
        "transaction" => ("transaction", "E", true),
        other if other.starts_with("operation:") => ("operation", "E", true),
        _ => return None,
    };
    Some(Interaction {
        code,
        action,
        query,
    })
}

/// `history-system`, `history-type` or `history-instance`, from the request's path.
fn history_kind(request: &str) -> &'static str {
    match path_segments(request).len() {
        0 | 1 => "history-system",
        2 => "history-type",
        _ => "history-instance",
    }
}

/// The segments of the request's path after `/fhir`.
fn path_segments(request: &str) -> Vec<&str> {
    let target = request.split_once(' ').map_or(request, |(_, t)| t);
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    path.trim_start_matches("/fhir")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// The outcome code of an HTTP status: 0 success, 4 minor failure (the request was
/// refused or wrong; another request may succeed), 12 major failure (503: the service was
/// unavailable), 8 serious failure (any other server error).
pub fn outcome(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        503 => "12",
        _ => "8",
    }
}

/// Epoch milliseconds as a FHIR instant in UTC (`2026-12-07T10:00:00.000Z`).
pub fn instant(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(86_400_000);
    let ms_of_day = epoch_ms.rem_euclid(86_400_000);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn identifier(system: &str, value: &str) -> Value {
    json!({"system": system, "value": value})
}

/// The server, by its organisation's URA (when known) and name.
fn server_who(source: &LogSource<'_>) -> Value {
    if source.ura.is_empty() {
        json!({"display": source.name})
    } else {
        json!({"identifier": identifier(URA_SYSTEM, source.ura), "display": source.name})
    }
}

/// Record `seq` as a BALP `AuditEvent` of `source`'s log, with `id` the sequence number.
pub fn audit_event(seq: u64, record: &AuditRecord, source: &LogSource<'_>) -> Value {
    let alert = record.action.strip_prefix(ALERT_ACTION_PREFIX);
    let rest = interaction(record);
    let mut event = Map::new();
    event.insert("resourceType".into(), json!("AuditEvent"));
    event.insert("id".into(), json!(seq.to_string()));
    let (event_type, subtype, action) = match (&rest, alert) {
        (_, Some(rule)) => (
            coding(DCM_SYSTEM, "110113", "Security Alert"),
            vec![json!({"system": ALERT_RULE_SYSTEM, "code": rule})],
            "E",
        ),
        (Some(rest), None) => {
            let mut subtype = vec![coding(INTERACTION_SYSTEM, rest.code, rest.code)];
            if let Some(operation) = record.action.strip_prefix("operation:") {
                subtype.push(json!({"system": OPERATION_SYSTEM, "code": operation}));
            }
            (
                coding(EVENT_TYPE_SYSTEM, "rest", "Restful Operation"),
                subtype,
                rest.action,
            )
        }
        (None, None) => (
            coding(EVENT_TYPE_SYSTEM, "rest", "Restful Operation"),
            Vec::new(),
            "E",
        ),
    };
    event.insert("type".into(), event_type);
    if !subtype.is_empty() {
        event.insert("subtype".into(), Value::Array(subtype));
    }
    event.insert("action".into(), json!(action));
    event.insert("recorded".into(), json!(instant(record.at_ms)));
    event.insert("outcome".into(), json!(outcome(record.status)));
    if record.status >= 400 {
        event.insert(
            "outcomeDesc".into(),
            json!(format!("HTTP status {}", record.status)),
        );
    }
    event.insert("agent".into(), Value::Array(agents(record, action, source)));
    let mut log_source = json!({
        "observer": server_who(source),
        "type": [coding(SOURCE_TYPE_SYSTEM, "4", "Application Server")],
    });
    if !source.base_url.is_empty() {
        log_source["site"] = json!(source.base_url);
    }
    event.insert("source".into(), log_source);
    let entities = entities(record, rest.as_ref(), alert.is_some());
    if !entities.is_empty() {
        event.insert("entity".into(), Value::Array(entities));
    }
    Value::Object(event)
}

/// The agents: the client and this server (in BALP's roles for the direction the data
/// went), the requesting user or system, and the organisation it acts for.
fn agents(record: &AuditRecord, action: &str, source: &LogSource<'_>) -> Vec<Value> {
    let agent = &record.agent;
    // A read sends data from the server (the source) to the client (the destination); a
    // create, update or query the other way; a delete names the application and the
    // custodian (BALP's Read, Query, Create and Delete patterns).
    let (client_type, server_type) = match action {
        "R" => (
            coding(DCM_SYSTEM, "110152", "Destination Role ID"),
            coding(DCM_SYSTEM, "110153", "Source Role ID"),
        ),
        "D" => (
            coding(DCM_SYSTEM, "110150", "Application"),
            coding(PROVENANCE_PARTICIPANT_SYSTEM, "custodian", "Custodian"),
        ),
        _ => (
            coding(DCM_SYSTEM, "110153", "Source Role ID"),
            coding(DCM_SYSTEM, "110152", "Destination Role ID"),
        ),
    };
    let client_who = match (&agent.certificate, &agent.organisation) {
        (Some(thumbprint), _) => json!({
            "identifier": {"type": {"text": "x5t#S256"}, "value": thumbprint},
            "display": "the client certificate",
        }),
        (None, Some(ura)) => json!({"identifier": identifier(URA_SYSTEM, ura)}),
        (None, None) => json!({"display": "a client without a certificate"}),
    };
    let mut agents = vec![
        json!({"type": {"coding": [client_type]}, "requestor": false, "who": client_who}),
        json!({"type": {"coding": [server_type]}, "requestor": false, "who": server_who(source)}),
    ];
    if !source.base_url.is_empty() {
        agents[1]["network"] = json!({"address": source.base_url, "type": "5"});
    }
    let user_type = match action {
        "C" | "U" | "D" => coding(PARTICIPATION_SYSTEM, "AUT", "author (originator)"),
        _ => coding(PARTICIPATION_SYSTEM, "IRCP", "information recipient"),
    };
    let application = coding(DCM_SYSTEM, "110150", "Application");
    let mut requestor = match agent.kind {
        AgentKind::Professional => {
            let mut user = json!({
                "type": {"coding": [user_type]},
                "requestor": true,
                "who": match &agent.id {
                    Some(uzi) => json!({"identifier": identifier(UZI_SYSTEM, uzi)}),
                    None => json!({"display": "a professional"}),
                },
            });
            if let Some(role) = &agent.role {
                user["role"] = json!([{"coding": [{"system": UZI_ROLE_SYSTEM, "code": role}]}]);
            }
            user
        }
        AgentKind::Citizen => {
            let who = match agent.id.as_deref().and_then(|id| id.split_once(' ')) {
                Some((issuer, subject)) => json!({"identifier": identifier(issuer, subject)}),
                None => json!({"display": agent.id.as_deref().unwrap_or("a citizen")}),
            };
            json!({
                "type": {"coding": [user_type]},
                "role": [{"coding": [coding(ROLE_CLASS_SYSTEM, "PAT", "patient")]}],
                "requestor": true,
                "who": who,
            })
        }
        AgentKind::System | AgentKind::Organisation => {
            let who = match (&agent.id, &agent.organisation) {
                (Some(id), _) => json!({"identifier": {"value": id}, "display": "a system client"}),
                (None, Some(ura)) => json!({"identifier": identifier(URA_SYSTEM, ura)}),
                (None, None) => json!({"display": "this organisation's own system"}),
            };
            json!({"type": {"coding": [application]}, "requestor": true, "who": who})
        }
        AgentKind::Unauthenticated => json!({
            "type": {"coding": [application]},
            "requestor": true,
            "who": {"display": "a caller that did not authenticate"},
        }),
    };
    if let Some(purpose) = purpose_of_use(record) {
        requestor["purposeOfUse"] = json!([purpose]);
    }
    if !record.bases.is_empty() {
        requestor["policy"] = record
            .bases
            .iter()
            .map(|basis| json!(format!("{BASIS_URI_PREFIX}{basis}")))
            .collect();
    }
    agents.push(requestor);
    let acts_for_organisation = matches!(agent.kind, AgentKind::Professional)
        || (agent.kind == AgentKind::System && agent.id.is_some());
    if acts_for_organisation && let Some(ura) = &agent.organisation {
        agents.push(json!({
            "type": {"coding": [coding(ROLE_CLASS_SYSTEM, "PROV", "healthcare provider")]},
            "requestor": false,
            "who": {"identifier": identifier(URA_SYSTEM, ura)},
        }));
    }
    agents
}

/// The purpose of use: treatment is TREAT, emergency (breaking the glass) ETREAT with the
/// reason given as its text.
fn purpose_of_use(record: &AuditRecord) -> Option<Value> {
    let mut purpose = match record.purpose.as_deref()? {
        "treatment" => json!({"coding": [coding(ACT_REASON_SYSTEM, "TREAT", "treatment")]}),
        "emergency" => {
            json!({"coding": [coding(ACT_REASON_SYSTEM, "ETREAT", "Emergency Treatment")]})
        }
        other => json!({"text": other}),
    };
    if let Some(reason) = &record.reason {
        purpose["text"] = json!(reason);
    }
    Some(purpose)
}

/// The entities: what was read, written or asked, and each Patient.
fn entities(record: &AuditRecord, rest: Option<&Interaction>, alert: bool) -> Vec<Value> {
    let system_object = coding(ENTITY_TYPE_SYSTEM, "2", "System Object");
    let mut entities = Vec::new();
    if alert {
        entities.push(json!({"type": system_object, "description": record.request}));
    } else if let Some(rest) = rest {
        if rest.query {
            entities.push(json!({
                "type": system_object,
                "role": coding(OBJECT_ROLE_SYSTEM, "24", "Query"),
                "description": record.request,
                "query": STANDARD.encode(record.request.as_bytes()),
            }));
        } else {
            let what = match path_segments(&record.request).as_slice() {
                [resource_type] => json!({"type": resource_type}),
                [resource_type, id] => json!({"reference": format!("{resource_type}/{id}")}),
                [resource_type, id, "_history", version] => {
                    json!({"reference": format!("{resource_type}/{id}/_history/{version}")})
                }
                _ => json!({"display": record.request}),
            };
            entities.push(json!({
                "type": system_object,
                "role": coding(OBJECT_ROLE_SYSTEM, "4", "Domain Resource"),
                "what": what,
            }));
        }
    }
    for patient in &record.patients {
        entities.push(json!({
            "type": coding(ENTITY_TYPE_SYSTEM, "1", "Person"),
            "role": coding(OBJECT_ROLE_SYSTEM, "1", "Patient"),
            "what": {"reference": format!("Patient/{patient}")},
        }));
    }
    entities
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_utc_with_milliseconds() {
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(instant(1_765_000_000_123), "2025-12-06T05:46:40.123Z");
        assert_eq!(instant(951_825_600_000), "2000-02-29T12:00:00.000Z");
        assert_eq!(instant(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(outcome(200), "0");
        assert_eq!(outcome(201), "0");
        assert_eq!(outcome(403), "4");
        assert_eq!(outcome(500), "8");
        assert_eq!(outcome(503), "12");
    }

    #[test]
    fn history_is_named_by_its_scope() {
        assert_eq!(history_kind("GET /fhir/_history"), "history-system");
        assert_eq!(
            history_kind("GET /fhir/Observation/_history?_count=2"),
            "history-type"
        );
        assert_eq!(
            history_kind("GET /fhir/Observation/o1/_history"),
            "history-instance"
        );
    }
}
