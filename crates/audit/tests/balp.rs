//! The access log's records as FHIR R4 `AuditEvent`s (`zorgnet_audit::balp`): valid R4 by
//! the workspace's validator (elements, cardinality, required bindings), codes from the
//! systems BALP uses, and field by field the patterns of IHE BALP's examples for a read, a
//! search, a create and a consent-authorised access (`../shared/testdata/ihe-balp/`). Where
//! a record lacks what an example has, a comment says so.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use zorgnet_audit::balp::{LogSource, audit_event};
use zorgnet_audit::{Agent, AgentKind, AuditRecord};
use zorgnet_fhir::{Severity, validate_resource};

const SOURCE: LogSource<'static> = LogSource {
    ura: "00000011",
    name: "Huisartsenpraktijk De Linde",
    base_url: "https://linde.example/fhir",
};

fn example(name: &str) -> Value {
    let path = format!(
        "{}/../../../shared/testdata/ihe-balp/examples/AuditEvent-ex-{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn professional() -> Agent {
    Agent {
        kind: AgentKind::Professional,
        id: Some("900000001".into()),
        role: Some("01.015".into()),
        organisation: Some("00000022".into()),
        certificate: Some("x5t-thumbprint".into()),
    }
}

fn record(agent: Agent, action: &str, request: &str, status: u16) -> AuditRecord {
    AuditRecord {
        at_ms: 1_765_100_000_000,
        agent,
        patients: vec!["p-anna".into()],
        action: action.into(),
        request: request.into(),
        purpose: Some("treatment".into()),
        reason: None,
        bases: vec!["treatment-relation".into()],
        status,
    }
}

/// Every kind of record the node writes.
fn records() -> Vec<(&'static str, AuditRecord)> {
    let citizen = Agent {
        kind: AgentKind::Citizen,
        id: Some("https://digid.example anna-sub".into()),
        role: None,
        organisation: None,
        certificate: None,
    };
    let system = Agent {
        kind: AgentKind::System,
        id: None,
        role: None,
        organisation: Some("00000011".into()),
        certificate: None,
    };
    let mut emergency = record(professional(), "read", "GET /fhir/Patient/p-anna", 200);
    emergency.purpose = Some("emergency".into());
    emergency.reason = Some("unconscious at the emergency department".into());
    emergency.bases = vec!["emergency".into()];
    let mut unauthenticated = record(
        Agent {
            kind: AgentKind::Unauthenticated,
            id: None,
            role: None,
            organisation: None,
            certificate: None,
        },
        "search",
        "GET /fhir/Observation",
        401,
    );
    unauthenticated.patients.clear();
    unauthenticated.purpose = None;
    unauthenticated.bases.clear();
    let mut alert = record(
        system.clone(),
        "alert:unrelated-patients",
        "{\"rule\":\"unrelated-patients\"}",
        200,
    );
    alert.purpose = None;
    alert.bases.clear();
    vec![
        (
            "read",
            record(professional(), "read", "GET /fhir/Patient/p-anna", 200),
        ),
        (
            "search",
            record(
                professional(),
                "search",
                "GET /fhir/Observation?patient=p-anna&_count=10",
                200,
            ),
        ),
        (
            "create",
            record(system.clone(), "create", "POST /fhir/Observation", 201),
        ),
        (
            "update",
            record(system.clone(), "update", "PUT /fhir/Observation/o1", 200),
        ),
        (
            "delete",
            record(system.clone(), "delete", "DELETE /fhir/Observation/o1", 204),
        ),
        (
            "vread",
            record(
                system.clone(),
                "vread",
                "GET /fhir/Observation/o1/_history/2",
                200,
            ),
        ),
        (
            "history",
            record(system, "history", "GET /fhir/Observation/o1/_history", 200),
        ),
        (
            "citizen",
            record(
                citizen,
                "operation:everything",
                "GET /fhir/Patient/p-anna/$everything",
                200,
            ),
        ),
        ("emergency", emergency),
        (
            "refused",
            record(professional(), "read", "GET /fhir/Patient/p-anna", 403),
        ),
        ("unauthenticated", unauthenticated),
        (
            "unavailable",
            record(professional(), "read", "GET /fhir/Patient/p-anna", 503),
        ),
        ("alert", alert),
    ]
}

fn codings(value: &Value) -> Vec<(String, String)> {
    let list = match value {
        Value::Array(items) => items.clone(),
        Value::Object(o) if o.contains_key("coding") => o["coding"].as_array().unwrap().clone(),
        other => vec![other.clone()],
    };
    list.iter()
        .map(|c| {
            (
                c["system"].as_str().unwrap_or("").to_string(),
                c["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The agent of `event` whose type has `system|code`.
fn agent<'a>(event: &'a Value, system: &str, code: &str) -> Option<&'a Value> {
    event["agent"].as_array().unwrap().iter().find(|a| {
        codings(&a["type"])
            .iter()
            .any(|(s, c)| s == system && c == code)
    })
}

/// The entity of `event` whose role (or, without a role, type) is `system|code`.
fn entity<'a>(event: &'a Value, system: &str, code: &str) -> Option<&'a Value> {
    event["entity"].as_array().unwrap().iter().find(|e| {
        let role = if e.get("role").is_some() {
            &e["role"]
        } else {
            &e["type"]
        };
        codings(role).iter().any(|(s, c)| s == system && c == code)
    })
}

#[test]
fn every_kind_of_record_is_a_valid_r4_audit_event() {
    let known_systems = [
        "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "http://dicom.nema.org/resources/ontology/DCM",
        "http://hl7.org/fhir/restful-interaction",
        "https://zorgnet.nl/fhir/CodeSystem/operation",
        "https://zorgnet.nl/fhir/CodeSystem/audit-alert-rule",
    ];
    for (seq, (what, record)) in (0_u64..).zip(records()) {
        let event = audit_event(seq + 40, &record, &SOURCE);
        let errors: Vec<_> = validate_resource(&event)
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:?}\n{event:#}");
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["id"], (seq + 40).to_string(), "{what}: id is the seq");
        assert_eq!(event["recorded"], "2025-12-07T09:33:20.000Z", "{what}");
        for (system, _) in codings(&event["type"])
            .into_iter()
            .chain(event.get("subtype").map(codings).unwrap_or_default())
        {
            assert!(known_systems.contains(&system.as_str()), "{what}: {system}");
        }
        let outcome = match record.status {
            0..=399 => "0",
            503 => "12",
            400..=499 => "4",
            _ => "8",
        };
        assert_eq!(event["outcome"], outcome, "{what}");
        let requestors: Vec<&Value> = event["agent"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["requestor"] == true)
            .collect();
        assert_eq!(requestors.len(), 1, "{what}: one requestor");
        let server = event["agent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["network"]["address"] == SOURCE.base_url)
            .unwrap_or_else(|| panic!("{what}: the server agent"));
        assert_eq!(
            server["who"]["identifier"],
            json!({"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "00000011"})
        );
        assert_eq!(
            event["source"]["observer"]["identifier"]["value"],
            "00000011"
        );
        for patient in &record.patients {
            let patient_entity = entity(
                &event,
                "http://terminology.hl7.org/CodeSystem/object-role",
                "1",
            )
            .unwrap_or_else(|| panic!("{what}: the patient"));
            assert_eq!(
                patient_entity["what"]["reference"],
                format!("Patient/{patient}")
            );
            assert_eq!(
                codings(&patient_entity["type"]),
                [(
                    "http://terminology.hl7.org/CodeSystem/audit-entity-type".to_string(),
                    "1".to_string()
                )]
            );
        }
    }
}

#[test]
fn the_validator_would_catch_a_broken_event() {
    let mut event = audit_event(1, &records()[0].1, &SOURCE);
    event["action"] = json!("X");
    event["agent"][0]["requestor"] = json!("no");
    let errors = validate_resource(&event)
        .into_iter()
        .filter(|i| i.severity == Severity::Error)
        .count();
    assert!(
        errors >= 2,
        "an action outside its value set, a requestor not boolean"
    );
    let mut event = audit_event(1, &records()[0].1, &SOURCE);
    event.as_object_mut().unwrap().remove("recorded");
    assert!(
        validate_resource(&event)
            .iter()
            .any(|i| i.severity == Severity::Error),
        "recorded is required"
    );
}

#[test]
fn the_professional_purpose_and_break_the_glass_reason_are_where_balp_puts_them() {
    let all = records();
    let read = audit_event(1, &all[0].1, &SOURCE);
    let user = agent(
        &read,
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
        "IRCP",
    )
    .unwrap();
    assert_eq!(user["requestor"], true);
    assert_eq!(
        user["who"]["identifier"],
        json!({"system": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers", "value": "900000001"})
    );
    assert_eq!(
        codings(&user["role"][0]),
        [(
            "urn:oid:2.16.840.1.113883.2.4.15.111".to_string(),
            "01.015".to_string()
        )]
    );
    assert_eq!(
        codings(&user["purposeOfUse"][0]),
        [(
            "http://terminology.hl7.org/CodeSystem/v3-ActReason".to_string(),
            "TREAT".to_string()
        )]
    );
    assert_eq!(
        user["policy"],
        json!(["urn:zorgnet:basis:treatment-relation"])
    );
    let organisation = agent(
        &read,
        "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
        "PROV",
    )
    .unwrap();
    assert_eq!(
        organisation["who"]["identifier"],
        json!({"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "00000022"})
    );
    assert_eq!(organisation["requestor"], false);

    let emergency = all.iter().find(|(w, _)| *w == "emergency").unwrap();
    let event = audit_event(2, &emergency.1, &SOURCE);
    let user = &event["agent"].as_array().unwrap()[2];
    assert_eq!(
        codings(&user["purposeOfUse"][0]),
        [(
            "http://terminology.hl7.org/CodeSystem/v3-ActReason".to_string(),
            "ETREAT".to_string()
        )]
    );
    assert_eq!(
        user["purposeOfUse"][0]["text"],
        "unconscious at the emergency department"
    );

    let citizen = all.iter().find(|(w, _)| *w == "citizen").unwrap();
    let event = audit_event(3, &citizen.1, &SOURCE);
    let user = agent(
        &event,
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
        "IRCP",
    )
    .unwrap();
    assert_eq!(
        user["who"]["identifier"],
        json!({"system": "https://digid.example", "value": "anna-sub"})
    );
    assert_eq!(codings(&user["role"][0])[0].1, "PAT");
    assert_eq!(
        codings(&event["subtype"]),
        [
            (
                "http://hl7.org/fhir/restful-interaction".to_string(),
                "operation".to_string()
            ),
            (
                "https://zorgnet.nl/fhir/CodeSystem/operation".to_string(),
                "everything".to_string()
            )
        ]
    );

    let alert = all.iter().find(|(w, _)| *w == "alert").unwrap();
    let event = audit_event(4, &alert.1, &SOURCE);
    assert_eq!(
        codings(&event["type"]),
        [(
            "http://dicom.nema.org/resources/ontology/DCM".to_string(),
            "110113".to_string()
        )]
    );
    assert_eq!(event["action"], "E");
}

/// The fields BALP fixes for an interaction, compared with its example: type, subtype,
/// action, outcome, the agents' types and requestor flags, and the entities' types and
/// roles.
fn compare_with_example(ours: &Value, example: &Value, what: &str) {
    assert_eq!(
        codings(&ours["type"]),
        codings(&example["type"]),
        "{what}: type"
    );
    assert_eq!(
        codings(&ours["subtype"]),
        codings(&example["subtype"]),
        "{what}: subtype"
    );
    assert_eq!(ours["action"], example["action"], "{what}: action");
    assert_eq!(ours["outcome"], example["outcome"], "{what}: outcome");
    for theirs in example["agent"].as_array().unwrap() {
        let (system, code) = codings(&theirs["type"])[0].clone();
        let mine = agent(ours, &system, &code)
            .unwrap_or_else(|| panic!("{what}: an agent of type {code}\n{ours:#}"));
        assert_eq!(
            mine["requestor"], theirs["requestor"],
            "{what}: agent {code}'s requestor flag"
        );
        assert!(mine["who"].is_object(), "{what}: agent {code} names who");
        // BALP's client agent carries the client's network address; a record does not
        // hold it (it names the client by its certificate instead), so only the server's
        // agent has `network`.
        if let Some(network) = theirs.get("network")
            && network["type"] == "5"
        {
            assert_eq!(mine["network"]["type"], "5", "{what}: the server's URL");
        }
    }
    for theirs in example["entity"].as_array().unwrap() {
        let (type_system, type_code) = codings(&theirs["type"])[0].clone();
        if type_code == "XrequestId" {
            // A record holds no request id (X-Request-Id): there is no transaction entity.
            continue;
        }
        let (role_system, role_code) = codings(&theirs["role"])[0].clone();
        let mine = entity(ours, &role_system, &role_code)
            .unwrap_or_else(|| panic!("{what}: an entity of role {role_code}"));
        assert_eq!(
            codings(&mine["type"]),
            [(type_system, type_code)],
            "{what}: entity {role_code}'s type"
        );
        if theirs.get("query").is_some() {
            assert!(mine.get("what").is_none(), "{what}: a query has no what");
            assert!(mine["query"].is_string(), "{what}: the query");
        } else {
            assert!(
                mine["what"].is_object(),
                "{what}: entity {role_code}'s what"
            );
        }
    }
    // BALP's examples claim a profile in meta.profile; ours claim none, because the
    // client's network address and the request id, which the profiles require, are not
    // in a record.
    assert!(ours.get("meta").is_none(), "{what}: no profile claimed");
}

#[test]
fn a_read_a_search_and_a_create_follow_balp_s_examples() {
    let all = records();
    let read = audit_event(1, &all[0].1, &SOURCE);
    compare_with_example(&read, &example("auditBasicReadServer"), "read");
    assert_eq!(
        entity(
            &read,
            "http://terminology.hl7.org/CodeSystem/object-role",
            "4"
        )
        .unwrap()["what"]["reference"],
        "Patient/p-anna"
    );

    let search = audit_event(2, &all[1].1, &SOURCE);
    compare_with_example(&search, &example("auditBasicQueryGetServer"), "search");
    let query = entity(
        &search,
        "http://terminology.hl7.org/CodeSystem/object-role",
        "24",
    )
    .unwrap();
    assert_eq!(
        STANDARD.decode(query["query"].as_str().unwrap()).unwrap(),
        b"GET /fhir/Observation?patient=p-anna&_count=10",
        "the query as asked, like BALP's (which adds the request's headers: a record has none)"
    );

    let create = audit_event(
        3,
        &record(professional(), "create", "POST /fhir/Observation", 201),
        &SOURCE,
    );
    compare_with_example(&create, &example("auditBasicCreateServer"), "create");
    // BALP's create names the new resource (`List/ex-list`); a record has the request
    // only, which names the type, not the id the server gave it.
    assert_eq!(
        entity(
            &create,
            "http://terminology.hl7.org/CodeSystem/object-role",
            "4"
        )
        .unwrap()["what"],
        json!({"type": "Observation"})
    );
    // A system's create names the system as the requesting application (DICOM 110150),
    // as BALP's no-user examples name the application.
    let by_system = audit_event(4, &all[2].1, &SOURCE);
    let application = agent(
        &by_system,
        "http://dicom.nema.org/resources/ontology/DCM",
        "110150",
    );
    assert_eq!(application.unwrap()["requestor"], true);

    let delete = audit_event(
        5,
        &record(professional(), "delete", "DELETE /fhir/Observation/o1", 204),
        &SOURCE,
    );
    compare_with_example(&delete, &example("auditBasicDeleteServer"), "delete");
}

#[test]
fn an_access_on_a_consent_basis_names_purpose_and_organisation_as_balp_s_consent_example() {
    let consent = example("auditAuthZconsent");
    let theirs = consent["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["requestor"] == true)
        .unwrap();
    let event = audit_event(5, &records()[0].1, &SOURCE);
    let mine = event["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["requestor"] == true)
        .unwrap();
    assert_eq!(codings(&mine["type"]), codings(&theirs["type"]));
    assert_eq!(
        codings(&mine["purposeOfUse"][0])[0].0,
        codings(&theirs["purposeOfUse"][0])[0].0,
        "purpose of use on the requesting agent, from v3-ActReason"
    );
    let organisation = |event: &Value| {
        agent(
            event,
            "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
            "PROV",
        )
        .map(|a| a["requestor"].clone())
    };
    assert_eq!(organisation(&event), organisation(&consent));
    // BALP's consent example is the authorisation decision's own event (type Security
    // Alert, subtype AuthZ-Consent, the Consent as an entity). The hub's consent register
    // makes that decision and holds no Consent resource a node could name; the node's
    // record keeps the decision's basis as the requesting agent's policy instead.
    assert_eq!(
        mine["policy"],
        json!(["urn:zorgnet:basis:treatment-relation"])
    );
}
