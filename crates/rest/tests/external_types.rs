//! A type the embedder keeps out of the store (`zorgnet_rest::ExternalType`): no interaction,
//! direct or in a Bundle, writes one to the store or reads one from it. A transaction with
//! such an entry fails whole (405, the entry named) and stores nothing; a batch answers that
//! entry with 405 and runs the others; the CapabilityStatement does not list the type. On
//! SQLite and PostgreSQL.

mod support;

use serde_json::{Value, json};
use zorgnet_rest::ExternalType;

const KEPT_OUT: ExternalType = ExternalType {
    resource_type: "AuditEvent",
    source: "the embedder's log is their only source",
};

/// A valid AuditEvent.
fn audit_event(id: Option<&str>) -> Value {
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": true, "who": {"display": "someone"}}],
        "source": {"observer": {"display": "a node"}},
    });
    if let Some(id) = id {
        event["id"] = json!(id);
    }
    event
}

/// Every way a Bundle entry could write or read an AuditEvent in the store.
fn audit_event_entries() -> Vec<Value> {
    vec![
        json!({"resource": audit_event(None), "request": {"method": "POST", "url": "AuditEvent"}}),
        json!({"resource": audit_event(None),
            "request": {"method": "POST", "url": "AuditEvent", "ifNoneExist": "date=2026"}}),
        json!({"resource": audit_event(Some("ae-1")), "request": {"method": "PUT", "url": "AuditEvent/ae-1"}}),
        json!({"resource": audit_event(Some("ae-1")),
            "request": {"method": "PUT", "url": "AuditEvent/ae-1", "ifMatch": "W/\"1\""}}),
        json!({"resource": audit_event(None), "request": {"method": "PUT", "url": "AuditEvent?date=2026"}}),
        json!({"request": {"method": "DELETE", "url": "AuditEvent/ae-1"}}),
        json!({"request": {"method": "DELETE", "url": "AuditEvent?date=2026"}}),
        json!({"request": {"method": "GET", "url": "AuditEvent/ae-1"}}),
    ]
}

fn patient_put(id: &str) -> Value {
    json!({"resource": {"resourceType": "Patient", "id": id},
        "request": {"method": "PUT", "url": format!("Patient/{id}")}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_an_external_type_fails_whole_and_a_batch_refuses_that_entry() {
    for node in support::nodes_with(&[KEPT_OUT]).await {
        let b = node.backend;
        for (i, entry) in audit_event_entries().into_iter().enumerate() {
            let context = format!("[{b}] transaction with {}", entry["request"]);
            let patient = format!("tx-{i}");
            let transaction = json!({"resourceType": "Bundle", "type": "transaction",
                "entry": [patient_put(&patient), entry]});
            let reply = node.post("", &transaction).await;
            support::assert_outcome(&reply, 405, &context);
            let diagnostics = reply.body["issue"][0]["diagnostics"].as_str().unwrap();
            assert!(
                diagnostics.starts_with("Bundle.entry[1]: AuditEvent is not kept"),
                "{context}: {diagnostics}"
            );
            assert!(diagnostics.contains(KEPT_OUT.source), "{context}");
            let patient = node.get(&format!("Patient/{patient}")).await;
            assert_eq!(patient.status, 404, "{context}: nothing stored");
        }
        let by_reference = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Provenance",
                "target": [{"reference": "AuditEvent?date=2026"}],
                "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"who": {"display": "someone"}}]},
             "request": {"method": "POST", "url": "Provenance"}},
        ]});
        let reply = node.post("", &by_reference).await;
        support::assert_outcome(&reply, 405, &format!("[{b}] a conditional reference"));

        let mut entries = vec![patient_put("batch-ok")];
        entries.extend(audit_event_entries());
        entries.push(json!({"request": {"method": "GET", "url": "Patient/batch-ok"}}));
        let count = entries.len();
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
        let reply = node.post("", &batch).await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        let answers = reply.body["entry"].as_array().unwrap();
        assert_eq!(answers.len(), count, "[{b}] {}", reply.text);
        assert_eq!(answers[0]["response"]["status"], "201 Created", "[{b}]");
        for answer in &answers[1..count - 1] {
            assert_eq!(
                answer["response"]["status"], "405 Method Not Allowed",
                "[{b}] {answer}"
            );
            assert_eq!(
                answer["response"]["outcome"]["resourceType"], "OperationOutcome",
                "[{b}]"
            );
        }
        assert_eq!(answers[count - 1]["response"]["status"], "200 OK", "[{b}]");

        let history = node.get("_history?_count=1000").await;
        assert_eq!(history.status, 200, "[{b}] {}", history.text);
        let stored: Vec<&Value> = history.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "AuditEvent")
            .collect();
        assert!(stored.is_empty(), "[{b}] the store holds {stored:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_never_asked_about_an_external_type_and_metadata_leaves_it_out() {
    for node in support::nodes_with(&[KEPT_OUT]).await {
        let b = node.backend;
        let writes = [
            node.post("AuditEvent", &audit_event(None)).await,
            node.put("AuditEvent/ae-1", &audit_event(Some("ae-1")))
                .await,
            node.put("AuditEvent?date=2026", &audit_event(None)).await,
            node.delete("AuditEvent/ae-1").await,
            node.delete("AuditEvent?date=2026").await,
        ];
        for (i, reply) in writes.iter().enumerate() {
            support::assert_outcome(reply, 405, &format!("[{b}] write {i}"));
        }
        for path in [
            "AuditEvent/ae-1",
            "AuditEvent?date=2026",
            "AuditEvent/ae-1/_history",
            "AuditEvent/ae-1/_history/1",
            "AuditEvent/_history",
            "?_type=AuditEvent",
            "Patient?_revinclude=AuditEvent:patient",
            "AuditEvent?_include=AuditEvent:patient",
        ] {
            support::assert_outcome(&node.get(path).await, 405, &format!("[{b}] GET {path}"));
        }
        let reply = node
            .send(
                node.client
                    .post(node.url("AuditEvent/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("date=2026"),
            )
            .await;
        support::assert_outcome(&reply, 405, &format!("[{b}] _search"));

        let patient = node.create(&json!({"resourceType": "Patient"})).await;
        let reply = node
            .get(&format!("Patient/{patient}/$everything?_type=AuditEvent"))
            .await;
        support::assert_outcome(&reply, 405, &format!("[{b}] $everything"));

        let metadata = node.get("metadata").await;
        assert_eq!(metadata.status, 200, "[{b}]");
        let types: Vec<&str> = metadata.body["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert!(!types.contains(&"AuditEvent"), "[{b}] {types:?}");
        assert!(
            types.contains(&"Patient") && types.contains(&"Provenance"),
            "[{b}]"
        );
    }
}
