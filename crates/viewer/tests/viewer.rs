//! The viewer end to end, in-process on loopback over plain HTTP: a real hub (SQLite in a
//! temporary directory), three real nodes joined to it (a GP, a hospital, a pharmacy; their
//! outboxes register at the referral index what they hold, their directories are in the
//! hub's address book), the development identity provider with the hospital's and the
//! pharmacy's staff clients, and the viewer nested under `/zorgverlener`. A browser (reqwest
//! with a cookie store) logs in through the provider's form and uses the pages.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zorgnet_hub::{Hub, HubConfig};
use zorgnet_idp::{ClientRegistration, DemoUser, DevIdp, IdpConfig, KeySource};
use zorgnet_node::NodeIdentity;
use zorgnet_node::authn::{LocalClients, NodeOidc};
use zorgnet_node::hub_client::HubClient;
use zorgnet_node::network::Network;
use zorgnet_node::{addressing, outbox};
use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};
use zorgnet_viewer::{Organisation, Viewer, ViewerConfig};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const PHARMACY: &str = "00000033";
const GP_NAME: &str = "Huisartsenpraktijk De Linde";
const HOSPITAL_NAME: &str = "Ziekenhuis Oost";
const PHARMACY_NAME: &str = "Apotheek Centraal";
const HOSPITAL_CLIENT: &str = "ziekenhuis-oost-staff";
const PHARMACY_CLIENT: &str = "apotheek-centraal-staff";
const PHYSICIAN_UZI: &str = "900000015";
const PHARMACIST_UZI: &str = "900000027";
const GP_ONLY_UZI: &str = "900000039";
const BSN: &str = "123456782";
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
const SEDULA: &str = "196104120123";
const SEDULA_BIRTH_DATE: &str = "1961-04-12";
const INSULIN: &str = "Insuline glargine 100 E/ml";
const ATC: &str = "http://www.whocc.no/atc";
/// How long a test waits for the outboxes to reach the hub.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "/zorgverlener";

struct Node {
    base: String,
    store: zorgnet_store::Store,
    cache: addressing::AddressBookCache,
    stop: tokio::sync::broadcast::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn stop(&self) {
        let _ = self.stop.send(());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

struct World {
    /// The viewer's base URL with its prefix.
    viewer: String,
    /// The zorgverificatienummer of the person known by a sédula number at the GP and the
    /// pharmacy.
    zvn: String,
    gp: Node,
    _hospital: Node,
    _pharmacy: Node,
    _hub_dir: tempfile::TempDir,
    _idp: DevIdp,
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    (listener, address)
}

/// A node of `ura` in the network of the hub at `hub`, accepting staff tokens of `client`.
async fn start_node(
    hub: &str,
    key: &str,
    ura: &str,
    name: &str,
    issuer: &str,
    client: Option<&str>,
) -> Node {
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
    let (_, sink) = tokio::task::spawn_blocking(move || {
        zorgnet_node::audit::open_with_key(&logged, zorgnet_audit::ChainKey::generate()).unwrap()
    })
    .await
    .unwrap();
    let (listener, address) = listener().await;
    let base = format!("{address}/fhir");
    let identity = NodeIdentity {
        ura: ura.into(),
        name: name.into(),
    };
    let hub_client = HubClient::new(hub, key).unwrap();
    addressing::publish_own_entries(&store, &identity, &base)
        .await
        .unwrap();
    hub_client
        .put(
            &format!("/addressing/suppliers/{ura}"),
            &json!({"name": name, "fhir_base_url": base}),
        )
        .await
        .unwrap();
    let db = store.database().clone();
    let cache =
        tokio::task::spawn_blocking(move || addressing::AddressBookCache::open(db).unwrap())
            .await
            .unwrap();
    let network = Arc::new(Network::new(hub_client.clone(), cache.clone()).unwrap());
    let oidc = NodeOidc {
        staff: client.map(|client| {
            Arc::new(
                OidcVerifier::new(OidcConfig {
                    issuer: issuer.into(),
                    audience: client.into(),
                })
                .unwrap(),
            )
        }),
        citizens: None,
    };
    let router = zorgnet_node::router_in_network(
        store.clone(),
        identity,
        base.clone(),
        Some(network),
        LocalClients::InsecureDev,
        oidc,
        sink,
    );
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut serve_stop = stop.subscribe();
    tokio::spawn(zorgnet_node::serve(listener, router, async move {
        let _ = serve_stop.recv().await;
    }));
    let mut deliver_stop = stop.subscribe();
    tokio::spawn(outbox::run_delivery(
        store.clone(),
        hub_client,
        wake,
        async move {
            let _ = deliver_stop.recv().await;
        },
    ));
    Node {
        base,
        store,
        cache,
        stop,
        _dir: dir,
    }
}

impl Node {
    /// Stores `resources` in one transaction (the node runs `--insecure-dev`: no key).
    async fn load(&self, resources: Vec<Value>) {
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|resource| {
                let url = format!(
                    "{}/{}",
                    resource["resourceType"].as_str().unwrap(),
                    resource["id"].as_str().unwrap()
                );
                json!({"resource": resource, "request": {"method": "PUT", "url": url}})
            })
            .collect();
        let answer = reqwest::Client::new()
            .post(&self.base)
            .header("content-type", "application/fhir+json")
            .body(
                json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = answer.status();
        assert!(
            status.is_success(),
            "{status} {}",
            answer.text().await.unwrap()
        );
    }

    /// Waits until the outbox has delivered everything to the hub.
    async fn delivered(&self) {
        let started = Instant::now();
        loop {
            let db = self.store.database().clone();
            let status = tokio::task::spawn_blocking(move || outbox::status(&db).unwrap())
                .await
                .unwrap();
            assert_eq!(status.failed, 0, "the hub refused registrations");
            if status.pending == 0 {
                return;
            }
            assert!(started.elapsed() < DELIVERY_WAIT, "still {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
        "identifier": [{"system": BSN_SYSTEM, "value": BSN}],
        "name": [{"family": "de Vries", "given": ["Anna"]}], "birthDate": "1960-04-12"})
}

fn subject(id: &str) -> Value {
    json!({"reference": format!("Patient/{id}")})
}

fn metformin(text: &str) -> Value {
    json!({"coding": [{"system": ATC, "code": "A10BA02", "display": "metformine"}], "text": text})
}

/// The GP's record: a problem, medication in use, an allergy, a lab result, an alert.
fn gp_record() -> Vec<Value> {
    vec![
        patient("gp-p"),
        json!({"resourceType": "Condition", "id": "gp-dm2", "subject": subject("gp-p"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"text": "Diabetes mellitus type 2"}, "onsetDateTime": "2019-05-01"}),
        json!({"resourceType": "MedicationStatement", "id": "gp-met", "status": "active",
            "subject": subject("gp-p"), "medicationCodeableConcept": metformin("Metformine 500 mg tablet"),
            "effectivePeriod": {"start": "2019-06-01"}, "dosage": [{"text": "2 maal per dag 1 tablet"}]}),
        json!({"resourceType": "AllergyIntolerance", "id": "gp-pen", "patient": subject("gp-p"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
            "code": {"text": "Penicilline"}, "criticality": "high", "recordedDate": "2015-02-02"}),
        json!({"resourceType": "Observation", "id": "gp-hba1c", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]},
            "subject": subject("gp-p"), "effectiveDateTime": "2025-01-10",
            "valueQuantity": {"value": 53, "unit": "mmol/mol"},
            "referenceRange": [{"low": {"value": 20, "unit": "mmol/mol"}, "high": {"value": 42, "unit": "mmol/mol"}}]}),
        json!({"resourceType": "Flag", "id": "gp-flag", "status": "active", "subject": subject("gp-p"),
            "code": {"text": "Valrisico"}, "period": {"start": "2024-06-01"}}),
    ]
}

/// The pharmacy's record: the metformin dispensed, and a stopped medicine.
fn pharmacy_record() -> Vec<Value> {
    vec![
        patient("ap-p"),
        json!({"resourceType": "MedicationDispense", "id": "ap-met", "status": "completed",
            "subject": subject("ap-p"), "medicationCodeableConcept": metformin("Metformine 500mg tablet"),
            "whenHandedOver": "2025-01-15T10:00:00+01:00",
            "quantity": {"value": 180, "unit": "tablet"}}),
        json!({"resourceType": "MedicationStatement", "id": "ap-ome", "status": "stopped",
            "subject": subject("ap-p"),
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "A02BC01"}], "text": "Omeprazol 20 mg"},
            "effectivePeriod": {"start": "2020-01-01", "end": "2020-06-01"}}),
    ]
}

/// A person of Saba without a BSN: a sédula number and birth date, with a medicine.
fn sedula_record(id: &str, medicine: Value) -> Vec<Value> {
    vec![
        json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": "http://zorgnet.nl/fhir/NamingSystem/sedula", "value": SEDULA}],
            "name": [{"family": "Hassell", "given": ["Mary"]}], "birthDate": SEDULA_BIRTH_DATE}),
        medicine,
    ]
}

/// The hospital knows the patient (and their GP and contact person), and holds nothing else.
fn hospital_record() -> Vec<Value> {
    let mut patient = patient("zh-p");
    patient["generalPractitioner"] = json!([{"display": GP_NAME}]);
    patient["contact"] = json!([{"relationship": [{"text": "Partner"}],
        "name": {"text": "Piet de Vries"}, "telecom": [{"system": "phone", "value": "06-12345678"}]}]);
    vec![patient]
}

async fn start() -> World {
    let hub_dir = tempfile::tempdir().unwrap();
    let config = HubConfig {
        data_dir: hub_dir.path().to_path_buf(),
        postgres: None,
        allow_insecure_endpoints: true,
        client_tls: None,
    };
    let hub = tokio::task::spawn_blocking(move || Hub::open(&config).unwrap())
        .await
        .unwrap();
    let hub_admin = std::fs::read_to_string(hub.admin_key_path())
        .unwrap()
        .trim()
        .to_string();
    let (hub_listener, hub_base) = listener().await;
    hub.serving_at(hub_listener.local_addr().unwrap());
    let router = hub.router(&hub_base);
    tokio::spawn(zorgnet_node::serve(
        hub_listener,
        router,
        std::future::pending(),
    ));
    let admin = reqwest::Client::new();
    let mut keys = Vec::new();
    for (ura, name) in [
        (GP, GP_NAME),
        (HOSPITAL, HOSPITAL_NAME),
        (PHARMACY, PHARMACY_NAME),
    ] {
        let answer = admin
            .post(format!("{hub_base}/registry/organisations"))
            .bearer_auth(&hub_admin)
            .json(&json!({"ura": ura, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
        let body: Value = answer.json().await.unwrap();
        keys.push((
            ura.to_string(),
            body["api_key"].as_str().unwrap().to_string(),
        ));
    }
    for (uzi, name, ura, role) in [
        (PHYSICIAN_UZI, "Dr. Jansen", HOSPITAL, "01.016"),
        (PHARMACIST_UZI, "Apotheker Pieters", PHARMACY, "17.000"),
        (GP_ONLY_UZI, "Huisarts Bakker", GP, "01.015"),
    ] {
        let answer = admin
            .put(format!("{hub_base}/professionals/{uzi}"))
            .bearer_auth(&hub_admin)
            .json(&json!({"name": name, "roles": [{"ura": ura, "role": role}]}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }

    let (viewer_listener, viewer_address) = listener().await;
    let viewer = format!("{viewer_address}{PREFIX}");
    let (idp_listener, issuer) = listener().await;
    let idp = DevIdp::new(IdpConfig {
        resources: Vec::new(),
        issuer: issuer.clone(),
        clients: [(HOSPITAL, HOSPITAL_CLIENT), (PHARMACY, PHARMACY_CLIENT)]
            .into_iter()
            .map(|(ura, client)| ClientRegistration {
                client_id: client.into(),
                redirect_uris: vec![format!("{viewer}/{ura}/callback")],
            })
            .collect(),
        users: vec![
            DemoUser::professional("jansen", "Dr. Jansen", PHYSICIAN_UZI),
            DemoUser::professional("pieters", "Apotheker Pieters", PHARMACIST_UZI),
            DemoUser::professional("bakker", "Huisarts Bakker", GP_ONLY_UZI),
        ],
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let router = idp.router();
    tokio::spawn(async move { axum::serve(idp_listener, router).await });

    let key = |ura: &str| keys.iter().find(|(u, _)| u == ura).unwrap().1.clone();
    let gp = start_node(&hub_base, &key(GP), GP, GP_NAME, &issuer, None).await;
    let hospital = start_node(
        &hub_base,
        &key(HOSPITAL),
        HOSPITAL,
        HOSPITAL_NAME,
        &issuer,
        Some(HOSPITAL_CLIENT),
    )
    .await;
    let pharmacy = start_node(
        &hub_base,
        &key(PHARMACY),
        PHARMACY,
        PHARMACY_NAME,
        &issuer,
        Some(PHARMACY_CLIENT),
    )
    .await;
    gp.load(gp_record()).await;
    gp.load(sedula_record(
        "gp-s",
        json!({"resourceType": "MedicationStatement", "id": "gp-s-ins", "status": "active",
            "subject": subject("gp-s"), "medicationCodeableConcept": {"text": INSULIN}}),
    ))
    .await;
    pharmacy.load(pharmacy_record()).await;
    pharmacy
        .load(sedula_record(
            "ap-s",
            json!({"resourceType": "MedicationDispense", "id": "ap-s-ins", "status": "completed",
                "subject": subject("ap-s"), "medicationCodeableConcept": {"text": INSULIN},
                "whenHandedOver": "2025-02-01T10:00:00-04:00"}),
        ))
        .await;
    hospital.load(hospital_record()).await;
    for node in [&gp, &pharmacy, &hospital] {
        node.delivered().await;
    }
    let sync = admin
        .post(format!("{hub_base}/addressing/sync"))
        .bearer_auth(&hub_admin)
        .send()
        .await
        .unwrap();
    assert!(sync.status().is_success());
    for (node, ura) in [(&hospital, HOSPITAL), (&pharmacy, PHARMACY)] {
        node.cache.sync(&hub_base, &key(ura)).await.unwrap();
    }

    let organisation = |ura: &str, name: &str, client: &str, node: &Node| Organisation {
        ura: ura.into(),
        name: name.into(),
        client_id: client.into(),
        fhir_base: node.base.clone(),
        hub_url: hub_base.clone(),
        hub_key: key(ura),
    };
    let app = Viewer::new(ViewerConfig {
        base_url: viewer.clone(),
        issuer,
        organisations: vec![
            organisation(HOSPITAL, HOSPITAL_NAME, HOSPITAL_CLIENT, &hospital),
            organisation(PHARMACY, PHARMACY_NAME, PHARMACY_CLIENT, &pharmacy),
        ],
        tls: None,
    })
    .unwrap();
    let router = axum::Router::new().nest(PREFIX, app.router());
    tokio::spawn(async move { axum::serve(viewer_listener, router).await });
    let derived: Value = admin
        .post(format!("{hub_base}/prs/zvn"))
        .bearer_auth(key(HOSPITAL))
        .json(&json!({"sedula": SEDULA, "birth_date": SEDULA_BIRTH_DATE}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    World {
        viewer,
        zvn: derived["zvn"].as_str().unwrap().to_string(),
        gp,
        _hospital: hospital,
        _pharmacy: pharmacy,
        _hub_dir: hub_dir,
        _idp: idp,
    }
}

fn unescape(text: &str) -> String {
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

/// The value of attribute `attribute` after each occurrence of `marker`.
fn attribute_after(html: &str, marker: &str, attribute: &str) -> Vec<String> {
    html.split(marker)
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.split('>').next()?;
            let value = rest.split(&format!("{attribute}=\"")).nth(1)?;
            Some(unescape(value.split('"').next()?))
        })
        .collect()
}

/// The provider's login form's hidden inputs.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let names = attribute_after(html, "<input type=\"hidden\" ", "name");
    let values = attribute_after(html, "<input type=\"hidden\" ", "value");
    names.into_iter().zip(values).collect()
}

fn csrf(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a form with a CSRF token")
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Logs `user` in at organisation `ura` through the provider's form; the landing page's
/// status and text.
async fn log_in(
    world: &World,
    browser: &reqwest::Client,
    ura: &str,
    user: &str,
) -> (StatusCode, String, String) {
    let form = browser
        .get(format!("{}/{ura}/login", world.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let authorize = form.url().clone();
    assert!(authorize.path().ends_with("/authorize"), "{authorize}");
    let html = form.text().await.unwrap();
    let mut fields = hidden_inputs(&html);
    assert!(fields.iter().any(|(name, _)| name == "code_challenge"));
    fields.push(("user".into(), user.into()));
    let landed = browser
        .post(authorize.as_str().split('?').next().unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    let (status, path) = (landed.status(), landed.url().path().to_string());
    (status, path, landed.text().await.unwrap())
}

/// Logs `user` in at `ura` and picks the patient; the browser and the patient page.
async fn open_patient(world: &World, ura: &str, user: &str) -> (reqwest::Client, String) {
    open_patient_by(world, ura, user, BSN).await
}

/// Logs `user` in at `ura` and picks the patient with `number` (a BSN or a
/// zorgverificatienummer); the browser and the patient page.
async fn open_patient_by(
    world: &World,
    ura: &str,
    user: &str,
    number: &str,
) -> (reqwest::Client, String) {
    let browser = browser();
    let (status, path, search) = log_in(world, &browser, ura, user).await;
    assert_eq!(status, StatusCode::OK, "{search}");
    assert_eq!(path, format!("{PREFIX}/{ura}/"));
    let answer = browser
        .post(format!("{}/{ura}/zoeken", world.viewer))
        .form(&[("csrf", csrf(&search).as_str()), ("bsn", number)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.url().path(), format!("{PREFIX}/{ura}/patient"));
    let page = answer.text().await.unwrap();
    (browser, page)
}

/// Registers a relation through the page's form; the patient page after it.
async fn register_relation(
    world: &World,
    browser: &reqwest::Client,
    ura: &str,
    page: &str,
) -> String {
    let answer = browser
        .post(format!("{}/{ura}/relatie", world.viewer))
        .form(&[("csrf", csrf(page).as_str()), ("kind", "referral")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    answer.text().await.unwrap()
}

/// The rows of the medication overview.
fn medication_lines(page: &str) -> Vec<&str> {
    page.split("<tr class=\"med-line\">")
        .skip(1)
        .map(|rest| rest.split("</tr>").next().unwrap())
        .collect()
}

/// The text of the section titled by the heading with id `id`.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let rest = &page[start..];
    &rest[..rest.find("</section>").unwrap()]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_physician_sees_every_source_merged_and_a_stopped_source_named() {
    let world = start().await;
    let browser = browser();
    let (status, _, search) = log_in(&world, &browser, HOSPITAL, "jansen").await;
    assert_eq!(status, StatusCode::OK);
    assert!(search.contains("<html lang=\"nl\">"));
    assert!(search.contains("Dr. Jansen") && search.contains("01.016"));
    assert!(search.contains("<label for=\"bsn\">"), "a labelled field");

    // A BSN that fails the 11-check is refused on the form.
    let refused = browser
        .post(format!("{}/{HOSPITAL}/zoeken", world.viewer))
        .form(&[("csrf", csrf(&search).as_str()), ("bsn", "123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("elfproef"));

    let (browser, before) = open_patient(&world, HOSPITAL, "jansen").await;
    assert!(before.contains("nog geen behandelrelatie"), "{before}");
    assert!(
        before.contains("Geen enkele bron gaf gegevens."),
        "no basis, no data"
    );
    assert!(
        !before.contains(BSN_SYSTEM),
        "the BSN is shown, not its system"
    );

    // The relation form needs the session's CSRF token.
    let forged = browser
        .post(format!("{}/{HOSPITAL}/relatie", world.viewer))
        .form(&[("csrf", "forged"), ("kind", "referral")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let page = register_relation(&world, &browser, HOSPITAL, &before).await;
    assert!(page.contains("Uw organisatie heeft een behandelrelatie met deze patiënt."));
    assert!(page.contains("Verwijzing"));

    // Both sources answered, named; the hospital's own Patient gives the contacts.
    let sources = section(&page, "bronnen");
    assert!(
        sources.contains(&format!("<li>{GP_NAME}</li>")),
        "{sources}"
    );
    assert!(
        sources.contains(&format!("<li>{PHARMACY_NAME}</li>")),
        "{sources}"
    );
    assert!(!page.contains("Niet alle bronnen gaven antwoord"));
    let problems = section(&page, "problemen");
    assert!(problems.contains("<th scope=\"row\">Diabetes mellitus type 2</th>"));
    assert!(problems.contains(&format!("<td>{GP_NAME}</td>")));
    assert!(
        !problems.contains("Niet beschikbaar voor uw rol"),
        "a physician sees all"
    );
    assert!(section(&page, "allergieen").contains("Penicilline"));
    assert!(section(&page, "alerts").contains("Valrisico"));
    let lab = section(&page, "lab");
    assert!(lab.contains(
        "<th scope=\"row\">HbA1c</th><td>53 mmol/mol</td><td>20 mmol/mol – 42 mmol/mol</td><td>2025-01-10</td>"
    ), "{lab}");
    let contacts = section(&page, "contact");
    assert!(contacts.contains(GP_NAME) && contacts.contains("Piet de Vries"));

    // One medication line for the metformin of the GP and the pharmacy, listing both; the
    // stopped omeprazol a line of its own.
    let lines = medication_lines(&page);
    let metformin: Vec<&&str> = lines.iter().filter(|l| l.contains("A10BA02")).collect();
    assert_eq!(metformin.len(), 1, "{lines:#?}");
    let metformin = metformin[0];
    assert!(
        metformin.contains(&format!("<td>{PHARMACY_NAME}, {GP_NAME}</td>")),
        "{metformin}"
    );
    assert!(metformin.contains("<td>Actueel</td>"));
    assert!(
        metformin.contains("<td>2025-01-15 10:00</td>"),
        "last dispense: {metformin}"
    );
    assert!(metformin.contains("Verstrekking") && metformin.contains("Medicatiegebruik"));
    let omeprazol = lines.iter().find(|l| l.contains("A02BC01")).unwrap();
    assert!(omeprazol.contains("<td>Gestopt</td>"));
    assert!(omeprazol.contains("2020-01-01 – 2020-06-01"));
    assert_eq!(lines.len(), 2);

    // The timeline: newest first, each with its source.
    let timeline = section(&page, "tijdlijn");
    let dispense = timeline.find("2025-01-15").unwrap();
    let hba1c = timeline.find("2025-01-10").unwrap();
    let diagnosis = timeline.find("2019-05-01").unwrap();
    assert!(dispense < hba1c && hba1c < diagnosis);
    assert!(timeline.contains(&format!("<td>{PHARMACY_NAME}</td>")));

    let english = browser
        .get(format!("{}/{HOSPITAL}/patient?lang=en", world.viewer))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(english.contains("<html lang=\"en\">"));
    assert!(english.contains("Medication overview") && english.contains("Current"));

    // The GP's node stops: the page still shows the pharmacy's data and names the GP.
    world.gp.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = browser
        .get(format!("{}/{HOSPITAL}/patient?lang=nl", world.viewer))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Niet alle bronnen gaven antwoord"), "{page}");
    let silent = &page[page.find("Niet alle bronnen gaven antwoord").unwrap()..];
    assert!(
        silent.contains(&format!("<strong>{GP_NAME}</strong>")),
        "{silent}"
    );
    assert!(section(&page, "bronnen").contains(&format!("<li>{PHARMACY_NAME}</li>")));
    assert!(!section(&page, "problemen").contains("Diabetes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pharmacist_sees_what_their_role_may_not_see_as_not_available() {
    let world = start().await;
    let (browser, before) = open_patient(&world, PHARMACY, "pieters").await;
    let page = register_relation(&world, &browser, PHARMACY, &before).await;
    assert!(page.contains("Apotheker Pieters") && page.contains("17.000"));

    // The GP refused the problem list, the medication statements and the allergies for the
    // role, and said so; the viewer names them, per source and per section.
    let refused = &page[page.find("Niet alles is gedeeld").expect("refusals named")..];
    let refused = &refused[..refused.find("</div>").unwrap()];
    assert!(
        refused.contains(&format!(
            "<strong>{GP_NAME}</strong>: niet beschikbaar voor uw rol"
        )),
        "{refused}"
    );
    assert!(refused.contains("Condition"));
    let problems = section(&page, "problemen");
    assert!(
        problems.contains("Niet beschikbaar voor uw rol"),
        "{problems}"
    );
    assert!(!problems.contains("Diabetes"));
    let withheld = &page[page
        .find("Deze soorten gegevens van andere organisaties")
        .unwrap()..];
    assert!(withheld.contains("(patient-summary)"));
    assert!(!withheld[..withheld.find("</ul>").unwrap()].contains("(lab-results)"));

    // What the role may see: the lab result and the GP's dispensable medication are there,
    // the pharmacy's own data in full.
    assert!(section(&page, "lab").contains("HbA1c"));
    assert!(!section(&page, "lab").contains("Niet beschikbaar voor uw rol"));
    let lines = medication_lines(&page);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("A10BA02") && l.contains(PHARMACY_NAME))
    );
    assert!(lines.iter().any(|l| l.contains("A02BC01")), "own data");
    assert!(
        section(&page, "actuele-medicatie").contains("MedicationStatement"),
        "partly hidden"
    );

    let english = browser
        .get(format!("{}/{PHARMACY}/patient?lang=en", world.viewer))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(section(&english, "problemen").contains("Not available to your role"));

    // A pharmacist may not break the glass.
    let form = browser
        .get(format!("{}/{PHARMACY}/nood", world.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emergency_view_needs_a_reason_and_is_flagged() {
    let world = start().await;
    let (browser, page) = open_patient(&world, HOSPITAL, "jansen").await;
    assert!(
        page.contains("Geen enkele bron gaf gegevens."),
        "no relation registered"
    );
    let form = browser
        .get(format!("{}/{HOSPITAL}/nood", world.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let form = form.text().await.unwrap();
    assert!(form.contains("<label for=\"reason\">"));
    let token = csrf(&form);
    for reason in ["", "   "] {
        let empty = browser
            .post(format!("{}/{HOSPITAL}/nood", world.viewer))
            .form(&[("csrf", token.as_str()), ("reason", reason)])
            .send()
            .await
            .unwrap();
        assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
        let text = empty.text().await.unwrap();
        assert!(text.contains("Vul de reden van de noodtoegang in."));
        assert!(!text.contains("NOODTOEGANG —"), "nothing shown");
    }
    let forged = browser
        .post(format!("{}/{HOSPITAL}/nood", world.viewer))
        .form(&[("csrf", "forged"), ("reason", "bewusteloos op de SEH")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let answer = browser
        .post(format!("{}/{HOSPITAL}/nood", world.viewer))
        .form(&[
            ("csrf", token.as_str()),
            ("reason", "Bewusteloos binnengebracht op de SEH"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let page = answer.text().await.unwrap();
    assert!(page.contains("<body class=\"emergency-access\">"));
    assert!(page.contains("NOODTOEGANG — deze inzage is gedaan zonder behandelrelatie"));
    assert!(page.contains("<q>Bewusteloos binnengebracht op de SEH</q>"));
    assert!(
        section(&page, "allergieen").contains("Penicilline"),
        "{page}"
    );
    assert!(section(&page, "alerts").contains("Valrisico"));
    assert!(section(&page, "problemen").contains("Diabetes mellitus type 2"));
    assert!(section(&page, "lab").contains("HbA1c"));
    let current = section(&page, "actuele-medicatie");
    assert!(
        current.contains("Metformine") && !current.contains("Omeprazol"),
        "{current}"
    );
    assert!(section(&page, "contact").contains(GP_NAME));
    assert!(section(&page, "bronnen").contains(&format!("<li>{GP_NAME}</li>")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_professional_without_a_role_is_refused_and_a_session_stays_with_its_organisation() {
    let world = start().await;

    // The GP's professional holds no role at the hospital: refused after the login.
    let stranger = browser();
    let (status, _, page) = log_in(&world, &stranger, HOSPITAL, "bakker").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("U heeft geen rol bij deze organisatie"),
        "{page}"
    );
    let after = stranger
        .get(format!("{}/{HOSPITAL}/patient", world.viewer))
        .send()
        .await
        .unwrap();
    assert!(
        after.url().path().ends_with("/authorize"),
        "no session was opened"
    );

    // The physician's session at the hospital opens nothing at the pharmacy.
    let (browser, page) = open_patient(&world, HOSPITAL, "jansen").await;
    let hospital_cookie = format!("zorgnet_viewer_sessie_{HOSPITAL}");
    let session_id = session_of(&world, HOSPITAL, "jansen").await;
    let session_csrf = csrf(
        &reqwest::Client::new()
            .get(format!("{}/{HOSPITAL}/", world.viewer))
            .header("cookie", format!("{hospital_cookie}={session_id}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/patient", "/nood"] {
        let other = client
            .get(format!("{}/{PHARMACY}{path}", world.viewer))
            .header(
                "cookie",
                format!("zorgnet_viewer_sessie_{PHARMACY}={session_id}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(other.text().await.unwrap().contains("andere organisatie"));
        let own = client
            .get(format!("{}/{HOSPITAL}{path}", world.viewer))
            .header("cookie", format!("{hospital_cookie}={session_id}"))
            .send()
            .await
            .unwrap();
        let expected = if path == "/" {
            StatusCode::OK
        } else {
            StatusCode::SEE_OTHER
        };
        assert_eq!(
            own.status(),
            expected,
            "{path} at its own organisation: no patient yet"
        );
    }
    let other_search = client
        .post(format!("{}/{PHARMACY}/zoeken", world.viewer))
        .header(
            "cookie",
            format!("zorgnet_viewer_sessie_{PHARMACY}={session_id}"),
        )
        .form(&[("csrf", csrf(&page).as_str()), ("bsn", BSN)])
        .send()
        .await
        .unwrap();
    assert_eq!(other_search.status(), StatusCode::FORBIDDEN);
    // The browser itself sends the hospital's cookie only to the hospital's pages.
    let at_pharmacy = browser
        .get(format!("{}/{PHARMACY}/patient", world.viewer))
        .send()
        .await
        .unwrap();
    assert!(at_pharmacy.url().path().ends_with("/authorize"));

    // Headers, the start page and a page that does not exist.
    let start = client.get(&world.viewer).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::OK);
    let headers = start.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let start = start.text().await.unwrap();
    assert!(start.contains(&format!("href=\"{PREFIX}/{HOSPITAL}/login\"")));
    assert!(start.contains(&format!("href=\"{PREFIX}/assets/viewer.css\"")));
    assert!(start.contains("class=\"skip-link\" href=\"#inhoud\""));
    for path in ["/nergens", "/99999999/login"] {
        let missing = client
            .get(format!("{}{path}", world.viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Logging out takes the CSRF token and ends the session.
    let out = client
        .post(format!("{}/{HOSPITAL}/logout", world.viewer))
        .header("cookie", format!("{hospital_cookie}={session_id}"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FORBIDDEN);
    let out = client
        .post(format!("{}/{HOSPITAL}/logout", world.viewer))
        .header("cookie", format!("{hospital_cookie}={session_id}"))
        .form(&[("csrf", session_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()["location"], PREFIX);
    let gone = client
        .get(format!("{}/{HOSPITAL}/", world.viewer))
        .header("cookie", format!("{hospital_cookie}={session_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        gone.headers()["location"],
        format!("{PREFIX}/{HOSPITAL}/login").as_str()
    );
}

/// Logs `user` in at `ura` step by step, keeping the session cookie's value.
async fn session_of(world: &World, ura: &str, user: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let login = client
        .get(format!("{}/{ura}/login", world.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let login_cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = login.headers()["location"].to_str().unwrap().to_string();
    let form = client
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut fields = hidden_inputs(&form);
    fields.push(("user".into(), user.into()));
    let back = client
        .post(authorize.split('?').next().unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    let landed = client
        .get(&callback)
        .header("cookie", login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), StatusCode::SEE_OTHER);
    let cookie = landed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("zorgnet_viewer_sessie_{ura}=")))
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(cookie.contains(&format!("Path={PREFIX}/{ura}")), "{cookie}");
    cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_without_a_bsn_is_found_by_zorgverificatienummer() {
    let world = start().await;
    let (browser, before) = open_patient_by(&world, HOSPITAL, "jansen", &world.zvn).await;
    assert!(
        before.contains("Zorgverificatienummer") && before.contains(&world.zvn),
        "the page names the number and what it is: {before}"
    );
    assert!(before.contains("nog geen behandelrelatie"), "{before}");
    let page = register_relation(&world, &browser, HOSPITAL, &before).await;
    assert!(
        page.contains("Uw organisatie heeft een behandelrelatie"),
        "{page}"
    );
    let medication = section(&page, "medicatieoverzicht");
    assert!(medication.contains(INSULIN), "{medication}");
    assert!(
        medication.contains(GP_NAME) && medication.contains(PHARMACY_NAME),
        "from both sources: {medication}"
    );
    assert!(
        !page.contains("Metformine") && !page.contains("Omeprazol"),
        "nothing of the person with the BSN"
    );

    // A number that is neither a BSN nor a zorgverificatienummer is refused on the form.
    let (status, _, search) = log_in(&world, &browser, HOSPITAL, "jansen").await;
    assert_eq!(status, StatusCode::OK);
    let mut wrong_check = world.zvn.clone();
    let last = wrong_check.pop().unwrap();
    wrong_check.push(if last == '0' { '1' } else { '0' });
    let refused = browser
        .post(format!("{}/{HOSPITAL}/zoeken", world.viewer))
        .form(&[
            ("csrf", csrf(&search).as_str()),
            ("bsn", wrong_check.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}
