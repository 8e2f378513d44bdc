//! FHIRPath Patch over HTTP (`PATCH` with a `Parameters` body), on SQLite and PostgreSQL:
//! `Type/id`, conditional, `If-Match`, in XML, as transaction and batch entries, and
//! refusals that store nothing.

mod support;

use serde_json::{Value, json};
use support::{Node, Reply, assert_outcome, nodes};

const BSN: &str = "http://fhir.nl/fhir/NamingSystem/bsn";

fn patient(bsn: &str, family: &str, given: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": BSN, "value": bsn}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": "1970-01-01",
        "gender": "male"
    })
}

/// One `operation` parameter: type, path, and the other parts as `(name, value[x] part)`.
fn operation(kind: &str, path: &str, parts: &[Value]) -> Value {
    let mut part = vec![
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "path", "valueString": path}),
    ];
    part.extend(parts.iter().cloned());
    json!({"name": "operation", "part": part})
}

fn parameters(operations: &[Value]) -> Value {
    json!({"resourceType": "Parameters", "parameter": operations})
}

async fn send_patch(
    node: &Node,
    url: &str,
    content_type: &str,
    body: String,
    if_match: Option<&str>,
) -> Reply {
    let mut request = node
        .client
        .patch(node.url(url))
        .header("content-type", content_type)
        .body(body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    node.send(request).await
}

async fn fhirpath_patch(node: &Node, url: &str, patch: &Value, if_match: Option<&str>) -> Reply {
    send_patch(
        node,
        url,
        "application/fhir+json",
        patch.to_string(),
        if_match,
    )
    .await
}

async fn version_of(node: &Node, url: &str) -> Value {
    node.get(url).await.body["meta"]["versionId"].clone()
}

#[tokio::test]
async fn a_fhirpath_patch_changes_a_resource_as_an_update() {
    for node in nodes().await {
        let b = node.backend;
        let id = node.create(&patient("123456782", "Jansen", "Jan")).await;
        let url = format!("Patient/{id}");

        let patched = fhirpath_patch(
            &node,
            &url,
            &parameters(&[
                operation(
                    "replace",
                    "Patient.gender",
                    &[json!({"name": "value", "valueCode": "female"})],
                ),
                operation(
                    "insert",
                    "Patient.name[0].given",
                    &[
                        json!({"name": "value", "valueString": "Johanna"}),
                        json!({"name": "index", "valueInteger": 0}),
                    ],
                ),
                operation("delete", "Patient.birthDate", &[]),
                operation(
                    "add",
                    "Patient",
                    &[
                        json!({"name": "name", "valueString": "telecom"}),
                        json!({"name": "value", "valueContactPoint":
                            {"system": "phone", "value": "0301234567"}}),
                    ],
                ),
                operation(
                    "add",
                    "Patient",
                    &[
                        json!({"name": "name", "valueString": "contact"}),
                        json!({"name": "value", "part": [
                            {"name": "name", "valueHumanName": {"family": "Bakker"}},
                            {"name": "gender", "valueCode": "male"}
                        ]}),
                    ],
                ),
            ]),
            None,
        )
        .await;
        assert_eq!(patched.status, 200, "[{b}] {}", patched.text);
        assert_eq!(patched.body["gender"], "female");
        assert_eq!(patched.body["name"][0]["given"], json!(["Johanna", "Jan"]));
        assert!(patched.body.get("birthDate").is_none(), "[{b}]");
        assert_eq!(patched.body["telecom"][0]["value"], "0301234567");
        assert_eq!(
            patched.body["contact"],
            json!([{"name": {"family": "Bakker"}, "gender": "male"}])
        );
        assert_eq!(patched.body["meta"]["versionId"], "2");
        assert_eq!(patched.header("etag").as_deref(), Some("W/\"2\""));
        let read = node.get(&url).await;
        assert_eq!(read.body, patched.body, "[{b}] the patch is stored");

        // The same patch in FHIR XML.
        let xml = zorgnet_fhir::xml::json_to_xml(&parameters(&[operation(
            "replace",
            "Patient.name[0].family",
            &[json!({"name": "value", "valueString": "Jansen-Bakker"})],
        )]))
        .unwrap();
        let from_xml = send_patch(&node, &url, "application/fhir+xml", xml, None).await;
        assert_eq!(from_xml.status, 200, "[{b}] {}", from_xml.text);
        assert_eq!(
            node.get(&url).await.body["name"][0]["family"],
            "Jansen-Bakker"
        );

        // If-Match of another version: 412 and nothing stored; of the current one: applied.
        let move_given = parameters(&[operation(
            "move",
            "Patient.name[0].given",
            &[
                json!({"name": "source", "valueInteger": 0}),
                json!({"name": "destination", "valueInteger": 1}),
            ],
        )]);
        let stale = fhirpath_patch(&node, &url, &move_given, Some("W/\"1\"")).await;
        assert_outcome(&stale, 412, "a stale If-Match");
        assert_eq!(version_of(&node, &url).await, "3", "[{b}] nothing stored");
        let current = fhirpath_patch(&node, &url, &move_given, Some("W/\"3\"")).await;
        assert_eq!(current.status, 200, "[{b}] {}", current.text);
        assert_eq!(current.body["meta"]["versionId"], "4");
        assert_eq!(current.body["name"][0]["given"], json!(["Jan", "Johanna"]));
    }
}

#[tokio::test]
async fn a_bad_fhirpath_patch_is_refused_and_stores_nothing() {
    for node in nodes().await {
        let b = node.backend;
        let id = node.create(&patient("123456782", "Jansen", "Jan")).await;
        let url = format!("Patient/{id}");
        let too_many: Vec<Value> = (0..=zorgnet_rest::patch::PATCH_OPERATIONS_MAX)
            .map(|_| operation("delete", "Patient.active", &[]))
            .collect();
        for (what, patch, status) in [
            (
                "an unknown operation type",
                parameters(&[operation("frobnicate", "Patient.gender", &[])]),
                422,
            ),
            (
                "a replace whose path selects nothing",
                parameters(&[
                    operation(
                        "replace",
                        "Patient.gender",
                        &[json!({"name": "value", "valueCode": "female"})],
                    ),
                    operation(
                        "replace",
                        "Patient.deceased",
                        &[json!({"name": "value", "valueBoolean": true})],
                    ),
                ]),
                422,
            ),
            (
                "a delete whose path selects several elements",
                parameters(&[operation(
                    "delete",
                    "Patient.name.given | Patient.gender",
                    &[],
                )]),
                422,
            ),
            (
                "a path that is not FHIRPath",
                parameters(&[operation("delete", "Patient.name[", &[])]),
                422,
            ),
            (
                "an element the type does not have",
                parameters(&[operation(
                    "add",
                    "Patient",
                    &[
                        json!({"name": "name", "valueString": "colour"}),
                        json!({"name": "value", "valueString": "blue"}),
                    ],
                )]),
                422,
            ),
            (
                "a changed id",
                parameters(&[operation(
                    "replace",
                    "Patient.id",
                    &[json!({"name": "value", "valueId": "other"})],
                )]),
                422,
            ),
            ("too many operations", parameters(&too_many), 413),
        ] {
            let refused = fhirpath_patch(&node, &url, &patch, None).await;
            assert_outcome(&refused, status, &format!("[{b}] {what}"));
        }
        // A result that is not a valid Patient: refused by validation (4xx).
        let invalid = fhirpath_patch(
            &node,
            &url,
            &parameters(&[operation(
                "replace",
                "Patient.gender",
                &[json!({"name": "value", "valueCode": "bogus"})],
            )]),
            None,
        )
        .await;
        assert!(
            matches!(invalid.status, 400 | 422),
            "[{b}] {}",
            invalid.text
        );
        // A patch without operations changes nothing, and is no error.
        let empty = fhirpath_patch(&node, &url, &parameters(&[]), None).await;
        assert_eq!(empty.status, 200, "[{b}] {}", empty.text);
        let unchanged = node.get(&url).await;
        assert_eq!(
            unchanged.body["meta"]["versionId"], "1",
            "[{b}] nothing stored"
        );
        assert_eq!(unchanged.body["gender"], "male");
        // Not a Parameters and not a JSON Patch: 415.
        let other = fhirpath_patch(&node, &url, &patient("1", "x", "y"), None).await;
        assert_outcome(&other, 415, "a Patient as the patch");
    }
}

#[tokio::test]
async fn a_conditional_fhirpath_patch_changes_the_one_match() {
    for node in nodes().await {
        let b = node.backend;
        node.create(&patient("111222333", "Bakker", "Piet")).await;
        node.create(&patient("444555663", "Visser", "Eva")).await;
        let activate = parameters(&[operation(
            "add",
            "Patient",
            &[
                json!({"name": "name", "valueString": "active"}),
                json!({"name": "value", "valueBoolean": true}),
            ],
        )]);
        let conditional = fhirpath_patch(
            &node,
            &format!("Patient?identifier={BSN}%7C111222333"),
            &activate,
            None,
        )
        .await;
        assert_eq!(conditional.status, 200, "[{b}] {}", conditional.text);
        assert_eq!(conditional.body["active"], true);
        assert_eq!(conditional.body["name"][0]["family"], "Bakker");
        for (condition, status) in [
            (format!("Patient?identifier={BSN}%7C999999990"), 404),
            ("Patient?gender=male".to_string(), 412),
        ] {
            let refused = fhirpath_patch(&node, &condition, &activate, None).await;
            assert_outcome(&refused, status, &format!("[{b}] {condition}"));
        }
    }
}

#[tokio::test]
async fn fhirpath_patches_as_transaction_and_batch_entries() {
    for node in nodes().await {
        let b = node.backend;
        let id = node.create(&patient("123456782", "Jansen", "Jan")).await;
        let url = format!("Patient/{id}");
        let gender = |code: &str| {
            parameters(&[operation(
                "replace",
                "Patient.gender",
                &[json!({"name": "value", "valueCode": code})],
            )])
        };

        let transaction = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"resource": gender("female"),
                     "request": {"method": "PATCH", "url": url, "ifMatch": "W/\"1\""}},
                    {"resource": patient("999999990", "Visser", "Eva"),
                     "request": {"method": "POST", "url": "Patient"}}
                ]}),
            )
            .await;
        assert_eq!(transaction.status, 200, "[{b}] {}", transaction.text);
        assert_eq!(
            transaction.body["entry"][0]["response"]["status"], "200 OK",
            "[{b}] {}",
            transaction.text
        );
        assert_eq!(node.get(&url).await.body["gender"], "female");

        // A failing patch fails the whole transaction: nothing of it is stored.
        let ambiguous = parameters(&[operation(
            "delete",
            "Patient.name.given | Patient.gender",
            &[],
        )]);
        let failing = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"resource": ambiguous,
                     "request": {"method": "PATCH", "url": url}},
                    {"resource": patient("888777668", "Smit", "Kees"),
                     "request": {"method": "POST", "url": "Patient"}}
                ]}),
            )
            .await;
        assert_outcome(
            &failing,
            422,
            &format!("[{b}] a failing patch in a transaction"),
        );
        assert!(
            failing.text.contains("delete removes at most one"),
            "[{b}] {}",
            failing.text
        );
        assert_eq!(version_of(&node, &url).await, "2", "[{b}] nothing stored");
        assert_eq!(
            node.count(&format!("Patient?identifier={BSN}%7C888777668"))
                .await,
            0,
            "[{b}] nothing stored"
        );

        // In a batch a failing patch fails its own entry only; a stale ifMatch is a 412.
        let batch = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                    {"resource": parameters(&[operation("replace", "Patient.deceased",
                        &[json!({"name": "value", "valueBoolean": true})])]),
                     "request": {"method": "PATCH", "url": url}},
                    {"resource": gender("other"),
                     "request": {"method": "PATCH", "url": url, "ifMatch": "W/\"1\""}},
                    {"resource": gender("unknown"),
                     "request": {"method": "PATCH", "url": url}}
                ]}),
            )
            .await;
        assert_eq!(batch.status, 200, "[{b}] {}", batch.text);
        let statuses: Vec<&str> = batch.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap())
            .collect();
        assert!(statuses[0].starts_with("422"), "[{b}] {statuses:?}");
        assert!(statuses[1].starts_with("412"), "[{b}] {statuses:?}");
        assert_eq!(statuses[2], "200 OK", "[{b}] {statuses:?}");
        let read = node.get(&url).await;
        assert_eq!(read.body["gender"], "unknown");
        assert_eq!(read.body["meta"]["versionId"], "3");
    }
}
