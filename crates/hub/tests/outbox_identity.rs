//! The referral index follows a patient's identity: when a Patient's BSN or
//! zorgverificatienummer (sédula number and birth date) is added, changed or removed, when the
//! Patient is deleted, or when a resource moves to another patient, the node's outbox
//! withdraws the registrations under the old identity and makes them under the new one — also
//! when the hub was down while it happened. Real hub and node on port 0, over HTTP, each on
//! SQLite and on PostgreSQL; every assertion is the hub's own lookup, made once the node's
//! outbox has drained.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::TestHub;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_node::hub_client::HubClient;
use zorgnet_node::{NodeIdentity, outbox};
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};
use zorgnet_store::Store;

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const BSN_A: &str = "123456782";
const BSN_B: &str = "111222333";
const BSN_C: &str = "999999990";
const SEDULA: &str = "196104120123";
const SEDULA_OTHER: &str = "197002030456";
const BIRTH_DATE: &str = "1961-04-12";
/// How long a test waits for the outbox to reach the hub.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// A node on the hub's backend (its own SQLite file, or its own PostgreSQL schema) with its
/// outbox delivering to the hub.
struct Node {
    base: String,
    store: Store,
    stop: tokio::sync::broadcast::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

async fn start_node(hub: &TestHub, key: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let on_postgres = hub.postgres.is_some();
    let (store, wake) = tokio::task::spawn_blocking(move || {
        let store = if on_postgres {
            let url = std::env::var(support::POSTGRES_URL_VARIABLE).unwrap();
            let schema = format!(
                "zorgnet_test_node_{}_{}",
                std::process::id(),
                uuid_like_suffix()
            );
            let url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
            Store::open_postgres(&url, SearchRegistry::r4()).unwrap()
        } else {
            Store::open_sqlite(&path, SearchRegistry::r4()).unwrap()
        };
        let wake = outbox::install(&store).unwrap();
        (store, wake)
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let identity = NodeIdentity {
        ura: GP.into(),
        name: "Huisartsenpraktijk".into(),
    };
    let router = zorgnet_node::router(store.clone(), identity, None);
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut serve_stop = stop.subscribe();
    tokio::spawn(async move {
        zorgnet_node::serve(listener, router, async move {
            let _ = serve_stop.recv().await;
        })
        .await
        .unwrap();
    });
    let mut deliver_stop = stop.subscribe();
    tokio::spawn(outbox::run_delivery(
        store.clone(),
        HubClient::new(&hub.base, key).unwrap(),
        wake,
        async move {
            let _ = deliver_stop.recv().await;
        },
    ));
    Node {
        base,
        store,
        stop,
        _dir: dir,
    }
}

/// A name part no other test run uses.
fn uuid_like_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        zorgnet_db::now_ms(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// One hub per backend, each with a GP node on the same backend and the hospital's client.
async fn networks() -> Vec<(TestHub, Node, HubClient)> {
    let mut networks = Vec::new();
    for hub in support::hubs().await {
        let (gp, hospital) = organisations(&hub).await;
        let node = start_node(&hub, &gp).await;
        networks.push((hub, node, hospital));
    }
    networks
}

/// Registers the GP and the hospital; the GP's key and the hospital's client.
async fn organisations(hub: &TestHub) -> (String, HubClient) {
    let gp = hub.organisation(GP, "Huisartsenpraktijk").await;
    let hospital = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    (gp, hub.client(&hospital))
}

async fn send(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/fhir+json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// `PUT`s a resource under its own id.
async fn put(node: &Node, resource: Value) {
    let url = format!(
        "{}/{}/{}",
        node.base,
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    send(reqwest::Method::PUT, url, Some(resource)).await;
}

async fn delete(node: &Node, reference: &str) {
    send(
        reqwest::Method::DELETE,
        format!("{}/{reference}", node.base),
        None,
    )
    .await;
}

fn patient(id: &str, bsn: Option<&str>) -> Value {
    let mut patient = json!({"resourceType": "Patient", "id": id, "name": [{"family": "Jansen"}]});
    if let Some(bsn) = bsn {
        patient["identifier"] =
            json!([{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}]);
    }
    patient
}

fn sedula_patient(id: &str, sedula: &str, birth_date: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "birthDate": birth_date,
        "identifier": [{"system": "http://zorgnet.nl/fhir/NamingSystem/sedula", "value": sedula}]})
}

fn medication(id: &str, patient_id: &str) -> Value {
    json!({"resourceType": "MedicationStatement", "id": id, "status": "active",
        "medicationCodeableConcept": {"text": "metformine 500 mg"},
        "subject": {"reference": format!("Patient/{patient_id}")}})
}

fn bsn(value: &str) -> PersonalId {
    PersonalId::from(Bsn::parse(value).unwrap())
}

/// The zorgverificatienummer the hub derives for a sédula number and birth date.
async fn zvn(hospital: &HubClient, sedula: &str, birth_date: &str) -> PersonalId {
    let answer = hospital
        .post(
            "/prs/zvn",
            &json!({"sedula": sedula, "birth_date": birth_date}),
        )
        .await
        .unwrap();
    PersonalId::from(Zvn::parse(answer["zvn"].as_str().unwrap()).unwrap())
}

async fn outbox_status(store: &Store) -> outbox::OutboxStatus {
    let db = store.database().clone();
    tokio::task::spawn_blocking(move || outbox::status(&db).unwrap())
        .await
        .unwrap()
}

/// Waits until the node's outbox is empty, and checks that the hub refused nothing.
async fn drained(node: &Node) {
    let started = std::time::Instant::now();
    loop {
        let status = outbox_status(&node.store).await;
        assert_eq!(status.failed, 0, "the hub refused entries: {status:?}");
        if status.pending == 0 {
            return;
        }
        assert!(
            started.elapsed() < DELIVERY_WAIT,
            "the outbox did not drain: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The categories the hub says the GP holds about `person`, of those asked for.
async fn held(hospital: &HubClient, person: &PersonalId, categories: &[&str]) -> Vec<String> {
    let categories: Vec<String> = categories.iter().map(|c| c.to_string()).collect();
    let holders = hospital.lookup(person, &categories, false).await.unwrap();
    let mut found: Vec<String> = holders
        .into_iter()
        .filter(|h| h.ura == GP)
        .flat_map(|h| h.categories)
        .collect();
    found.sort();
    found
}

/// Whether the hub's lookup finds the GP for `person`'s medication.
async fn finds(hospital: &HubClient, person: &PersonalId) -> bool {
    !held(hospital, person, &["medication"]).await.is_empty()
}

/// After the outbox drained: the hub finds the GP for each of `found` and for none of
/// `gone`.
async fn assert_registered(
    backend: &str,
    node: &Node,
    hospital: &HubClient,
    found: &[&PersonalId],
    gone: &[&PersonalId],
) {
    drained(node).await;
    for (i, person) in found.iter().enumerate() {
        assert!(
            finds(hospital, person).await,
            "{backend}: expected person {i} of `found` to find the node"
        );
    }
    for (i, person) in gone.iter().enumerate() {
        assert!(
            !finds(hospital, person).await,
            "{backend}: expected person {i} of `gone` to find nothing"
        );
    }
}

#[tokio::test]
async fn a_changed_bsn_moves_the_registration() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_A)],
            &[&bsn(BSN_B)],
        )
        .await;

        put(&node, patient("p", Some(BSN_B))).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_B)],
            &[&bsn(BSN_A)],
        )
        .await;
        assert_eq!(
            held(&hospital, &bsn(BSN_B), &["medication", "patient-summary"]).await,
            ["medication", "patient-summary"],
            "{}",
            hub.backend
        );
    }
}

#[tokio::test]
async fn an_added_bsn_registers_the_data_held_so_far() {
    for (hub, node, hospital) in networks().await {
        // Resources before their Patient, then a Patient without identifier: nothing to
        // register yet, and nothing queued that could only fail.
        put(&node, medication("m", "p")).await;
        put(&node, patient("p", None)).await;
        drained(&node).await;
        put(&node, patient("p", Some(BSN_A))).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;
    }
}

#[tokio::test]
async fn a_removed_bsn_withdraws_the_registration_and_a_restored_one_registers_again() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        put(&node, patient("p", None)).await;
        assert_registered(hub.backend, &node, &hospital, &[], &[&bsn(BSN_A)]).await;

        put(&node, patient("p", Some(BSN_A))).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;
    }
}

#[tokio::test]
async fn an_added_zorgverificatienummer_registers() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", None)).await;
        put(&node, medication("m", "p")).await;
        drained(&node).await;
        put(&node, sedula_patient("p", SEDULA, BIRTH_DATE)).await;
        let person = zvn(&hospital, SEDULA, BIRTH_DATE).await;
        assert_registered(hub.backend, &node, &hospital, &[&person], &[]).await;
    }
}

#[tokio::test]
async fn a_changed_zorgverificatienummer_moves_the_registration() {
    for (hub, node, hospital) in networks().await {
        put(&node, sedula_patient("p", SEDULA, BIRTH_DATE)).await;
        put(&node, medication("m", "p")).await;
        let before = zvn(&hospital, SEDULA, BIRTH_DATE).await;
        assert_registered(hub.backend, &node, &hospital, &[&before], &[]).await;

        put(&node, sedula_patient("p", SEDULA_OTHER, BIRTH_DATE)).await;
        let after = zvn(&hospital, SEDULA_OTHER, BIRTH_DATE).await;
        assert_registered(hub.backend, &node, &hospital, &[&after], &[&before]).await;

        // The birth date is part of what the number is derived from.
        put(&node, sedula_patient("p", SEDULA_OTHER, "1961-04-13")).await;
        let corrected = zvn(&hospital, SEDULA_OTHER, "1961-04-13").await;
        assert_registered(hub.backend, &node, &hospital, &[&corrected], &[&after]).await;
    }
}

#[tokio::test]
async fn a_removed_zorgverificatienummer_withdraws_the_registration() {
    for (hub, node, hospital) in networks().await {
        put(&node, sedula_patient("p", SEDULA, BIRTH_DATE)).await;
        put(&node, medication("m", "p")).await;
        let person = zvn(&hospital, SEDULA, BIRTH_DATE).await;
        assert_registered(hub.backend, &node, &hospital, &[&person], &[]).await;

        put(
            &node,
            json!({"resourceType": "Patient", "id": "p", "birthDate": BIRTH_DATE}),
        )
        .await;
        assert_registered(hub.backend, &node, &hospital, &[], &[&person]).await;
    }
}

#[tokio::test]
async fn a_deleted_patient_is_withdrawn_and_registers_again_when_recreated() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        delete(&node, "Patient/p").await;
        assert_registered(hub.backend, &node, &hospital, &[], &[&bsn(BSN_A)]).await;

        put(&node, patient("p", Some(BSN_A))).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;
    }
}

#[tokio::test]
async fn a_resource_moved_to_another_patient_moves_its_registration() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p1", Some(BSN_A))).await;
        put(&node, patient("p2", Some(BSN_B))).await;
        put(&node, medication("m", "p1")).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_A)],
            &[&bsn(BSN_B)],
        )
        .await;

        put(&node, medication("m", "p2")).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_B)],
            &[&bsn(BSN_A)],
        )
        .await;
    }
}

#[tokio::test]
async fn a_transaction_that_changes_patient_and_resources_moves_everything() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        let allergy = json!({"resourceType": "AllergyIntolerance",
            "code": {"text": "penicilline"}, "patient": {"reference": "Patient/p"}});
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient("p", Some(BSN_B)),
             "request": {"method": "PUT", "url": "Patient/p"}},
            {"resource": allergy, "request": {"method": "POST", "url": "AllergyIntolerance"}}
        ]});
        send(reqwest::Method::POST, node.base.clone(), Some(bundle)).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_B)],
            &[&bsn(BSN_A)],
        )
        .await;
        assert_eq!(
            held(&hospital, &bsn(BSN_B), &["allergies", "medication"]).await,
            ["allergies", "medication"],
            "{}",
            hub.backend
        );
        assert!(
            held(&hospital, &bsn(BSN_A), &["allergies"])
                .await
                .is_empty(),
            "{}",
            hub.backend
        );
    }
}

#[tokio::test]
async fn an_import_into_the_store_registers_and_follows_identity_changes() {
    for (hub, node, hospital) in networks().await {
        let mut batch = node.store.import_batch();
        batch.push(medication("m", "p")).unwrap();
        batch.push(patient("p", Some(BSN_A))).unwrap();
        node.store.import(batch).await.unwrap();
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        let mut batch = node.store.import_batch();
        batch.push(patient("p", Some(BSN_B))).unwrap();
        node.store.import(batch).await.unwrap();
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_B)],
            &[&bsn(BSN_A)],
        )
        .await;
    }
}

/// Changes made while the hub is down wait in the outbox (and show as pending), and reach
/// the hub in order once it is back: A → B → C leaves only C registered, A → none → A
/// leaves A registered.
#[tokio::test]
async fn changes_while_the_hub_is_down_are_queued_and_delivered_in_order() {
    let mut backends = vec![None];
    match std::env::var(support::POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => {
            let schema = format!("zorgnet_test_hub_down_{}", uuid_like_suffix());
            let schema_url = tokio::task::spawn_blocking(move || {
                zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap()
            })
            .await
            .unwrap();
            backends.push(Some(schema_url));
        }
        _ => {
            // Written to the process's stderr, not through the test harness's capture, so
            // that a skip shows in every run.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: PostgreSQL half of this test ({} is not set) ***\n",
                support::POSTGRES_URL_VARIABLE
            );
        }
    }
    for postgres in backends {
        let mut hub = support::start(postgres.clone()).await;
        let (gp_key, hospital) = organisations(&hub).await;
        let node = start_node(&hub, &gp_key).await;
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        put(&node, patient("q", Some(BSN_C))).await;
        put(&node, medication("n", "q")).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_A), &bsn(BSN_C)],
            &[],
        )
        .await;

        let address = hub.base.trim_start_matches("http://").to_string();
        let backend = hub.backend;
        hub.stop().await;
        put(&node, patient("p", Some(BSN_B))).await;
        put(&node, patient("p", Some(BSN_C))).await;
        put(&node, patient("q", None)).await;
        put(&node, patient("q", Some(BSN_C))).await;
        let status = outbox_status(&node.store).await;
        assert_eq!(
            status.pending, 12,
            "{backend}: two categories × (A out, B in, B out, C in) for p and (C out, C in) for q"
        );
        assert!(status.oldest_pending_ms.is_some(), "{backend}");

        let dir = std::mem::replace(&mut hub.dir, tempfile::tempdir().unwrap());
        let hub = support::start_at(dir, postgres, &address).await;
        assert_registered(
            backend,
            &node,
            &hospital,
            &[&bsn(BSN_C)],
            &[&bsn(BSN_A), &bsn(BSN_B)],
        )
        .await;
        let listed: Value = reqwest::Client::new()
            .get(format!("{}/nvi/registrations", hub.base))
            .bearer_auth(&gp_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            listed["registrations"].as_array().unwrap().len(),
            2,
            "{backend}: p and q are one person now (BSN C), holding two categories: {listed}"
        );
    }
}

#[tokio::test]
async fn a_bad_patient_write_changes_no_registration() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        let mut invalid = patient("p", Some(BSN_B));
        invalid["birthDate"] = json!("12-04-1961");
        let response = reqwest::Client::new()
            .put(format!("{}/Patient/p", node.base))
            .header("content-type", "application/fhir+json")
            .body(invalid.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{}: {}",
            hub.backend,
            response.status()
        );
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_A)],
            &[&bsn(BSN_B)],
        )
        .await;
    }
}
