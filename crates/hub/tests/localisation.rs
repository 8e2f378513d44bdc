//! The pseudonym service, referral index, consent register and registry over HTTP, on both
//! storage backends.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestHub, hubs};
use zorgnet_node::hub_client::{HubClientError, token_value};
use zorgnet_pseudonym::{Bsn, KeyAlgorithm, PersonalId, RecipientId, RecipientKeys};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const PHARMACY: &str = "00000033";

fn person(bsn: &str) -> PersonalId {
    PersonalId::from(Bsn::parse(bsn).unwrap())
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn send(
    hub: &TestHub,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", hub.base));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    if !status.is_success() {
        assert_eq!(content_type, "application/problem+json", "{status}: {text}");
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Registers an organisation recipient key at the PRS, as the organisation itself.
async fn recipient(hub: &TestHub, ura: &str, key: &str, algorithm: KeyAlgorithm) -> RecipientKeys {
    let keys = RecipientKeys::generate(RecipientId::organisation(ura).unwrap(), algorithm).unwrap();
    let jwk: Value = serde_json::from_str(&keys.public_jwk()).unwrap();
    let (status, body) = send(
        hub,
        reqwest::Method::PUT,
        &format!("/prs/recipients/ura:{ura}"),
        Some(key),
        Some(jwk),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    keys
}

#[tokio::test]
async fn pseudonyms_are_stable_per_recipient_and_unlinkable_between_recipients() {
    for hub in hubs().await {
        let gp_key = hub.organisation(GP, "Huisartsenpraktijk").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let pharmacy_key = hub.organisation(PHARMACY, "Apotheek").await;
        let gp = recipient(&hub, GP, &gp_key, KeyAlgorithm::X25519).await;
        let hospital = recipient(&hub, HOSPITAL, &hospital_key, KeyAlgorithm::Rsa).await;

        let holder = hub.client(&pharmacy_key);
        let patient = person("123456782");
        let for_gp = holder
            .exchange_tokens(&[patient.clone(), patient.clone()], gp.id())
            .await
            .unwrap();
        let for_hospital = holder
            .exchange_tokens(std::slice::from_ref(&patient), hospital.id())
            .await
            .unwrap();

        let gp_first = gp.open(&for_gp[0], now_s()).unwrap();
        let gp_second = gp.open(&for_gp[1], now_s()).unwrap();
        let hospital_pseudonym = hospital.open(&for_hospital[0], now_s()).unwrap();
        assert_eq!(
            gp_first, gp_second,
            "{}: same person, same recipient",
            hub.backend
        );
        assert_ne!(
            gp_first.as_bytes(),
            hospital_pseudonym.as_bytes(),
            "{}",
            hub.backend
        );
        assert!(
            hospital.open(&for_gp[0], now_s()).is_err(),
            "a token for the GP is useless to the hospital"
        );
        assert!(gp.open(&for_hospital[0], now_s()).is_err());

        let other = holder
            .exchange_tokens(&[person("111222333")], gp.id())
            .await
            .unwrap();
        assert_ne!(
            gp.open(&other[0], now_s()).unwrap(),
            gp_first,
            "another person"
        );

        // A key the organisation registers again replaces the old one; an organisation may
        // not register a key for someone else; recipients without a key get no tokens.
        let (status, _) = send(
            &hub,
            reqwest::Method::PUT,
            &format!("/prs/recipients/ura:{HOSPITAL}"),
            Some(&gp_key),
            Some(serde_json::from_str(&gp.public_jwk()).unwrap()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = send(
            &hub,
            reqwest::Method::POST,
            "/prs/evaluate",
            Some(&gp_key),
            Some(json!({"recipient": "ura:99999999", "blinded": ["AAAA"]})),
        )
        .await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{status}"
        );
    }
}

#[tokio::test]
async fn a_registration_is_found_by_others_until_deregistered_or_hidden_by_an_opt_out() {
    for hub in hubs().await {
        let gp_key = hub.organisation(GP, "Huisartsenpraktijk").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let gp = hub.client(&gp_key);
        let hospital = hub.client(&hospital_key);
        let patient = person("123456782");
        let medication = vec!["medication".to_string()];
        support::relation(&hub, &hospital_key, "123456782").await;

        assert!(
            hospital
                .lookup(&patient, &medication, false)
                .await
                .unwrap()
                .is_empty(),
            "an empty answer is an answer"
        );

        let token = gp.referral_index_token(&patient).await.unwrap();
        let first = gp
            .update_registrations(
                &[(token, vec!["medication".into(), "allergies".into()])],
                true,
            )
            .await
            .unwrap();
        assert_eq!((first.pairs, first.changed), (2, 2));
        let token = gp.referral_index_token(&patient).await.unwrap();
        let again = gp
            .update_registrations(&[(token, medication.clone())], true)
            .await
            .unwrap();
        assert_eq!(
            again.changed, 0,
            "{}: registering twice is idempotent",
            hub.backend
        );

        let found = hospital.lookup(&patient, &medication, false).await.unwrap();
        assert_eq!(found.len(), 1, "{}", hub.backend);
        assert_eq!(found[0].ura, GP);
        assert_eq!(found[0].categories, medication);
        assert!(
            hospital
                .lookup(&person("111222333"), &medication, false)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            hospital
                .lookup(&patient, &["lab-results".to_string()], false)
                .await
                .unwrap()
                .is_empty()
        );

        let (status, own) = send(
            &hub,
            reqwest::Method::GET,
            "/nvi/registrations",
            Some(&gp_key),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(own["registrations"].as_array().unwrap().len(), 2);

        // An opt-out of medication, recorded by the hospital on the citizen's behalf, hides
        // the GP's medication at once; allergies stay findable; revoking restores it.
        let token = hospital.referral_index_token(&patient).await.unwrap();
        let (status, directive) = send(
            &hub,
            reqwest::Method::POST,
            "/consent/directives",
            Some(&hospital_key),
            Some(
                json!({"token": token_value(&token), "kind": "opt-out", "category": "medication"}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{directive}");
        assert_eq!(directive["recorded_by"], HOSPITAL);
        assert!(
            hospital
                .lookup(&patient, &medication, false)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            hub.backend
        );
        assert_eq!(
            hospital
                .lookup(&patient, &["allergies".to_string()], false)
                .await
                .unwrap()
                .len(),
            1
        );

        let decision_request = |token: Value, role: &str| {
            json!({"token": token, "requester_ura": HOSPITAL,
            "holder_ura": GP, "role": role, "category": "medication"})
        };
        let token = gp.referral_index_token(&patient).await.unwrap();
        let (status, decision) = send(
            &hub,
            reqwest::Method::POST,
            "/consent/decision",
            Some(&gp_key),
            Some(decision_request(token_value(&token), "01.015")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(decision["decision"], "deny");
        assert_eq!(decision["reason"], "not-permitted", "{decision}");

        let id = directive["directive_id"].as_str().unwrap();
        let token = hospital.referral_index_token(&patient).await.unwrap();
        let (status, revoked) = send(
            &hub,
            reqwest::Method::POST,
            &format!("/consent/directives/{id}/revoke"),
            Some(&hospital_key),
            Some(json!({"token": token_value(&token)})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert_eq!(revoked["version"], 2);
        assert_eq!(
            hospital
                .lookup(&patient, &medication, false)
                .await
                .unwrap()
                .len(),
            1
        );
        let token = hospital.referral_index_token(&patient).await.unwrap();
        let (_, history) = send(
            &hub,
            reqwest::Method::POST,
            "/consent/directives/query",
            Some(&hospital_key),
            Some(json!({"token": token_value(&token)})),
        )
        .await;
        assert_eq!(
            history["history"].as_array().unwrap().len(),
            2,
            "every change is kept"
        );
        assert_eq!(history["current"][0]["status"], "revoked");

        // An emergency opt-out denies break-the-glass lookups only.
        let token = hospital.referral_index_token(&patient).await.unwrap();
        let (status, _) = send(
            &hub,
            reqwest::Method::POST,
            "/consent/directives",
            Some(&hospital_key),
            Some(json!({"token": token_value(&token), "kind": "emergency-opt-out"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(
            hospital
                .lookup(&patient, &medication, true)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            hospital
                .lookup(&patient, &medication, false)
                .await
                .unwrap()
                .len(),
            1
        );

        let token = gp.referral_index_token(&patient).await.unwrap();
        let gone = gp
            .update_registrations(
                &[(token, vec!["medication".into(), "allergies".into()])],
                false,
            )
            .await
            .unwrap();
        assert_eq!(gone.changed, 2);
        assert!(
            hospital
                .lookup(&patient, &medication, false)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_stores_nothing() {
    for hub in hubs().await {
        let gp_key = hub.organisation(GP, "Huisartsenpraktijk").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let gp = hub.client(&gp_key);
        let own_keys = recipient(&hub, GP, &gp_key, KeyAlgorithm::X25519).await;
        let patient = person("123456782");
        let good = token_value(&gp.referral_index_token(&patient).await.unwrap());
        let for_someone_else = token_value(
            &gp.exchange_tokens(std::slice::from_ref(&patient), own_keys.id())
                .await
                .unwrap()[0],
        );
        let mut tampered = good.clone();
        let jwe = tampered["oprf_jwe"].as_str().unwrap().to_string();
        let flipped = if jwe.ends_with('A') { 'B' } else { 'A' };
        tampered["oprf_jwe"] = Value::String(format!("{}{flipped}", &jwe[..jwe.len() - 1]));

        let post = |path: &'static str, key: Option<String>, body: Value| {
            let hub = &hub;
            async move {
                send(hub, reqwest::Method::POST, path, key.as_deref(), Some(body))
                    .await
                    .0
            }
        };
        let register = |token: Value, category: &str| json!({"registrations": [{"token": token, "categories": [category]}]});
        let gp_auth = Some(gp_key.clone());
        assert_eq!(
            post(
                "/nvi/registrations",
                None,
                register(good.clone(), "medication")
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                Some("zn_wrong".into()),
                register(good.clone(), "medication")
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                Some(hub.admin_key.clone()),
                register(good.clone(), "medication")
            )
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                gp_auth.clone(),
                register(good.clone(), "x-rays")
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                gp_auth.clone(),
                register(for_someone_else.clone(), "medication")
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                gp_auth.clone(),
                register(tampered.clone(), "medication")
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                gp_auth.clone(),
                register(json!("not a token"), "medication")
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                gp_auth.clone(),
                json!({"registrations": []})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/nvi/registrations",
                gp_auth.clone(),
                json!({"registrations": [{"token": good, "categories": []}]})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        // One bad item refuses the whole batch.
        let mixed = json!({"registrations": [
            {"token": good.clone(), "categories": ["medication"]},
            {"token": tampered.clone(), "categories": ["medication"]}]});
        assert_eq!(
            post("/nvi/registrations", gp_auth.clone(), mixed).await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            post(
                "/nvi/lookup",
                gp_auth.clone(),
                json!({"token": good.clone(), "categories": ["nope"]})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/nvi/lookup",
                gp_auth.clone(),
                json!({"token": good.clone()})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/prs/evaluate",
                gp_auth.clone(),
                json!({"recipient": "nvi", "blinded": ["not base64!"]})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/prs/evaluate",
                gp_auth.clone(),
                json!({"recipient": "someone", "blinded": ["AAAA"]})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/consent/directives",
                gp_auth.clone(),
                json!({"token": good.clone(), "kind": "consent"})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/consent/directives",
                gp_auth.clone(),
                json!({"token": good.clone(), "kind": "opt-out", "category": "x"})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/consent/directives",
                gp_auth.clone(),
                json!({"token": good.clone(), "kind": "opt-out", "valid_from": "yesterday"})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(post("/consent/decision", gp_auth.clone(), json!({"token": good.clone(), "requester_ura": "12", "role": "01.015", "category": "medication"})).await, StatusCode::BAD_REQUEST);
        assert_eq!(
            post(
                "/registry/organisations",
                gp_auth.clone(),
                json!({"ura": "00000099", "name": "x"})
            )
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post(
                "/registry/organisations",
                Some(hub.admin_key.clone()),
                json!({"ura": "123", "name": "x"})
            )
            .await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(
                "/registry/organisations",
                Some(hub.admin_key.clone()),
                json!({"ura": GP, "name": "again"})
            )
            .await,
            StatusCode::CONFLICT
        );

        let response = reqwest::Client::new()
            .post(format!("{}/nvi/registrations", hub.base))
            .bearer_auth(&gp_key)
            .header("content-type", "application/json")
            .body(vec![b' '; zorgnet_hub::REQUEST_BODY_LIMIT_BYTES + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let response = reqwest::Client::new()
            .post(format!("{}/nvi/registrations", hub.base))
            .bearer_auth(&gp_key)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);

        let (_, own) = send(
            &hub,
            reqwest::Method::GET,
            "/nvi/registrations",
            Some(&gp_key),
            None,
        )
        .await;
        assert!(
            own["registrations"].as_array().unwrap().is_empty(),
            "{}: nothing stored",
            hub.backend
        );
        let hospital = hub.client(&hospital_key);
        let token = hospital.referral_index_token(&patient).await.unwrap();
        let (_, directives) = send(
            &hub,
            reqwest::Method::POST,
            "/consent/directives/query",
            Some(&hospital_key),
            Some(json!({"token": token_value(&token)})),
        )
        .await;
        assert!(directives["history"].as_array().unwrap().is_empty());

        let bad_bsn = Bsn::parse("123456789");
        assert!(
            bad_bsn.is_err(),
            "the 11-check refuses a malformed BSN before anything is sent"
        );
        let refused = hospital
            .lookup(&patient, &["x".to_string()], false)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, HubClientError::Refused { status: 400, .. }),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn keys_survive_a_restart_and_rotated_organisation_keys_replace_old_ones() {
    let hub = support::start(None).await;
    let gp_key = hub.organisation(GP, "Huisartsenpraktijk").await;
    let gp = hub.client(&gp_key);
    let patient = person("123456782");
    let token = gp.referral_index_token(&patient).await.unwrap();
    gp.update_registrations(&[(token, vec!["medication".into()])], true)
        .await
        .unwrap();
    let (status, rotated) = send(
        &hub,
        reqwest::Method::POST,
        &format!("/registry/organisations/{GP}/key"),
        Some(&gp_key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let new_key = rotated["api_key"].as_str().unwrap().to_string();
    assert!(
        gp.referral_index_token(&patient).await.is_err(),
        "the old key stops working"
    );

    let mut hub = hub;
    hub.stop().await;
    let dir = std::mem::replace(&mut hub.dir, tempfile::tempdir().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(zorgnet_hub::ADMIN_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the admin key is readable by its owner only"
        );
    }
    let restarted = support::start_in(dir, None).await;
    assert_eq!(restarted.admin_key, hub.admin_key);
    let gp = restarted.client(&new_key);
    let token = gp.referral_index_token(&patient).await.unwrap();
    let again = gp
        .update_registrations(&[(token, vec!["medication".into()])], true)
        .await
        .unwrap();
    assert_eq!(
        again.changed, 0,
        "the same person gets the same pseudonym after a restart"
    );
}

#[tokio::test]
async fn every_documented_path_is_served() {
    let hub = support::start(None).await;
    let (status, document) = send(&hub, reqwest::Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, operations) in paths {
        let concrete = path
            .replace("{ura}", GP)
            .replace("{recipient}", "nvi")
            .replace("{id}", "no-such-directive")
            .replace("{type}", "Organization");
        for method in operations
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = reqwest::Client::new()
                .request(method.clone(), format!("{}{concrete}", hub.base))
                .bearer_auth(&hub.admin_key)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED
                    && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
}
