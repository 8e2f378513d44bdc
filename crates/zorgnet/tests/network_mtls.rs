//! The network over mutual TLS, as the binaries run it: a hub and a GP's node with
//! certificates of one network CA, and clients that try to get more than they may.
//!
//! Checked against the real servers: a certificate of another CA, an expired one and a
//! revoked one (after the operator publishes the new list, within the refresh interval, also
//! over a kept-alive connection) are refused by the hub and the node; a hospital's access
//! token is honoured only over the hospital's own certificate (not without a certificate,
//! not over a pharmacy's); the GP's own certificate alone is its node's administrator, another
//! organisation's is nobody; the hospital's hub key is refused over the pharmacy's
//! connection, while a registered organisation's certificate alone authenticates it at the
//! hub.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{BINARY, Running};
use zorgnet_trust::pki::{NetworkCa, Validity};
use zorgnet_trust::tls::{self, Credentials};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
const PHARMACY: &str = "00000033";
/// A valid BSN (11-check).
const BSN: &str = "123456782";
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// A medical specialist at the hospital, in the professional register.
const UZI: &str = "900000123";
const SPECIALIST: &str = "01.016";
/// How often the hub re-reads its CRL file and the node fetches the hub's list, in seconds.
const CRL_REFRESH_S: &str = "1";
/// Longest a revocation may take to reach the hub and the node in this test.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `zorgnet ARGS`, which must succeed; answers its stdout.
fn zorgnet(args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "zorgnet {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An HTTPS client trusting the network CA and showing `identity`'s certificate (or none).
/// A new client is a new connection.
fn client(ca: &Path, identity: Option<&Credentials>) -> reqwest::Client {
    let config = match identity {
        Some(credentials) => tls::client_config(credentials).unwrap(),
        None => {
            let pem = std::fs::read(ca.join("ca.pem")).unwrap();
            let anchor = tls::read_certificates(&pem).unwrap().remove(0);
            tls::anchor_only_client_config(&anchor).unwrap()
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The network: a CA, a hub and the GP's node, with credentials for three organisations.
struct Network {
    dir: tempfile::TempDir,
    hub: Running,
    gp: Running,
}

impl Network {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn credentials_dir(&self, ura: &str) -> PathBuf {
        self.dir.path().join(format!("tls-{ura}"))
    }

    fn credentials(&self, ura: &str) -> Credentials {
        Credentials::load(&self.credentials_dir(ura)).unwrap()
    }

    fn hub_url(&self) -> &str {
        &self.hub.url
    }

    fn gp_fhir(&self) -> &str {
        &self.gp.url
    }

    async fn start() -> (Network, [String; 3]) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        zorgnet(&["ca", "init", "--out", text(&ca)]);
        let hub_tls = dir.path().join("tls-hub");
        zorgnet(&[
            "ca",
            "issue-service",
            "--ca",
            text(&ca),
            "--name",
            "zorgnet hub",
            "--ip",
            "127.0.0.1",
            "--out",
            text(&hub_tls),
        ]);
        for ura in [GP, HOSPITAL, PHARMACY] {
            zorgnet(&[
                "ca",
                "issue",
                "--ca",
                text(&ca),
                "--ura",
                ura,
                "--name",
                &format!("Organisatie {ura}"),
                "--ip",
                "127.0.0.1",
                "--out",
                text(&dir.path().join(format!("tls-{ura}"))),
            ]);
        }
        // The CA signed newer lists with every issue: give the hub the newest.
        zorgnet(&[
            "ca",
            "crl",
            "--ca",
            text(&ca),
            "--out",
            text(&hub_tls.join("crl.pem")),
        ]);
        let hub = Running::start(&[
            "hub",
            "--tls",
            text(&hub_tls),
            "--crl-refresh-s",
            CRL_REFRESH_S,
            "--allow-insecure-endpoints",
            "--listen",
            "127.0.0.1:0",
            "--data",
            text(&dir.path().join("hub")),
        ]);
        assert!(hub.url.starts_with("https://"), "{}", hub.url);
        let admin_key = std::fs::read_to_string(dir.path().join("hub/admin.key")).unwrap();
        let operator = client(&ca, None);
        let mut keys = Vec::new();
        for ura in [GP, HOSPITAL, PHARMACY] {
            let response = operator
                .post(format!("{}/registry/organisations", hub.url))
                .bearer_auth(admin_key.trim())
                .json(&json!({"ura": ura, "name": format!("Organisatie {ura}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            let issued: Value = response.json().await.unwrap();
            keys.push(issued["api_key"].as_str().unwrap().to_string());
        }
        let cacert = ca.join("ca.pem");
        zorgnet(&[
            "professional",
            "set",
            "--cacert",
            text(&cacert),
            "--hub",
            &hub.url,
            "--admin-key-file",
            text(&dir.path().join("hub/admin.key")),
            "--uzi",
            UZI,
            "--name",
            "Dr. E. de Vries",
            "--role",
            &format!("{HOSPITAL}:{SPECIALIST}"),
        ]);
        let mut node = Command::new(BINARY);
        node.args([
            "node",
            "--listen",
            "127.0.0.1:0",
            "--ura",
            GP,
            "--tls",
            text(&dir.path().join(format!("tls-{GP}"))),
            "--hub",
            &hub.url,
            "--hub-key",
            &keys[0],
            "--crl-refresh-s",
            CRL_REFRESH_S,
            "--data",
            text(&dir.path().join("gp")),
        ])
        .env("RUST_LOG", "warn")
        .env_remove("ZORGNET_INSECURE_DEV")
        .stderr(Stdio::null());
        let gp = Running::spawn(node);
        assert!(gp.url.starts_with("https://"), "{}", gp.url);
        let network = Network { dir, hub, gp };
        let node_key =
            std::fs::read_to_string(network.dir.path().join("gp/node-admin.key")).unwrap();
        let created = client(&ca, None)
            .post(format!("{}/Patient", network.gp_fhir()))
            .bearer_auth(node_key.trim())
            .header("content-type", "application/fhir+json")
            .body(
                json!({
                    "resourceType": "Patient",
                    "identifier": [{"system": BSN_SYSTEM, "value": BSN}],
                    "name": [{"family": "Jansen"}]
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        zorgnet(&[
            "relation",
            "add",
            "--cacert",
            text(&cacert),
            "--hub",
            &network.hub.url,
            "--hub-key",
            &keys[1],
            "--bsn",
            BSN,
            "--kind",
            "referral",
        ]);
        (network, keys.try_into().unwrap())
    }

    /// An access token of the hospital's specialist for the GP's node, asked over `via`.
    async fn token(&self, via: &reqwest::Client, hospital_key: &str) -> String {
        let response = via
            .post(format!("{}/trust/token", self.hub_url()))
            .bearer_auth(hospital_key)
            .json(&json!({"audience": GP, "uzi": UZI, "role": SPECIALIST}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let issued: Value = response.json().await.unwrap();
        issued["access_token"].as_str().unwrap().to_string()
    }

    /// The status of a system token for the GP asked at the hub over `via`, with `key` if any.
    async fn system_token_status(&self, via: &reqwest::Client, key: Option<&String>) -> u16 {
        let request = via
            .post(format!("{}/trust/token", self.hub_url()))
            .json(&json!({"audience": GP}));
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        request.send().await.unwrap().status().as_u16()
    }

    /// The status of the patient's search at the GP with `token` over `via`.
    async fn read_patient(&self, via: &reqwest::Client, token: &str) -> reqwest::StatusCode {
        let response = via
            .get(format!(
                "{}/Patient?identifier={BSN_SYSTEM}|{BSN}",
                self.gp_fhir()
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == 200 {
            assert_eq!(body["entry"][0]["resource"]["identifier"][0]["value"], BSN);
        } else {
            assert_eq!(body["resourceType"], "OperationOutcome");
        }
        status
    }
}

/// Credentials with the organisation's URA from the network's own CA but an expired
/// certificate.
fn expired(network: &Network, ura: &str) -> Credentials {
    let ca = NetworkCa::open(&network.ca()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let issued = ca
        .issue_organisation(
            ura,
            "Verlopen certificaat",
            &[],
            Validity {
                not_before: now - time::Duration::days(30),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    Credentials::from_pem(
        issued.certificate_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.certificate_pem().as_bytes(),
    )
    .unwrap()
}

/// Credentials naming a registered organisation, from a CA of someone else's making, that
/// trust the network's CA for the server.
fn foreign(network: &Network, ura: &str) -> Credentials {
    let other = network.dir.path().join("other-ca");
    if !other.join("ca.pem").exists() {
        NetworkCa::init(&other, "zorgnet network CA").unwrap();
    }
    let issued = NetworkCa::open(&other)
        .unwrap()
        .issue_organisation(ura, "Nagemaakt", &[], Validity::default())
        .unwrap();
    let anchor = std::fs::read(network.ca().join("ca.pem")).unwrap();
    Credentials::from_pem(
        issued.certificate_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        &anchor,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_certificates_of_the_network_get_in_and_tokens_travel_only_with_their_own() {
    let (network, [_gp_key, hospital_key, pharmacy_key]) = Network::start().await;
    let ca = network.ca();
    let hospital = client(&ca, Some(&network.credentials(HOSPITAL)));
    let pharmacy = client(&ca, Some(&network.credentials(PHARMACY)));
    let anonymous = client(&ca, None);

    // The hospital, over its own certificate: its token is bound to it and honoured.
    let bound = network.token(&hospital, &hospital_key).await;
    assert_eq!(
        network.read_patient(&hospital, &bound).await,
        200,
        "the positive control"
    );
    // The same token without a certificate, or over the pharmacy's: refused.
    assert_eq!(network.read_patient(&anonymous, &bound).await, 401);
    assert_eq!(network.read_patient(&pharmacy, &bound).await, 401);
    // A token asked without a certificate is not bound, but still names the hospital: over
    // the pharmacy's certificate it is refused, over the hospital's honoured.
    let unbound = network.token(&anonymous, &hospital_key).await;
    assert_eq!(network.read_patient(&pharmacy, &unbound).await, 401);
    assert_eq!(network.read_patient(&anonymous, &unbound).await, 401);
    assert_eq!(network.read_patient(&hospital, &unbound).await, 200);

    // The GP's own systems: its certificate alone is the node's administrator; another
    // organisation's certificate alone is nobody.
    let own_system = client(&ca, Some(&network.credentials(GP)));
    let everyone = format!("{}/Patient", network.gp_fhir());
    let listed = own_system.get(&everyone).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["total"], 1);
    for (what, other) in [("the hospital", &hospital), ("no certificate", &anonymous)] {
        let refused = other.get(&everyone).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{what}");
    }

    // At the hub: the hospital's key over the pharmacy's connection is refused; the
    // pharmacy's certificate alone authenticates the pharmacy.
    for (what, via, key, expected) in [
        ("the hospital's key", &pharmacy, Some(&hospital_key), 401),
        ("the certificate alone", &pharmacy, None, 200),
        (
            "the pharmacy's own key",
            &pharmacy,
            Some(&pharmacy_key),
            200,
        ),
        ("neither", &anonymous, None, 401),
    ] {
        assert_eq!(
            network.system_token_status(via, key).await,
            expected,
            "{what}"
        );
    }

    // Certificates of another CA, and expired ones, never complete a request.
    for (what, credentials) in [
        ("another CA", foreign(&network, HOSPITAL)),
        ("expired", expired(&network, HOSPITAL)),
    ] {
        let refused = client(&ca, Some(&credentials));
        for url in [
            format!("{}/health", network.hub_url()),
            format!("{}/metadata", network.gp_fhir()),
        ] {
            let answer = refused.get(&url).send().await;
            assert!(answer.is_err(), "{what} at {url}: {answer:?}");
        }
    }

    // Revocation: the operator revokes the pharmacy's certificate and publishes the list;
    // within the refresh interval the hub and the node refuse it, new connections and the
    // kept-alive one alike.
    let kept_alive = client(&ca, Some(&network.credentials(PHARMACY)));
    let metadata = format!("{}/metadata", network.gp_fhir());
    assert_eq!(
        kept_alive.get(&metadata).send().await.unwrap().status(),
        200
    );
    zorgnet(&[
        "ca",
        "revoke",
        "--ca",
        text(&ca),
        "--cert",
        text(&network.credentials_dir(PHARMACY).join("cert.pem")),
    ]);
    zorgnet(&[
        "ca",
        "crl",
        "--ca",
        text(&ca),
        "--out",
        text(&network.dir.path().join("tls-hub/crl.pem")),
    ]);
    let deadline = std::time::Instant::now() + REVOCATION_DEADLINE;
    loop {
        let fresh = client(&ca, Some(&network.credentials(PHARMACY)));
        let at_hub = fresh
            .get(format!("{}/health", network.hub_url()))
            .send()
            .await;
        let at_node = client(&ca, Some(&network.credentials(PHARMACY)))
            .get(&metadata)
            .send()
            .await;
        if at_hub.is_err() && at_node.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation did not reach the hub ({}) and the node ({}) in time",
            at_hub.is_err(),
            at_node.is_err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_kept_alive = kept_alive.get(&metadata).send().await;
    assert!(
        on_kept_alive
            .as_ref()
            .map_or(true, |response| response.status() == 401),
        "{on_kept_alive:?}"
    );
    // The hospital is still served.
    let again = network.token(&hospital, &hospital_key).await;
    assert_eq!(network.read_patient(&hospital, &again).await, 200);
    let node_copy = std::fs::read_to_string(network.dir.path().join("gp/crl.pem")).unwrap();
    assert!(
        node_copy.starts_with("-----BEGIN X509 CRL-----"),
        "the node keeps the list for its next start"
    );
    drop(network.gp);
    drop(network.hub);
}
