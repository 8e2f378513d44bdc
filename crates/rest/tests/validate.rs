//! `$validate` over HTTP, on SQLite and PostgreSQL: a resource POSTed to the type, in a
//! Parameters, the stored resource by id, `mode` and `profile`, and StructureDefinitions
//! stored in the node used at once (and again after they change).

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use support::POSTGRES_URL_VARIABLE;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_rest::{AppState, NodeIdentity};
use zorgnet_store::Store;

struct Node {
    base: String,
    client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

async fn start(store: Store, dir: Option<tempfile::TempDir>, enforce: bool) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state: Arc<AppState> = AppState::new(
        store,
        NodeIdentity {
            ura: "12345678".into(),
            name: "Test practice".into(),
        },
        format!("http://{address}/fhir"),
        Vec::new(),
    );
    state.validation.enforce_profiles(enforce);
    let router = zorgnet_rest::finish(zorgnet_rest::routes(state.clone()));
    tokio::spawn(zorgnet_rest::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Node {
        base: format!("http://{address}/fhir"),
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn nodes() -> Vec<Node> {
    nodes_enforcing(false).await
}

async fn nodes_enforcing(enforce: bool) -> Vec<Node> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("node.sqlite"), SearchRegistry::r4()).unwrap();
    let mut nodes = vec![start(store, Some(dir), enforce).await];
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "zorgnet_test_validate_{}_{}",
                std::process::id(),
                zorgnet_store::now_ms()
            );
            let store = tokio::task::spawn_blocking(move || {
                let schema_url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
                Store::open_postgres(&schema_url, SearchRegistry::r4()).unwrap()
            })
            .await
            .unwrap();
            nodes.push(start(store, None, enforce).await);
        }
        _ => eprintln!(
            "\n*** SKIPPED: PostgreSQL half of the $validate tests ({POSTGRES_URL_VARIABLE} is not set) ***\n"
        ),
    }
    nodes
}

impl Node {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.client
                .post(format!("{}/{path}", self.base))
                .header("content-type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.client
                .put(format!("{}/{path}", self.base))
                .header("content-type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}/{path}", self.base)))
            .await
    }
}

fn errors(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["severity"] == "error")
        .map(|i| i["diagnostics"].as_str().unwrap_or_default().to_string())
        .collect()
}

const PROFILE_URL: &str = "http://example.org/fhir/StructureDefinition/zn-patient";

fn profile(min_names: u32) -> Value {
    json!({
        "resourceType": "StructureDefinition",
        "id": "zn-patient",
        "url": PROFILE_URL,
        "name": "ZnPatient",
        "status": "draft",
        "kind": "resource",
        "abstract": false,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "differential": {"element": [
            {"id": "Patient", "path": "Patient"},
            {"id": "Patient.name", "path": "Patient.name", "min": min_names},
            {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1}
        ]}
    })
}

#[tokio::test]
async fn validate_a_posted_resource() {
    for node in nodes().await {
        // Clean: 200 with one information issue.
        let patient = json!({"resourceType": "Patient", "gender": "female",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}});
        let (status, outcome) = node.post("Patient/$validate", &patient).await;
        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["severity"], "information", "{outcome}");
        assert!(errors(&outcome).is_empty());

        // Invalid: still 200, with the base validator's and the invariants' errors.
        let bad = json!({"resourceType": "Patient", "gender": "unknown-code", "contact": [{"gender": "male"}]});
        let (status, outcome) = node.post("Patient/$validate", &bad).await;
        assert_eq!(status, 200, "{outcome}");
        let errs = errors(&outcome);
        assert!(
            errs.iter().any(|e| e.contains("administrative-gender")),
            "{outcome}"
        );
        assert!(errs.iter().any(|e| e.contains("pat-1")), "{outcome}");

        // In a Parameters, with a mode.
        let parameters = json!({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": bad},
            {"name": "mode", "valueCode": "create"}
        ]});
        let (status, outcome) = node.post("Patient/$validate", &parameters).await;
        assert_eq!(status, 200, "{outcome}");
        assert!(!errors(&outcome).is_empty());

        // The operation itself failing: 4xx.
        let (status, _) = node.post("Observation/$validate", &patient).await;
        assert_eq!(status, 400);
        let (status, _) = node.post("Patient/$validate?mode=sideways", &patient).await;
        assert_eq!(status, 400);
        let (status, outcome) = node
            .post(
                "Patient/$validate?profile=http://example.org/unknown",
                &patient,
            )
            .await;
        assert_eq!(status, 400, "{outcome}");
    }
}

#[tokio::test]
async fn validate_against_stored_profiles() {
    for node in nodes().await {
        let patient = json!({"resourceType": "Patient", "id": "p1",
            "meta": {"profile": [PROFILE_URL]},
            "identifier": [{"system": "http://example.org/ids", "value": "1"}]});
        // Before the profile is stored: a warning, no error.
        let (status, outcome) = node.post("Patient/$validate", &patient).await;
        assert_eq!(status, 200);
        assert!(errors(&outcome).is_empty(), "{outcome}");
        assert!(outcome.to_string().contains("not known"), "{outcome}");

        let (status, body) = node
            .put("StructureDefinition/zn-patient", &profile(1))
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
        let (status, outcome) = node.post("Patient/$validate", &patient).await;
        assert_eq!(status, 200);
        let errs = errors(&outcome);
        assert!(
            errs.iter()
                .any(|e| e.contains("Patient.name") && e.contains("ZnPatient")),
            "{outcome}"
        );

        // Named by the profile parameter, on a resource without meta.profile.
        let plain = json!({"resourceType": "Patient", "name": [{"family": "Jansen"}]});
        let (status, outcome) = node
            .post(&format!("Patient/$validate?profile={PROFILE_URL}"), &plain)
            .await;
        assert_eq!(status, 200);
        assert!(
            errors(&outcome)
                .iter()
                .any(|e| e.contains("Patient.identifier")),
            "{outcome}"
        );

        // The stored profile changes: the next validation uses the new version.
        let (status, _) = node
            .put("StructureDefinition/zn-patient", &profile(0))
            .await;
        assert_eq!(status, 200);
        let (status, outcome) = node.post("Patient/$validate", &patient).await;
        assert_eq!(status, 200);
        assert!(errors(&outcome).is_empty(), "{outcome}");
    }
}

#[tokio::test]
async fn validate_a_stored_resource() {
    for node in nodes().await {
        let patient =
            json!({"resourceType": "Patient", "id": "p2", "contact": [{"gender": "male"}]});
        let (status, body) = node.put("Patient/p2", &patient).await;
        assert!(status == 201 || status == 200, "{status} {body}");

        for (status, outcome) in [
            node.get("Patient/p2/$validate").await,
            node.post(
                "Patient/p2/$validate",
                &json!({"resourceType": "Parameters"}),
            )
            .await,
        ] {
            assert_eq!(status, 200, "{outcome}");
            assert!(
                errors(&outcome).iter().any(|e| e.contains("pat-1")),
                "{outcome}"
            );
        }
        // A resource sent for the instance: its id must match.
        let (status, _) = node
            .post(
                "Patient/p2/$validate?mode=update",
                &json!({"resourceType": "Patient", "id": "other"}),
            )
            .await;
        assert_eq!(status, 400);
        let (status, outcome) = node
            .post(
                "Patient/p2/$validate?mode=update",
                &json!({"resourceType": "Patient", "id": "p2"}),
            )
            .await;
        assert_eq!(status, 200, "{outcome}");
        assert!(errors(&outcome).is_empty(), "{outcome}");

        // Delete mode: exists, references not checked.
        let (status, outcome) = node.get("Patient/p2/$validate?mode=delete").await;
        assert_eq!(status, 200);
        assert!(outcome.to_string().contains("not checked"), "{outcome}");

        // Unknown resources.
        let (status, _) = node.get("Patient/nobody/$validate").await;
        assert_eq!(status, 404);
        let (status, _) = node.get("Nonsense/p2/$validate").await;
        assert_eq!(status, 404);
    }
}

#[test]
fn enforcement_refuses_declared_profile_errors() {
    let mut set = zorgnet_profiles::ProfileSet::new();
    set.add(profile(1)).unwrap();
    let patient = json!({"resourceType": "Patient", "meta": {"profile": [PROFILE_URL]},
        "identifier": [{"system": "http://example.org/ids", "value": "1"}]});
    let refused = zorgnet_rest::validate_op::enforce_with(&set, &patient).unwrap_err();
    assert_eq!(refused.status.as_u16(), 422);
    let mut fine = patient.clone();
    fine["name"] = json!([{"family": "Jansen"}]);
    assert!(zorgnet_rest::validate_op::enforce_with(&set, &fine).is_ok());
    // An undeclared profile is not enforced.
    assert!(
        zorgnet_rest::validate_op::enforce_with(&set, &json!({"resourceType": "Patient"})).is_ok()
    );
}

/// `--enforce-profiles`: a create, an update, a transaction and a batch entry declaring a
/// stored profile they break are refused with 422 (a transaction as a whole, a batch entry on
/// its own) and store nothing; conforming resources and resources declaring no profile are
/// stored.
#[tokio::test]
async fn enforced_profiles_refuse_nonconforming_writes() {
    for node in nodes_enforcing(true).await {
        let (status, body) = node
            .put("StructureDefinition/zn-patient", &profile(1))
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
        let breaking = json!({"resourceType": "Patient", "meta": {"profile": [PROFILE_URL]},
            "identifier": [{"system": "http://example.org/ids", "value": "1"}]});
        let conforming = json!({"resourceType": "Patient", "meta": {"profile": [PROFILE_URL]},
            "identifier": [{"system": "http://example.org/ids", "value": "2"}],
            "name": [{"family": "Jansen"}]});
        let (status, outcome) = node.post("Patient", &breaking).await;
        assert_eq!(status, 422, "{outcome}");
        assert!(!errors(&outcome).is_empty(), "{outcome}");
        let (status, _) = node.put("Patient/p-breaking", &breaking).await;
        assert_eq!(status, 422);
        let (status, _) = node.post("Patient", &conforming).await;
        assert_eq!(status, 201);
        let (status, _) = node
            .post("Patient", &json!({"resourceType": "Patient"}))
            .await;
        assert_eq!(status, 201, "no declared profile, nothing enforced");

        let entry = |resource: &Value| json!({"resource": resource, "request": {"method": "POST", "url": "Patient"}});
        let (status, outcome) = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction",
                    "entry": [entry(&conforming), entry(&breaking)]}),
            )
            .await;
        assert_eq!(status, 422, "{outcome}");
        let put = |id: &str, resource: &Value| {
            let mut resource = resource.clone();
            resource["id"] = json!(id);
            json!({"resource": resource, "request": {"method": "PUT", "url": format!("Patient/{id}")}})
        };
        let (status, answer) = node
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch",
                    "entry": [put("p-ok", &conforming), put("p-bad", &breaking)]}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["entry"][0]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("201")
        );
        assert!(
            answer["entry"][1]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("422"),
            "{answer}"
        );
        let (status, _) = node.get("Patient/p-bad").await;
        assert_eq!(status, 404);
        let (_, found) = node
            .get("Patient?identifier=http://example.org/ids|1")
            .await;
        assert_eq!(found["total"], 0, "nothing breaking was stored: {found}");
    }
}
