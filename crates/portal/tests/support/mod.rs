//! The portal's test world, in-process on loopback over plain HTTP: the development identity
//! provider, two real nodes (SQLite stores in temporary directories, citizens' tokens
//! verified with the portal's client id as audience, their access logs served) holding a
//! synthetic citizen's data split between them, the portal, and, for the choices, a real hub;
//! a browser (reqwest with a cookie store) logs in through the provider's form.
#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_audit::{AuditLog, SigningKey};
use zorgnet_idp::{ClientRegistration, DemoUser, DevIdp, IdpConfig, KeySource};
use zorgnet_node::NodeIdentity;
use zorgnet_node::authn::{LocalClients, NodeOidc};
use zorgnet_portal::{Portal, PortalConfig, Source};
use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};

pub const ADMIN_KEY: &str = "zn_node_portal-test-admin-key";
pub const PORTAL_CLIENT: &str = "mijn-gezondheidsoverzicht";
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Resources of a citizen loaded per transaction.
pub const RESOURCES_PER_TRANSACTION: usize = 200;

/// One running node.
pub struct Node {
    pub name: String,
    pub ura: String,
    pub base: String,
    pub log: Arc<AuditLog>,
    pub signer: SigningKey,
    pub _dir: tempfile::TempDir,
}

/// A citizen of the test: their subject at the provider, their BSN, and the resources
/// (`Type/id`) loaded at each node.
pub struct Citizen {
    pub subject: &'static str,
    /// Their BSN (the test's side only: the portal takes it from the ID token).
    pub bsn: String,
    pub loaded: Vec<BTreeSet<String>>,
}

pub struct World {
    pub portal: String,
    pub nodes: Vec<Node>,
    pub anna: Citizen,
    pub bob: Citizen,
    pub idp: DevIdp,
}

pub async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    (listener, address)
}

pub fn bsn_of(patient: &Value) -> String {
    patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|identifier| identifier["system"] == BSN_SYSTEM)
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn start_node(name: &str, ura: &str, issuer: &str) -> Node {
    let verifier = OidcVerifier::new(OidcConfig {
        issuer: issuer.into(),
        audience: PORTAL_CLIENT.into(),
    })
    .unwrap();
    let oidc = NodeOidc {
        staff: None,
        citizens: Some(Arc::new(verifier)),
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
    let (listener, address) = listener().await;
    let base = format!("{address}/fhir");
    let router = zorgnet_node::router_in_network(
        store,
        NodeIdentity {
            ura: ura.into(),
            name: name.into(),
        },
        base.clone(),
        None,
        LocalClients::key(ADMIN_KEY),
        oidc,
        audit,
    );
    let router = zorgnet_node::audit_api::served(router, log.clone());
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Node {
        name: name.into(),
        ura: ura.into(),
        base,
        log,
        signer: SigningKey::from_bytes(&[ura.len() as u8 + 40; 32]),
        _dir: dir,
    }
}

impl Node {
    pub async fn load(&self, resources: Vec<Value>) {
        let http = reqwest::Client::new();
        for chunk in resources.chunks(RESOURCES_PER_TRANSACTION) {
            let entries: Vec<Value> = chunk
                .iter()
                .map(|resource| {
                    serde_json::json!({"resource": resource,
                        "request": {"method": "PUT", "url": type_and_id(resource)}})
                })
                .collect();
            let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            let answer = http
                .post(&self.base)
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/fhir+json")
                .body(bundle.to_string())
                .send()
                .await
                .unwrap();
            let status = answer.status();
            assert!(
                status.is_success(),
                "{}: {status} {}",
                self.name,
                answer.text().await.unwrap()
            );
        }
    }

    /// Signs a checkpoint of the node's log as it stands.
    pub async fn checkpoint(&self) {
        let (log, signer, ura) = (self.log.clone(), self.signer.clone(), self.ura.clone());
        tokio::task::spawn_blocking(move || log.checkpoint(&signer, &ura, zorgnet_db::now_ms()))
            .await
            .unwrap()
            .unwrap();
    }
}

pub fn type_and_id(resource: &Value) -> String {
    format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    )
}

/// A haemoglobin result of `patient` on `date`.
pub fn haemoglobin(id: &str, patient: &str, date: &str, value: f64) -> Value {
    serde_json::json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7",
            "display": "Hemoglobine"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": "mmol/l",
            "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "referenceRange": [{"low": {"value": 7.5, "unit": "mmol/l"},
            "high": {"value": 10, "unit": "mmol/l"}}]})
}

/// Splits a citizen's resources over `n` nodes: the Patient at every node, the rest in turn.
pub fn split(resources: Vec<Value>, n: usize) -> Vec<Vec<Value>> {
    let mut parts = vec![Vec::new(); n];
    let mut resources = resources.into_iter();
    let patient = resources.next().unwrap();
    assert_eq!(patient["resourceType"], "Patient");
    for part in &mut parts {
        part.push(patient.clone());
    }
    for (i, resource) in resources.enumerate() {
        parts[i % n].push(resource);
    }
    parts
}

/// The provider, two nodes with Anna's data split between them (and Bob's at the first), and
/// a portal asking them and `extra` sources.
pub async fn start(extra: Vec<Source>) -> (World, Portal) {
    start_with(extra, None).await
}

/// [`start`], with the portal managing choices at the consent register through `consent`.
pub async fn start_with(
    extra: Vec<Source>,
    consent: Option<zorgnet_hub_client::HubClient>,
) -> (World, Portal) {
    let (portal_listener, portal) = listener().await;
    let (idp_listener, issuer) = listener().await;
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: 2,
        seed: 11,
    });
    let mut anna_resources = generator.patient_resources(0);
    let anna_id = anna_resources[0]["id"].as_str().unwrap().to_string();
    // Three lab results, split over both nodes by `split`: one chart from two sources.
    for (i, (date, value)) in [
        ("2024-01-10", 8.2),
        ("2024-06-12", 7.1),
        ("2025-02-03", 8.9),
    ]
    .into_iter()
    .enumerate()
    {
        anna_resources.insert(1, haemoglobin(&format!("hb-{i}"), &anna_id, date, value));
    }
    let bob_resources = generator.patient_resources(1);
    let (anna_bsn, bob_bsn) = (bsn_of(&anna_resources[0]), bsn_of(&bob_resources[0]));
    let idp = DevIdp::new(IdpConfig {
        issuer: issuer.clone(),
        clients: vec![ClientRegistration {
            client_id: PORTAL_CLIENT.into(),
            redirect_uris: vec![format!("{portal}/callback")],
        }],
        users: vec![
            DemoUser::citizen("anna", "Anna de Vries", &anna_bsn),
            DemoUser::citizen("bob", "Bob Bakker", &bob_bsn),
        ],
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let router = idp.router();
    tokio::spawn(async move { axum::serve(idp_listener, router).await });
    let nodes = vec![
        start_node("Huisartsenpraktijk De Linde", "00000011", &issuer).await,
        start_node("Ziekenhuis Oost", "00000022", &issuer).await,
    ];
    let directory = generator.directory_resources();
    let mut anna_loaded = Vec::new();
    for (node, part) in nodes.iter().zip(split(anna_resources, nodes.len())) {
        node.load(directory.clone()).await;
        anna_loaded.push(part.iter().map(type_and_id).collect());
        node.load(part).await;
    }
    let bob_loaded = vec![
        bob_resources.iter().map(type_and_id).collect(),
        BTreeSet::new(),
    ];
    nodes[0].load(bob_resources).await;

    let mut sources: Vec<Source> = nodes
        .iter()
        .map(|node| Source {
            name: node.name.clone(),
            ura: node.ura.clone(),
            fhir_base: node.base.clone(),
        })
        .collect();
    sources.extend(extra);
    let portal_app = Portal::new(PortalConfig {
        base_url: portal.clone(),
        issuer,
        client_id: PORTAL_CLIENT.into(),
        sources,
        tls: None,
        source_timeout: SOURCE_TIMEOUT,
    })
    .unwrap();
    let portal_app = match consent {
        Some(hub) => portal_app.with_consent_register(hub),
        None => portal_app,
    };
    let router = portal_app.router();
    tokio::spawn(async move { axum::serve(portal_listener, router).await });
    let world = World {
        portal,
        nodes,
        anna: Citizen {
            subject: "anna",
            bsn: anna_bsn,
            loaded: anna_loaded,
        },
        bob: Citizen {
            subject: "bob",
            bsn: bob_bsn,
            loaded: bob_loaded,
        },
        idp,
    };
    (world, portal_app)
}

pub fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The hidden inputs of the provider's login form.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|rest| {
            let name = rest
                .split("name=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let value = rest
                .split("value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (name.to_string(), unescape(value))
        })
        .collect()
}

/// A browser logged in as `citizen`, and the page it lands on.
pub async fn log_in(world: &World, citizen: &Citizen) -> (reqwest::Client, String) {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let form = browser
        .get(format!("{}/login", world.portal))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let authorize = form.url().clone();
    assert!(authorize.path().ends_with("/authorize"), "{authorize}");
    let html = form.text().await.unwrap();
    let mut fields = hidden_inputs(&html);
    assert!(fields.iter().any(|(name, _)| name == "code_challenge"));
    fields.push(("user".into(), citizen.subject.into()));
    let landed = browser
        .post(authorize.as_str().split('?').next().unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), StatusCode::OK);
    assert_eq!(landed.url().path(), "/overzicht");
    let page = landed.text().await.unwrap();
    (browser, page)
}

pub async fn get(browser: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let answer = browser.get(url).send().await.unwrap();
    (answer.status(), answer.text().await.unwrap())
}

/// The CSRF token of a logged-in page.
pub fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// A real hub on port 0 over plain HTTP (SQLite in a temporary directory).
pub struct TestHub {
    pub base: String,
    pub admin_key: String,
    pub state: Arc<zorgnet_hub::HubState>,
    _dir: tempfile::TempDir,
}

impl TestHub {
    pub async fn start() -> TestHub {
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
        let admin_key = std::fs::read_to_string(hub.admin_key_path())
            .unwrap()
            .trim()
            .to_string();
        let (listener, base) = listener().await;
        hub.serving_at(listener.local_addr().unwrap());
        let router = hub.router(&base);
        tokio::spawn(zorgnet_node::serve(
            listener,
            router,
            std::future::pending(),
        ));
        TestHub {
            base,
            admin_key,
            state: hub.state(),
            _dir: dir,
        }
    }

    /// Registers an organisation with the operator's key; its API key.
    pub async fn organisation(&self, ura: &str, name: &str) -> String {
        let answer = reqwest::Client::new()
            .post(format!("{}/registry/organisations", self.base))
            .bearer_auth(&self.admin_key)
            .json(&serde_json::json!({"ura": ura, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
        let body: Value = answer.json().await.unwrap();
        body["api_key"].as_str().unwrap().to_string()
    }

    /// A client of the hub with `key`.
    pub fn client(&self, key: &str) -> zorgnet_hub_client::HubClient {
        zorgnet_hub_client::HubClient::new(&self.base, key).unwrap()
    }
}
