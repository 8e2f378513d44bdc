//! What an access layer narrows a search to must mean, in the store, exactly what its
//! policy means resource by resource: `within_compartments` keeps the resources of the named
//! Patients' compartments and of no other's, and `categorised_criteria` keeps exactly the
//! resources `categories_of` puts in a category. On SQLite and (with
//! `ZORGNET_TEST_POSTGRES_URL`) PostgreSQL; the categories also over the official R4 and
//! nl-core examples of the types whose category depends on content, when the shared test
//! data is there (`ZORGNET_REQUIRE_TESTDATA=1` makes its absence a failure).

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use zorgnet_fhir::categories::{categories_of, categorised_criteria};
use zorgnet_fhir::search::{MAX_PAGE_SIZE, SearchQuery, parse_search_query};
use zorgnet_store::Store;

mod support;

/// The types whose category depends on their content.
const CONTENT_CATEGORISED: [&str; 4] = [
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "Composition",
];

/// The example folders in the shared test data.
const EXAMPLE_FOLDERS: [&str; 2] = [
    "fhir-r4/examples",
    "nictiz-zib2020-nlcore-examples/examples",
];

fn testdata() -> Option<PathBuf> {
    let dir = std::env::var("ZORGNET_TESTDATA").map_or_else(
        |_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/testdata"
            ))
        },
        PathBuf::from,
    );
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("ZORGNET_REQUIRE_TESTDATA").as_deref() != Ok("1"),
        "the shared test data is missing at {}",
        dir.display()
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: the official examples (no shared test data at {}) ***\n",
        dir.display()
    );
    None
}

async fn import(store: &Store, resources: &[Value]) {
    let mut batch = store.import_batch();
    for resource in resources {
        batch.push(resource.clone()).unwrap();
    }
    store.import(batch).await.map_err(|f| f.error).unwrap();
}

/// Every id a search finds, over all its pages.
async fn all_ids(store: &Store, mut query: SearchQuery) -> BTreeSet<String> {
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

fn query(store: &Store, resource_type: &str, pairs: &[(String, String)]) -> SearchQuery {
    parse_search_query(store.registry(), Some(resource_type), pairs).unwrap()
}

fn reference(id: &str) -> Value {
    json!({"reference": format!("Patient/{id}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_compartments_keeps_the_named_patients_resources_and_no_one_elses() {
    let observation = |id: &str, subject: Option<&str>, performer: Option<&str>| {
        let mut resource = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"text": "weight"}});
        if let Some(subject) = subject {
            resource["subject"] = reference(subject);
        }
        if let Some(performer) = performer {
            resource["performer"] = json!([reference(performer)]);
        }
        resource
    };
    let resources = vec![
        json!({"resourceType": "Patient", "id": "x"}),
        json!({"resourceType": "Patient", "id": "x2"}),
        json!({"resourceType": "Patient", "id": "y"}),
        json!({"resourceType": "Patient", "id": "linked", "link": [{"other": reference("y"), "type": "seealso"}]}),
        observation("of-x", Some("x"), None),
        observation("of-x2", Some("x2"), None),
        observation("of-x-by-x2", Some("x"), Some("x2")),
        observation("of-x-by-y", Some("x"), Some("y")),
        observation("of-y", Some("y"), None),
        observation("of-no-one", None, None),
    ];
    for (store, _dir) in support::stores("narrowing").await {
        let backend = format!("{:?}", store.backend_kind());
        import(&store, &resources).await;
        let within = |patients: &[&str], resource_type: &str| {
            let mut query = query(&store, resource_type, &[]);
            query.within_compartments = Some(patients.iter().map(|p| p.to_string()).collect());
            query
        };
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            all_ids(&store, within(&["x"], "Observation")).await,
            ids(&["of-x"]),
            "{backend}"
        );
        assert_eq!(
            all_ids(&store, within(&["x", "x2"], "Observation")).await,
            ids(&["of-x", "of-x2", "of-x-by-x2"]),
            "{backend}"
        );
        assert_eq!(
            all_ids(&store, within(&["x", "x2"], "Patient")).await,
            ids(&["x", "x2"]),
            "{backend}"
        );
        assert_eq!(
            all_ids(&store, within(&["linked"], "Patient")).await,
            ids(&[]),
            "{backend}: a Patient linked to another is in that one's compartment too"
        );
        assert_eq!(
            all_ids(&store, within(&[], "Observation")).await,
            ids(&[]),
            "{backend}"
        );
        let mut counted = within(&["x"], "Observation");
        counted.count = 0;
        assert_eq!(
            store.search(counted).await.unwrap().total,
            Some(1),
            "{backend}"
        );
        let mut paged = within(&["x", "x2"], "Observation");
        paged.count = 1;
        let first = store.search(paged.clone()).await.unwrap();
        assert_eq!(first.total, Some(3), "{backend}");
        paged.cursor = first.next_cursor;
        let second = store.search(paged.clone()).await.unwrap();
        assert_eq!(second.matches.len(), 1, "{backend}");
        assert_ne!(second.matches[0].id, first.matches[0].id, "{backend}");
        paged.cursor = None;
        paged.without_total = true;
        let uncounted = store.search(paged).await.unwrap();
        assert_eq!(uncounted.total, None, "{backend}: _total=none");
        assert!(uncounted.next_cursor.is_some(), "{backend}");
    }
}

/// Resources of the content-categorised types, made to probe the edges: codes of other
/// systems or case, a category with text only, a LOINC code under another system.
fn made_examples() -> Vec<Value> {
    let coded = |code: &str, system: Option<&str>| {
        let mut coding = json!({"code": code});
        if let Some(system) = system {
            coding["system"] = json!(system);
        }
        json!({"coding": [coding]})
    };
    let mut out = Vec::new();
    let categories = [
        coded(
            "laboratory",
            Some("http://terminology.hl7.org/CodeSystem/observation-category"),
        ),
        coded("laboratory", None),
        coded("Laboratory", None),
        coded("vital-signs", Some("http://example.org/other")),
        coded("social-history", None),
        coded("imaging", None),
        coded("exam", None),
        json!({"text": "laboratory"}),
    ];
    for (i, category) in categories.iter().enumerate() {
        out.push(
            json!({"resourceType": "Observation", "id": format!("made-obs-{i}"),
            "status": "final", "code": {"text": "x"}, "category": [category]}),
        );
        out.push(
            json!({"resourceType": "Observation", "id": format!("made-obs-two-{i}"),
            "status": "final", "code": {"text": "x"}, "category": [coded("exam", None), category]}),
        );
    }
    out.push(
        json!({"resourceType": "Observation", "id": "made-obs-none", "status": "final",
        "code": {"text": "x"}}),
    );
    for (i, code) in ["LAB", "RAD", "lab", "OTH"].iter().enumerate() {
        out.push(json!({"resourceType": "DiagnosticReport", "id": format!("made-dr-{i}"),
            "status": "final", "code": {"text": "x"}, "category": [coded(code, Some("http://terminology.hl7.org/CodeSystem/v2-0074"))]}));
    }
    for (i, (code, system)) in [
        ("18842-5", "http://loinc.org"),
        ("34745-0", "http://loinc.org"),
        ("60591-5", "http://loinc.org"),
        ("18842-5", "http://example.org/not-loinc"),
        ("11488-4", "http://loinc.org"),
    ]
    .iter()
    .enumerate()
    {
        out.push(
            json!({"resourceType": "DocumentReference", "id": format!("made-doc-{i}"),
            "status": "current", "type": coded(code, Some(system)),
            "content": [{"attachment": {"contentType": "text/plain"}}]}),
        );
        out.push(
            json!({"resourceType": "Composition", "id": format!("made-comp-{i}"),
            "status": "final", "type": coded(code, Some(system)), "date": "2024-01-01",
            "author": [{"display": "x"}], "title": "x"}),
        );
    }
    out
}

/// The examples of the content-categorised types in the shared test data.
fn shared_examples() -> Vec<Value> {
    let Some(testdata) = testdata() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for folder in EXAMPLE_FOLDERS {
        let Ok(entries) = std::fs::read_dir(testdata.join(folder)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(resource) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let resource_type = resource["resourceType"].as_str().unwrap_or("");
            if CONTENT_CATEGORISED.contains(&resource_type) && resource["id"].is_string() {
                out.push(resource);
            }
        }
    }
    assert!(
        out.len() > 50,
        "only {} examples of the content-categorised types",
        out.len()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_categorised_criteria_find_exactly_what_categories_of_categorises() {
    let mut resources = made_examples();
    resources.extend(shared_examples());
    for (store, _dir) in support::stores("narrowing").await {
        let backend = format!("{:?}", store.backend_kind());
        import(&store, &resources).await;
        for resource_type in CONTENT_CATEGORISED {
            let criteria = categorised_criteria(resource_type).unwrap();
            assert!(!criteria.is_empty(), "{resource_type}");
            let found = all_ids(&store, query(&store, resource_type, &criteria)).await;
            let of_type: Vec<&Value> = resources
                .iter()
                .filter(|r| r["resourceType"] == resource_type)
                .collect();
            let categorised: BTreeSet<String> = of_type
                .iter()
                .filter(|r| !categories_of(r).is_empty())
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(found, categorised, "{backend}: {resource_type}");
            assert!(
                !categorised.is_empty() && categorised.len() < of_type.len(),
                "{backend}: {resource_type} examples should fall on both sides"
            );
        }
        for resource_type in ["Condition", "MedicationRequest", "ImagingStudy"] {
            assert_eq!(
                categorised_criteria(resource_type),
                Some(Vec::new()),
                "{resource_type}"
            );
        }
        assert_eq!(categorised_criteria("Organization"), None);
    }
}
