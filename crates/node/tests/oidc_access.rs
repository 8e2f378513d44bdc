//! A node's staff and citizens with OpenID Connect tokens of a development provider (started
//! in-process), over HTTP: SMART scopes limit the staff, a citizen reads their own data and
//! nothing else, and tokens that do not verify are refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
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

struct Setup {
    base: String,
    idp: DevIdp,
    /// The node's access log.
    log: Arc<zorgnet_audit::AuditLog>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", idp_listener.local_addr().unwrap());
    let idp = DevIdp::new(IdpConfig {
        resources: Vec::new(),
        issuer: issuer.clone(),
        clients: [STAFF_CLIENT, CITIZEN_CLIENT, "another-app"]
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
            ura: "00000011".into(),
            name: "Huisartsenpraktijk".into(),
        },
        base.clone(),
        None,
        LocalClients::key(ADMIN_KEY),
        oidc,
        audit,
    );
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let setup = Setup {
        base,
        idp,
        log,
        http: reqwest::Client::new(),
        _dir: dir,
    };
    setup.load().await;
    setup
}

impl Setup {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .bearer_auth(token);
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

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(token, Method::GET, path, None).await
    }

    async fn put(&self, resource: Value) {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let (status, body) = self
            .call(ADMIN_KEY, Method::PUT, &path, Some(resource))
            .await;
        assert!(status.is_success(), "{path}: {status} {body}");
    }

    /// Anna and Bob, each with observations and a condition; Anna with an encounter (a type
    /// of no data category) and an observation whose focus is Bob (in Anna's compartment
    /// only); one observation of Anna's performed by Bob and one of Bob's performed by Anna
    /// (each in both compartments, so neither is only Anna's).
    async fn load(&self) {
        for (id, bsn, name) in [("p-anna", ANNA_BSN, "Vries"), ("p-bob", BOB_BSN, "Bakker")] {
            self.put(json!({"resourceType": "Patient", "id": id,
                "identifier": [{"system": BSN_SYSTEM, "value": bsn}],
                "name": [{"family": name}]}))
                .await;
        }
        self.put(json!({"resourceType": "Practitioner", "id": "dr-jansen",
            "name": [{"family": "Jansen"}]}))
            .await;
        let observation = |id: &str, patient: &str, performer: &str| {
            json!({"resourceType": "Observation", "id": id, "status": "final",
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "performer": [{"reference": performer}]})
        };
        self.put(observation(
            "obs-anna-1",
            "p-anna",
            "Practitioner/dr-jansen",
        ))
        .await;
        self.put(observation("obs-anna-2", "p-anna", "Patient/p-bob"))
            .await;
        self.put(observation("obs-bob-1", "p-bob", "Practitioner/dr-jansen"))
            .await;
        let mut focus = observation("obs-anna-3", "p-anna", "Practitioner/dr-jansen");
        focus["focus"] = json!([{"reference": "Patient/p-bob"}]);
        self.put(focus).await;
        self.put(observation("obs-bob-2", "p-bob", "Patient/p-anna"))
            .await;
        for (id, patient, text) in [
            ("cond-anna", "p-anna", "hypertensie"),
            ("cond-bob", "p-bob", "astma"),
        ] {
            self.put(json!({"resourceType": "Condition", "id": id,
                "subject": {"reference": format!("Patient/{patient}")},
                "code": {"text": text}}))
                .await;
        }
        self.put(
            json!({"resourceType": "Encounter", "id": "enc-anna", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p-anna"}}),
        )
        .await;
    }

    fn staff(&self, scope: &str) -> String {
        self.idp.access_token(STAFF_CLIENT, "gp", scope).unwrap()
    }

    fn citizen(&self, who: &str) -> String {
        self.idp
            .access_token(CITIZEN_CLIENT, who, "openid patient/*.read")
            .unwrap()
    }
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let r = &e["resource"];
            let resource_type = r["resourceType"].as_str()?;
            (resource_type != "OperationOutcome")
                .then(|| format!("{resource_type}/{}", r["id"].as_str().unwrap_or("")))
        })
        .collect();
    ids.sort();
    ids
}

fn assert_outcome(status: StatusCode, expected: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{what}: {body}");
}

fn new_observation(patient: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "bloeddruk"}, "subject": {"reference": format!("Patient/{patient}")}})
}

#[tokio::test]
async fn staff_with_user_read_scopes_read_but_do_not_write() {
    let node = start().await;
    let token = node.staff("openid user/*.read");
    let (status, bundle) = node.get(&token, "Observation?patient=p-anna").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&bundle),
        [
            "Observation/obs-anna-1",
            "Observation/obs-anna-2",
            "Observation/obs-anna-3"
        ]
    );
    let (status, _) = node.get(&token, "Patient/p-bob").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "staff read every patient of their organisation"
    );
    let (status, bundle) = node.get(&token, "Patient/p-anna/$everything").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ids(&bundle).contains(&"Encounter/enc-anna".to_string()));

    let (status, body) = node
        .call(
            &token,
            Method::POST,
            "Observation",
            Some(new_observation("p-anna")),
        )
        .await;
    assert_outcome(
        status,
        StatusCode::FORBIDDEN,
        &body,
        "create with a read scope",
    );
    let mut changed = new_observation("p-anna");
    changed["id"] = json!("obs-anna-1");
    let (status, body) = node
        .call(&token, Method::PUT, "Observation/obs-anna-1", Some(changed))
        .await;
    assert_outcome(
        status,
        StatusCode::FORBIDDEN,
        &body,
        "update with a read scope",
    );
    let (status, body) = node
        .call(&token, Method::DELETE, "Observation/obs-anna-1", None)
        .await;
    assert_outcome(
        status,
        StatusCode::FORBIDDEN,
        &body,
        "delete with a read scope",
    );
    let (status, _) = node.get(ADMIN_KEY, "Observation/obs-anna-1").await;
    assert_eq!(status, StatusCode::OK, "nothing was deleted");
}

#[tokio::test]
async fn system_scopes_write() {
    let node = start().await;
    let token = node.staff("system/*.*");
    let (status, created) = node
        .call(
            &token,
            Method::POST,
            "Observation",
            Some(new_observation("p-anna")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = node
        .call(&token, Method::DELETE, "Condition/cond-bob", None)
        .await;
    assert!(status.is_success(), "{status}");
    let writer = node.staff("user/Observation.write");
    let (status, _) = node
        .call(
            &writer,
            Method::POST,
            "Observation",
            Some(new_observation("p-bob")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = node.get(&writer, "Observation?patient=p-bob").await;
    assert_outcome(
        status,
        StatusCode::FORBIDDEN,
        &body,
        "search with a write scope",
    );
}

#[tokio::test]
async fn a_scope_of_one_type_reads_only_that_type() {
    let node = start().await;
    let token = node.staff("openid user/Observation.read");
    let (status, bundle) = node.get(&token, "Observation?patient=p-bob").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&bundle),
        ["Observation/obs-bob-1", "Observation/obs-bob-2"]
    );
    for path in [
        "Condition?patient=p-anna",
        "Condition/cond-anna",
        "Patient/p-anna",
        "Observation?patient=p-anna&_include=Observation:subject",
        "Observation?subject.name=Vries",
        "Patient/p-anna/$everything",
        "_history",
    ] {
        let (status, body) = node.get(&token, path).await;
        assert_outcome(status, StatusCode::FORBIDDEN, &body, path);
    }
}

#[tokio::test]
async fn a_citizen_reads_their_own_data() {
    let node = start().await;
    let token = node.citizen("anna");
    let (status, patient) = node.get(&token, "Patient/p-anna").await;
    assert_eq!(status, StatusCode::OK, "{patient}");
    assert_eq!(patient["id"], "p-anna");
    let (status, bundle) = node.get(&token, "Observation?patient=p-anna").await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(
        ids(&bundle),
        ["Observation/obs-anna-1", "Observation/obs-anna-3"],
        "obs-anna-2 is in Bob's compartment too (he performed it): not only Anna's"
    );
    let (status, bundle) = node
        .get(
            &token,
            &format!("Patient?identifier={BSN_SYSTEM}|{ANNA_BSN}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&bundle), ["Patient/p-anna"]);
    let (status, bundle) = node.get(&token, "Encounter?patient=p-anna").await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(
        ids(&bundle),
        ["Encounter/enc-anna"],
        "no category filtering for their own data"
    );
    let (status, bundle) = node.get(&token, "Patient/p-anna/$everything").await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    let everything = ids(&bundle);
    for own in [
        "Patient/p-anna",
        "Observation/obs-anna-1",
        "Observation/obs-anna-3",
        "Condition/cond-anna",
        "Encounter/enc-anna",
    ] {
        assert!(
            everything.contains(&own.to_string()),
            "{own} in {everything:?}"
        );
    }
    for other in [
        "Patient/p-bob",
        "Observation/obs-anna-2",
        "Observation/obs-bob-1",
        "Observation/obs-bob-2",
        "Condition/cond-bob",
    ] {
        assert!(
            !everything.contains(&other.to_string()),
            "{other} in {everything:?}"
        );
    }
}

#[tokio::test]
async fn a_citizen_sees_nobody_else() {
    let node = start().await;
    let token = node.citizen("anna");
    for path in [
        "Patient/p-bob".to_string(),
        "Observation?patient=p-bob".into(),
        "Patient/p-bob/$everything".into(),
        format!("Patient?identifier={BSN_SYSTEM}|{BOB_BSN}"),
        format!("Observation?patient.identifier={BSN_SYSTEM}|{BOB_BSN}"),
        "Observation?patient=p-anna&patient=p-bob".into(),
        "Observation?patient=p-anna,p-bob".into(),
        "Observation?code=2339-0".into(),
        "Observation?patient=p-anna&performer:Patient.name=Bakker".into(),
        "Observation?patient=p-unknown".into(),
        "Patient/p-anna/_history".into(),
        "Observation/obs-anna-1".into(),
        "Observation?patient=p-anna&_summary=count".into(),
        "_history".into(),
    ] {
        let (status, body) = node.get(&token, &path).await;
        assert_outcome(status, StatusCode::FORBIDDEN, &body, &path);
    }
    // Includes of another patient's resources are dropped; reference data travels.
    let includes =
        "Observation?patient=p-anna&_include=Observation:performer&_include=Observation:focus";
    let (_, unfiltered) = node.get(ADMIN_KEY, includes).await;
    assert!(ids(&unfiltered).contains(&"Patient/p-bob".to_string()));
    let (status, bundle) = node.get(&token, includes).await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(
        ids(&bundle),
        [
            "Observation/obs-anna-1",
            "Observation/obs-anna-3",
            "Practitioner/dr-jansen"
        ]
    );
    let (status, bundle) = node
        .get(
            &token,
            "Patient?_id=p-anna&_revinclude=Observation:performer",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(
        ids(&bundle),
        ["Patient/p-anna"],
        "Bob's observation stays behind"
    );
    // Never a write, not even about themself.
    let (status, body) = node
        .call(
            &token,
            Method::POST,
            "Observation",
            Some(new_observation("p-anna")),
        )
        .await;
    assert_outcome(status, StatusCode::FORBIDDEN, &body, "a citizen's write");
    let (status, body) = node
        .call(&token, Method::DELETE, "Observation/obs-anna-1", None)
        .await;
    assert_outcome(status, StatusCode::FORBIDDEN, &body, "a citizen's delete");
    // Bob, likewise, reads only his own.
    let bob = node.citizen("bob");
    let (status, _) = node.get(&bob, "Patient/p-anna").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = node.get(&bob, "Patient/p-bob").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_that_do_not_verify_are_refused() {
    let node = start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, exp: u64| {
        json!({"iss": node.idp.issuer(), "sub": "anna", "aud": aud, "iat": now - 3600,
            "exp": exp, "bsn": ANNA_BSN, "scope": "patient/*.read"})
    };
    let good = node.idp.sign(&claims(CITIZEN_CLIENT, now + 300));
    let (status, _) = node.get(&good, "Patient/p-anna").await;
    assert_eq!(status, StatusCode::OK, "the control");

    let expired = node.idp.sign(&claims(CITIZEN_CLIENT, now - 600));
    let wrong_audience = node
        .idp
        .access_token("another-app", "anna", "patient/*.read")
        .unwrap();
    let [header, _, signature]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut forged_claims = claims(CITIZEN_CLIENT, now + 300);
    forged_claims["bsn"] = json!(BOB_BSN);
    let forged_payload = URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let tampered = format!("{header}.{forged_payload}.{signature}");
    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let alg_none = format!("{none_header}.{forged_payload}.");
    let impostor = DevIdp::new(IdpConfig {
        resources: Vec::new(),
        issuer: node.idp.issuer().into(),
        clients: vec![],
        users: vec![],
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let another_key = impostor.sign(&claims(CITIZEN_CLIENT, now + 300));
    for (what, token) in [
        ("expired", expired),
        ("wrong audience", wrong_audience),
        ("tampered", tampered),
        ("alg none", alg_none),
        ("another key", another_key),
        ("garbage", "not-a-token".into()),
    ] {
        let answer = node
            .http
            .get(format!("{}/Patient/p-anna", node.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(answer.headers().contains_key("www-authenticate"), "{what}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome", "{what}");
    }
}

/// The records the node's access log holds from `from` on.
fn records_since(node: &Setup, from: u64) -> Vec<zorgnet_audit::AuditRecord> {
    (from..node.log.size())
        .map(|seq| serde_json::from_str(&node.log.record(seq).unwrap().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn staff_and_citizens_accesses_are_logged_once_each() {
    use zorgnet_audit::AgentKind;
    let node = start().await;
    let staff = node.staff("openid user/*.read");
    let before = node.log.size();
    let (status, _) = node.get(&staff, "Patient/p-bob").await;
    assert_eq!(status, StatusCode::OK);
    let [record] = records_since(&node, before).try_into().unwrap();
    assert_eq!(record.agent.kind, AgentKind::Professional);
    assert_eq!(record.agent.id.as_deref(), Some("123456789"));
    assert_eq!(record.agent.organisation.as_deref(), Some("00000011"));
    assert_eq!((record.action.as_str(), record.status), ("read", 200));
    assert_eq!(record.patients, vec!["p-bob".to_string()]);

    let anna = node.citizen("anna");
    for (path, status) in [
        ("Patient/p-anna", StatusCode::OK),
        ("Patient/p-bob", StatusCode::FORBIDDEN),
    ] {
        let before = node.log.size();
        let (answered, body) = node.get(&anna, path).await;
        assert_eq!(answered, status, "{path}: {body}");
        let [record] = records_since(&node, before).try_into().unwrap();
        assert_eq!(record.agent.kind, AgentKind::Citizen, "{path}");
        assert!(
            record
                .agent
                .id
                .as_deref()
                .is_some_and(|id| id.ends_with("anna")),
            "{record:?}"
        );
        assert_eq!(record.status, status.as_u16(), "{path}");
        assert_eq!(
            record.patients,
            vec![path.trim_start_matches("Patient/").to_string()],
            "{path}"
        );
    }
}
