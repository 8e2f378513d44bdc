//! What an access layer narrows a search to must mean, in the store, exactly what its
//! policy means resource by resource: `within_compartments` keeps the resources of the named
//! Patients' compartments and of no other's, `within_categories` keeps exactly the resources
//! `access_categories_of` puts in at least one category and in none outside the set, and a
//! read by id carries the same facts of the resource. On SQLite and (with
//! `ZORGNET_TEST_POSTGRES_URL`) PostgreSQL; the categories also over the official R4 and
//! nl-core examples of the types whose category depends on content, when the shared test
//! data is there (`ZORGNET_REQUIRE_TESTDATA=1` makes its absence a failure).

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use zorgnet_fhir::categories::{CategorySet, DataCategory, access_categories_of};
use zorgnet_fhir::search::{MAX_PAGE_SIZE, SearchQuery, parse_search_query};
use zorgnet_store::{PolicyFacts, ReadOutcome, Store};

mod support;

/// The types whose category depends on their content.
const CONTENT_CATEGORISED: [&str; 4] = [
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "Composition",
];

/// The types whose examples are checked: those above, types of fixed categories, the
/// Patient (read as the patient summary) and types of no category.
const CHECKED_TYPES: [&str; 11] = [
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "Composition",
    "Patient",
    "AllergyIntolerance",
    "MedicationStatement",
    "Condition",
    "ImagingStudy",
    "Organization",
    "Practitioner",
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
    parse_search_query(&store.registry(), Some(resource_type), pairs).unwrap()
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
    out.extend([
        json!({"resourceType": "Patient", "id": "made-p1"}),
        json!({"resourceType": "Patient", "id": "made-p2",
            "link": [{"other": reference("made-p1"), "type": "seealso"}]}),
        json!({"resourceType": "Observation", "id": "made-obs-two-patients", "status": "final",
            "code": {"text": "x"}, "category": [coded("laboratory", None)],
            "subject": reference("made-p1"), "performer": [reference("made-p2")]}),
        json!({"resourceType": "AllergyIntolerance", "id": "made-allergy",
            "patient": reference("made-p1")}),
        json!({"resourceType": "Organization", "id": "made-org", "name": "x"}),
    ]);
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
            if CHECKED_TYPES.contains(&resource_type) && resource["id"].is_string() {
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

/// `resources` with each (type, id) once, the last of a kind winning as it does in the store.
fn last_of_each(resources: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<Value> = resources
        .into_iter()
        .rev()
        .filter(|r| seen.insert((r["resourceType"].to_string(), r["id"].to_string())))
        .collect();
    out.reverse();
    out
}

/// The category sets the searches are narrowed to: every one, each alone, all but each.
fn category_sets() -> Vec<CategorySet> {
    let all = CategorySet::of(DataCategory::ALL);
    let mut sets = vec![all, CategorySet::EMPTY];
    for category in DataCategory::ALL {
        sets.push(CategorySet::of([category]));
        sets.push(CategorySet::of([category]).complement());
    }
    sets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_categories_finds_exactly_what_the_policy_reads_as_of_those_categories() {
    let mut resources = made_examples();
    resources.extend(shared_examples());
    let resources = last_of_each(resources);
    for (store, _dir) in support::stores("narrowing").await {
        let backend = format!("{:?}", store.backend_kind());
        import(&store, &resources).await;
        for resource_type in CHECKED_TYPES {
            let of_type: Vec<&Value> = resources
                .iter()
                .filter(|r| r["resourceType"] == resource_type)
                .collect();
            for permitted in category_sets() {
                let mut narrowed = query(&store, resource_type, &[]);
                narrowed.within_categories = Some(permitted);
                let found = all_ids(&store, narrowed).await;
                let expected: BTreeSet<String> = of_type
                    .iter()
                    .filter(|r| {
                        let categories = access_categories_of(r);
                        !categories.is_empty() && categories.iter().all(|c| permitted.contains(c))
                    })
                    .map(|r| r["id"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(
                    found, expected,
                    "{backend}: {resource_type} within {permitted:?}"
                );
            }
        }
        for resource_type in CONTENT_CATEGORISED {
            let of_type = resources
                .iter()
                .filter(|r| r["resourceType"] == resource_type);
            let (categorised, not): (Vec<&Value>, Vec<&Value>) =
                of_type.partition(|r| !access_categories_of(r).is_empty());
            assert!(
                !categorised.is_empty() && !not.is_empty(),
                "{backend}: {resource_type} examples should fall on both sides"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_by_id_carries_the_resources_compartments_and_categories() {
    let mut resources = made_examples();
    resources.extend(shared_examples());
    let resources = last_of_each(resources);
    for (store, _dir) in support::stores("read_facts").await {
        let backend = format!("{:?}", store.backend_kind());
        import(&store, &resources).await;
        let mut in_several = 0;
        for resource in &resources {
            let (resource_type, id) = (
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap(),
            );
            let ReadOutcome::Found(stored) = store.read(resource_type, id).await.unwrap() else {
                panic!("{backend}: {resource_type}/{id} not found");
            };
            let patients = store.registry().patient_compartments(resource);
            in_several += usize::from(patients.len() > 1);
            assert_eq!(
                stored.policy,
                Some(PolicyFacts {
                    patients,
                    categories: access_categories_of(resource),
                }),
                "{backend}: {resource_type}/{id}"
            );
        }
        assert!(
            in_several > 0,
            "{backend}: no resource in several compartments"
        );
        let ReadOutcome::Found(old) = store.vread("Patient", "made-p1", 1).await.unwrap() else {
            panic!("{backend}: no Patient made-p1");
        };
        assert_eq!(
            old.policy, None,
            "{backend}: a version read carries no facts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_without_policy_facts_fills_them_in_when_it_opens() {
    let resources = last_of_each(made_examples());
    for (store, _dir) in support::stores("fill_facts").await {
        let backend = format!("{:?}", store.backend_kind());
        import(&store, &resources).await;
        store
            .write(zorgnet_store::WriteOp::Delete {
                resource_type: "Organization".into(),
                id: "made-org".into(),
            })
            .await
            .unwrap();
        let db = store.database().clone();
        let registry = (*store.registry()).clone();
        let reopened = tokio::task::spawn_blocking(move || {
            db.with_writer(|conn| {
                conn.execute(
                    "UPDATE resources SET compartment_size = NULL, sole_patient = NULL, \
                     categories = NULL",
                    &[],
                )?;
                conn.execute("DELETE FROM policy_facts", &[])
            })
            .unwrap();
            Store::open_in(db, registry).unwrap()
        })
        .await
        .unwrap();
        for resource in resources.iter().filter(|r| r["id"] != "made-org") {
            let (resource_type, id) = (
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap(),
            );
            let ReadOutcome::Found(stored) = reopened.read(resource_type, id).await.unwrap() else {
                panic!("{backend}: {resource_type}/{id} not found");
            };
            assert_eq!(
                stored.policy.map(|p| (p.patients, p.categories)),
                Some((
                    reopened.registry().patient_compartments(resource),
                    access_categories_of(resource)
                )),
                "{backend}: {resource_type}/{id}"
            );
        }
        let mut narrowed = query(&reopened, "Observation", &[]);
        narrowed.within_compartments = Some(vec!["made-p1".into(), "made-p2".into()]);
        narrowed.within_categories = Some(CategorySet::of([DataCategory::LabResults]));
        assert_eq!(
            all_ids(&reopened, narrowed).await,
            BTreeSet::from(["made-obs-two-patients".to_string()]),
            "{backend}"
        );
    }
}
