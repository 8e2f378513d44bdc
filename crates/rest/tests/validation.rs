//! What the validator refuses, seen over HTTP on every backend: codes outside a required
//! binding's value set (422, `code-invalid`) and control characters in strings (400 or 422),
//! through `POST`, `PUT` and the entries of transactions and batches — and that a refused
//! write stores nothing (the system `_history` shows no new version).
//!
//! The rules themselves are unit-tested in `zorgnet-fhir` (`validate.rs`); these tests check
//! that every write path applies them and that both backends refuse cleanly: PostgreSQL cannot
//! store U+0000 in text at all, and answered such a write with a storage failure (500).

mod support;

use serde_json::{Value, json};
use support::{Node, Reply, nodes};

/// Page size for reading the whole (small) system history of a test node.
const HISTORY_PAGE: usize = 200;

/// The number of versions the node holds, of every resource.
async fn versions(node: &Node) -> usize {
    let reply = node.get(&format!("_history?_count={HISTORY_PAGE}")).await;
    assert_eq!(
        reply.status, 200,
        "[{}] _history: {}",
        node.backend, reply.text
    );
    let count = reply.body["entry"].as_array().map_or(0, Vec::len);
    assert!(count < HISTORY_PAGE, "history larger than one page");
    count
}

/// Asserts a refusal: one of `statuses`, an OperationOutcome with an issue of one of `codes`.
fn assert_refused(reply: &Reply, statuses: &[u16], codes: &[&str], context: &str) {
    assert!(
        statuses.contains(&reply.status),
        "{context}: expected one of {statuses:?}, got {}: {}",
        reply.status,
        reply.text
    );
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{context}: {}",
        reply.text
    );
    let found = reply.body["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|issue| issue["code"].as_str())
        .any(|code| codes.contains(&code));
    assert!(found, "{context}: no issue of {codes:?}: {}", reply.text);
}

/// The first issue's diagnostics and expression, for checking what a refusal names.
fn first_issue(reply: &Reply) -> (String, String) {
    let issue = &reply.body["issue"][0];
    (
        issue["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        issue["expression"][0]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn observation(status: &str) -> Value {
    json!({"resourceType": "Observation", "status": status, "code": {"text": "weight"}})
}

#[tokio::test]
async fn codes_outside_a_required_value_set_are_refused() {
    for node in nodes().await {
        let b = node.backend;
        let before = versions(&node).await;

        let reply = node
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "gender": "x"}),
            )
            .await;
        assert_refused(
            &reply,
            &[422],
            &["code-invalid"],
            &format!("[{b}] gender x"),
        );
        let (diagnostics, expression) = first_issue(&reply);
        assert_eq!(expression, "Patient.gender", "[{b}]");
        assert!(
            diagnostics.contains("'x'")
                && diagnostics.contains("http://hl7.org/fhir/ValueSet/administrative-gender"),
            "[{b}] {diagnostics}"
        );

        let reply = node.post("Observation", &observation("bogus")).await;
        assert_refused(
            &reply,
            &[422],
            &["code-invalid"],
            &format!("[{b}] bogus status"),
        );
        assert_eq!(first_issue(&reply).1, "Observation.status", "[{b}]");

        let reply = node
            .put(
                "Patient/p1",
                &json!({"resourceType": "Patient", "id": "p1", "gender": "M"}),
            )
            .await;
        assert_refused(
            &reply,
            &[422],
            &["code-invalid"],
            &format!("[{b}] PUT gender M"),
        );
        assert_eq!(node.get("Patient/p1").await.status, 404, "[{b}]");

        // A Coding of the bound system with a code outside it.
        let condition = json!({
            "resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "healed"
            }]}
        });
        let reply = node.post("Condition", &condition).await;
        assert_refused(&reply, &[422], &["code-invalid"], &format!("[{b}] Coding"));
        assert_eq!(
            first_issue(&reply).1,
            "Condition.clinicalStatus.coding[0].code",
            "[{b}]"
        );

        assert_eq!(versions(&node).await, before, "[{b}] nothing stored");
    }
}

#[tokio::test]
async fn codes_of_the_value_set_are_accepted() {
    for node in nodes().await {
        let b = node.backend;
        for gender in ["male", "female", "other", "unknown"] {
            node.create(&json!({"resourceType": "Patient", "gender": gender}))
                .await;
        }
        // `corrected` is nested under `amended` in the code system.
        for status in ["final", "corrected"] {
            node.create(&observation(status)).await;
        }
        node.create(&json!({
            "resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [
                {"system": "http://snomed.info/sct", "code": "55561003"},
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]}
        }))
        .await;
        // MIME types are not in the definitions, so their binding is not checked.
        node.create(&json!({
            "resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": "application/x-zorgnet"}}]
        }))
        .await;
        assert_eq!(
            node.search_ids("Patient?gender=female").await.len(),
            1,
            "[{b}]"
        );
    }
}

/// The issue codes of a control character: `value` in a string, `structure` in a key (which
/// makes it an unknown element).
const CONTROL_CHARACTER_CODES: &[&str] = &["value", "structure"];

/// Resources with a control character somewhere in a string or a key.
fn with_control_characters() -> Vec<(&'static str, Value)> {
    let family = |text: &str| json!({"resourceType": "Patient", "name": [{"family": text}]});
    vec![
        ("U+0000 in a string", family("Jan\u{0}sen")),
        ("U+0001 in a string", family("\u{1}")),
        ("U+001F in a string", family("Jansen\u{1f}")),
        ("vertical tab in a string", family("a\u{b}b")),
        (
            "U+0000 in a code",
            json!({"resourceType": "Patient", "gender": "male\u{0}"}),
        ),
        (
            "U+0000 in a uri",
            json!({"resourceType": "Patient", "implicitRules": "http://x/\u{0}"}),
        ),
        (
            "U+0000 in a date",
            json!({"resourceType": "Patient", "birthDate": "1970\u{0}"}),
        ),
        (
            "U+0000 in an identifier's value",
            json!({"resourceType": "Patient", "identifier": [{"system": "http://x", "value": "1\u{0}"}]}),
        ),
        (
            "U+0000 in the narrative",
            json!({"resourceType": "Patient", "text": {"status": "generated",
                "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">\u{0}</div>"}}),
        ),
        (
            "U+0000 in an extension's value",
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueString": "\u{0}"}]}),
        ),
        (
            "U+0000 in an extension's markdown",
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueMarkdown": "*\u{0}*"}]}),
        ),
        (
            "U+0000 in an extension's url",
            json!({"resourceType": "Patient", "extension": [{"url": "http://x\u{0}", "valueString": "y"}]}),
        ),
        (
            "U+0000 in a primitive's extension",
            json!({"resourceType": "Patient", "name": [{"family": "X",
                "_family": {"extension": [{"url": "http://x", "valueString": "\u{0}"}]}}]}),
        ),
        (
            "U+0000 in a primitive's element id",
            json!({"resourceType": "Patient", "name": [{"family": "X", "_family": {"id": "\u{0}"}}]}),
        ),
        (
            "U+0000 in a key",
            json!({"resourceType": "Patient", "name\u{0}": [{"family": "X"}]}),
        ),
        (
            "U+0000 in a contained resource",
            json!({"resourceType": "Patient", "contained": [
                {"resourceType": "Organization", "id": "o", "name": "\u{0}"}
            ], "managingOrganization": {"reference": "#o"}}),
        ),
    ]
}

#[tokio::test]
async fn control_characters_are_refused_and_nothing_is_stored() {
    for node in nodes().await {
        let b = node.backend;
        let kept = json!({"resourceType": "Patient", "id": "kept", "name": [{"family": "Visser"}]});
        assert_eq!(node.put("Patient/kept", &kept).await.status, 201, "[{b}]");
        let before = versions(&node).await;

        for (what, resource) in with_control_characters() {
            let reply = node.post("Patient", &resource).await;
            assert_refused(
                &reply,
                &[400, 422],
                CONTROL_CHARACTER_CODES,
                &format!("[{b}] POST, {what}"),
            );

            let mut update = resource.clone();
            update["id"] = json!("kept");
            let reply = node.put("Patient/kept", &update).await;
            assert_refused(
                &reply,
                &[400, 422],
                CONTROL_CHARACTER_CODES,
                &format!("[{b}] PUT, {what}"),
            );

            update["id"] = json!("fresh");
            let reply = node.put("Patient/fresh", &update).await;
            assert_refused(
                &reply,
                &[400, 422],
                CONTROL_CHARACTER_CODES,
                &format!("[{b}] PUT new, {what}"),
            );
        }

        // The message names the place and the character.
        let reply = node
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "name": [{"family": "Jan\u{0}sen"}]}),
            )
            .await;
        assert_eq!(reply.status, 422, "[{b}] {}", reply.text);
        let (diagnostics, expression) = first_issue(&reply);
        assert_eq!(expression, "Patient.name[0].family", "[{b}]");
        assert!(diagnostics.contains("U+0000"), "[{b}] {diagnostics}");

        // A control character written raw (not escaped) is not JSON at all.
        let raw = node
            .send(
                node.client
                    .post(node.url("Patient"))
                    .header("content-type", "application/fhir+json")
                    .body("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"a\u{1}b\"}]}"),
            )
            .await;
        assert_refused(
            &raw,
            &[400],
            &["structure"],
            &format!("[{b}] raw control byte"),
        );

        assert_eq!(versions(&node).await, before, "[{b}] nothing new stored");
        assert_eq!(node.get("Patient/fresh").await.status, 404, "[{b}]");
        let read = node.get("Patient/kept").await;
        assert_eq!(
            read.body["name"], kept["name"],
            "[{b}] the stored version is intact"
        );
        assert_eq!(read.body["meta"]["versionId"], "1", "[{b}]");
    }
}

#[tokio::test]
async fn control_characters_in_bundle_entries_are_refused() {
    for node in nodes().await {
        let b = node.backend;
        let before = versions(&node).await;
        let good = json!({"resourceType": "Patient", "name": [{"family": "Visser"}]});
        let bad = json!({"resourceType": "Patient", "name": [{"family": "Vis\u{0}ser"}]});
        let bad_update =
            json!({"resourceType": "Patient", "id": "t1", "name": [{"family": "\u{0}"}]});

        for (method, url, resource) in [
            ("POST", "Patient", &bad),
            ("PUT", "Patient/t1", &bad_update),
        ] {
            let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": good, "request": {"method": "POST", "url": "Patient"}},
                {"resource": resource, "request": {"method": method, "url": url}}
            ]});
            let reply = node.post("", &transaction).await;
            assert_refused(
                &reply,
                &[400, 422],
                &["value"],
                &format!("[{b}] transaction {method}"),
            );
            assert!(
                reply.text.contains("Bundle.entry[1]"),
                "[{b}] {}",
                reply.text
            );
        }
        assert_eq!(
            versions(&node).await,
            before,
            "[{b}] the transaction stored nothing"
        );

        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad, "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad_update, "request": {"method": "PUT", "url": "Patient/t1"}}
        ]});
        let reply = node.post("", &batch).await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        let entries = reply.body["entry"].as_array().unwrap();
        assert_eq!(entries[0]["response"]["status"], "201 Created", "[{b}]");
        for entry in &entries[1..] {
            let status = entry["response"]["status"].as_str().unwrap_or_default();
            assert!(
                status.starts_with("400") || status.starts_with("422"),
                "[{b}] {entry}"
            );
            assert_eq!(
                entry["response"]["outcome"]["resourceType"], "OperationOutcome",
                "[{b}] {entry}"
            );
        }
        assert_eq!(
            versions(&node).await,
            before + 1,
            "[{b}] only the batch's good entry was stored"
        );
        assert_eq!(node.get("Patient/t1").await.status, 404, "[{b}]");
    }
}

#[tokio::test]
async fn tab_cr_and_lf_are_accepted_and_read_back() {
    for node in nodes().await {
        let b = node.backend;
        let resource = json!({
            "resourceType": "Patient", "id": "whitespace",
            "name": [{"text": "Jan\tJansen\r\nAmsterdam\n"}],
            "extension": [{"url": "http://x", "valueMarkdown": "# kop\n\n* punt\r\n"}],
            "text": {"status": "generated",
                "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">\n\t<p>x</p>\r\n</div>"}
        });
        let reply = node.put("Patient/whitespace", &resource).await;
        assert_eq!(reply.status, 201, "[{b}] {}", reply.text);
        let read = node.get("Patient/whitespace").await;
        assert_eq!(read.body["name"], resource["name"], "[{b}]");
        assert_eq!(read.body["extension"], resource["extension"], "[{b}]");
        assert_eq!(read.body["text"], resource["text"], "[{b}]");
    }
}
