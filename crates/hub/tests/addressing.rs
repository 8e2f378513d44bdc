//! The addressing directory end to end: real nodes on port 0 publish their Organization and
//! Endpoint as mCSD update suppliers, a real hub (SQLite, and PostgreSQL when
//! `ZORGNET_TEST_POSTGRES_URL` is set) lists them, syncs them into its address book and
//! answers ITI-90 searches; a node's cache answers lookups after the hub is gone.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestHub, hubs};
use zorgnet_db::Database;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_node::NodeIdentity;
use zorgnet_node::addressing::{AddressBookCache, publish_own_entries};
use zorgnet_store::Store;

const URA_A: &str = "11111111";
const URA_B: &str = "22222222";
const URA_DOWN: &str = "33333333";
const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";

struct TestNode {
    store: Store,
    base: String,
    identity: NodeIdentity,
    _dir: tempfile::TempDir,
}

async fn node(ura: &str, name: &str) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let store = tokio::task::spawn_blocking(move || {
        Store::open_sqlite(&path, SearchRegistry::r4()).unwrap()
    })
    .await
    .unwrap();
    let identity = NodeIdentity {
        ura: ura.into(),
        name: name.into(),
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
    TestNode {
        store,
        base,
        identity,
        _dir: dir,
    }
}

impl TestNode {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> u16 {
        let mut request = reqwest::Client::new().request(method, format!("{}/{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(body.to_string());
        }
        request.send().await.unwrap().status().as_u16()
    }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn call(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    Reply {
        status,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn fhir_get(hub: &TestHub, key: &str, path: &str) -> Reply {
    call(
        client()
            .get(format!("{}/addressing/fhir/{path}", hub.base))
            .bearer_auth(key),
    )
    .await
}

async fn put_supplier(hub: &TestHub, key: &str, ura: &str, name: &str, url: &str) -> Reply {
    call(
        client()
            .put(format!("{}/addressing/suppliers/{ura}", hub.base))
            .bearer_auth(key)
            .json(&json!({"name": name, "fhir_base_url": url})),
    )
    .await
}

async fn sync(hub: &TestHub) -> Value {
    let reply = call(
        client()
            .post(format!("{}/addressing/sync", hub.base))
            .bearer_auth(&hub.admin_key),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

fn supplier_report<'a>(report: &'a Value, ura: &str) -> &'a Value {
    report["suppliers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ura"] == ura)
        .unwrap_or_else(|| panic!("no report for {ura}: {report}"))
}

fn entries<'a>(bundle: &'a Value, mode: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["search"]["mode"] == mode)
                .map(|e| &e["resource"])
                .collect()
        })
        .unwrap_or_default()
}

/// A cache database on the same backend as the hub under test.
async fn cache_database(hub: &TestHub, dir: &tempfile::TempDir) -> Database {
    let postgres = hub.postgres.clone();
    let path = dir.path().join("cache.sqlite");
    tokio::task::spawn_blocking(move || match postgres {
        // The hub's fresh schema is reused: the cache's tables do not meet the hub's.
        Some(url) => Database::open_postgres(&url, &[]).unwrap(),
        None => Database::open_sqlite(&path, &[]).unwrap(),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_publish_the_hub_syncs_iti90_finds_and_the_cache_answers_offline() {
    for mut hub in hubs().await {
        let backend = hub.backend;
        let node_a = node(URA_A, "Huisartsenpraktijk A").await;
        let node_b = node(URA_B, "Apotheek B").await;
        let key_a = hub.organisation(URA_A, "Huisartsenpraktijk A").await;
        let key_b = hub.organisation(URA_B, "Apotheek B").await;

        // Both nodes use the same local id for a Location: the address book must keep both.
        for n in [&node_a, &node_b] {
            let location = json!({"resourceType": "Location", "id": "main", "name": format!("{} main", n.identity.name),
                "managingOrganization": {"reference": format!("Organization/ura-{}", n.identity.ura)}});
            assert_eq!(
                n.send(reqwest::Method::PUT, "Location/main", Some(&location))
                    .await,
                201
            );
        }
        // Node B also has more Locations than one history page holds, so `next` is followed,
        // and an Organization that claims node A's URA, which the hub must refuse.
        let locations: Vec<Value> = (0..1_001)
            .map(|i| json!({"fullUrl": format!("Location/room-{i}"), "resource": {"resourceType": "Location", "id": format!("room-{i}"), "name": format!("Room {i}")},
                "request": {"method": "PUT", "url": format!("Location/room-{i}")}}))
            .collect();
        let transaction =
            json!({"resourceType": "Bundle", "type": "transaction", "entry": locations});
        assert_eq!(
            node_b
                .send(reqwest::Method::POST, "", Some(&transaction))
                .await,
            200
        );
        let impostor = json!({"resourceType": "Organization", "id": "impostor", "name": "Not A",
            "identifier": [{"system": URA_SYSTEM, "value": URA_A}]});
        assert_eq!(
            node_b
                .send(
                    reqwest::Method::PUT,
                    "Organization/impostor",
                    Some(&impostor)
                )
                .await,
            201
        );

        // The LRZa list: A registers itself, the operator registers B and a dead supplier.
        let reply = put_supplier(&hub, &key_a, URA_A, "Huisartsenpraktijk A", &node_a.base).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "[{backend}] {}",
            reply.body
        );
        let reply = put_supplier(&hub, &hub.admin_key, URA_B, "Apotheek B", &node_b.base).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "[{backend}] {}",
            reply.body
        );
        let reply = put_supplier(
            &hub,
            &hub.admin_key,
            URA_DOWN,
            "Gesloten kliniek",
            "http://127.0.0.1:1/fhir",
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "[{backend}] {}",
            reply.body
        );
        let reply = put_supplier(&hub, &key_a, URA_A, "Huisartsenpraktijk A", &node_a.base).await;
        assert_eq!(reply.status, StatusCode::OK, "[{backend}] an update is 200");

        let report = sync(&hub).await;
        let a = supplier_report(&report, URA_A);
        assert_eq!(a["ok"], true, "[{backend}] {report}");
        assert_eq!(
            a["applied"], 3,
            "[{backend}] Organization, Endpoint, Location"
        );
        let b = supplier_report(&report, URA_B);
        assert_eq!(b["ok"], true, "[{backend}] {report}");
        assert_eq!(b["applied"], 3 + 1_001, "[{backend}] {report}");
        assert_eq!(b["rejected"], 1, "[{backend}] the impostor");
        let down = supplier_report(&report, URA_DOWN);
        assert_eq!(down["ok"], false, "[{backend}] {report}");
        assert_eq!(
            down["error"], "could not connect to the supplier",
            "[{backend}] generic: no URL, no connection error text"
        );

        let listed = call(
            client()
                .get(format!("{}/addressing/suppliers", hub.base))
                .bearer_auth(&key_b),
        )
        .await;
        assert_eq!(listed.status, StatusCode::OK);
        let listed = listed.body.as_array().unwrap().clone();
        assert_eq!(listed.len(), 3);
        assert!(
            listed[2]["last_sync_error"].is_null(),
            "another supplier's poll error is not B's to see: {listed:?}"
        );
        let as_operator = call(
            client()
                .get(format!("{}/addressing/suppliers", hub.base))
                .bearer_auth(&hub.admin_key),
        )
        .await;
        let as_operator = as_operator.body.as_array().unwrap().clone();
        assert!(
            as_operator[2]["last_sync_error"].is_string(),
            "{as_operator:?}"
        );
        assert!(
            as_operator[0]["last_sync_error"].is_null(),
            "{as_operator:?}"
        );

        // ITI-90: find A's Organization by URA, with its Endpoint by _revinclude.
        let found = fhir_get(
            &hub,
            &key_b,
            &format!(
                "Organization?identifier={URA_SYSTEM}|{URA_A}&_revinclude=Endpoint:organization"
            ),
        )
        .await;
        assert_eq!(found.status, StatusCode::OK, "{}", found.body);
        let matches = entries(&found.body, "match");
        assert_eq!(matches.len(), 1, "[{backend}] {}", found.body);
        assert_eq!(matches[0]["name"], "Huisartsenpraktijk A");
        let organization_id = matches[0]["id"].as_str().unwrap().to_string();
        let included = entries(&found.body, "include");
        assert_eq!(included.len(), 1, "[{backend}] {}", found.body);
        assert_eq!(included[0]["address"], node_a.base.as_str());
        assert_eq!(included[0]["meta"]["source"], node_a.base.as_str());
        let self_link = found.body["link"][0]["url"].as_str().unwrap();
        assert!(
            self_link.starts_with(&format!("{}/addressing/fhir/", hub.base)),
            "{self_link}"
        );

        // Endpoint?organization=… with _include, and the same search by POST.
        let endpoints = fhir_get(
            &hub,
            &key_a,
            &format!("Endpoint?organization=Organization/{organization_id}&_include=Endpoint:organization"),
        )
        .await;
        assert_eq!(
            entries(&endpoints.body, "match").len(),
            1,
            "{}",
            endpoints.body
        );
        assert_eq!(
            entries(&endpoints.body, "include")[0]["id"],
            organization_id.as_str()
        );
        let posted = call(
            client()
                .post(format!("{}/addressing/fhir/Endpoint/_search", hub.base))
                .bearer_auth(&key_a)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("organization=Organization/{organization_id}")),
        )
        .await;
        assert_eq!(posted.status, StatusCode::OK, "{}", posted.body);
        assert_eq!(entries(&posted.body, "match").len(), 1);

        // The same local id from two suppliers: two resources.
        for ura in [URA_A, URA_B] {
            let read = fhir_get(&hub, &key_a, &format!("Location/{ura}-main")).await;
            assert_eq!(read.status, StatusCode::OK, "[{backend}] {ura}");
            assert_eq!(
                read.body["managingOrganization"]["reference"],
                format!("Organization/{ura}-ura-{ura}")
            );
        }
        let rooms = fhir_get(&hub, &key_a, "Location?name=Room&_summary=count").await;
        assert_eq!(
            rooms.body["total"], 1_001,
            "[{backend}] every history page was read"
        );

        // Reads only, and only for known callers.
        let metrics = fhir_get(&hub, &key_a, "../metrics").await;
        assert_eq!(
            metrics.status,
            StatusCode::NOT_FOUND,
            "the node router's metrics stay hidden"
        );
        let anonymous =
            call(client().get(format!("{}/addressing/fhir/Organization", hub.base))).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anonymous.body["resourceType"], "OperationOutcome");
        let organization = json!({"resourceType": "Organization", "id": "x", "name": "X"});
        let existing = format!("Organization/{organization_id}");
        for (method, path) in [
            (reqwest::Method::POST, "Organization"),
            (reqwest::Method::PUT, "Organization/x"),
            (reqwest::Method::PATCH, "Organization/x"),
            (reqwest::Method::DELETE, existing.as_str()),
            (reqwest::Method::POST, ""),
        ] {
            let reply = call(
                client()
                    .request(
                        method.clone(),
                        format!("{}/addressing/fhir/{path}", hub.base),
                    )
                    .bearer_auth(&hub.admin_key)
                    .header("content-type", "application/fhir+json")
                    .body(organization.to_string()),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(
                reply.body["resourceType"], "OperationOutcome",
                "{method} {path}"
            );
        }
        assert_eq!(
            fhir_get(&hub, &key_a, &format!("Organization/{organization_id}"))
                .await
                .status,
            StatusCode::OK
        );

        // The node's cache, filled from the hub.
        let cache_dir = tempfile::tempdir().unwrap();
        let database = cache_database(&hub, &cache_dir).await;
        let cache = tokio::task::spawn_blocking(move || AddressBookCache::open(database).unwrap())
            .await
            .unwrap();
        let filled = cache.sync(&hub.base, &key_a).await.unwrap();
        assert_eq!(
            filled.stored, 4,
            "[{backend}] two Organizations, two Endpoints: {filled:?}"
        );

        // An update and a delete at the nodes reach the address book and the cache.
        let renamed = NodeIdentity {
            ura: URA_B.into(),
            name: "Apotheek B (nieuw)".into(),
        };
        publish_own_entries(&node_b.store, &renamed, "https://b.example/fhir")
            .await
            .unwrap();
        assert_eq!(
            node_a
                .send(reqwest::Method::DELETE, "Location/main", None)
                .await,
            204
        );
        let report = sync(&hub).await;
        assert_eq!(supplier_report(&report, URA_A)["applied"], 1, "{report}");
        assert_eq!(supplier_report(&report, URA_B)["applied"], 2, "{report}");
        assert_eq!(
            fhir_get(&hub, &key_a, &format!("Location/{URA_A}-main"))
                .await
                .status,
            StatusCode::GONE
        );
        assert_eq!(
            fhir_get(&hub, &key_a, &format!("Location/{URA_B}-main"))
                .await
                .status,
            StatusCode::OK
        );
        let again = sync(&hub).await;
        for ura in [URA_A, URA_B] {
            assert_eq!(
                supplier_report(&again, ura)["applied"],
                0,
                "unchanged: {again}"
            );
        }
        cache.sync(&hub.base, &key_a).await.unwrap();

        // The hub goes away; the cache still answers.
        hub.stop().await;
        assert!(cache.sync(&hub.base, &key_a).await.is_err());
        let b = cache.endpoint_for(URA_B).await.unwrap().unwrap();
        assert_eq!(b.name, "Apotheek B (nieuw)");
        assert_eq!(b.fhir_base_urls, vec!["https://b.example/fhir".to_string()]);
        let a = cache.endpoint_for(URA_A).await.unwrap().unwrap();
        assert_eq!(a.fhir_base_urls, vec![node_a.base.clone()]);
        assert_eq!(cache.endpoint_for("99999999").await.unwrap(), None);
        tokio::task::spawn_blocking(move || drop(cache))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_supplier_input_is_refused_with_a_problem_and_nothing_is_stored() {
    for mut hub in hubs().await {
        let backend = hub.backend;
        let key_a = hub.organisation(URA_A, "Huisartsenpraktijk A").await;
        let good = "https://a.example/fhir";
        let cases: Vec<(&str, &str, Value, StatusCode)> = vec![
            (
                &hub.admin_key,
                "1234",
                json!({"name": "A", "fhir_base_url": good}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &hub.admin_key,
                URA_A,
                json!({"name": "A", "fhir_base_url": "ftp://a.example"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &hub.admin_key,
                URA_A,
                json!({"name": "A", "fhir_base_url": "not a url"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &hub.admin_key,
                URA_A,
                json!({"name": "A", "fhir_base_url": "https://a.example/fhir?x=1"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &hub.admin_key,
                URA_A,
                json!({"name": "", "fhir_base_url": good}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &hub.admin_key,
                URA_A,
                json!({"name": "A"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &hub.admin_key,
                URA_A,
                json!({"name": "A", "fhir_base_url": good, "extra": 1}),
                StatusCode::BAD_REQUEST,
            ),
            (
                &key_a,
                URA_B,
                json!({"name": "B", "fhir_base_url": good}),
                StatusCode::FORBIDDEN,
            ),
            (
                "",
                URA_A,
                json!({"name": "A", "fhir_base_url": good}),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "zn_unknown",
                URA_A,
                json!({"name": "A", "fhir_base_url": good}),
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (key, ura, body, status) in cases {
            let mut request = client()
                .put(format!("{}/addressing/suppliers/{ura}", hub.base))
                .json(&body);
            if !key.is_empty() {
                request = request.bearer_auth(key);
            }
            let reply = call(request).await;
            assert_eq!(
                reply.status, status,
                "[{backend}] {ura} {body}: {}",
                reply.body
            );
            assert_eq!(
                reply.content_type, "application/problem+json",
                "[{backend}] {body}"
            );
            assert!(
                reply.body["detail"].is_string(),
                "[{backend}] {}",
                reply.body
            );
        }
        let listed = call(
            client()
                .get(format!("{}/addressing/suppliers", hub.base))
                .bearer_auth(&key_a),
        )
        .await;
        assert_eq!(listed.body, json!([]), "[{backend}] nothing stored");
        let anonymous = call(client().get(format!("{}/addressing/suppliers", hub.base))).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let sync_by_organisation = call(
            client()
                .post(format!("{}/addressing/sync", hub.base))
                .bearer_auth(&key_a),
        )
        .await;
        assert_eq!(sync_by_organisation.status, StatusCode::FORBIDDEN);
        hub.stop().await;
    }
}
