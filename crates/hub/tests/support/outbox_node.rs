//! A node whose outbox delivers to a [`TestHub`], and the helpers the referral-index tests
//! share: writing Patients and their data over HTTP, waiting until the outbox drained, and
//! asking the hub, as another organisation, whom it finds.

use super::TestHub;
use serde_json::{Value, json};
use std::time::Duration;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_node::hub_client::HubClient;
use zorgnet_node::{NodeIdentity, outbox};
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};
use zorgnet_store::Store;

pub const GP: &str = "00000011";
pub const HOSPITAL: &str = "00000022";
/// How long a test waits for the outbox to reach the hub.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// A node on the hub's backend (its own SQLite file, or its own PostgreSQL schema) with its
/// outbox delivering to the hub.
pub struct Node {
    pub base: String,
    pub store: Store,
    stop: tokio::sync::broadcast::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

pub async fn start_node(hub: &TestHub, key: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let on_postgres = hub.postgres.is_some();
    let (store, wake) = tokio::task::spawn_blocking(move || {
        let store = if on_postgres {
            let url = std::env::var(super::POSTGRES_URL_VARIABLE).unwrap();
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
    let router = zorgnet_rest::router(store.clone(), identity, base.clone());
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
pub fn uuid_like_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        zorgnet_db::now_ms(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// One hub per backend, each with a GP node on the same backend and the hospital's client.
pub async fn networks() -> Vec<(TestHub, Node, HubClient)> {
    let mut networks = Vec::new();
    for hub in super::hubs().await {
        let (gp, hospital) = organisations(&hub).await;
        let node = start_node(&hub, &gp).await;
        networks.push((hub, node, hospital));
    }
    networks
}

/// Registers the GP and the hospital; the GP's key and the hospital's client.
pub async fn organisations(hub: &TestHub) -> (String, HubClient) {
    let gp = hub.organisation(GP, "Huisartsenpraktijk").await;
    let hospital = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    (gp, hub.client(&hospital))
}

pub async fn send(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
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
pub async fn put(node: &Node, resource: Value) {
    let url = format!(
        "{}/{}/{}",
        node.base,
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    send(reqwest::Method::PUT, url, Some(resource)).await;
}

pub async fn delete(node: &Node, reference: &str) {
    send(
        reqwest::Method::DELETE,
        format!("{}/{reference}", node.base),
        None,
    )
    .await;
}

pub fn patient(id: &str, bsn: Option<&str>) -> Value {
    let mut patient = json!({"resourceType": "Patient", "id": id, "name": [{"family": "Jansen"}]});
    if let Some(bsn) = bsn {
        patient["identifier"] =
            json!([{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}]);
    }
    patient
}

pub fn sedula_patient(id: &str, sedula: &str, birth_date: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "birthDate": birth_date,
        "identifier": [{"system": "http://zorgnet.nl/fhir/NamingSystem/sedula", "value": sedula}]})
}

pub fn medication(id: &str, patient_id: &str) -> Value {
    json!({"resourceType": "MedicationStatement", "id": id, "status": "active",
        "medicationCodeableConcept": {"text": "metformine 500 mg"},
        "subject": {"reference": format!("Patient/{patient_id}")}})
}

pub fn bsn(value: &str) -> PersonalId {
    PersonalId::from(Bsn::parse(value).unwrap())
}

/// The zorgverificatienummer the hub derives for a sédula number and birth date.
pub async fn zvn(hospital: &HubClient, sedula: &str, birth_date: &str) -> PersonalId {
    let answer = hospital
        .post(
            "/prs/zvn",
            &json!({"sedula": sedula, "birth_date": birth_date}),
        )
        .await
        .unwrap();
    PersonalId::from(Zvn::parse(answer["zvn"].as_str().unwrap()).unwrap())
}

pub async fn outbox_status(store: &Store) -> outbox::OutboxStatus {
    let db = store.database().clone();
    tokio::task::spawn_blocking(move || outbox::status(&db).unwrap())
        .await
        .unwrap()
}

/// Waits until the node's outbox is empty, and checks that the hub refused nothing.
pub async fn drained(node: &Node) {
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

/// The categories the hub says the GP holds about `person`, of those asked for (the
/// hospital registers a treatment relation with the person first: a lookup needs one).
pub async fn held(hospital: &HubClient, person: &PersonalId, categories: &[&str]) -> Vec<String> {
    super::relate(hospital, person).await;
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
pub async fn finds(hospital: &HubClient, person: &PersonalId) -> bool {
    !held(hospital, person, &["medication"]).await.is_empty()
}

/// After the outbox drained: the hub finds the GP for each of `found` and for none of
/// `gone`.
pub async fn assert_registered(
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
