//! Access at the source: a node serves another organisation only what the hub's consent
//! register permits, recognising the organisation by the hub-signed access token it shows.
//! The hospital fetches a patient's medication from the GP (who asks the consent register
//! every time) and the pharmacy (who remembers answers for an hour); the patient opts out;
//! the hub goes down.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use support::{TestHub, node, node_with_access};
use zorgnet_node::access::AccessConfig;
use zorgnet_node::hub_client::token_value;
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_trust::token::{AccessClaims, Purpose, TokenRequest};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const PHARMACY: &str = "00000033";
const BSN: &str = "123456782";
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// A pharmacist at the hospital, in the hub's professional register.
const PHARMACIST_UZI: &str = "900000017";
/// A GP working at the hospital's first-aid post, in the professional register.
const DOCTOR_UZI: &str = "900000016";
const WAIT: Duration = Duration::from_secs(20);

/// Sends a request with an optional `Authorization` value; answers status and JSON body.
async fn call(
    method: Method,
    url: &str,
    authorization: Option<String>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/fhir+json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

async fn create(base: &str, resource: Value) -> String {
    let url = format!("{base}/{}", resource["resourceType"].as_str().unwrap());
    let (status, created) = call(Method::POST, &url, None, Some(resource)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_string()
}

async fn patient(base: &str) -> String {
    create(
        base,
        json!({"resourceType": "Patient", "identifier": [{"system": BSN_SYSTEM, "value": BSN}]}),
    )
    .await
}

async fn statement(base: &str, patient: &str, medicine: &str) {
    create(
        base,
        json!({"resourceType": "MedicationStatement", "status": "active",
            "medicationCodeableConcept": {"text": medicine},
            "subject": {"reference": format!("Patient/{patient}")}}),
    )
    .await;
}

async fn prescription(base: &str, patient: &str, medicine: &str) {
    create(
        base,
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": medicine},
            "subject": {"reference": format!("Patient/{patient}")}}),
    )
    .await;
}

/// `{base}/{resource_type}?patient.identifier=<BSN system>|<BSN>`, as `$fetch` asks.
fn by_bsn(base: &str, resource_type: &str) -> String {
    format!("{base}/{resource_type}?patient.identifier={BSN_SYSTEM}%7C{BSN}")
}

/// The resources of a Bundle, without OperationOutcomes.
fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] != "OperationOutcome")
        .collect()
}

fn medicines(bundle: &Value) -> Vec<String> {
    let mut found: Vec<String> = resources(bundle)
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["resourceType"].as_str().unwrap(),
                r["medicationCodeableConcept"]["text"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    found
}

fn issues(bundle: &Value) -> Vec<(String, String)> {
    bundle["entry"][0]["resource"]["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["severity"].as_str().unwrap().to_string(),
                i["diagnostics"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn diagnostics(outcome: &Value) -> String {
    outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A token for `audience`: a system token, or one naming the professional `(uzi, role)`.
async fn access_token(
    hub: &TestHub,
    key: &str,
    audience: &str,
    professional: Option<(&str, &str)>,
) -> String {
    let request = TokenRequest {
        audience: audience.into(),
        uzi: professional.map(|(uzi, _)| uzi.into()),
        role: professional.map(|(_, role)| role.into()),
        purpose: Purpose::Treatment,
        reason: None,
    };
    hub.client(key)
        .access_token(&request)
        .await
        .unwrap()
        .access_token
}

/// Puts a professional in the hub's register with `roles` as (URA, role code).
async fn professional(hub: &TestHub, uzi: &str, roles: &[(&str, &str)]) {
    let roles: Vec<Value> = roles
        .iter()
        .map(|(ura, role)| json!({"ura": ura, "role": role}))
        .collect();
    let response = reqwest::Client::new()
        .put(format!("{}/professionals/{uzi}", hub.base))
        .bearer_auth(&hub.admin_key)
        .json(&json!({"name": "Zorgverlener", "roles": roles}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

async fn record_directive(hub: &TestHub, key: &str, directive: Value) {
    let client = hub.client(key);
    let person = PersonalId::from(Bsn::parse(BSN).unwrap());
    let token = client.referral_index_token(&person).await.unwrap();
    let mut body = directive;
    body["token"] = token_value(&token);
    client.post("/consent/directives", &body).await.unwrap();
}

/// Waits until the hospital's `$localize` finds `expected` sources of medication.
async fn await_sources(hub: &TestHub, hospital: &support::TestNode, key: &str, expected: usize) {
    let sync = reqwest::Client::new()
        .post(format!("{}/addressing/sync", hub.base))
        .bearer_auth(&hub.admin_key)
        .send()
        .await
        .unwrap();
    assert!(sync.status().is_success(), "{}", sync.text().await.unwrap());
    hospital
        .cache
        .as_ref()
        .unwrap()
        .sync(&hub.base, key)
        .await
        .unwrap();
    let localize = format!(
        "{}/$localize?patient.identifier={BSN}&category=medication",
        hospital.base
    );
    let started = std::time::Instant::now();
    loop {
        let (status, parameters) = call(Method::GET, &localize, None, None).await;
        assert_eq!(status, StatusCode::OK, "{parameters}");
        let found = parameters["parameter"].as_array().map_or(0, Vec::len);
        if found == expected {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "still {found} sources: {parameters}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sources_serve_other_organisations_what_the_consent_register_permits() {
    for mut hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let pharmacy_key = hub.organisation(PHARMACY, "Apotheek").await;
        let ask_every_time = AccessConfig {
            decision_ttl: Duration::ZERO,
        };
        let remember_an_hour = AccessConfig {
            decision_ttl: Duration::from_secs(3600),
        };
        let gp = node_with_access(&hub, GP, &gp_key, true, ask_every_time).await;
        let pharmacy =
            node_with_access(&hub, PHARMACY, &pharmacy_key, true, remember_an_hour).await;
        let hospital = node(&hub, HOSPITAL, &hospital_key, true).await;
        support::relation(&hub, &hospital_key, BSN).await;
        let gp_patient = patient(&gp.base).await;
        statement(&gp.base, &gp_patient, "metformine 500 mg").await;
        prescription(&gp.base, &gp_patient, "metformine 500 mg 2dd").await;
        let pharmacy_patient = patient(&pharmacy.base).await;
        statement(&pharmacy.base, &pharmacy_patient, "metformine, 90 stuks").await;
        await_sources(&hub, &hospital, &hospital_key, 2).await;

        // The hospital's $fetch shows its token; both sources permit and answer.
        professional(&hub, DOCTOR_UZI, &[(HOSPITAL, "01.015")]).await;
        let fetch = format!(
            "{}/$fetch?patient.identifier={BSN}&category=medication&uzi={DOCTOR_UZI}&role=01.015",
            hospital.base
        );
        let (status, bundle) = call(Method::GET, &fetch, None, None).await;
        assert_eq!(status, StatusCode::OK, "{bundle}");
        assert!(
            issues(&bundle)
                .iter()
                .all(|(severity, _)| severity == "information"),
            "{}: {bundle}",
            hub.backend
        );
        assert_eq!(
            medicines(&bundle),
            [
                "MedicationRequest: metformine 500 mg 2dd",
                "MedicationStatement: metformine 500 mg",
                "MedicationStatement: metformine, 90 stuks"
            ]
        );

        // Directly, with the hospital's token: one patient's data, nothing else.
        professional(&hub, DOCTOR_UZI, &[(HOSPITAL, "01.015")]).await;
        let hospital_token =
            access_token(&hub, &hospital_key, GP, Some((DOCTOR_UZI, "01.015"))).await;
        let statements = by_bsn(&gp.base, "MedicationStatement");
        let (status, found) = call(Method::GET, &statements, bearer(&hospital_token), None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(resources(&found).len(), 1);
        let patient_url = format!("{}/Patient/{gp_patient}", gp.base);
        let (status, read) = call(Method::GET, &patient_url, bearer(&hospital_token), None).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["id"], gp_patient.as_str());
        for (method, url, body) in [
            (
                Method::POST,
                format!("{}/MedicationStatement", gp.base),
                Some(
                    json!({"resourceType": "MedicationStatement", "status": "active",
                    "medicationCodeableConcept": {"text": "x"},
                    "subject": {"reference": format!("Patient/{gp_patient}")}}),
                ),
            ),
            (Method::DELETE, patient_url.clone(), None),
            (
                Method::GET,
                format!("{}/MedicationStatement", gp.base),
                None,
            ),
            (
                Method::GET,
                format!("{}/Patient/{gp_patient}/_history", gp.base),
                None,
            ),
            (Method::GET, format!("{}/Organization", gp.base), None),
        ] {
            let (status, refused) = call(method.clone(), &url, bearer(&hospital_token), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {url}: {refused}");
            assert_eq!(refused["resourceType"], "OperationOutcome");
        }
        let (status, all) = call(
            Method::GET,
            &format!("{}/MedicationStatement", gp.base),
            bearer(&access_token(&hub, &gp_key, GP, None).await),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the GP's own token is served like a local client"
        );
        assert_eq!(resources(&all).len(), 1);
        let (status, local) = call(Method::GET, &statements, None, None).await;
        assert_eq!(status, StatusCode::OK, "no token: a local client");
        assert_eq!(resources(&local).len(), 1);

        // Tokens that are not the hub's, or no longer valid, are refused.
        let [header, payload, signature]: [&str; 3] = hospital_token
            .split('.')
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["ura"] = json!(GP);
        let impersonating = format!(
            "{header}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let issuer = zorgnet_hub::trust::TokenIssuer::open(hub.dir.path()).unwrap();
        let now = zorgnet_db::now_ms() / 1000;
        let claims_at = |iat: i64, exp: i64, aud: &str| AccessClaims {
            ura: HOSPITAL.into(),
            uzi: None,
            role: None,
            purpose: Purpose::Treatment,
            reason: None,
            iat,
            exp,
            aud: aud.into(),
            cnf: None,
        };
        let expired = issuer.issue(&claims_at(now - 3600, now - 1800, GP));
        let for_the_pharmacy = issuer.issue(&claims_at(now, now + 300, PHARMACY));
        let for_anyone = issuer.issue(&claims_at(now, now + 300, ""));
        let mut other_hub = support::start(None).await;
        let other_key = other_hub.organisation(HOSPITAL, "Ziekenhuis").await;
        other_hub.organisation(GP, "Huisarts").await;
        let foreign = access_token(&other_hub, &other_key, GP, None).await;
        other_hub.stop().await;
        for authorization in [
            bearer(&impersonating),
            bearer(&expired),
            bearer(&for_the_pharmacy),
            bearer(&for_anyone),
            bearer(&foreign),
            bearer("not-a-token"),
            bearer(&hospital_key),
            Some(format!(
                "Basic {}",
                URL_SAFE_NO_PAD.encode(format!("{HOSPITAL}:secret"))
            )),
        ] {
            let (status, refused) =
                call(Method::GET, &statements, authorization.clone(), None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{authorization:?}: {refused}"
            );
            assert_eq!(refused["resourceType"], "OperationOutcome");
        }

        // A pharmacist may not see the patient summary: a MedicationStatement (medication
        // and patient summary) is refused, a MedicationRequest (medication only) is not.
        professional(&hub, PHARMACIST_UZI, &[(HOSPITAL, "17.000")]).await;
        let pharmacist =
            access_token(&hub, &hospital_key, GP, Some((PHARMACIST_UZI, "17.000"))).await;
        let (status, refused) = call(Method::GET, &statements, bearer(&pharmacist), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
        assert!(
            diagnostics(&refused).contains("reason class: role"),
            "{refused}"
        );
        let prescriptions = by_bsn(&gp.base, "MedicationRequest");
        let (status, found) = call(Method::GET, &prescriptions, bearer(&pharmacist), None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(resources(&found).len(), 1);

        // The patient opts out of sharing the patient summary. The referral index still
        // lists both sources for medication; the GP asks the consent register again and
        // refuses its MedicationStatement, the pharmacy still has its answer of an hour.
        record_directive(
            &hub,
            &hospital_key,
            json!({"kind": "opt-out", "category": "patient-summary"}),
        )
        .await;
        let (status, bundle) = call(Method::GET, &fetch, None, None).await;
        assert_eq!(status, StatusCode::OK, "{bundle}");
        let refusals: Vec<String> = issues(&bundle)
            .into_iter()
            .filter(|(severity, _)| severity == "warning")
            .map(|(_, diagnostics)| diagnostics)
            .collect();
        assert_eq!(refusals.len(), 1, "{bundle}");
        assert!(
            refusals[0].contains(GP)
                && refusals[0].contains("refused by consent")
                && refusals[0].contains("MedicationStatement")
                && refusals[0].contains("reason class: policy")
                && !refusals[0].contains("opted out"),
            "{}",
            refusals[0]
        );
        assert_eq!(
            medicines(&bundle),
            [
                "MedicationRequest: metformine 500 mg 2dd",
                "MedicationStatement: metformine, 90 stuks"
            ]
        );
        let (status, everything) = call(
            Method::GET,
            &format!("{}/Patient/{gp_patient}/$everything", gp.base),
            bearer(&hospital_token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{everything}");
        assert_eq!(
            medicines(&everything),
            ["MedicationRequest: metformine 500 mg 2dd"],
            "the Patient and the statement are patient summary: withheld"
        );
        assert!(everything.get("total").is_none(), "{everything}");
        assert!(
            everything.to_string().contains("patient-summary (policy)"),
            "{everything}"
        );
        let (status, _) = call(Method::GET, &patient_url, bearer(&hospital_token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // An opt-out of medication hides both sources at the referral index, so the fetch
        // finds no medication; a source asked directly refuses with the reason.
        record_directive(
            &hub,
            &hospital_key,
            json!({"kind": "opt-out", "category": "medication"}),
        )
        .await;
        let (status, bundle) = call(Method::GET, &fetch, None, None).await;
        assert_eq!(status, StatusCode::OK, "{bundle}");
        assert!(resources(&bundle).is_empty(), "{bundle}");
        let (status, refused) =
            call(Method::GET, &prescriptions, bearer(&hospital_token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
        assert!(
            diagnostics(&refused).contains(zorgnet_node::access::NOT_PERMITTED),
            "{refused}"
        );
        let (status, local) = call(Method::GET, &prescriptions, None, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "local clients are not subject to consent"
        );
        assert_eq!(resources(&local).len(), 1);

        // The hub goes down. The GP, with no answer in memory, fails closed; the pharmacy
        // serves on its remembered answer; local clients are served as ever.
        let hospital_token_for_the_pharmacy =
            access_token(&hub, &hospital_key, PHARMACY, Some((DOCTOR_UZI, "01.015"))).await;
        hub.stop().await;
        let (status, unavailable) =
            call(Method::GET, &prescriptions, bearer(&hospital_token), None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{unavailable}");
        assert_eq!(unavailable["resourceType"], "OperationOutcome");
        let (status, local) = call(Method::GET, &prescriptions, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(resources(&local).len(), 1);
        let (status, remembered) = call(
            Method::GET,
            &by_bsn(&pharmacy.base, "MedicationStatement"),
            bearer(&hospital_token_for_the_pharmacy),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{remembered}");
        assert_eq!(resources(&remembered).len(), 1);
        drop((gp, pharmacy, hospital));
    }
}

#[tokio::test]
async fn the_hub_issues_tokens_to_organisations_and_publishes_its_key() {
    for hub in support::hubs().await {
        let key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let token_url = format!("{}/trust/token", hub.base);
        let post = |authorization: Option<String>, body: Value| {
            let url = token_url.clone();
            async move {
                let mut request = reqwest::Client::new().post(url).json(&body);
                if let Some(authorization) = authorization {
                    request = request.header("authorization", authorization);
                }
                let response = request.send().await.unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            }
        };
        hub.organisation(GP, "Huisarts").await;
        professional(&hub, "900000015", &[(HOSPITAL, "01.015")]).await;
        let (status, issued) = post(
            bearer(&key),
            json!({"uzi": "900000015", "role": "01.015", "purpose": "emergency",
                "reason": "unconscious at the ER", "audience": GP}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{issued}");
        assert_eq!(issued["token_type"], "Bearer");
        assert_eq!(issued["expires_in"], 300);

        let (status, set) =
            call(Method::GET, &format!("{}/trust/keys", hub.base), None, None).await;
        assert_eq!(status, StatusCode::OK, "no credentials needed");
        let keys = zorgnet_trust::token::parse_key_set(&set);
        assert_eq!(keys.len(), 1, "{set}");
        let token = issued["access_token"].as_str().unwrap();
        let key_id = zorgnet_trust::token::key_id_of(token).unwrap();
        let claims =
            zorgnet_trust::token::verify(token, &keys[&key_id], GP, zorgnet_db::now_ms() / 1000)
                .unwrap();
        assert_eq!(claims.ura, HOSPITAL);
        assert_eq!(claims.uzi.as_deref(), Some("900000015"));
        assert_eq!(claims.role.as_deref(), Some("01.015"));
        assert_eq!(claims.purpose, Purpose::Emergency);
        assert_eq!(claims.reason.as_deref(), Some("unconscious at the ER"));
        assert_eq!(claims.aud, GP);
        assert_eq!(claims.exp - claims.iat, 300);

        for (authorization, body, expected) in [
            (None, json!({}), StatusCode::UNAUTHORIZED),
            (bearer(&hub.admin_key), json!({}), StatusCode::FORBIDDEN),
            (
                bearer(&key),
                json!({"uzi": "900000015", "role": "huisarts", "audience": GP}),
                StatusCode::BAD_REQUEST,
            ),
            (
                bearer(&key),
                json!({"purpose": "curiosity", "audience": GP}),
                StatusCode::BAD_REQUEST,
            ),
            (
                bearer(&key),
                json!({"audience": "GP"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                bearer(&key),
                json!({"ura": GP, "audience": GP}),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let (status, problem) = post(authorization, body.clone()).await;
            assert_eq!(status, expected, "{body}: {problem}");
        }

        if hub.backend == "sqlite" {
            let restarted_keys = {
                let mut hub = hub;
                hub.stop().await;
                let restarted = support::start_in(hub.dir, None).await;
                let (_, set) = call(
                    Method::GET,
                    &format!("{}/trust/keys", restarted.base),
                    None,
                    None,
                )
                .await;
                set
            };
            assert_eq!(restarted_keys, set, "the signing key survives a restart");
        }
    }
}

/// `POST`s `body` as `content_type` with an optional `Authorization` value.
async fn post_as(
    url: &str,
    authorization: Option<String>,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn parameters(list: &[Value]) -> String {
    if list.is_empty() {
        // FHIR forbids empty arrays: no parameters is no `parameter`.
        return json!({"resourceType": "Parameters"}).to_string();
    }
    json!({"resourceType": "Parameters", "parameter": list}).to_string()
}

/// `type/id` of every resource of a Bundle but OperationOutcomes, sorted.
fn references(bundle: &Value) -> Vec<String> {
    let mut found: Vec<String> = resources(bundle)
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_posted_everything_is_scoped_and_filtered_exactly_like_a_get() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let ask_every_time = AccessConfig {
            decision_ttl: Duration::ZERO,
        };
        let gp = node_with_access(&hub, GP, &gp_key, true, ask_every_time).await;
        support::relation(&hub, &hospital_key, BSN).await;
        support::relation(&hub, &hospital_key, "111222333").await;
        let named = patient(&gp.base).await;
        statement(&gp.base, &named, "metformine 500 mg").await;
        prescription(&gp.base, &named, "metformine 500 mg 2dd").await;
        let other = create(
            &gp.base,
            json!({"resourceType": "Patient",
                "identifier": [{"system": BSN_SYSTEM, "value": "111222333"}]}),
        )
        .await;
        prescription(&gp.base, &other, "insuline").await;
        create(
            &gp.base,
            json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": format!("Patient/{named}")}}),
        )
        .await;
        professional(&hub, DOCTOR_UZI, &[(HOSPITAL, "01.015")]).await;
        let token =
            bearer(&access_token(&hub, &hospital_key, GP, Some((DOCTOR_UZI, "01.015"))).await);
        let everything = |id: &str| format!("{}/Patient/{id}/$everything", gp.base);
        let fhir_json = "application/fhir+json";
        let by_get = |query: &str| {
            let url = format!("{}{query}", everything(&named));
            let token = token.clone();
            async move { call(Method::GET, &url, token, None).await }
        };

        let (status, got) = by_get("").await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let baseline = references(&got);
        assert_eq!(
            baseline.len(),
            3,
            "the patient, the statement and the prescription; no Encounter (no category): {got}"
        );
        assert!(!got.to_string().contains("insuline"), "{got}");

        // The body may not widen what the path names: another patient in any parameter
        // changes nothing, and the answer is filtered as the GET's.
        for body in [
            String::new(),
            parameters(&[]),
            parameters(&[
                json!({"name": "patient", "valueReference": {"reference": format!("Patient/{other}")}}),
            ]),
            parameters(&[json!({"name": "_id", "valueId": other})]),
            parameters(&[json!({"name": "patient.identifier", "valueIdentifier":
                    {"system": BSN_SYSTEM, "value": "111222333"}})]),
        ] {
            let (status, posted) =
                post_as(&everything(&named), token.clone(), fhir_json, body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{body}: {posted}");
            assert_eq!(references(&posted), baseline, "{}: {body}", hub.backend);
            assert!(!posted.to_string().contains("insuline"), "{posted}");
        }
        let (status, posted) = post_as(
            &everything(&other),
            token.clone(),
            fhir_json,
            parameters(&[
                json!({"name": "patient", "valueReference": {"reference": format!("Patient/{named}")}}),
            ]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{posted}");
        let theirs = references(&posted);
        assert_eq!(theirs.len(), 2, "{posted}");
        assert!(
            theirs.contains(&format!("Patient/{other}")) && posted.to_string().contains("insuline"),
            "{posted}"
        );
        assert!(
            !posted.to_string().contains("metformine"),
            "the other patient's $everything is theirs alone: {posted}"
        );

        // `_type` in the body scopes and refuses exactly as in the query.
        let (_, typed_get) = by_get("?_type=MedicationRequest").await;
        let (status, typed_post) = post_as(
            &everything(&named),
            token.clone(),
            fhir_json,
            parameters(&[json!({"name": "_type", "valueCode": "MedicationRequest"})]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{typed_post}");
        assert_eq!(references(&typed_post), references(&typed_get));
        assert_eq!(
            medicines(&typed_post),
            ["MedicationRequest: metformine 500 mg 2dd"]
        );
        let (get_status, _) = by_get("?_type=Encounter").await;
        assert_eq!(get_status, StatusCode::FORBIDDEN);
        for body in [
            parameters(&[json!({"name": "_type", "valueCode": "Encounter"})]),
            parameters(&[
                json!({"name": "_type", "valueCode": "Encounter"}),
                json!({"name": "_type", "valueCode": "Encounter"}),
            ]),
        ] {
            let (status, refused) =
                post_as(&everything(&named), token.clone(), fhir_json, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
            assert_eq!(refused["resourceType"], "OperationOutcome");
        }

        // Bodies the handler would refuse are refused before anything is asked or read.
        for (body, content_type, expected) in [
            (
                json!({"resourceType": "Patient"}).to_string(),
                fhir_json,
                StatusCode::BAD_REQUEST,
            ),
            ("{".to_string(), fhir_json, StatusCode::BAD_REQUEST),
            (
                "_type=MedicationRequest".to_string(),
                "application/x-www-form-urlencoded",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            // XML is read, but this is no FHIR document (no FHIR namespace).
            (
                "<Parameters/>".to_string(),
                "application/fhir+xml",
                StatusCode::BAD_REQUEST,
            ),
            (
                "<Parameters/>".to_string(),
                "text/plain",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
        ] {
            let (status, refused) = post_as(
                &everything(&named),
                token.clone(),
                content_type,
                body.clone(),
            )
            .await;
            assert_eq!(status, expected, "{body}: {refused}");
            assert_eq!(refused["resourceType"], "OperationOutcome", "{refused}");
        }

        // Other operations and POSTs stay closed to other organisations.
        for url in [
            format!("{}/$localize?patient.identifier={BSN}", gp.base),
            format!("{}/$fetch?patient.identifier={BSN}", gp.base),
            format!("{}/Patient/{named}/$nothing", gp.base),
            format!("{}/Patient/{named}/_history", gp.base),
            format!("{}/Patient/$everything", gp.base),
        ] {
            let (status, refused) = post_as(&url, token.clone(), fhir_json, parameters(&[])).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {refused}");
        }

        // After an opt-out, both withhold the same.
        record_directive(
            &hub,
            &hospital_key,
            json!({"kind": "opt-out", "category": "patient-summary"}),
        )
        .await;
        let (_, got) = by_get("").await;
        let (status, posted) =
            post_as(&everything(&named), token.clone(), fhir_json, String::new()).await;
        assert_eq!(status, StatusCode::OK, "{posted}");
        assert_eq!(
            medicines(&posted),
            ["MedicationRequest: metformine 500 mg 2dd"]
        );
        assert_eq!(references(&posted), references(&got));
        assert!(
            posted.to_string().contains("patient-summary (policy)"),
            "{posted}"
        );
        assert!(posted.get("total").is_none(), "{posted}");
        drop(gp);
    }
}

/// A token for `audience` of the professional `(uzi, role)` with `purpose` (and, for an
/// emergency, a reason).
async fn purpose_token(
    hub: &TestHub,
    key: &str,
    audience: &str,
    (uzi, role): (&str, &str),
    purpose: Purpose,
) -> String {
    let request = TokenRequest {
        audience: audience.into(),
        uzi: Some(uzi.into()),
        role: Some(role.into()),
        purpose,
        reason: (purpose == Purpose::Emergency)
            .then(|| "bewusteloos binnengebracht op de SEH".to_string()),
    };
    hub.client(key)
        .access_token(&request)
        .await
        .unwrap()
        .access_token
}

/// How many break-the-glass accesses the node's `/metrics` counted.
async fn emergency_accesses(base: &str) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", base.trim_end_matches("/fhir")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|line| line.starts_with("zorgnet_emergency_accesses_total"))
        .and_then(|line| line.split_whitespace().last())
        .map_or(0, |n| n.parse().unwrap())
}

/// The emergency department's doctor has no treatment relation with the patient: a
/// treatment read is refused; break-the-glass with a reason reads medication and allergies
/// and is counted as an emergency access; once the patient has an emergency opt-out, the
/// glass stays whole. With a relation, the doctor reads what is not opted out.
#[tokio::test]
async fn break_the_glass_needs_no_relation_but_yields_to_an_emergency_opt_out() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let gp = node_with_access(
            &hub,
            GP,
            &gp_key,
            true,
            AccessConfig {
                decision_ttl: Duration::ZERO,
            },
        )
        .await;
        let patient = patient(&gp.base).await;
        prescription(&gp.base, &patient, "metformine 500 mg 2dd").await;
        create(
            &gp.base,
            json!({"resourceType": "AllergyIntolerance",
                "code": {"text": "penicilline"},
                "patient": {"reference": format!("Patient/{patient}")}}),
        )
        .await;
        const ER_DOCTOR_UZI: &str = "900000018";
        professional(&hub, ER_DOCTOR_UZI, &[(HOSPITAL, "01.015")]).await;
        let doctor = (ER_DOCTOR_UZI, "01.015");
        let medication = format!("{}/MedicationRequest?patient={patient}", gp.base);
        let allergies = format!("{}/AllergyIntolerance?patient={patient}", gp.base);

        let treatment = purpose_token(&hub, &hospital_key, GP, doctor, Purpose::Treatment).await;
        let (status, refused) = call(Method::GET, &medication, bearer(&treatment), None).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{}: no relation: {refused}",
            hub.backend
        );

        let before = emergency_accesses(&gp.base).await;
        let emergency = purpose_token(&hub, &hospital_key, GP, doctor, Purpose::Emergency).await;
        let (status, found) = call(Method::GET, &medication, bearer(&emergency), None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(
            medicines(&found),
            ["MedicationRequest: metformine 500 mg 2dd"]
        );
        let (status, found) = call(Method::GET, &allergies, bearer(&emergency), None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert!(found.to_string().contains("penicilline"), "{found}");
        assert!(
            emergency_accesses(&gp.base).await >= before + 2,
            "each break-the-glass read is counted"
        );

        // With a treatment relation the doctor reads in treatment, what is not opted out.
        support::relation(&hub, &hospital_key, BSN).await;
        let (status, found) = call(Method::GET, &medication, bearer(&treatment), None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        record_directive(
            &hub,
            &gp_key,
            json!({"kind": "opt-out", "category": "medication"}),
        )
        .await;
        let (status, refused) = call(Method::GET, &medication, bearer(&treatment), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "opted out: {refused}");
        let (status, found) = call(Method::GET, &allergies, bearer(&treatment), None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "allergies are not opted out: {found}"
        );
        assert!(found.to_string().contains("penicilline"), "{found}");

        record_directive(&hub, &gp_key, json!({"kind": "emergency-opt-out"})).await;
        let emergency = purpose_token(&hub, &hospital_key, GP, doctor, Purpose::Emergency).await;
        for url in [&medication, &allergies] {
            let (status, refused) = call(Method::GET, url, bearer(&emergency), None).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "emergency opt-out: {refused}"
            );
            assert!(!refused.to_string().contains("opt"), "{refused}");
        }
        drop(gp);
    }
}
