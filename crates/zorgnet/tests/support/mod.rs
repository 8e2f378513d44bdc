//! Helpers shared by the integration tests that drive the `zorgnet` binary against a hub.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The `zorgnet` binary cargo built for the tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_zorgnet");

/// A zorgnet server process, killed when the test ends, also when it fails.
pub struct Running {
    pub child: Child,
    /// The first `http://` or `https://` word it printed.
    pub url: String,
}

impl Running {
    /// Starts `zorgnet ARGS` logging warnings only, its stderr discarded.
    pub fn start(args: &[&str]) -> Running {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null());
        Running::spawn(command)
    }

    /// Starts `command` (the caller sets its arguments, environment and stderr) and waits
    /// for the line naming its URL.
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start zorgnet");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).unwrap();
        // Keep draining stdout: a closed pipe would make the process's next print fail.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = first_line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {first_line:?}"))
            .to_string();
        Running { child, url }
    }

    /// Stops the process.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Registers organisation `ura` at the hub with the operator's key; returns its API key.
pub async fn register(hub: &str, admin_key: &str, ura: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{hub}/registry/organisations"))
        .bearer_auth(admin_key)
        .json(&json!({"ura": ura, "name": format!("Organisatie {ura}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["api_key"].as_str().unwrap().to_string()
}

/// Registers a treatment relation (a referral) of the organisation whose hub key is `key`
/// with the person whose BSN is `bsn`: the basis its lookups and reads of others' data need.
pub async fn relate(hub: &str, key: &str, bsn: &str) {
    let client = zorgnet_node::hub_client::HubClient::new(hub, key).unwrap();
    let person = zorgnet_pseudonym::PersonalId::from(zorgnet_pseudonym::Bsn::parse(bsn).unwrap());
    let token = client.referral_index_token(&person).await.unwrap();
    let body = json!({"token": zorgnet_node::hub_client::token_value(&token), "kind": "referral"});
    client.post("/relations", &body).await.unwrap();
}

/// Creates `resource` at the FHIR base `base`; returns the stored resource.
pub async fn post(base: &str, resource: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/{}",
            resource["resourceType"].as_str().unwrap()
        ))
        .header("content-type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

pub mod demo;
