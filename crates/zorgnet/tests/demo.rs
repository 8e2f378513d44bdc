//! `zorgnet demo` as a newcomer meets it: HTTPS only, with a demo CA, and a development
//! identity provider whose citizens read their own data and nothing else, and whose
//! professionals work within their scopes.

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use support::BINARY;

/// A port free at the moment of asking: the demo's identity provider names its own address
/// in its tokens, so it cannot listen on port 0.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo process, killed when the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo and answers it with what it printed up to the line naming its URL.
fn start(data: &Path, listen: &str, idp: &str) -> (Demo, Vec<String>) {
    let mut child = Command::new(BINARY)
        .args([
            "demo",
            "--patients",
            "3",
            "--listen",
            listen,
            "--idp-listen",
            idp,
            "--data",
        ])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the demo ended early: {lines:?}"
        );
        let served = line.contains("serving FHIR R4 at");
        lines.push(line);
        if served {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (Demo(child), lines)
}

fn token(data: &Path, idp: &str, user: &str) -> String {
    let output = Command::new(BINARY)
        .args(["demo", "--idp-listen", idp, "--token", user, "--data"])
        .arg(data)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_https_and_its_citizens_read_only_their_own_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let (listen, idp) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (_demo, lines) = start(&data, &listen, &idp);
    let output = lines.concat();
    assert!(
        output.contains(&format!("serving FHIR R4 at https://{listen}/fhir")),
        "{output}"
    );
    assert!(
        output.contains(&format!("https://{idp}")) && output.contains("for demos only"),
        "{output}"
    );
    let bsn_of = |user: &str| -> String {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("demo user {user} ")))
            .unwrap_or_else(|| panic!("no {user} in {output}"));
        line.rsplit("BSN ").next().unwrap().trim().to_string()
    };
    let (own, other) = (bsn_of("burger-1"), bsn_of("burger-2"));
    assert_ne!(own, other);

    let pem = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let anchor = zorgnet_trust::tls::read_certificates(&pem)
        .unwrap()
        .remove(0);
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(zorgnet_trust::tls::anchor_only_client_config(&anchor).unwrap())
        .build()
        .unwrap();
    let base = format!("https://{listen}/fhir");
    let citizen = token(&data, &idp, "burger-1");
    let get = |path: String, bearer: Option<String>| {
        let request = client.get(format!("{base}/{path}"));
        let request = match bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let by_bsn =
        |bsn: &str| format!("Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|{bsn}");
    let (status, own_record) = get(by_bsn(&own), Some(citizen.clone())).await;
    assert_eq!(status, 200, "{own_record}");
    assert_eq!(own_record["entry"].as_array().map(Vec::len), Some(1));
    let (status, _) = get(by_bsn(&other), Some(citizen.clone())).await;
    assert_eq!(status, 403, "another citizen's record");
    let (status, _) = get("Patient".into(), Some(citizen.clone())).await;
    assert_eq!(status, 403, "everyone's records");
    let (status, _) = get(by_bsn(&own), None).await;
    assert_eq!(status, 401, "no credentials");
    let written = client
        .post(format!("{base}/Patient"))
        .bearer_auth(&citizen)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 403, "a citizen writes nothing");

    let professional = token(&data, &idp, "huisarts");
    let (status, count) = get("Patient?_summary=count".into(), Some(professional)).await;
    assert_eq!(status, 200);
    assert_eq!(
        count["total"], 3,
        "the practice's professional sees every patient"
    );

    let plain = reqwest::Client::new()
        .get(format!("http://{listen}/fhir/metadata"))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "nothing in the demo answers without TLS"
    );
}
