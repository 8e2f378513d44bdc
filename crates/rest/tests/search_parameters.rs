//! Search parameters as data, over HTTP on both backends: Nictiz' SearchParameters for
//! medication data (`../shared/testdata/nictiz-r4-medicationprocess-conformance/`) are
//! POSTed to a node holding data, `$reindex` shows them reindexing and then ready, searches
//! use them exactly (strict handling refuses them before), `_include` follows a custom
//! reference parameter, the CapabilityStatement lists them, and a deleted one is gone.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{Node, match_ids, nodes};

const REINDEX_DEADLINE: Duration = Duration::from_secs(60);
const CONFORMANCE: &str = "nictiz-r4-medicationprocess-conformance/SearchParameters";
const CATEGORY_SYSTEM: &str = "http://snomed.info/sct";
const NEXT_PRACTITIONER: &str =
    "http://nictiz.nl/fhir/StructureDefinition/ext-MedicationAgreement.NextPractitioner";
const TREATMENT: &str =
    "http://nictiz.nl/fhir/StructureDefinition/ext-PharmaceuticalTreatment.Identifier";

/// Nictiz' SearchParameter `name`, or `None` (announced) without the shared test data.
fn nictiz(name: &str) -> Option<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata")
        .join(CONFORMANCE)
        .join(format!("SearchParameter-{name}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap()),
        Err(_) => {
            if std::env::var("ZORGNET_REQUIRE_TESTDATA").is_ok_and(|v| v == "1") {
                panic!("{} is missing (ZORGNET_REQUIRE_TESTDATA=1)", path.display());
            }
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: Nictiz SearchParameters (no {}) ***\n",
                path.display()
            );
            None
        }
    }
}

fn dispense(code: &str, treatment: &str) -> Value {
    json!({
        "resourceType": "MedicationDispense",
        "status": "completed",
        "category": {"coding": [{"system": CATEGORY_SYSTEM, "code": code}]},
        "medicationCodeableConcept": {"text": "paracetamol"},
        "extension": [{"url": TREATMENT, "valueIdentifier": {"system": "urn:oid:2.16.840.1.113883.2.4.3.11.999.77.1.1", "value": treatment}}]
    })
}

async fn reindex_status(node: &Node) -> Vec<(String, String, String)> {
    let answer = node.get("$reindex").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["resourceType"], "Parameters");
    answer.body["parameter"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["name"] == "searchParameter")
        .map(|p| {
            let part = |name: &str| {
                p["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == name)
                    .map(|x| {
                        x.as_object()
                            .unwrap()
                            .iter()
                            .find(|(k, _)| k.starts_with("value"))
                            .unwrap()
                            .1
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .unwrap()
            };
            (part("resourceType"), part("code"), part("status"))
        })
        .collect()
}

async fn wait_until_ready(node: &Node) {
    let deadline = Instant::now() + REINDEX_DEADLINE;
    loop {
        let status = reindex_status(node).await;
        if status.iter().all(|(_, _, s)| s == "ready") {
            return;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn strict(node: &Node, path: &str) -> u16 {
    node.send(
        node.client
            .get(node.url(path))
            .header("prefer", "handling=strict"),
    )
    .await
    .status
}

#[tokio::test]
async fn nictiz_search_parameters_are_learnt_from_data() {
    let (Some(category), Some(next), Some(treatment)) = (
        nictiz("category"),
        nictiz("MedicationRequest-next-practitioner"),
        nictiz("pharmaceutical-treatment-identifier"),
    ) else {
        return;
    };
    for node in nodes().await {
        let b = node.backend;
        let dispensed = node.create(&dispense("422037009", "mbh-1")).await;
        let other = node.create(&dispense("373784005", "mbh-2")).await;
        let doctor = node
            .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Volgend"}]}))
            .await;
        let agreement = node
            .create(&json!({
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": "paracetamol"},
                "subject": {"reference": "Patient/p"},
                "extension": [{"url": NEXT_PRACTITIONER, "valueReference": {"reference": format!("Practitioner/{doctor}")}}]
            }))
            .await;
        let by_category = format!("MedicationDispense?category={CATEGORY_SYSTEM}|422037009");
        assert_eq!(
            strict(&node, &by_category).await,
            400,
            "[{b}] unknown before"
        );
        assert!(reindex_status(&node).await.is_empty());

        for parameter in [&category, &next, &treatment] {
            let id = parameter["id"].as_str().unwrap();
            let stored = node.put(&format!("SearchParameter/{id}"), parameter).await;
            assert!(
                stored.status == 201 || stored.status == 200,
                "[{b}] {}",
                stored.text
            );
        }
        let listed: BTreeSet<(String, String)> = reindex_status(&node)
            .await
            .into_iter()
            .map(|(t, c, _)| (t, c))
            .collect();
        for expected in [
            ("MedicationDispense", "category"),
            ("MedicationAdministration", "category"),
            ("MedicationRequest", "next-practitioner"),
            ("MedicationDispense", "pharmaceutical-treatment-identifier"),
            ("MedicationStatement", "pharmaceutical-treatment-identifier"),
        ] {
            assert!(
                listed.contains(&(expected.0.to_string(), expected.1.to_string())),
                "[{b}] {expected:?} in {listed:?}"
            );
        }
        wait_until_ready(&node).await;
        // A special parameter the node cannot evaluate is stored but said not to be used,
        // with the reason; `period-of-use` it evaluates as a date over the period of use,
        // a Period with one bound completed by its duration.
        if let (Some(latest), Some(period)) = (nictiz("is-latest-stop"), nictiz("period-of-use")) {
            node.put("SearchParameter/is-latest-stop", &latest).await;
            node.put("SearchParameter/period-of-use", &period).await;
            let answer = node.get("$reindex").await.body;
            let unused = answer["parameter"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "notUsed")
                .unwrap_or_else(|| panic!("[{b}] {answer}"));
            assert!(
                unused.to_string().contains("is-latest-stop"),
                "[{b}] {unused}"
            );
            assert!(unused.to_string().contains("special"), "[{b}] {unused}");
            let use_of = |start: &str, duration: Option<u32>| {
                let mut period = json!({"start": start});
                if let Some(days) = duration {
                    period["extension"] = json!([{
                        "url": "http://nictiz.nl/fhir/StructureDefinition/ext-TimeInterval.Duration",
                        "valueDuration": {"value": days, "unit": "dag", "system": "http://unitsofmeasure.org", "code": "d"}
                    }]);
                }
                json!({"resourceType": "MedicationStatement", "status": "active",
                    "medicationCodeableConcept": {"text": "paracetamol"},
                    "subject": {"reference": "Patient/p"}, "effectivePeriod": period})
            };
            let ten_days = node.create(&use_of("2025-01-01", Some(10))).await;
            let open_ended = node.create(&use_of("2025-01-01", None)).await;
            wait_until_ready(&node).await;
            let found = |query: &str| {
                let query = query.to_string();
                let node = &node;
                async move {
                    node.search_ids(&format!("MedicationStatement?period-of-use={query}"))
                        .await
                        .into_iter()
                        .collect::<BTreeSet<String>>()
                }
            };
            assert_eq!(
                found("ge2025-01-05").await,
                BTreeSet::from([ten_days.clone(), open_ended.clone()]),
                "[{b}]"
            );
            assert_eq!(
                found("ge2025-02-01").await,
                BTreeSet::from([open_ended.clone()]),
                "[{b}] the duration ends the period on 2025-01-11"
            );
            assert_eq!(found("lt2024-12-01").await, BTreeSet::new(), "[{b}]");
        }

        assert_eq!(strict(&node, &by_category).await, 200, "[{b}]");
        assert_eq!(
            node.search_ids(&by_category).await,
            vec![dispensed.clone()],
            "[{b}]"
        );
        assert_eq!(
            node.search_ids("MedicationDispense?pharmaceutical-treatment-identifier=mbh-2")
                .await,
            vec![other.clone()],
            "[{b}]"
        );
        let included = node
            .get("MedicationRequest?_include=MedicationRequest:next-practitioner")
            .await;
        assert_eq!(included.status, 200, "[{b}] {}", included.text);
        let ids: BTreeSet<String> = included.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
            .collect();
        assert!(
            ids.contains(&agreement) && ids.contains(&doctor),
            "[{b}] {ids:?}"
        );
        let metadata = node.get("metadata").await.body;
        let dispense_params: Vec<&Value> = metadata["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "MedicationDispense")
            .unwrap()["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "category")
            .collect();
        assert_eq!(dispense_params.len(), 1, "[{b}]");
        assert_eq!(
            dispense_params[0]["definition"],
            "http://nictiz.nl/fhir/SearchParameter/category"
        );

        // New data is found at once.
        let late = node.create(&dispense("422037009", "mbh-3")).await;
        let found: BTreeSet<String> = match_ids(&node.get(&by_category).await.body)
            .into_iter()
            .collect();
        assert_eq!(found, BTreeSet::from([dispensed.clone(), late]), "[{b}]");

        // Deleted: unknown again, and a POST of $reindex changes nothing.
        let id = category["id"].as_str().unwrap();
        assert_eq!(
            node.delete(&format!("SearchParameter/{id}")).await.status,
            204
        );
        assert_eq!(
            strict(&node, &by_category).await,
            400,
            "[{b}] unknown after"
        );
        let refreshed = node
            .post("$reindex", &json!({"resourceType": "Parameters"}))
            .await;
        assert_eq!(refreshed.status, 200, "[{b}] {}", refreshed.text);
        assert!(
            reindex_status(&node)
                .await
                .iter()
                .all(|(_, code, _)| code != "category"),
            "[{b}]"
        );
    }
}
