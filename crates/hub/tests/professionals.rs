//! The professional register and the tokens it backs, tried by an attacker organisation with
//! a valid key: it may not change the register, read another organisation's staff, name a
//! role the register does not give its professional there, break the glass without a reason
//! or as a system, or get a token for any audience but one registered organisation; and a
//! `$fetch` shows each source a token made for that source alone.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::{TestHub, hubs, node};
use zorgnet_trust::certificate::PeerIdentity;
use zorgnet_trust::token::{self, AccessClaims, Purpose};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const ATTACKER: &str = "00000066";
const UNREGISTERED: &str = "00000099";
/// An internist at the hospital (and a locum GP at the GP practice).
const INTERNIST: &str = "900000015";
/// The attacker's own nurse.
const NURSE: &str = "900000023";
const BSN: &str = "123456782";

async fn send(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put_professional(hub: &TestHub, key: &str, uzi: &str, body: Value) -> StatusCode {
    send(
        reqwest::Method::PUT,
        format!("{}/professionals/{uzi}", hub.base),
        Some(key),
        Some(body),
    )
    .await
    .0
}

async fn token(hub: &TestHub, key: &str, body: Value) -> (StatusCode, Value) {
    send(
        reqwest::Method::POST,
        format!("{}/trust/token", hub.base),
        Some(key),
        Some(body),
    )
    .await
}

/// The claims of an issued token, verified with the hub's published key for `audience`.
async fn claims(hub: &TestHub, issued: &Value, audience: &str) -> AccessClaims {
    let (_, set) = send(
        reqwest::Method::GET,
        format!("{}/trust/keys", hub.base),
        None,
        None,
    )
    .await;
    let keys = token::parse_key_set(&set);
    let access_token = issued["access_token"].as_str().unwrap();
    let key = &keys[&token::key_id_of(access_token).unwrap()];
    token::verify(access_token, key, audience, zorgnet_db::now_ms() / 1000).unwrap()
}

#[tokio::test]
async fn only_the_operator_writes_the_register_and_organisations_see_their_own_staff() {
    for mut hub in hubs().await {
        let backend = hub.backend;
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let internist = json!({"name": "Dr. Jansen", "roles": [
            {"ura": HOSPITAL, "role": "01.018"}, {"ura": GP, "role": "01.015"},
            {"ura": HOSPITAL, "role": "01.018"}]});
        assert_eq!(
            put_professional(&hub, &hub.admin_key, INTERNIST, internist.clone()).await,
            StatusCode::CREATED
        );
        assert_eq!(
            put_professional(&hub, &hub.admin_key, INTERNIST, internist.clone()).await,
            StatusCode::OK,
            "[{backend}] a second PUT replaces"
        );
        let nurse =
            json!({"name": "Verpleegkundige", "roles": [{"ura": ATTACKER, "role": "30.000"}]});
        assert_eq!(
            put_professional(&hub, &hub.admin_key, NURSE, nurse).await,
            StatusCode::CREATED
        );

        // The attacker tries to give itself, or its nurse, roles: refused, nothing changes.
        let self_promotion =
            json!({"name": "Dr. Jansen", "roles": [{"ura": ATTACKER, "role": "01.015"}]});
        for (key, uzi) in [
            (&attacker_key, INTERNIST),
            (&attacker_key, NURSE),
            (&gp_key, NURSE),
        ] {
            assert_eq!(
                put_professional(&hub, key, uzi, self_promotion.clone()).await,
                StatusCode::FORBIDDEN,
                "[{backend}] {uzi}"
            );
            let (status, _) = send(
                reqwest::Method::DELETE,
                format!("{}/professionals/{uzi}", hub.base),
                Some(key),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "[{backend}] {uzi}");
        }
        let (status, _) = send(
            reqwest::Method::GET,
            format!("{}/professionals/{INTERNIST}", hub.base),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Bad input from the operator is refused whole.
        for (uzi, body, expected) in [
            (
                "12345",
                json!({"name": "x", "roles": []}),
                StatusCode::BAD_REQUEST,
            ),
            (
                INTERNIST,
                json!({"name": "", "roles": []}),
                StatusCode::BAD_REQUEST,
            ),
            (
                INTERNIST,
                json!({"name": "x", "roles": [{"ura": GP, "role": "huisarts"}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                INTERNIST,
                json!({"name": "x", "roles": [{"ura": "1", "role": "01.015"}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                INTERNIST,
                json!({"name": "x", "roles": [{"ura": UNREGISTERED, "role": "01.015"}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                INTERNIST,
                json!({"name": "x", "roles": [], "extra": 1}),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            assert_eq!(
                put_professional(&hub, &hub.admin_key, uzi, body.clone()).await,
                expected,
                "[{backend}] {body}"
            );
        }

        // The operator sees every role; each organisation only its own staff and roles.
        let show = |key: String, uzi: &'static str| {
            let url = format!("{}/professionals/{uzi}", hub.base);
            async move { send(reqwest::Method::GET, url, Some(&key), None).await }
        };
        let (status, all) = show(hub.admin_key.clone(), INTERNIST).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        assert_eq!(
            all["roles"],
            json!([{"ura": GP, "role": "01.015"}, {"ura": HOSPITAL, "role": "01.018"}]),
            "[{backend}] deduplicated, sorted"
        );
        let (_, at_hospital) = show(hospital_key.clone(), INTERNIST).await;
        assert_eq!(
            at_hospital["roles"],
            json!([{"ura": HOSPITAL, "role": "01.018"}])
        );
        assert_eq!(at_hospital["name"], "Dr. Jansen");
        let (status, _) = show(attacker_key.clone(), INTERNIST).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "[{backend}] not the attacker's staff"
        );
        let (status, _) = show(hospital_key.clone(), NURSE).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let list = |key: String, query: &'static str| {
            let url = format!("{}/professionals{query}", hub.base);
            async move { send(reqwest::Method::GET, url, Some(&key), None).await.1 }
        };
        let uzis = |page: &Value| -> Vec<String> {
            page["professionals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["uzi"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            uzis(&list(hub.admin_key.clone(), "").await),
            [INTERNIST, NURSE]
        );
        assert_eq!(uzis(&list(attacker_key.clone(), "").await), [NURSE]);
        let gp_page = list(gp_key.clone(), "").await;
        assert_eq!(uzis(&gp_page), [INTERNIST]);
        assert_eq!(
            gp_page["professionals"][0]["roles"],
            json!([{"ura": GP, "role": "01.015"}])
        );
        let first = list(hub.admin_key.clone(), "?limit=1").await;
        assert_eq!(uzis(&first), [INTERNIST]);
        assert_eq!(first["next"], INTERNIST);
        let second = list(hub.admin_key.clone(), "?limit=1&after=900000015").await;
        assert_eq!(uzis(&second), [NURSE]);

        // Removing: gone for everyone.
        let (status, _) = send(
            reqwest::Method::DELETE,
            format!("{}/professionals/{NURSE}", hub.base),
            Some(&hub.admin_key),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = show(attacker_key.clone(), NURSE).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(
            reqwest::Method::DELETE,
            format!("{}/professionals/{NURSE}", hub.base),
            Some(&hub.admin_key),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        hub.stop().await;
    }
}

#[tokio::test]
async fn a_token_names_only_what_the_register_gives_and_one_registered_audience() {
    for mut hub in hubs().await {
        let backend = hub.backend;
        hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let internist = json!({"name": "Dr. Jansen", "roles": [{"ura": HOSPITAL, "role": "01.018"}, {"ura": GP, "role": "01.015"}]});
        put_professional(&hub, &hub.admin_key, INTERNIST, internist).await;
        let nurse =
            json!({"name": "Verpleegkundige", "roles": [{"ura": ATTACKER, "role": "30.000"}]});
        put_professional(&hub, &hub.admin_key, NURSE, nurse).await;

        // What the register gives: a token naming it, for one audience.
        let (status, issued) = token(
            &hub,
            &hospital_key,
            json!({"audience": GP, "uzi": INTERNIST, "role": "01.018"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "[{backend}] {issued}");
        let granted = claims(&hub, &issued, GP).await;
        assert_eq!(
            (
                granted.ura.as_str(),
                granted.uzi.as_deref(),
                granted.role.as_deref()
            ),
            (HOSPITAL, Some(INTERNIST), Some("01.018"))
        );
        assert_eq!(granted.aud, GP);
        assert_eq!(granted.cnf, None, "no client certificate, no binding");
        let (status, system) = token(&hub, &attacker_key, json!({"audience": GP})).await;
        assert_eq!(status, StatusCode::OK, "{system}");
        let system = claims(&hub, &system, GP).await;
        assert_eq!((system.uzi, system.role), (None, None), "a system token");

        // The attacker, holding a valid key, asks for more than it may.
        let reason = "r".repeat(token::MAX_REASON_CHARS + 1);
        for (body, expected, what) in [
            (
                json!({"audience": GP, "uzi": INTERNIST, "role": "01.018"}),
                StatusCode::FORBIDDEN,
                "another organisation's professional",
            ),
            (
                json!({"audience": GP, "uzi": INTERNIST, "role": "01.015"}),
                StatusCode::FORBIDDEN,
                "a role held elsewhere",
            ),
            (
                json!({"audience": GP, "uzi": NURSE, "role": "01.015"}),
                StatusCode::FORBIDDEN,
                "a role its nurse does not hold",
            ),
            (
                json!({"audience": GP, "uzi": "900000031", "role": "01.015"}),
                StatusCode::FORBIDDEN,
                "a professional not in the register",
            ),
            (
                json!({"audience": GP, "role": "01.015"}),
                StatusCode::BAD_REQUEST,
                "a role without a professional",
            ),
            (
                json!({"audience": GP, "uzi": NURSE}),
                StatusCode::BAD_REQUEST,
                "a professional without a role",
            ),
            (
                json!({"audience": GP, "uzi": NURSE, "role": "30.000", "purpose": "emergency"}),
                StatusCode::BAD_REQUEST,
                "emergency without a reason",
            ),
            (
                json!({"audience": GP, "uzi": NURSE, "role": "30.000", "purpose": "emergency", "reason": "  "}),
                StatusCode::BAD_REQUEST,
                "a blank reason",
            ),
            (
                json!({"audience": GP, "uzi": NURSE, "role": "30.000", "purpose": "emergency", "reason": reason}),
                StatusCode::BAD_REQUEST,
                "a reason too long",
            ),
            (
                json!({"audience": GP, "uzi": NURSE, "role": "30.000", "purpose": "emergency", "reason": "a\u{7}b"}),
                StatusCode::BAD_REQUEST,
                "a control character",
            ),
            (
                json!({"audience": GP, "purpose": "emergency", "reason": "system"}),
                StatusCode::BAD_REQUEST,
                "a system breaking the glass",
            ),
            (
                json!({"audience": GP, "uzi": NURSE, "role": "30.000", "reason": "why not"}),
                StatusCode::BAD_REQUEST,
                "a reason without an emergency",
            ),
            (json!({}), StatusCode::BAD_REQUEST, "no audience"),
            (
                json!({"audience": ""}),
                StatusCode::BAD_REQUEST,
                "an empty audience",
            ),
            (
                json!({"audience": "*"}),
                StatusCode::BAD_REQUEST,
                "a wildcard audience",
            ),
            (
                json!({"audience": UNREGISTERED}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "an unregistered audience",
            ),
            (
                json!({"audience": GP, "ura": HOSPITAL}),
                StatusCode::BAD_REQUEST,
                "another organisation's URA",
            ),
            (
                json!({"audience": GP, "cnf": {"x5t#S256": "x"}}),
                StatusCode::BAD_REQUEST,
                "a binding of its choosing",
            ),
        ] {
            let (status, problem) = token(&hub, &attacker_key, body.clone()).await;
            assert_eq!(status, expected, "[{backend}] {what}: {body}: {problem}");
        }
        let (status, emergency) = token(
            &hub,
            &attacker_key,
            json!({"audience": GP, "uzi": NURSE, "role": "30.000", "purpose": "emergency",
                "reason": " bewusteloos binnengebracht "}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{emergency}");
        let emergency = claims(&hub, &emergency, GP).await;
        assert_eq!(emergency.purpose, Purpose::Emergency);
        assert_eq!(
            emergency.reason.as_deref(),
            Some("bewusteloos binnengebracht")
        );

        // The register is the source of truth: a removed role stops new tokens at once.
        put_professional(
            &hub,
            &hub.admin_key,
            NURSE,
            json!({"name": "Verpleegkundige", "roles": []}),
        )
        .await;
        let (status, _) = token(
            &hub,
            &attacker_key,
            json!({"audience": GP, "uzi": NURSE, "role": "30.000"}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        hub.stop().await;
    }
}

#[tokio::test]
async fn a_token_asked_over_a_client_certificate_is_bound_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = zorgnet_hub::HubConfig {
        data_dir: dir.path().to_path_buf(),
        postgres: None,
        allow_insecure_endpoints: true,
        client_tls: None,
    };
    let hub = tokio::task::spawn_blocking(move || zorgnet_hub::Hub::open(&config).unwrap())
        .await
        .unwrap();
    let admin_key = std::fs::read_to_string(hub.admin_key_path()).unwrap();
    // What the TLS layer puts in each request: who the client certificate names.
    let certificate = PeerIdentity {
        ura: Some(HOSPITAL.into()),
        name: "hospital".into(),
        serial: "1".into(),
        thumbprint: token::certificate_thumbprint(b"the hospital's certificate"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = hub
        .router(&base)
        .layer(axum::Extension(certificate.clone()));
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let mut keys = Vec::new();
    for ura in [GP, HOSPITAL] {
        let (status, issued) = send(
            reqwest::Method::POST,
            format!("{base}/registry/organisations"),
            Some(admin_key.trim()),
            Some(json!({"ura": ura, "name": ura})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        keys.push(issued["api_key"].as_str().unwrap().to_string());
    }
    let (status, issued) = send(
        reqwest::Method::POST,
        format!("{base}/trust/token"),
        Some(&keys[1]),
        Some(json!({"audience": GP})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let (_, set) = send(
        reqwest::Method::GET,
        format!("{base}/trust/keys"),
        None,
        None,
    )
    .await;
    let keys = token::parse_key_set(&set);
    let access_token = issued["access_token"].as_str().unwrap();
    let key = &keys[&token::key_id_of(access_token).unwrap()];
    let claims = token::verify(access_token, key, GP, zorgnet_db::now_ms() / 1000).unwrap();
    assert_eq!(
        claims.cnf.as_ref().map(|c| c.x5t_s256.as_str()),
        Some(certificate.thumbprint.as_str())
    );
    assert_eq!(
        token::check_binding(&claims, Some(&certificate.thumbprint)),
        Ok(())
    );
    let stolen_over = token::certificate_thumbprint(b"the attacker's certificate");
    assert_eq!(
        token::check_binding(&claims, Some(&stolen_over)),
        Err(token::TokenError::WrongCertificate)
    );
    assert_eq!(
        token::check_binding(&claims, None),
        Err(token::TokenError::CertificateMissing)
    );
}

/// Authorization headers a fake source received.
type Seen = Arc<Mutex<Vec<String>>>;

/// A fake source: records the bearer token of every search and answers an empty Bundle.
async fn recording_source() -> (String, Seen) {
    use axum::http::HeaderMap;
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    let router = axum::Router::new().route(
        "/fhir/{resource_type}",
        axum::routing::get(move |headers: HeaderMap| {
            let recorded = recorded.clone();
            async move {
                if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    recorded.lock().unwrap().push(value.to_string());
                }
                axum::Json(json!({"resourceType": "Bundle", "type": "searchset", "total": 0}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_shows_each_source_a_token_for_it_alone() {
    use zorgnet_node::network::{Asker, Network, fetch};
    use zorgnet_pseudonym::{Bsn, PersonalId};
    let mut hub = support::start(None).await;
    let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    let sources = [GP, ATTACKER];
    let mut seen = Vec::new();
    let mut publishers = Vec::new();
    for ura in sources {
        let key = hub.organisation(ura, ura).await;
        let (base, recorded) = recording_source().await;
        seen.push(recorded);
        // Each source holds the patient's medication, and its address book entry (written
        // here as its node would publish it) names the recording source.
        let client = hub.client(&key);
        let person = PersonalId::from(Bsn::parse(BSN).unwrap());
        let exchange = client.referral_index_token(&person).await.unwrap();
        client
            .update_registrations(&[(exchange, vec!["medication".to_string()])], true)
            .await
            .unwrap();
        let publisher = node(&hub, ura, &key, true).await;
        let store = publisher.store.clone();
        let identity = zorgnet_node::NodeIdentity {
            ura: ura.into(),
            name: format!("Bron {ura}"),
        };
        zorgnet_node::addressing::publish_own_entries(&store, &identity, &base)
            .await
            .unwrap();
        publishers.push(publisher);
    }
    put_professional(
        &hub,
        &hub.admin_key,
        INTERNIST,
        json!({"name": "Dr. Jansen", "roles": [{"ura": HOSPITAL, "role": "01.018"}]}),
    )
    .await;
    let (status, report) = send(
        reqwest::Method::POST,
        format!("{}/addressing/sync", hub.base),
        Some(&hub.admin_key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let hospital = node(&hub, HOSPITAL, &hospital_key, true).await;
    let cache = hospital.cache.clone().unwrap();
    cache.sync(&hub.base, &hospital_key).await.unwrap();
    let network = Arc::new(Network::new(hub.client(&hospital_key), cache).unwrap());
    let person = PersonalId::from(Bsn::parse(BSN).unwrap());
    support::relate(&hub.client(&hospital_key), &person).await;
    let asker = Asker {
        uzi: Some(INTERNIST.into()),
        role: Some("01.018".into()),
        purpose: Purpose::Treatment,
        reason: None,
    };
    let categories = [zorgnet_fhir::categories::DataCategory::Medication];
    for _ in 0..2 {
        let bundle = fetch(network.clone(), &person, BSN, &categories, &asker)
            .await
            .unwrap();
        assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    }
    let (_, set) = send(
        reqwest::Method::GET,
        format!("{}/trust/keys", hub.base),
        None,
        None,
    )
    .await;
    let keys = token::parse_key_set(&set);
    let now = zorgnet_db::now_ms() / 1000;
    for (ura, recorded) in sources.iter().zip(&seen) {
        let recorded = recorded.lock().unwrap().clone();
        assert!(!recorded.is_empty(), "{ura} was asked");
        let distinct: std::collections::BTreeSet<&String> = recorded.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "one token per source, cached: {recorded:?}"
        );
        let shown = recorded[0].strip_prefix("Bearer ").unwrap();
        let key = &keys[&token::key_id_of(shown).unwrap()];
        let claims = token::verify(shown, key, ura, now).unwrap();
        assert_eq!(claims.aud, *ura);
        assert_eq!(claims.uzi.as_deref(), Some(INTERNIST));
        for other in sources.iter().filter(|o| *o != ura) {
            assert_eq!(
                token::verify(shown, key, other, now),
                Err(token::TokenError::WrongAudience),
                "what {ura} was shown is worthless at {other}"
            );
        }
    }

    // A role the register does not give is refused before any source is asked.
    let impostor = Asker {
        role: Some("01.015".into()),
        ..asker
    };
    let before: usize = seen.iter().map(|s| s.lock().unwrap().len()).sum();
    let refused = fetch(network.clone(), &person, BSN, &categories, &impostor)
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let after: usize = seen.iter().map(|s| s.lock().unwrap().len()).sum();
    assert_eq!(before, after, "no source was asked");
    drop((hospital, publishers));
    hub.stop().await;
}
