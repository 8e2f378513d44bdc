//! A real hub on port 0, on SQLite or PostgreSQL, and helpers to talk to it.
#![allow(dead_code)]

pub mod outbox_node;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use zorgnet_hub::{Hub, HubConfig};
use zorgnet_node::hub_client::HubClient;

/// Environment variable with a PostgreSQL URL for the PostgreSQL half of the tests.
pub const POSTGRES_URL_VARIABLE: &str = "ZORGNET_TEST_POSTGRES_URL";

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct TestHub {
    pub backend: &'static str,
    pub base: String,
    pub admin_key: String,
    pub dir: tempfile::TempDir,
    pub postgres: Option<String>,
    /// The hub's own access log.
    pub audit: std::sync::Arc<zorgnet_audit::AuditLog>,
    /// The hub's state, for what the operator sets at start.
    pub state: std::sync::Arc<zorgnet_hub::HubState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestHub {
    /// Stops the hub and waits until its port is closed.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn client(&self, key: &str) -> HubClient {
        HubClient::new(&self.base, key).unwrap()
    }

    /// Registers an organisation and returns its key.
    pub async fn organisation(&self, ura: &str, name: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/registry/organisations", self.base))
            .bearer_auth(&self.admin_key)
            .json(&json!({"ura": ura, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["api_key"].as_str().unwrap().to_string()
    }
}

/// Registers a treatment relation (a referral) of the organisation whose key is `key` with
/// the person whose BSN is `bsn`: the basis that organisation's lookups and reads of others'
/// data about the person need. Returns the relation as the hub recorded it.
pub async fn relation(hub: &TestHub, key: &str, bsn: &str) -> Value {
    let person = zorgnet_pseudonym::PersonalId::from(zorgnet_pseudonym::Bsn::parse(bsn).unwrap());
    relate(&hub.client(key), &person).await
}

/// Registers a treatment relation (a referral) of `client`'s organisation with `person`.
pub async fn relate(client: &HubClient, person: &zorgnet_pseudonym::PersonalId) -> Value {
    let token = client.referral_index_token(person).await.unwrap();
    client
        .post(
            "/relations",
            &json!({"token": zorgnet_node::hub_client::token_value(&token), "kind": "referral"}),
        )
        .await
        .unwrap()
}

/// Calls a hub path as the holder of `key` (none: anonymously); the status and the JSON
/// answer (`Null` when there is none).
pub async fn call_hub(
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
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A fresh exchange token for the referral index naming the person with BSN `bsn`, made by
/// the holder of `key`, as JSON for a request body.
pub async fn person_token(hub: &TestHub, key: &str, bsn: &str) -> Value {
    let person = zorgnet_pseudonym::PersonalId::from(zorgnet_pseudonym::Bsn::parse(bsn).unwrap());
    let token = hub.client(key).referral_index_token(&person).await.unwrap();
    zorgnet_node::hub_client::token_value(&token)
}

/// One hub per available backend: SQLite always, PostgreSQL when the variable is set.
pub async fn hubs() -> Vec<TestHub> {
    let mut hubs = vec![start(None).await];
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "zorgnet_test_hub_{}_{}_{}",
                std::process::id(),
                SCHEMA_COUNTER.fetch_add(1, Ordering::SeqCst),
                zorgnet_db::now_ms()
            );
            let schema_url = tokio::task::spawn_blocking(move || {
                zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap()
            })
            .await
            .unwrap();
            hubs.push(start(Some(schema_url)).await);
        }
        _ => {
            // Written to the process's stderr, not through the test harness's capture, so
            // that a skip shows in every run.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: PostgreSQL half of this test ({POSTGRES_URL_VARIABLE} is not set; .ci/run sets it) ***\n"
            );
        }
    }
    hubs
}

/// Starts a hub in a fresh directory (or restarts one in `dir`).
pub async fn start(postgres: Option<String>) -> TestHub {
    start_in(tempfile::tempdir().unwrap(), postgres).await
}

pub async fn start_in(dir: tempfile::TempDir, postgres: Option<String>) -> TestHub {
    start_at(dir, postgres, "127.0.0.1:0").await
}

/// Starts a hub on a given address (to restart one on the port it had).
pub async fn start_at(dir: tempfile::TempDir, postgres: Option<String>, address: &str) -> TestHub {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("zorgnet=warn,zorgnet_hub=warn")
        .with_test_writer()
        .try_init();
    let config = HubConfig {
        data_dir: dir.path().to_path_buf(),
        postgres: postgres.clone(),
        allow_insecure_endpoints: true,
        client_tls: None,
    };
    let hub = tokio::task::spawn_blocking(move || Hub::open(&config).unwrap())
        .await
        .unwrap();
    let admin_key = std::fs::read_to_string(hub.admin_key_path()).unwrap();
    let audit = hub.state().audit.log().clone();
    let state = hub.state();
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    hub.serving_at(listener.local_addr().unwrap());
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = hub.router(&base);
    let task = tokio::spawn(async move {
        zorgnet_node::serve(listener, router, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestHub {
        backend: if postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        base,
        admin_key: admin_key.trim().to_string(),
        dir,
        postgres,
        audit,
        state,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A real node on port 0 with its outbox delivering to `hub`; with `in_network`, it also
/// publishes its Organization and Endpoint, is listed as an mCSD supplier, and serves
/// `$localize` / `$fetch` from its address-book cache.
pub struct TestNode {
    pub base: String,
    pub store: zorgnet_store::Store,
    /// The node's access log.
    pub audit: std::sync::Arc<zorgnet_audit::AuditLog>,
    pub cache: Option<zorgnet_node::addressing::AddressBookCache>,
    _dir: tempfile::TempDir,
    stop: tokio::sync::broadcast::Sender<()>,
}

impl TestNode {
    /// Stops serving and delivering.
    pub fn stop(&self) {
        let _ = self.stop.send(());
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn node(hub: &TestHub, ura: &str, key: &str, in_network: bool) -> TestNode {
    node_with_access(hub, ura, key, in_network, Default::default()).await
}

/// [`node`] with its access policy towards other organisations tuned by `access` (the
/// consent decisions' time to live).
pub async fn node_with_access(
    hub: &TestHub,
    ura: &str,
    key: &str,
    in_network: bool,
    access: zorgnet_node::access::AccessConfig,
) -> TestNode {
    use zorgnet_node::{NodeIdentity, addressing, network::Network, outbox};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let (store, wake) = tokio::task::spawn_blocking(move || {
        let store =
            zorgnet_store::Store::open_sqlite(&path, zorgnet_fhir::search::SearchRegistry::r4())
                .unwrap();
        let wake = outbox::install(&store).unwrap();
        (store, wake)
    })
    .await
    .unwrap();
    let logged = store.clone();
    let (audit, sink) = tokio::task::spawn_blocking(move || {
        zorgnet_node::audit::open_with_key(&logged, zorgnet_audit::ChainKey::generate()).unwrap()
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let identity = NodeIdentity {
        ura: ura.into(),
        name: format!("Organisatie {ura}"),
    };
    let client = HubClient::new(&hub.base, key).unwrap();
    let (network, cache) = if in_network {
        addressing::publish_own_entries(&store, &identity, &base)
            .await
            .unwrap();
        let supplier = json!({"name": identity.name, "fhir_base_url": base});
        client
            .put(&format!("/addressing/suppliers/{ura}"), &supplier)
            .await
            .unwrap();
        let db = store.database().clone();
        let cache =
            tokio::task::spawn_blocking(move || addressing::AddressBookCache::open(db).unwrap())
                .await
                .unwrap();
        let network = std::sync::Arc::new(
            Network::new(client.clone(), cache.clone())
                .unwrap()
                .with_access(access),
        );
        (Some(network), Some(cache))
    } else {
        (None, None)
    };
    let router = zorgnet_node::router_in_network(
        store.clone(),
        identity,
        base.clone(),
        network,
        zorgnet_node::authn::LocalClients::InsecureDev,
        zorgnet_node::authn::NodeOidc::default(),
        sink,
    );
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut serve_stop = stop.subscribe();
    tokio::spawn(async move {
        zorgnet_node::serve(listener, router, async move {
            let _ = serve_stop.recv().await;
        })
        .await
        .unwrap();
    });
    let mut deliver_stop = stop.subscribe();
    tokio::spawn(outbox::run_delivery(
        store.clone(),
        client,
        wake,
        async move {
            let _ = deliver_stop.recv().await;
        },
    ));
    TestNode {
        base,
        store,
        audit,
        cache,
        _dir: dir,
        stop,
    }
}
