//! The referral index stays true when several local Patients name one person: duplicate
//! records of one BSN, a BSN corrected to one another local Patient already has, and the
//! same through conditional updates and transactions. The hub keys a registration by
//! (person, category, organisation), so withdrawing one Patient's pair must not withdraw what
//! another Patient of the same person still holds. Real hub and node on port 0, over HTTP,
//! each on SQLite and on PostgreSQL; every assertion is the hub's own lookup, made once the
//! node's outbox has drained.

mod support;

use serde_json::json;
use support::outbox_node::*;

const BSN_A: &str = "123456782";
const BSN_B: &str = "111222333";
const SEDULA: &str = "196104120123";
const BIRTH_DATE: &str = "1961-04-12";

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
