//! FHIR decimals keep their precision: `1.50` is stored and served as `1.50`, not `1.5`
//! (R4 datatypes: "decimal … the precision of the decimal value has significance").

mod support;

use serde_json::json;
use support::nodes;

#[tokio::test]
async fn decimals_round_trip_with_their_precision() {
    for node in nodes().await {
        let b = node.backend;
        let observation = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "valueQuantity": {"value": 1.50, "unit": "mmol/L",
                              "system": "http://unitsofmeasure.org", "code": "mmol/L"}
        });
        // json! turns 1.50 into an f64; send the exact text a client would.
        let body = observation
            .to_string()
            .replace("\"value\":1.5,", "\"value\":1.50,");
        assert!(body.contains("\"value\":1.50,"), "{body}");
        let created = node
            .send(
                node.client
                    .post(node.url("Observation"))
                    .header("content-type", "application/fhir+json")
                    .body(body),
            )
            .await;
        assert_eq!(created.status, 201, "[{b}] {}", created.text);
        let id = created.body["id"].as_str().unwrap().to_string();

        let read = node.get(&format!("Observation/{id}")).await;
        assert_eq!(read.status, 200, "[{b}]");
        assert!(
            read.text.contains("\"value\":1.50"),
            "[{b}] precision lost: {}",
            read.text
        );

        let found = node.get("Observation?value-quantity=1.50").await;
        assert_eq!(found.status, 200, "[{b}] {}", found.text);
        assert_eq!(found.body["total"], 1, "[{b}] {}", found.text);
        let beside = node.get("Observation?value-quantity=1.6").await;
        assert_eq!(beside.body["total"], 0, "[{b}] {}", beside.text);
    }
}
