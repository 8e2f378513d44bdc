//! Treatment relations: an organisation registers, lists and ends only its own; a relation
//! in force is the basis of a treatment decision and of a referral-index lookup, another
//! organisation's relation is none. On both storage backends.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestHub, call_hub, person_token};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const ATTACKER: &str = "00000044";
const BSN: &str = "123456782";
const OTHER_BSN: &str = "111222333";

async fn register(hub: &TestHub, key: &str, bsn: &str, body: Value) -> (StatusCode, Value) {
    let mut body = body;
    body["token"] = person_token(hub, key, bsn).await;
    call_hub(hub, Method::POST, "/relations", Some(key), Some(body)).await
}

async fn lookup(hub: &TestHub, key: &str, purpose: &str) -> Value {
    let body = json!({"token": person_token(hub, key, BSN).await,
        "categories": ["medication"], "purpose": purpose});
    let (status, answer) = call_hub(hub, Method::POST, "/nvi/lookup", Some(key), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn decision(hub: &TestHub, gp_key: &str, requester: &str) -> Value {
    let body = json!({"token": person_token(hub, gp_key, BSN).await,
        "requester_ura": requester, "category": "medication"});
    let (status, answer) = call_hub(
        hub,
        Method::POST,
        "/consent/decision",
        Some(gp_key),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

fn ids(answer: &Value) -> Vec<String> {
    answer["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relation_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_relation_is_registered_with_a_bounded_validity() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let (status, relation) = register(&hub, &key, BSN, json!({"kind": "referral"})).await;
        assert_eq!(status, StatusCode::CREATED, "{relation}");
        assert_eq!(
            (&relation["ura"], &relation["kind"], &relation["status"]),
            (&json!(HOSPITAL), &json!("referral"), &json!("active"))
        );
        let year = |field: &str| {
            relation[field].as_str().unwrap()[..4]
                .parse::<i32>()
                .unwrap()
        };
        assert_eq!(
            year("valid_until") - year("valid_from"),
            1,
            "{backend}: a year by default: {relation}"
        );

        for kind in ["consultation", "co-treatment", "own-patient"] {
            let (status, _) = register(&hub, &key, BSN, json!({"kind": kind})).await;
            assert_eq!(status, StatusCode::CREATED, "{kind}");
        }
        for (body, why) in [
            (json!({"kind": "friendship"}), "an unknown kind"),
            (
                json!({"kind": "referral", "valid_from": "2026-01-01", "valid_until": "2029-01-01"}),
                "longer than the maximum",
            ),
            (
                json!({"kind": "referral", "valid_from": "2026-01-01", "valid_until": "2026-01-01"}),
                "ends as it starts",
            ),
            (
                json!({"kind": "referral", "valid_from": "soon"}),
                "not a date",
            ),
            (
                json!({"kind": "referral", "ura": GP}),
                "for another organisation",
            ),
        ] {
            let (status, refused) = register(&hub, &key, BSN, body).await;
            assert!(
                status.is_client_error() && status != StatusCode::NOT_FOUND,
                "{backend}: {why}: {status} {refused}"
            );
        }
        let token = person_token(&hub, &key, BSN).await;
        let (status, _) = call_hub(
            &hub,
            Method::POST,
            "/relations",
            Some(&hub.admin_key),
            Some(json!({"token": token.clone(), "kind": "referral"})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the operator treats no one");
        let (status, _) = call_hub(
            &hub,
            Method::POST,
            "/relations",
            None,
            Some(json!({"token": token, "kind": "referral"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, own) = call_hub(&hub, Method::GET, "/relations", Some(&key), None).await;
        assert_eq!(ids(&own).len(), 4, "{backend}: nothing refused was stored");
    }
}

#[tokio::test]
async fn an_organisation_sees_and_ends_only_its_own_relations() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let (_, relation) = register(&hub, &hospital_key, BSN, json!({"kind": "referral"})).await;
        let id = relation["relation_id"].as_str().unwrap().to_string();
        let (_, other) = register(
            &hub,
            &hospital_key,
            OTHER_BSN,
            json!({"kind": "own-patient"}),
        )
        .await;

        let (_, listed) =
            call_hub(&hub, Method::GET, "/relations", Some(&attacker_key), None).await;
        assert_eq!(listed, json!({"relations": []}), "{backend}");
        let token = person_token(&hub, &attacker_key, BSN).await;
        let (_, queried) = call_hub(
            &hub,
            Method::POST,
            "/relations/query",
            Some(&attacker_key),
            Some(json!({"token": token})),
        )
        .await;
        assert_eq!(queried, json!({"relations": []}), "{backend}");

        let (unknown_status, unknown) = call_hub(
            &hub,
            Method::POST,
            &format!("/relations/{}/end", uuid::Uuid::new_v4()),
            Some(&attacker_key),
            None,
        )
        .await;
        assert_eq!(unknown_status, StatusCode::NOT_FOUND);
        let end = format!("/relations/{id}/end");
        let (status, refused) = call_hub(&hub, Method::POST, &end, Some(&attacker_key), None).await;
        assert_eq!(
            (status, refused),
            (unknown_status, unknown),
            "{backend}: another's relation looks unknown"
        );
        let (status, _) = call_hub(&hub, Method::POST, &end, Some(&hub.admin_key), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let token = person_token(&hub, &hospital_key, BSN).await;
        let (_, queried) = call_hub(
            &hub,
            Method::POST,
            "/relations/query",
            Some(&hospital_key),
            Some(json!({"token": token})),
        )
        .await;
        assert_eq!(
            ids(&queried),
            std::slice::from_ref(&id),
            "{backend}: one person's only"
        );
        let (_, page) = call_hub(
            &hub,
            Method::GET,
            "/relations?limit=1",
            Some(&hospital_key),
            None,
        )
        .await;
        let after = page["next"].as_str().unwrap();
        let (_, rest) = call_hub(
            &hub,
            Method::GET,
            &format!("/relations?after={after}"),
            Some(&hospital_key),
            None,
        )
        .await;
        let mut all = [ids(&page), ids(&rest)].concat();
        all.sort();
        let mut expected = vec![id.clone(), other["relation_id"].as_str().unwrap().into()];
        expected.sort();
        assert_eq!(all, expected, "{backend}");

        let (status, ended) = call_hub(&hub, Method::POST, &end, Some(&hospital_key), None).await;
        assert_eq!(status, StatusCode::OK, "{ended}");
        assert_eq!(ended["status"], "ended");
        assert!(ended["ended_at"].is_string());
        let (status, _) = call_hub(&hub, Method::POST, &end, Some(&hospital_key), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn a_relation_in_force_is_the_basis_of_decisions_and_lookups() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let gp = hub.client(&gp_key);
        let person =
            zorgnet_pseudonym::PersonalId::from(zorgnet_pseudonym::Bsn::parse(BSN).unwrap());
        let token = gp.referral_index_token(&person).await.unwrap();
        gp.update_registrations(&[(token, vec!["medication".into()])], true)
            .await
            .unwrap();
        let found = json!({"organisations": [{"ura": GP, "categories": ["medication"]}]});
        let nothing = json!({"organisations": []});

        // No relation: no basis, and a lookup looks like one for a person nobody holds.
        assert_eq!(
            decision(&hub, &gp_key, HOSPITAL).await,
            json!({"decision": "deny", "reason": "no-basis"})
        );
        assert_eq!(lookup(&hub, &hospital_key, "treatment").await, nothing);
        assert_eq!(
            lookup(&hub, &hospital_key, "emergency").await,
            found,
            "{backend}: an emergency needs no relation"
        );

        // A relation that ran out, or has not begun, is none either.
        for (from, until) in [("2020-01-01", "2021-01-01"), ("2090-01-01", "2091-01-01")] {
            let (status, _) = register(
                &hub,
                &hospital_key,
                BSN,
                json!({"kind": "referral", "valid_from": from, "valid_until": until}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
        }
        assert_eq!(
            decision(&hub, &gp_key, HOSPITAL).await["reason"],
            "no-basis"
        );
        assert_eq!(lookup(&hub, &hospital_key, "treatment").await, nothing);

        // The attacker's own relation is no basis for the hospital, and the other way round.
        register(&hub, &attacker_key, BSN, json!({"kind": "co-treatment"})).await;
        assert_eq!(
            decision(&hub, &gp_key, HOSPITAL).await["reason"],
            "no-basis"
        );
        assert_eq!(lookup(&hub, &hospital_key, "treatment").await, nothing);

        let (_, relation) = register(&hub, &hospital_key, BSN, json!({"kind": "referral"})).await;
        assert_eq!(
            decision(&hub, &gp_key, HOSPITAL).await,
            json!({"decision": "permit", "reason": "treatment-relation"}),
            "{backend}"
        );
        assert_eq!(lookup(&hub, &hospital_key, "treatment").await, found);

        // Ended: gone at once.
        let end = format!(
            "/relations/{}/end",
            relation["relation_id"].as_str().unwrap()
        );
        let (status, _) = call_hub(&hub, Method::POST, &end, Some(&hospital_key), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            decision(&hub, &gp_key, HOSPITAL).await["reason"],
            "no-basis"
        );
        assert_eq!(lookup(&hub, &hospital_key, "treatment").await, nothing);

        // Explicit consent for the hospital is a basis too.
        let (status, recorded) = call_hub(
            &hub,
            Method::POST,
            "/consent/directives",
            Some(&hub.admin_key),
            Some(json!({"token": person_token(&hub, &gp_key, BSN).await,
                "kind": "consent", "ura": HOSPITAL, "decision": "permit"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{recorded}");
        assert_eq!(
            decision(&hub, &gp_key, HOSPITAL).await,
            json!({"decision": "permit", "reason": "consent"})
        );
        assert_eq!(lookup(&hub, &hospital_key, "treatment").await, found);
    }
}
