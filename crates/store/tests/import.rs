//! The bulk import path: new resources in bulk, existing ones as ordinary updates, the write
//! hook told about every change, on SQLite and (with `ZORGNET_TEST_POSTGRES_URL`) PostgreSQL.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use zorgnet_db::sql::Conn;
use zorgnet_fhir::categories::DataCategory;
use zorgnet_fhir::search::parse_search_query;
mod support;

use zorgnet_store::{Change, ImportOutcome, ReadOutcome, Store, StoreError, WriteHook, WriteOp};

#[derive(Default)]
struct Recorder(Mutex<Vec<Change>>);

impl WriteHook for Recorder {
    fn after_write(&self, _: &mut dyn Conn, changes: &[Change]) -> Result<(), StoreError> {
        self.0.lock().unwrap().extend_from_slice(changes);
        Ok(())
    }
}

fn patient(id: &str, bsn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}],
        "name": [{"family": "Jansen"}],
    })
}

fn observation(id: &str, patient: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
    })
}

async fn import(store: &Store, resources: Vec<Value>) -> Vec<ImportOutcome> {
    let mut batch = store.import_batch();
    for resource in resources {
        batch.push(resource).unwrap();
    }
    store.import(batch).await.map_err(|f| f.error).unwrap()
}

fn version(outcome: &ImportOutcome) -> (&'static str, i64) {
    match *outcome {
        ImportOutcome::Created => ("created", 1),
        ImportOutcome::Updated { version } => ("updated", version),
        ImportOutcome::Unchanged { version } => ("unchanged", version),
    }
}

async fn search(store: &Store, resource_type: &str, query: &str) -> Vec<String> {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let query = parse_search_query(&store.registry(), Some(resource_type), &pairs).unwrap();
    let result = store.search(query).await.unwrap();
    result.matches.into_iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_stores_new_resources_in_bulk_and_updates_the_rest() {
    for (store, _dir) in support::stores("import").await {
        let backend = format!("{:?}", store.backend_kind());
        let hook = Arc::new(Recorder::default());
        store.install_write_hook(hook.clone()).unwrap();

        let first = import(
            &store,
            vec![
                patient("p1", "999911120"),
                observation("o1", "p1", "2339-0"),
                observation("o2", "p1", "8310-5"),
            ],
        )
        .await;
        let first: Vec<_> = first.iter().map(version).collect();
        assert_eq!(first, vec![("created", 1); 3], "{backend}");
        assert_eq!(
            search(
                &store,
                "Observation",
                "patient=p1&code=http://loinc.org|2339-0"
            )
            .await,
            vec!["o1"],
            "{backend}"
        );
        assert_eq!(
            search(
                &store,
                "Patient",
                "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"
            )
            .await,
            vec!["p1"],
            "{backend}"
        );
        let changes = std::mem::take(&mut *hook.0.lock().unwrap());
        assert_eq!(changes.len(), 3, "{backend}");
        assert!(
            changes.iter().all(|c| c.patients == vec!["p1".to_string()]),
            "{backend}: {changes:?}"
        );

        // Again: unchanged resources keep their version; a changed one, a new one and a
        // resource twice in one batch are written in order.
        let again = import(
            &store,
            vec![
                patient("p1", "999911120"),
                observation("o1", "p2", "2339-0"),
                patient("p2", "999911132"),
                observation("o3", "p2", "8310-5"),
                observation("o3", "p2", "2339-0"),
            ],
        )
        .await;
        let again: Vec<_> = again.iter().map(version).collect();
        assert_eq!(
            again,
            vec![
                ("unchanged", 1),
                ("updated", 2),
                ("created", 1),
                ("created", 1),
                ("updated", 2)
            ],
            "{backend}"
        );
        assert!(
            search(&store, "Observation", "patient=p1")
                .await
                .contains(&"o2".to_string())
        );
        assert_eq!(
            search(
                &store,
                "Observation",
                "patient=p2&code=http://loinc.org|2339-0"
            )
            .await,
            vec!["o1", "o3"],
            "{backend}"
        );
        assert!(
            search(
                &store,
                "Observation",
                "code=http://loinc.org|8310-5&patient=p2"
            )
            .await
            .is_empty(),
            "{backend}"
        );
        let changes = std::mem::take(&mut *hook.0.lock().unwrap());
        let moved = changes.iter().find(|c| c.id == "o1").unwrap();
        assert_eq!(
            moved.patients,
            vec!["p1".to_string(), "p2".to_string()],
            "{backend}"
        );
        assert_eq!(changes.len(), 4, "{backend}: {changes:?}");
        match store.read("Observation", "o3").await.unwrap() {
            ReadOutcome::Found(o3) => assert_eq!(o3.version, 2, "{backend}"),
            other => panic!("{backend}: {other:?}"),
        }
        // The hook learns where a resource is now and its data categories, worked out
        // before the write, for the bulk path and the ordinary one alike.
        let now_at = |change: &Change| change.current.as_ref().map(|c| c.patients.clone());
        assert_eq!(now_at(moved), Some(vec!["p2".to_string()]), "{backend}");
        let fresh = changes.iter().find(|c| c.id == "o3").unwrap();
        assert_eq!(now_at(fresh), Some(vec!["p2".to_string()]), "{backend}");
        import(
            &store,
            vec![json!({
                "resourceType": "AllergyIntolerance", "id": "a1",
                "patient": {"reference": "Patient/p2"},
            })],
        )
        .await;
        store
            .write(WriteOp::Delete {
                resource_type: "Observation".into(),
                id: "o1".into(),
            })
            .await
            .unwrap();
        let changes = std::mem::take(&mut *hook.0.lock().unwrap());
        assert_eq!(
            changes[0].current.as_ref().map(|c| c.categories.clone()),
            Some(vec![DataCategory::PatientSummary, DataCategory::Allergies]),
            "{backend}"
        );
        assert_eq!(
            (changes[1].id.as_str(), &changes[1].current),
            ("o1", &None),
            "{backend}"
        );
        assert_eq!(changes[1].patients, vec!["p2".to_string()], "{backend}");
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .unwrap();
    }
}

/// The reference index rows of a resource, as (parameter code, target type, target id).
async fn reference_rows(store: &Store, resource_type: &str, id: &str) -> Vec<(String, String)> {
    let store = store.clone();
    let (resource_type, id) = (resource_type.to_string(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let mut b = zorgnet_db::sql::SqlBuilder::new(store.database().dialect());
        b.push("SELECT p.code, x.target_type FROM idx_reference x JOIN search_params p ON p.param_id = x.param_id JOIN resources r ON r.rid = x.rid WHERE r.res_type = ")
            .bind(resource_type.as_str())
            .push(" AND r.id = ")
            .bind(id.as_str())
            .push(" ORDER BY p.code");
        store
            .database()
            .with_reader(|conn| -> Result<_, StoreError> { Ok(conn.query(&b.sql, &b.params)?) })
            .unwrap()
            .into_iter()
            .map(|mut row| (row[0].take_text(), row[1].take_text()))
            .collect()
    })
    .await
    .unwrap()
}

/// `Observation.patient` repeats `subject` narrowed to Patients: an Observation writes its
/// subject once, by import and by an ordinary write alike, and is still found by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_that_repeats_another_writes_no_rows_of_its_own() {
    for (store, _dir) in support::stores("import").await {
        let backend = format!("{:?}", store.backend_kind());
        import(
            &store,
            vec![
                patient("p1", "999911120"),
                observation("o1", "p1", "2339-0"),
            ],
        )
        .await;
        store
            .write(WriteOp::Create {
                resource: observation("o2", "p1", "8310-5"),
                id: Some("o2".into()),
                if_none_exist: None,
            })
            .await
            .unwrap();
        for id in ["o1", "o2"] {
            assert_eq!(
                reference_rows(&store, "Observation", id).await,
                [("subject".to_string(), "Patient".to_string())],
                "{backend} {id}"
            );
        }
        for query in ["patient=p1", "subject=Patient/p1", "patient=Patient/p1"] {
            let mut found = search(&store, "Observation", query).await;
            found.sort();
            assert_eq!(found, ["o1", "o2"], "{backend} {query}");
        }
    }
}
