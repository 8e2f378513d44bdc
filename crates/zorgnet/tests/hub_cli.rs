//! End-to-end tests of `zorgnet hub` and `zorgnet node --hub` as processes: a node killed
//! with SIGKILL while the hub is down loses no registration; `node status` shows the outbox.

mod support;

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{post, register, relate};
use zorgnet_node::hub_client::HubClient;
use zorgnet_pseudonym::{Bsn, PersonalId};

const BINARY: &str = env!("CARGO_BIN_EXE_zorgnet");
const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const WAIT: Duration = Duration::from_secs(30);

/// Starts a zorgnet process and returns it with the first `http://` word it prints.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zorgnet");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let url = first_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first_line:?}"))
        .to_string();
    (child, url)
}

fn start_hub(data: &std::path::Path, listen: &str) -> (Child, String) {
    start(&[
        "hub",
        "--insecure-dev",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        listen,
    ])
}

fn start_node(data: &std::path::Path, hub: &str, key: &str) -> (Child, String) {
    start(&[
        "node",
        "--insecure-dev",
        "--listen",
        "127.0.0.1:0",
        "--ura",
        GP,
        "--name",
        "Huisartsenpraktijk",
        "--data",
        data.to_str().unwrap(),
        "--hub",
        hub,
        "--hub-key",
        key,
    ])
}

fn node_status(data: &std::path::Path) -> String {
    let output = Command::new(BINARY)
        .args(["node", "status", "--data", data.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_killed_node_and_a_stopped_hub() {
    let hub_dir = tempfile::tempdir().unwrap();
    let node_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (mut hub, hub_url) = start_hub(hub_dir.path(), &listen);
    let admin_key = std::fs::read_to_string(hub_dir.path().join("admin.key")).unwrap();
    let gp_key = register(&hub_url, admin_key.trim(), GP).await;
    let hospital_key = register(&hub_url, admin_key.trim(), HOSPITAL).await;

    hub.kill().unwrap();
    hub.wait().unwrap();
    let (mut node, base) = start_node(node_dir.path(), &hub_url, &gp_key);
    let patient = post(
        &base,
        json!({"resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456782"}]}),
    )
    .await;
    post(
        &base,
        json!({"resourceType": "AllergyIntolerance",
        "patient": {"reference": format!("Patient/{}", patient["id"].as_str().unwrap())},
        "code": {"text": "penicilline"}}),
    )
    .await;
    node.kill().unwrap();
    node.wait().unwrap();
    let status = node_status(node_dir.path());
    assert!(status.contains("outbox: 2 pending"), "{status}");

    let (mut hub, _) = start_hub(hub_dir.path(), &listen);
    let (mut node, _) = start_node(node_dir.path(), &hub_url, &gp_key);
    let hospital = HubClient::new(&hub_url, &hospital_key).unwrap();
    let person = PersonalId::from(Bsn::parse("123456782").unwrap());
    relate(&hub_url, &hospital_key, "123456782").await;
    let started = Instant::now();
    loop {
        let found = hospital
            .lookup(&person, &["allergies".to_string()], false)
            .await;
        if let Ok(holders) = &found
            && holders.len() == 1
        {
            assert_eq!(holders[0].ura, GP);
            break;
        }
        assert!(started.elapsed() < WAIT, "not registered: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.kill().unwrap();
    node.wait().unwrap();
    let status = node_status(node_dir.path());
    assert!(status.contains("outbox: 0 pending"), "{status}");
    hub.kill().unwrap();
    hub.wait().unwrap();
}

/// `zorgnet hub --citizen-portal URA` admits that organisation as a citizen portal: it reads
/// and revokes every directive of the person it names, also one another organisation
/// recorded; a value that is not a URA stops the start with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_admits_a_citizen_portal_at_start() {
    const PORTAL: &str = "00000077";
    let refused = Command::new(BINARY)
        .args(["hub", "--insecure-dev", "--listen", "127.0.0.1:0"])
        .args(["--citizen-portal", "77", "--data"])
        .arg(tempfile::tempdir().unwrap().path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not a URA"),
        "{refused:?}"
    );

    let hub_dir = tempfile::tempdir().unwrap();
    let (mut hub, hub_url) = start(&[
        "hub",
        "--insecure-dev",
        "--listen",
        "127.0.0.1:0",
        "--citizen-portal",
        PORTAL,
        "--data",
        hub_dir.path().to_str().unwrap(),
    ]);
    let admin_key = std::fs::read_to_string(hub_dir.path().join("admin.key")).unwrap();
    let hospital_key = register(&hub_url, admin_key.trim(), HOSPITAL).await;
    let portal_key = register(&hub_url, admin_key.trim(), PORTAL).await;
    let person = PersonalId::from(Bsn::parse("123456782").unwrap());
    let body_for = async |key: &str| {
        let client = HubClient::new(&hub_url, key).unwrap();
        let token = client.referral_index_token(&person).await.unwrap();
        (
            client,
            json!({"token": zorgnet_node::hub_client::token_value(&token)}),
        )
    };
    let (hospital, mut recorded) = body_for(&hospital_key).await;
    recorded["kind"] = json!("opt-out");
    let directive = hospital
        .post("/consent/directives", &recorded)
        .await
        .unwrap();
    let (portal, person_body) = body_for(&portal_key).await;
    let seen = portal
        .post("/consent/directives/query", &person_body)
        .await
        .unwrap();
    assert_eq!(
        seen["current"][0]["directive_id"], directive["directive_id"],
        "{seen}"
    );
    let revoked = portal
        .post(
            &format!(
                "/consent/directives/{}/revoke",
                directive["directive_id"].as_str().unwrap()
            ),
            &person_body,
        )
        .await
        .unwrap();
    assert_eq!(revoked["recorded_by"], "citizen", "{revoked}");
    hub.kill().unwrap();
    hub.wait().unwrap();
}
