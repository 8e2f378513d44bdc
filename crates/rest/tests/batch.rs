//! Batch Bundles whose plain updates the node writes together: every entry keeps its own
//! outcome (created, unchanged, updated, refused), other entries still run one by one, and
//! `Prefer: return=minimal` leaves the written resources out. On SQLite and PostgreSQL.

mod support;

use serde_json::{Value, json};

fn put(resource: Value) -> Value {
    let url = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    json!({"resource": resource, "request": {"method": "PUT", "url": url}})
}

fn statuses(reply: &support::Reply) -> Vec<String> {
    reply.body["entry"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {}", reply.text))
        .iter()
        .map(|e| {
            e["response"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_updates_are_written_together_with_an_outcome_each() {
    for node in support::nodes().await {
        let b = node.backend;
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            put(json!({"resourceType": "Patient", "id": "bulk-1", "gender": "female"})),
            put(json!({"resourceType": "Patient", "id": "bulk-2", "gender": 42})),
            put(json!({"resourceType": "Patient", "id": "bulk-3", "birthDate": "1970-01-01"})),
            {"resource": {"resourceType": "Patient", "id": "other"}, "request": {"method": "PUT", "url": "Patient/bulk-4"}},
            {"resource": {"resourceType": "Organization", "name": "Created one by one"}, "request": {"method": "POST", "url": "Organization"}},
            {"request": {"method": "GET", "url": "Patient/bulk-1"}},
        ]});
        let first = node.post("", &batch).await;
        assert_eq!(first.status, 200, "[{b}] {}", first.text);
        let status = statuses(&first);
        assert_eq!(status[0], "201 Created", "[{b}] {}", first.text);
        assert!(
            status[1].starts_with("4"),
            "[{b}] invalid gender: {}",
            first.text
        );
        assert_eq!(status[2], "201 Created", "[{b}] {}", first.text);
        assert!(
            status[3].starts_with("400"),
            "[{b}] id mismatch: {}",
            first.text
        );
        assert_eq!(status[4], "201 Created", "[{b}] {}", first.text);
        assert_eq!(
            first.body["entry"][0]["resource"]["id"], "bulk-1",
            "[{b}] without return=minimal the stored resource comes back"
        );
        assert_eq!(first.body["entry"][0]["response"]["etag"], "W/\"1\"");
        assert_eq!(
            first.body["entry"][1]["response"]["outcome"]["resourceType"],
            "OperationOutcome"
        );
        assert_eq!(node.get("Patient/bulk-1").await.status, 200, "[{b}]");
        assert_eq!(node.get("Patient/bulk-2").await.status, 404, "[{b}]");
        assert_eq!(node.get("Patient/bulk-4").await.status, 404, "[{b}]");

        let again = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            put(json!({"resourceType": "Patient", "id": "bulk-1", "gender": "female"})),
            put(json!({"resourceType": "Patient", "id": "bulk-3", "birthDate": "1971-01-01"})),
            put(json!({"resourceType": "Patient", "id": "bulk-5"})),
            {"request": {"method": "GET", "url": "Patient/bulk-3"}},
        ]});
        let minimal = node
            .send(
                node.client
                    .post(node.url(""))
                    .header("content-type", "application/fhir+json")
                    .header("prefer", "return=minimal")
                    .body(again.to_string()),
            )
            .await;
        assert_eq!(
            statuses(&minimal),
            ["200 OK", "200 OK", "201 Created", "200 OK"],
            "[{b}] {}",
            minimal.text
        );
        let entries = minimal.body["entry"].as_array().unwrap();
        assert_eq!(entries[0]["response"]["etag"], "W/\"1\"", "[{b}] unchanged");
        assert_eq!(entries[1]["response"]["etag"], "W/\"2\"", "[{b}] updated");
        assert_eq!(
            entries[1]["response"]["location"], "Patient/bulk-3/_history/2",
            "[{b}]"
        );
        assert!(
            entries[..3].iter().all(|e| e.get("resource").is_none()),
            "[{b}] return=minimal: {}",
            minimal.text
        );
        assert_eq!(
            entries[3]["resource"]["id"], "bulk-3",
            "[{b}] a read keeps its resource"
        );
        let read = node.get("Patient/bulk-3").await;
        assert_eq!(read.body["birthDate"], "1971-01-01", "[{b}]");
        assert_eq!(read.body["meta"]["versionId"], "2", "[{b}]");
    }
}
