//! The portal's test world, in-process on loopback over plain HTTP: the development identity
//! provider, two real nodes (SQLite stores in temporary directories, citizens' tokens
//! verified with the portal's client id as audience, their access logs served) holding a
//! synthetic citizen's data split between them, the portal, and, for the choices, a real hub;
//! a browser (reqwest with a cookie store) logs in through the provider's form. In a network
//! ([`start_in_network`]) the nodes' outboxes deliver to the hub, which they also ask who a
//! Patient known by a sédula number is (a citizen searching by zorgverificatienummer).
#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_audit::{Agent, AgentKind, AuditLog, AuditRecord, CitizenReport, SigningKey};
use zorgnet_idp::{ClientRegistration, DemoUser, DevIdp, IdpConfig, KeySource, ResourceServer};
use zorgnet_node::NodeIdentity;
use zorgnet_node::authn::{LocalClients, NodeOidc};
use zorgnet_portal::{Portal, PortalConfig, Source};
use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};

pub const ADMIN_KEY: &str = "zn_node_portal-test-admin-key";
pub const PORTAL_CLIENT: &str = "mijn-gezondheidsoverzicht";
/// A citizen's app (a PGO), registered at the provider as a native app.
pub const APP_CLIENT: &str = "pgo-app";
/// The app's registered redirect URI: on loopback, so any port is accepted (RFC 8252).
pub const APP_REDIRECT: &str = "http://127.0.0.1/callback";
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
    start_node_with(name, ura, issuer, None).await
}

/// [`start_node`], and with `network` (the hub and the organisation's API key there) a node
/// in the network: its outbox delivers to the hub (and keeps the zorgverificatienummer the
/// hub derives for each sédula Patient), and it asks the hub who a sédula Patient is.
pub async fn start_node_with(
    name: &str,
    ura: &str,
    issuer: &str,
    network: Option<(&TestHub, &str)>,
) -> Node {
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
    let in_network = network.is_some();
    let (store, log, audit, wake) = tokio::task::spawn_blocking(move || {
        let store =
            zorgnet_store::Store::open_sqlite(&path, zorgnet_fhir::search::SearchRegistry::r4())
                .unwrap();
        let wake = in_network.then(|| zorgnet_node::outbox::install(&store).unwrap());
        let (log, audit) =
            zorgnet_node::audit::open_with_key(&store, zorgnet_audit::ChainKey::generate())
                .unwrap();
        (store, log, audit, wake)
    })
    .await
    .unwrap();
    let network = match (network, wake) {
        (Some((hub, key)), Some(wake)) => {
            let client = hub.client(key);
            let db = store.database().clone();
            let cache = tokio::task::spawn_blocking(move || {
                zorgnet_node::addressing::AddressBookCache::open(db).unwrap()
            })
            .await
            .unwrap();
            tokio::spawn(zorgnet_node::outbox::run_delivery(
                store.clone(),
                client.clone(),
                wake,
                std::future::pending(),
            ));
            Some(Arc::new(
                zorgnet_node::network::Network::new(client, cache).unwrap(),
            ))
        }
        _ => None,
    };
    let (listener, address) = listener().await;
    let base = format!("{address}/fhir");
    let router = zorgnet_node::router_in_network(
        store,
        NodeIdentity {
            ura: ura.into(),
            name: name.into(),
        },
        base.clone(),
        network,
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
    start_world(extra, consent, None, Vec::new()).await
}

/// The world in a network: its nodes deliver to `hub` as the organisations whose API keys are
/// `node_keys` (in the order of [`World::nodes`]: `00000011`, `00000022`), the portal manages
/// choices through `consent`, and the provider knows `users` besides Anna and Bob.
pub async fn start_in_network(
    hub: &TestHub,
    node_keys: [&str; 2],
    consent: zorgnet_hub_client::HubClient,
    users: Vec<DemoUser>,
) -> (World, Portal) {
    start_world(Vec::new(), Some(consent), Some((hub, node_keys)), users).await
}

/// The world: the provider with Anna, Bob and `users`, the two nodes (in a network with
/// `network`'s hub and keys), Anna's and Bob's data loaded, and the portal asking the nodes and
/// `extra`, managing choices through `consent`.
async fn start_world(
    extra: Vec<Source>,
    consent: Option<zorgnet_hub_client::HubClient>,
    network: Option<(&TestHub, [&str; 2])>,
    users: Vec<DemoUser>,
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
        clients: vec![
            ClientRegistration {
                client_id: PORTAL_CLIENT.into(),
                redirect_uris: vec![format!("{portal}/callback")],
            },
            ClientRegistration {
                client_id: APP_CLIENT.into(),
                redirect_uris: vec![APP_REDIRECT.into()],
            },
        ],
        resources: vec![ResourceServer {
            audience: PORTAL_CLIENT.into(),
            urls: vec![format!("{portal}/fhir")],
        }],
        users: [
            DemoUser::citizen("anna", "Anna de Vries", &anna_bsn),
            DemoUser::citizen("bob", "Bob Bakker", &bob_bsn),
        ]
        .into_iter()
        .chain(users)
        .collect(),
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let router = idp.router();
    tokio::spawn(async move { axum::serve(idp_listener, router).await });
    let at_hub = |i: usize| network.map(|(hub, keys)| (hub, keys[i]));
    let nodes = vec![
        start_node_with(
            "Huisartsenpraktijk De Linde",
            "00000011",
            &issuer,
            at_hub(0),
        )
        .await,
        start_node_with("Ziekenhuis Oost", "00000022", &issuer, at_hub(1)).await,
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

/// The `Type/id`s of a download's entries whose fullUrl is at `base`.
pub fn downloaded_at(bundle: &Value, base: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| {
            let full_url = entry["fullUrl"].as_str().unwrap();
            let path = full_url.strip_prefix(base)?.strip_prefix('/')?;
            assert_eq!(
                path,
                type_and_id(&entry["resource"]),
                "fullUrl names the resource"
            );
            Some(path.to_string())
        })
        .collect()
}

/// Appends a professional's read of `patient` to `node`'s log; answers its sequence number.
pub async fn professional_read(node: &Node, patient: &str) -> u64 {
    let record = AuditRecord {
        at_ms: zorgnet_db::now_ms(),
        agent: Agent {
            kind: AgentKind::Professional,
            id: Some("900000009".into()),
            role: Some("01.015".into()),
            organisation: Some(node.ura.clone()),
            certificate: None,
        },
        patients: vec![patient.to_string()],
        action: "read".into(),
        request: format!("GET /fhir/Patient/{patient}"),
        purpose: None,
        reason: None,
        bases: Vec::new(),
        status: 200,
    };
    let log = node.log.clone();
    tokio::task::spawn_blocking(move || {
        let seq = log.size();
        log.append(&[record.to_json()]).unwrap();
        seq
    })
    .await
    .unwrap()
}

/// The citizens' reports (alerts) in `node`'s log.
pub async fn reports(node: &Node) -> Vec<CitizenReport> {
    let log = node.log.clone();
    tokio::task::spawn_blocking(move || {
        (0..log.size())
            .filter_map(|seq| {
                let record: AuditRecord =
                    serde_json::from_str(&log.record(seq).unwrap().unwrap()).unwrap();
                CitizenReport::from_record(&record)
            })
            .collect()
    })
    .await
    .unwrap()
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
    log_in_as(world, citizen.subject).await
}

/// A browser logged in as the provider's user `subject`, and the page it lands on.
pub async fn log_in_as(world: &World, subject: &str) -> (reqwest::Client, String) {
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
    fields.push(("user".into(), subject.into()));
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
