//! Localise and fetch: a hospital node asks the hub which organisations hold a patient's
//! medication, reaches them through its cached address book, and fetches from all of them
//! in parallel into one Bundle that says which sources answered.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::node;

const GP: &str = "00000011";
const PHARMACY: &str = "00000033";
const HOSPITAL: &str = "00000022";
const BSN: &str = "123456782";
const WAIT: Duration = Duration::from_secs(20);

async fn post(base: &str, resource: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/{}",
            resource["resourceType"].as_str().unwrap()
        ))
        .header("content-type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn patient_with_medication(base: &str, medicine: &str) {
    let patient = post(
        base,
        json!({"resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN}]}),
    )
    .await;
    post(
        base,
        json!({"resourceType": "MedicationStatement", "status": "active",
        "medicationCodeableConcept": {"text": medicine},
        "subject": {"reference": format!("Patient/{}", patient["id"].as_str().unwrap())}}),
    )
    .await;
}

fn sources(parameters: &Value) -> Vec<(String, String)> {
    parameters["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            let part = |name: &str| {
                source["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == name)
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            (
                part("organization")["valueIdentifier"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                part("endpoint")["valueUrl"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_node_localises_and_fetches_from_every_source_and_reports_the_silent_ones() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let pharmacy_key = hub.organisation(PHARMACY, "Apotheek").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let gp = node(&hub, GP, &gp_key, true).await;
        let pharmacy = node(&hub, PHARMACY, &pharmacy_key, true).await;
        let hospital = node(&hub, HOSPITAL, &hospital_key, true).await;
        patient_with_medication(&gp.base, "metformine 500 mg").await;
        patient_with_medication(&pharmacy.base, "metformine 500 mg, 90 stuks").await;

        let sync = reqwest::Client::new()
            .post(format!("{}/addressing/sync", hub.base))
            .bearer_auth(&hub.admin_key)
            .send()
            .await
            .unwrap();
        assert!(sync.status().is_success(), "{}", sync.text().await.unwrap());
        hospital
            .cache
            .as_ref()
            .unwrap()
            .sync(&hub.base, &hospital_key)
            .await
            .unwrap();

        let localize = format!(
            "{}/$localize?patient.identifier={BSN}&category=medication",
            hospital.base
        );
        let started = std::time::Instant::now();
        let found = loop {
            let (status, parameters) = get(&localize).await;
            assert_eq!(status, 200, "{parameters}");
            let found = sources(&parameters);
            if found.len() == 2 {
                break found;
            }
            assert!(started.elapsed() < WAIT, "{}: still {found:?}", hub.backend);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            found,
            vec![
                (GP.to_string(), gp.base.clone()),
                (PHARMACY.to_string(), pharmacy.base.clone())
            ]
        );

        let fetch = format!(
            "{}/$fetch?patient.identifier={BSN}&category=medication",
            hospital.base
        );
        let (status, bundle) = get(&fetch).await;
        assert_eq!(status, 200, "{bundle}");
        let entries = bundle["entry"].as_array().unwrap();
        let outcome = &entries[0]["resource"];
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(
            outcome["issue"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["severity"] == "information"),
            "{outcome}"
        );
        let medicines: Vec<&str> = entries[1..]
            .iter()
            .map(|e| {
                e["resource"]["medicationCodeableConcept"]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(medicines.len(), 2, "{bundle}");
        assert!(
            medicines.contains(&"metformine 500 mg")
                && medicines.contains(&"metformine 500 mg, 90 stuks")
        );

        pharmacy.stop();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, bundle) = get(&fetch).await;
        assert_eq!(status, 200);
        let issues = bundle["entry"][0]["resource"]["issue"]
            .as_array()
            .unwrap()
            .clone();
        let silent: Vec<&Value> = issues
            .iter()
            .filter(|i| i["severity"] == "warning")
            .collect();
        assert_eq!(silent.len(), 1, "{issues:?}");
        assert!(
            silent[0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(PHARMACY)
        );
        assert_eq!(
            bundle["entry"].as_array().unwrap().len(),
            2,
            "the GP's statement only"
        );

        let (status, refused) = get(&format!(
            "{}/$localize?patient.identifier=123456789",
            hospital.base
        ))
        .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["resourceType"], "OperationOutcome");
        let (status, _) = get(&format!(
            "{}/$localize?patient.identifier={BSN}&category=x-rays",
            hospital.base
        ))
        .await;
        assert_eq!(status, 400);
        drop(gp);
    }
}
