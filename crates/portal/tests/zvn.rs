//! A citizen without a usable BSN (Caribbean Netherlands), who logs in with a
//! zorgverificatienummer (`zvn` claim): their data sits at both nodes on Patients known by a
//! sédula number and birth date, from which the hub derives the number; every feature of the
//! portal works for them as for a citizen with a BSN, and their token reads nobody else's
//! data. The world (see `support`) is in a network: the nodes' outboxes deliver to a real
//! hub, which also keeps the consent register.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::*;
use zorgnet_audit::AgentKind;
use zorgnet_fhir::identifiers::{BSN_SYSTEM, SEDULA_SYSTEM, ZVN_SYSTEM};
use zorgnet_hub_client::{ConsentDirective, HubClient};
use zorgnet_idp::DemoUser;
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};

/// The portal's organisation at the hub.
const PORTAL_URA: &str = "00000099";
/// The first node's organisation.
const GP: &str = "00000011";
/// The second node's organisation.
const HOSPITAL: &str = "00000022";
/// The citizen's subject at the provider.
const ROSA: &str = "rosa";
/// Her name, as the provider gives it.
const ROSA_NAME: &str = "Rosa Martis";
/// Her sédula number and birth date, on her Patients at both nodes.
const SEDULA: &str = "196104120123";
const BIRTH_DATE: &str = "1961-04-12";
/// Someone else at the first node: another sédula number, the same birth date.
const SEDULA_OTHER: &str = "197002030456";
/// Her medicine at the first node, and the other person's there.
const ROSA_MEDICINE: &str = "metformine 500 mg";
const OTHER_MEDICINE: &str = "lisinopril 10 mg";
/// Her lab result at the second node.
const ROSA_LAB: &str = "rosa-hb";
/// How long the nodes' outboxes may take to deliver.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

/// The world in a network, Rosa's and the other sédula person's data loaded, and what the
/// tests check against.
struct Sedula {
    world: World,
    /// Kept running for the test's length.
    _hub: TestHub,
    /// Rosa's zorgverificatienummer, as the hub derives it.
    zvn: String,
    /// Rosa's resources (`Type/id`) at each node.
    loaded: Vec<BTreeSet<String>>,
    /// The other person's resources, at the first node.
    other: BTreeSet<String>,
    /// The first node's organisation's client of the hub.
    gp: HubClient,
    /// The hub's operator.
    operator: HubClient,
}

/// A Patient known by `sedula` and [`BIRTH_DATE`].
fn sedula_patient(id: &str, sedula: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "birthDate": BIRTH_DATE,
        "name": [{"family": family}],
        "identifier": [{"system": SEDULA_SYSTEM, "value": sedula}]})
}

/// An active statement of `medicine` for `patient`.
fn medication(id: &str, patient: &str, medicine: &str) -> Value {
    json!({"resourceType": "MedicationStatement", "id": id, "status": "active",
        "medicationCodeableConcept": {"text": medicine},
        "effectiveDateTime": "2025-03-01",
        "subject": {"reference": format!("Patient/{patient}")}})
}

/// Rosa's access token for the portal's client, with `scope`.
fn token(world: &World, scope: &str) -> String {
    world.idp.access_token(PORTAL_CLIENT, ROSA, scope).unwrap()
}

/// `GET {url}` with `token`: the status and the JSON body.
async fn get_json(url: &str, token: &str) -> (StatusCode, Value) {
    let answer = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (answer.status(), answer.json().await.unwrap())
}

/// The `fullUrl`s of a searchset Bundle's matches.
fn matched(bundle: &Value) -> BTreeSet<String> {
    assert_eq!(bundle["type"], "searchset", "{bundle}");
    bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["fullUrl"].as_str().unwrap().to_string())
        .collect()
}

/// `loaded`'s resources of `resource_type`, as full URLs at their nodes.
fn urls_of(world: &World, loaded: &[BTreeSet<String>], resource_type: &str) -> BTreeSet<String> {
    world
        .nodes
        .iter()
        .zip(loaded)
        .flat_map(|(node, loaded)| {
            loaded
                .iter()
                .filter(|r| r.starts_with(&format!("{resource_type}/")))
                .map(|r| format!("{}/{r}", node.base))
        })
        .collect()
}

/// The hub with the portal admitted as a citizen portal and both nodes' organisations, Rosa's
/// number from it, the world with Rosa at the provider, and her data and the other person's
/// at the nodes, once each node has delivered to the hub and finds her by the number.
async fn sedula_world() -> Sedula {
    let hub = TestHub::start().await;
    let portal_key = hub
        .organisation(PORTAL_URA, "Mijn Gezondheidsoverzicht")
        .await;
    hub.state.admit_citizen_portal(PORTAL_URA);
    let gp_key = hub.organisation(GP, "Huisartsenpraktijk De Linde").await;
    let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis Oost").await;
    let derived = hub
        .client(&hospital_key)
        .post(
            "/prs/zvn",
            &json!({"sedula": SEDULA, "birth_date": BIRTH_DATE}),
        )
        .await
        .unwrap();
    let zvn = derived["zvn"].as_str().unwrap().to_string();
    let rosa = DemoUser {
        subject: ROSA.into(),
        name: ROSA_NAME.into(),
        bsn: None,
        zvn: Some(zvn.clone()),
        uzi: None,
    };
    let (world, _) = start_in_network(
        &hub,
        [&gp_key, &hospital_key],
        hub.client(&portal_key),
        vec![rosa],
    )
    .await;

    let at_gp = vec![
        sedula_patient("rosa-gp", SEDULA, "Martis"),
        medication("rosa-med", "rosa-gp", ROSA_MEDICINE),
    ];
    let at_hospital = vec![
        sedula_patient("rosa-zh", SEDULA, "Martis"),
        haemoglobin(ROSA_LAB, "rosa-zh", "2025-02-03", 8.4),
    ];
    let other = vec![
        sedula_patient("ander-gp", SEDULA_OTHER, "Anders"),
        medication("ander-med", "ander-gp", OTHER_MEDICINE),
        haemoglobin("ander-hb", "ander-gp", "2025-02-04", 6.1),
    ];
    let loaded = vec![
        at_gp.iter().map(type_and_id).collect(),
        at_hospital.iter().map(type_and_id).collect(),
    ];
    let other_loaded = other.iter().map(type_and_id).collect();
    world.nodes[0].load(at_gp).await;
    world.nodes[0].load(other).await;
    world.nodes[1].load(at_hospital).await;

    // A node finds her by the number once its outbox has delivered her Patient to the hub.
    let rosa_token = token(&world, "patient/*.read");
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("identifier", &format!("{ZVN_SYSTEM}|{zvn}"))
        .finish();
    for node in &world.nodes {
        let url = format!("{}/Patient?{query}", node.base);
        let started = Instant::now();
        loop {
            let (status, bundle) = get_json(&url, &rosa_token).await;
            if status == StatusCode::OK && matched(&bundle).len() == 1 {
                break;
            }
            assert!(
                started.elapsed() < DELIVERY_WAIT,
                "{}: still {status} {bundle}",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let gp = hub.client(&gp_key);
    let operator = hub.client(&hub.admin_key);
    Sedula {
        world,
        _hub: hub,
        zvn,
        loaded,
        other: other_loaded,
        gp,
        operator,
    }
}

impl Sedula {
    /// Rosa, as the hub knows her.
    fn person(&self) -> PersonalId {
        PersonalId::Zvn(Zvn::parse(&self.zvn).unwrap())
    }

    /// Every current directive of `person`, as the operator reads them.
    async fn directives_of(&self, person: &PersonalId) -> Vec<ConsentDirective> {
        let token = self.gp.referral_index_token(person).await.unwrap();
        self.operator
            .consent_directives(&token)
            .await
            .unwrap()
            .current
    }

    /// Anna's Patient at the first node.
    fn anna_patient(&self) -> String {
        self.world.anna.loaded[0]
            .iter()
            .find_map(|r| r.strip_prefix("Patient/"))
            .unwrap()
            .to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_citizen_known_by_zorgverificatienummer_uses_every_feature() {
    let sedula = sedula_world().await;
    let world = &sedula.world;

    // The overview: her data from both nodes, named by their sources; nobody else's.
    let (browser, page) = log_in_as(world, ROSA).await;
    assert!(page.contains(ROSA_NAME), "{page}");
    assert!(!page.contains("burgerservicenummer"), "no notice: {page}");
    assert!(
        !page.contains("Dit overzicht is niet compleet"),
        "every source answered: {page}"
    );
    for node in &world.nodes {
        assert!(
            page.contains(&format!("<td>{}</td>", node.name)),
            "items of {} are shown",
            node.name
        );
    }
    assert!(page.contains(ROSA_MEDICINE), "the GP's statement");
    assert!(page.contains("Hemoglobine"), "the hospital's lab result");
    assert!(page.contains("8.4 mmol/l"), "{page}");
    assert!(!page.contains(OTHER_MEDICINE), "not the other person's");
    assert!(!page.contains("6.1 mmol/l"), "not the other person's");
    assert!(!page.contains("Anna de Vries"));

    // The download: all of it, each entry at its source; nothing of anyone else.
    let answer = browser
        .get(format!("{}/download.json", world.portal))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let bundle: Value = answer.json().await.unwrap();
    assert_eq!(
        (bundle["resourceType"].as_str(), bundle["type"].as_str()),
        (Some("Bundle"), Some("collection"))
    );
    for (node, loaded) in world.nodes.iter().zip(&sedula.loaded) {
        let downloaded = downloaded_at(&bundle, &node.base);
        let missing: Vec<&String> = loaded.difference(&downloaded).collect();
        assert!(missing.is_empty(), "{}: missing {missing:?}", node.name);
        assert!(downloaded.is_disjoint(&sedula.other), "{}", node.name);
        assert!(
            !downloaded
                .iter()
                .any(|r| r.starts_with("Patient/") && !loaded.contains(r)),
            "{}: only her Patient: {downloaded:?}",
            node.name
        );
    }
    let (status, print) = get(&browser, &format!("{}/afdrukken", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(print.contains(ROSA_MEDICINE) && !print.contains(OTHER_MEDICINE));

    // Mijn keuzes: an opt-out of medication is recorded at the hub for her.
    let (status, page) = get(&browser, &format!("{}/keuzes", world.portal)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<legend>Over één onderwerp niets delen</legend>"));
    let csrf = csrf_of(&page);
    let answer = browser
        .post(format!("{}/keuzes", world.portal))
        .form(&[
            ("csrf", csrf.as_str()),
            ("keuze", "onderwerp"),
            ("onderwerp", "medication"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.url().path(), "/keuzes");
    let page = answer.text().await.unwrap();
    assert!(
        page.contains("Uw keuze is vastgelegd: U deelt geen gegevens over medicatie"),
        "{page}"
    );
    let at_hub = sedula.directives_of(&sedula.person()).await;
    assert_eq!(at_hub.len(), 1, "{at_hub:?}");
    assert_eq!(
        (
            at_hub[0].kind.as_str(),
            at_hub[0].category.as_deref(),
            at_hub[0].recorded_by.as_str(),
            at_hub[0].status.as_str()
        ),
        ("opt-out", Some("medication"), "citizen", "active")
    );
    // Her app reads the same choice through the JSON API.
    let (status, choices) = get_json(
        &format!("{}/api/v1/choices", world.portal),
        &token(world, "patient/Consent.read"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{choices}");
    assert_eq!(
        choices["choices"][0]["directive_id"],
        at_hub[0].directive_id.as_str()
    );

    // Wie keek: the portal's reads at both nodes, and a professional's read she reports.
    let seq = professional_read(&world.nodes[0], "rosa-gp").await;
    let (status, page) = get(&browser, &format!("{}/wie-keek", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    for node in &world.nodes {
        assert!(
            page.contains(&format!("<td>{}</td>", node.name)),
            "the reads at {} are listed: {page}",
            node.name
        );
    }
    assert!(page.contains("U zelf") && page.contains("$everything"));
    assert!(
        page.contains(&format!("name=\"id\" value=\"{seq}\"")),
        "the professional's read has a report form"
    );
    let answer = browser
        .post(format!("{}/wie-keek/melden", world.portal))
        .form(&[
            ("csrf", csrf.as_str()),
            ("source", "0"),
            ("id", &seq.to_string()),
            ("reden", "Ik ken deze arts niet"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let confirmed = answer.text().await.unwrap();
    assert!(
        confirmed.contains(&format!(
            "Uw melding is doorgegeven aan {}.",
            world.nodes[0].name
        )),
        "{confirmed}"
    );
    let alerts = reports(&world.nodes[0]).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].seq, alerts[0].agent.kind),
        (seq, AgentKind::Citizen)
    );
    assert_eq!(alerts[0].patients, ["rosa-gp"]);
    // And through the JSON API (the nodes are asked for her Patients first).
    let (status, log) = get_json(
        &format!("{}/api/v1/access-log", world.portal),
        &token(world, "patient/Patient.read patient/AuditEvent.read"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["unavailable"], json!([]), "{log}");
    let sources: BTreeSet<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        world.nodes.iter().map(|n| n.name.as_str()).collect()
    );

    // The FHIR endpoint with her token: her record, merged, by $everything …
    let fhir = |path: &str| format!("{}/fhir/{path}", world.portal);
    let every_type = token(world, "patient/*.read");
    let (status, patients) = get_json(&fhir("Patient"), &every_type).await;
    assert_eq!(status, StatusCode::OK, "{patients}");
    assert_eq!(
        matched(&patients),
        urls_of(world, &sedula.loaded, "Patient")
    );
    let (status, medication) = get_json(&fhir("MedicationStatement"), &every_type).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        matched(&medication),
        urls_of(world, &sedula.loaded, "MedicationStatement")
    );
    // … and with a scope for one type, by a search of it naming her by the number.
    let observations = token(world, "patient/Observation.read");
    let (status, found) = get_json(&fhir("Observation"), &observations).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        matched(&found),
        urls_of(world, &sedula.loaded, "Observation")
    );
    let (status, lab) = get_json(&fhir(&format!("Observation/{ROSA_LAB}")), &observations).await;
    assert_eq!(status, StatusCode::OK, "{lab}");
    assert_eq!(lab["valueQuantity"]["value"], 8.4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zorgverificatienummer_token_reads_nobody_elses_data() {
    let sedula = sedula_world().await;
    let world = &sedula.world;
    let rosa = token(world, "patient/*.read");
    let anna = sedula.anna_patient();
    let anna_bsn = &world.anna.bsn;

    // Through the portal: another person's ids find nothing.
    let fhir = |path: &str| format!("{}/fhir/{path}", world.portal);
    for path in [
        format!("Patient?_id={anna}"),
        format!("Observation?patient={anna}"),
        "Patient?_id=ander-gp".to_string(),
        "MedicationStatement?patient=ander-gp".to_string(),
    ] {
        let (status, bundle) = get_json(&fhir(&path), &rosa).await;
        assert_eq!(status, StatusCode::OK, "{path}: {bundle}");
        assert_eq!(bundle["total"], 0, "{path}: {bundle}");
    }
    for path in [
        format!("Patient/{anna}"),
        "Patient/ander-gp".to_string(),
        "MedicationStatement/ander-med".to_string(),
    ] {
        let (status, outcome) = get_json(&fhir(&path), &rosa).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {outcome}");
    }

    // At the node, with her token as the portal passes it on: anything not hers is refused,
    // whether named by id, by BSN, by another number, or beside her own Patient.
    let node = &world.nodes[0];
    let encoded =
        |value: &str| form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    let other_zvn = sedula
        .gp
        .post(
            "/prs/zvn",
            &json!({"sedula": SEDULA_OTHER, "birth_date": BIRTH_DATE}),
        )
        .await
        .unwrap()["zvn"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("Patient/{anna}"),
        format!("Patient/{anna}/$everything"),
        format!(
            "Patient?identifier={}",
            encoded(&format!("{BSN_SYSTEM}|{anna_bsn}"))
        ),
        format!(
            "Observation?patient.identifier={}",
            encoded(&format!("{BSN_SYSTEM}|{anna_bsn}"))
        ),
        format!(
            "Patient?identifier={}",
            encoded(&format!("{ZVN_SYSTEM}|{other_zvn}"))
        ),
        format!(
            "Patient?identifier={}",
            encoded(&format!("{SEDULA_SYSTEM}|{SEDULA_OTHER}"))
        ),
        "Patient/ander-gp".to_string(),
        "Patient/ander-gp/$everything".to_string(),
        "MedicationStatement/ander-med".to_string(),
        "MedicationStatement?patient=Patient/ander-gp".to_string(),
        "MedicationStatement".to_string(),
        format!("AuditEvent?patient={}", encoded(&format!("Patient/{anna}"))),
        format!(
            "AuditEvent?patient={}",
            encoded("Patient/rosa-gp,Patient/ander-gp")
        ),
    ] {
        let (status, outcome) = get_json(&format!("{}/{path}", node.base), &rosa).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {outcome}");
    }
    // Her own, by the same routes, is served.
    let (status, own) = get_json(
        &format!(
            "{}/MedicationStatement?patient.identifier={}",
            node.base,
            encoded(&format!("{ZVN_SYSTEM}|{}", sedula.zvn))
        ),
        &rosa,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(
        matched(&own),
        BTreeSet::from([format!("{}/MedicationStatement/rosa-med", node.base)])
    );

    // A token naming her number and Anna's BSN at once is no citizen's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let both = world
        .idp
        .sign(&json!({"iss": world.idp.issuer(), "sub": ROSA,
        "aud": PORTAL_CLIENT, "iat": now, "exp": now + 600, "scope": "patient/*.read",
        "zvn": sedula.zvn, "bsn": anna_bsn}));
    let (status, outcome) = get_json(&fhir("Patient"), &both).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{outcome}");

    // Her session: a form naming Anna records for Rosa only; Anna's access records are not
    // hers to prove or report.
    let (browser, _) = log_in_as(world, ROSA).await;
    let (_, page) = get(&browser, &format!("{}/keuzes", world.portal)).await;
    let csrf = csrf_of(&page);
    let answer = browser
        .post(format!("{}/keuzes", world.portal))
        .form(&[
            ("csrf", csrf.as_str()),
            ("keuze", "alles"),
            ("bsn", anna_bsn.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let annas = PersonalId::from(Bsn::parse(anna_bsn).unwrap());
    assert!(sedula.directives_of(&annas).await.is_empty());
    assert_eq!(sedula.directives_of(&sedula.person()).await.len(), 1);
    let annas_record = professional_read(node, &anna).await;
    let (_, page) = get(&browser, &format!("{}/wie-keek", world.portal)).await;
    assert!(!page.contains(&format!("name=\"id\" value=\"{annas_record}\"")));
    assert!(!page.contains(&anna), "none of Anna's accesses: {page}");
    let (status, proof) = get(
        &browser,
        &format!(
            "{}/wie-keek/bewijs?source=0&id={annas_record}",
            world.portal
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        proof.contains("Het bewijs kon niet worden opgehaald"),
        "{proof}"
    );
    let answer = browser
        .post(format!("{}/wie-keek/melden", world.portal))
        .form(&[
            ("csrf", csrf.as_str()),
            ("source", "0"),
            ("id", &annas_record.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(reports(node).await.is_empty(), "nothing reported");
}
