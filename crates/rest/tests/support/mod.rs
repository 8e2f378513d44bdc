//! Test support: start a real node on port 0 over SQLite or PostgreSQL and talk HTTP to it.
//!
//! PostgreSQL runs when `ZORGNET_TEST_POSTGRES_URL` is set (`.ci/run` sets it); each node
//! gets its own fresh schema. Without it, the PostgreSQL half is skipped with a loud notice.

#![allow(dead_code)]

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_rest::{ExternalType, NodeIdentity};
use zorgnet_store::Store;

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VARIABLE: &str = "ZORGNET_TEST_POSTGRES_URL";

/// A running node.
pub struct Node {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// FHIR base URL.
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
    /// The bulk export's directory.
    _exports: tempfile::TempDir,
}

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One node per available backend.
pub async fn nodes() -> Vec<Node> {
    nodes_with(&[]).await
}

/// One node per available backend, whose stores never hold the `external` types.
pub async fn nodes_with(external: &[ExternalType]) -> Vec<Node> {
    let mut nodes = vec![sqlite_node_with(external).await];
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => nodes.push(postgres_node(&url, external).await),
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
    nodes
}

pub async fn sqlite_node() -> Node {
    sqlite_node_with(&[]).await
}

async fn sqlite_node_with(external: &[ExternalType]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("node.sqlite"), SearchRegistry::r4()).unwrap();
    start("sqlite", store, Some(dir), external).await
}

async fn postgres_node(url: &str, external: &[ExternalType]) -> Node {
    let schema = format!(
        "zorgnet_test_{}_{}_{}",
        std::process::id(),
        SCHEMA_COUNTER.fetch_add(1, Ordering::SeqCst),
        zorgnet_store::now_ms()
    );
    let url = url.to_string();
    let store = tokio::task::spawn_blocking(move || {
        let schema_url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
        Store::open_postgres(&schema_url, SearchRegistry::r4()).unwrap()
    })
    .await
    .unwrap();
    start("postgres", store, None, external).await
}

/// Two nodes, two stores, on one fresh PostgreSQL schema: how several node processes share a
/// database. `None` (with a notice) when no PostgreSQL server is configured.
pub async fn postgres_pair() -> Option<(Node, Node)> {
    let url = match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            {
                // Written to the process's stderr, not through the test harness's capture, so
                // that a skip shows in every run.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: two nodes on one PostgreSQL database ({POSTGRES_URL_VARIABLE} is not set) ***\n"
                );
            };
            return None;
        }
    };
    let schema = format!(
        "zorgnet_test_{}_{}_{}",
        std::process::id(),
        SCHEMA_COUNTER.fetch_add(1, Ordering::SeqCst),
        zorgnet_store::now_ms()
    );
    let (first, second) = tokio::task::spawn_blocking(move || {
        let schema_url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
        (
            Store::open_postgres(&schema_url, SearchRegistry::r4()).unwrap(),
            Store::open_postgres(&schema_url, SearchRegistry::r4()).unwrap(),
        )
    })
    .await
    .unwrap();
    Some((
        start("postgres", first, None, &[]).await,
        start("postgres", second, None, &[]).await,
    ))
}

async fn start(
    backend: &'static str,
    store: Store,
    dir: Option<tempfile::TempDir>,
    external: &[ExternalType],
) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let exports = tempfile::tempdir().unwrap();
    let router = zorgnet_rest::finish(zorgnet_rest::routes(
        zorgnet_rest::AppState::with_export_dir(
            store,
            NodeIdentity {
                ura: "12345678".into(),
                name: "Test practice".into(),
            },
            format!("http://{address}/fhir"),
            Vec::new(),
            external.to_vec(),
            exports.path().join("exports"),
        ),
    ));
    tokio::spawn(zorgnet_rest::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Node {
        backend,
        base: format!("http://{address}/fhir"),
        client: reqwest::Client::new(),
        _dir: dir,
        _exports: exports,
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .put(self.url(path))
                .header("content-type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(self.url(path))).await
    }

    /// Creates and returns the id, asserting 201.
    pub async fn create(&self, resource: &Value) -> String {
        let resource_type = resource["resourceType"].as_str().unwrap();
        let reply = self.post(resource_type, resource).await;
        assert_eq!(
            reply.status, 201,
            "[{}] create {resource_type}: {}",
            self.backend, reply.text
        );
        reply.body["id"].as_str().unwrap().to_string()
    }

    /// Ids of the matches of a search (first page).
    pub async fn search_ids(&self, query: &str) -> Vec<String> {
        let reply = self.get(query).await;
        assert_eq!(
            reply.status, 200,
            "[{}] {query}: {}",
            self.backend, reply.text
        );
        match_ids(&reply.body)
    }

    /// Total count of a search.
    pub async fn count(&self, query: &str) -> i64 {
        let separator = if query.contains('?') { '&' } else { '?' };
        let reply = self.get(&format!("{query}{separator}_summary=count")).await;
        assert_eq!(
            reply.status, 200,
            "[{}] {query}: {}",
            self.backend, reply.text
        );
        reply.body["total"].as_i64().unwrap()
    }
}

pub fn match_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts an OperationOutcome error with the given status.
pub fn assert_outcome(reply: &Reply, status: u16, context: &str) {
    assert_eq!(reply.status, status, "{context}: {}", reply.text);
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{context}: {}",
        reply.text
    );
    assert!(
        reply.body["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{context}"
    );
}
