//! Search parameters as data, on both backends: a stored SearchParameter is reindexed over
//! the resources already stored (more than one batch of them) and is unknown to searches until
//! that is done; afterwards searches use it, new writes are indexed by it, a reopened store
//! keeps it without reindexing, a changed one is reindexed, a deleted one is gone with its
//! rows, and one whose code a built-in parameter takes is not used.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use zorgnet_fhir::search::{MAX_PAGE_SIZE, SearchQuery, parse_search_query};
use zorgnet_store::{REINDEX_BATCH_RESOURCES, Store, WriteOp};

/// How long a reindex of the test's resources may take.
const REINDEX_DEADLINE: Duration = Duration::from_secs(120);
const NEXT_PRACTITIONER: &str =
    "http://nictiz.nl/fhir/StructureDefinition/ext-MedicationAgreement.NextPractitioner";

fn category_parameter(expression: &str) -> Value {
    json!({
        "resourceType": "SearchParameter",
        "url": "http://nictiz.nl/fhir/SearchParameter/category",
        "name": "category",
        "status": "active",
        "code": "category",
        "base": ["MedicationDispense", "MedicationAdministration"],
        "type": "token",
        "expression": expression
    })
}

fn next_practitioner_parameter() -> Value {
    json!({
        "resourceType": "SearchParameter",
        "url": "http://nictiz.nl/fhir/SearchParameter/MedicationRequest-next-practitioner",
        "name": "next-practitioner",
        "status": "active",
        "code": "next-practitioner",
        "base": ["MedicationRequest"],
        "type": "reference",
        "expression": format!("MedicationRequest.extension('{NEXT_PRACTITIONER}').value")
    })
}

fn dispense(id: &str, category: &str) -> Value {
    json!({
        "resourceType": "MedicationDispense",
        "id": id,
        "status": "completed",
        "category": {"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.3.11.60.20.77.5.3", "code": category}]},
        "medicationCodeableConcept": {"text": "paracetamol"}
    })
}

fn request(id: &str, practitioner: &str) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": id,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "paracetamol"},
        "subject": {"reference": "Patient/p"},
        "extension": [{"url": NEXT_PRACTITIONER, "valueReference": {"reference": format!("Practitioner/{practitioner}")}}]
    })
}

fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap();
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The search, or the parameters it did not understand.
fn parse(store: &Store, resource_type: &str, query: &str) -> Result<SearchQuery, Vec<String>> {
    let parsed = parse_search_query(&store.registry(), Some(resource_type), &pairs(query)).unwrap();
    if parsed.unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(parsed.unknown)
    }
}

async fn ids(store: &Store, resource_type: &str, query: &str) -> BTreeSet<String> {
    let mut query = parse(store, resource_type, query).unwrap();
    query.count = MAX_PAGE_SIZE;
    let mut ids = BTreeSet::new();
    loop {
        let result = store.search(query.clone()).await.unwrap();
        ids.extend(result.matches.into_iter().map(|r| r.id));
        match result.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return ids,
        }
    }
}

async fn wait_until_ready(store: &Store) {
    let deadline = Instant::now() + REINDEX_DEADLINE;
    while store.reindex_status().iter().any(|s| !s.ready) {
        assert!(Instant::now() < deadline, "{:?}", store.reindex_status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create(store: &Store, resource: Value) -> String {
    match store
        .write(WriteOp::Create {
            resource,
            id: None,
            if_none_exist: None,
        })
        .await
        .unwrap()
    {
        zorgnet_store::WriteOutcome::Created(stored) => stored.id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_search_parameters_are_reindexed_used_and_removed() {
    for (store, dir) in support::stores("custom_params").await {
        let backend = store.backend_kind();
        let total = REINDEX_BATCH_RESOURCES * 2 + 7;
        let mut batch = store.import_batch();
        let mut second = BTreeSet::new();
        for i in 0..total {
            let code = if i % 3 == 0 { "2" } else { "1" };
            if code == "2" {
                second.insert(format!("md-{i}"));
            }
            batch.push(dispense(&format!("md-{i}"), code)).unwrap();
        }
        batch.push(request("mr-1", "doc-a")).unwrap();
        batch.push(request("mr-2", "doc-b")).unwrap();
        store.import(batch).await.map_err(|f| f.error).unwrap();
        assert_eq!(
            parse(&store, "MedicationDispense", "category=2").unwrap_err(),
            ["category"],
            "[{backend:?}] unknown before it is stored"
        );

        let category = create(
            &store,
            category_parameter("MedicationDispense.category | MedicationAdministration.category"),
        )
        .await;
        create(&store, next_practitioner_parameter()).await;
        // A built-in's code is never taken over.
        create(
            &store,
            json!({
                "resourceType": "SearchParameter", "url": "http://example.org/status",
                "name": "status", "status": "active", "code": "status",
                "base": ["MedicationDispense"], "type": "token",
                "expression": "MedicationDispense.category"
            }),
        )
        .await;
        let status = store.reindex_status();
        let listed: BTreeSet<(String, String)> = status
            .iter()
            .map(|s| (s.resource_type.clone(), s.code.clone()))
            .collect();
        assert_eq!(
            listed,
            BTreeSet::from([
                ("MedicationAdministration".into(), "category".into()),
                ("MedicationDispense".into(), "category".into()),
                ("MedicationRequest".into(), "next-practitioner".into()),
            ]),
            "[{backend:?}]"
        );
        wait_until_ready(&store).await;

        assert_eq!(
            ids(&store, "MedicationDispense", "category=2").await,
            second,
            "[{backend:?}] every stored resource was reindexed"
        );
        assert_eq!(
            ids(&store, "MedicationDispense", "status=2").await,
            BTreeSet::new(),
            "[{backend:?}] the built-in status is unchanged"
        );
        assert_eq!(
            ids(
                &store,
                "MedicationRequest",
                "next-practitioner=Practitioner/doc-a"
            )
            .await,
            BTreeSet::from(["mr-1".to_string()]),
            "[{backend:?}] an extension's reference"
        );
        // A write after the reindex is indexed by the parameter at once.
        let late = create(&store, dispense("ignored", "2")).await;
        assert!(
            ids(&store, "MedicationDispense", "category=2")
                .await
                .contains(&late)
        );

        // A changed definition is reindexed: now nothing matches (no such element).
        store
            .write(WriteOp::Update {
                id: category.clone(),
                resource: {
                    let mut changed = category_parameter("MedicationDispense.type");
                    changed["id"] = json!(category);
                    changed
                },
                if_match: None,
            })
            .await
            .unwrap();
        wait_until_ready(&store).await;
        assert_eq!(
            ids(&store, "MedicationDispense", "category=2").await,
            BTreeSet::new(),
            "[{backend:?}] the old rows are gone"
        );

        // Deleted: unknown again.
        store
            .write(WriteOp::Delete {
                resource_type: "SearchParameter".into(),
                id: category,
            })
            .await
            .unwrap();
        assert_eq!(
            parse(&store, "MedicationDispense", "category=2").unwrap_err(),
            ["category"]
        );
        assert!(
            store
                .reindex_status()
                .iter()
                .all(|s| s.code == "next-practitioner")
        );

        // A reopened store keeps what was reindexed, without reindexing it again.
        if let Some(dir) = dir {
            drop(store);
            let reopened = Store::open_sqlite(
                &dir.path().join("node.sqlite"),
                zorgnet_fhir::search::SearchRegistry::r4(),
            )
            .unwrap();
            assert!(reopened.reindex_status().iter().all(|s| s.ready));
            assert_eq!(
                ids(
                    &reopened,
                    "MedicationRequest",
                    "next-practitioner=Practitioner/doc-b"
                )
                .await,
                BTreeSet::from(["mr-2".to_string()])
            );
        }
    }
}
