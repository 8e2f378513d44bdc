//! The referral index follows a patient's identity: when a Patient's BSN or
//! zorgverificatienummer (sédula number and birth date) is added, changed or removed, when the
//! Patient is deleted, or when a resource moves to another patient, the node's outbox
//! withdraws the registrations under the old identity and makes them under the new one — also
//! when the hub was down while it happened. Real hub and node on port 0, over HTTP, each on
//! SQLite and on PostgreSQL; every assertion is the hub's own lookup, made once the node's
//! outbox has drained.

mod support;

use serde_json::{Value, json};
use support::outbox_node::*;

const BSN_A: &str = "123456782";
const BSN_B: &str = "111222333";
const BSN_C: &str = "999999990";
const SEDULA: &str = "196104120123";
const SEDULA_OTHER: &str = "197002030456";
const BIRTH_DATE: &str = "1961-04-12";

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
