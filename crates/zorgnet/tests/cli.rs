//! End-to-end tests of the `zorgnet` binary: a node killed with SIGKILL loses no acknowledged
//! write; `generate` and `import` (into a database and over HTTP) are repeatable without
//! duplicating data.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const BINARY: &str = env!("CARGO_BIN_EXE_zorgnet");

/// Starts `zorgnet node` on port 0 and returns the process and its FHIR base URL.
fn start_node(data: &std::path::Path) -> (Child, String) {
    start_node_with(&["--data", data.to_str().unwrap()])
}

/// Starts `zorgnet node` on port 0 with the given storage arguments.
fn start_node_with(storage: &[&str]) -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args([
            "node",
            "--listen",
            "127.0.0.1:0",
            "--ura",
            "12345678",
            "--name",
            "Durability test",
        ])
        .args(storage)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zorgnet node");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    // Keep draining stdout: a closed pipe would make the node's next print fail.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let base = first_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first_line:?}"))
        .to_string();
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_node(dir.path());
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (client, base, acknowledged) = (client.clone(), base.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let patient = json!({"resourceType": "Patient", "name": [{"family": format!("Kill{writer}-{i}")}]});
                let sent = client
                    .post(format!("{base}/Patient"))
                    .header("content-type", "application/fhir+json")
                    .body(patient.to_string())
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 201 {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else { break };
                acknowledged.lock().unwrap().push(body["id"].as_str().unwrap().to_string());
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node stopped acknowledging writes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL, while the writers are still sending
    child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 200);

    let (mut child, base) = start_node(dir.path());
    for id in &acknowledged {
        let response = client
            .get(format!("{base}/Patient/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged Patient/{id} lost after kill -9"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn run(args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "zorgnet {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn number_before(text: &str, word: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    let position = words
        .iter()
        .position(|w| w.trim_end_matches(',') == word)
        .unwrap_or_else(|| panic!("'{word}' not in {text}"));
    words[position - 1].parse().unwrap()
}

#[test]
fn generate_and_import_twice_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let ndjson = dir.path().join("patients.ndjson");
    let bundles = dir.path().join("patients.json");
    let generated = run(&[
        "generate",
        "--patients",
        "20",
        "--seed",
        "3",
        "--out",
        ndjson.to_str().unwrap(),
    ]);
    assert!(generated.contains("wrote"), "{generated}");
    run(&[
        "generate",
        "--patients",
        "20",
        "--seed",
        "3",
        "--out",
        bundles.to_str().unwrap(),
    ]);
    let lines = std::fs::read_to_string(&ndjson).unwrap().lines().count() as u64;

    let data = dir.path().join("node");
    let first = run(&[
        "import",
        ndjson.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(number_before(&first, "stored"), lines, "{first}");
    assert_eq!(number_before(&first, "failed"), 0, "{first}");
    let second = run(&[
        "import",
        ndjson.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(number_before(&second, "stored"), 0, "{second}");
    assert_eq!(number_before(&second, "unchanged"), lines, "{second}");
    let from_bundles = run(&[
        "import",
        bundles.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(
        number_before(&from_bundles, "unchanged"),
        lines,
        "same data as transaction Bundles: {from_bundles}"
    );

    let broken = dir.path().join("broken.ndjson");
    std::fs::write(
        &broken,
        "{\"resourceType\":\"Patient\",\"id\":\"ok-1\"}\nnot json\n{\"resourceType\":\"Patient\",\"id\":\"bad-1\",\"gender\":42}\n",
    )
    .unwrap();
    let report = run(&[
        "import",
        broken.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(number_before(&report, "stored"), 1, "{report}");
    assert_eq!(number_before(&report, "failed"), 2, "{report}");
    assert!(
        report.contains("broken.ndjson:2") && report.contains("malformed JSON"),
        "{report}"
    );
    assert!(
        report.contains("Patient/bad-1") && report.contains("not a valid code"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_over_http_into_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let ndjson = dir.path().join("p.ndjson");
    run(&[
        "generate",
        "--patients",
        "5",
        "--seed",
        "9",
        "--out",
        ndjson.to_str().unwrap(),
    ]);
    let lines = std::fs::read_to_string(&ndjson).unwrap().lines().count() as u64;
    let (mut child, base) = start_node(&dir.path().join("node"));
    let path = ndjson.to_str().unwrap().to_string();
    let base_for_import = base.clone();
    let output =
        tokio::task::spawn_blocking(move || run(&["import", &path, "--to", &base_for_import]))
            .await
            .unwrap();
    assert_eq!(number_before(&output, "stored"), lines, "{output}");
    let count: Value = reqwest::get(format!("{base}/Patient?_summary=count"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["total"], 5);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runs_on_postgres_from_the_command_line() {
    let Ok(url) = std::env::var("ZORGNET_TEST_POSTGRES_URL") else {
        eprintln!(
            "\n*** SKIPPED: node_runs_on_postgres_from_the_command_line (ZORGNET_TEST_POSTGRES_URL is not set; .ci/run sets it) ***\n"
        );
        return;
    };
    let schema = format!(
        "zorgnet_test_cli_{}_{}",
        std::process::id(),
        zorgnet_store::now_ms()
    );
    let schema_url = tokio::task::spawn_blocking(move || {
        zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap()
    })
    .await
    .unwrap();
    let (mut child, base) = start_node_with(&["--postgres", &schema_url]);
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/Patient"))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "active": true}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created on PostgreSQL");
    let read = client
        .get(format!("{base}/Patient/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
