//! An address book nobody can redirect, and registrations bound to who registers, tried by an
//! attacker organisation with a valid key: its supplier's entries for other organisations
//! and its Endpoints pointing at other organisations' nodes or at the hub are refused and
//! counted; its base URL cannot be the hub, a local port outside development, or plain http
//! on a production hub; the hub never polls itself, backs off from a failing supplier, and
//! shows why a poll failed only to the operator and that supplier, generically; and the
//! attacker can neither register nor withdraw for another organisation at the referral index.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{TestHub, hubs};
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_node::NodeIdentity;
use zorgnet_node::addressing::{AddressBookCache, publish_own_entries};
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_store::Store;

const GP: &str = "00000011";
const ATTACKER: &str = "00000066";
const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
const BSN: &str = "123456782";

/// A node serving its store (its own Organization and Endpoint published) on port 0.
struct Supplier {
    base: String,
    _dir: tempfile::TempDir,
}

async fn supplier(ura: &str) -> Supplier {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let store = tokio::task::spawn_blocking(move || {
        Store::open_sqlite(&path, SearchRegistry::r4()).unwrap()
    })
    .await
    .unwrap();
    let identity = NodeIdentity {
        ura: ura.into(),
        name: format!("Organisatie {ura}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let router = zorgnet_rest::router(store.clone(), identity.clone(), base.clone());
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    publish_own_entries(&store, &identity, &base).await.unwrap();
    Supplier { base, _dir: dir }
}

impl Supplier {
    async fn put(&self, resource: Value) {
        let path = format!(
            "{}/{}/{}",
            self.base,
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let response = reqwest::Client::new()
            .put(path)
            .header("content-type", "application/fhir+json")
            .body(resource.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{resource}: {}",
            response.text().await.unwrap()
        );
    }
}

async fn send(
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put_supplier(hub_base: &str, key: &str, ura: &str, url: &str) -> (StatusCode, Value) {
    send(
        reqwest::Method::PUT,
        format!("{hub_base}/addressing/suppliers/{ura}"),
        key,
        Some(json!({"name": format!("Organisatie {ura}"), "fhir_base_url": url})),
    )
    .await
}

async fn sync(hub: &TestHub) -> Value {
    let (status, report) = send(
        reqwest::Method::POST,
        format!("{}/addressing/sync", hub.base),
        &hub.admin_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

fn report_of<'a>(report: &'a Value, ura: &str) -> &'a Value {
    report["suppliers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ura"] == ura)
        .unwrap_or_else(|| panic!("{ura} not in {report}"))
}

async fn listed(hub_base: &str, key: &str, ura: &str) -> Value {
    let (status, list) = send(
        reqwest::Method::GET,
        format!("{hub_base}/addressing/suppliers"),
        key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["ura"] == ura)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_publishes_only_for_its_own_organisation_and_to_addresses_it_may() {
    for mut hub in hubs().await {
        let backend = hub.backend;
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let gp = supplier(GP).await;
        let attacker = supplier(ATTACKER).await;
        let own = format!("Organization/ura-{ATTACKER}");
        let endpoint = |id: &str, address: &str, managing: Value| {
            json!({"resourceType": "Endpoint", "id": id, "status": "active",
                "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"},
                "managingOrganization": managing,
                "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "any"}]}],
                "address": address})
        };
        let gp_by_identifier = json!({"identifier": {"system": URA_SYSTEM, "value": GP}});
        for refused in [
            json!({"resourceType": "Organization", "id": "impostor", "name": "De Linde",
                "identifier": [{"system": URA_SYSTEM, "value": GP}]}),
            endpoint(
                "to-gp",
                &format!("{}/Patient", gp.base),
                json!({"reference": own}),
            ),
            endpoint("to-hub", &hub.base, json!({"reference": own})),
            endpoint(
                "to-hub-alias",
                &hub.base.replace("127.0.0.1", "localhost"),
                json!({"reference": own}),
            ),
            endpoint(
                "for-gp",
                "https://attacker.example/fhir",
                gp_by_identifier.clone(),
            ),
            endpoint(
                "under-gp",
                "https://attacker.example/fhir",
                json!({"reference": format!("{}/Organization/ura-{GP}", gp.base)}),
            ),
            json!({"resourceType": "Location", "id": "gp-room", "name": "Spreekkamer",
                "managingOrganization": {"reference": format!("{}/Organization/ura-{GP}", gp.base)}}),
            json!({"resourceType": "HealthcareService", "id": "gp-care", "providedBy": gp_by_identifier}),
            endpoint(
                "ftp",
                "ftp://attacker.example/fhir",
                json!({"reference": own}),
            ),
        ] {
            attacker.put(refused).await;
        }
        for accepted in [
            endpoint(
                "second",
                "https://attacker.example/fhir",
                json!({"reference": own}),
            ),
            json!({"resourceType": "PractitionerRole", "id": "nurse", "organization": {"reference": own}}),
        ] {
            attacker.put(accepted).await;
        }
        let (status, _) = put_supplier(&hub.base, &gp_key, GP, &gp.base).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = put_supplier(&hub.base, &attacker_key, ATTACKER, &attacker.base).await;
        assert_eq!(status, StatusCode::CREATED);

        let report = sync(&hub).await;
        let attacked = report_of(&report, ATTACKER);
        assert_eq!(attacked["ok"], true, "[{backend}] {report}");
        assert_eq!(attacked["rejected"], 9, "[{backend}] {report}");
        assert_eq!(
            attacked["applied"], 4,
            "[{backend}] its Organization, both Endpoints, the PractitionerRole: {report}"
        );
        assert_eq!(report_of(&report, GP)["rejected"], 0);

        // The count is the attacker's to see, and the operator's; not the GP's.
        assert_eq!(
            listed(&hub.base, &attacker_key, ATTACKER).await["last_sync_refused"],
            9
        );
        assert_eq!(
            listed(&hub.base, &hub.admin_key, ATTACKER).await["last_sync_refused"],
            9
        );
        assert!(listed(&hub.base, &gp_key, ATTACKER).await["last_sync_refused"].is_null());

        // The GP is still reached at its own node only; the attacker's own address stands.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let cache = tokio::task::spawn_blocking(move || {
            AddressBookCache::open(zorgnet_db::Database::open_sqlite(&path, &[]).unwrap()).unwrap()
        })
        .await
        .unwrap();
        cache.sync(&hub.base, &gp_key).await.unwrap();
        let gp_address = cache.endpoint_for(GP).await.unwrap().unwrap();
        assert_eq!(gp_address.fhir_base_urls, [gp.base.as_str()], "[{backend}]");
        let attacker_address = cache.endpoint_for(ATTACKER).await.unwrap().unwrap();
        assert_eq!(
            attacker_address.fhir_base_urls,
            [
                attacker.base.clone(),
                "https://attacker.example/fhir".to_string()
            ]
        );
        tokio::task::spawn_blocking(move || drop(cache))
            .await
            .unwrap();

        // The attacker's base URL may not be the hub, nor be set for the GP.
        let hub_port = hub.base.rsplit(':').next().unwrap().to_string();
        for url in [
            hub.base.clone(),
            format!("{}/addressing/fhir", hub.base),
            format!("http://localhost:{hub_port}/fhir"),
            format!("http://[::1]:{hub_port}/fhir"),
            format!("http://0.0.0.0:{hub_port}"),
        ] {
            let (status, problem) = put_supplier(&hub.base, &attacker_key, ATTACKER, &url).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "[{backend}] {url}: {problem}"
            );
        }
        let (status, _) = put_supplier(&hub.base, &attacker_key, GP, &attacker.base).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            listed(&hub.base, &gp_key, GP).await["fhir_base_url"],
            gp.base.as_str()
        );
        hub.stop().await;
    }
}

/// A hub of its own (SQLite), with the development flag as asked and its consumer running
/// every `interval`: answers its base URL, admin key and data directory.
async fn hub_with_consumer(
    allow_insecure_endpoints: bool,
    interval: Duration,
) -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = zorgnet_hub::HubConfig {
        data_dir: dir.path().to_path_buf(),
        postgres: None,
        allow_insecure_endpoints,
        client_tls: None,
    };
    let hub = tokio::task::spawn_blocking(move || zorgnet_hub::Hub::open(&config).unwrap())
        .await
        .unwrap();
    let admin_key = std::fs::read_to_string(hub.admin_key_path())
        .unwrap()
        .trim()
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    hub.serving_at(listener.local_addr().unwrap());
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::mem::drop(hub.spawn_addressing_consumer(interval));
    tokio::spawn(zorgnet_node::serve(
        listener,
        hub.router(&base),
        std::future::pending(),
    ));
    (base, admin_key, dir)
}

async fn register(base: &str, admin_key: &str, ura: &str) -> String {
    let (status, issued) = send(
        reqwest::Method::POST,
        format!("{base}/registry/organisations"),
        admin_key,
        Some(json!({"ura": ura, "name": ura})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    issued["api_key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_production_hub_takes_only_https_addresses_away_from_local_hosts() {
    let (base, admin_key, _dir) = hub_with_consumer(false, Duration::from_secs(3600)).await;
    let attacker_key = register(&base, &admin_key, ATTACKER).await;
    for url in [
        "http://attacker.example/fhir",
        "https://127.0.0.1:5432/fhir",
        "https://localhost:22/fhir",
        "https://[::1]/fhir",
        "https://[::ffff:127.0.0.1]/fhir",
        "https://169.254.169.254/latest",
        "https://0.0.0.0/fhir",
        "https://[fe80::1]/fhir",
    ] {
        let (status, problem) = put_supplier(&base, &attacker_key, ATTACKER, url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {problem}");
    }
    let (status, _) = put_supplier(
        &base,
        &attacker_key,
        ATTACKER,
        "https://attacker.example/fhir",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// A TCP server that counts connections and closes each at once.
async fn counting_dead_end() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (base, count)
}

/// A TCP forwarder to `target` (a load balancer in front of the hub, say): an alias of the
/// hub's address that no check of the URL can see through.
async fn forwarder(target: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{address}/fhir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_never_polls_itself_backs_off_and_tells_only_the_supplier_why() {
    let (base, admin_key, _dir) = hub_with_consumer(true, Duration::from_millis(100)).await;
    let gp_key = register(&base, &admin_key, GP).await;
    let attacker_key = register(&base, &admin_key, ATTACKER).await;

    // A dead supplier: polled once by the consumer, then left alone for the backoff.
    let (dead, connections) = counting_dead_end().await;
    let (status, _) = put_supplier(&base, &attacker_key, ATTACKER, &dead).await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let polls = connections.load(Ordering::SeqCst);
    assert_eq!(
        polls,
        1,
        "15 ticks of 100 ms, but one poll: the next waits {:?}",
        zorgnet_hub::addressing::POLL_BACKOFF_FIRST
    );
    let own = listed(&base, &attacker_key, ATTACKER).await;
    let error = own["last_sync_error"].as_str().unwrap().to_string();
    assert_eq!(error, "the connection to the supplier failed");
    assert!(!error.contains("127.0.0.1"), "generic: {error}");
    assert_eq!(
        listed(&base, &admin_key, ATTACKER).await["last_sync_error"],
        error
    );
    assert!(
        listed(&base, &gp_key, ATTACKER).await["last_sync_error"].is_null(),
        "not the GP's to see"
    );
    // The operator's sync polls at once, backoff or not.
    let (status, _) = send(
        reqwest::Method::POST,
        format!("{base}/addressing/sync"),
        &admin_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), polls + 1);

    // An alias of the hub the URL check cannot see: the hub recognises its own poll.
    let hub_address = base.trim_start_matches("http://").to_string();
    let alias = forwarder(hub_address).await;
    let (status, _) = put_supplier(&base, &attacker_key, ATTACKER, &alias).await;
    assert_eq!(status, StatusCode::OK);
    let (status, report) = send(
        reqwest::Method::POST,
        format!("{base}/addressing/sync"),
        &admin_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let attacked = report_of(&report, ATTACKER);
    assert_eq!(attacked["ok"], false, "{report}");
    assert_eq!(attacked["error"], "the supplier's address is the hub's own");
}

#[tokio::test]
async fn registrations_are_bound_to_the_registering_organisation() {
    for mut hub in hubs().await {
        let backend = hub.backend;
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let attacker_key = hub.organisation(ATTACKER, "Kwaadwillend").await;
        let person = PersonalId::from(Bsn::parse(BSN).unwrap());
        let gp = hub.client(&gp_key);
        let attacker = hub.client(&attacker_key);
        let gp_token = gp.referral_index_token(&person).await.unwrap();
        gp.update_registrations(&[(gp_token, vec!["medication".into()])], true)
            .await
            .unwrap();

        // The attacker withdraws the GP's registration: it can only withdraw its own (none).
        let attacker_token = attacker.referral_index_token(&person).await.unwrap();
        let withdrawn = attacker
            .update_registrations(
                &[(attacker_token.clone(), vec!["medication".into()])],
                false,
            )
            .await
            .unwrap();
        assert_eq!(withdrawn.changed, 0, "[{backend}]");
        let token_json = zorgnet_node::hub_client::token_value(&attacker_token);
        for body in [
            json!({"registrations": [{"token": token_json, "categories": ["medication"]}], "ura": GP}),
            json!({"registrations": [{"token": token_json, "categories": ["medication"], "ura": GP}]}),
        ] {
            for path in ["registrations", "deregistrations"] {
                let (status, problem) = send(
                    reqwest::Method::POST,
                    format!("{}/nvi/{path}", hub.base),
                    &attacker_key,
                    Some(body.clone()),
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "[{backend}] {path} {body}: {problem}"
                );
            }
        }
        let (status, _) = send(
            reqwest::Method::POST,
            format!("{}/nvi/registrations", hub.base),
            &hub.admin_key,
            Some(json!({"registrations": [{"token": token_json, "categories": ["medication"]}]})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "the operator registers for nobody"
        );

        // What the attacker registers is its own: listed under its URA, beside the GP's.
        attacker
            .update_registrations(&[(attacker_token, vec!["allergies".into()])], true)
            .await
            .unwrap();
        support::relate(&gp, &person).await;
        let holders = gp
            .lookup(&person, &["medication".into(), "allergies".into()], false)
            .await
            .unwrap();
        let found: Vec<(String, Vec<String>)> =
            holders.into_iter().map(|h| (h.ura, h.categories)).collect();
        assert_eq!(
            found,
            [
                (GP.to_string(), vec!["medication".to_string()]),
                (ATTACKER.to_string(), vec!["allergies".to_string()])
            ],
            "[{backend}]"
        );
        hub.stop().await;
    }
}
