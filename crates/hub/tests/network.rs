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

/// `POST`s `body` as `content_type` to an operation's URL.
async fn invoke(url: &str, content_type: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn parameters(list: &[Value]) -> String {
    if list.is_empty() {
        // FHIR forbids empty arrays: no parameters is no `parameter`.
        return json!({"resourceType": "Parameters"}).to_string();
    }
    json!({"resourceType": "Parameters", "parameter": list}).to_string()
}

fn bsn_parameter() -> Value {
    json!({"name": "patient.identifier", "valueIdentifier":
        {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN}})
}

/// The medicines of a `$fetch` Bundle, sorted.
fn fetched_medicines(bundle: &Value) -> Vec<String> {
    let mut medicines: Vec<String> = bundle["entry"].as_array().unwrap()[1..]
        .iter()
        .map(|e| {
            e["resource"]["medicationCodeableConcept"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    medicines.sort();
    medicines
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
        let registered = reqwest::Client::new()
            .put(format!("{}/professionals/900000015", hub.base))
            .bearer_auth(&hub.admin_key)
            .json(&json!({"name": "Internist", "roles": [{"ura": HOSPITAL, "role": "01.015"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 201);
        let gp = node(&hub, GP, &gp_key, true).await;
        let pharmacy = node(&hub, PHARMACY, &pharmacy_key, true).await;
        let hospital = node(&hub, HOSPITAL, &hospital_key, true).await;
        support::relation(&hub, &hospital_key, BSN).await;
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

        // The same by POST: the parameters in a Parameters body, or split between the
        // query and the body; a category may repeat.
        let fhir_json = "application/fhir+json";
        let operation = |name: &str| format!("{}/${name}", hospital.base);
        for (url, body) in [
            (
                operation("localize"),
                parameters(&[
                    bsn_parameter(),
                    json!({"name": "category", "valueCode": "medication"}),
                ]),
            ),
            (
                format!("{}?category=medication", operation("localize")),
                parameters(&[bsn_parameter()]),
            ),
            (
                format!("{}?patient.identifier={BSN}", operation("localize")),
                parameters(&[
                    json!({"name": "category", "valueCode": "allergies"}),
                    json!({"name": "category", "valueCode": "medication"}),
                ]),
            ),
            (
                format!(
                    "{}?patient.identifier={BSN}&category=medication",
                    operation("localize")
                ),
                String::new(),
            ),
        ] {
            let (status, parameters) = invoke(&url, fhir_json, body.clone()).await;
            assert_eq!(status, 200, "{url} {body}: {parameters}");
            assert_eq!(sources(&parameters), found, "{url} {body}");
        }
        let (status, bundle) = invoke(
            &operation("fetch"),
            fhir_json,
            parameters(&[
                bsn_parameter(),
                json!({"name": "category", "valueCode": "medication"}),
                json!({"name": "uzi", "valueString": "900000015"}),
                json!({"name": "role", "valueCode": "01.015"}),
            ]),
        )
        .await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(
            fetched_medicines(&bundle),
            ["metformine 500 mg", "metformine 500 mg, 90 stuks"]
        );
        for (body, content_type, expected) in [
            (
                json!({"resourceType": "Patient"}).to_string(),
                fhir_json,
                400,
            ),
            (
                parameters(&[bsn_parameter(), bsn_parameter()]),
                fhir_json,
                400,
            ),
            (
                parameters(&[json!({"name": "patient.identifier", "valueString": "123456789"})]),
                fhir_json,
                400,
            ),
            (parameters(&[]), fhir_json, 400),
            (
                format!("patient.identifier={BSN}"),
                "application/x-www-form-urlencoded",
                415,
            ),
            // XML is read, but this is no FHIR document (no FHIR namespace).
            ("<Parameters/>".to_string(), "application/fhir+xml", 400),
            ("<Parameters/>".to_string(), "text/plain", 415),
        ] {
            for name in ["localize", "fetch"] {
                let (status, refused) = invoke(&operation(name), content_type, body.clone()).await;
                assert_eq!(status, expected, "${name} {body}: {refused}");
                assert_eq!(refused["resourceType"], "OperationOutcome", "{refused}");
            }
        }

        // In a network, the CapabilityStatement lists both operations.
        let (status, capability) = get(&format!("{}/metadata", hospital.base)).await;
        assert_eq!(status, 200);
        assert_eq!(
            capability["rest"][0]["operation"],
            json!([
                {"name": "localize", "definition": "http://zorgnet.nl/fhir/OperationDefinition/localize"},
                {"name": "fetch", "definition": "http://zorgnet.nl/fhir/OperationDefinition/fetch"},
                {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
            ])
        );

        let fetch = format!(
            "{}/$fetch?patient.identifier={BSN}&category=medication&uzi=900000015&role=01.015",
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

/// A Patient known by a sédula number and birth date (Caribbean Netherlands), with one
/// medication statement.
async fn sedula_patient_with_medication(base: &str, sedula: &str, medicine: &str) {
    let patient = post(
        base,
        json!({"resourceType": "Patient", "birthDate": SEDULA_BIRTH_DATE,
        "identifier": [{"system": "http://zorgnet.nl/fhir/NamingSystem/sedula", "value": sedula}]}),
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

const SEDULA: &str = "196104120123";
const SEDULA_OTHER: &str = "197002030456";
const SEDULA_BIRTH_DATE: &str = "1961-04-12";
const ZVN_SYSTEM: &str = "http://zorgnet.nl/fhir/NamingSystem/zvn";

#[tokio::test]
async fn a_person_without_a_bsn_is_localised_and_fetched_by_zorgverificatienummer() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Klinik Saba").await;
        let pharmacy_key = hub.organisation(PHARMACY, "Apotheek").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let registered = reqwest::Client::new()
            .put(format!("{}/professionals/900000015", hub.base))
            .bearer_auth(&hub.admin_key)
            .json(&json!({"name": "Internist", "roles": [{"ura": HOSPITAL, "role": "01.015"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 201);
        let gp = node(&hub, GP, &gp_key, true).await;
        let pharmacy = node(&hub, PHARMACY, &pharmacy_key, true).await;
        let hospital = node(&hub, HOSPITAL, &hospital_key, true).await;
        // The person at two organisations, and someone else (another sédula number, the
        // same birth date) at one of them.
        sedula_patient_with_medication(&gp.base, SEDULA, "metformine 500 mg").await;
        sedula_patient_with_medication(&pharmacy.base, SEDULA, "metformine 500 mg, 90 stuks").await;
        sedula_patient_with_medication(&gp.base, SEDULA_OTHER, "someone else's").await;

        let hospital_client = hub.client(&hospital_key);
        let answer = hospital_client
            .post(
                "/prs/zvn",
                &json!({"sedula": SEDULA, "birth_date": SEDULA_BIRTH_DATE}),
            )
            .await
            .unwrap();
        let zvn = answer["zvn"].as_str().unwrap().to_string();
        let person =
            zorgnet_pseudonym::PersonalId::Zvn(zorgnet_pseudonym::Zvn::parse(&zvn).unwrap());
        support::relate(&hospital_client, &person).await;
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

        let identifier = format!("{ZVN_SYSTEM}|{zvn}").replace('|', "%7C");
        let fetch = format!(
            "{}/$fetch?patient.identifier={identifier}&category=medication&uzi=900000015&role=01.015",
            hospital.base
        );
        let started = std::time::Instant::now();
        let bundle = loop {
            let (status, bundle) = get(&fetch).await;
            assert_eq!(status, 200, "{bundle}");
            if bundle["entry"].as_array().unwrap().len() == 3 {
                break bundle;
            }
            assert!(started.elapsed() < WAIT, "{}: still {bundle}", hub.backend);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            fetched_medicines(&bundle),
            ["metformine 500 mg", "metformine 500 mg, 90 stuks"],
            "the person's statements from both sources, nobody else's"
        );
        // Each entry names the resource's URL at its source.
        let mut urls: Vec<(String, String)> = bundle["entry"].as_array().unwrap()[1..]
            .iter()
            .map(|e| {
                let url = e["fullUrl"].as_str().unwrap();
                let resource = &e["resource"];
                let own = format!("/MedicationStatement/{}", resource["id"].as_str().unwrap());
                assert!(url.ends_with(&own), "{url}");
                (
                    url.strip_suffix(&own).unwrap().to_string(),
                    resource["medicationCodeableConcept"]["text"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        urls.sort();
        let mut expected = vec![
            (gp.base.clone(), "metformine 500 mg".to_string()),
            (
                pharmacy.base.clone(),
                "metformine 500 mg, 90 stuks".to_string(),
            ),
        ];
        expected.sort();
        assert_eq!(urls, expected);
        assert!(
            bundle["entry"][0]["resource"]["issue"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["severity"] == "information"),
            "{bundle}"
        );

        // A malformed number, or a number of nobody, asks no source for anything.
        for (asked, expected) in [
            (format!("{ZVN_SYSTEM}%7C123"), 400),
            (format!("http://example.org/other%7C{zvn}"), 400),
        ] {
            let (status, outcome) = get(&format!(
                "{}/$fetch?patient.identifier={asked}&category=medication",
                hospital.base
            ))
            .await;
            assert_eq!(status, expected, "{asked}: {outcome}");
            assert_eq!(outcome["resourceType"], "OperationOutcome");
        }
    }
}
