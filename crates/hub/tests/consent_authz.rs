//! Who may record, revoke and read consent directives, and ask decisions: an attacker
//! organisation holding a valid key tries to undo the operator's and another organisation's
//! directives, to read them, and to ask decisions about data it does not hold; the patient's
//! data stays refused. On both storage backends.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestHub, call_hub, node_with_access, person_token, relation};
use zorgnet_trust::token::{Purpose, TokenRequest};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const ATTACKER: &str = "00000044";
const CLERK: &str = "00000066";
const PORTAL: &str = "00000077";
const BSN: &str = "123456782";
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";

/// The consent register of one hub, about the one person; exchange tokens naming the
/// person are made with the key of a clerk organisation that takes no other part (the
/// operator's key cannot ask the pseudonym service).
struct Register<'a> {
    hub: &'a TestHub,
    clerk: String,
}

impl Register<'_> {
    async fn of(hub: &TestHub) -> Register<'_> {
        let clerk = hub.organisation(CLERK, "Griffie").await;
        Register { hub, clerk }
    }

    async fn token(&self) -> Value {
        person_token(self.hub, &self.clerk, BSN).await
    }

    async fn record(&self, key: &str, directive: Value) -> Value {
        let mut body = directive;
        body["token"] = self.token().await;
        let (status, recorded) = call_hub(
            self.hub,
            Method::POST,
            "/consent/directives",
            Some(key),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{recorded}");
        recorded
    }

    async fn revoke(&self, key: Option<&str>, id: &str) -> (StatusCode, Value) {
        let body = json!({"token": self.token().await});
        let path = format!("/consent/directives/{id}/revoke");
        call_hub(self.hub, Method::POST, &path, key, Some(body)).await
    }

    async fn query(&self, key: Option<&str>) -> (StatusCode, Value) {
        let body = json!({"token": self.token().await});
        call_hub(
            self.hub,
            Method::POST,
            "/consent/directives/query",
            key,
            Some(body),
        )
        .await
    }

    async fn decision(&self, key: &str, question: Value) -> (StatusCode, Value) {
        let mut body = question;
        body["token"] = self.token().await;
        call_hub(
            self.hub,
            Method::POST,
            "/consent/decision",
            Some(key),
            Some(body),
        )
        .await
    }
}

fn ids(directives: &Value) -> Vec<String> {
    let mut ids: Vec<String> = directives
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["directive_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_organisation_manages_only_the_directives_it_recorded() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let register = Register::of(&hub).await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let admin = hub.admin_key.clone();

        let by_operator = register.record(&admin, json!({"kind": "opt-out"})).await;
        assert_eq!(by_operator["recorded_by"], "operator");
        let by_hospital = register
            .record(&hospital_key, json!({"kind": "emergency-opt-out"}))
            .await;
        assert_eq!(by_hospital["recorded_by"], HOSPITAL);
        let operator_id = by_operator["directive_id"].as_str().unwrap().to_string();
        let hospital_id = by_hospital["directive_id"].as_str().unwrap().to_string();

        // Revoking another's directive answers exactly as an unknown id does.
        let (unknown_status, unknown) = register
            .revoke(Some(&attacker_key), &uuid::Uuid::new_v4().to_string())
            .await;
        assert_eq!(unknown_status, StatusCode::NOT_FOUND, "{unknown}");
        for id in [&operator_id, &hospital_id] {
            let (status, refused) = register.revoke(Some(&attacker_key), id).await;
            assert_eq!(
                (status, &refused),
                (unknown_status, &unknown),
                "{backend}: another's directive looks unknown"
            );
        }
        let (status, _) = register.revoke(Some(&hospital_key), &operator_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend}");
        let (status, _) = register.revoke(None, &hospital_id).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Reading: nothing of others', not even that they exist.
        let (status, seen) = register.query(Some(&attacker_key)).await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        assert_eq!(seen, json!({"current": [], "history": []}), "{backend}");
        let (status, _) = register.query(None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // The attacker records on the patient's behalf, then reads: only its own.
        let own = register
            .record(
                &attacker_key,
                json!({"kind": "opt-out", "category": "imaging"}),
            )
            .await;
        assert_eq!(own["recorded_by"], ATTACKER);
        let own_id = own["directive_id"].as_str().unwrap().to_string();
        let (_, seen) = register.query(Some(&attacker_key)).await;
        assert_eq!(
            ids(&seen["current"]),
            std::slice::from_ref(&own_id),
            "{backend}: {seen}"
        );
        assert_eq!(
            ids(&seen["history"]),
            std::slice::from_ref(&own_id),
            "{backend}: {seen}"
        );
        assert!(!seen.to_string().contains("operator"), "{seen}");
        assert!(!seen.to_string().contains(HOSPITAL), "{seen}");
        let (_, seen) = register.query(Some(&hospital_key)).await;
        assert_eq!(
            ids(&seen["current"]),
            std::slice::from_ref(&hospital_id),
            "{backend}"
        );

        // The operator reads and revokes everything.
        let (_, everything) = register.query(Some(&admin)).await;
        let mut all = vec![operator_id.clone(), hospital_id.clone(), own_id.clone()];
        all.sort();
        assert_eq!(ids(&everything["current"]), all, "{backend}");
        let (status, revoked) = register.revoke(Some(&admin), &own_id).await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert_eq!(revoked["recorded_by"], "operator");

        // Its own, the hospital revokes; twice is a conflict it may learn of.
        let (status, revoked) = register.revoke(Some(&hospital_key), &hospital_id).await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert_eq!(
            (revoked["version"].as_i64(), revoked["recorded_by"].as_str()),
            (Some(2), Some(HOSPITAL))
        );
        let (status, _) = register.revoke(Some(&hospital_key), &hospital_id).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (_, seen) = register.query(Some(&hospital_key)).await;
        assert_eq!(seen["history"].as_array().unwrap().len(), 2, "{seen}");

        let (_, everything) = register.query(Some(&admin)).await;
        let current = everything["current"].as_array().unwrap();
        let operator_now = current
            .iter()
            .find(|d| d["directive_id"] == operator_id.as_str())
            .unwrap();
        assert_eq!(
            (
                operator_now["status"].as_str(),
                operator_now["version"].as_i64()
            ),
            (Some("active"), Some(1)),
            "{backend}: the failed revocations changed nothing"
        );
    }
}

#[tokio::test]
async fn a_citizen_manages_every_directive_of_their_own_through_a_citizen_portal() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let register = Register::of(&hub).await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let portal_key = hub.organisation(PORTAL, "Mijn Gezondheidsoverzicht").await;
        let admin = hub.admin_key.clone();
        let by_operator = register.record(&admin, json!({"kind": "opt-out"})).await;
        let by_hospital = register
            .record(&hospital_key, json!({"kind": "emergency-opt-out"}))
            .await;
        let hospital_id = by_hospital["directive_id"].as_str().unwrap().to_string();

        // Before the operator admits it, the portal is an organisation like any other.
        let (_, seen) = register.query(Some(&portal_key)).await;
        assert_eq!(seen, json!({"current": [], "history": []}), "{backend}");
        let (status, _) = register.revoke(Some(&portal_key), &hospital_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend}");

        hub.state.admit_citizen_portal(PORTAL);
        let (status, seen) = register.query(Some(&portal_key)).await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        let mut both = vec![
            by_operator["directive_id"].as_str().unwrap().to_string(),
            hospital_id.clone(),
        ];
        both.sort();
        assert_eq!(ids(&seen["current"]), both, "{backend}: every directive");
        let (status, revoked) = register.revoke(Some(&portal_key), &hospital_id).await;
        assert_eq!(status, StatusCode::OK, "{backend}: {revoked}");
        assert_eq!(revoked["recorded_by"], "citizen");
        let own = register
            .record(
                &portal_key,
                json!({"kind": "opt-out", "category": "medication"}),
            )
            .await;
        assert_eq!(own["recorded_by"], "citizen", "{backend}");

        // What the citizen recorded is theirs: an organisation neither sees nor revokes it.
        let own_id = own["directive_id"].as_str().unwrap();
        let (_, seen) = register.query(Some(&hospital_key)).await;
        assert!(
            !ids(&seen["current"]).contains(&own_id.to_string()),
            "{seen}"
        );
        let (status, _) = register.revoke(Some(&hospital_key), own_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend}");
        let (_, everything) = register.query(Some(&admin)).await;
        assert!(
            ids(&everything["current"]).contains(&own_id.to_string()),
            "{backend}: the operator sees it"
        );
    }
}

#[tokio::test]
async fn decisions_are_asked_by_the_holder_and_answer_with_a_class() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let register = Register::of(&hub).await;
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        relation(&hub, &hospital_key, BSN).await;
        relation(&hub, &attacker_key, BSN).await;
        let medication = |requester: &str| json!({"requester_ura": requester, "holder_ura": GP, "category": "medication"});

        let (status, answer) = register.decision(&gp_key, medication(HOSPITAL)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            answer,
            json!({"decision": "permit", "reason": "treatment-relation"})
        );

        // Asking about the GP's data is the GP's question only.
        for (key, question) in [
            (&attacker_key, medication(ATTACKER)),
            (&attacker_key, medication(HOSPITAL)),
            (&hospital_key, medication(HOSPITAL)),
        ] {
            let (status, refused) = register.decision(key, question).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{backend}: {refused}");
        }
        let (status, _) = register
            .decision(&hub.admin_key, medication(HOSPITAL))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the operator holds no data");
        let (status, answer) = register
            .decision(
                &attacker_key,
                json!({"requester_ura": HOSPITAL, "category": "medication"}),
            )
            .await;
        assert_eq!(
            (status, &answer["reason"]),
            (StatusCode::OK, &json!("treatment-relation")),
            "without holder_ura the caller is the holder: {answer}"
        );

        // An opt-out denies with a class that does not name it.
        register
            .record(
                &hub.admin_key,
                json!({"kind": "opt-out", "category": "medication"}),
            )
            .await;
        let (_, answer) = register.decision(&gp_key, medication(HOSPITAL)).await;
        assert_eq!(
            answer,
            json!({"decision": "deny", "reason": "not-permitted"})
        );
        let (_, answer) = register
            .decision(
                &gp_key,
                json!({"requester_ura": "00000055", "holder_ura": GP, "category": "medication"}),
            )
            .await;
        assert_eq!(
            answer,
            json!({"decision": "deny", "reason": "no-basis"}),
            "{backend}: without a basis nothing about the choices shows"
        );
    }
}

#[tokio::test]
async fn after_failed_revocations_the_patients_data_stays_refused() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let register = Register::of(&hub).await;
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let ask_every_time = zorgnet_node::access::AccessConfig {
            decision_ttl: std::time::Duration::ZERO,
        };
        let gp = node_with_access(&hub, GP, &gp_key, true, ask_every_time).await;
        let created = reqwest::Client::new()
            .post(format!("{}/Patient", gp.base))
            .header("content-type", "application/fhir+json")
            .body(
                json!({"resourceType": "Patient",
                    "identifier": [{"system": BSN_SYSTEM, "value": BSN}]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let patient: Value = created.json().await.unwrap();
        let patient_id = patient["id"].as_str().unwrap();
        let patient_url = format!("{}/Patient/{patient_id}", gp.base);
        let created = reqwest::Client::new()
            .post(format!("{}/MedicationStatement", gp.base))
            .header("content-type", "application/fhir+json")
            .body(
                json!({"resourceType": "MedicationStatement", "status": "active",
                    "medicationCodeableConcept": {"text": "metformine 500 mg"},
                    "subject": {"reference": format!("Patient/{patient_id}")}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);

        // The attacker has a key, a relation and a token: everything but the patient's leave.
        relation(&hub, &attacker_key, BSN).await;
        let registered = reqwest::Client::new()
            .put(format!("{}/professionals/900000044", hub.base))
            .bearer_auth(&hub.admin_key)
            .json(&json!({"name": "Dr. Aanvaller", "roles": [{"ura": ATTACKER, "role": "01.015"}]}))
            .send()
            .await
            .unwrap();
        assert!(registered.status().is_success());
        let token = hub
            .client(&attacker_key)
            .access_token(&TokenRequest {
                audience: GP.into(),
                uzi: Some("900000044".into()),
                role: Some("01.015".into()),
                purpose: Purpose::Treatment,
                reason: None,
            })
            .await
            .unwrap()
            .access_token;
        let read = || async {
            let response = reqwest::Client::new()
                .get(&patient_url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        };
        let (status, body) = read().await;
        assert_eq!(status, StatusCode::OK, "{backend}: {body}");
        let lookup = || async {
            call_hub(
                &hub,
                Method::POST,
                "/nvi/lookup",
                Some(&attacker_key),
                Some(
                    json!({"token": person_token(&hub, &attacker_key, BSN).await,
                    "categories": ["medication"]}),
                ),
            )
            .await
        };
        let started = std::time::Instant::now();
        while lookup().await.1["organisations"] == json!([]) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{backend}: the GP's registration never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }

        let by_operator = register
            .record(&hub.admin_key, json!({"kind": "opt-out"}))
            .await;
        let by_hospital = register
            .record(&hospital_key, json!({"kind": "opt-out"}))
            .await;
        for directive in [&by_operator, &by_hospital] {
            let id = directive["directive_id"].as_str().unwrap();
            let (status, _) = register.revoke(Some(&attacker_key), id).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        let (status, body) = read().await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{backend}: {body}");
        assert!(
            body.contains(zorgnet_node::access::NOT_PERMITTED) && !body.contains("opted out"),
            "{body}"
        );
        let (status, holders) = lookup().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(holders, json!({"organisations": []}), "{backend}");
        drop(gp);
    }
}
