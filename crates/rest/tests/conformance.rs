//! The node's conformance suite: every test runs against a real server on port 0, once on
//! SQLite and once on PostgreSQL (when `ZORGNET_TEST_POSTGRES_URL` is set).

// Expected results are written as array literals, which reads better than slice::from_ref.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod support;

use serde_json::{Value, json};
use support::{Node, Reply, assert_outcome, match_ids, nodes};

const BSN: &str = "http://fhir.nl/fhir/NamingSystem/bsn";

fn patient(bsn: &str, family: &str, given: &str, birth_date: &str, gender: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": BSN, "value": bsn}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth_date,
        "gender": gender
    })
}

/// The URL of a Bundle's link with this relation (`next`, `previous`).
fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["url"].as_str().unwrap().to_string())
}

/// Follows a paging link; the page must be there.
async fn follow(node: &Node, url: String) -> Reply {
    let page = node.send(node.client.get(url)).await;
    assert_eq!(page.status, 200, "[{}] {}", node.backend, page.text);
    page
}

#[tokio::test]
async fn create_read_update_delete_history() {
    for node in nodes().await {
        let b = node.backend;
        let reply = node
            .post(
                "Patient",
                &patient("123456782", "Jansen", "Jan", "1970-01-01", "male"),
            )
            .await;
        assert_eq!(reply.status, 201, "[{b}] {}", reply.text);
        let id = reply.body["id"].as_str().unwrap().to_string();
        assert_eq!(reply.header("etag").as_deref(), Some("W/\"1\""), "[{b}]");
        assert!(
            reply
                .header("location")
                .unwrap()
                .ends_with(&format!("/Patient/{id}/_history/1")),
            "[{b}]"
        );
        assert_eq!(reply.body["meta"]["versionId"], "1");

        let read = node.get(&format!("Patient/{id}")).await;
        assert_eq!(read.status, 200, "[{b}]");
        assert_eq!(read.body["name"][0]["family"], "Jansen");
        assert!(
            read.header("content-type")
                .unwrap()
                .starts_with("application/fhir+json")
        );

        let mut changed = read.body.clone();
        changed["name"][0]["family"] = json!("Jansen-de Vries");
        let stale = node
            .send(
                node.client
                    .put(node.url(&format!("Patient/{id}")))
                    .header("if-match", "W/\"7\"")
                    .header("content-type", "application/fhir+json")
                    .body(changed.to_string()),
            )
            .await;
        assert_outcome(&stale, 412, &format!("[{b}] stale If-Match"));
        let updated = node
            .send(
                node.client
                    .put(node.url(&format!("Patient/{id}")))
                    .header("if-match", "W/\"1\"")
                    .header("content-type", "application/json")
                    .body(changed.to_string()),
            )
            .await;
        assert_eq!(updated.status, 200, "[{b}] {}", updated.text);
        assert_eq!(updated.body["meta"]["versionId"], "2");

        let unchanged = node.put(&format!("Patient/{id}"), &updated.body).await;
        assert_eq!(unchanged.status, 200);
        assert_eq!(
            unchanged.body["meta"]["versionId"], "2",
            "[{b}] identical content makes no new version"
        );

        let v1 = node.get(&format!("Patient/{id}/_history/1")).await;
        assert_eq!(v1.body["name"][0]["family"], "Jansen", "[{b}]");
        assert_outcome(
            &node.get(&format!("Patient/{id}/_history/9")).await,
            404,
            "missing version",
        );

        let minimal = node
            .send(
                node.client
                    .put(node.url(&format!("Patient/{id}")))
                    .header("prefer", "return=minimal")
                    .header("content-type", "application/fhir+json")
                    .body(
                        patient("123456782", "X", "Y", "1970", "male")
                            .to_string()
                            .replace("\"Patient\",", &format!("\"Patient\",\"id\":\"{id}\",")),
                    ),
            )
            .await;
        assert_eq!(minimal.status, 200, "[{b}] {}", minimal.text);
        assert!(minimal.text.is_empty(), "[{b}] return=minimal has no body");

        assert_eq!(node.delete(&format!("Patient/{id}")).await.status, 204);
        assert_outcome(
            &node.get(&format!("Patient/{id}")).await,
            410,
            "read after delete",
        );
        assert_eq!(
            node.delete(&format!("Patient/{id}")).await.status,
            204,
            "[{b}] delete is idempotent"
        );

        let history = node.get(&format!("Patient/{id}/_history")).await;
        assert_eq!(history.body["type"], "history");
        let methods: Vec<&str> = history.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["DELETE", "PUT", "PUT", "POST"], "[{b}]");
        assert!(history.body["entry"][0].get("resource").is_none());

        let recreated = node
            .put(
                &format!("Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id, "active": true}),
            )
            .await;
        assert_eq!(
            recreated.status, 201,
            "[{b}] update after delete recreates: {}",
            recreated.text
        );
        assert_eq!(recreated.body["meta"]["versionId"], "5");
    }
}

#[tokio::test]
async fn bad_input_gets_an_operation_outcome_and_stores_nothing() {
    for node in nodes().await {
        let b = node.backend;
        let send_raw = |content_type: &'static str, body: String| {
            node.client
                .post(node.url("Patient"))
                .header("content-type", content_type)
                .body(body)
        };
        assert_outcome(
            &node
                .send(send_raw(
                    "application/fhir+json",
                    "{\"resourceType\": \"Patient\",".into(),
                ))
                .await,
            400,
            "malformed JSON",
        );
        assert_outcome(
            &node
                .post("Patient", &json!({"resourceType": "Patient", "nmae": []}))
                .await,
            400,
            "unknown element",
        );
        assert_outcome(
            &node
                .post(
                    "Patient",
                    &json!({"resourceType": "Patient", "birthDate": "1970-13-45"}),
                )
                .await,
            422,
            "bad date",
        );
        assert_outcome(
            &node
                .post("Patient", &patient("123456789", "X", "Y", "1970", "male"))
                .await,
            422,
            "BSN fails the 11-check",
        );
        assert_outcome(
            &node
                .post(
                    "Observation",
                    &json!({"resourceType": "Observation", "status": "final"}),
                )
                .await,
            422,
            "missing required code",
        );
        assert_outcome(&node.post("Patient", &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})).await, 400, "type mismatch");
        assert_outcome(
            &node
                .post("Patientt", &json!({"resourceType": "Patientt"}))
                .await,
            404,
            "unknown type",
        );
        assert_outcome(
            &node
                .send(send_raw("application/fhir+xml", "<Patient/>".into()))
                .await,
            400,
            "XML outside the FHIR namespace",
        );
        assert_outcome(
            &node
                .send(send_raw("text/turtle", "<Patient/>".into()))
                .await,
            415,
            "Turtle",
        );
        assert_outcome(
            &node.send(node.client.patch(node.url("Patient/x"))).await,
            400,
            "PATCH without a patch document",
        );
        assert_outcome(&node.get("Patient/not%20an%20id").await, 400, "bad id");
        assert_outcome(
            &node.get("Patient?birthdate=yesterday").await,
            400,
            "bad search date",
        );
        assert_outcome(&node.get("Patient?_count=many").await, 400, "bad _count");
        let big = format!(
            "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
            "x".repeat(zorgnet_rest::REQUEST_BODY_LIMIT_BYTES + 10)
        );
        assert_outcome(
            &node.send(send_raw("application/fhir+json", big)).await,
            413,
            "too large",
        );
        let put_mismatch = node
            .put(
                "Patient/abc",
                &json!({"resourceType": "Patient", "id": "xyz"}),
            )
            .await;
        assert_outcome(&put_mismatch, 400, "id mismatch");
        assert_eq!(node.count("Patient").await, 0, "[{b}] nothing stored");
        assert_eq!(node.count("Observation").await, 0, "[{b}] nothing stored");
    }
}

#[tokio::test]
async fn search_parameters_of_every_type() {
    for node in nodes().await {
        let b = node.backend;
        let gp = node.create(&json!({"resourceType": "Organization", "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "87654321"}], "name": "Huisartsenpraktijk De Linde"})).await;
        let mut jan = patient(
            "123456782",
            "van den Berg",
            "Jóhanna",
            "1980-05-02",
            "female",
        );
        jan["generalPractitioner"] = json!([{"reference": format!("Organization/{gp}")}]);
        let jan = node.create(&jan).await;
        let piet = node
            .create(&patient(
                "111222333",
                "Bakker",
                "Piet",
                "1955-11-30",
                "male",
            ))
            .await;

        assert_eq!(
            node.search_ids(&format!("Patient?identifier={BSN}|123456782"))
                .await,
            [jan.clone()],
            "[{b}] BSN"
        );
        assert_eq!(
            node.search_ids("Patient?identifier=111222333").await,
            [piet.clone()],
            "[{b}] code only"
        );
        assert_eq!(
            node.search_ids("Patient?family=van%20den").await,
            [jan.clone()],
            "[{b}] prefix"
        );
        assert_eq!(
            node.search_ids("Patient?given=johanna").await,
            [jan.clone()],
            "[{b}] accents"
        );
        assert!(
            node.search_ids("Patient?family:exact=van%20den")
                .await
                .is_empty(),
            "[{b}] exact"
        );
        assert_eq!(
            node.search_ids("Patient?family:contains=akke").await,
            [piet.clone()],
            "[{b}] contains"
        );
        assert_eq!(
            node.search_ids("Patient?birthdate=1980-05").await,
            [jan.clone()],
            "[{b}] partial date"
        );
        assert_eq!(
            node.search_ids("Patient?birthdate=lt1960").await,
            [piet.clone()],
            "[{b}] lt"
        );
        assert_eq!(
            node.search_ids("Patient?birthdate=ge1960&birthdate=le1990")
                .await,
            [jan.clone()],
            "[{b}] AND"
        );
        let mut both = node.search_ids("Patient?gender=male,female").await;
        both.sort();
        let mut expected = vec![jan.clone(), piet.clone()];
        expected.sort();
        assert_eq!(both, expected, "[{b}] OR");
        let male = node.search_ids("Patient?gender=male").await;
        assert_eq!(male.len(), 1, "[{b}] one male patient");
        assert_eq!(
            node.search_ids("Patient?gender=http://hl7.org/fhir/administrative-gender|male")
                .await,
            male,
            "[{b}] a code's bound system"
        );
        assert!(
            node.search_ids("Patient?gender=http://example.org/other|male")
                .await
                .is_empty(),
            "[{b}] another system"
        );
        assert_eq!(
            node.search_ids(&format!("Patient?general-practitioner=Organization/{gp}"))
                .await,
            [jan.clone()],
            "[{b}] reference"
        );
        assert_eq!(
            node.search_ids(&format!("Patient?_id={piet}")).await,
            [piet.clone()],
            "[{b}] _id"
        );
        assert_eq!(
            node.search_ids("Organization?name=huisarts").await,
            [gp.clone()],
            "[{b}] org name"
        );

        let glucose = |value: f64, patient: &str, date: &str| {
            json!({"resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "effectiveDateTime": date,
                "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}})
        };
        let o1 = node
            .create(&glucose(5.4, &jan, "2024-01-10T08:00:00+01:00"))
            .await;
        let o2 = node
            .create(&glucose(9.1, &jan, "2025-03-01T08:00:00+01:00"))
            .await;
        let o3 = node
            .create(&glucose(6.0, &piet, "2025-03-01T08:00:00+01:00"))
            .await;
        assert_eq!(
            node.search_ids(&format!(
                "Observation?patient={jan}&code=http://loinc.org|2339-0&_sort=date"
            ))
            .await,
            [o1.clone(), o2.clone()],
            "[{b}]"
        );
        assert_eq!(
            node.search_ids(&format!("Observation?subject=Patient/{jan}&_sort=-date"))
                .await,
            [o2.clone(), o1.clone()],
            "[{b}] sort desc"
        );
        assert_eq!(
            node.search_ids("Observation?value-quantity=gt9").await,
            [o2.clone()],
            "[{b}] quantity"
        );
        assert_eq!(
            node.search_ids("Observation?value-quantity=6.0|http://unitsofmeasure.org|mmol/L")
                .await,
            [o3.clone()],
            "[{b}] quantity with unit"
        );
        assert_eq!(
            node.search_ids("Observation?date=2024").await,
            [o1.clone()],
            "[{b}] date year"
        );
        assert_eq!(
            node.search_ids("Observation?category=laboratory&_count=1")
                .await
                .len(),
            1,
            "[{b}] _count"
        );
        assert_eq!(
            node.count("Observation?category=laboratory").await,
            3,
            "[{b}]"
        );
        assert_eq!(
            node.search_ids(&format!("Observation?patient.identifier={BSN}|111222333"))
                .await,
            [o3.clone()],
            "[{b}] chain"
        );
        assert_eq!(
            node.search_ids("Observation?patient.family=van")
                .await
                .len(),
            2,
            "[{b}] chain string"
        );
        // Each of a chain's target types is walked (subject may point at a Patient, a Group,
        // a Device or a Location), other criteria still narrow what the chain drives, a chain
        // on the target's id (no index table to start from) is walked, and a chain that picks
        // no target finds nothing.
        assert_eq!(
            node.search_ids(&format!("Observation?subject.identifier={BSN}|111222333"))
                .await,
            [o3.clone()],
            "[{b}] chain over several target types"
        );
        assert_eq!(
            node.search_ids(&format!(
                "Observation?patient.identifier={BSN}|111222333&value-quantity=gt9"
            ))
            .await,
            Vec::<String>::new(),
            "[{b}] chain and another criterion"
        );
        assert_eq!(
            node.search_ids(&format!("Observation?patient._id={jan}&_sort=date"))
                .await,
            [o1.clone(), o2.clone()],
            "[{b}] chain on a target's id"
        );
        assert!(
            node.search_ids(&format!("Observation?patient.identifier={BSN}|999999990"))
                .await
                .is_empty(),
            "[{b}] chain to no target"
        );
        // Reverse chaining, one level: the Patients an Observation matching the criterion
        // refers to (through `patient` or `subject`), also with other criteria and with a
        // chained criterion on the Observation.
        let mut glucose_patients = node
            .search_ids("Patient?_has:Observation:patient:code=http://loinc.org|2339-0")
            .await;
        glucose_patients.sort();
        let mut both = vec![jan.clone(), piet.clone()];
        both.sort();
        assert_eq!(glucose_patients, both, "[{b}] _has");
        assert_eq!(
            node.search_ids("Patient?_has:Observation:subject:value-quantity=gt9")
                .await,
            [jan.clone()],
            "[{b}] _has on a value"
        );
        assert_eq!(
            node.search_ids("Patient?gender=male&_has:Observation:patient:value-quantity=gt5")
                .await,
            [piet.clone()],
            "[{b}] _has and another criterion"
        );
        assert_eq!(
            node.search_ids(&format!(
                "Patient?_has:Observation:patient:patient.identifier={BSN}|111222333"
            ))
            .await,
            [piet.clone()],
            "[{b}] _has with a chained criterion"
        );
        assert_eq!(
            node.search_ids(&format!("Patient?_has:Observation:patient:_id={o2}"))
                .await,
            [jan.clone()],
            "[{b}] _has on the referring resource's id"
        );
        assert!(
            node.search_ids("Patient?_has:Observation:patient:value-quantity=gt100")
                .await
                .is_empty(),
            "[{b}] _has that matches nothing"
        );
        for bad in [
            "Patient?_has:Observation:patient",
            "Patient?_has:Nothing:patient:code=x",
            "Patient?_has:Observation:code:code=x",
            "Patient?_has:Observation:specimen:code=x",
            "Patient?_has:Observation:patient:no-such=x",
            "Patient?_has:Observation:patient:_has:Observation:patient:code=x",
        ] {
            assert_outcome(&node.get(bad).await, 400, bad);
        }
        assert_eq!(
            node.search_ids("Patient?gender:not=male").await,
            [jan.clone()],
            "[{b}] :not"
        );
        assert_eq!(
            node.search_ids("Patient?general-practitioner:missing=true")
                .await,
            [piet.clone()],
            "[{b}] :missing"
        );

        let included = node.get(&format!("Observation?_id={o1}&_include=Observation:patient&_include:iterate=Patient:general-practitioner")).await;
        let types: Vec<&str> = included.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["Observation", "Patient", "Organization"],
            "[{b}] include + iterate"
        );
        assert_eq!(included.body["entry"][1]["search"]["mode"], "include");
        let revincluded = node
            .get(&format!(
                "Patient?_id={piet}&_revinclude=Observation:subject"
            ))
            .await;
        assert_eq!(
            revincluded.body["entry"].as_array().unwrap().len(),
            2,
            "[{b}] revinclude: {}",
            revincluded.text
        );

        let elements = node
            .get(&format!("Patient?_id={jan}&_elements=birthDate"))
            .await;
        let resource = &elements.body["entry"][0]["resource"];
        assert_eq!(resource["birthDate"], "1980-05-02");
        assert!(resource.get("name").is_none(), "[{b}] _elements");
        assert_eq!(resource["meta"]["tag"][0]["code"], "SUBSETTED");

        let post = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("identifier={BSN}%7C123456782")),
            )
            .await;
        assert_eq!(match_ids(&post.body), [jan.clone()], "[{b}] POST _search");

        let lenient = node.get("Patient?foo=bar").await;
        assert_eq!(lenient.status, 200);
        let outcome = lenient.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome")
            .expect("outcome entry");
        assert!(
            outcome["resource"]["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("foo")
        );
        // The outcome entry names its resource, as Bundle rules want of every entry.
        let outcome_id = outcome["resource"]["id"].as_str().expect("an id");
        assert_eq!(
            outcome["fullUrl"].as_str(),
            Some(format!("urn:uuid:{outcome_id}").as_str()),
            "[{b}]"
        );
        let strict = node
            .send(
                node.client
                    .get(node.url("Patient?foo=bar"))
                    .header("prefer", "handling=strict"),
            )
            .await;
        assert_outcome(&strict, 400, "strict handling");
        // An _include of a parameter the node does not know (or that is no reference) is
        // reported like an unknown parameter, never silently dropped.
        let lenient = node
            .get("Patient?_include=Patient:no-such-reference&_revinclude=Observation:code")
            .await;
        assert_eq!(lenient.status, 200, "[{b}]");
        let diagnostics = lenient.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome")
            .expect("outcome entry")["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            diagnostics.contains("_include=Patient:no-such-reference")
                && diagnostics.contains("_revinclude=Observation:code"),
            "[{b}] {diagnostics}"
        );
        let strict = node
            .send(
                node.client
                    .get(node.url("Patient?_include=Patient:no-such-reference"))
                    .header("prefer", "handling=strict"),
            )
            .await;
        assert_outcome(&strict, 400, "strict handling of an unknown _include");
        assert_eq!(
            node.search_ids(&format!("Patient?identifier={BSN}|123456782&_format=json"))
                .await,
            [jan],
            "[{b}] _format"
        );
    }
}

#[tokio::test]
async fn paging_neither_repeats_nor_skips_under_concurrent_writes() {
    for node in nodes().await {
        let b = node.backend;
        let mut created = Vec::new();
        for i in 0..25 {
            created.push(
                node.create(
                    &json!({"resourceType": "Patient", "name": [{"family": format!("Pager{i}")}]}),
                )
                .await,
            );
        }
        let mut seen = Vec::new();
        let mut page = node.get("Patient?family=pager&_count=10").await;
        assert_eq!(page.body["total"], 25);
        let mut round = 0;
        loop {
            seen.extend(match_ids(&page.body));
            // Between pages: update one already seen, delete nothing, create a new one.
            let first = seen[0].clone();
            node.put(&format!("Patient/{first}"), &json!({"resourceType": "Patient", "id": first, "name": [{"family": format!("Pager-updated-{round}")}]})).await;
            node.create(&json!({"resourceType": "Patient", "name": [{"family": format!("Pagerlate{round}")}]})).await;
            round += 1;
            let Some(next) = link(&page.body, "next") else {
                break;
            };
            page = follow(&node, next).await;
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "[{b}] no repeats");
        for id in &created {
            assert!(seen.contains(id), "[{b}] {id} skipped");
        }

        // Back from the last page (created[20..] and the newcomers): the two full pages
        // before it, whatever was written meanwhile.
        let mut back = Vec::new();
        while let Some(previous) = link(&page.body, "previous") {
            page = follow(&node, previous).await;
            let mut ids = match_ids(&page.body);
            ids.reverse();
            back.extend(ids);
        }
        back.reverse();
        assert_eq!(back, created[..20], "[{b}] walking back");
    }
}

/// Sorted paging goes from the row a page ended at, not from a position: a resource
/// created between pages that sorts before the cursor does not push the last row seen onto
/// the next page (offset paging would repeat it), and `previous` links walk back the same
/// way. Ties (equal birth dates) and resources without the sort value (sorted last) are
/// crossed by page boundaries.
#[tokio::test]
async fn sorted_paging_follows_next_and_previous_under_concurrent_writes() {
    for node in nodes().await {
        let b = node.backend;
        let mut originals = Vec::new();
        for i in 0..23 {
            let mut patient =
                json!({"resourceType": "Patient", "name": [{"family": format!("Sorter{i:02}")}]});
            if i % 7 != 3 {
                patient["birthDate"] = json!(format!("19{:02}-05-01", 50 + i % 6));
            }
            let id = node.create(&patient).await;
            originals.push((
                patient["birthDate"].as_str().map(str::to_string),
                format!("Sorter{i:02}"),
                id,
            ));
        }
        // _sort=birthdate,-family: by birth date, those without one last; ties by family name,
        // descending.
        originals.sort_by(|x, y| match (&x.0, &y.0) {
            (Some(a), Some(c)) => a.cmp(c).then_with(|| y.1.cmp(&x.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => y.1.cmp(&x.1),
        });
        let expected: Vec<String> = originals.iter().map(|o| o.2.clone()).collect();

        let mut page = node
            .get("Patient?family=sorter&_sort=birthdate,-family&_count=4")
            .await;
        assert_eq!(page.status, 200, "[{b}] {}", page.text);
        assert_eq!(page.body["total"], 23, "[{b}]");
        assert_eq!(
            link(&page.body, "previous"),
            None,
            "[{b}] the first page has no previous"
        );
        let mut forward = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            forward.extend(match_ids(&page.body));
            // Between pages: a newcomer sorting first, and a change to one already seen.
            node.create(
                &json!({"resourceType": "Patient", "birthDate": "1901-01-01",
                "name": [{"family": format!("Sorterearly{pages}")}]}),
            )
            .await;
            let seen = forward[0].clone();
            let mut changed = node.get(&format!("Patient/{seen}")).await.body;
            changed["gender"] = json!("unknown");
            assert_eq!(
                node.put(&format!("Patient/{seen}"), &changed).await.status,
                200
            );
            let Some(next) = link(&page.body, "next") else {
                break;
            };
            page = follow(&node, next).await;
            assert!(
                link(&page.body, "previous").is_some(),
                "[{b}] a later page links back"
            );
        }
        assert_eq!(pages, 6, "[{b}] 23 results in pages of 4");
        assert_eq!(
            forward, expected,
            "[{b}] every original once, in sort order"
        );

        let mut backward = Vec::new();
        loop {
            let mut ids = match_ids(&page.body);
            ids.reverse();
            backward.extend(ids);
            let Some(previous) = link(&page.body, "previous") else {
                break;
            };
            page = follow(&node, previous).await;
            assert!(
                link(&page.body, "next").is_some(),
                "[{b}] a previous page links on"
            );
        }
        backward.reverse();
        let early: Vec<&String> = backward
            .iter()
            .filter(|id| !expected.contains(id))
            .collect();
        assert_eq!(
            early.len(),
            6,
            "[{b}] walking back reaches the newcomers that sort first"
        );
        let originals_back: Vec<String> = backward
            .iter()
            .filter(|id| expected.contains(id))
            .cloned()
            .collect();
        assert_eq!(
            originals_back, expected,
            "[{b}] back to the start, nothing repeated or lost"
        );

        let stale = node
            .get("Patient?family=sorter&_sort=birthdate&_cursor=nWzVd")
            .await;
        assert_outcome(&stale, 400, &format!("[{b}] a cursor of another _sort"));
        let garbage = node.get("Patient?family=sorter&_cursor=n!!!").await;
        assert_outcome(&garbage, 400, &format!("[{b}] a malformed cursor"));
    }
}

#[tokio::test]
async fn transactions_are_all_or_nothing_and_resolve_references() {
    for node in nodes().await {
        let b = node.backend;
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": patient("123456782", "Visser", "Anna", "1990-01-01", "female"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier={BSN}|123456782")}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
             "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Organization", "id": "org-1", "name": "Apotheek"}, "request": {"method": "PUT", "url": "Organization/org-1"}},
            {"request": {"method": "GET", "url": "Organization/org-1"}}
        ]});
        let reply = node.post("", &bundle).await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        assert_eq!(reply.body["type"], "transaction-response");
        let entries = reply.body["entry"].as_array().unwrap();
        assert_eq!(entries[0]["response"]["status"], "201 Created");
        let patient_id = entries[0]["resource"]["id"].as_str().unwrap().to_string();
        assert_eq!(
            entries[1]["resource"]["subject"]["reference"],
            format!("Patient/{patient_id}"),
            "[{b}] urn:uuid resolved"
        );
        assert_eq!(
            entries[3]["resource"]["name"], "Apotheek",
            "[{b}] GET sees the transaction's own write"
        );

        let again = node.post("", &bundle).await;
        assert_eq!(
            again.body["entry"][0]["resource"]["id"],
            patient_id.as_str(),
            "[{b}] ifNoneExist found the patient"
        );
        assert_eq!(
            again.body["entry"][1]["resource"]["subject"]["reference"],
            format!("Patient/{patient_id}"),
            "[{b}] a reference to a conditional create that matched points at the match"
        );
        assert_eq!(
            node.count("Patient").await,
            1,
            "[{b}] conditional create made no duplicate"
        );

        // Two identical conditional creates in one transaction make one resource.
        let condition = format!("identifier={BSN}|999911120");
        let twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0d3c6c1e-5d0a-4a44-9d0e-6f1f4b7c2a01", "resource": patient("999911120", "Bakker", "Piet", "1980-05-05", "male"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}},
            {"fullUrl": "urn:uuid:0d3c6c1e-5d0a-4a44-9d0e-6f1f4b7c2a02", "resource": patient("999911120", "Bakker", "Piet", "1980-05-05", "male"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "length"},
             "subject": {"reference": "urn:uuid:0d3c6c1e-5d0a-4a44-9d0e-6f1f4b7c2a02"}}, "request": {"method": "POST", "url": "Observation"}}
        ]});
        let reply = node.post("", &twice).await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        let entries = reply.body["entry"].as_array().unwrap();
        assert_eq!(entries[0]["response"]["status"], "201 Created", "[{b}]");
        assert_eq!(entries[1]["response"]["status"], "200 OK", "[{b}]");
        let piet = entries[0]["resource"]["id"].as_str().unwrap();
        assert_eq!(entries[1]["resource"]["id"], piet, "[{b}] {}", reply.text);
        assert_eq!(
            entries[2]["resource"]["subject"]["reference"],
            format!("Patient/{piet}"),
            "[{b}] a reference to the second create points at the one patient"
        );
        assert_eq!(node.count("Patient").await, 2, "[{b}] one patient, not two");

        let conditional_reference = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "paracetamol"},
             "subject": {"reference": format!("Patient?identifier={BSN}|123456782")}}, "request": {"method": "POST", "url": "MedicationStatement"}}
        ]});
        let reply = node.post("", &conditional_reference).await;
        assert_eq!(
            reply.body["entry"][0]["resource"]["subject"]["reference"],
            format!("Patient/{patient_id}"),
            "[{b}] {}",
            reply.text
        );

        let before = node.count("Observation").await;
        let failing = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "ok"}}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation", "status": "final"}, "request": {"method": "POST", "url": "Observation"}}
        ]});
        let reply = node.post("", &failing).await;
        assert_outcome(
            &reply,
            422,
            &format!("[{b}] invalid entry fails the transaction"),
        );
        assert!(
            reply.text.contains("Bundle.entry[1]"),
            "[{b}] {}",
            reply.text
        );
        assert_eq!(
            node.count("Observation").await,
            before,
            "[{b}] nothing stored"
        );

        let conflict = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Organization", "id": "org-2", "name": "New"}, "request": {"method": "PUT", "url": "Organization/org-2"}},
            {"resource": {"resourceType": "Organization", "id": "org-1", "name": "Stale"}, "request": {"method": "PUT", "url": "Organization/org-1", "ifMatch": "W/\"9\""}}
        ]});
        assert_outcome(
            &node.post("", &conflict).await,
            412,
            &format!("[{b}] version conflict"),
        );
        assert_outcome(&node.get("Organization/org-2").await, 404, "rolled back");

        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Organization", "name": "Batch ok"}, "request": {"method": "POST", "url": "Organization"}},
            {"resource": {"resourceType": "Organization", "nam": "Batch bad"}, "request": {"method": "POST", "url": "Organization"}},
            {"request": {"method": "GET", "url": "Organization/does-not-exist"}}
        ]});
        let reply = node.post("", &batch).await;
        assert_eq!(reply.body["type"], "batch-response");
        assert_eq!(
            reply.body["entry"][0]["response"]["status"], "201 Created",
            "[{b}]"
        );
        assert!(
            reply.body["entry"][1]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("400"),
            "[{b}]"
        );
        assert!(
            reply.body["entry"][2]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("404"),
            "[{b}]"
        );
        assert_outcome(
            &node
                .post("", &json!({"resourceType": "Bundle", "type": "collection"}))
                .await,
            400,
            "collection",
        );
    }
}

#[tokio::test]
async fn conditional_create_with_if_none_exist() {
    for node in nodes().await {
        let b = node.backend;
        let condition = format!("identifier={BSN}|111222333");
        let send = || {
            node.client
                .post(node.url("Patient"))
                .header("content-type", "application/fhir+json")
                .header("if-none-exist", condition.clone())
                .body(patient("111222333", "Smit", "Els", "2001-02-03", "female").to_string())
        };
        let first = node.send(send()).await;
        assert_eq!(first.status, 201, "[{b}] {}", first.text);
        let second = node.send(send()).await;
        assert_eq!(second.status, 200, "[{b}]");
        assert_eq!(second.body["id"], first.body["id"]);
        node.create(&patient("111222333", "Smit", "Els", "2001-02-03", "female"))
            .await;
        assert_outcome(&node.send(send()).await, 412, &format!("[{b}] two matches"));
    }
}

/// `PUT` and `DELETE` on `url` with an optional `If-Match`.
async fn put_with(
    node: &support::Node,
    url: &str,
    body: &Value,
    if_match: Option<&str>,
) -> support::Reply {
    let mut request = node
        .client
        .put(node.url(url))
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    if let Some(version) = if_match {
        request = request.header("if-match", version);
    }
    node.send(request).await
}

#[tokio::test]
async fn conditional_update_creates_updates_or_refuses() {
    for node in nodes().await {
        let b = node.backend;
        let url = format!("Patient?identifier={BSN}|222333443");
        let created = node
            .put(
                &url,
                &patient("222333443", "Bakker", "Jan", "1970-05-06", "male"),
            )
            .await;
        assert_eq!(
            created.status, 201,
            "[{b}] no match creates: {}",
            created.text
        );
        let id = created.body["id"].as_str().unwrap().to_string();
        assert!(created.header("location").is_some(), "[{b}] Location");

        let updated = node
            .put(
                &url,
                &patient("222333443", "Bakker-de Vries", "Jan", "1970-05-06", "male"),
            )
            .await;
        assert_eq!(
            updated.status, 200,
            "[{b}] one match updates: {}",
            updated.text
        );
        assert_eq!(updated.body["id"], id.as_str(), "[{b}]");
        assert_eq!(updated.body["meta"]["versionId"], "2", "[{b}]");
        assert_eq!(node.count("Patient").await, 1, "[{b}] no second patient");

        let mut with_own_id = patient("222333443", "Bakker", "Jan", "1970-05-06", "male");
        with_own_id["id"] = json!(id);
        let reply = node.put(&url, &with_own_id).await;
        assert_eq!(
            reply.status, 200,
            "[{b}] the match's own id: {}",
            reply.text
        );
        with_own_id["id"] = json!("someone-else");
        assert_outcome(
            &node.put(&url, &with_own_id).await,
            400,
            &format!("[{b}] an id other than the match's"),
        );

        let stale = put_with(
            &node,
            &url,
            &patient("222333443", "Stale", "Jan", "1970-05-06", "male"),
            Some("W/\"1\""),
        )
        .await;
        assert_outcome(&stale, 412, &format!("[{b}] If-Match on the match"));
        let fresh = put_with(
            &node,
            &url,
            &patient("222333443", "Fresh", "Jan", "1970-05-06", "male"),
            Some("W/\"3\""),
        )
        .await;
        assert_eq!(fresh.status, 200, "[{b}] If-Match current: {}", fresh.text);
        assert_eq!(fresh.body["name"][0]["family"], "Fresh", "[{b}]");

        let mut named = patient("333444553", "Mulder", "Sanne", "1985-07-08", "female");
        named["id"] = json!("cond-own-id");
        let reply = node
            .put(&format!("Patient?identifier={BSN}|333444553"), &named)
            .await;
        assert_eq!(
            reply.status, 201,
            "[{b}] no match with an id: {}",
            reply.text
        );
        assert_eq!(
            reply.body["id"], "cond-own-id",
            "[{b}] created with its own id"
        );

        node.create(&patient("222333443", "Dubbel", "Jan", "1970-05-06", "male"))
            .await;
        assert_outcome(
            &node
                .put(
                    &url,
                    &patient("222333443", "Bakker", "Jan", "1970-05-06", "male"),
                )
                .await,
            412,
            &format!("[{b}] two matches"),
        );
        assert_eq!(
            node.search_ids(&format!("Patient?identifier={BSN}|222333443&family=Bakker"))
                .await
                .len(),
            0,
            "[{b}] nothing updated on 412"
        );
    }
}

#[tokio::test]
async fn conditional_delete_of_none_one_or_many() {
    for node in nodes().await {
        let b = node.backend;
        let keep = node
            .create(&patient(
                "444555663",
                "Jansen",
                "Piet",
                "1960-01-02",
                "male",
            ))
            .await;
        let none = node
            .delete(&format!("Patient?identifier={BSN}|999999990"))
            .await;
        assert_eq!(none.status, 204, "[{b}] no match: {}", none.text);
        assert_eq!(node.count("Patient").await, 1, "[{b}] nothing deleted");

        let gone = node
            .create(&patient(
                "555666773",
                "de Boer",
                "Eva",
                "1995-03-04",
                "female",
            ))
            .await;
        let one = node
            .delete(&format!("Patient?identifier={BSN}|555666773"))
            .await;
        assert_eq!(one.status, 204, "[{b}] one match: {}", one.text);
        assert_eq!(one.header("etag").as_deref(), Some("W/\"2\""), "[{b}]");
        assert_outcome(
            &node.get(&format!("Patient/{gone}")).await,
            410,
            &format!("[{b}] deleted"),
        );

        node.create(&patient(
            "444555663",
            "Jansen",
            "Piet",
            "1960-01-02",
            "male",
        ))
        .await;
        assert_outcome(
            &node
                .delete(&format!("Patient?identifier={BSN}|444555663"))
                .await,
            412,
            &format!("[{b}] two matches"),
        );
        assert_eq!(
            node.get(&format!("Patient/{keep}")).await.status,
            200,
            "[{b}] both kept"
        );
        assert_eq!(node.count("Patient").await, 2, "[{b}] both kept");
    }
}

#[tokio::test]
async fn a_bad_condition_is_400_and_changes_nothing() {
    for node in nodes().await {
        let b = node.backend;
        node.create(&patient(
            "666777883",
            "Vos",
            "Lotte",
            "1999-09-09",
            "female",
        ))
        .await;
        let body = patient("666777883", "Vos", "Lotte", "1999-09-09", "female");
        for url in [
            "Patient?",
            "Patient",
            "Patient?nonsense=1",
            "Patient?_count=1",
            "Patient?birthdate=yesterday",
        ] {
            assert_outcome(
                &node.put(url, &body).await,
                400,
                &format!("[{b}] PUT {url}"),
            );
            assert_outcome(&node.delete(url).await, 400, &format!("[{b}] DELETE {url}"));
        }
        let unknown = node
            .send(
                node.client
                    .post(node.url("Patient"))
                    .header("content-type", "application/fhir+json")
                    .header("if-none-exist", "nonsense=1")
                    .body(body.to_string()),
            )
            .await;
        assert_outcome(
            &unknown,
            400,
            &format!("[{b}] If-None-Exist with an unknown parameter"),
        );
        let in_bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Organization", "name": "Not stored"}, "request": {"method": "POST", "url": "Organization"}},
            {"resource": body, "request": {"method": "PUT", "url": "Patient?nonsense=1"}}
        ]});
        assert_outcome(
            &node.post("", &in_bundle).await,
            400,
            &format!("[{b}] in a transaction"),
        );
        assert_eq!(
            node.count("Patient").await,
            1,
            "[{b}] nothing stored or deleted"
        );
        assert_eq!(node.count("Organization").await, 0, "[{b}] nothing stored");
    }
}

#[tokio::test]
async fn conditional_update_and_delete_in_bundles() {
    for node in nodes().await {
        let b = node.backend;
        let existing = node
            .create(&patient(
                "777888993",
                "Smits",
                "Noor",
                "1980-10-11",
                "female",
            ))
            .await;
        let doomed = node
            .create(&patient("888999008", "Weg", "Bram", "1950-12-13", "male"))
            .await;
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b0c1e6a-1f7e-4d7f-9a53-5b1c1c2e1a01",
             "resource": patient("777888993", "Smits-Updated", "Noor", "1980-10-11", "female"),
             "request": {"method": "PUT", "url": format!("Patient?identifier={BSN}|777888993")}},
            {"fullUrl": "urn:uuid:0b0c1e6a-1f7e-4d7f-9a53-5b1c1c2e1a02",
             "resource": patient("123123124", "Nieuw", "Fenna", "2010-01-01", "female"),
             "request": {"method": "PUT", "url": format!("Patient?identifier={BSN}|123123124")}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "length"},
              "subject": {"reference": "urn:uuid:0b0c1e6a-1f7e-4d7f-9a53-5b1c1c2e1a01"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
              "subject": {"reference": "urn:uuid:0b0c1e6a-1f7e-4d7f-9a53-5b1c1c2e1a02"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": format!("Patient?identifier={BSN}|888999008")}}
        ]});
        let reply = node.post("", &bundle).await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        let entries = reply.body["entry"].as_array().unwrap();
        assert_eq!(entries[0]["response"]["status"], "200 OK", "[{b}] updated");
        assert_eq!(
            entries[0]["resource"]["id"],
            existing.as_str(),
            "[{b}] the match"
        );
        assert_eq!(
            entries[1]["response"]["status"], "201 Created",
            "[{b}] created"
        );
        let created = entries[1]["resource"]["id"].as_str().unwrap();
        assert_eq!(
            entries[2]["resource"]["subject"]["reference"],
            format!("Patient/{existing}"),
            "[{b}] a reference to a conditional update points at its match"
        );
        assert_eq!(
            entries[3]["resource"]["subject"]["reference"],
            format!("Patient/{created}"),
            "[{b}] a reference to a conditional update that created"
        );
        assert_eq!(entries[4]["response"]["status"], "204 No Content", "[{b}]");
        assert_outcome(
            &node.get(&format!("Patient/{doomed}")).await,
            410,
            &format!("[{b}] deleted"),
        );
        assert_eq!(
            node.search_ids(&format!("Observation?subject=Patient/{existing}"))
                .await
                .len(),
            1,
            "[{b}] indexed with the rewritten reference"
        );

        node.create(&patient(
            "777888993",
            "Smits",
            "Tweede",
            "1980-10-11",
            "female",
        ))
        .await;
        let (patients, observations) =
            (node.count("Patient").await, node.count("Observation").await);
        let ambiguous = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "not stored"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": format!("Patient?identifier={BSN}|123123124")}},
            {"resource": patient("777888993", "Smits", "Noor", "1980-10-11", "female"),
             "request": {"method": "PUT", "url": format!("Patient?identifier={BSN}|777888993")}}
        ]});
        assert_outcome(
            &node.post("", &ambiguous).await,
            412,
            &format!("[{b}] two matches fail the transaction"),
        );
        assert_eq!(
            node.count("Patient").await,
            patients,
            "[{b}] nothing deleted"
        );
        assert_eq!(
            node.count("Observation").await,
            observations,
            "[{b}] nothing stored"
        );

        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient("777888993", "Smits", "Noor", "1980-10-11", "female"),
             "request": {"method": "PUT", "url": format!("Patient?identifier={BSN}|777888993")}},
            {"resource": patient("321321327", "Batch", "Kim", "2000-02-02", "female"),
             "request": {"method": "PUT", "url": format!("Patient?identifier={BSN}|321321327")}},
            {"request": {"method": "DELETE", "url": format!("Patient?identifier={BSN}|123123124")}}
        ]});
        let reply = node.post("", &batch).await;
        let status = |i: usize| {
            reply.body["entry"][i]["response"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        assert!(status(0).starts_with("412"), "[{b}] {}", reply.text);
        assert_eq!(status(1), "201 Created", "[{b}] {}", reply.text);
        assert_eq!(status(2), "204 No Content", "[{b}] {}", reply.text);
        assert_eq!(
            node.search_ids(&format!("Patient?identifier={BSN}|123123124"))
                .await
                .len(),
            0,
            "[{b}] deleted in the batch"
        );
    }
}

/// Conditional creates fired at once, as transaction Bundles and as plain creates; `nodes` may
/// be two processes' worth of nodes on one database. Returns how many matching Patients exist.
async fn race_conditional_creates(nodes: &[&support::Node], bsn: &str) -> i64 {
    const CONCURRENT_CREATES: usize = 20;
    let condition = format!("identifier={BSN}|{bsn}");
    let requests = (0..CONCURRENT_CREATES).map(|i| {
        let node = nodes[i % nodes.len()];
        let body = patient(bsn, "Race", "Rosa", "2002-02-02", "female");
        if i % 2 == 0 {
            node.client
                .post(node.base.clone())
                .header("content-type", "application/fhir+json")
                .body(
                    json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"resource": body, "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}}
                    ]})
                    .to_string(),
                )
        } else {
            node.client
                .post(node.url("Patient"))
                .header("content-type", "application/fhir+json")
                .header("if-none-exist", condition.clone())
                .body(body.to_string())
        }
    });
    let mut replies = tokio::task::JoinSet::new();
    for request in requests {
        replies.spawn(async move {
            let reply = request.send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        });
    }
    while let Some(reply) = replies.join_next().await {
        let (status, text) = reply.unwrap();
        assert!(
            matches!(status, 200 | 201),
            "[{}] {status} {text}",
            nodes[0].backend
        );
    }
    nodes[0].count(&format!("Patient?{condition}")).await
}

#[tokio::test]
async fn concurrent_conditional_creates_make_one_resource() {
    for node in nodes().await {
        assert_eq!(
            race_conditional_creates(&[&node], "135792460").await,
            1,
            "[{}] exactly one created",
            node.backend
        );
    }
    if let Some((first, second)) = support::postgres_pair().await {
        assert_eq!(
            race_conditional_creates(&[&first, &second], "135792460").await,
            1,
            "[postgres] two nodes on one database: exactly one created"
        );
    }
}

/// Parameters that repeat others (`Observation.patient` is `subject` narrowed to Patients,
/// `combo-code` is `code` and `component-code`, `Encounter.practitioner` is `participant`
/// narrowed to Practitioners) search, sort, include and test `:missing` exactly as their own
/// definitions say, though they read the rows of the parameters they repeat.
#[tokio::test]
async fn parameters_that_repeat_others_find_what_their_definitions_say() {
    for node in nodes().await {
        let b = node.backend;
        let patient = node
            .create(&patient(
                "123456782",
                "Visser",
                "Eva",
                "1980-02-02",
                "female",
            ))
            .await;
        let group = node
            .create(&json!({"resourceType": "Group", "type": "person", "actual": true}))
            .await;
        let loinc = |code: &str| json!({"coding": [{"system": "http://loinc.org", "code": code}]});
        let observation = |subject: String, code: &str, component: &str| {
            json!({"resourceType": "Observation", "status": "final", "code": loinc(code),
                "subject": {"reference": subject},
                "component": [{"code": loinc(component), "valueQuantity": {"value": 1}}]})
        };
        let of_patient = node
            .create(&observation(
                format!("Patient/{patient}"),
                "85354-9",
                "8480-6",
            ))
            .await;
        let of_group = node
            .create(&observation(format!("Group/{group}"), "8480-6", "8462-4"))
            .await;
        let doctor = node
            .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Smit"}]}))
            .await;
        let relative = node
            .create(&json!({"resourceType": "RelatedPerson", "patient": {"reference": format!("Patient/{patient}")}}))
            .await;
        let encounter = |individual: String| {
            json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "participant": [{"individual": {"reference": individual}}]})
        };
        let with_doctor = node
            .create(&encounter(format!("Practitioner/{doctor}")))
            .await;
        let with_relative = node
            .create(&encounter(format!("RelatedPerson/{relative}")))
            .await;
        let mut both = vec![of_patient.clone(), of_group.clone()];
        both.sort();
        let none = Vec::new();
        let expectations = [
            (
                format!("Observation?patient={patient}"),
                vec![of_patient.clone()],
            ),
            // A Group subject is no patient.
            (format!("Observation?patient={group}"), none.clone()),
            (
                format!("Observation?subject={group}"),
                vec![of_group.clone()],
            ),
            (
                "Observation?patient:missing=true".into(),
                vec![of_group.clone()],
            ),
            (
                "Observation?patient:missing=false".into(),
                vec![of_patient.clone()],
            ),
            // The code of one, the component code of the other.
            (
                "Observation?combo-code=http://loinc.org|8480-6&_sort=_id".into(),
                both,
            ),
            (
                "Observation?combo-code=8462-4".into(),
                vec![of_group.clone()],
            ),
            ("Observation?code=8462-4".into(), none.clone()),
            (
                format!("Observation?patient.identifier={BSN}|123456782"),
                vec![of_patient.clone()],
            ),
            (
                format!("Encounter?practitioner={doctor}"),
                vec![with_doctor],
            ),
            // A RelatedPerson is no practitioner.
            (format!("Encounter?practitioner={relative}"), none),
            (
                format!("Encounter?participant={relative}"),
                vec![with_relative],
            ),
        ];
        for (query, expected) in expectations {
            assert_eq!(node.search_ids(&query).await, expected, "[{b}] {query}");
        }
        let included = node
            .get(&format!(
                "Observation?_id={of_patient},{of_group}&_include=Observation:patient"
            ))
            .await;
        let included: Vec<&str> = included.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| e["resource"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(included, [patient.as_str()], "[{b}] _include:patient");
        for (target, expected) in [
            (format!("Group?_id={group}"), 0),
            (format!("Patient?_id={patient}"), 1),
        ] {
            let reply = node
                .get(&format!("{target}&_revinclude=Observation:patient"))
                .await;
            let revincluded = reply.body["entry"].as_array().map_or(0, |e| {
                e.iter()
                    .filter(|e| e["search"]["mode"] == "include")
                    .count()
            });
            assert_eq!(
                revincluded, expected,
                "[{b}] _revinclude:patient of {target}"
            );
        }
    }
}

#[tokio::test]
async fn history_at_every_level_with_since_and_paging() {
    for node in nodes().await {
        let b = node.backend;
        for i in 0..5 {
            node.create(&json!({"resourceType": "Organization", "name": format!("Org {i}")}))
                .await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let marker = zorgnet_fhir::datetime::format_instant(zorgnet_store::now_ms());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let late = node.create(&json!({"resourceType": "Endpoint", "status": "active", "connectionType": {"code": "hl7-fhir-rest"}, "payloadType": [{"text": "FHIR"}], "address": "https://x.example/fhir"})).await;
        let since = node
            .get(&format!("_history?_since={}", marker.replace('+', "%2B")))
            .await;
        let ids: Vec<&str> = since.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [late.as_str()], "[{b}] system _since");
        assert_eq!(
            node.get("Organization/_history").await.body["entry"]
                .as_array()
                .unwrap()
                .len(),
            5,
            "[{b}] type level"
        );
        assert_outcome(
            &node.get("_history?_since=notadate").await,
            400,
            "bad _since",
        );
        assert_outcome(
            &node.get("Organization/_history?_cursor=x12").await,
            400,
            "bad history cursor",
        );
    }
}

/// The ids of a page's resources, in the Bundle's order.
fn entry_ids(page: &Reply) -> Vec<String> {
    page.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// Pages from `page` through its `relation` links to the end: the ids of every page in
/// turn, and the last page.
async fn walk(node: &Node, mut page: Reply, relation: &str) -> (Vec<Vec<String>>, Reply) {
    let mut pages = vec![entry_ids(&page)];
    while let Some(url) = link(&page.body, relation) {
        page = follow(node, url).await;
        pages.push(entry_ids(&page));
    }
    (pages, page)
}

#[tokio::test]
async fn history_pages_run_both_ways_and_stay_put_under_writes() {
    for node in nodes().await {
        let b = node.backend;
        let mut created = Vec::new();
        for i in 0..5 {
            created.push(
                node.create(&json!({"resourceType": "Location", "name": format!("Room {i}")}))
                    .await,
            );
        }
        let newest_first: Vec<String> = created.iter().rev().cloned().collect();
        let first = node.get("Location/_history?_count=2").await;
        assert_eq!(link(&first.body, "previous"), None, "[{b}] first page");
        // A write after the first page: newer than everything paged, so onwards it is not
        // seen and nothing shifts; going back, it is the newest page.
        let late = node
            .create(&json!({"resourceType": "Location", "name": "Late room"}))
            .await;
        let (forward, last) = walk(&node, first, "next").await;
        assert_eq!(
            forward.concat(),
            newest_first,
            "[{b}] onwards, newest first"
        );
        assert_eq!(forward.len(), 3, "[{b}] pages of two");
        let (mut back, _) = walk(&node, last, "previous").await;
        back.reverse();
        let mut expected = vec![late];
        expected.extend(newest_first);
        assert_eq!(back.concat(), expected, "[{b}] back, with the late write");
    }
}

/// Ids of a page's entries in one search mode, sorted.
fn ids_in_mode(page: &Reply, mode: &str) -> Vec<String> {
    let mut ids: Vec<String> = page.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `$everything` also brings what the patient's resources refer to outside the compartment
/// (the GP, the organisation, the medication), once, as `include` entries of the page that
/// refers to them, filtered by `_type`.
#[tokio::test]
async fn patient_everything_brings_what_its_resources_refer_to() {
    for node in nodes().await {
        let b = node.backend;
        let doctor = node
            .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Bakker"}]}))
            .await;
        let practice = node
            .create(&json!({"resourceType": "Organization", "name": "Praktijk Bakker"}))
            .await;
        let medication = node
            .create(&json!({"resourceType": "Medication", "code": {"text": "metformine 500 mg"}}))
            .await;
        node.create(&json!({"resourceType": "Practitioner", "name": [{"family": "Niemand"}]}))
            .await;
        let mut person = patient("123456782", "Dekker", "Sara", "1960-06-06", "female");
        person["generalPractitioner"] = json!([{"reference": format!("Practitioner/{doctor}")}]);
        person["managingOrganization"] = json!({"reference": format!("Organization/{practice}")});
        let p = node.create(&person).await;
        let subject = json!({"reference": format!("Patient/{p}")});
        let encounter = node
            .create(&json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": subject, "serviceProvider": {"reference": format!("Organization/{practice}")}}))
            .await;
        let condition = node
            .create(&json!({"resourceType": "Condition", "subject": subject,
                "encounter": {"reference": format!("Encounter/{encounter}")},
                "asserter": {"reference": format!("Practitioner/{doctor}")}}))
            .await;
        let request = node
            .create(&json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "subject": subject, "medicationReference": {"reference": format!("Medication/{medication}")}}))
            .await;
        let sorted = |mut ids: Vec<String>| {
            ids.sort();
            ids
        };

        let everything = node.get(&format!("Patient/{p}/$everything")).await;
        assert_eq!(
            ids_in_mode(&everything, "match"),
            sorted(vec![p.clone(), encounter, condition.clone(), request]),
            "[{b}] the compartment"
        );
        assert_eq!(
            ids_in_mode(&everything, "include"),
            sorted(vec![doctor.clone(), practice.clone(), medication]),
            "[{b}] what it refers to, once, and not the unreferenced practitioner"
        );

        let typed = node
            .get(&format!(
                "Patient/{p}/$everything?_type=Condition,Practitioner"
            ))
            .await;
        assert_eq!(ids_in_mode(&typed, "match"), [condition], "[{b}] _type");
        assert_eq!(
            ids_in_mode(&typed, "include"),
            [doctor.clone()],
            "[{b}] _type filters what is referred to"
        );

        let first = node.get(&format!("Patient/{p}/$everything?_count=1")).await;
        assert_eq!(ids_in_mode(&first, "match"), [p.clone()], "[{b}]");
        assert_eq!(
            ids_in_mode(&first, "include"),
            sorted(vec![doctor, practice]),
            "[{b}] a page brings what its own resources refer to"
        );
    }
}

#[tokio::test]
async fn patient_everything_returns_the_compartment() {
    for node in nodes().await {
        let b = node.backend;
        let p = node
            .create(&patient(
                "123456782",
                "Dekker",
                "Sara",
                "1960-06-06",
                "female",
            ))
            .await;
        let other = node
            .create(&patient("111222333", "Mulder", "Tom", "1961-06-06", "male"))
            .await;
        let subject = |id: &str| json!({"reference": format!("Patient/{id}")});
        node.create(&json!({"resourceType": "Condition", "subject": subject(&p)}))
            .await;
        node.create(&json!({"resourceType": "AllergyIntolerance", "patient": subject(&p)}))
            .await;
        node.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": subject(&other)})).await;
        let everything = node.get(&format!("Patient/{p}/$everything")).await;
        assert_eq!(everything.status, 200, "[{b}] {}", everything.text);
        let mut types: Vec<&str> = everything.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        types.sort();
        assert_eq!(
            types,
            ["AllergyIntolerance", "Condition", "Patient"],
            "[{b}]"
        );
        let only = node
            .get(&format!("Patient/{p}/$everything?_type=Condition"))
            .await;
        assert_eq!(
            only.body["entry"].as_array().unwrap().len(),
            1,
            "[{b}] _type"
        );
        assert_outcome(
            &node.get("Patient/nobody/$everything").await,
            404,
            "unknown patient",
        );
        assert_outcome(
            &node
                .get(&format!("Patient/{p}/$everything?_cursor=n1x"))
                .await,
            400,
            "bad $everything cursor",
        );
        for i in 0..4 {
            node.create(&json!({"resourceType": "Condition", "subject": subject(&p), "note": [{"text": format!("{i}")}]}))
                .await;
        }
        let first = node.get(&format!("Patient/{p}/$everything?_count=2")).await;
        let (forward, last) = walk(&node, first, "next").await;
        assert_eq!(forward.len(), 4, "[{b}] seven resources in pages of two");
        let (mut back, first_again) = walk(&node, last, "previous").await;
        back.reverse();
        assert_eq!(back, forward, "[{b}] the same pages back");
        assert_eq!(link(&first_again.body, "previous"), None, "[{b}]");
    }
}

#[tokio::test]
async fn capability_statement_lists_what_works() {
    let node = support::sqlite_node().await;
    let reply = node.get("metadata").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["fhirVersion"], "4.0.1");
    let patient = reply.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap();
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "identifier",
        "family",
        "given",
        "name",
        "birthdate",
        "gender",
        "general-practitioner",
        "_id",
        "_lastUpdated",
    ] {
        assert!(params.contains(&expected), "{expected} missing");
    }
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalUpdate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
    assert_eq!(patient["conditionalRead"], "full-support");
    assert_eq!(
        patient["operation"],
        json!([{"name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
            {"name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}])
    );
    // The test servers have an export directory, so the system-level `$export` is listed,
    // and `$validate` on every type; nothing else is.
    assert_eq!(
        reply.body["rest"][0]["operation"],
        json!([{"name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
            {"name": "validate",
            "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]),
        "$localize and $fetch are served only in a network"
    );
    assert_eq!(
        node.get("$localize?patient.identifier=123456782")
            .await
            .status,
        404,
        "and are indeed not served by the FHIR server alone"
    );
    assert_eq!(
        reply.body["format"],
        json!([
            "application/fhir+json",
            "application/json",
            "application/fhir+xml",
            "application/xml"
        ]),
        "JSON and XML"
    );
    assert_eq!(
        reply.body["patchFormat"],
        json!([
            "application/json-patch+json",
            "application/fhir+json",
            "application/fhir+xml"
        ]),
        "JSON Patch and FHIRPath Patch"
    );
    // `deceased` uses FHIRPath (`exists()`) that the server does not evaluate: not offered.
    assert!(!params.contains(&"deceased"));
    let search = node.get("Patient?deceased=true").await;
    assert!(
        search
            .text
            .contains("unknown search parameter(s) ignored: deceased")
    );
    let metrics = node
        .client
        .get(node.base.replace("/fhir", "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("zorgnet_http_requests_total"), "{metrics}");
}

/// Ids of a Bundle's entries of every mode, sorted.
fn all_ids(page: &Reply) -> Vec<String> {
    let mut ids: Vec<String> = page.body["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Posts `body` (with `content_type`, when given) to `path`.
async fn post_raw(node: &Node, path: &str, content_type: Option<&str>, body: String) -> Reply {
    let mut request = node.client.post(node.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    node.send(request).await
}

fn parameters(list: &[Value]) -> String {
    if list.is_empty() {
        // FHIR forbids empty arrays: no parameters is no `parameter`.
        return json!({"resourceType": "Parameters"}).to_string();
    }
    json!({"resourceType": "Parameters", "parameter": list}).to_string()
}

#[tokio::test]
async fn operations_are_invoked_by_post_with_a_parameters_body() {
    for node in nodes().await {
        let b = node.backend;
        let p = node
            .create(&patient(
                "123456782",
                "Dekker",
                "Sara",
                "1960-06-06",
                "female",
            ))
            .await;
        let other = node
            .create(&patient("111222333", "Mulder", "Tom", "1961-06-06", "male"))
            .await;
        let subject = |id: &str| json!({"reference": format!("Patient/{id}")});
        let condition = node
            .create(&json!({"resourceType": "Condition", "subject": subject(&p)}))
            .await;
        let allergy = node
            .create(&json!({"resourceType": "AllergyIntolerance", "patient": subject(&p)}))
            .await;
        node.create(&json!({"resourceType": "Condition", "subject": subject(&other)}))
            .await;
        let everything = format!("Patient/{p}/$everything");
        let fhir_json = Some("application/fhir+json");

        let by_get = node.get(&everything).await;
        assert_eq!(by_get.status, 200, "[{b}] {}", by_get.text);
        let mut expected = vec![p.clone(), condition.clone(), allergy.clone()];
        expected.sort();
        assert_eq!(all_ids(&by_get), expected, "[{b}]");
        for (body, content_type) in [
            (String::new(), None),
            (String::new(), fhir_json),
            (parameters(&[]), fhir_json),
            (parameters(&[]), Some("application/json")),
        ] {
            let by_post = post_raw(&node, &everything, content_type, body.clone()).await;
            assert_eq!(by_post.status, 200, "[{b}] {body:?}: {}", by_post.text);
            assert_eq!(
                all_ids(&by_post),
                expected,
                "[{b}] {body:?} is the GET's answer"
            );
        }

        let typed = post_raw(
            &node,
            &everything,
            fhir_json,
            parameters(&[json!({"name": "_type", "valueCode": "Condition"})]),
        )
        .await;
        assert_eq!(
            all_ids(&typed),
            [condition.clone()],
            "[{b}] _type in the body"
        );
        let repeated = post_raw(
            &node,
            &everything,
            fhir_json,
            parameters(&[
                json!({"name": "_type", "valueCode": "Condition"}),
                json!({"name": "_type", "valueString": "AllergyIntolerance"}),
            ]),
        )
        .await;
        let mut both = vec![condition.clone(), allergy.clone()];
        both.sort();
        assert_eq!(all_ids(&repeated), both, "[{b}] a repeated parameter");
        let combined = post_raw(
            &node,
            &format!("{everything}?_type=AllergyIntolerance"),
            fhir_json,
            parameters(&[json!({"name": "_type", "valueCode": "Condition"})]),
        )
        .await;
        assert_eq!(all_ids(&combined), both, "[{b}] query and body combine");
        let another_patient = post_raw(
            &node,
            &everything,
            fhir_json,
            parameters(&[json!({"name": "patient", "valueReference":
                {"reference": format!("Patient/{other}")}})]),
        )
        .await;
        assert_eq!(
            all_ids(&another_patient),
            expected,
            "[{b}] the path names the patient, not the body"
        );

        // A page of a POSTed $everything links to the next by GET, with the body's
        // parameters in the URL.
        let first = post_raw(
            &node,
            &everything,
            fhir_json,
            parameters(&[json!({"name": "_count", "valueInteger": 1})]),
        )
        .await;
        assert_eq!(first.status, 200, "[{b}] {}", first.text);
        let mut seen = ids_in_mode(&first, "match");
        let mut next = link(&first.body, "next");
        while let Some(url) = next {
            assert!(url.contains("_count=1"), "[{b}] {url}");
            let page = follow(&node, url).await;
            seen.extend(ids_in_mode(&page, "match"));
            next = link(&page.body, "next");
        }
        seen.sort();
        assert_eq!(seen, expected, "[{b}] every page by GET");

        for (body, content_type, status, context) in [
            (
                node_patient_json(),
                fhir_json,
                400,
                "a resource that is not Parameters",
            ),
            (
                "{\"resourceType\": ".to_string(),
                fhir_json,
                400,
                "malformed JSON",
            ),
            (
                parameters(&[json!({"name": "_type"})]),
                fhir_json,
                400,
                "a parameter without a value",
            ),
            (
                parameters(&[json!({"name": "_type", "valueCode": "Condition", "extra": 1})]),
                fhir_json,
                400,
                "an unknown element",
            ),
            (
                parameters(&[json!({"name": "_count", "valueInteger": "x"})]),
                fhir_json,
                400,
                "a value of the wrong JSON type",
            ),
            (
                "_type=Condition".to_string(),
                Some("application/x-www-form-urlencoded"),
                415,
                "a form body (FHIR defines those for _search only)",
            ),
            (
                "<Parameters/>".to_string(),
                Some("application/fhir+xml"),
                400,
                "XML outside the FHIR namespace",
            ),
            (
                "<Parameters xmlns=\"http://hl7.org/fhir\"/>".to_string(),
                Some("text/turtle"),
                415,
                "Turtle",
            ),
            (
                parameters(&[json!({"name": "_since", "valueInstant": "yesterday"})]),
                fhir_json,
                400,
                "a _since that is no instant",
            ),
        ] {
            let reply = post_raw(&node, &everything, content_type, body).await;
            assert_outcome(&reply, status, &format!("[{b}] {context}"));
        }
        assert_outcome(
            &post_raw(&node, "Patient/nobody/$everything", None, String::new()).await,
            404,
            &format!("[{b}] unknown patient"),
        );
        assert_outcome(
            &post_raw(&node, &format!("Patient/{p}/$nothing"), None, String::new()).await,
            404,
            &format!("[{b}] unknown operation"),
        );
        assert_outcome(
            &post_raw(&node, &format!("Patient/{p}/_history"), None, String::new()).await,
            405,
            &format!("[{b}] history is read by GET"),
        );
        assert_outcome(
            &post_raw(&node, &format!("Patient/{p}"), None, String::new()).await,
            405,
            &format!("[{b}] no POST on a resource"),
        );
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let reply = node
                .send(
                    node.client
                        .request(method.clone(), node.url("Patient/$everything")),
                )
                .await;
            assert_outcome(
                &reply,
                404,
                &format!("[{b}] {method} type-level $everything"),
            );
            assert_eq!(reply.body["issue"][0]["code"], "not-supported", "[{b}]");
        }
    }
}

fn node_patient_json() -> String {
    patient("123456782", "Dekker", "Sara", "1960-06-06", "female").to_string()
}

#[tokio::test]
async fn json_and_xml_are_served_everywhere_and_other_formats_refused_with_406_or_415() {
    for node in nodes().await {
        let b = node.backend;
        let p = node
            .create(&patient(
                "123456782",
                "Dekker",
                "Sara",
                "1960-06-06",
                "female",
            ))
            .await;
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Condition", "subject": {"reference": format!("Patient/{p}")}},
             "request": {"method": "POST", "url": "Condition"}}]})
        .to_string();
        let reads = [
            format!("Patient/{p}"),
            format!("Patient/{p}/_history/1"),
            "Patient?family=Dekker".to_string(),
            "Patient".to_string(),
            format!("Patient/{p}/_history"),
            "Patient/_history".to_string(),
            "_history".to_string(),
            format!("Patient/{p}/$everything"),
            "metadata".to_string(),
        ];
        let with_query = |path: &str, query: &str| {
            let separator = if path.contains('?') { '&' } else { '?' };
            format!("{path}{separator}{query}")
        };
        let is_xml = |reply: &Reply| {
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/fhir+xml"))
                && zorgnet_fhir::xml::xml_to_json(&reply.text).is_ok()
        };
        for path in &reads {
            for format in ["ttl", "html", "application/fhir%2Bturtle"] {
                let reply = node
                    .get(&with_query(path, &format!("_format={format}")))
                    .await;
                assert_outcome(&reply, 406, &format!("[{b}] {path} _format={format}"));
                assert!(
                    reply
                        .header("content-type")
                        .unwrap()
                        .starts_with("application/fhir+json"),
                    "[{b}] the refusal is JSON"
                );
            }
            for format in ["xml", "application/fhir%2Bxml", "text/xml"] {
                let reply = node
                    .get(&with_query(path, &format!("_format={format}")))
                    .await;
                assert_eq!(
                    reply.status, 200,
                    "[{b}] {path} _format={format}: {}",
                    reply.text
                );
                assert!(
                    is_xml(&reply),
                    "[{b}] {path} _format={format}: {}",
                    reply.text
                );
            }
            for accept in ["text/turtle", "application/fhir+json;q=0", "image/*"] {
                let reply = node
                    .send(node.client.get(node.url(path)).header("accept", accept))
                    .await;
                assert_outcome(&reply, 406, &format!("[{b}] {path} Accept: {accept}"));
            }
            for accept in [
                "application/fhir+xml",
                "text/xml",
                "application/xml",
                "application/fhir+xml;q=1, application/fhir+json;q=0.1",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            ] {
                let reply = node
                    .send(node.client.get(node.url(path)).header("accept", accept))
                    .await;
                assert_eq!(
                    reply.status, 200,
                    "[{b}] {path} Accept: {accept}: {}",
                    reply.text
                );
                assert!(
                    is_xml(&reply),
                    "[{b}] {path} Accept: {accept}: {}",
                    reply.text
                );
            }
            for accept in [
                "application/fhir+json",
                "application/json",
                "*/*",
                "application/*",
                "application/fhir+json, application/fhir+xml",
            ] {
                let reply = node
                    .send(node.client.get(node.url(path)).header("accept", accept))
                    .await;
                assert_eq!(
                    reply.status, 200,
                    "[{b}] {path} Accept: {accept}: {}",
                    reply.text
                );
                assert!(reply.body.is_object(), "[{b}] JSON");
            }
            for format in [
                "json",
                "application/json",
                "application/fhir%2Bjson",
                "application/fhir+json",
            ] {
                let reply = node
                    .send(
                        node.client
                            .get(node.url(&with_query(path, &format!("_format={format}"))))
                            .header("accept", "application/fhir+xml"),
                    )
                    .await;
                assert_eq!(
                    reply.status, 200,
                    "[{b}] {path} _format={format} wins over Accept: {}",
                    reply.text
                );
            }
        }

        // JSON declared as XML is a 400, a body of another type a 415, whatever the response
        // format; nothing is stored.
        let conditions = node.count("Condition").await;
        for (method, path, content_type, status) in [
            (reqwest::Method::POST, "", "application/fhir+xml", 400),
            (reqwest::Method::POST, "", "text/xml", 400),
            (reqwest::Method::POST, "Condition", "application/xml", 400),
            (
                reqwest::Method::PUT,
                "Patient/123456782",
                "application/fhir+xml",
                400,
            ),
            (reqwest::Method::POST, "", "text/turtle", 415),
            (
                reqwest::Method::POST,
                "Patient/_search",
                "application/fhir+json",
                415,
            ),
            (
                reqwest::Method::POST,
                "Condition",
                "application/x-www-form-urlencoded",
                415,
            ),
        ] {
            let reply = node
                .send(
                    node.client
                        .request(method.clone(), node.url(path))
                        .header("content-type", content_type)
                        .body(transaction.clone()),
                )
                .await;
            assert_outcome(
                &reply,
                status,
                &format!("[{b}] {method} /{path} as {content_type}"),
            );
        }
        let refused = node
            .send(
                node.client
                    .post(node.url("?_format=ttl"))
                    .header("content-type", "application/fhir+json")
                    .body(transaction.clone()),
            )
            .await;
        assert_outcome(
            &refused,
            406,
            &format!("[{b}] a transaction answered in Turtle"),
        );
        assert_eq!(
            node.count("Condition").await,
            conditions,
            "[{b}] nothing stored"
        );
        assert_outcome(
            &node.get("Patient/123456782").await,
            404,
            &format!("[{b}] the JSON PUT as XML stored nothing"),
        );
        let stored = node
            .send(
                node.client
                    .post(node.url("?_format=json"))
                    .header("content-type", "application/fhir+json")
                    .header("accept", "application/fhir+json")
                    .body(transaction),
            )
            .await;
        assert_eq!(stored.status, 200, "[{b}] {}", stored.text);
        let searched = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("family=Dekker"),
            )
            .await;
        assert_eq!(match_ids(&searched.body), [p.clone()], "[{b}] form _search");
        let metrics = node
            .client
            .get(node.base.replace("/fhir", "/metrics"))
            .header("accept", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200, "[{b}] /metrics is not FHIR");
    }
}

#[tokio::test]
async fn a_nul_character_is_the_clients_mistake_not_a_storage_failure() {
    for node in nodes().await {
        let b = node.backend;
        let body = r#"{"resourceType": "Patient", "id": "nul", "name": [{"family": "a\u0000b"}]}"#;
        let stored = node
            .send(
                node.client
                    .put(node.url("Patient/nul"))
                    .header("content-type", "application/fhir+json")
                    .body(body),
            )
            .await;
        assert_outcome(&stored, 422, &format!("[{b}] a NUL in a string"));
        assert_outcome(
            &node.get("Patient/nul").await,
            404,
            &format!("[{b}] nothing stored"),
        );
        let transaction = format!(
            r#"{{"resourceType": "Bundle", "type": "transaction", "entry": [{{"resource": {body},
                "request": {{"method": "PUT", "url": "Patient/nul"}}}}]}}"#
        );
        let refused = node
            .send(
                node.client
                    .post(node.url(""))
                    .header("content-type", "application/fhir+json")
                    .body(transaction),
            )
            .await;
        assert_outcome(&refused, 422, &format!("[{b}] in a transaction"));
        for query in [
            "Patient?family=a%00b",
            "Patient?a%00b=x",
            "Patient/x?_format=%00",
        ] {
            assert_outcome(&node.get(query).await, 400, &format!("[{b}] {query}"));
        }
        let escaped =
            r#"{"resourceType": "Patient", "id": "text", "name": [{"family": "a\\u0000b"}]}"#;
        let reply = node
            .send(
                node.client
                    .put(node.url("Patient/text"))
                    .header("content-type", "application/fhir+json")
                    .body(escaped),
            )
            .await;
        assert_eq!(
            reply.status, 201,
            "[{b}] a backslash before u0000 is text: {}",
            reply.text
        );
        assert_eq!(reply.body["name"][0]["family"], "a\\u0000b", "[{b}]");
    }
}

#[tokio::test]
async fn conditional_reads_summaries_on_reads_and_pretty_answers() {
    for node in nodes().await {
        let b = node.backend;
        let id = node
            .create(&patient("123456782", "Jansen", "Jan", "1970-01-01", "male"))
            .await;
        let read = node.get(&format!("Patient/{id}")).await;
        assert_eq!(read.status, 200, "[{b}]");
        let etag = read.header("etag").unwrap();
        let last_modified = read.header("last-modified").unwrap();
        let conditional = |name: &'static str, value: String| {
            node.send(
                node.client
                    .get(node.url(&format!("Patient/{id}")))
                    .header(name, value),
            )
        };

        // The version's ETag (weak or not), `*`, or a list holding it: 304 without a body,
        // with the validators; another version: the resource.
        for tag in [
            etag.clone(),
            "\"1\"".into(),
            "*".into(),
            format!("W/\"7\", {etag}"),
        ] {
            let reply = conditional("if-none-match", tag.clone()).await;
            assert_eq!(reply.status, 304, "[{b}] If-None-Match: {tag}");
            assert!(reply.text.is_empty(), "[{b}] {tag}: {}", reply.text);
            assert_eq!(reply.header("etag").as_deref(), Some(etag.as_str()));
            assert_eq!(
                reply.header("last-modified").as_deref(),
                Some(last_modified.as_str())
            );
        }
        let other = conditional("if-none-match", "W/\"2\"".into()).await;
        assert_eq!(other.status, 200, "[{b}]");
        assert_eq!(other.body["id"], id.as_str());

        // If-Modified-Since: not modified since its own Last-Modified; modified since
        // before; an unreadable date is ignored.
        assert_eq!(
            conditional("if-modified-since", last_modified.clone())
                .await
                .status,
            304,
            "[{b}]"
        );
        for (since, expected) in [("Mon, 01 Jan 2001 00:00:00 GMT", 200), ("yesterday", 200)] {
            let reply = conditional("if-modified-since", since.into()).await;
            assert_eq!(reply.status, expected, "[{b}] If-Modified-Since: {since}");
        }
        // An update makes the old ETag stale.
        let mut changed = read.body.clone();
        changed["gender"] = json!("female");
        assert_eq!(
            node.put(&format!("Patient/{id}"), &changed).await.status,
            200
        );
        let stale = conditional("if-none-match", etag.clone()).await;
        assert_eq!(stale.status, 200, "[{b}]");
        assert_eq!(stale.body["gender"], "female");

        // _summary and _elements on a read, marked SUBSETTED; a _summary a read cannot do is
        // a 400.
        let elements = node.get(&format!("Patient/{id}?_elements=birthDate")).await;
        assert_eq!(elements.status, 200, "[{b}]");
        assert_eq!(elements.body["birthDate"], "1970-01-01");
        assert!(
            elements.body.get("name").is_none(),
            "[{b}] {}",
            elements.text
        );
        assert_eq!(elements.body["meta"]["tag"][0]["code"], "SUBSETTED");
        let summary = node.get(&format!("Patient/{id}?_summary=true")).await;
        assert_eq!(summary.status, 200, "[{b}]");
        assert!(summary.body.get("name").is_some() && summary.body.get("text").is_none());
        assert_eq!(summary.body["meta"]["tag"][0]["code"], "SUBSETTED");
        let whole = node.get(&format!("Patient/{id}?_summary=false")).await;
        assert!(
            whole.body["meta"].get("tag").is_none(),
            "[{b}] {}",
            whole.text
        );
        assert_outcome(
            &node.get(&format!("Patient/{id}?_summary=count")).await,
            400,
            "_summary=count on a read",
        );

        // _pretty=true indents the same JSON; without it the answer is compact.
        let pretty = node.get(&format!("Patient/{id}?_pretty=true")).await;
        assert_eq!(pretty.status, 200, "[{b}]");
        assert!(pretty.text.contains("\n  \""), "[{b}] {}", pretty.text);
        assert_eq!(pretty.body, node.get(&format!("Patient/{id}")).await.body);
        assert!(!node.get(&format!("Patient/{id}")).await.text.contains('\n'));
        let bundle = node.get("Patient?_pretty=true").await;
        assert!(
            bundle.text.contains("\n  \"resourceType\": \"Bundle\""),
            "[{b}]"
        );
    }
}

#[tokio::test]
async fn json_patch_changes_a_resource_as_an_update_of_the_version_it_was_made_from() {
    for node in nodes().await {
        let b = node.backend;
        let id = node
            .create(&patient("123456782", "Jansen", "Jan", "1970-01-01", "male"))
            .await;
        let send =
            |url: String, content_type: &'static str, body: Value, if_match: Option<&str>| {
                let mut request = node
                    .client
                    .patch(node.url(&url))
                    .header("content-type", content_type)
                    .body(body.to_string());
                if let Some(tag) = if_match {
                    request = request.header("if-match", tag.to_string());
                }
                node.send(request)
            };
        const JSON_PATCH: &str = "application/json-patch+json";

        let patched = send(
            format!("Patient/{id}"),
            JSON_PATCH,
            json!([
                {"op": "test", "path": "/gender", "value": "male"},
                {"op": "replace", "path": "/gender", "value": "female"},
                {"op": "add", "path": "/name/0/given/-", "value": "Johanna"},
                {"op": "remove", "path": "/birthDate"}
            ]),
            None,
        )
        .await;
        assert_eq!(patched.status, 200, "[{b}] {}", patched.text);
        assert_eq!(patched.body["gender"], "female");
        assert_eq!(patched.body["name"][0]["given"], json!(["Jan", "Johanna"]));
        assert!(patched.body.get("birthDate").is_none());
        assert_eq!(patched.body["meta"]["versionId"], "2");
        assert_eq!(patched.header("etag").as_deref(), Some("W/\"2\""));
        let read = node.get(&format!("Patient/{id}")).await;
        assert_eq!(read.body, patched.body, "[{b}] the patch is stored");
        let history = node.get(&format!("Patient/{id}/_history")).await;
        assert_eq!(
            history.body["entry"].as_array().map(Vec::len),
            Some(2),
            "[{b}] a new version"
        );

        // If-Match of another version: 412, nothing changes. Of this one: applied.
        let stale = send(
            format!("Patient/{id}"),
            JSON_PATCH,
            json!([{"op": "replace", "path": "/gender", "value": "other"}]),
            Some("W/\"1\""),
        )
        .await;
        assert_outcome(&stale, 412, "a stale If-Match");
        let current = send(
            format!("Patient/{id}"),
            JSON_PATCH,
            json!([{"op": "replace", "path": "/gender", "value": "other"}]),
            Some("W/\"2\""),
        )
        .await;
        assert_eq!(current.status, 200, "[{b}] {}", current.text);
        assert_eq!(current.body["meta"]["versionId"], "3");

        // Refused, each without a new version: a failing test, a path that is not there, a
        // result that is not a valid Patient, a changed id or type, not an array, a
        // FHIRPath Patch, another media type, an unknown or deleted resource.
        for (url, content_type, body, status) in [
            (
                format!("Patient/{id}"),
                JSON_PATCH,
                json!([{"op": "test", "path": "/gender", "value": "male"},
                       {"op": "replace", "path": "/active", "value": false}]),
                422,
            ),
            (
                format!("Patient/{id}"),
                JSON_PATCH,
                json!([{"op": "remove", "path": "/telecom/0"}]),
                422,
            ),
            (
                format!("Patient/{id}"),
                JSON_PATCH,
                json!([{"op": "add", "path": "/gender", "value": 42}]),
                422,
            ),
            (
                format!("Patient/{id}"),
                JSON_PATCH,
                json!([{"op": "replace", "path": "/id", "value": "other"}]),
                422,
            ),
            (
                format!("Patient/{id}"),
                JSON_PATCH,
                json!([{"op": "remove", "path": "/resourceType"}]),
                422,
            ),
            (
                format!("Patient/{id}"),
                JSON_PATCH,
                json!({"op": "remove", "path": "/gender"}),
                400,
            ),
            (
                format!("Patient/{id}"),
                "application/fhir+json",
                json!({"resourceType": "Parameters", "parameter": [{"name": "operation"}]}),
                422,
            ),
            (
                format!("Patient/{id}"),
                "application/fhir+json",
                json!([{"op": "remove", "path": "/gender"}]),
                415,
            ),
            (
                "Patient/nobody".to_string(),
                JSON_PATCH,
                json!([{"op": "remove", "path": "/gender"}]),
                404,
            ),
        ] {
            let refused = send(url.clone(), content_type, body.clone(), None).await;
            assert_outcome(&refused, status, &format!("{url} {content_type} {body}"));
        }
        let unchanged = node.get(&format!("Patient/{id}")).await;
        assert_eq!(
            unchanged.body["meta"]["versionId"], "3",
            "[{b}] nothing stored"
        );
        assert_eq!(unchanged.body["gender"], "other");

        // Conditional patch: the one match is patched; none is 404, several 412.
        node.create(&patient(
            "111222333",
            "Bakker",
            "Piet",
            "1955-11-30",
            "male",
        ))
        .await;
        let conditional = send(
            format!("Patient?identifier={BSN}%7C111222333"),
            JSON_PATCH,
            json!([{"op": "add", "path": "/active", "value": true}]),
            None,
        )
        .await;
        assert_eq!(conditional.status, 200, "[{b}] {}", conditional.text);
        assert_eq!(conditional.body["active"], true);
        assert_eq!(conditional.body["name"][0]["family"], "Bakker");
        for (condition, status) in [
            (format!("Patient?identifier={BSN}%7C999999990"), 404),
            ("Patient?gender=male,other".to_string(), 412),
        ] {
            let refused = send(
                condition.clone(),
                JSON_PATCH,
                json!([{"op": "add", "path": "/active", "value": false}]),
                None,
            )
            .await;
            assert_outcome(&refused, status, &condition);
        }

        // As Bundle entries: the document in a Binary. A transaction applies it with its other
        // entries; in a batch a failing patch fails its own entry only.
        let binary = |document: Value| {
            json!({"resourceType": "Binary", "contentType": JSON_PATCH,
            "data": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                document.to_string()
            )})
        };
        let transaction = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"resource": binary(json!([{"op": "replace", "path": "/gender", "value": "unknown"}])),
                     "request": {"method": "PATCH", "url": format!("Patient/{id}"), "ifMatch": "W/\"3\""}},
                    {"resource": patient("999999990", "Visser", "Eva", "1990-02-02", "female"),
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
        assert_eq!(
            node.get(&format!("Patient/{id}")).await.body["gender"],
            "unknown"
        );
        let batch = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                    {"resource": binary(json!([{"op": "test", "path": "/gender", "value": "male"}])),
                     "request": {"method": "PATCH", "url": format!("Patient/{id}")}},
                    {"resource": binary(json!([{"op": "add", "path": "/active", "value": true}])),
                     "request": {"method": "PATCH", "url": format!("Patient/{id}")}},
                    {"resource": {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                        {"name": "type", "valueCode": "replace"},
                        {"name": "path", "valueString": "Patient.birthDate"},
                        {"name": "value", "valueDate": "2000-01-01"}]}]},
                     "request": {"method": "PATCH", "url": format!("Patient/{id}")}}
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
        assert_eq!(
            statuses[0].split(' ').next(),
            Some("422"),
            "[{b}] {statuses:?}"
        );
        assert_eq!(statuses[1], "200 OK", "[{b}] {statuses:?}");
        assert_eq!(
            statuses[2].split(' ').next(),
            Some("422"),
            "[{b}] {statuses:?}"
        );
        assert_eq!(
            node.get(&format!("Patient/{id}")).await.body["active"],
            true
        );

        let deleted = node.delete(&format!("Patient/{id}")).await;
        assert_eq!(deleted.status, 204);
        let gone = send(
            format!("Patient/{id}"),
            JSON_PATCH,
            json!([{"op": "remove", "path": "/gender"}]),
            None,
        )
        .await;
        assert_outcome(&gone, 410, "a deleted resource");
    }
}
