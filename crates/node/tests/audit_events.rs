//! The access log as FHIR over HTTP (`/fhir/AuditEvent`): the node's own systems search and
//! read every record as BALP AuditEvents, page by page; a citizen reads only the records all
//! of whose Patients are theirs, whatever they try (someone else's patient, no patient, a
//! list, a cursor, another record's id or its proof); professionals are refused; and a
//! citizen checks a record's inclusion proof against the signed checkpoint without trusting
//! the node. Reading the log is itself logged. No request, direct or in a Bundle, stores an
//! AuditEvent in the resource store or reads one from it, and the CapabilityStatement names
//! AuditEvent with exactly what is served, and only when the log is served. A citizen
//! reports one of their own records as suspicious (`$report`), which becomes an alert record
//! of the same log, counted at `/metrics`; nobody else reports, and nobody reports a record
//! that is not only theirs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use zorgnet_audit::{
    Agent, AgentKind, AuditLog, AuditRecord, Checkpoint, Hash, LogQuery, SigningKey,
    check_inclusion,
};
use zorgnet_idp::{ClientRegistration, DemoUser, DevIdp, IdpConfig, KeySource};
use zorgnet_node::NodeIdentity;
use zorgnet_node::authn::{LocalClients, NodeOidc};
use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};

const ADMIN_KEY: &str = "zn_node_test-admin-key";
const STAFF_CLIENT: &str = "node-staff";
const CITIZEN_CLIENT: &str = "node-citizens";
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
const ANNA_BSN: &str = "999911120";
const BOB_BSN: &str = "999990019";
const URA: &str = "00000011";

struct Node {
    base: String,
    idp: DevIdp,
    log: Arc<AuditLog>,
    signer: SigningKey,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    start_with(true).await
}

/// A node whose router is wrapped with `audit_api::served` when `served`.
async fn start_with(served: bool) -> Node {
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", idp_listener.local_addr().unwrap());
    let idp = DevIdp::new(IdpConfig {
        resources: Vec::new(),
        issuer: issuer.clone(),
        clients: [STAFF_CLIENT, CITIZEN_CLIENT]
            .iter()
            .map(|id| ClientRegistration {
                client_id: id.to_string(),
                redirect_uris: vec![format!("{issuer}/callback")],
            })
            .collect(),
        users: vec![
            DemoUser::citizen("anna", "Anna de Vries", ANNA_BSN),
            DemoUser::citizen("bob", "Bob Bakker", BOB_BSN),
            DemoUser::professional("gp", "Dr. Jansen", "123456789"),
        ],
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let router = idp.router();
    tokio::spawn(async move { axum::serve(idp_listener, router).await });
    let verifier = |audience: &str| {
        Some(Arc::new(
            OidcVerifier::new(OidcConfig {
                issuer: issuer.clone(),
                audience: audience.into(),
            })
            .unwrap(),
        ))
    };
    let oidc = NodeOidc {
        staff: verifier(STAFF_CLIENT),
        citizens: verifier(CITIZEN_CLIENT),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let (store, log, audit) = tokio::task::spawn_blocking(move || {
        let store =
            zorgnet_store::Store::open_sqlite(&path, zorgnet_fhir::search::SearchRegistry::r4())
                .unwrap();
        let (log, audit) =
            zorgnet_node::audit::open_with_key(&store, zorgnet_audit::ChainKey::generate())
                .unwrap();
        (store, log, audit)
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let router = zorgnet_node::router_in_network(
        store,
        NodeIdentity {
            ura: URA.into(),
            name: "Huisartsenpraktijk".into(),
        },
        base.clone(),
        None,
        LocalClients::key(ADMIN_KEY),
        oidc,
        audit,
    );
    let router = if served {
        zorgnet_node::audit_api::served(router, log.clone())
    } else {
        router
    };
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let node = Node {
        base,
        idp,
        log,
        signer: SigningKey::from_bytes(&[5; 32]),
        http: reqwest::Client::new(),
        _dir: dir,
    };
    node.load().await;
    node
}

impl Node {
    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/{path}", self.base)
        };
        let answer = self.http.get(url).bearer_auth(token).send().await.unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Anna's and Bob's Patients, a professional's and each citizen's reads, and a record
    /// (appended directly) that names both of them.
    async fn load(&self) {
        for (id, bsn) in [("p-anna", ANNA_BSN), ("p-bob", BOB_BSN)] {
            let answer = self
                .http
                .put(format!("{}/Patient/{id}", self.base))
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/fhir+json")
                .body(
                    json!({"resourceType": "Patient", "id": id,
                        "identifier": [{"system": BSN_SYSTEM, "value": bsn}]})
                    .to_string(),
                )
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success());
        }
        let gp = self.staff();
        for patient in ["p-anna", "p-bob", "p-anna"] {
            let (status, _) = self.get(&gp, &format!("Patient/{patient}")).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, _) = self.get(&self.citizen("anna"), "Patient/p-anna").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = self.get(&self.citizen("bob"), "Patient/p-bob").await;
        assert_eq!(status, StatusCode::OK);
        let both = AuditRecord {
            at_ms: zorgnet_db::now_ms(),
            agent: Agent {
                kind: AgentKind::System,
                id: None,
                role: None,
                organisation: Some(URA.into()),
                certificate: None,
            },
            patients: vec!["p-anna".into(), "p-bob".into()],
            action: "search".into(),
            request: "GET /fhir/Patient?_id=p-anna,p-bob".into(),
            purpose: None,
            reason: None,
            bases: Vec::new(),
            status: 200,
        };
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.append(&[both.to_json()]))
            .await
            .unwrap()
            .unwrap();
    }

    fn staff(&self) -> String {
        self.idp
            .access_token(STAFF_CLIENT, "gp", "openid user/*.read")
            .unwrap()
    }

    fn citizen(&self, who: &str) -> String {
        self.idp
            .access_token(CITIZEN_CLIENT, who, "openid patient/*.read")
            .unwrap()
    }

    /// A system client of the organisation's provider: no UZI number.
    fn system_client(&self, scope: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.idp
            .sign(&json!({"iss": self.idp.issuer(), "sub": "records-system",
            "aud": STAFF_CLIENT, "iat": now, "exp": now + 300, "scope": scope}))
    }

    /// The sequence numbers of the records naming exactly `patients`, by a scan of the log.
    async fn seqs_of(&self, patients: &[&str]) -> Vec<u64> {
        let log = self.log.clone();
        let page = tokio::task::spawn_blocking(move || {
            log.search(&LogQuery {
                limit: 1_000,
                ..LogQuery::default()
            })
        })
        .await
        .unwrap()
        .unwrap();
        page.found
            .into_iter()
            .filter(|f| f.record.patients == patients)
            .map(|f| f.seq)
            .collect()
    }

    async fn checkpoint(&self) -> Checkpoint {
        let (log, signer) = (self.log.clone(), self.signer.clone());
        tokio::task::spawn_blocking(move || log.checkpoint(&signer, URA, zorgnet_db::now_ms()))
            .await
            .unwrap()
            .unwrap()
    }
}

/// The AuditEvents of a searchset.
fn events(bundle: &Value) -> Vec<Value> {
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    assert_eq!(bundle["type"], "searchset");
    assert!(bundle.get("total").is_none(), "no counts");
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect()
}

/// The Patient references an AuditEvent's entities name.
fn patients_of(event: &Value) -> Vec<String> {
    event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["role"]["code"] == "1")
        .map(|e| e["what"]["reference"].as_str().unwrap().to_string())
        .collect()
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_organisations_systems_search_and_read_every_record_page_by_page() {
    let node = start().await;
    let anna_records = node.seqs_of(&["p-anna"]).await.len() + 1;
    let (status, bundle) = node
        .get(ADMIN_KEY, "AuditEvent?patient=Patient/p-anna")
        .await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    let found = events(&bundle);
    assert_eq!(
        found.len(),
        anna_records,
        "anna's, and the one with bob (not yet this search's own)"
    );
    for event in &found {
        assert_eq!(event["resourceType"], "AuditEvent");
        assert!(patients_of(event).contains(&"Patient/p-anna".to_string()));
    }
    let ids: Vec<u64> = found
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let professional_read = found
        .iter()
        .find(|e| {
            e["agent"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["who"]["identifier"]["value"] == "123456789")
        })
        .expect("the professional's read of anna");
    assert_eq!(professional_read["subtype"][0]["code"], "read");

    // Page by page, oldest first, gives the same records.
    let mut paged = Vec::new();
    let mut url = Some("AuditEvent?patient=p-anna&_count=2&_sort=date".to_string());
    while let Some(next) = url {
        let (status, page) = node.get(ADMIN_KEY, &next).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_events = events(&page);
        assert!(page_events.len() <= 2);
        paged.extend(
            page_events
                .iter()
                .map(|e| e["id"].as_str().unwrap().parse::<u64>().unwrap()),
        );
        url = next_link(&page);
    }
    let mut oldest_first = ids.clone();
    oldest_first.reverse();
    let newest = ids[0];
    assert_eq!(
        paged
            .iter()
            .filter(|&&seq| seq <= newest)
            .copied()
            .collect::<Vec<_>>(),
        oldest_first,
        "and after them the records of these reads of the log"
    );

    let seq = ids[0];
    let (status, event) = node.get(ADMIN_KEY, &format!("AuditEvent/{seq}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["id"], seq.to_string());
    for unknown in [
        "AuditEvent/99999",
        "AuditEvent/18446744073709551615",
        "AuditEvent/18446744073709551615/$proof",
        "AuditEvent/99999999999999999999/$proof",
    ] {
        let (status, body) = node.get(ADMIN_KEY, unknown).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {body}");
    }
    for bad in [
        "AuditEvent?patient=a&patient=b",
        "AuditEvent?date=yesterday",
        "AuditEvent?_count=0",
        "AuditEvent?name=x",
    ] {
        let (status, body) = node.get(ADMIN_KEY, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    let (status, bundle) = node
        .get(
            ADMIN_KEY,
            "AuditEvent?agent=http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|123456789&entity=Patient/p-bob",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        events(&bundle).len(),
        1,
        "the professional's one read of bob"
    );

    let system = node.system_client("system/AuditEvent.read");
    let (status, bundle) = node.get(&system, "AuditEvent?patient=p-bob").await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert!(!events(&bundle).is_empty());
    let unscoped = node.system_client("system/Observation.read");
    let (status, _) = node.get(&unscoped, "AuditEvent?patient=p-bob").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a system without the scope");
}

#[tokio::test]
async fn a_citizen_reads_their_own_records_and_nothing_else() {
    let node = start().await;
    let anna = node.citizen("anna");
    let own = node.seqs_of(&["p-anna"]).await;
    let (status, bundle) = node.get(&anna, "AuditEvent?patient=Patient/p-anna").await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    let found = events(&bundle);
    assert_eq!(found.len(), own.len(), "every record only about anna");
    for event in &found {
        assert_eq!(patients_of(event), ["Patient/p-anna"], "{event}");
    }
    assert!(
        found.iter().any(|e| e["agent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["who"]["identifier"]["value"] == "123456789")),
        "anna sees who looked at her data"
    );

    // Everything else is refused alike, or finds nothing of anyone else's.
    for attempt in [
        "AuditEvent",
        "AuditEvent?patient=Patient/p-bob",
        "AuditEvent?patient=p-bob",
        "AuditEvent?patient=p-anna,p-bob",
        "AuditEvent?patient=p-nobody",
        "AuditEvent?entity=Patient/p-bob",
        "AuditEvent?agent=123456789",
        "AuditEvent/_history",
    ] {
        let (status, body) = node.get(&anna, attempt).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{attempt}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{attempt}");
    }
    for attempt in [
        "AuditEvent?patient=p-anna&entity=Patient/p-bob",
        "AuditEvent?patient=p-anna&_cursor=0&_sort=date",
        "AuditEvent?patient=p-anna&_cursor=99999",
        "AuditEvent?patient=p-anna&agent=00000011",
    ] {
        let (status, bundle) = node.get(&anna, attempt).await;
        assert_eq!(status, StatusCode::OK, "{attempt}: {bundle}");
        for event in events(&bundle) {
            assert_eq!(patients_of(&event), ["Patient/p-anna"], "{attempt}");
        }
    }
    let bobs = node.seqs_of(&["p-bob"]).await;
    let both = node.seqs_of(&["p-anna", "p-bob"]).await;
    assert!(
        !bobs.is_empty() && !both.is_empty(),
        "bob's reads; the record appended about both, and anna's refused search for both"
    );
    node.checkpoint().await;
    for seq in bobs.iter().chain(&both) {
        for path in [
            format!("AuditEvent/{seq}"),
            format!("AuditEvent/{seq}/$proof"),
        ] {
            let (status, body) = node.get(&anna, &path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert!(!body.to_string().contains("p-bob"), "{path}: {body}");
        }
    }
    let (status, _) = node.get(&anna, "AuditEvent/99999").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an unknown record looks alike"
    );
    let (status, event) = node.get(&anna, &format!("AuditEvent/{}", own[0])).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["id"], own[0].to_string());

    let bob = node.citizen("bob");
    let (status, bundle) = node.get(&bob, "AuditEvent?patient=p-bob").await;
    assert_eq!(status, StatusCode::OK);
    let bobs_log = events(&bundle);
    for event in &bobs_log {
        assert_eq!(patients_of(event), ["Patient/p-bob"]);
    }
    let anna_tried = bobs_log
        .iter()
        .filter(|e| {
            e["outcome"] == "4"
                && e["agent"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["who"]["identifier"]["value"] == "anna")
        })
        .count();
    assert!(
        bobs_log.len() > bobs.len() && anna_tried > 0,
        "bob sees his own reads and anna's refused attempts at his: {bobs_log:?}"
    );

    // Reading the log is logged, about the Patient asked for.
    let log = node.log.clone();
    let reads = tokio::task::spawn_blocking(move || {
        log.search(&LogQuery {
            entity: zorgnet_audit::EntityFilter::parse("AuditEvent"),
            agent: Some(zorgnet_audit::AgentFilter::Id(format!(
                "{} anna",
                node.idp.issuer()
            ))),
            limit: 100,
            ..LogQuery::default()
        })
    })
    .await
    .unwrap()
    .unwrap();
    let first = &reads.found[0].record;
    assert_eq!(first.request, "GET /fhir/AuditEvent?patient=Patient/p-anna");
    assert_eq!(first.patients, ["p-anna"]);
    assert_eq!(first.status, 200);
    assert!(
        reads.found.iter().any(|f| f.record.status == 403),
        "the refused attempts too"
    );
}

#[tokio::test]
async fn professionals_are_refused() {
    let node = start().await;
    let gp = node.staff();
    for path in [
        "AuditEvent?patient=p-anna",
        "AuditEvent/0",
        "AuditEvent/0/$proof",
    ] {
        let (status, body) = node.get(&gp, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    let answer = node
        .http
        .post(format!("{}/AuditEvent", node.base))
        .bearer_auth(node.citizen("anna"))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "AuditEvent"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::FORBIDDEN,
        "nobody writes the log"
    );
}

/// The value of the parameter `name` of a Parameters resource.
fn parameter<'a>(parameters: &'a Value, name: &str) -> &'a Value {
    parameters["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {parameters}"))
}

#[tokio::test]
async fn a_citizen_verifies_the_proof_of_their_record_without_trusting_the_node() {
    let node = start().await;
    let anna = node.citizen("anna");
    let own = node.seqs_of(&["p-anna"]).await;
    let seq = own[0];
    let (status, body) = node.get(&anna, &format!("AuditEvent/{seq}/$proof")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no checkpoint signed yet: {body}"
    );
    node.checkpoint().await;
    let (status, parameters) = node.get(&anna, &format!("AuditEvent/{seq}/$proof")).await;
    assert_eq!(status, StatusCode::OK, "{parameters}");
    assert_eq!(parameters["resourceType"], "Parameters");

    // What the citizen does, with the node's checkpoint key as the hub publishes it.
    let decode = |name: &str| {
        STANDARD
            .decode(
                parameter(&parameters, name)["valueBase64Binary"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
    };
    let record = decode("record");
    let leaf = parameter(&parameters, "leafIndex")["valueDecimal"]
        .as_u64()
        .unwrap();
    let size = parameter(&parameters, "treeSize")["valueDecimal"]
        .as_u64()
        .unwrap();
    let root = Hash(decode("treeRoot").try_into().unwrap());
    let proof: Vec<Hash> = parameters["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "proofHash")
        .map(|p| {
            Hash(
                STANDARD
                    .decode(p["valueBase64Binary"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            )
        })
        .collect();
    let text = parameter(&parameters, "checkpoint")["valueString"]
        .as_str()
        .unwrap();
    let signature: [u8; 64] = decode("signature").try_into().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let checkpoint = Checkpoint {
        origin: lines[0].to_string(),
        size: lines[1].parse().unwrap(),
        root: Hash(STANDARD.decode(lines[2]).unwrap().try_into().unwrap()),
        chain: Hash(
            STANDARD
                .decode(lines[3].strip_prefix("chain ").unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
        ),
        signed_ms: lines[4].strip_prefix("time ").unwrap().parse().unwrap(),
        signature,
    };
    assert_eq!(checkpoint.body(), text, "the signed text, read back");
    assert_eq!(
        checkpoint.verify(&node.signer.verifying_key()),
        Ok(()),
        "signed by the node's key"
    );
    assert!(
        checkpoint
            .verify(&SigningKey::from_bytes(&[6; 32]).verifying_key())
            .is_err()
    );
    assert_eq!((checkpoint.size, checkpoint.root), (size, root));
    assert_eq!(leaf, seq);
    let parsed: AuditRecord = serde_json::from_slice(&record).unwrap();
    assert_eq!(parsed.patients, ["p-anna"]);
    assert!(check_inclusion(&proof, size, root, leaf, &record));

    let mut altered = record.clone();
    let at = altered.len() / 2;
    altered[at] ^= 1;
    assert!(!check_inclusion(&proof, size, root, leaf, &altered));
    let mut another_patient = parsed.clone();
    another_patient.patients = vec!["p-bob".into()];
    assert!(!check_inclusion(
        &proof,
        size,
        root,
        leaf,
        another_patient.to_json().as_bytes()
    ));
    assert!(
        !check_inclusion(&proof, size, root, leaf + 1, &record),
        "at another place"
    );
}

impl Node {
    /// Sends `body` with the node key, and reads the answer.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A valid AuditEvent, as a client might try to store one.
fn forged_event(id: Option<&str>) -> Value {
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": true, "who": {"display": "nobody"}}],
        "source": {"observer": {"display": "a forger"}},
    });
    if let Some(id) = id {
        event["id"] = json!(id);
    }
    event
}

fn assert_refused(status: StatusCode, body: &Value, context: &str) {
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{context}: {body}");
    assert_eq!(
        body["resourceType"], "OperationOutcome",
        "{context}: {body}"
    );
}

#[tokio::test]
async fn no_request_puts_an_audit_event_in_the_store_or_reads_one_from_it() {
    let node = start().await;
    use reqwest::Method;
    for (method, path, body) in [
        (Method::POST, "AuditEvent", Some(forged_event(None))),
        (Method::PUT, "AuditEvent/0", Some(forged_event(Some("0")))),
        (
            Method::PUT,
            "AuditEvent?date=2026",
            Some(forged_event(None)),
        ),
        (Method::DELETE, "AuditEvent/0", None),
        (Method::DELETE, "AuditEvent?date=2026", None),
        (Method::GET, "AuditEvent/0/_history", None),
        (Method::GET, "AuditEvent/0/_history/1", None),
        (Method::GET, "?_type=AuditEvent", None),
        (Method::GET, "Patient?_revinclude=AuditEvent:patient", None),
    ] {
        let (status, answer) = node.send(method.clone(), path, body).await;
        assert_refused(status, &answer, &format!("{method} {path}"));
    }

    let entries = [
        json!({"resource": forged_event(None), "request": {"method": "POST", "url": "AuditEvent"}}),
        json!({"resource": forged_event(None),
            "request": {"method": "POST", "url": "AuditEvent", "ifNoneExist": "date=2026"}}),
        json!({"resource": forged_event(Some("0")), "request": {"method": "PUT", "url": "AuditEvent/0"}}),
        json!({"resource": forged_event(None), "request": {"method": "PUT", "url": "AuditEvent?date=2026"}}),
        json!({"request": {"method": "DELETE", "url": "AuditEvent/0"}}),
        json!({"request": {"method": "DELETE", "url": "AuditEvent?date=2026"}}),
        // Served at GET /fhir/AuditEvent/0 by the access log's own policy, which a Bundle's
        // entries do not pass: not read in a Bundle.
        json!({"request": {"method": "GET", "url": "AuditEvent/0"}}),
    ];
    let patient = |id: &str| {
        json!({"resource": {"resourceType": "Patient", "id": id},
            "request": {"method": "PUT", "url": format!("Patient/{id}")}})
    };
    for (i, entry) in entries.iter().enumerate() {
        let context = format!("transaction with {}", entry["request"]);
        let id = format!("p-tx-{i}");
        let transaction = json!({"resourceType": "Bundle", "type": "transaction",
            "entry": [patient(&id), entry]});
        let (status, answer) = node.send(Method::POST, "", Some(transaction)).await;
        assert_refused(status, &answer, &context);
        let diagnostics = answer["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            diagnostics
                .starts_with("Bundle.entry[1]: AuditEvent is not kept in the resource store"),
            "{context}: {diagnostics}"
        );
        let (status, _) = node.send(Method::GET, &format!("Patient/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{context}: nothing stored");
    }

    let mut batch = vec![patient("p-batch")];
    batch.extend(entries.iter().cloned());
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": batch});
    let (status, answer) = node.send(Method::POST, "", Some(batch)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let statuses: Vec<&str> = answer["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    let mut expected = vec!["201 Created"];
    expected.extend(entries.iter().map(|_| "405 Method Not Allowed"));
    assert_eq!(statuses, expected, "{answer}");

    let (status, history) = node.send(Method::GET, "_history?_count=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert!(
        history["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"]["resourceType"] != "AuditEvent"),
        "the store holds no AuditEvent: {history}"
    );
    let (status, _) = node.send(Method::GET, "AuditEvent/0", None).await;
    assert_eq!(status, StatusCode::OK, "the log itself is still served");
}

/// The CapabilityStatement's entry for `resource_type`, if it lists one.
fn capability_of(metadata: &Value, resource_type: &str) -> Option<Value> {
    metadata["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == resource_type)
        .cloned()
}

fn codes(values: &Value, key: &str) -> Vec<String> {
    let mut codes: Vec<String> = values
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect();
    codes.sort();
    codes
}

#[tokio::test]
async fn the_capability_statement_lists_the_log_as_it_is_served() {
    let node = start().await;
    let admin = ADMIN_KEY;
    let (status, metadata) = node.get(admin, "metadata").await;
    assert_eq!(status, StatusCode::OK);
    let audit = capability_of(&metadata, "AuditEvent").expect("AuditEvent is listed");
    assert_eq!(
        codes(&audit["interaction"], "code"),
        ["read", "search-type"]
    );
    assert_eq!(
        codes(&audit["searchParam"], "name"),
        ["agent", "date", "entity", "patient"]
    );
    assert_eq!(codes(&audit["operation"], "name"), ["proof", "report"]);
    assert_eq!(audit["conditionalDelete"], "not-supported");
    assert_eq!(audit["readHistory"], false);
    assert!(capability_of(&metadata, "Patient").is_some());

    // What it claims works; what it leaves out does not.
    let samples = [
        ("patient", "Patient/p-anna"),
        ("agent", "00000011"),
        ("date", "ge2020-01-01"),
        ("entity", "Patient"),
    ];
    for param in audit["searchParam"].as_array().unwrap() {
        let name = param["name"].as_str().unwrap();
        let value = samples.iter().find(|(n, _)| *n == name).unwrap().1;
        let (status, body) = node.get(admin, &format!("AuditEvent?{name}={value}")).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert!(!events(&body).is_empty(), "{name}={value} finds records");
    }
    let seq = node.seqs_of(&["p-anna"]).await[0];
    node.checkpoint().await;
    for path in [
        format!("AuditEvent/{seq}"),
        format!("AuditEvent/{seq}/$proof"),
    ] {
        let (status, body) = node.get(admin, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    use reqwest::Method;
    for (method, path, body) in [
        (
            Method::POST,
            "AuditEvent".to_string(),
            Some(forged_event(None)),
        ),
        (
            Method::PUT,
            format!("AuditEvent/{seq}"),
            Some(forged_event(Some("1"))),
        ),
        (Method::DELETE, format!("AuditEvent/{seq}"), None),
        (Method::GET, format!("AuditEvent/{seq}/_history"), None),
        (Method::GET, format!("AuditEvent/{seq}/_history/1"), None),
    ] {
        let (status, answer) = node.send(method.clone(), &path, body).await;
        assert_refused(status, &answer, &format!("{method} {path}"));
    }

    let unserved = start_with(false).await;
    let (status, metadata) = unserved.get(admin, "metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        capability_of(&metadata, "AuditEvent").is_none(),
        "a node that does not serve its log does not name AuditEvent"
    );
    assert!(capability_of(&metadata, "Patient").is_some());
    let (status, _) = unserved.get(admin, "AuditEvent?patient=p-anna").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

const REPORT_ALERTS: &str = "zorgnet_audit_alerts_total{rule=\"citizen-report\"}";

impl Node {
    /// `POST AuditEvent/{seq}/$report` with `token` and `body` (raw, none when empty).
    async fn report(&self, token: &str, seq: u64, body: Option<String>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/AuditEvent/{seq}/$report", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The citizen reports in the log, with their sequence numbers.
    async fn reports(&self) -> Vec<(u64, zorgnet_audit::CitizenReport)> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            (0..log.size())
                .filter_map(|seq| {
                    let record: AuditRecord =
                        serde_json::from_str(&log.record(seq).unwrap().unwrap()).unwrap();
                    zorgnet_audit::CitizenReport::from_record(&record).map(|r| (seq, r))
                })
                .collect()
        })
        .await
        .unwrap()
    }

    /// The counter `series` at the node's `/metrics`; 0 when it is not there.
    async fn counter(&self, series: &str) -> u64 {
        let root = self.base.trim_end_matches("/fhir");
        let metrics = self
            .http
            .get(format!("{root}/metrics"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .map_or(0, |value| value.trim().parse().unwrap())
    }
}

fn reason_body(reason: &str) -> String {
    json!({"resourceType": "Parameters",
        "parameter": [{"name": "reason", "valueString": reason}]})
    .to_string()
}

#[tokio::test]
async fn a_citizen_reports_their_own_record_which_becomes_an_alert_at_the_organisation() {
    let node = start().await;
    let anna = node.citizen("anna");
    let reported = *node
        .seqs_of(&["p-anna"])
        .await
        .first()
        .expect("the gp's read of anna");
    let alerts_before = node.counter(REPORT_ALERTS).await;

    let (status, event) = node
        .report(&anna, reported, Some(reason_body("Ik ken deze arts niet")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["type"]["code"], "110113", "a Security Alert: {event}");
    assert_eq!(event["subtype"][0]["code"], "citizen-report");
    assert_eq!(patients_of(&event), ["Patient/p-anna"]);
    let alert_seq: u64 = event["id"].as_str().unwrap().parse().unwrap();

    let reports = node.reports().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (seq, report) = &reports[0];
    assert_eq!(*seq, alert_seq);
    assert_eq!(report.rule, "citizen-report");
    assert_eq!(report.seq, reported);
    assert_eq!(report.reason.as_deref(), Some("Ik ken deze arts niet"));
    assert_eq!(report.patients, ["p-anna"]);
    assert_eq!(report.agent.kind, AgentKind::Citizen);
    assert_eq!(
        report.agent.id.as_deref(),
        Some(format!("{} anna", node.idp.issuer()).as_str())
    );
    let log = node.log.clone();
    let record: AuditRecord = tokio::task::spawn_blocking(move || {
        serde_json::from_str(&log.record(alert_seq).unwrap().unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(record.action, "alert:citizen-report");
    assert_eq!(record.agent.kind, AgentKind::Citizen);
    assert_eq!(record.patients, ["p-anna"]);
    assert!(!record.request.contains(ANNA_BSN), "no BSN in the alert");
    assert_eq!(node.counter(REPORT_ALERTS).await, alerts_before + 1);

    // The organisation's own systems read the alert as a BALP AuditEvent; so does anna.
    for token in [ADMIN_KEY.to_string(), anna.clone()] {
        let (status, read) = node.get(&token, &format!("AuditEvent/{alert_seq}")).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["subtype"][0]["code"], "citizen-report");
        let description = read["entity"][0]["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("\"seq\":{reported}"))
                && description.contains("Ik ken deze arts niet"),
            "{description}"
        );
    }
    let (status, bundle) = node
        .get(ADMIN_KEY, "AuditEvent?agent=00000011&patient=p-anna")
        .await;
    assert_eq!(status, StatusCode::OK, "{bundle}");

    // Again, by the same citizen: the same alert, nothing appended, nothing counted.
    let size = node.log.size();
    let (status, again) = node.report(&anna, reported, None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], alert_seq.to_string());
    assert_eq!(node.reports().await.len(), 1);
    assert_eq!(
        node.log.size(),
        size + 1,
        "only the request's own access record"
    );
    assert_eq!(node.counter(REPORT_ALERTS).await, alerts_before + 1);

    // Another record, reported without a body: a second alert.
    let other = node.seqs_of(&["p-anna"]).await[1];
    let (status, event) = node.report(&anna, other, None).await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let reports = node.reports().await;
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1].1.seq, other);
    assert_eq!(reports[1].1.reason, None);
    assert_eq!(node.counter(REPORT_ALERTS).await, alerts_before + 2);

    // The report itself is logged as an access, about anna.
    let log = node.log.clone();
    let asked = format!("POST /fhir/AuditEvent/{reported}/$report");
    let logged = tokio::task::spawn_blocking(move || {
        (0..log.size())
            .map(|seq| serde_json::from_str::<AuditRecord>(&log.record(seq).unwrap().unwrap()))
            .filter_map(Result::ok)
            .filter(|r| r.request == asked)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(logged, 2, "both reports of the record are logged");
}

#[tokio::test]
async fn nobody_but_the_citizen_reports_a_record_and_bad_reports_are_refused() {
    let node = start().await;
    let anna = node.citizen("anna");
    let bob = node.citizen("bob");
    let annas = node.seqs_of(&["p-anna"]).await[0];
    let both = node.seqs_of(&["p-anna", "p-bob"]).await[0];

    // Another citizen's record, a record not only theirs, an unknown one: as reading it.
    for (token, seq) in [(&bob, annas), (&anna, both), (&bob, both), (&anna, 99_999)] {
        let (read_status, _) = node.get(token, &format!("AuditEvent/{seq}")).await;
        let (status, body) = node.report(token, seq, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{seq}: {body}");
        assert_eq!(status, read_status, "{seq}: refused as a read is");
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert!(!body.to_string().contains("p-bob"), "{body}");
    }
    // Professionals, the organisation's own systems (its key, a system client): refused.
    let gp = node.staff();
    let system = node.system_client("system/AuditEvent.read");
    for token in [gp.as_str(), ADMIN_KEY, system.as_str()] {
        let (status, body) = node.report(token, annas, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    // A record id that is not a number: refused alike.
    let answer = node
        .http
        .post(format!("{}/AuditEvent/abc/$report", node.base))
        .bearer_auth(&anna)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    // Only POST reports.
    let (status, _) = node
        .get(&anna, &format!("AuditEvent/{annas}/$report"))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = node
        .send(
            reqwest::Method::GET,
            &format!("AuditEvent/{annas}/$report"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Malformed bodies, and a reason too long: 400.
    let long = "x".repeat(zorgnet_audit::REPORT_REASON_CHARS_MAX + 1);
    for body in [
        "{".to_string(),
        json!({"resourceType": "Patient"}).to_string(),
        json!({"resourceType": "Parameters",
            "parameter": [{"name": "why", "valueString": "x"}]})
        .to_string(),
        json!({"resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueBoolean": true}]})
        .to_string(),
        reason_body(&long),
    ] {
        let (status, answer) = node.report(&anna, annas, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["resourceType"], "OperationOutcome");
    }
    let (status, _) = node
        .report(
            &anna,
            annas,
            Some(reason_body(
                &"é".repeat(zorgnet_audit::REPORT_REASON_CHARS_MAX),
            )),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the longest reason, in characters"
    );
    let reports = node.reports().await;
    assert_eq!(reports.len(), 1, "only the last report: {reports:?}");
    assert_eq!(reports[0].1.seq, annas);
}
