//! Nodes register at the referral index through their durable outbox: a write at node A
//! makes the patient findable for node B; deleting the last resource of a category
//! deregisters; while the hub is down writes go on and nothing is lost or duplicated.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{TestNode, node};
use zorgnet_node::hub_client::HubClient;
use zorgnet_node::outbox;
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_store::Store;

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
/// How long a test waits for the outbox to reach the hub.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

async fn post(node: &TestNode, resource: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{}",
            node.base,
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

async fn delete(node: &TestNode, reference: &str) {
    let response = reqwest::Client::new()
        .delete(format!("{}/{reference}", node.base))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

fn patient(bsn: &str) -> Value {
    json!({"resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}],
        "name": [{"family": "Jansen"}]})
}

fn medication(patient_id: &str) -> Value {
    json!({"resourceType": "MedicationStatement", "status": "active",
        "medicationCodeableConcept": {"text": "metformine 500 mg"},
        "subject": {"reference": format!("Patient/{patient_id}")}})
}

async fn pending(store: &Store) -> i64 {
    let db = store.database().clone();
    tokio::task::spawn_blocking(move || outbox::status(&db).unwrap().pending)
        .await
        .unwrap()
}

/// Waits until the node's outbox is empty: the hub answers a registration only after its own
/// access log has the request, so a lookup can see the registration before the node has
/// heard the answer and cleared its outbox.
async fn await_drained(store: &Store) {
    let started = std::time::Instant::now();
    while pending(store).await > 0 {
        assert!(
            started.elapsed() < DELIVERY_WAIT,
            "the outbox did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the hospital's lookup answers `expected` holders (with a treatment relation
/// of the hospital with the person, the basis a lookup needs).
async fn await_lookup(hospital: &HubClient, person: &PersonalId, expected: usize) {
    support::relate(hospital, person).await;
    let started = std::time::Instant::now();
    loop {
        let found = hospital
            .lookup(person, &["medication".to_string()], false)
            .await
            .map(|h| h.len());
        if found.as_ref().ok() == Some(&expected) {
            return;
        }
        assert!(
            started.elapsed() < DELIVERY_WAIT,
            "lookup still answers {found:?}, expected {expected} holder(s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn writes_register_and_deletes_deregister_through_the_outbox() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisartsenpraktijk").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let gp = node(&hub, GP, &gp_key, false).await;
        let hospital = hub.client(&hospital_key);
        let person = PersonalId::from(Bsn::parse("123456782").unwrap());

        let created = post(&gp, patient("123456782")).await;
        let id = created["id"].as_str().unwrap();
        let first = post(&gp, medication(id)).await;
        let second = post(&gp, medication(id)).await;
        await_lookup(&hospital, &person, 1).await;

        delete(
            &gp,
            &format!("MedicationStatement/{}", first["id"].as_str().unwrap()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        await_lookup(&hospital, &person, 1).await;
        delete(
            &gp,
            &format!("MedicationStatement/{}", second["id"].as_str().unwrap()),
        )
        .await;
        await_lookup(&hospital, &person, 0).await;
        await_drained(&gp.store).await;
        assert_eq!(pending(&gp.store).await, 0, "{}", hub.backend);
    }
}

#[tokio::test]
async fn writes_continue_while_the_hub_is_down_and_nothing_is_lost_or_duplicated() {
    let mut hub = support::start(None).await;
    let gp_key = hub.organisation(GP, "Huisartsenpraktijk").await;
    let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    let gp = node(&hub, GP, &gp_key, false).await;
    let address = hub.base.trim_start_matches("http://").to_string();

    hub.stop().await;
    let bsns = ["123456782", "111222333", "999999990"];
    for bsn in bsns {
        let created = post(&gp, patient(bsn)).await;
        post(&gp, medication(created["id"].as_str().unwrap())).await;
    }
    assert_eq!(
        pending(&gp.store).await,
        6,
        "queued while the hub is down: medication and patient-summary for each patient"
    );

    let dir = std::mem::replace(&mut hub.dir, tempfile::tempdir().unwrap());
    let hub = support::start_at(dir, None, &address).await;
    let hospital = hub.client(&hospital_key);
    for bsn in bsns {
        await_lookup(&hospital, &PersonalId::from(Bsn::parse(bsn).unwrap()), 1).await;
    }
    await_drained(&gp.store).await;
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
        6,
        "no duplicates: {listed}"
    );
}

#[tokio::test]
async fn a_patient_without_a_bsn_registers_under_a_zorgverificatienummer() {
    let hub = support::start(None).await;
    let gp_key = hub.organisation(GP, "Klinik Saba").await;
    let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    let gp = node(&hub, GP, &gp_key, false).await;
    let created = post(
        &gp,
        json!({"resourceType": "Patient", "birthDate": "1961-04-12",
            "identifier": [{"system": "http://zorgnet.nl/fhir/NamingSystem/sedula", "value": "196104120123"}]}),
    )
    .await;
    post(&gp, medication(created["id"].as_str().unwrap())).await;

    let hospital = hub.client(&hospital_key);
    let answer = hospital
        .post(
            "/prs/zvn",
            &json!({"sedula": "196104120123", "birth_date": "1961-04-12"}),
        )
        .await
        .unwrap();
    let zvn = zorgnet_pseudonym::Zvn::parse(answer["zvn"].as_str().unwrap()).unwrap();
    await_lookup(&hospital, &PersonalId::from(zvn), 1).await;
    await_drained(&gp.store).await;
    assert_eq!(pending(&gp.store).await, 0);
}
