//! Topic-based Subscriptions (R4 backport style) over HTTP, on both backends: a node with its
//! dispatcher running, and a small receiver that records the notifications.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_rest::subscriptions::{self, DispatcherConfig, TOPIC_PREFIX};
use zorgnet_rest::{AppState, NodeIdentity};
use zorgnet_store::Store;

const POSTGRES_URL_VARIABLE: &str = "ZORGNET_TEST_POSTGRES_URL";
static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);
/// How long a test waits for something the dispatcher does.
const WAIT: Duration = Duration::from_secs(15);

struct Node {
    backend: &'static str,
    base: String,
    client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

fn fast() -> DispatcherConfig {
    DispatcherConfig {
        max_attempts: 3,
        first_retry_delay: Duration::from_millis(20),
        max_retry_delay: Duration::from_millis(80),
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        queue_limit: 100,
    }
}

async fn nodes() -> Vec<Node> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("node.sqlite"), SearchRegistry::r4()).unwrap();
    let mut nodes = vec![start("sqlite", store, Some(dir)).await];
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "zorgnet_test_subs_{}_{}_{}",
                std::process::id(),
                SCHEMA_COUNTER.fetch_add(1, Ordering::SeqCst),
                zorgnet_store::now_ms()
            );
            let store = tokio::task::spawn_blocking(move || {
                let schema_url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
                Store::open_postgres(&schema_url, SearchRegistry::r4()).unwrap()
            })
            .await
            .unwrap();
            nodes.push(start("postgres", store, None).await);
        }
        _ => eprintln!(
            "\n*** SKIPPED: PostgreSQL half of this test ({POSTGRES_URL_VARIABLE} is not set) ***\n"
        ),
    }
    nodes
}

async fn start(backend: &'static str, store: Store, dir: Option<tempfile::TempDir>) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = AppState::new(
        store,
        NodeIdentity {
            ura: "12345678".into(),
            name: "Test practice".into(),
        },
        format!("http://{address}/fhir"),
        Vec::new(),
    );
    subscriptions::spawn_dispatcher_with(state.clone(), fast());
    let router = zorgnet_rest::finish(zorgnet_rest::routes(state));
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
    }
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    async fn create(&self, resource: &Value) -> String {
        let resource_type = resource["resourceType"].as_str().unwrap();
        let (status, body) = self
            .send(
                self.client
                    .post(self.url(resource_type))
                    .header("content-type", "application/fhir+json")
                    .body(resource.to_string()),
            )
            .await;
        assert_eq!(
            status, 201,
            "[{}] create {resource_type}: {body}",
            self.backend
        );
        body["id"].as_str().unwrap().to_string()
    }

    async fn update(&self, resource: &Value) {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let (status, body) = self
            .send(
                self.client
                    .put(self.url(&path))
                    .header("content-type", "application/fhir+json")
                    .body(resource.to_string()),
            )
            .await;
        assert_eq!(status, 200, "[{}] update {path}: {body}", self.backend);
    }

    async fn delete(&self, path: &str) {
        let (status, body) = self.send(self.client.delete(self.url(path))).await;
        assert!(
            status == 200 || status == 204,
            "[{}] delete {path}: {status} {body}",
            self.backend
        );
    }

    /// Waits until the Subscription's status is `status`; returns the Subscription.
    async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, body) = self.get(&format!("Subscription/{id}")).await;
            if body["status"] == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "[{}] Subscription/{id} never became {status}: {body}",
                self.backend
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A notification endpoint that records what it gets, and can fail requests.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<(HeaderMap, Value)>>,
    /// Requests still to be failed with 500; `usize::MAX`: all.
    fail: AtomicUsize,
    attempts: AtomicUsize,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            url: format!("http://{address}/hook"),
            state,
        }
    }

    fn fail_next(&self, n: usize) {
        self.state.fail.store(n, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<(HeaderMap, Value)> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `n` notifications have arrived, then a little longer to see no more come.
    async fn wait_for(&self, n: usize, backend: &str) -> Vec<(HeaderMap, Value)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.received().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "[{backend}] only {} of {n} notifications arrived: {:#?}",
                self.received().len(),
                self.received().iter().map(|(_, b)| b).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let received = self.received();
        assert_eq!(
            received.len(),
            n,
            "[{backend}] more notifications than expected: {:#?}",
            received.iter().map(|(_, b)| b).collect::<Vec<_>>()
        );
        received
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let fail = state.fail.load(Ordering::SeqCst);
    if fail > 0 {
        if fail != usize::MAX {
            state.fail.store(fail - 1, Ordering::SeqCst);
        }
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().push((headers, body));
    StatusCode::OK
}

fn subscription(topic: &str, filters: &[&str], endpoint: &str, content: &str) -> Value {
    let mut subscription = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": content
            }]},
            "header": ["Authorization: Bearer secret-token"]
        }
    });
    if !filters.is_empty() {
        subscription["_criteria"] = json!({"extension": filters.iter().map(|f| json!({
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": f
        })).collect::<Vec<_>>()});
    }
    subscription
}

fn observation(patient: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}
    })
}

/// The named parameter of the notification's SubscriptionStatus.
fn parameter<'a>(notification: &'a Value, name: &str) -> &'a Value {
    notification["entry"][0]["resource"]["parameter"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn event_part<'a>(notification: &'a Value, name: &str) -> &'a Value {
    parameter(notification, "notification-event")["part"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn topic(resource_type: &str) -> String {
    format!("{TOPIC_PREFIX}{resource_type}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filtered_subscription_gets_a_handshake_then_each_matching_change_in_order() {
    for node in nodes().await {
        let b = node.backend;
        let receiver = Receiver::start().await;
        let patient = node
            .create(&json!({"resourceType": "Patient", "active": true}))
            .await;
        let other = node
            .create(&json!({"resourceType": "Patient", "active": true}))
            .await;
        let filter = format!("Observation?patient=Patient/{patient}&code=http://loinc.org|718-7");
        let sub = node
            .create(&subscription(
                &topic("Observation"),
                &[&filter],
                &receiver.url,
                "id-only",
            ))
            .await;
        let handshake = receiver.wait_for(1, b).await;
        assert_eq!(parameter(&handshake[0].1, "type")["valueCode"], "handshake");
        node.wait_for_status(&sub, "active").await;

        let matching = node.create(&observation(&patient, "718-7")).await;
        node.create(&observation(&other, "718-7")).await;
        node.create(&observation(&patient, "1234-5")).await;
        node.create(&json!({"resourceType": "Patient", "active": false}))
            .await;
        let mut updated = observation(&patient, "718-7");
        updated["id"] = json!(matching);
        updated["status"] = json!("amended");
        node.update(&updated).await;
        node.delete(&format!("Observation/{matching}")).await;

        let received = receiver.wait_for(4, b).await;
        let focus = format!("{}/Observation/{matching}", node.base);
        for (n, (method, (headers, notification))) in ["POST", "PUT", "DELETE"]
            .iter()
            .zip(&received[1..])
            .enumerate()
        {
            let number = (n + 1).to_string();
            assert_eq!(notification["resourceType"], "Bundle", "[{b}]");
            assert_eq!(notification["type"], "history", "[{b}]");
            assert_eq!(
                parameter(notification, "type")["valueCode"],
                "event-notification",
                "[{b}]"
            );
            assert_eq!(parameter(notification, "status")["valueCode"], "active");
            assert_eq!(
                parameter(notification, "topic")["valueCanonical"],
                topic("Observation")
            );
            assert_eq!(
                parameter(notification, "subscription")["valueReference"]["reference"],
                format!("{}/Subscription/{sub}", node.base)
            );
            assert_eq!(
                parameter(notification, "events-since-subscription-start")["valueString"],
                number.as_str(),
                "[{b}] {notification}"
            );
            assert_eq!(
                event_part(notification, "event-number")["valueString"],
                number.as_str()
            );
            assert_eq!(
                event_part(notification, "focus")["valueReference"]["reference"],
                focus.as_str()
            );
            let entry = &notification["entry"][1];
            assert_eq!(entry["fullUrl"], focus.as_str(), "[{b}]");
            assert_eq!(entry["request"]["method"], *method, "[{b}]");
            assert!(
                entry.get("resource").is_none(),
                "[{b}] id-only carries no resource"
            );
            assert_eq!(
                headers["authorization"], "Bearer secret-token",
                "[{b}] channel header"
            );
            assert_eq!(headers["content-type"], "application/fhir+json");
        }

        let (status, bundle) = node.get(&format!("Subscription/{sub}/$status")).await;
        assert_eq!(status, 200, "[{b}] {bundle}");
        assert_eq!(bundle["type"], "searchset");
        let parameters = &bundle["entry"][0]["resource"];
        assert_eq!(parameters["resourceType"], "Parameters");
        let status_bundle = json!({"entry": [{"resource": parameters}]});
        assert_eq!(parameter(&status_bundle, "status")["valueCode"], "active");
        assert_eq!(
            parameter(&status_bundle, "type")["valueCode"],
            "query-status"
        );
        assert_eq!(
            parameter(&status_bundle, "events-since-subscription-start")["valueString"],
            "3"
        );
        assert_eq!(
            parameter(&status_bundle, "topic")["valueCanonical"],
            topic("Observation")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_resource_carries_the_resource_and_empty_carries_no_focus() {
    for node in nodes().await {
        let b = node.backend;
        let full = Receiver::start().await;
        let empty = Receiver::start().await;
        let full_sub = node
            .create(&subscription(
                &topic("Observation"),
                &[],
                &full.url,
                "full-resource",
            ))
            .await;
        let empty_sub = node
            .create(&subscription(
                &topic("Observation"),
                &[],
                &empty.url,
                "empty",
            ))
            .await;
        node.wait_for_status(&full_sub, "active").await;
        node.wait_for_status(&empty_sub, "active").await;
        let patient = node.create(&json!({"resourceType": "Patient"})).await;
        let id = node.create(&observation(&patient, "718-7")).await;

        let received = full.wait_for(2, b).await;
        let entry = &received[1].1["entry"][1];
        assert_eq!(entry["resource"]["resourceType"], "Observation", "[{b}]");
        assert_eq!(entry["resource"]["id"], id.as_str());
        assert_eq!(entry["resource"]["code"]["coding"][0]["code"], "718-7");

        let received = empty.wait_for(2, b).await;
        let notification = &received[1].1;
        assert_eq!(
            notification["entry"].as_array().map(Vec::len),
            Some(1),
            "[{b}] {notification}"
        );
        assert_eq!(event_part(notification, "event-number")["valueString"], "1");
        assert!(event_part(notification, "focus").is_null(), "[{b}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_fails_twice_still_gets_the_notification() {
    for node in nodes().await {
        let b = node.backend;
        let receiver = Receiver::start().await;
        receiver.fail_next(2);
        let sub = node
            .create(&subscription(
                &topic("Patient"),
                &[],
                &receiver.url,
                "id-only",
            ))
            .await;
        receiver.wait_for(1, b).await;
        node.wait_for_status(&sub, "active").await;
        receiver.fail_next(2);
        let patient = node.create(&json!({"resourceType": "Patient"})).await;
        let received = receiver.wait_for(2, b).await;
        assert_eq!(
            event_part(&received[1].1, "focus")["valueReference"]["reference"],
            format!("{}/Patient/{patient}", node.base),
            "[{b}]"
        );
        assert_eq!(receiver.state.attempts.load(Ordering::SeqCst), 6, "[{b}]");
        node.wait_for_status(&sub, "active").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_always_fails_sets_the_subscription_to_error() {
    for node in nodes().await {
        let b = node.backend;
        // The handshake fails.
        let down = Receiver::start().await;
        down.fail_next(usize::MAX);
        let sub = node
            .create(&subscription(&topic("Patient"), &[], &down.url, "id-only"))
            .await;
        let stored = node.wait_for_status(&sub, "error").await;
        assert!(
            stored["error"].as_str().unwrap().contains("handshake"),
            "[{b}] {stored}"
        );
        assert_eq!(down.state.attempts.load(Ordering::SeqCst), 3, "[{b}]");

        // An event's delivery fails after the handshake worked; the count is kept.
        let flaky = Receiver::start().await;
        let sub = node
            .create(&subscription(&topic("Patient"), &[], &flaky.url, "id-only"))
            .await;
        node.wait_for_status(&sub, "active").await;
        flaky.fail_next(usize::MAX);
        node.create(&json!({"resourceType": "Patient"})).await;
        let stored = node.wait_for_status(&sub, "error").await;
        assert!(
            stored["error"].as_str().unwrap().contains("event 1"),
            "[{b}] {stored}"
        );
        let (status, bundle) = node.get(&format!("Subscription/{sub}/$status")).await;
        assert_eq!(status, 200, "[{b}]");
        let status_bundle = json!({"entry": [{"resource": bundle["entry"][0]["resource"]}]});
        assert_eq!(parameter(&status_bundle, "status")["valueCode"], "error");
        assert_eq!(
            parameter(&status_bundle, "events-since-subscription-start")["valueString"],
            "1"
        );
        assert!(parameter(&status_bundle, "error")["valueCodeableConcept"]["text"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_that_cannot_be_served_are_set_to_error() {
    for node in nodes().await {
        let b = node.backend;
        let receiver = Receiver::start().await;
        let cases = [
            (
                subscription(&topic("Patient"), &[], "ftp://example.org/hook", "id-only"),
                "http(s)",
            ),
            (
                subscription(&topic("Nonsense"), &[], &receiver.url, "id-only"),
                "unknown topic",
            ),
            (
                subscription("Observation?code=1234", &[], &receiver.url, "id-only"),
                "unknown topic",
            ),
            (
                subscription(
                    &topic("Observation"),
                    &["Observation?nonsense=1"],
                    &receiver.url,
                    "id-only",
                ),
                "filter",
            ),
            (
                subscription(
                    &topic("Observation"),
                    &["Patient?active=true"],
                    &receiver.url,
                    "id-only",
                ),
                "topic's type",
            ),
            (
                subscription(&topic("Patient"), &[], &receiver.url, "everything"),
                "payload content",
            ),
        ];
        for (resource, reason) in cases {
            let id = node.create(&resource).await;
            let stored = node.wait_for_status(&id, "error").await;
            assert!(
                stored["error"].as_str().unwrap_or("").contains(reason),
                "[{b}] expected '{reason}': {stored}"
            );
        }
        assert!(receiver.received().is_empty(), "[{b}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_of_what_is_not_a_subscription_is_not_found() {
    for node in nodes().await {
        let b = node.backend;
        let (status, body) = node.get("Subscription/nope/$status").await;
        assert_eq!(status, 404, "[{b}] {body}");
        assert_eq!(body["resourceType"], "OperationOutcome");
        let patient = node.create(&json!({"resourceType": "Patient"})).await;
        let (status, _) = node.get(&format!("Patient/{patient}/$status")).await;
        assert_eq!(status, 404, "[{b}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_subscription_with_a_heartbeat_period_gets_heartbeats() {
    for node in nodes().await {
        let b = node.backend;
        let receiver = Receiver::start().await;
        let mut resource = subscription(&topic("Patient"), &[], &receiver.url, "id-only");
        resource["channel"]["extension"] = json!([{
            "url": subscriptions::HEARTBEAT_PERIOD_EXTENSION,
            "valueUnsignedInt": 1
        }]);
        let sub = node.create(&resource).await;
        node.wait_for_status(&sub, "active").await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while receiver.received().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "[{b}] no heartbeat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = receiver.received();
        assert_eq!(
            parameter(&received[1].1, "type")["valueCode"],
            "heartbeat",
            "[{b}]"
        );
        assert!(parameter(&received[1].1, "notification-event").is_null());
    }
}
