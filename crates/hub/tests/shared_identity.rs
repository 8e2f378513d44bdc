//! The referral index stays true when several local Patients name one person: duplicate
//! records of one BSN, a BSN corrected to one another local Patient already has, and the
//! same through conditional updates and transactions. The hub keys a registration by
//! (person, category, organisation), so withdrawing one Patient's pair must not withdraw what
//! another Patient of the same person still holds. Real hub and node on port 0, over HTTP,
//! each on SQLite and on PostgreSQL; every assertion is the hub's own lookup, made once the
//! node's outbox has drained.

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
const SEDULA: &str = "196104120123";
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
async fn a_bsn_corrected_to_another_local_patients_stays_registered_for_both() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p1", Some(BSN_A))).await;
        put(&node, patient("p2", Some(BSN_B))).await;
        put(&node, medication("m1", "p1")).await;
        put(&node, medication("m2", "p2")).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_A), &bsn(BSN_B)],
            &[],
        )
        .await;

        // p1 was a duplicate record of p2's person: its BSN is corrected to B.
        put(&node, patient("p1", Some(BSN_B))).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_B)],
            &[&bsn(BSN_A)],
        )
        .await;

        // Corrected back, and then removed: p2 still holds B's medication all along.
        put(&node, patient("p1", Some(BSN_A))).await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_A), &bsn(BSN_B)],
            &[],
        )
        .await;
        put(&node, patient("p1", Some(BSN_B))).await;
        delete(&node, "Patient/p1").await;
        assert_registered(
            hub.backend,
            &node,
            &hospital,
            &[&bsn(BSN_B)],
            &[&bsn(BSN_A)],
        )
        .await;

        // Only when the last Patient of B lets go is B withdrawn.
        delete(&node, "MedicationStatement/m2").await;
        assert_registered(hub.backend, &node, &hospital, &[], &[&bsn(BSN_B)]).await;
    }
}

#[tokio::test]
async fn duplicate_records_of_one_person_withdraw_only_what_neither_holds() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p1", Some(BSN_A))).await;
        put(&node, patient("p2", Some(BSN_A))).await;
        put(&node, medication("m1", "p1")).await;
        put(&node, medication("m2", "p2")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        delete(&node, "MedicationStatement/m1").await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        // A resource moved from one duplicate to the other keeps its registration.
        put(&node, medication("m2", "p1")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        delete(&node, "Patient/p2").await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        delete(&node, "MedicationStatement/m2").await;
        assert_registered(hub.backend, &node, &hospital, &[], &[&bsn(BSN_A)]).await;
    }
}

#[tokio::test]
async fn duplicate_sedula_records_withdraw_only_what_neither_holds() {
    for (hub, node, hospital) in networks().await {
        let person = zvn(&hospital, SEDULA, BIRTH_DATE).await;
        put(&node, sedula_patient("p1", SEDULA, BIRTH_DATE)).await;
        put(&node, sedula_patient("p2", SEDULA, BIRTH_DATE)).await;
        put(&node, medication("m1", "p1")).await;
        put(&node, medication("m2", "p2")).await;
        assert_registered(hub.backend, &node, &hospital, &[&person], &[]).await;

        delete(&node, "Patient/p1").await;
        assert_registered(hub.backend, &node, &hospital, &[&person], &[]).await;

        delete(&node, "Patient/p2").await;
        assert_registered(hub.backend, &node, &hospital, &[], &[&person]).await;
    }
}

#[tokio::test]
async fn a_conditional_update_that_changes_the_bsn_moves_the_registration() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("p", Some(BSN_A))).await;
        put(&node, medication("m", "p")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        send(
            reqwest::Method::PUT,
            format!(
                "{}/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|{BSN_A}",
                node.base
            ),
            Some(patient("p", Some(BSN_B))),
        )
        .await;
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
async fn a_transaction_that_deletes_a_patient_and_creates_its_successor_moves_the_data() {
    for (hub, node, hospital) in networks().await {
        put(&node, patient("old", Some(BSN_A))).await;
        put(&node, medication("m", "old")).await;
        assert_registered(hub.backend, &node, &hospital, &[&bsn(BSN_A)], &[]).await;

        // The old record goes, a new one for another BSN comes, and the medication moves.
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/old"}},
            {"fullUrl": "urn:uuid:0b8a1c55-7b0e-4a5e-9f57-3f1b5a4b7c01",
             "resource": {"resourceType": "Patient", "identifier": [
                {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": BSN_B}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "MedicationStatement", "id": "m", "status": "active",
                "medicationCodeableConcept": {"text": "metformine 500 mg"},
                "subject": {"reference": "urn:uuid:0b8a1c55-7b0e-4a5e-9f57-3f1b5a4b7c01"}},
             "request": {"method": "PUT", "url": "MedicationStatement/m"}}
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
    }
}
