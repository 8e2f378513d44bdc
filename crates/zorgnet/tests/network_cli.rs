//! End-to-end tests of `zorgnet localize` and `zorgnet fetch` against real processes (a hub
//! and two nodes on loopback ports), and of `zorgnet import --data` into a stopped node:
//! the registrations it queues are delivered once the node runs with `--hub`.
//! Deadlines only guard against hangs; nothing here measures time.

mod support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use zorgnet_fhir::categories::categories_of;
use zorgnet_fhir::identifiers::BSN_SYSTEM;
use zorgnet_node::hub_client::HubClient;
use zorgnet_pseudonym::{Bsn, PersonalId};

use support::{BINARY, Running, post, register, relate};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const BSN: &str = "123456782";
/// Longest wait for something the processes do in the background (delivery, sync).
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn start_hub(data: &Path) -> Running {
    Running::start(&[
        "hub",
        "--insecure-dev",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--sync-interval-s",
        "1",
    ])
}

fn start_node(data: &Path, ura: &str, hub: Option<(&str, &str)>) -> Running {
    let mut args = vec![
        "node",
        "--insecure-dev",
        "--listen",
        "127.0.0.1:0",
        "--ura",
        ura,
        "--name",
        if ura == GP {
            "Huisartsenpraktijk"
        } else {
            "Ziekenhuis"
        },
        "--data",
        data.to_str().unwrap(),
    ];
    if let Some((url, key)) = hub {
        args.extend(["--hub", url, "--hub-key", key]);
    }
    Running::start(&args)
}

/// Runs a zorgnet command to its end; `ZORGNET_NODE` from the caller's environment is not
/// passed on, so every test says which node it asks.
fn zorgnet(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("ZORGNET_NODE")
        .output()
        .unwrap()
}

fn succeeded(args: &[&str]) -> (String, String) {
    let output = zorgnet(args);
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert!(output.status.success(), "zorgnet {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn failed(args: &[&str]) -> String {
    let output = zorgnet(args);
    assert!(
        !output.status.success(),
        "zorgnet {args:?} should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// The number of pending outbox entries `zorgnet node status` shows.
fn pending(data: &Path) -> u64 {
    let (status, _) = succeeded(&["node", "status", "--data", data.to_str().unwrap()]);
    status
        .strip_prefix("outbox: ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no outbox depth in {status:?}"))
}

fn wait_until_delivered(data: &Path) {
    let started = Instant::now();
    while pending(data) > 0 {
        assert!(started.elapsed() < WAIT, "the outbox was not delivered");
        std::thread::sleep(POLL);
    }
}

/// Waits until the hub's address book lists an Endpoint at `fhir_base`.
async fn wait_for_address(hub: &str, admin_key: &str, fhir_base: &str) {
    let started = Instant::now();
    loop {
        let found = reqwest::Client::new()
            .get(format!("{hub}/addressing/fhir/Endpoint"))
            .bearer_auth(admin_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if found.contains(&format!("\"{fhir_base}\"")) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the address book never listed {fhir_base}: {found}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The line of a table or summary that starts with `first` and mentions `word`.
fn line_with<'a>(text: &'a str, first: &str, word: &str) -> Option<&'a str> {
    text.lines()
        .find(|line| line.starts_with(first) && line.contains(word))
}

fn resource_types(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localize_and_fetch_through_a_node_say_who_holds_and_who_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, gp_dir, hospital_dir) = (
        dir.path().join("hub"),
        dir.path().join("gp"),
        dir.path().join("hospital"),
    );
    let hub = start_hub(&hub_dir);
    let admin_key = std::fs::read_to_string(hub_dir.join("admin.key")).unwrap();
    let admin_key = admin_key.trim();
    let gp_key = register(&hub.url, admin_key, GP).await;
    let hospital_key = register(&hub.url, admin_key, HOSPITAL).await;
    succeeded(&[
        "professional",
        "set",
        "--hub",
        &hub.url,
        "--admin-key-file",
        hub_dir.join("admin.key").to_str().unwrap(),
        "--uzi",
        "900000016",
        "--name",
        "Dr. Jansen",
        "--role",
        &format!("{HOSPITAL}:01.015"),
    ]);
    relate(&hub.url, &hospital_key, BSN).await;
    let gp = start_node(&gp_dir, GP, Some((&hub.url, &gp_key)));
    // The hospital's node copies the address book when it starts: start it once the hub
    // knows the GP's endpoint.
    wait_for_address(&hub.url, admin_key, &gp.url).await;
    let hospital = start_node(&hospital_dir, HOSPITAL, Some((&hub.url, &hospital_key)));

    let patient = post(
        &gp.url,
        json!({"resourceType": "Patient",
        "identifier": [{"system": BSN_SYSTEM, "value": BSN}]}),
    )
    .await;
    let subject = json!({"reference": format!("Patient/{}", patient["id"].as_str().unwrap())});
    post(
        &gp.url,
        json!({"resourceType": "MedicationStatement", "status": "active",
        "medicationCodeableConcept": {"text": "metformine 500 mg"}, "subject": subject}),
    )
    .await;
    post(
        &gp.url,
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "metformine 500 mg"}, "subject": subject}),
    )
    .await;
    wait_until_delivered(&gp_dir);

    let localize = [
        "localize",
        "--node",
        &hospital.url,
        "--bsn",
        BSN,
        "--category",
        "medication",
    ];
    let started = Instant::now();
    let table = loop {
        let (table, _) = succeeded(&localize);
        if line_with(&table, GP, &gp.url).is_some() {
            break table;
        }
        assert!(
            started.elapsed() < WAIT,
            "localize never showed the GP's endpoint: {table}"
        );
        std::thread::sleep(POLL);
    };
    assert!(table.starts_with("URA "), "{table}");
    assert!(
        line_with(&table, GP, "medication").is_some(),
        "the GP's row names the category: {table}"
    );
    assert_eq!(table.lines().count(), 2, "one holder: {table}");

    let (raw, _) = succeeded(&[&localize[..], &["--json"]].concat());
    let parameters: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(parameters["resourceType"], "Parameters");
    assert!(raw.contains(GP), "{raw}");

    let out = dir.path().join("fetched.json");
    let fetch = [
        "fetch",
        "--node",
        &hospital.url,
        "--bsn",
        BSN,
        "--category",
        "medication",
        "--uzi",
        "900000016",
        "--role",
        "01.015",
    ];
    let (stdout, summary) = succeeded(&[&fetch[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(stdout.is_empty(), "the Bundle goes to the file: {stdout}");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    let types = resource_types(&bundle);
    assert!(
        types.contains(&"MedicationStatement".to_string())
            && types.contains(&"MedicationRequest".to_string()),
        "{bundle}"
    );
    assert!(
        line_with(&summary, "answered", GP).is_some(),
        "the summary names the GP as answered: {summary}"
    );
    assert!(
        !summary.contains("did not answer"),
        "every source answered: {summary}"
    );
    assert!(
        summary.contains("MedicationRequest 1") && summary.contains("MedicationStatement 1"),
        "counts per type: {summary}"
    );

    // A source that is down makes a partial result, not a failure: exit status 0, and the
    // summary and the Bundle say who did not answer.
    gp.stop();
    let (stdout, summary) = succeeded(&fetch);
    let bundle: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        resource_types(&bundle),
        ["OperationOutcome"],
        "nothing but the node's outcome: {bundle}"
    );
    assert_eq!(
        bundle["entry"][0]["resource"]["issue"][0]["severity"],
        "warning"
    );
    assert!(
        line_with(&summary, "did not answer", GP).is_some(),
        "the summary names the GP as silent: {summary}"
    );
    assert!(summary.contains("0 of 1 sources answered"), "{summary}");
    assert!(
        !summary.contains(BSN),
        "the summary does not repeat the BSN: {summary}"
    );

    // No node at all: a failure that names the URL.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{free_port}/fhir");
    let message = failed(&["localize", "--node", &nowhere, "--bsn", BSN]);
    assert!(
        message.contains(&nowhere) && message.contains("no answer from the node"),
        "{message}"
    );
    assert!(
        !message.contains(BSN),
        "errors do not repeat the BSN: {message}"
    );

    // A node that refuses (this one is not in a network): a failure with its diagnostics.
    let lone = start_node(&gp_dir, GP, None);
    let message = failed(&["fetch", "--node", &lone.url, "--bsn", BSN]);
    assert!(
        message.contains(&lone.url)
            && message.contains("refused $fetch")
            && message.contains("not connected to a hub"),
        "{message}"
    );
}

/// The BSN and the data categories of a generated patient who has a BSN and some data.
fn a_patient_with_data(ndjson: &str) -> (String, BTreeSet<String>) {
    let resources: Vec<Value> = ndjson
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut categories: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for resource in &resources {
        let reference = ["subject", "patient"]
            .iter()
            .find_map(|field| resource[field]["reference"].as_str());
        if let Some(patient) = reference {
            categories
                .entry(patient.to_string())
                .or_default()
                .extend(categories_of(resource).iter().map(|c| c.code().to_string()));
        }
    }
    resources
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .find_map(|patient| {
            let bsn = patient["identifier"]
                .as_array()?
                .iter()
                .find(|i| i["system"] == BSN_SYSTEM)?["value"]
                .as_str()?;
            let held = categories.get(&format!("Patient/{}", patient["id"].as_str()?))?;
            (!held.is_empty()).then(|| (bsn.to_string(), held.clone()))
        })
        .expect("a generated patient with a BSN and data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_stopped_node_registers_once_the_node_runs_with_a_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, node_dir, ndjson) = (
        dir.path().join("hub"),
        dir.path().join("node"),
        dir.path().join("patients.ndjson"),
    );
    succeeded(&[
        "generate",
        "--patients",
        "5",
        "--seed",
        "4",
        "--out",
        ndjson.to_str().unwrap(),
    ]);
    let (imported, _) = succeeded(&[
        "import",
        ndjson.to_str().unwrap(),
        "--data",
        node_dir.to_str().unwrap(),
    ]);
    let queued = pending(&node_dir);
    assert!(queued > 0, "the import queued no registrations: {imported}");
    assert!(
        imported.contains(&format!("outbox: {queued} registrations waiting")),
        "{imported}"
    );
    let (bsn, categories) = a_patient_with_data(&std::fs::read_to_string(&ndjson).unwrap());

    let hub = start_hub(&hub_dir);
    let admin_key = std::fs::read_to_string(hub_dir.join("admin.key")).unwrap();
    let gp_key = register(&hub.url, admin_key.trim(), GP).await;
    let hospital_key = register(&hub.url, admin_key.trim(), HOSPITAL).await;
    let node = start_node(&node_dir, GP, Some((&hub.url, &gp_key)));
    wait_until_delivered(&node_dir);

    relate(&hub.url, &hospital_key, &bsn).await;
    let hospital = HubClient::new(&hub.url, &hospital_key).unwrap();
    let person = PersonalId::from(Bsn::parse(&bsn).unwrap());
    let asked: Vec<String> = categories.iter().cloned().collect();
    let holders = hospital.lookup(&person, &asked, false).await.unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].ura, GP);
    let found: BTreeSet<String> = holders[0].categories.iter().cloned().collect();
    assert_eq!(found, categories, "every imported category is registered");
    drop((node, hub));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_finds_the_endpoint_of_an_organisation_that_joined_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(&dir.path().join("hub"));
    let admin_key = std::fs::read_to_string(dir.path().join("hub/admin.key")).unwrap();
    let admin_key = admin_key.trim();
    let gp_key = register(&hub.url, admin_key, GP).await;
    let hospital_key = register(&hub.url, admin_key, HOSPITAL).await;
    relate(&hub.url, &hospital_key, BSN).await;
    // The hospital starts first: its copy of the address book has no GP.
    let hospital = start_node(
        &dir.path().join("hospital"),
        HOSPITAL,
        Some((&hub.url, &hospital_key)),
    );
    wait_for_address(&hub.url, admin_key, &hospital.url).await;
    let gp_dir = dir.path().join("gp");
    let gp = start_node(&gp_dir, GP, Some((&hub.url, &gp_key)));
    let patient = post(
        &gp.url,
        json!({"resourceType": "Patient",
        "identifier": [{"system": BSN_SYSTEM, "value": BSN}]}),
    )
    .await;
    post(
        &gp.url,
        json!({"resourceType": "AllergyIntolerance", "patient": {"reference": format!("Patient/{}", patient["id"].as_str().unwrap())},
        "code": {"text": "penicilline"}}),
    )
    .await;
    wait_until_delivered(&gp_dir);
    wait_for_address(&hub.url, admin_key, &gp.url).await;
    // One question, no retries: the referral index names the GP, the copy does not know it,
    // and the node refreshes its copy instead of answering without an endpoint for a minute.
    let (table, _) = succeeded(&[
        "localize",
        "--node",
        &hospital.url,
        "--bsn",
        BSN,
        "--category",
        "allergies",
    ]);
    assert!(
        line_with(&table, GP, &gp.url).is_some(),
        "the GP's endpoint: {table}"
    );
}
